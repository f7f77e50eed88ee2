"""The one access policy (``pihub.web.access``): its rules alone, then the same table of
credentials and Origins driven through the HTTP app and the websocket server, which must
decide alike."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from http_support import PASSWORD, Rig, basic, build_rig
from hypothesis import given
from hypothesis import strategies as st
from pihub_testing import wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from pihub.events import Event
from pihub.web.access import (
    REFUSED_PASSWORD,
    Access,
    Caller,
    Refused,
    RequestView,
    origin_allowed,
    read_cookie,
)
from pihub.web.app import SESSION_COOKIE
from pihub.web.live import LiveServer


# ------------------------------------------------------------------ the rules alone
class _Principal:
    def __init__(self, name: str, scopes: frozenset[str]) -> None:
        self.username, self.scopes, self.token_id, self.session_id = name, scopes, None, None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


class _Auth:
    """Two tokens, one session; counts every check so a test sees what was tried."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def check_token(self, token: str) -> _Principal | None:
        self.checked.append(f"token:{token}")
        return {"good": _Principal("t", frozenset({"read"}))}.get(token)

    def check_session(self, session: str) -> tuple[_Principal, str] | None:
        self.checked.append(f"session:{session}")
        return (_Principal("s", frozenset({"read", "control"})), "csrf-1") if session == "sess" else None

    def user_count(self) -> int:
        return 1


def view(method: str = "GET", query: str = "", **headers: str) -> RequestView:
    return RequestView(method, {k.replace("_", "-").lower(): v for k, v in headers.items()}, query)


@pytest.mark.parametrize(("headers", "query", "source"), [
    ({"x_token": "good", "authorization": "Bearer bad", "cookie": "session_token=sess"}, "", "token"),
    ({"authorization": "Bearer good", "x_session_token": "bad"}, "token=bad", "token"),
    ({"x_session_token": "sess", "cookie": "session_token=bad"}, "", "session-header"),
    ({"cookie": "a=1; session_token=sess"}, "", "session-cookie"),
    ({"cookie": "session_token=sess"}, "token=good", "query"),
])
def test_the_first_credential_present_decides(headers: dict[str, str], query: str, source: str) -> None:
    auth = _Auth()
    caller = Access(auth, allow_query_token=True).identify(view(query=query, **headers))
    assert caller.source == source
    assert len(auth.checked) == 1  # nothing after the first one was even looked at


@pytest.mark.parametrize("headers", [
    {"x_token": "bad", "authorization": "Bearer good"},
    {"authorization": "Bearer bad", "cookie": "session_token=sess"},
    {"authorization": "Digest good"},
    {"authorization": "Bearer good, Bearer good"},  # the header sent twice, as HTTP joins it
])
def test_a_wrong_first_credential_is_refused_without_fall_through(headers: dict[str, str]) -> None:
    with pytest.raises(Refused) as ei:
        Access(_Auth()).identify(view(**headers))
    assert (ei.value.status, ei.value.name) == (401, "INVALID_CREDENTIALS")
    assert ei.value.reason.startswith("INVALID_CREDENTIALS: ")


def test_a_query_token_is_refused_unless_allowed_and_never_twice() -> None:
    for query in ("token=good", "%74oken=good", "since=3&token=good"):
        with pytest.raises(Refused) as ei:
            Access(_Auth()).identify(view(query=query, cookie="session_token=sess"))
        assert ei.value.name == "INVALID_CREDENTIALS" and "http.allow_query_token" in ei.value.message
    with pytest.raises(Refused):
        Access(_Auth(), allow_query_token=True).identify(view(query="token=good&token=good"))
    assert Access(_Auth(), allow_query_token=True).identify(view(query="token=good")).source == "query"


def test_a_dead_session_cookie_is_invalid_session_and_clears_the_cookie() -> None:
    with pytest.raises(Refused) as ei:
        Access(_Auth()).identify(view(cookie="session_token=gone"))
    assert (ei.value.status, ei.value.name, ei.value.clear_cookie) == (401, "INVALID_SESSION", True)
    with pytest.raises(Refused) as ei:
        Access(_Auth()).identify(view(x_session_token="gone"))
    assert (ei.value.name, ei.value.clear_cookie) == ("INVALID_SESSION", False)


def test_passwords_can_be_refused_without_a_password_check() -> None:
    auth = _Auth()
    header = "Basic " + base64.b64encode(b"alice:secret-pw").decode()
    with pytest.raises(Refused) as ei:
        Access(auth, accept_passwords=False).identify(view(authorization=header))
    assert ei.value.reason == REFUSED_PASSWORD and "secret-pw" not in ei.value.message
    assert auth.checked == []


def test_csrf_applies_to_state_changes_with_the_cookie_only() -> None:
    access = Access(_Auth(), own_ports=(8008, 8009))
    cookie = "session_token=sess"
    for method in ("GET", "HEAD", "OPTIONS"):
        access.require(view(method, cookie=cookie), "read")
    with pytest.raises(Refused) as ei:
        access.require(view("POST", cookie=cookie), "read")
    assert (ei.value.status, ei.value.name) == (403, "INVALID_CSRF")
    with pytest.raises(Refused):
        access.require(view("POST", cookie=cookie, x_csrf_token="csrf-2"), "read")
    access.require(view("POST", cookie=cookie, x_csrf_token="csrf-1", host="pi:8008",
                        origin="http://pi:8009"), "control")
    with pytest.raises(Refused) as ei:
        access.require(view("POST", cookie=cookie, x_csrf_token="csrf-1", host="pi:8008",
                            origin="http://evil.example:8008"), "read")
    assert ei.value.message == "cross-origin request refused"
    access.require(view("DELETE", x_session_token="sess"), "control")  # an explicit session: no CSRF


def test_scope() -> None:
    with pytest.raises(Refused) as ei:
        Access.check_scope(Caller(_Principal("t", frozenset({"read"})), "token"), "control")
    assert (ei.value.status, ei.value.name) == (403, "INSUFFICIENT_SCOPE")
    assert ei.value.reason == "INSUFFICIENT_SCOPE: control scope required"


@pytest.mark.parametrize(("origin", "host", "ok"), [
    ("http://pi.local:8008", "pi.local:8008", True),
    ("http://pi.local:8009", "pi.local:8008", True),          # the other server of this hub
    ("https://pi.example", "pi.example", True),               # a proxy: the Host header's own port
    ("http://pi.example:80", "pi.example", True),
    ("https://pi.example", "pi.example:8443", False),
    ("http://pi.local:9999", "pi.local:8008", False),
    ("http://evil.example:8008", "pi.local:8008", False),
    ("http://pi.local:8008", None, False),
    ("null", "pi.local:8008", False),
    ("file://", "pi.local:8008", False),
    ("http://pi.local:8008, http://pi.local:8008", "pi.local:8008", False),  # sent twice
    ("http://pi.local:8008", "pi.local:8008, evil.example", False),
    ("https://PANEL.example/", "pi.local:8008", True),        # allowed_origins, any case
    ("http://panel.example", "pi.local:8008", False),
])
def test_one_origin_rule(origin: str, host: str | None, ok: bool) -> None:
    assert origin_allowed(origin, host, [8008, 8009], ["https://panel.example"]) is ok


@given(origin=st.text(max_size=60), host=st.one_of(st.none(), st.text(max_size=40)))
def test_the_origin_rule_never_raises_on_hostile_text(origin: str, host: str | None) -> None:
    assert origin_allowed(origin, host, [8008, 0], ["https://panel.example"]) in (True, False)


@pytest.mark.parametrize(("header", "value"), [
    ("session_token=abc", "abc"),
    ('a=1; session_token="abc"; b=2', "abc"),
    ("a=\x00\x01broken; session_token=abc", "abc"),  # a malformed neighbour does not hide it
    ("session_token=", None),
    ("xsession_token=abc; session_tokenx=abc", None),
    ("session_token=first; session_token=second", "first"),
    ("", None),
])
def test_read_cookie(header: str, value: str | None) -> None:
    assert read_cookie(header, "session_token") == value


# ------------------------------------------- the same table through HTTP and the websocket
@pytest.fixture
def both(make_hub: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[Rig, Callable[..., LiveServer]]]:
    """A rig (real hub, real Auth, the HTTP app) and a maker of websocket servers over the
    same hub and Auth, configured alike (``allow_query_token``, the two ports)."""
    rig = build_rig(make_hub, tmp_path, settings={"allowed_origins": ["https://panel.example"]})
    servers: list[LiveServer] = []

    def make(*, allow_query_token: bool = False) -> LiveServer:
        server = LiveServer(rig.hub, rig.auth, host="127.0.0.1", port=0, session_cookie=SESSION_COOKIE,
                            allow_query_token=allow_query_token, http_port=8008, auth_timeout=0.3,
                            allowed_origins=["https://panel.example"])
        server.start()
        servers.append(server)
        rig.rebuild(allow_query_token=allow_query_token, port=8008, websocket_port=server.port,
                    allowed_origins=["https://panel.example"])
        return server

    yield rig, make
    for s in servers:
        s.stop(5.0)


def http_outcome(rig: Rig, method: str, path: str, headers: dict[str, str], query: str) -> str:
    """``ok`` or the error name of an HTTP request."""
    body = {"type": "request", "action": "variable.get", "args": {"name": "x"}} if method == "POST" else None
    r = rig.call(method, path, headers=headers, query=query, json_body=body)
    return "ok" if r.status == 200 else r.json()["error"]


def ws_outcome(server: LiveServer, path: str, headers: dict[str, str], query: str) -> str:
    """``ok`` or the error name (the close reason's prefix) of a websocket handshake."""
    if path == "/ws/events":  # kept for replay: an accepted client gets it whenever it attaches
        server.listener(Event.of("CustomEvent", "test", subtype="parity"))
        query = "&".join(q for q in ("since=0", query) if q)
    url = f"ws://127.0.0.1:{server.port}{path}" + (f"?{query}" if query else "")
    with connect(url, additional_headers=headers, open_timeout=5, close_timeout=2) as ws:
        try:
            if path == "/ws/events":
                assert json.loads(ws.recv(timeout=5))["type"] == "event"
            else:
                ws.send(json.dumps({"type": "request", "action": "variable.get", "args": {"name": "x"},
                                    "id": "1"}))
                assert json.loads(ws.recv(timeout=5))["id"] == "1"
            return "ok"
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1008, e
            return e.rcvd.reason.split(":")[0]


#: (name, headers, query, allow_query_token, expected); ``{read}``, ``{session}`` are filled in.
CREDENTIALS = [
    ("x-token", {"X-Token": "{read}"}, "", False, "ok"),
    ("bearer", {"Authorization": "Bearer {read}"}, "", False, "ok"),
    ("wrong bearer", {"Authorization": "Bearer ph_wrong"}, "", False, "INVALID_CREDENTIALS"),
    ("other scheme", {"Authorization": "Digest {read}"}, "", False, "INVALID_CREDENTIALS"),
    ("wrong x-token first", {"X-Token": "ph_wrong", "Authorization": "Bearer {read}"}, "", False,
     "INVALID_CREDENTIALS"),
    ("header before query", {"X-Token": "{read}"}, "token=ph_wrong", True, "ok"),
    ("query refused", {}, "token={read}", False, "INVALID_CREDENTIALS"),
    ("query refused before cookie", {"Cookie": "session_token={session}"}, "token={read}", False,
     "INVALID_CREDENTIALS"),
    ("query allowed", {}, "token={read}", True, "ok"),
    ("query twice", {}, "token={read}&token={read}", True, "INVALID_CREDENTIALS"),
    ("wrong query", {}, "token=ph_wrong", True, "INVALID_CREDENTIALS"),
    ("session header", {"X-Session-Token": "{session}"}, "", False, "ok"),
    ("dead session header", {"X-Session-Token": "phs_gone"}, "", False, "INVALID_SESSION"),
    ("session cookie", {"Cookie": "a=b; session_token={session}"}, "", False, "ok"),
    ("dead session cookie", {"Cookie": "session_token=phs_gone"}, "", False, "INVALID_SESSION"),
    ("session header before cookie", {"X-Session-Token": "{session}", "Cookie": "session_token=phs_gone"},
     "", False, "ok"),
    ("none", {}, "", False, "INVALID_CREDENTIALS"),
]


@pytest.mark.parametrize(("name", "headers", "query", "allow", "expected"), CREDENTIALS,
                         ids=[row[0] for row in CREDENTIALS])
def test_http_and_websocket_decide_alike(both: tuple[Rig, Callable[..., LiveServer]], name: str,
                                         headers: dict[str, str], query: str, allow: bool,
                                         expected: str) -> None:
    rig, make = both
    server = make(allow_query_token=allow)
    session, _ = rig.login()
    fill = {"read": rig.tokens["read"], "session": session}
    headers = {k: v.format(**fill) for k, v in headers.items()}
    query = query.format(**fill)
    assert http_outcome(rig, "GET", "/status", headers, query) == expected
    assert ws_outcome(server, "/ws/events", headers, query) == expected


@pytest.mark.parametrize(("token", "expected"), [("read", "INSUFFICIENT_SCOPE"), ("control", "ok")])
def test_scopes_decide_alike(both: tuple[Rig, Callable[..., LiveServer]], token: str, expected: str) -> None:
    rig, make = both
    server = make()
    headers = {"X-Token": rig.tokens[token]}
    assert http_outcome(rig, "POST", "/execute", headers, "") == expected
    assert ws_outcome(server, "/ws/requests", headers, "") == expected


def test_passwords_are_the_one_documented_difference(both: tuple[Rig, Callable[..., LiveServer]]) -> None:
    rig, make = both
    server = make()
    headers = basic("alice", PASSWORD)
    assert http_outcome(rig, "GET", "/status", headers, "") == "ok"
    url = f"ws://127.0.0.1:{server.port}/ws/events"
    with connect(url, additional_headers=headers, open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed) as ei:
            ws.recv(timeout=5)
    assert ei.value.rcvd is not None and ei.value.rcvd.reason == REFUSED_PASSWORD


@pytest.mark.parametrize(("origin", "ok"), [
    ("http://127.0.0.1:8008", True),
    ("ws-port", True),
    ("https://panel.example", True),
    ("http://127.0.0.1:9", False),
    ("http://evil.example:8008", False),
    ("null", False),
])
def test_one_origin_rule_for_both_servers(both: tuple[Rig, Callable[..., LiveServer]], origin: str,
                                          ok: bool) -> None:
    rig, make = both
    server = make()
    if origin == "ws-port":
        origin = f"http://127.0.0.1:{server.port}"
    login = rig.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD},
                     headers={"Origin": origin})
    assert login.status == (200 if ok else 403)
    url = f"ws://127.0.0.1:{server.port}/ws/events"
    headers = {"Origin": origin, "X-Token": rig.tokens["read"]}
    if ok:
        with connect(url, additional_headers=headers, open_timeout=5) as ws:
            assert wait_for(lambda: server.client_count() == 1)
            assert isinstance(ws, ClientConnection)
    else:
        with pytest.raises(InvalidStatus) as ei:
            connect(url, additional_headers=headers, open_timeout=5)
        assert ei.value.response.status_code == 403
