# pihub developer entry points. Each target creates .venv and installs what it needs.
#   make demo   run pihub on the mock rig (hw-mocks/demo.yaml)
#   make test   the whole suite: native sanitizer tests, then pytest
#   make bench  every benchmark -> bench/results/latest.jsonl
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.pihub-installed
NATIVE  = $(wildcard native/*.c native/*.h) native/build_native.py

.PHONY: all build demo test test-native test-py bench sysdeps clean

all: build

sysdeps:
	@sh tools/sysdeps.sh

$(PY): | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall (rebuilding pihub._native) whenever the native sources or metadata change.
$(STAMP): $(PY) pyproject.toml setup.py $(NATIVE)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

build: $(STAMP)

demo: build
	$(VENV)/bin/pihub --config hw-mocks/demo.yaml run

test: build test-native test-py

test-native:
	$(MAKE) -C native check

test-py: build
	$(PY) -m pytest

bench: build
	$(PY) bench/run.py --peer

clean:
	rm -rf build *.egg-info pihub/_native*.so pihub/_native.c native/tests/bin
