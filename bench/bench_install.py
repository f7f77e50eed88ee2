"""The Pi install, measured on this machine: deploy/install.py into a staging root.

The system commands that would change this machine (apt-get, useradd, systemctl...) are the
recording stubs of tests/deploy; the venv is real (system Python, the hash-checked lock, pihub
built from this checkout). Rows:

- ``install.fresh`` ``seconds``: a first install (venv, lock, build), pip's cache warm.
- ``install.rerun`` ``seconds``: the same command again (nothing to do).
- ``install.venv`` ``venv_MiB``: the venv on disk without the camera stack (goal 25 MiB;
  the peer's venv is 179 MiB), pip and setuptools removed by the installer.
- ``install.unit`` ``exposure``: ``systemd-analyze security --offline`` of the unit rendered
  for every device kind (lower is better; pihub's bound is 2.0).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from common import Context, result

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "deploy"))

PEER_VENV_MIB = 179.0


def _du_mib(path: Path) -> float:
    total = sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink() and p.is_file())
    return total / (1024 * 1024)


def bench_install(ctx: Context) -> Iterable[dict[str, Any]]:
    from deploy_support import make_staging

    base = Path(tempfile.mkdtemp(prefix="pihub-bench-install-"))
    try:
        staging = make_staging(base / "s")
        t0 = time.perf_counter()
        first = staging.install("--config", str(staging.config))
        fresh = time.perf_counter() - t0
        if first.returncode != 0:
            raise RuntimeError(f"install failed: {first.stderr}")
        t0 = time.perf_counter()
        again = staging.install("--config", str(staging.config))
        rerun = time.perf_counter() - t0
        if again.returncode != 0:
            raise RuntimeError(f"re-install failed: {again.stderr}")
        venv = staging.root / "opt/pihub/.venv"
        yield result("install.fresh", "seconds", fresh, "s", better="lower")
        yield result("install.rerun", "seconds", rerun, "s", better="lower")
        yield result("install.venv", "venv_MiB", _du_mib(venv), "MiB", goal=25.0, peer=PEER_VENV_MIB,
                     better="lower", note="without the camera stack; pip and setuptools removed")
    finally:
        shutil.rmtree(base)


def bench_unit_exposure(ctx: Context) -> Iterable[dict[str, Any]]:
    sys.path.insert(0, str(REPO / "systemd"))
    import render

    from pihub.cli.doctor import KINDS, needs_for

    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / "pihub.service"
        unit.write_text(render.render_unit(command=["/bin/true"], needs=needs_for(KINDS)))
        env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
        out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                             text=True, env=env, timeout=120, check=True).stdout
    m = re.search(r"Overall exposure level for pihub\.service: (\d+\.\d+)", out)
    if not m:
        raise RuntimeError(f"no exposure level in: {out[-500:]}")
    yield result("install.unit", "exposure", float(m[1]), "score", goal=2.0, better="lower",
                 note="every device kind (systemd-analyze security --offline)")


BENCHES = [bench_install, bench_unit_exposure]
