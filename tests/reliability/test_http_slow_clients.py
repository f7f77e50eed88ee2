"""Silent and slow clients against the real servers on loopback: the API keeps answering.

Each attack opens its sockets from other loopback addresses (127.0.0.2, .3, .4), the way
an attacker is not the phone, waits until the server has accepted every one of them, and
only then sends the control requests, whose sockets time out after a few seconds: a
server that lets the attack take its workers fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

# the HTTP tests' rig and PKI live beside them in tests/web (no packages in tests/)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from http_support import Rig, build_rig  # noqa: E402
from pihub_testing import wait_for  # noqa: E402
from test_http_server import _tls_conn, pki  # noqa: E402,F401  (pki is a fixture)

from pihub.web.live import LiveServer  # noqa: E402
from pihub.web.server import WebServer  # noqa: E402

EXEC = json.dumps({"type": "request", "action": "variable.get", "args": {"name": "x"}}).encode()
#: Seconds a control request may take before the test calls the server unreachable.
CONTROL_TIMEOUT_S = 5.0
SILENT_FROM, SLOW_HEAD_FROM, SLOW_BODY_FROM = "127.0.0.2", "127.0.0.3", "127.0.0.4"


@pytest.fixture
def rig(make_hub, tmp_path: Path) -> Rig:
    return build_rig(make_hub, tmp_path)


@pytest.fixture
def make_server(rig: Rig) -> Iterator:
    servers: list[WebServer] = []

    def make(**kw) -> WebServer:
        server = WebServer(rig.app, host="127.0.0.1", port=0, **kw)  # 8 workers, as the daemon
        server.start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


class Attack:
    """Attacking sockets: silent ones, and ones that trickle a head or a body, never finishing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[socket.socket] = []
        self._tricklers: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="test-trickle", daemon=True)

    def connect(self, source: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(source, 0))
        self.socks.append(sock)
        return sock

    def silent(self, n: int) -> None:
        for _ in range(n):
            self.connect(SILENT_FROM)

    def slow_heads(self, n: int) -> None:
        for _ in range(n):
            sock = self.connect(SLOW_HEAD_FROM)
            sock.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\n")
            self._tricklers.append(sock)

    def slow_bodies(self, n: int) -> None:
        for _ in range(n):
            sock = self.connect(SLOW_BODY_FROM)
            sock.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")

    def start_trickling(self) -> None:
        self._thread.start()

    def _trickle(self) -> None:
        # one more header line per slow socket every 0.2 s: a server that restarts a
        # per-read timeout on every byte would keep a worker on each of them forever
        while not self._stop.wait(0.2):
            for sock in self._tricklers:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self.socks:
            sock.close()


@pytest.fixture
def attack() -> Iterator:
    attacks: list[Attack] = []

    def make(port: int) -> Attack:
        a = Attack(port)
        attacks.append(a)
        return a

    yield make
    for a in attacks:
        a.close()


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _control_answers(rig: Rig, conn: http.client.HTTPConnection) -> None:
    status, body = _request(conn, "GET", "/livez")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, body = _request(conn, "POST", "/execute", EXEC,
                            {**rig.as_("control"), "Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["response"]["errors"] == []


def _closed_by_peer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (the socket's own timeout bounds the wait)."""
    sock.settimeout(CONTROL_TIMEOUT_S)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize("silent", [16, 64])
def test_silent_and_slow_sockets_do_not_stop_the_api(rig: Rig, make_server, attack, silent: int) -> None:
    server = make_server()
    a = attack(server.port)
    a.silent(silent)
    a.slow_heads(8)
    a.slow_bodies(8)
    a.start_trickling()
    assert wait_for(lambda: server.open_connections >= silent + 16, timeout=CONTROL_TIMEOUT_S)
    # a new connection per round, then a kept-alive one
    for _ in range(3):
        _control_answers(rig, http.client.HTTPConnection("127.0.0.1", server.port, timeout=CONTROL_TIMEOUT_S))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CONTROL_TIMEOUT_S)
    for _ in range(3):
        _control_answers(rig, conn)
    assert server.open_connections >= silent + 16  # the attack was still on


def test_a_request_that_never_finishes_gets_408_and_is_closed(make_server) -> None:
    server = make_server(request_timeout=0.5)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=CONTROL_TIMEOUT_S)
    with sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        reply = _closed_by_peer(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body) == {"code": 408, "error": "REQUEST_TIMEOUT",
                                "message": "the request did not arrive in time"}
    assert wait_for(lambda: server.open_connections == 0)


def test_a_trickled_head_is_closed_at_the_deadline_not_kept_alive_by_each_byte(make_server) -> None:
    server = make_server(request_timeout=0.5)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=CONTROL_TIMEOUT_S)
    with sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\n")
        closed = threading.Event()
        sock.settimeout(0.1)
        reply = b""
        for _ in range(100):  # at most ~10 s of trickling, a line every 0.1 s
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: 1\r\n")
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            reply += chunk
            if not chunk:
                closed.set()
                break
    assert closed.is_set() and reply.startswith(b"HTTP/1.1 408 ")


def test_a_silent_connection_is_closed_after_the_idle_timeout(make_server) -> None:
    server = make_server(idle_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=CONTROL_TIMEOUT_S) as sock:
        assert _closed_by_peer(sock) == b""
    assert wait_for(lambda: server.open_connections == 0)


def test_connections_past_the_per_address_limit_are_closed_and_others_served(rig: Rig, make_server,
                                                                            attack) -> None:
    server = make_server(max_per_address=4)
    a = attack(server.port)
    a.silent(4)
    assert wait_for(lambda: server.open_connections == 4)
    assert _closed_by_peer(a.connect(SILENT_FROM)) == b""
    control = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CONTROL_TIMEOUT_S)
    _control_answers(rig, control)
    control.close()
    assert wait_for(lambda: server.open_connections == 4)


def test_connections_past_the_total_limit_are_closed(rig: Rig, make_server, attack) -> None:
    server = make_server(max_connections=8)
    a = attack(server.port)
    a.silent(8)
    assert wait_for(lambda: server.open_connections == 8)
    assert _closed_by_peer(a.connect(SILENT_FROM)) == b""
    a.close()
    assert wait_for(lambda: server.open_connections == 0)
    _control_answers(rig, http.client.HTTPConnection("127.0.0.1", server.port, timeout=CONTROL_TIMEOUT_S))


def test_silent_sockets_on_the_tls_port_cost_no_worker(rig: Rig, make_server, attack, pki: Path) -> None:  # noqa: F811
    server = make_server(ssl_cert=str(pki / "server.pem"), ssl_key=str(pki / "server.key"))
    a = attack(server.port)
    a.silent(64)
    with contextlib.ExitStack() as stack:
        # and 8 that start a TLS handshake and stop half-way (a ClientHello cut short)
        for _ in range(8):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                                                source_address=(SLOW_HEAD_FROM, 0)))
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert wait_for(lambda: server.open_connections >= 72, timeout=CONTROL_TIMEOUT_S)
        _control_answers(rig, _tls_conn(server.port, pki))


def test_the_websocket_port_keeps_serving_under_the_same_attack(rig: Rig, attack) -> None:
    live = LiveServer(rig.hub, rig.auth, host="127.0.0.1", port=0, auth_timeout=1.0)
    live.start()
    try:
        a = attack(live.port)
        a.silent(64)
        a.slow_heads(8)  # an HTTP upgrade request that never ends
        a.start_trickling()
        url = f"ws://127.0.0.1:{live.port}/ws/requests"
        headers = {"Authorization": f"Bearer {rig.tokens['control']}"}
        with connect(url, additional_headers=headers, open_timeout=CONTROL_TIMEOUT_S) as ws:
            ws.send(json.dumps({"type": "request", "id": "r1", "action": "variable.get", "args": {"name": "x"}}))
            reply = json.loads(ws.recv(timeout=CONTROL_TIMEOUT_S))
        assert reply["id"] == "r1" and reply["response"]["errors"] == []
        # the silent ones are closed once their handshake time is up
        assert _closed_by_peer(a.socks[0]) == b""
    finally:
        live.stop(5.0)
