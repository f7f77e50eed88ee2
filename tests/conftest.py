"""Shared fixtures: config files in tmp dirs, hubs that are always stopped."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text (dedented) to a config file in tmp; its workdir is in tmp too."""

    def write(text: str, name: str = "config.yaml") -> Path:
        body = textwrap.dedent(text)
        if "workdir:" not in body:
            body = f"workdir: {tmp_path / 'work'}\n" + body
        if not any(line.startswith(("http:", "backend.http:")) for line in body.splitlines()):
            # no fixed port 8008 in tests: HTTP tests build their servers on port 0
            body = "http: {enabled: false}\n" + body
        p = tmp_path / name
        p.write_text(body, encoding="utf-8")
        return p

    return write


@pytest.fixture
def load_config() -> Callable[[Path], object]:
    from pihub import config as cfg
    from pihub.hub import known_sections

    return lambda p: cfg.load(str(p), sections=known_sections())


@pytest.fixture
def make_hub(write_config, load_config) -> Iterator[Callable[..., object]]:
    """Build a Hub from YAML text; every hub built is stopped at teardown."""
    from pihub.hub import Hub

    hubs: list[Hub] = []

    def make(text: str, *, start: bool = True, **kw: object) -> Hub:
        hub = Hub(load_config(write_config(text)), **kw)
        hubs.append(hub)
        if start:
            hub.start()
        return hub

    yield make
    for h in hubs:
        h.stop()
