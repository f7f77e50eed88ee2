# pihub developer entry points. Each target creates .venv and installs what it needs.
#   make demo   run pihub on the mock rig (hw-mocks/demo.py: every simulator this machine can run)
#   make test   the whole suite: ruff and mypy, the native C tests (sanitizers where the compiler
#               has them; then cross-built for aarch64/armhf and run under qemu-user, CROSS= skips
#               those), then pytest
#   make bench  every benchmark -> bench/results/latest.jsonl
#   make hil    the hardware-in-the-loop suite alone (RIG=pi VENV=~/hil-venv on a wired Pi)
#   make soak   the reliability suite's long versions (PIHUB_SOAK=1: 300 kill -9 trials, long
#               floods, 5 min of fuzzing per target); tests/reliability/ also runs in make test
#   make lock   re-resolve requirements/*.txt from pyproject.toml (keeps pins that still fit;
#               make lock-upgrade moves every pin to the newest release)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.pihub-installed
NATIVE  = $(wildcard native/*.c native/*.h) native/build_native.py native/build_loadgen.py

.PHONY: all build demo test lint typecheck test-native test-py hil fuzz soak bench sysdeps clean lock lock-upgrade

all: build

sysdeps:
	@sh tools/sysdeps.sh

$(PY): | sysdeps
	$(PYTHON) -m venv $(VENV)

# Every Python package comes from the lock, hash-checked (requirements/test.txt: runtime,
# test and build tools; requirements/runtime.txt is the Pi install's subset). pihub itself
# is then built against the locked setuptools and cffi, without a build-isolation download.
# Reinstall (rebuilding pihub._native) whenever the native sources, metadata or lock change.
# PIHUB_DEV_EXTENSIONS=1 also builds pihub.devtools._loadgen, the C load generator of the
# tests and benchmarks (native/build_loadgen.py); a plain `pip install .` leaves it out.
$(STAMP): $(PY) pyproject.toml setup.py $(NATIVE) requirements/test.txt
	$(PY) -m pip install -q --require-hashes -r requirements/test.txt
	PIHUB_DEV_EXTENSIONS=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The lock is universal (every platform and Python >= 3.11, markers kept) and lists the
# hash of every file of each pinned release, so the same lock installs on x86-64, aarch64
# and armhf (building from the hashed sdist where no wheel exists). Only relocking needs uv.
UV_VERSION = 0.13.8
UV = $(VENV)/bin/uv
LOCK = $(UV) pip compile -q --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' pyproject.toml requirements/build.in

$(UV): $(PY)
	$(PY) -m pip install -q uv==$(UV_VERSION)

lock: $(UV)
	$(LOCK) $(LOCK_FLAGS) --extra gpio --extra serial --extra spi -o requirements/runtime.txt
	$(LOCK) $(LOCK_FLAGS) --extra gpio --extra serial --extra test -o requirements/test.txt

lock-upgrade:
	$(MAKE) lock LOCK_FLAGS=--upgrade

build: $(STAMP)

# hw-mocks/demo.py starts every device simulator this machine can run (serial sensor,
# fake flicd, MIDI controller on a private jackd, virtual key card on pcscd as root), prints
# the panel URL with a login and an API token, and runs pihub on them (Ctrl-C stops all).
demo: build
	@$(PY) hw-mocks/demo.py

test: build lint typecheck test-native test-py

# ruff with the selection in pyproject.toml ([tool.ruff.lint])
lint: build
	$(VENV)/bin/ruff check pihub tests bench hw-mocks native deploy systemd

# mypy over pihub/ with the settings in pyproject.toml ([tool.mypy]: strict)
typecheck: build
	$(VENV)/bin/mypy

# The C tests on this machine (sanitizer builds where the compiler has them), then cross-built
# for the Pi's aarch64 and armhf and run under qemu-user (native/Makefile, "ARM").
test-native:
	$(MAKE) -C native check cross

test-py: build
	$(PY) -m pytest

# The hardware-in-the-loop suite alone (tests/hil/README.md), printing each device's measured
# figures. RIG=mock (default) runs it on the mock rig from .venv; on a wired Pi, from the test
# venv that README makes: make hil RIG=pi VENV=~/hil-venv (no build step: that venv is made by
# hand, with the Pi's picamera2 from --system-site-packages).
RIG ?= mock
hil:
	PIHUB_RIG=$(RIG) $(PY) -m pytest -p no:cacheprovider -s tests/hil

fuzz: build
	$(PY) -m pytest -m fuzz -s tests/web

soak: build
	PIHUB_SOAK=1 $(PY) -m pytest tests/reliability

bench: build
	$(PY) bench/run.py --peer

clean:
	rm -rf build *.egg-info pihub/_native*.so pihub/_native.c pihub/devtools/_loadgen*.so \
	  pihub/devtools/_loadgen.c native/tests/bin
