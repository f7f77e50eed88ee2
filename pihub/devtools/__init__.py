"""Development tools of the tests and benchmarks; not part of a Pi install.

This package is not in pyproject.toml's ``packages``, so a wheel (``pip install .``) leaves
it out; the editable install of the development venv (``make build``) finds it beside the
rest of ``pihub`` and builds its extension, ``pihub.devtools._loadgen`` (see
``native/build_loadgen.py``). The daemon never imports it.
"""
