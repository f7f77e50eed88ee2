"""The native build: the cffi builder's helpers, the ABI and layout checks, a smoke import."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pihub import bus
from pihub.errors import NativeMismatch

NATIVE = Path(__file__).resolve().parents[2] / "native"


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pihub_build_native", NATIVE / "build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_native = _load_builder()


def test_import_smoke_and_abi_constants_agree() -> None:
    assert bus.lib.ph_abi_version() == bus.lib.PH_ABI_VERSION == bus.ABI_VERSION == 1
    assert bus.ffi.sizeof("struct ph_event") == 64
    assert bus.lib.ph_now_ns() > 0


def test_check_abi_accepts_matching_versions() -> None:
    bus.check_abi(1, 1, 1)


@pytest.mark.parametrize(("native", "cdef", "expected"), [(2, 1, 1), (1, 2, 1), (2, 2, 1), (1, 1, 2)])
def test_check_abi_mismatch_raises_with_rebuild_hint(native: int, cdef: int, expected: int) -> None:
    with pytest.raises(NativeMismatch) as info:
        bus.check_abi(native, cdef, expected)
    message = str(info.value)
    assert "make build" in message
    assert ".venv/bin/pip install -e ." in message
    assert f"version {expected}" in message
    assert isinstance(info.value, ImportError)  # NativeMismatch is an ImportError too


def test_check_layout_rejects_other_layouts() -> None:
    good = dict(bus.SLOT_OFFSETS)
    bus.check_layout(64, good)
    with pytest.raises(NativeMismatch, match="72 bytes"):
        bus.check_layout(72, good)
    with pytest.raises(NativeMismatch, match=r"ref is at offset 28.*make build"):
        bus.check_layout(64, {**good, "ref": 28})


def test_cdef_keeps_integer_defines_and_drops_other_preprocessor_lines() -> None:
    text = """
#ifndef X_H
#define X_H
#include <stdint.h>
#define ANSWER 42   /* a trailing comment
                       over two lines */
#define MASK 0x1F
#define MACRO(f) (8 + (f))
#define MULTI 1 + \\
    2
// a line comment
struct s { int a; };  /* comment */
int f(void);
#endif
"""
    out = build_native.cdef_from_header(text)
    assert "#define ANSWER 42" in out
    assert "#define MASK 0x1F" in out
    for gone in ("#ifndef", "#include", "X_H", "MACRO", "MULTI", "#endif", "comment", "//"):
        assert gone not in out, gone
    assert "2" not in [line.strip() for line in out.splitlines()]  # the continuation line
    assert "struct s { int a; };" in out
    assert "int f(void);" in out


def test_cdef_of_the_real_headers_parses() -> None:
    from cffi import FFI

    ffi = FFI()
    for header in build_native.CDEF_HEADERS:
        ffi.cdef(build_native.cdef_from_header((NATIVE / header).read_text()))
    assert ffi.sizeof("struct ph_event") == 64
    assert [name for name, _ in ffi.typeof("struct ph_rule").fields] == ["id", "type", "first_cond", "ncond"]


def test_every_cdef_function_is_in_the_extension() -> None:
    cdef = "".join(build_native.cdef_from_header((NATIVE / h).read_text()) for h in build_native.CDEF_HEADERS)
    names = re.findall(r"\b(ph_\w+)\s*\(", cdef)
    assert len(names) > 15
    for name in names:
        assert callable(getattr(bus.lib, name)), name


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """native_libraries() is cached per build: forget its answer before and after a test."""
    build_native.native_libraries.cache_clear()
    yield
    build_native.native_libraries.cache_clear()


# The same x86-64 machine every time: only the compiler (and its flags) differs. The last
# one is 32-bit Raspberry Pi OS's baseline (ARMv6 + VFP), which a Pi 4 runs on an aarch64
# kernel; Debian's own armhf (ARMv7) inlines 64-bit atomics with LDREXD/STREXD.
@pytest.mark.parametrize(("cc", "expected"), [
    ("gcc", ["pthread"]),
    ("aarch64-linux-gnu-gcc", ["pthread"]),
    ("arm-linux-gnueabihf-gcc", ["pthread"]),
    ("arm-linux-gnueabihf-gcc -march=armv6+fp -marm", ["pthread", "atomic"]),
])
def test_libatomic_is_decided_by_the_compiler(monkeypatch: pytest.MonkeyPatch, fresh_probe: None, cc: str,
                                              expected: list[str]) -> None:
    monkeypatch.setenv("CC", cc)
    assert build_native.native_libraries() == expected


def test_libatomic_probe_errors_name_the_compiler(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setenv("CC", "pihub-no-such-cc")
    with pytest.raises(RuntimeError, match=r"cannot compile native/probe_atomic64.c with `pihub-no-such-cc.*"
                                           r"apt install gcc python3-dev"):
        build_native.native_libraries()
    build_native.native_libraries.cache_clear()
    monkeypatch.setenv("CC", "gcc -Wl,--pihub-no-such-option")
    with pytest.raises(RuntimeError, match=r"`gcc -Wl,--pihub-no-such-option.*` links 64-bit atomics neither "
                                           r"inline nor with -latomic.*apt install libatomic1"):
        build_native.native_libraries()


def test_builder_paths_work_from_any_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(NATIVE.parent)
    assert build_native._build_path(NATIVE / "ph_ring.c") == "native/ph_ring.c"
    monkeypatch.chdir(tmp_path)
    assert build_native._build_path(NATIVE / "ph_ring.c") == str(NATIVE / "ph_ring.c")
