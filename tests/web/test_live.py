"""The websocket server over loopback: auth, Origin, the stream with seq and replay,
requests, slow clients, revocation, frame limits, TLS, and the hub wiring."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pihub_testing import need_tool
from pihub_testing import wait_for as _wait_for
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from pihub import limits
from pihub.events import Event
from pihub.messages import Request, Response
from pihub.store import Store
from pihub.web import live as live_mod
from pihub.web.live import LiveServer, origin_allowed, plan_replay

GPIO_WIRE = "platypush.message.event.gpio.GPIOEvent"
MakeLive = Callable[..., LiveServer]
OpenWs = Callable[..., ClientConnection]


# ------------------------------------------------------------------ fakes
@dataclass(frozen=True)
class FakePrincipal:
    """Same API as pihub.auth.Principal."""

    username: str
    scopes: frozenset[str]
    via: str = "token"
    token_id: Any = None
    session_id: Any = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def _scopes(level: str) -> frozenset[str]:
    order = ["read", "control", "admin"]
    return frozenset(order[: order.index(level) + 1])


class FakeAuth:
    """Same API as pihub.auth.Auth: tokens and sessions in dicts, revocation callbacks."""

    def __init__(self) -> None:
        self.tokens: dict[str, FakePrincipal] = {}
        self.sessions: dict[str, FakePrincipal] = {}
        self.callbacks: list[Callable[[Any], None]] = []
        self.session_callbacks: list[Callable[[Any], None]] = []

    def add_token(self, token: str, level: str, token_id: int) -> None:
        self.tokens[token] = FakePrincipal(f"user{token_id}", _scopes(level), "token", token_id, None)

    def add_session(self, session: str, level: str, session_id: int) -> None:
        self.sessions[session] = FakePrincipal("panel", _scopes(level), "session", None, session_id)

    def check_token(self, token: str) -> FakePrincipal | None:
        return self.tokens.get(token)

    def check_session(self, session_token: str) -> tuple[FakePrincipal, str] | None:
        p = self.sessions.get(session_token)
        return (p, "csrf") if p else None

    def on_revoke(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    def on_session_end(self, callback: Callable[[Any], None]) -> None:
        self.session_callbacks.append(callback)

    def revoke(self, token_id: int) -> None:
        self.tokens = {t: p for t, p in self.tokens.items() if p.token_id != token_id}
        for cb in self.callbacks:
            cb(token_id)

    def end_session(self, session: str) -> None:
        p = self.sessions.pop(session, None)
        if p is not None:
            for cb in self.session_callbacks:
                cb(p.session_id)

    def forget_session(self, session: str) -> None:
        """End a session without telling anyone (as another process would, until noticed)."""
        self.sessions.pop(session, None)


class FakeHub:
    """``test.echo`` returns its args, ``test.fail`` fails, ``test.block`` waits for ``gate``."""

    device_id = "testdev"

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.gate = threading.Event()
        self.bus_full = False

    def execute(self, request: Request) -> Response:
        if request.action == "test.echo":
            out = Response(output={"echo": request.args})
        elif request.action == "test.fail":
            out = Response(errors=["test.fail: it failed as asked"])
        elif request.action == "test.block":
            self.gate.wait(10)
            out = Response(output="released")
        elif request.action == "test.raise":
            raise RuntimeError("boom")
        else:
            out = Response(errors=[f"no such action {request.action!r}"])
        out.id = request.id
        return out

    def publish(self, event: Event) -> bool:
        if self.bus_full:
            return False
        self.published.append(event)
        return True


# ---------------------------------------------------------------- helpers

def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    return _wait_for(pred, timeout)


def gpio(pin: int, value: int = 1, **extra: Any) -> Event:
    return Event.of("GPIOEvent", "test", pin=pin, value=value, **extra)


@pytest.fixture
def auth() -> FakeAuth:
    a = FakeAuth()
    a.add_token("tok-read", "read", 1)
    a.add_token("tok-control", "control", 2)
    a.add_token("tok-other", "read", 3)
    a.add_session("sess-read", "read", 1)  # the same number as tok-read's id, on purpose
    return a


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def make_live(hub: FakeHub, auth: FakeAuth) -> Iterator[MakeLive]:
    servers: list[LiveServer] = []

    def make(**kw: Any) -> LiveServer:
        h = kw.pop("hub_like", hub)
        a = kw.pop("auth", auth)
        opts: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "max_frame": 65536, "replay": 100,
                                "queue_size": 64, "allowed_origins": ()}
        opts.update(kw)
        server = LiveServer(h, a, **opts)
        servers.append(server)
        server.start()
        return server

    yield make
    for s in servers:
        s.stop(5.0)


@pytest.fixture
def open_ws() -> Iterator[OpenWs]:
    """Connect to a server's endpoint; every client is closed at teardown."""
    with contextlib.ExitStack() as stack:

        def open_(server: LiveServer, path: str = "/ws/events", scheme: str = "ws",
                  **kw: Any) -> ClientConnection:
            kw.setdefault("open_timeout", 5)
            kw.setdefault("close_timeout", 2)
            return stack.enter_context(connect(f"{scheme}://127.0.0.1:{server.port}{path}", **kw))

        yield open_


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def login(ws: ClientConnection, token: str = "tok-read", **extra: Any) -> dict[str, Any]:
    ws.send(json.dumps({"type": "auth", "token": token, **extra}))
    ack = recv_json(ws)
    assert ack["type"] == "auth" and ack["status"] == "ok", ack
    return ack


def until_closed(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str, list[str]]:
    """Read until the server closes; ``(close code, reason, frames read before it)``."""
    frames: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not closed within {timeout} s; frames: {frames[:3]}")
        try:
            frames.append(ws.recv(timeout=left))
        except TimeoutError:
            continue
        except ConnectionClosed as e:
            return (e.rcvd.code if e.rcvd else None), (e.rcvd.reason if e.rcvd else ""), frames


def events_of(frames: list[str]) -> list[dict[str, Any]]:
    return [m for m in map(json.loads, frames) if m.get("type") == "event"]


# ------------------------------------------------------------ pure parts
@given(since=st.one_of(st.none(), st.integers(0, 60)), last=st.integers(0, 50), replay=st.integers(0, 20),
       kept_from=st.one_of(st.none(), st.integers(1, 50)))
def test_plan_replay_delivers_exactly_what_the_ring_holds(since: int | None, last: int, replay: int,
                                                           kept_from: int | None) -> None:
    if kept_from is None:  # nothing dropped for the byte budget
        first, gap = plan_replay(since, last, replay)
        kept_from = 1
    else:  # the oldest dropped for the byte budget; the newest is always kept
        kept_from = min(kept_from, max(last, 1))
        first, gap = plan_replay(since, last, replay, kept_from)
    ring = list(range(max(1, last - replay + 1, kept_from), last + 1))
    delivered = list(range(first, last + 1))
    if since is None:
        assert delivered == [] and gap is None
        return
    base = 0 if since > last else since
    assert delivered == [s for s in ring if s > base]
    missing = [s for s in range(base + 1, last + 1) if s not in ring]
    assert (list(range(gap[0], gap[1] + 1)) if gap else []) == missing


@pytest.mark.parametrize(("origin", "ok"), [
    ("http://pi.local:8008", True),        # the panel on the HTTP port
    ("https://pi.local:8009", True),       # a page on the websocket port
    ("http://PI.local:8008/", True),
    ("http://pi.local:9999", False),
    ("http://evil.example:8008", False),
    ("null", False),
    ("file://", False),
    ("https://panel.example", True),       # allowed_origins
    ("http://panel.example", False),
])
def test_origin_rules(origin: str, ok: bool) -> None:
    assert origin_allowed(origin, "pi.local:8009", [8009, 8008], ["https://panel.example"]) is ok


def test_origin_behind_a_proxy_matches_the_host_header() -> None:
    assert origin_allowed("https://pi.example", "pi.example", [8009, 8008], [])
    assert not origin_allowed("https://pi.example", None, [8009, 8008], [])


def test_default_auth_deadline_is_at_most_five_seconds() -> None:
    assert live_mod.AUTH_TIMEOUT_S <= 5.0


# ----------------------------------------------------------- authentication
def test_no_auth_is_closed_1008_with_no_event_frames(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(auth_timeout=0.3)  # the default's bound is checked above
    ws = open_ws(server)
    frames: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        server.listener(gpio(server.last_seq))  # events flow all the while it waits
        try:
            frames.append(ws.recv(timeout=0.01))
        except TimeoutError:
            continue
        except ConnectionClosed as e:
            code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")
            break
    else:
        raise AssertionError("not closed within 10 s")
    assert server.last_seq > 1
    assert code == 1008 and "authentication" in reason
    assert frames == []
    assert wait_for(lambda: server.client_count() == 0)


@pytest.mark.parametrize("first", [
    {"type": "auth", "token": "nope"},
    {"type": "auth", "session": "nope"},
    {"type": "auth"},
    {"type": "auth", "token": "tok-read", "since": "x"},
    {"type": "request", "action": "test.echo"},
    "not json at all",
    [1, 2],
])
def test_bad_first_message_is_closed_1008(make_live: MakeLive, open_ws: OpenWs, first: Any) -> None:
    server = make_live()
    server.listener(gpio(1))
    ws = open_ws(server)
    ws.send(first if isinstance(first, str) else json.dumps(first))
    server.listener(gpio(2))
    code, _, frames = until_closed(ws, timeout=5.0)
    assert (code, frames) == (1008, [])
    assert server.stats["auth_failures"] == 1


def test_silent_client_is_closed_at_the_configured_deadline(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(auth_timeout=0.5)
    ws = open_ws(server)
    code, reason, frames = until_closed(ws, timeout=5.0)
    assert (code, frames) == (1008, [])
    assert "timed out" in reason


def test_bearer_header_opens_the_stream_without_an_auth_message(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    ws = open_ws(server, additional_headers={"Authorization": "Bearer tok-read"})
    assert wait_for(lambda: server.client_count() == 1)
    server.listener(gpio(5))
    msg = recv_json(ws)
    assert msg["type"] == "event" and msg["seq"] == 1 and msg["args"]["pin"] == 5
    ws.close()


def test_wrong_bearer_header_is_closed_1008(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    for header in ("Bearer wrong", "Basic dXNlcjpwdw=="):
        ws = open_ws(server, additional_headers={"Authorization": header})
        server.listener(gpio(1))
        assert until_closed(ws, 5.0)[0::2] == (1008, [])


def test_session_in_the_auth_message(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    ws = open_ws(server)
    ws.send(json.dumps({"type": "auth", "session": "sess-read"}))
    ack = recv_json(ws)
    assert ack["user"] == "panel" and ack["scopes"] == ["read"]
    ws.close()


def test_session_cookie_on_the_handshake_when_configured(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(session_cookie="pihub_session")
    ws = open_ws(server, additional_headers={"Cookie": "a=b; pihub_session=sess-read"})
    assert wait_for(lambda: server.client_count() == 1)
    server.listener(gpio(3))
    assert recv_json(ws)["seq"] == 1
    ws.close()
    bad = open_ws(server, additional_headers={"Cookie": "pihub_session=forged"})
    assert until_closed(bad, 5.0)[0] == 1008


def test_requests_endpoint_needs_control_scope(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    ws = open_ws(server, "/ws/requests")
    ws.send(json.dumps({"type": "auth", "token": "tok-read"}))
    code, reason, frames = until_closed(ws, 5.0)
    assert (code, frames) == (1008, []) and "control" in reason


# ------------------------------------------------------------------ origin
def test_foreign_origin_is_rejected_403(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(http_port=8008)
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, origin="http://evil.example:8008")
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, origin="http://127.0.0.1:9")
    assert info.value.response.status_code == 403
    assert server.stats["origin_rejected"] == 2


def test_own_and_allowed_origins_are_accepted(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(http_port=8008, allowed_origins=["https://panel.example"])
    for origin in ("http://127.0.0.1:8008", f"http://127.0.0.1:{server.port}", "https://panel.example"):
        ws = open_ws(server, origin=origin)
        login(ws)
        ws.close()


def test_unknown_path_is_404(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, "/ws/shell")
    assert info.value.response.status_code == 404


# ------------------------------------------------------------ event stream
def test_stream_frames_are_platypush_envelopes_with_seq(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    ws = open_ws(server)
    ack = login(ws)
    assert ack["seq"] == 0 and ack["user"] == "user1" and ack["epoch"] == server.epoch
    for pin in range(5):
        server.listener(gpio(pin))
    got = [recv_json(ws) for _ in range(5)]
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
    for pin, m in enumerate(got):
        assert m["type"] == "event" and m["target"] == "testdev" and m["origin"] == "test"
        assert m["args"] == {"type": GPIO_WIRE, "pin": pin, "value": 1}
        assert len(m["id"]) == 32
    ws.close()


def test_each_event_is_serialised_once_for_all_clients(make_live: MakeLive, open_ws: OpenWs,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = Event.to_dict

    def counting(self: Event, device_id: str = "") -> dict[str, Any]:
        calls.append(1)
        return real(self, device_id)

    monkeypatch.setattr(Event, "to_dict", counting)
    server = make_live()
    clients = [open_ws(server) for _ in range(3)]
    for ws in clients:
        login(ws)
    server.listener(gpio(9))
    frames = [ws.recv(timeout=5) for ws in clients]
    assert len(set(frames)) == 1 and json.loads(frames[0])["seq"] == 1
    assert len(calls) == 1
    for ws in clients:
        ws.close()


def test_replay_after_reconnect_delivers_exactly_the_missed_events(
    make_live: MakeLive, open_ws: OpenWs,
) -> None:
    server = make_live(replay=50)
    ws = open_ws(server)
    login(ws)
    for pin in range(3):
        server.listener(gpio(pin))
    seen = [recv_json(ws)["seq"] for _ in range(3)]
    ws.close()
    assert wait_for(lambda: server.client_count() == 0)
    for pin in range(3, 8):  # missed while away
        server.listener(gpio(pin))

    ws = open_ws(server)
    ack = login(ws, since=seen[-1])
    assert seen == [1, 2, 3] and ack["seq"] == 8
    assert [recv_json(ws)["args"]["pin"] for _ in range(5)] == [3, 4, 5, 6, 7]
    server.listener(gpio(8))  # then the live stream: no gap, no duplicate
    nxt = recv_json(ws)
    assert (nxt["seq"], nxt["args"]["pin"]) == (9, 8)
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)
    ws.close()


def test_reconnect_during_a_flood_has_no_gap_and_no_duplicate(
    make_live: MakeLive, open_ws: OpenWs,
) -> None:
    server = make_live(replay=5000, queue_size=5000)
    total = 3000
    # the publisher is paced by the reader, not by time: it runs at most 50 events past
    # the last one read, and 300 past it while the reader reconnects
    credit = threading.Condition()
    allowed = [50]

    def allow(seq: int) -> None:
        with credit:
            allowed[0] = max(allowed[0], seq)
            credit.notify()

    def publish_all() -> None:
        for i in range(total):
            with credit:
                if not credit.wait_for(lambda i=i: i < allowed[0], timeout=10):
                    return  # the reader failed; its assertion says how
            server.listener(gpio(i))  # seq i + 1

    publisher = threading.Thread(target=publish_all, daemon=True)
    ws = open_ws(server)
    login(ws)
    publisher.start()
    first: list[int] = []
    while len(first) < 200:
        first.append(recv_json(ws)["seq"])
        allow(first[-1] + 50)
    ws.close()
    allow(first[-1] + 300)  # events keep coming during the reconnect, the login and the replay
    ws = open_ws(server)
    login(ws, since=first[-1])
    rest = [recv_json(ws)["seq"]]
    while rest[-1] < total:
        allow(rest[-1] + 50)
        rest.append(recv_json(ws)["seq"])
    publisher.join(10)
    assert first + rest == list(range(1, total + 1))
    ws.close()


def test_gap_notice_when_since_is_older_than_the_ring(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(replay=3, queue_size=4)
    for pin in range(10):
        server.listener(gpio(pin))
    ws = open_ws(server)
    login(ws, since=2)
    gap = recv_json(ws)
    assert gap == {"type": "gap", "from": 3, "to": 7}
    assert [recv_json(ws)["seq"] for _ in range(3)] == [8, 9, 10]
    server.listener(gpio(10))
    assert recv_json(ws)["seq"] == 11
    ws.close()


def test_since_from_an_earlier_run_replays_the_ring(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(replay=5)
    for pin in range(3):
        server.listener(gpio(pin))
    ws = open_ws(server, path="/ws/events?since=999",
                 additional_headers={"Authorization": "Bearer tok-read"})
    assert [recv_json(ws)["seq"] for _ in range(3)] == [1, 2, 3]
    ws.close()


# ------------------------------------------------ the ring's memory bound
BIG = 200 << 10  # an attacker's event: a 200 KiB string (an MQTT payload, a posted event)


def test_big_events_are_dropped_past_the_byte_budget_and_replayed_as_a_gap(
    make_live: MakeLive, open_ws: OpenWs,
) -> None:
    budget = 1 << 20
    server = make_live(replay=100, queue_size=64, max_ring_bytes=budget)
    for pin in range(20):  # 20 x 200 KiB: 4 MiB, under the count bound of 164 entries
        server.listener(gpio(pin, blob="x" * BIG))
        assert server.ring_bytes <= budget
    evicted = server.stats["ring_evicted_for_bytes"]
    assert 10 <= evicted < 20
    ws = open_ws(server)
    login(ws, since=0)
    assert recv_json(ws) == {"type": "gap", "from": 1, "to": evicted}
    got = [recv_json(ws) for _ in range(20 - evicted)]
    assert [m["seq"] for m in got] == list(range(evicted + 1, 21))
    assert all(m["args"]["blob"] == "x" * BIG for m in got)
    # their JSON texts are charged too: made for this client, kept for the next ones
    assert server.ring_bytes <= budget
    ws.close()


def test_small_events_are_still_kept_up_to_the_count_bound(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(replay=100, queue_size=64, max_ring_bytes=1 << 20)
    for pin in range(300):
        server.listener(gpio(pin))
    assert server.stats["ring_evicted_for_bytes"] == 0
    ws = open_ws(server)
    login(ws, since=0)
    assert recv_json(ws) == {"type": "gap", "from": 1, "to": 200}
    assert [recv_json(ws)["seq"] for _ in range(100)] == list(range(201, 301))
    ws.close()


def test_a_client_whose_next_event_is_dropped_for_bytes_is_closed_too_slow(
    make_live: MakeLive, open_ws: OpenWs,
) -> None:
    # the count bounds are far away: only the byte budget can leave the stalled client behind
    server = make_live(replay=1000, queue_size=1000, max_ring_bytes=1 << 20)
    stalled = _raw_stalled_client(server.port, "tok-other")
    good = open_ws(server)
    login(good)
    assert wait_for(lambda: server.client_count() == 2)
    received: list[int] = []
    pin = 0
    while server.stats["closed_slow"] == 0 and pin < 200:
        server.listener(gpio(pin, blob="x" * BIG))
        pin += 1
        received.append(recv_json(good)["seq"])  # the reading client keeps up, one by one
    assert server.stats["closed_slow"] == 1 and server.stats["ring_evicted_for_bytes"] > 0
    assert wait_for(lambda: server.client_count() == 1, timeout=10.0)
    assert received == list(range(1, pin + 1))
    stalled.close()
    good.close()


def test_the_ring_budget_comes_from_the_http_config(make_hub: Callable[..., Any]) -> None:
    hub = make_hub("""
        http: {port: 0, websocket_port: 0, websocket_replay_bytes: 1048576}
        mock: {}
    """)
    assert hub.live is not None and hub.live.max_ring_bytes == 1 << 20
    assert hub.traces.max_bytes == 1 << 20
    hub.stop()


def test_the_ring_budget_must_be_positive(hub: FakeHub, auth: FakeAuth) -> None:
    with pytest.raises(ValueError, match="max_ring_bytes must be at least 1 byte, not 0"):
        LiveServer(hub, auth, max_ring_bytes=0)


def test_client_posts_an_event_with_control_scope_only(
    make_live: MakeLive, open_ws: OpenWs, hub: FakeHub,
) -> None:
    server = make_live()
    reader = open_ws(server)
    login(reader, "tok-read")
    reader.send(json.dumps({"type": "event", "args": {"type": "GPIOEvent", "pin": 4, "value": 1}}))
    err = recv_json(reader)
    assert err["type"] == "error" and err["code"] == 403
    assert hub.published == []
    writer = open_ws(server)
    login(writer, "tok-control")
    writer.send(json.dumps({"type": "event", "args": {"type": "GPIOEvent", "pin": 4, "value": 1}}))
    assert wait_for(lambda: len(hub.published) == 1)
    assert hub.published[0].args == {"pin": 4, "value": 1} and hub.published[0].source == "websocket"
    writer.send("{broken")
    assert recv_json(writer)["code"] == 400
    reader.close()
    writer.close()


def test_publish_json_reaches_stream_clients_in_order(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    ws = open_ws(server)
    login(ws)
    server.listener(gpio(1))
    assert recv_json(ws)["seq"] == 1
    server.publish_json({"type": "notice", "text": "hello"})
    assert recv_json(ws) == {"type": "notice", "text": "hello"}
    ws.close()


def test_listener_never_raises() -> None:
    server = LiveServer(FakeHub(), FakeAuth(), port=0)
    server.listener(None)  # type: ignore[arg-type]
    server.listener(gpio(1))  # not started: still numbered and kept
    assert server.last_seq == 1


# ----------------------------------------------------------------- requests
def test_request_response_keeps_the_id_and_errors_are_in_the_body(
    make_live: MakeLive, open_ws: OpenWs,
) -> None:
    server = make_live()
    ws = open_ws(server, "/ws/requests")
    login(ws, "tok-control")
    ws.send(json.dumps({"type": "request", "action": "test.echo", "args": {"x": 1}, "id": "abc"}))
    resp = recv_json(ws)
    assert resp["type"] == "response" and resp["id"] == "abc"
    assert resp["response"] == {"output": {"echo": {"x": 1}}, "errors": []}
    ws.send(json.dumps({"type": "request", "action": "test.fail", "id": "f1"}))
    resp = recv_json(ws)
    assert resp["id"] == "f1" and resp["response"]["errors"] == ["test.fail: it failed as asked"]
    ws.send(json.dumps({"type": "request", "action": "test.raise", "id": "r1"}))
    resp = recv_json(ws)
    assert resp["id"] == "r1" and resp["response"]["errors"] == ["RuntimeError: boom"]
    ws.send(json.dumps({"type": "request", "action": "noplugin", "id": "bad"}))
    resp = recv_json(ws)
    assert resp["id"] == "bad" and "plugin.method" in resp["response"]["errors"][0]
    ws.send("{not json")
    assert recv_json(ws)["response"]["errors"][0].startswith("message is not valid JSON")
    ws.close()


def test_a_platypush_client_authenticates_with_the_token_in_its_first_request(
    make_live: MakeLive, open_ws: OpenWs,
) -> None:
    server = make_live()
    ws = open_ws(server, "/ws/requests")
    ws.send(json.dumps({"type": "request", "action": "test.echo", "args": {"n": 1}, "id": "p1",
                        "token": "tok-control"}))
    resp = recv_json(ws)  # no auth acknowledgement: the response comes first
    assert resp["type"] == "response" and resp["id"] == "p1" and resp["response"]["errors"] == []
    ws.send(json.dumps({"type": "request", "action": "test.echo", "args": {"n": 2}, "id": "p2"}))
    assert recv_json(ws)["response"]["output"] == {"echo": {"n": 2}}
    # a later message's token is not looked at: the connection runs as its first caller
    ws.send(json.dumps({"type": "request", "action": "test.echo", "args": {}, "id": "p3", "token": "wrong"}))
    assert recv_json(ws)["id"] == "p3"


@pytest.mark.parametrize("token, says", [("tok-read", "control"), ("ph_nobody", "INVALID_CREDENTIALS"),
                                         ("", "INVALID_CREDENTIALS")])
def test_a_first_request_with_a_bad_token_closes_without_running(
    make_live: MakeLive, open_ws: OpenWs, token: str, says: str,
) -> None:
    server = make_live()
    ws = open_ws(server, "/ws/requests")
    ws.send(json.dumps({"type": "request", "action": "test.echo", "args": {}, "id": "x", "token": token}))
    code, reason, frames = until_closed(ws, 5.0)
    assert (code, frames) == (1008, []) and says in reason
    assert server.stats["requests"] == 0


def test_the_token_in_a_request_does_not_open_the_event_stream(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    ws = open_ws(server, "/ws/events")
    ws.send(json.dumps({"type": "request", "action": "test.echo", "id": "x", "token": "tok-control"}))
    code, _, frames = until_closed(ws, 5.0)
    assert (code, frames) == (1008, [])


def test_too_many_requests_in_flight_get_an_error_response(make_live: MakeLive, open_ws: OpenWs,
                                                           hub: FakeHub) -> None:
    server = make_live(max_in_flight=2)
    ws = open_ws(server, "/ws/requests")
    login(ws, "tok-control")
    for i in range(3):
        ws.send(json.dumps({"type": "request", "action": "test.block", "id": f"b{i}"}))
    over = recv_json(ws)  # the first two are blocked: this one comes back first
    assert over["id"] == "b2" and "too many requests in flight" in over["response"]["errors"][0]
    hub.gate.set()
    done = {recv_json(ws)["id"] for _ in range(2)}
    assert done == {"b0", "b1"}
    assert server.stats["requests_rejected"] == 1
    ws.close()


def test_reader_is_not_blocked_by_a_running_request(
    make_live: MakeLive, open_ws: OpenWs, hub: FakeHub,
) -> None:
    server = make_live()
    ws = open_ws(server, "/ws/requests")
    login(ws, "tok-control")
    ws.send(json.dumps({"type": "request", "action": "test.block", "id": "slow"}))
    ws.send(json.dumps({"type": "request", "action": "test.echo", "args": 7, "id": "fast"}))
    assert recv_json(ws)["id"] == "fast"
    hub.gate.set()
    assert recv_json(ws)["id"] == "slow"
    ws.close()


def test_event_posted_on_the_requests_socket_is_acknowledged(make_live: MakeLive, open_ws: OpenWs,
                                                             hub: FakeHub) -> None:
    server = make_live()
    ws = open_ws(server, "/ws/requests")
    login(ws, "tok-control")
    ws.send(json.dumps({"type": "event", "id": "e1", "args": {"type": "GPIOEvent", "pin": 2, "value": 0}}))
    resp = recv_json(ws)
    assert resp["id"] == "e1" and resp["response"] == {"output": {"success": True}, "errors": []}
    assert [e.args for e in hub.published] == [{"pin": 2, "value": 0}]
    ws.close()


# ---------------------------------------------- slow clients, limits, revoke
def _raw_stalled_client(port: int, token: str) -> socket.socket:
    """A websocket client that completes the handshake, then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_non_reading_client_is_closed_while_another_keeps_receiving(
    make_live: MakeLive, open_ws: OpenWs,
) -> None:
    server = make_live(queue_size=8, replay=16)
    stalled = _raw_stalled_client(server.port, "tok-other")
    good = open_ws(server)
    login(good)
    assert wait_for(lambda: server.client_count() == 2)
    received: list[int] = []
    payload = "x" * 4000
    pin = 0
    while server.stats["closed_slow"] == 0 and pin < 10000:
        for _ in range(4):  # a burst below the queue bound, then let the good client catch up
            server.listener(gpio(pin, blob=payload))
            pin += 1
        while len(received) < pin:
            received.append(recv_json(good)["seq"])
    assert server.stats["closed_slow"] == 1
    # closed within 10 s once its queue was full (closed_slow counts that moment)
    assert wait_for(lambda: server.client_count() == 1, timeout=10.0)
    # the other client's stream continues, complete and in order
    for _ in range(3):
        server.listener(gpio(pin))
        pin += 1
    while len(received) < pin:
        received.append(recv_json(good)["seq"])
    assert received == list(range(1, pin + 1))
    # and the stalled client's connection is really gone: reading ends in EOF or a reset
    stalled.settimeout(10)
    ended = False
    try:
        while stalled.recv(1 << 16):
            pass
        ended = True
    except ConnectionResetError:
        ended = True
    assert ended
    stalled.close()
    good.close()


def test_revocation_closes_that_tokens_sockets_only(
    make_live: MakeLive, open_ws: OpenWs, auth: FakeAuth,
) -> None:
    server = make_live()
    victim = open_ws(server)
    login(victim, "tok-read")
    req = open_ws(server, "/ws/requests", additional_headers={"Authorization": "Bearer tok-control"})
    bystander = open_ws(server)
    login(bystander, "tok-other")
    assert wait_for(lambda: server.client_count() == 3)
    auth.revoke(1)
    code, reason, _ = until_closed(victim, 5.0)
    assert (code, reason) == (1008, "token revoked")
    assert wait_for(lambda: server.client_count() == 2)
    server.listener(gpio(1))
    assert recv_json(bystander)["seq"] == 1
    auth.revoke(2)
    assert until_closed(req, 5.0)[:2] == (1008, "token revoked")
    # a revoked token cannot come back
    again = open_ws(server)
    again.send(json.dumps({"type": "auth", "token": "tok-read"}))
    assert until_closed(again, 5.0)[0] == 1008
    bystander.close()


def test_ended_session_is_closed_at_once_and_token_revocation_spares_sessions(
    make_live: MakeLive, open_ws: OpenWs, auth: FakeAuth,
) -> None:
    server = make_live(session_recheck=3600)  # the backstop cannot be what closes it
    auth.add_session("sess-other", "read", 2)
    ws = open_ws(server)
    ws.send(json.dumps({"type": "auth", "session": "sess-read"}))
    recv_json(ws)
    other = open_ws(server)
    other.send(json.dumps({"type": "auth", "session": "sess-other"}))
    recv_json(other)
    by_token = open_ws(server)
    login(by_token, "tok-read")  # token 1: the same number as session 1
    auth.revoke(1)  # API token 1, not session 1
    assert until_closed(by_token, 5.0)[:2] == (1008, "token revoked")
    server.listener(gpio(1))
    assert recv_json(ws)["seq"] == 1
    auth.end_session("sess-read")
    assert until_closed(ws, 5.0)[:2] == (1008, "session ended")
    assert server.stats["closed_session_ended"] == 1
    server.listener(gpio(2))  # session 2 and its socket live on
    assert [m["seq"] for m in (recv_json(other), recv_json(other))] == [1, 2]


def test_a_session_ended_without_notice_is_closed_by_the_recheck(make_live: MakeLive, open_ws: OpenWs,
                                                                 auth: FakeAuth) -> None:
    server = make_live(session_recheck=0.1)
    ws = open_ws(server)
    ws.send(json.dumps({"type": "auth", "session": "sess-read"}))
    recv_json(ws)
    auth.forget_session("sess-read")
    assert until_closed(ws, 5.0)[:2] == (1008, "session ended")
    assert server.stats["closed_session_ended"] == 1


# ------------------------------------------------------------- ?token= on the URL
def test_query_token_opens_the_stream_when_allowed(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(allow_query_token=True)
    ws = open_ws(server, "/ws/events?since=0&token=tok-read")
    assert wait_for(lambda: server.client_count() == 1)  # no auth message, no acknowledgement
    server.listener(gpio(4))
    assert recv_json(ws)["seq"] == 1
    for query, reason in [("token=nope", live_mod.REFUSED_CREDENTIALS),
                          ("token=", live_mod.REFUSED_CREDENTIALS),
                          ("token=tok-read&token=tok-other", live_mod.REFUSED_CREDENTIALS)]:
        bad = open_ws(server, f"/ws/events?{query}")
        assert until_closed(bad, 5.0) == (1008, reason, [])
    reqs = open_ws(server, "/ws/requests?token=tok-read")
    code, reason, _ = until_closed(reqs, 5.0)
    assert (code, reason) == (1008, "INSUFFICIENT_SCOPE: control scope required")
    # a header credential comes first, as for HTTP
    both = open_ws(server, "/ws/events?token=nope", additional_headers={"Authorization": "Bearer tok-read"})
    # attached once the handshake's credential was checked (no since: an event before is not its)
    assert wait_for(lambda: server.client_count() == 2)
    server.listener(gpio(5))
    assert recv_json(both)["seq"] == 2


@pytest.mark.parametrize("query", ["token=tok-read", "token=", "%74oken=tok-read", "since=0&token=tok-read"])
def test_query_token_is_refused_at_once_when_not_allowed(make_live: MakeLive, open_ws: OpenWs,
                                                          query: str) -> None:
    server = make_live(auth_timeout=60.0)  # a refusal cannot be the auth deadline
    ws = open_ws(server, f"/ws/events?{query}")
    server.listener(gpio(1))
    code, reason, frames = until_closed(ws, 5.0)
    assert (code, frames) == (1008, [])
    assert reason == live_mod.REFUSED_QUERY_TOKEN
    assert reason.startswith("INVALID_CREDENTIALS:") and "http.allow_query_token" in reason
    assert server.stats["auth_failures"] == 1


@pytest.mark.parametrize("allow", [True, False])
def test_query_token_never_reaches_the_logs(make_live: MakeLive, open_ws: OpenWs, auth: FakeAuth,
                                            caplog: pytest.LogCaptureFixture, allow: bool) -> None:
    secret = "ph_QueryTokenThatMustNotBeLogged"
    auth.add_token(secret, "read", 9)
    caplog.set_level(logging.DEBUG)
    server = make_live(allow_query_token=allow)
    for query in (f"token={secret}", f"since=1&token={secret}&x=1", f"%74oken={secret}", "token=nope"):
        ws = open_ws(server, f"/ws/events?{query}", additional_headers={"Cookie": f"a={secret}"})
        if allow and "nope" not in query:
            assert wait_for(lambda: server.client_count() == 1)
            ws.close()
            assert wait_for(lambda: server.client_count() == 0)
        else:
            assert until_closed(ws, 5.0)[0] == 1008
    # X-Token comes before ?token= (as for HTTP): this one opens whatever the query says
    ws = open_ws(server, "/ws/events?token=nope", additional_headers={"X-Token": secret})
    assert wait_for(lambda: server.client_count() == 1)
    ws.close()
    # the server's lines only: the test's own websockets client logs what it sends
    server_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pihub"))
    assert "/ws/events?" in server_log  # websockets logged the request lines...
    assert "token=***" in server_log and "Cookie: ***" in server_log and "X-Token: ***" in server_log
    assert secret not in server_log  # ...without the token
    assert "nope" not in server_log


def test_hub_passes_allow_query_token_to_the_websocket(make_hub: Callable[..., Any]) -> None:
    for allow in (True, False):
        hub = make_hub(f"""
            http: {{port: 0, websocket_port: 0, allow_query_token: {str(allow).lower()}}}
            mock: {{}}
        """)
        assert hub.live is not None and hub.live.allow_query_token is allow
        hub.stop()


def test_oversized_frame_is_closed_1009(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live(max_frame=1024)
    ws = open_ws(server)
    login(ws)
    ws.send(json.dumps({"type": "event", "args": {"type": "GPIOEvent", "blob": "y" * 2000}}))
    assert until_closed(ws, 5.0)[0] == 1009
    early = open_ws(server)  # before authenticating too
    early.send("z" * 1025)
    assert until_closed(early, 5.0)[0::2] == (1009, [])


def _silent_socket(port: int, source: str, stack: contextlib.ExitStack) -> socket.socket:
    """A TCP connection from ``source`` to the websocket port that never sends a byte."""
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed ``sock`` (EOF or reset; waits at most its timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_connection_flood_is_refused_per_address_and_in_all(
    make_live: MakeLive, open_ws: OpenWs, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pihub.web.live")
    server = make_live(max_connections=6, max_per_address=3)
    legit = open_ws(server)  # from 127.0.0.1, established before the flood
    login(legit)
    with contextlib.ExitStack() as stack:
        admitted: list[socket.socket] = []
        refused: list[socket.socket] = []

        def flood(source: str, n: int) -> None:
            for _ in range(n):
                before = server.connection_count(), server.stats["connections_refused"]
                sock = _silent_socket(server.port, source, stack)
                # one at a time: each is admitted or refused before the next arrives
                assert wait_for(lambda b=before: (server.connection_count(),
                                                  server.stats["connections_refused"]) != b)
                (admitted if server.connection_count() > before[0] else refused).append(sock)

        flood("127.0.0.1", 12)  # the per-address limit: 2 beside the legitimate client
        assert (len(admitted), len(refused)) == (2, 10)
        assert server.stats["connections_refused"] == 10
        flood("127.0.0.2", 3)  # another address has its own 3, up to 6 in all
        assert (len(admitted), len(refused)) == (5, 10)
        flood("127.0.0.3", 2)  # the limit in all
        assert (len(admitted), len(refused)) == (5, 12)
        assert server.connection_count() == 6
        assert all(_closed_by_server(s) for s in refused)
        # the established client is kept and still streams
        server.listener(gpio(1))
        assert recv_json(legit)["seq"] == 1
        assert server.client_count() == 1
        # warned, rate-limited: fewer lines than refusals
        warnings = [r for r in caplog.records if "refused" in r.getMessage()]
        assert 1 <= len(warnings) <= limits.REFUSED_LOG_BURST < 12
    # the flood's sockets are closed: their places come back, a new client gets in and gets events
    assert wait_for(lambda: server.connection_count() == 1)
    late = open_ws(server)
    login(late, "tok-other")
    server.listener(gpio(2))
    assert recv_json(late)["seq"] == 2
    assert recv_json(legit)["seq"] == 2
    assert server.stats["connections_refused"] == 12


def test_connection_limits_default_to_the_http_ports_and_must_be_positive(
    hub: FakeHub, auth: FakeAuth,
) -> None:
    from pihub.web import server as http_server

    live = LiveServer(hub, auth, port=0)
    assert (live.max_connections, live.max_per_address) == (
        http_server.MAX_CONNECTIONS, http_server.MAX_CONNECTIONS_PER_ADDRESS)
    with pytest.raises(ValueError, match="max_per_address must be positive, not 0"):
        LiveServer(hub, auth, port=0, max_per_address=0)
    with pytest.raises(ValueError, match="max_connections must be positive, not -1"):
        LiveServer(hub, auth, port=0, max_connections=-1)


def test_stop_closes_clients_going_away(make_live: MakeLive, open_ws: OpenWs) -> None:
    server = make_live()
    ws = open_ws(server)
    login(ws)
    server.stop(5.0)
    assert until_closed(ws, 5.0)[0] == 1001
    assert server.client_count() == 0
    with pytest.raises(OSError):
        open_ws(server)


def test_start_fails_loudly_on_a_taken_port(make_live: MakeLive, hub: FakeHub, auth: FakeAuth) -> None:
    first = make_live()
    second = LiveServer(hub, auth, host="127.0.0.1", port=first.port)
    with pytest.raises(OSError):
        second.start()


# ------------------------------------------------------------- real Auth
@pytest.fixture
def real_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "auth.db")
    yield store
    store.close()


def test_real_auth_tokens_sessions_and_revocation(
    real_store: Store, make_live: MakeLive, open_ws: OpenWs,
) -> None:
    from argon2 import PasswordHasher

    from pihub.auth import Auth

    real = Auth(real_store, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    real.add_user("alice", "correct horse battery")
    reader, info = real.create_token("alice", name="ws", scopes=("read",))
    session, _csrf = real.create_session("alice")
    server = make_live(auth=real, session_recheck=0.1)
    by_token = open_ws(server)
    login(by_token, reader)
    by_session = open_ws(server)
    by_session.send(json.dumps({"type": "auth", "session": session}))
    assert recv_json(by_session)["user"] == "alice"
    no_control = open_ws(server, "/ws/requests")
    no_control.send(json.dumps({"type": "auth", "token": reader}))
    assert until_closed(no_control, 5.0)[0] == 1008

    assert real.revoke_token(info.id)
    assert until_closed(by_token, 5.0)[:2] == (1008, "token revoked")
    server.listener(gpio(1))
    assert recv_json(by_session)["seq"] == 1
    real.end_session(session)
    assert until_closed(by_session, 5.0)[:2] == (1008, "session ended")


def test_logout_closes_the_panel_socket_at_once(make_hub: Callable[..., Any], tmp_path: Path,
                                                make_live: MakeLive, open_ws: OpenWs) -> None:
    from http_support import build_rig

    from pihub.web.app import SESSION_COOKIE

    rig = build_rig(make_hub, tmp_path)
    # no re-check during the test: only the logout's notice can close the socket in time
    server = make_live(hub_like=rig.hub, auth=rig.auth, session_cookie=SESSION_COOKIE, session_recheck=3600)
    session, _csrf = rig.login()
    other, _ = rig.login()
    ws = open_ws(server, additional_headers={"Cookie": f"{SESSION_COOKIE}={session}"})
    bystander = open_ws(server, additional_headers={"Cookie": f"{SESSION_COOKIE}={other}"})
    assert wait_for(lambda: server.client_count() == 2)
    r = rig.call("POST", "/logout", headers={"Cookie": f"{SESSION_COOKIE}={session}"})
    assert r.status == 200
    assert until_closed(ws, 5.0)[:2] == (1008, "session ended")
    server.listener(gpio(1))
    assert recv_json(bystander)["seq"] == 1  # another session of the same user stays open
    again = open_ws(server, additional_headers={"Cookie": f"{SESSION_COOKIE}={session}"})
    assert until_closed(again, 5.0)[:2] == (1008, live_mod.REFUSED_SESSION)


@pytest.mark.parametrize("how", ["password changed", "user removed", "expired", "ended by another process"])
def test_every_end_of_a_session_closes_its_socket_at_once(
    real_store: Store, make_live: MakeLive, open_ws: OpenWs, how: str,
) -> None:
    from http_support import CHEAP_HASHER, Clock

    from pihub.auth import SESSION_TTL_S, Auth

    clock = Clock()
    real = Auth(real_store, hasher=CHEAP_HASHER, clock=clock)
    real.add_user("alice", "correct horse battery")
    real.add_user("bob", "correct horse battery")
    session, _ = real.create_session("alice")
    bobs, _ = real.create_session("bob", remember=True)  # outlives alice's
    server = make_live(auth=real, session_recheck=3600)
    ws = open_ws(server)
    ws.send(json.dumps({"type": "auth", "session": session}))
    assert recv_json(ws)["user"] == "alice"
    bystander = open_ws(server)
    bystander.send(json.dumps({"type": "auth", "session": bobs}))
    assert recv_json(bystander)["user"] == "bob"
    if how == "password changed":
        real.set_password("alice", "another long password")
    elif how == "user removed":
        real.remove_user("alice")
    elif how == "expired":
        clock.advance(SESSION_TTL_S - 1)
        real.refresh()
        server.listener(gpio(1))
        assert recv_json(ws)["seq"] == 1  # not yet
        clock.advance(1)
        real.refresh()  # the daemon calls it every second
    else:
        other = Store(real_store.path)  # pihub user passwd from a shell
        try:
            Auth(other, hasher=CHEAP_HASHER, clock=clock).end_session(session)
        finally:
            other.close()
        real.refresh()
    assert until_closed(ws, 5.0)[:2] == (1008, "session ended")
    server.listener(gpio(2))
    while recv_json(bystander)["args"]["pin"] != 2:  # bob's socket outlives alice's session
        pass


# ---------------------------------------------------------------------- TLS
@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    need_tool(shutil.which("openssl") is not None, "openssl CLI not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_stream_with_a_self_signed_certificate(make_live: MakeLive, open_ws: OpenWs,
                                                   self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = make_live(ssl_context=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    ws = open_ws(server, scheme="wss", ssl=client_ctx)
    login(ws)
    server.listener(gpio(1))
    assert recv_json(ws)["seq"] == 1
    ws.close()
    # plain ws:// to the TLS port gets no websocket, nor does a client not trusting the cert
    with pytest.raises(InvalidHandshake):
        open_ws(server)
    with pytest.raises(ssl.SSLCertVerificationError):
        open_ws(server, scheme="wss", ssl=ssl.create_default_context())


def test_tls_handshake_of_a_silent_client_is_cut_at_the_handshake_deadline(
    make_live: MakeLive, self_signed: tuple[Path, Path],
) -> None:
    # Attack: connect to the wss:// port and never send a ClientHello. asyncio runs the TLS
    # handshake before the connection limits see the socket, and would hold it for 60 s by
    # default; the server's handshake deadline (5 s here) must cut it.
    cert, key = self_signed
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = make_live(ssl_context=server_ctx)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10.0) as s:
        try:
            data = s.recv(1)  # TimeoutError (the test fails) if the server holds the socket
        except ConnectionResetError:
            data = b""
    assert data == b""


# ------------------------------------------------------------ the real hub
MOCK_RIG = """
mock:
  outputs: {light: false}
"""


def test_real_hub_events_and_requests(
    make_hub: Callable[..., Any], make_live: MakeLive, open_ws: OpenWs,
) -> None:
    hub = make_hub(MOCK_RIG)
    server = make_live(hub_like=hub)
    hub.dispatcher.add_listener(server.listener)
    events = open_ws(server)
    login(events)
    assert hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 1}).ok
    msg = recv_json(events)
    while msg["args"]["type"] != GPIO_WIRE:  # the hub's own start-up events may come first
        msg = recv_json(events)
    assert msg["args"]["pin"] == 17 and msg["target"] == hub.device_id and msg["seq"] >= 1

    reqs = open_ws(server, "/ws/requests")
    login(reqs, "tok-control")
    reqs.send(json.dumps({"type": "request", "action": "mock.set",
                          "args": {"name": "light", "value": True}, "id": "r-1"}))
    resp = recv_json(reqs)
    assert resp["id"] == "r-1" and resp["response"]["errors"] == []
    assert hub.backends["mock"].outputs["light"] is True
    reqs.send(json.dumps({"type": "request", "action": "nosuch.action", "id": "r-2"}))
    resp = recv_json(reqs)
    assert resp["id"] == "r-2" and resp["response"]["errors"]
    events.close()
    reqs.close()
