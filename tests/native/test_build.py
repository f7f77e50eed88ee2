"""The native build: the cffi builder's helpers, the ABI and layout checks, a smoke import."""

from __future__ import annotations

import importlib.util
import re
import sys
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


def test_compiled_layout_matches_the_struct_format() -> None:
    for name, offset in bus.SLOT_OFFSETS.items():
        assert bus.ffi.offsetof("struct ph_event", name) == offset


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


def test_libraries_add_libatomic_on_32_bit_arm_only() -> None:
    assert build_native.native_libraries("x86_64") == ["pthread"]
    assert build_native.native_libraries("aarch64") == ["pthread"]
    assert build_native.native_libraries("armv7l") == ["pthread", "atomic"]
    assert build_native.native_libraries("armv6l") == ["pthread", "atomic"]


def test_builder_paths_work_from_any_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(NATIVE.parent)
    assert build_native._build_path(NATIVE / "ph_ring.c") == "native/ph_ring.c"
    monkeypatch.chdir(tmp_path)
    assert build_native._build_path(NATIVE / "ph_ring.c") == str(NATIVE / "ph_ring.c")
