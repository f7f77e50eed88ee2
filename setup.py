"""Only the native build lives here; metadata is in pyproject.toml.

``pihub._native`` (native/build_native.py) is the product's extension and always built.
With ``PIHUB_DEV_EXTENSIONS=1`` in the environment, which ``make build`` sets for the
development venv, ``pihub.devtools._loadgen`` (native/build_loadgen.py: the C load generator
of the tests and benchmarks) is built too; the Pi install, ``pip install --no-deps
--no-build-isolation .``, does not set it and gets the product alone.
"""

import os

from setuptools import setup

CFFI_MODULES = ["native/build_native.py:ffibuilder"]
if os.environ.get("PIHUB_DEV_EXTENSIONS") == "1":
    CFFI_MODULES.append("native/build_loadgen.py:ffibuilder")

setup(cffi_modules=CFFI_MODULES)
