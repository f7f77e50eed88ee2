"""The panel's browser rig: a real hub on the mock rig over loopback, and headless Chromium.

The hub runs in-process (as ``tests/web/`` runs it) with the HTTP and websocket servers
on fixed free loopback ports: the websocket server trusts the panel's ``Origin`` by the
HTTP port it is told, so that port must be known before the hub starts. Chromium is
Debian's ``/usr/bin/chromium`` driven by Playwright (``executable_path``; no browser
download). A missing browser skips locally and fails in CI (:func:`need_tool`).

Every page a test opens is watched: console errors, uncaught exceptions, failed requests,
requests to any other host and Content-Security-Policy violations fail the test at
teardown, unless the test declared the one it expects (:meth:`Panel.expect_console`).
Screenshots go to ``tests/panel/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from panel_support import CHROMIUM, PASSWORD, PNG_1X1, RIG_YAML, USER, Panel, Rig
from pihub_testing import free_port, need_tool

#: Reports every CSP violation as a console error (Chromium also logs its own line).
_CSP_WATCH = """document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`Content Security Policy violation: ${e.violatedDirective} blocked ${e.blockedURI}`));"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A hub on the mock rig with one user (:data:`USER`, :data:`PASSWORD`)."""
    import pihub.config as cfg
    from pihub.hub import Hub, known_sections

    tmp = tmp_path_factory.mktemp("panel")
    http_port, ws_port = free_port(), free_port()
    path = tmp / "config.yaml"
    photos = tmp / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        (photos / name).write_bytes(PNG_1X1)
    (photos / "notes.txt").write_text("not an image")
    (photos / ".hidden.png").write_bytes(PNG_1X1)
    path.write_text(RIG_YAML.format(workdir=tmp / "work", http_port=http_port, ws_port=ws_port, photos=photos))
    hub = Hub(cfg.load(str(path), sections=known_sections()))
    rig = Rig(hub, http_port, ws_port)
    hub.dispatcher.add_listener(rig.events.append)
    hub.start()
    try:
        hub.auth.add_user(USER, PASSWORD)
        yield rig
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), shared by the session."""
    need_tool(CHROMIUM.exists(), "chromium is not installed (apt-get install chromium)")
    need_tool(importlib.util.find_spec("playwright") is not None,
              "playwright is not installed (it is in requirements/test.txt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def make_panel(browser: Any, rig: Rig) -> Iterator[Callable[..., Panel]]:
    """Open panels (fresh contexts: no cookies) on the rig; each is checked at teardown."""
    panels: list[Panel] = []

    def make(width: int = 1280, height: int = 800) -> Panel:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.add_init_script(_CSP_WATCH)
        page = context.new_page()
        panel = Panel(page, context, rig)
        own = {f"127.0.0.1:{rig.http_port}", f"127.0.0.1:{rig.ws_port}"}

        def on_console(msg: Any) -> None:
            if msg.type == "error":
                panel.console_errors.append(msg.text)
                if "Content Security Policy" in msg.text:
                    panel.csp.append(msg.text)

        def on_request(req: Any) -> None:
            parts = urlsplit(req.url)
            if parts.scheme not in ("data", "blob", "about") and parts.netloc not in own:
                panel.foreign.append(req.url)

        def on_failed(req: Any) -> None:
            # a navigation away aborts the page's pending fetches: not a failure of the panel
            if req.failure != "net::ERR_ABORTED":
                panel.failed.append(f"{req.method} {req.url}: {req.failure}")

        page.on("console", on_console)
        page.on("pageerror", lambda e: panel.console_errors.append(f"uncaught: {e}"))
        page.on("request", on_request)
        page.on("requestfailed", on_failed)
        page.on("websocket", lambda ws: on_request(ws))
        panels.append(panel)
        return panel

    yield make
    try:
        for panel in panels:
            assert panel.problems() == []
    finally:
        for panel in panels:
            panel.context.close()
