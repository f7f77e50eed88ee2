"""The session's staged install of this checkout (see deploy_support.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import Installed, make_staging, snapshot


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    """This checkout installed twice into a staging root (with --enable-spi the 2nd time too)."""
    base = Path(tempfile.mkdtemp(prefix="pihub-deploy-"))
    try:
        staging = make_staging(base / "s")
        first = staging.install("--config", str(staging.config), "--enable-spi")
        assert first.returncode == 0, first.stderr
        before = snapshot(staging.root)
        other = base / "other.yaml"
        other.write_text("http: {port: 1234}\n")
        second = staging.install("--config", str(other), "--enable-spi")
        assert second.returncode == 0, second.stderr
        yield Installed(staging, first, second, before, snapshot(staging.root))
    finally:
        shutil.rmtree(base)
