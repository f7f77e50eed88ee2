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

import functools
import os
import re
import tempfile
from pathlib import Path

from cffi import FFI

# setuptools' copy of distutils: the compiler classes that build the extension itself.
from setuptools._distutils import ccompiler
from setuptools._distutils import errors as dist_errors
from setuptools._distutils import sysconfig as dist_sysconfig

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


#: The link probe of native_libraries() (see its docstring), in native/.
ATOMIC_PROBE = "probe_atomic64.c"


@functools.cache
def native_libraries() -> list[str]:
    """Libraries to link, decided by the compiler that builds the extension.

    That compiler is setuptools' (``CC``, ``CFLAGS``, ``LDFLAGS`` from the environment or
    the interpreter's sysconfig), so the answer follows the interpreter and the target, not
    the kernel: 32-bit Raspberry Pi OS on a 64-bit kernel reports ``aarch64`` but needs
    libatomic. The probe ``native/probe_atomic64.c`` is linked without, then with
    ``-latomic`` (it is compiled, never run, so it works for cross builds too); the
    compiler's output goes to the build log as the extension's does, so a verbose build
    shows the expected ``undefined reference to `__atomic_...'`` of the first try on ARMv6.

    Returns:
        ``["pthread"]``, plus ``"atomic"`` where the compiler does not inline 64-bit
        atomics (gcc for ARMv6, the baseline of 32-bit Raspberry Pi OS).

    Raises:
        RuntimeError: the probe does not compile, or does not link even with -latomic;
            the message names the compiler command and what to install.
    """
    compiler = ccompiler.new_compiler()
    dist_sysconfig.customize_compiler(compiler)
    command = " ".join(compiler.compiler_so)
    with tempfile.TemporaryDirectory(prefix="pihub-probe-") as tmp:
        try:
            objects = compiler.compile([str(NATIVE_DIR / ATOMIC_PROBE)], output_dir=tmp,
                                       extra_postargs=COMPILE_ARGS)
        except dist_errors.CompileError as e:
            raise RuntimeError(f"cannot compile native/{ATOMIC_PROBE} with `{command}`: pihub's native core "
                               "needs a C11 compiler (on Debian/Raspberry Pi OS: apt install gcc python3-dev)"
                               f"\n{e}") from e
        for extra in ([], ["atomic"]):
            try:
                compiler.link_executable(objects, "probe", output_dir=tmp, libraries=extra)
            except dist_errors.LinkError as e:
                failure = e
                continue
            return ["pthread", *extra]
    raise RuntimeError(f"`{command}` links 64-bit atomics neither inline nor with -latomic: install libatomic "
                       f"(on Debian/Raspberry Pi OS: apt install libatomic1)\n{failure}")


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
