"""The cffi builder of ``pihub.devtools._loadgen``: the C load generator, for tests and benchmarks.

Development only. ``setup.py`` adds it to ``cffi_modules`` when ``PIHUB_DEV_EXTENSIONS=1``,
which ``make build`` sets for the editable install of the development venv; the Pi install
(``pip install --no-deps --no-build-isolation .`` from the lock) does not set it, so the
product is ``pihub._native`` alone. The extension holds ``ph_loadgen.c`` only: it pushes
through function pointers into ``pihub._native`` (``native/ph_loadgen.h``), so no ring code
is compiled twice. Its Python face is :mod:`pihub.devtools.loadgen`.

The cdef, compile flags and libraries come from ``build_native.py``, loaded by path (cffi
runs builders as scripts, so ``native/`` is not importable here).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("pihub_build_native", Path(__file__).resolve().parent /
                                               "build_native.py")
assert _spec is not None and _spec.loader is not None
build_native = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_native)

#: The extension's module name.
MODULE = "pihub.devtools._loadgen"
#: Headers whose text is the cdef, in include order.
CDEF_HEADERS = ("ph_event.h", "ph_loadgen.h")
#: C sources of the extension.
SOURCES = ("ph_loadgen.c",)

ffibuilder = build_native.make_ffibuilder(MODULE, CDEF_HEADERS, SOURCES)
