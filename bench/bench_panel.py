"""The web panel: its weight, its time to first render, the daemon's memory with 5 panels open.

Every figure is taken against a real ``pihub run`` (started as ``bench_http`` starts it,
with a user and an API token made with the CLI first) on the mock rig: the mock backend
playing a script in a loop (a GPIO edge, two sensor readings, a custom event, about one
event every 0.6 s) and gpiozero's MockFactory pins, so the panel has live events to show.
The browser is Debian's headless Chromium (``/usr/bin/chromium``) driven by Playwright;
without it the family fails (reported, the others still run).

* **panel.weight** ``first_load_kb``: the bytes of every response body (uncompressed;
  pihub sends no compression) from opening ``/`` with a fresh session cookie until the
  Devices page is drawn and the websocket is live: the HTML, CSS, JS modules, icon and
  the JSON the panel asks for. ``static_kb``: of those, the files of ``webui/``;
  ``login_kb``: the login page and its files. Goal: <= 100 KB (1 KB = 1000 bytes).
  Peer: Platypush's web panel, the files its ``index.html`` loads from its installed
  ``webapp/dist`` (measured on disk; its app then loads more chunks per view), when the
  peer is installed (``--peer-dir``).
* **panel.render** ``first_render_ms``: navigation start -> the Devices page drawn with
  a card per backend (the panel's ``pihub-devices-drawn`` performance mark), a fresh
  context (empty cache) each run, session cookie already set; median of ``--runs``.
  ``first_contentful_paint_ms`` too.
* **panel.clients** ``rss_mib_5_clients``: the daemon's RSS (``VmRSS``, MiB, summed
  over its process tree) with 5 panels open (5 browser contexts, each with its websocket)
  for 5 s of the rig's events; ``rss_mib_idle`` before they opened, on the same process,
  and ``rss_delta_mib_5_clients``, the difference. No goal: the rig's baseline includes
  gpiozero, which ``daemon.idle`` (the 30 MiB goal) does not load.
"""

from __future__ import annotations

import html.parser
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_http import Daemon, Rig
from common import Context, cpu_snapshot, median, others_cpu_pct, result, rounded, tree_memory

CHROMIUM = Path("/usr/bin/chromium")
HOST = "127.0.0.1"  # loopback only
USER = "bench"
CLIENTS = 5
CLIENTS_S = 5.0
IDLE_S = 3.0
WEIGHT_GOAL_KB = 100.0

CONFIG = """\
# written by bench/bench_panel.py
workdir: {workdir}
logging:
  level: WARNING
http:
  bind_address: 127.0.0.1
  port: {port}
  websocket_port: {ws_port}
mock:
  repeat: true
  outputs: {{porch_light: false}}
  script:
    - {{after: 0.6, event: {{type: GPIOEvent, pin: 5, name: doorbell, value: 1}}}}
    - {{after: 0.6, event: {{type: SensorDataChangeEvent, data: {{temperature: 21.5, humidity: 40}}}}}}
    - {{after: 0.6, event: {{type: SensorDataChangeEvent, data: {{temperature: 22.5, humidity: 41}}}}}}
    - {{after: 0.6, event: {{type: CustomEvent, subtype: tick}}}}
gpio:
  pin_factory: mock
  inputs: {{button: {{pin: 17}}}}
  outputs: {{relay: {{pin: 27}}}}
event.hook.doorbell:
  if: {{type: GPIOEvent, name: doorbell, value: 1}}
  then:
    - action: mock.set
      args: {{name: porch_light, value: true}}
"""


def _browser(pw: Any) -> Any:
    if not CHROMIUM.exists():
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


def _session_cookie(browser: Any, rig: Rig) -> list[dict[str, Any]]:
    """Log in once through the login page; the session cookie to reuse."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(rig.url + "/")
        page.fill("#username", USER)
        page.fill("#password", rig.password)
        page.click("#submit")
        page.wait_for_selector("body[data-ready='1']")
        return [c for c in context.cookies() if c["name"] == "session_token"]
    finally:
        context.close()


def _open_panel(browser: Any, rig: Rig, cookies: list[dict[str, Any]]) -> tuple[Any, dict[str, int]]:
    """A fresh context with the session, on ``/`` until drawn and live; bytes by kind."""
    context = browser.new_context()
    context.add_cookies(cookies)
    page = context.new_page()
    responses: list[Any] = []
    # bodies are read after the load, not in the handler (a nested call there may be cut short)
    page.on("response", lambda r: responses.append(r))
    page.goto(rig.url + "/")
    page.wait_for_selector(".card.device")
    page.wait_for_selector("#conn[data-state=live]")
    page.wait_for_load_state("networkidle")
    sizes = {"static": 0, "api": 0}
    for resp in responses:
        sizes["static" if "/ui/" in resp.url or resp.url.rstrip("/") == rig.url else "api"] += _body_len(resp)
    return context, sizes


def _body_len(resp: Any) -> int:
    """Bytes of a response's body; 0 for a redirect (it has none)."""
    if 300 <= resp.status < 400:
        return 0
    try:
        return len(resp.body())
    except Exception as e:
        raise RuntimeError(f"cannot read the body of {resp.url} ({resp.status}): {e}") from e


def _login_weight(browser: Any, rig: Rig) -> int:
    context = browser.new_context()
    try:
        page = context.new_page()
        responses: list[Any] = []
        page.on("response", lambda r: responses.append(r))
        page.goto(rig.url + "/")
        page.wait_for_selector("#login")
        page.wait_for_load_state("networkidle")
        return sum(_body_len(r) for r in responses)
    finally:
        context.close()


class _Assets(html.parser.HTMLParser):
    """The local scripts and stylesheets an ``index.html`` loads."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ref = a.get("src") if tag == "script" else a.get("href") if tag == "link" and a.get("rel") in (
            "stylesheet", "modulepreload", "preload", "icon") else None
        if ref and not ref.startswith(("http:", "https:", "//", "data:")):
            self.paths.append(ref.split("?")[0].lstrip("/"))


def peer_panel_kb(peer_dir: Path) -> tuple[float | None, str]:
    """The peer's panel first-load weight on disk (index.html + what it loads), KB, and how."""
    dists = sorted(peer_dir.glob("venv/lib/python3*/site-packages/platypush/backend/http/webapp/dist"))
    if not dists:
        return None, f"the peer is not installed in {peer_dir} (make bench installs it with --peer)"
    dist = dists[0]
    index = dist / "index.html"
    if not index.exists():
        return None, f"no index.html in {dist}"
    parser = _Assets()
    parser.feed(index.read_text(encoding="utf-8", errors="replace"))
    total = index.stat().st_size
    found = 0
    for rel in parser.paths:
        for candidate in (dist / rel, dist / rel.removeprefix("static/")):
            if candidate.is_file():
                total += candidate.stat().st_size
                found += 1
                break
    whole = sum(p.stat().st_size for p in dist.rglob("*") if p.is_file())
    return total / 1000, (f"index.html + the {found} files it references in {dist} (on disk, uncompressed); "
                          f"the whole dist is {whole / 1e6:.1f} MB")


def bench_panel(ctx: Context) -> Iterator[dict[str, Any]]:
    """Panel weight, time to first render, daemon RSS with 5 panels (module docstring)."""
    from playwright.sync_api import sync_playwright

    runs = 2 if ctx.quick else ctx.runs
    tmp = Path(tempfile.mkdtemp(prefix="pihub-bench-panel-"))
    snap = cpu_snapshot()
    rig = Rig(tmp, config=CONFIG, user=USER)
    d = Daemon(rig, ctx.log)
    try:
        d.start()
        time.sleep(max(0.0, d.ready_at + IDLE_S - time.perf_counter()))  # type: ignore[operator]
        with sync_playwright() as pw:
            browser = _browser(pw)
            try:
                cookies = _session_cookie(browser, rig)
                login_bytes = _login_weight(browser, rig)
                weights: list[dict[str, int]] = []
                renders: list[float] = []
                fcps: list[float] = []
                for _ in range(runs + 1):  # the first: warm-up
                    t_ctx, sizes = _open_panel(browser, rig, cookies)
                    page = t_ctx.pages[0]
                    drawn = page.evaluate("performance.getEntriesByName('pihub-devices-drawn')[0].startTime")
                    fcp = page.evaluate(
                        "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || 0")
                    weights.append(sizes)
                    renders.append(float(drawn))
                    fcps.append(float(fcp))
                    t_ctx.close()
                weights, renders, fcps = weights[1:], renders[1:], fcps[1:]

                idle = tree_memory(d.proc.pid)  # type: ignore[union-attr]
                opened = [_open_panel(browser, rig, cookies)[0] for _ in range(CLIENTS)]
                time.sleep(CLIENTS_S)
                busy = tree_memory(d.proc.pid)  # type: ignore[union-attr]
                for c in opened:
                    c.close()
            finally:
                browser.close()
    finally:
        d.stop()
    noise = {"others_cpu_pct": others_cpu_pct(snap, cpu_snapshot())}
    first = median([w["static"] + w["api"] for w in weights]) / 1000
    peer_kb, peer_note = peer_panel_kb(ctx.peer_dir)
    yield result("panel.weight", "first_load_kb", first, "KB", goal=WEIGHT_GOAL_KB, better="lower",
                 peer=peer_kb, peer_note=peer_note, n=len(weights),
                 runs=rounded([(w["static"] + w["api"]) / 1000 for w in weights]),
                 note="response bodies from opening / with a session until drawn and live (HTML, CSS, JS, "
                      "icon, API JSON), uncompressed", **noise)
    yield result("panel.weight", "static_kb", median([w["static"] for w in weights]) / 1000, "KB",
                 note="of first_load_kb: the webui/ files", **noise)
    yield result("panel.weight", "login_kb", login_bytes / 1000, "KB",
                 note="/ without a session -> the login page and its files", **noise)
    yield result("panel.render", "first_render_ms", median(renders), "ms", better="lower", n=len(renders),
                 runs=rounded(renders), note="navigation start -> Devices cards drawn (the pihub-devices-drawn mark), empty cache",
                 **noise)
    yield result("panel.render", "first_contentful_paint_ms", median(fcps), "ms", better="lower",
                 runs=rounded(fcps), **noise)
    yield result("panel.clients", "rss_mib_idle", idle["rss_mib"], "MiB", better="lower",
                 note="the daemon before the 5 panels opened (after the render runs)", **noise)
    yield result("panel.clients", "rss_mib_5_clients", busy["rss_mib"], "MiB", better="lower",
                 note=f"{CLIENTS} panels open (each its websocket) for {CLIENTS_S:.0f} s of the rig's events; "
                      "the rig loads gpiozero (MockFactory), which daemon.idle's demo config does not",
                 **noise)
    yield result("panel.clients", "rss_delta_mib_5_clients", busy["rss_mib"] - idle["rss_mib"], "MiB",
                 better="lower", note="rss_mib_5_clients - rss_mib_idle: what the 5 open panels cost", **noise)


BENCHES = [bench_panel]
