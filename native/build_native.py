"""The cffi builder of ``pihub._native`` (out-of-line API mode: a real C extension).

``setup.py`` runs it through setuptools' ``cffi_modules`` hook, so both ``pip install -e .``
and ``pip install .`` from the repository root compile ``native/*.c`` into
``pihub/_native*.so``. The cdef is not written twice: it is the text of the headers the C
sources include (``ph_event.h``, ``ph_api.h``) minus what cffi's parser does not take, so
the Python view of a struct or prototype cannot drift from the compiled one.

Paths are resolved from this file, and handed to setuptools relative to the working
directory when they lie under it (setuptools then names the object files sanely).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from cffi import FFI

NATIVE_DIR = Path(__file__).resolve().parent
#: Headers whose text is the cdef, in include order.
CDEF_HEADERS = ("ph_event.h", "ph_api.h")
#: C sources of the extension (the load generator, ph_loadgen.c, is not one of them: it
#: goes into the development-only extension of native/build_loadgen.py).
SOURCES = ("ph_ring.c", "ph_match.c")
COMPILE_ARGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"]

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_INT_DEFINE = re.compile(r"#\s*define\s+[A-Za-z_]\w*\s+(?:0[xX][0-9A-Fa-f]+|[0-9]+)")


def cdef_from_header(text: str) -> str:
    r"""Turn a C header into cdef text.

    Comments are removed first (so a comment that trails a removed line cannot dangle);
    then every preprocessor line is dropped (with its ``\\`` continuations) except
    ``#define NAME <integer>``, which cffi turns into an integer constant of ``lib``.

    Args:
        text: the header's source.

    Returns:
        The declarations cffi should parse, one per original line.
    """
    kept: list[str] = []
    continued = False
    for line in _COMMENT.sub(" ", text).splitlines():
        stripped = line.strip()
        if continued:
            continued = stripped.endswith("\\")
            continue
        if stripped.startswith("#"):
            continued = stripped.endswith("\\")
            if not continued and _INT_DEFINE.fullmatch(stripped):
                kept.append(stripped)
            continue
        kept.append(line.rstrip())
    return "\n".join(kept) + "\n"


def native_libraries(machine: str | None = None) -> list[str]:
    """Libraries to link, for the machine the build runs on.

    Args:
        machine: ``platform.machine()`` value; the running machine's when None.

    Returns:
        ``["pthread"]``, plus ``"atomic"`` on 32-bit ARM: Raspberry Pi OS armhf targets
        ARMv6, where gcc calls libatomic for the rings' 64-bit counters.
    """
    machine = platform.machine() if machine is None else machine
    libs = ["pthread"]
    if machine.startswith("arm") and machine not in ("arm64",):
        libs.append("atomic")
    return libs


def _build_path(path: Path) -> str:
    """``path`` relative to the working directory when under it, else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def make_ffibuilder(module: str = "pihub._native", headers: tuple[str, ...] = CDEF_HEADERS,
                    sources: tuple[str, ...] = SOURCES) -> FFI:
    """The configured builder (cdef + set_source) of one extension of ``native/``.

    Args:
        module: the extension's dotted module name.
        headers: headers of ``native/`` whose text is the cdef, in include order; the
            extension's C wrapper includes the last one.
        sources: C sources of ``native/`` compiled into it.
    """
    builder = FFI()
    builder.cdef("".join(cdef_from_header((NATIVE_DIR / h).read_text()) for h in headers))
    builder.set_source(
        module,
        f'#include "{headers[-1]}"',
        sources=[_build_path(NATIVE_DIR / s) for s in sources],
        include_dirs=[_build_path(NATIVE_DIR)],
        extra_compile_args=COMPILE_ARGS,
        libraries=native_libraries(),
    )
    return builder


ffibuilder = make_ffibuilder()
