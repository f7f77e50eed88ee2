"""The panel's HTTP side over a real socket: redirects, static files, CSP, its JSON views.

Hostile input is attacked here: path traversal under ``/ui/``, a ``Host`` header that
tries to inject CSP directives, event ids that are not ids.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from panel_support import USER, Rig
from pihub_testing import wait_for

from pihub.events import Event


def request(rig: Rig, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """(status, lower-case headers, body) of one request to the rig."""
    conn = http.client.HTTPConnection("127.0.0.1", rig.http_port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def session(rig: Rig) -> tuple[str, str]:
    """A panel session of the rig's user: (cookie header, csrf token)."""
    token, csrf = rig.hub.auth.create_session(USER)
    return f"session_token={token}", csrf


@pytest.fixture(scope="module")
def read_token(rig: Rig) -> str:
    token, _ = rig.hub.auth.create_token(USER, name="panel-read", scopes=("read",))
    return token


def csp_of(headers: dict[str, str]) -> dict[str, str]:
    """The CSP as directive -> sources."""
    return {d.strip().split(" ", 1)[0]: (d.strip().split(" ", 1) + [""])[1]
            for d in headers["content-security-policy"].split(";") if d.strip()}


# ------------------------------------------------------------------------------- /
def test_root_without_a_session_redirects_to_the_login_page(rig: Rig) -> None:
    status, headers, _ = request(rig, "/")
    assert status == 303
    assert headers["location"] == "/ui/login.html?redirect=/"


def test_root_with_an_ended_session_redirects_and_clears_nothing_else(rig: Rig) -> None:
    token, _ = rig.hub.auth.create_session(USER)
    rig.hub.auth.end_session(token)
    status, headers, _ = request(rig, "/", {"Cookie": f"session_token={token}"})
    assert status == 303 and headers["location"].startswith("/ui/login.html")


def test_root_with_a_session_is_the_panel_with_its_strict_csp(rig: Rig, session: tuple[str, str]) -> None:
    status, headers, body = request(rig, "/", {"Cookie": session[0], "Host": f"127.0.0.1:{rig.http_port}"})
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="/ui/app.js">' in body
    csp = csp_of(headers)
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert "unsafe-eval" not in headers["content-security-policy"]
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'" and csp["default-src"] == "'none'"
    assert csp["connect-src"] == f"'self' ws://127.0.0.1:{rig.ws_port}"
    assert csp["frame-ancestors"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"


def test_root_with_a_read_token_is_the_panel(rig: Rig, read_token: str) -> None:
    status, _, _ = request(rig, "/", {"Authorization": f"Bearer {read_token}"})
    assert status == 200


@pytest.mark.parametrize("host", [
    "evil.example; script-src *",
    "127.0.0.1:8008 'unsafe-inline'",
    "a b",
    "[::1; script-src *]",
    "x" * 300,
])
def test_a_hostile_host_header_cannot_add_csp_sources(rig: Rig, session: tuple[str, str], host: str) -> None:
    status, headers, _ = request(rig, "/", {"Cookie": session[0], "Host": host})
    assert status == 200
    csp = headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "*" not in csp
    assert csp_of(headers)["connect-src"] == "'self'"
    assert csp_of(headers)["script-src"] == "'self'"


def test_an_ipv6_host_gets_its_websocket_origin(rig: Rig, session: tuple[str, str]) -> None:
    _, headers, _ = request(rig, "/", {"Cookie": session[0], "Host": f"[::1]:{rig.http_port}"})
    assert csp_of(headers)["connect-src"] == f"'self' ws://[::1]:{rig.ws_port}"


# -------------------------------------------------------------------------- /ui/
def test_static_files_have_types_etags_and_revalidate(rig: Rig) -> None:
    status, headers, body = request(rig, "/ui/app.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["etag"].startswith('"')
    assert body.startswith(b"// The panel")
    status, again, body = request(rig, "/ui/app.js", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b"" and again["etag"] == headers["etag"]
    status, _, _ = request(rig, "/ui/app.js", {"If-None-Match": '"stale"'})
    assert status == 200
    assert request(rig, "/ui/style.css")[1]["content-type"] == "text/css; charset=utf-8"


def test_the_login_page_needs_no_credential_and_has_no_inline_code(rig: Rig) -> None:
    status, headers, body = request(rig, "/ui/login.html")
    assert status == 200
    assert b"<script>" not in body and b" style=" not in body and b" onclick" not in body
    assert "unsafe-inline" not in headers["content-security-policy"]


@pytest.mark.parametrize("path", [
    "/ui/../pihub/hub.py",
    "/ui/%2e%2e/pihub/hub.py",
    "/ui/..%2fpihub%2fhub.py",
    "/ui/pages/../../pyproject.toml",
    "/ui//etc/passwd",
    "/ui/%2fetc%2fpasswd",
    "/ui/.gitignore",
    "/ui/nosuch.js",
    "/ui/pages",
])
def test_no_path_leaves_the_webui_folder(rig: Rig, path: str) -> None:
    status, headers, body = request(rig, path)
    assert status == 404, (path, status)
    assert headers["content-type"] == "application/json"
    assert b"tool.mypy" not in body and b"root:" not in body


def test_every_panel_file_is_served_and_nothing_is_fetched_from_elsewhere(rig: Rig) -> None:
    from pihub.web.panel import WEBUI_DIR

    for path in WEBUI_DIR.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(WEBUI_DIR).as_posix()
            status, _, body = request(rig, f"/ui/{rel}")
            assert status == 200, rel
            for marker in (b"http://", b"https://", b"//cdn", b"@import url("):
                if marker in body:
                    # only the SVG namespace URI, which is a name, not a request
                    assert body.count(marker) == body.count(b"http://www.w3.org/2000/svg"), (rel, marker)


# ------------------------------------------------------------------- the JSON views
def test_panel_session_gives_the_csrf_token_and_the_websocket(rig: Rig, session: tuple[str, str]) -> None:
    status, headers, body = request(rig, "/panel/session", {"Cookie": session[0]})
    assert status == 200 and headers["cache-control"] == "no-store"
    data = json.loads(body)
    assert data["username"] == USER and data["csrf_token"] == session[1]
    assert data["websocket"] == {"port": rig.ws_port, "path": "/ws/events"}
    assert data["device_id"] == "panel-rig" and "admin" in data["scopes"]


@pytest.mark.parametrize("path", ["/panel/session", "/panel/devices", "/panel/hooks", "/events/ab12/trace"])
def test_panel_views_need_a_credential(rig: Rig, path: str) -> None:
    status, _, body = request(rig, path)
    assert status == 401 and json.loads(body)["error"] == "INVALID_CREDENTIALS"


def test_devices_lists_backends_with_their_entities(rig: Rig, read_token: str) -> None:
    status, _, body = request(rig, "/panel/devices", {"Authorization": f"Bearer {read_token}"})
    assert status == 200
    devices = {d["name"]: d for d in json.loads(body)}
    assert devices["gpio"]["status"] == "running"
    kinds = {e["name"]: e["kind"] for e in devices["gpio"]["entities"]}
    assert kinds == {"button": "input", "relay": "output"}
    relay = next(e for e in devices["gpio"]["entities"] if e["name"] == "relay")
    assert relay["set"] == {"action": "gpio.write", "args": {"pin": "relay"}, "value_arg": "value"}
    assert [e["name"] for e in devices["mock"]["entities"]] == ["lamp"]


def test_trace_of_a_recent_event_is_the_replay_trace(rig: Rig, read_token: str) -> None:
    seen: list[Event] = []
    rig.hub.dispatcher.add_listener(lambda e: seen.append(e) if e.args.get("subtype") == "trace-me" else None)
    assert rig.hub.publish(Event.of("SensorDataChangeEvent", "mock", data={"temperature": 30}, subtype="trace-me"))
    assert rig.hub.flush() and wait_for(lambda: seen)
    event_id = seen[0].id

    def trace() -> dict[str, Any]:
        status, _, body = request(rig, f"/events/{event_id}/trace", {"Authorization": f"Bearer {read_token}"})
        assert status == 200
        return json.loads(body)

    assert wait_for(lambda: trace()["complete"])
    t = trace()
    assert t["event"]["id"] == event_id and t["event"]["args"]["data"] == {"temperature": 30}
    assert t["fired"] == ["too_warm"]
    assert [(a["hook"], a["action"], a["errors"]) for a in t["actions"]] == [("too_warm", "logger.info", [])]
    assert t["not_fired"]["button_pressed"] == "type: SensorDataChangeEvent is not a GPIOEvent"


@pytest.mark.parametrize(("event_id", "status"), [
    ("0" * 32, 404),
    ("zz", 400),
    ("<script>alert(1)</script>", 400),
    ("a" * 65, 400),
])
def test_trace_refuses_unknown_and_malformed_ids(rig: Rig, read_token: str, event_id: str, status: int) -> None:
    from urllib.parse import quote

    got, _, body = request(rig, f"/events/{quote(event_id, safe='')}/trace",
                           {"Authorization": f"Bearer {read_token}"})
    assert got == status
    error = json.loads(body)
    if status == 400:
        assert error["message"].startswith("event id must be 1 to 64 hex digits, not ")
    else:
        assert "not among the recent events" in error["message"]


def test_hooks_view_counts_fired_hooks(rig: Rig, read_token: str) -> None:
    def fired() -> int:
        return next(h["fired"] for h in rig.hub.describe_hooks()["hooks"] if h["name"] == "too_warm")

    before = fired()
    assert rig.hub.publish(Event.of("SensorDataChangeEvent", "mock", data={"temperature": 31}))
    assert rig.hub.flush()
    assert wait_for(lambda: fired() == before + 1)
    status, _, body = request(rig, "/panel/hooks", {"Authorization": f"Bearer {read_token}"})
    assert status == 200
    view = json.loads(body)
    hooks = {h["name"]: h for h in view["hooks"]}
    assert hooks["too_warm"]["fired"] == before + 1 and hooks["too_warm"]["last_fired"] > 1.7e9
    assert hooks["too_warm"]["if"] == {"type": "SensorDataChangeEvent", "data": {"temperature": {"$gte": 25}}}
    assert view["procedures"] == [{"name": "lights_off", "params": ["reason"], "async": False}]
