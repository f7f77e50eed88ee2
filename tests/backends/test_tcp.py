"""The TCP request channel (pihub.backends.tcp) through a real hub: tokens, framing, bounds."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pihub_testing import finishes, wait_for

from pihub import limits

ENV_TOKEN = "ph_tcp_test_env_token_0123456789abcdefghijklmnop"

CONFIG = """
device_id: tcp-test
tcp: {{port: 0{extra}}}
mock: {{}}
event.hook.note_custom:
  if: {{type: CustomEvent, subtype: tcp}}
  then:
    - action: variable.set
      args: {{from_event: "${{value}}"}}
"""


@pytest.fixture
def tcp_hub(make_hub: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    def make(extra: str = "") -> Any:
        monkeypatch.setenv("PIHUB_API_TOKEN", ENV_TOKEN)
        return make_hub(CONFIG.format(extra=extra))

    return make


class Client:
    """A line-oriented TCP client of the channel."""

    def __init__(self, hub: Any, source: str | None = None) -> None:
        host, port = hub.backends["tcp"].address
        self.sock = socket.create_connection((host, port), timeout=10,
                                             source_address=None if source is None else (source, 0))
        self.buf = b""

    def send(self, obj: Any, token: str | None = ENV_TOKEN) -> None:
        if isinstance(obj, dict) and token is not None:
            obj = {**obj, "token": token}
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.sock.sendall(data + b"\n")

    def recv(self) -> Any:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unread: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def closed(self) -> bool:
        """True once the server closed the connection (EOF after any unread data)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(hub: Any, source: str | None = None) -> Client:
        c = Client(hub, source)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def req(action: str, **args: Any) -> dict[str, Any]:
    return {"type": "request", "action": action, "args": args, "id": f"id-{action}-{len(args)}"}


def errors(resp: dict[str, Any]) -> list[str]:
    return resp["response"]["errors"]


def test_requests_run_with_a_token_and_are_answered_in_order(tcp_hub, connect):
    hub = tcp_hub()
    c = connect(hub)
    c.send(req("variable.set", colour="blue"))
    c.send(req("variable.get", name="colour"))
    first, second = c.recv(), c.recv()
    assert first["id"] == "id-variable.set-1" and first["type"] == "response" and errors(first) == []
    assert second["id"] == "id-variable.get-1" and second["response"]["output"] == {"colour": "blue"}
    assert second["origin"] == "tcp-test" and second["target"] == "tcp"


def test_an_event_is_published_and_answered_with_an_empty_object(tcp_hub, connect):
    hub = tcp_hub()
    c = connect(hub)
    c.send({"type": "event", "args": {"type": "CustomEvent", "subtype": "tcp", "value": 7}})
    assert c.recv() == {}
    assert hub.flush()
    assert wait_for(lambda: hub.execute("variable.get", {"name": "from_event"}).output
                    == {"from_event": 7}, 5)


@pytest.mark.parametrize("token, error", [
    (None, "INVALID_CREDENTIALS"),
    ("ph_not_a_real_token_at_all_0000000000000000000", "INVALID_CREDENTIALS"),
    ("", "INVALID_CREDENTIALS"),
])
def test_a_request_without_a_valid_token_is_refused_and_nothing_runs(tcp_hub, connect, caplog, token, error):
    hub = tcp_hub()
    c = connect(hub)
    with caplog.at_level(logging.WARNING, logger="pihub.ingress"):
        c.send(req("variable.set", secret_thing="x"), token=token)
        resp = c.recv()
    assert resp["id"] == "id-variable.set-1" and errors(resp)[0].startswith(error)
    assert hub.execute("variable.get", {"name": "secret_thing"}).output == {"secret_thing": None}
    assert "tcp: refused a message from 127.0.0.1:" in caplog.text
    if token:
        assert token not in caplog.text and token not in json.dumps(resp)
    c.send(req("variable.get", name="x"))  # the connection stays usable
    assert errors(c.recv()) == []


def test_a_read_only_token_cannot_run_requests(tcp_hub, connect):
    hub = tcp_hub()
    hub.auth.add_user("reader", "a long enough password", scope="read")
    token, _ = hub.auth.create_token("reader", scopes=["read"])
    c = connect(hub)
    c.send(req("variable.set", k="v"), token=token)
    assert errors(c.recv())[0].startswith("INSUFFICIENT_SCOPE")


def test_refusals_are_logged_rate_limited(tcp_hub, connect, caplog):
    hub = tcp_hub()
    c = connect(hub)
    with caplog.at_level(logging.WARNING, logger="pihub.ingress"):
        for _ in range(50):
            c.send(req("variable.get", name="x"), token=None)
            c.recv()
    assert caplog.text.count("refused a message") == 1


@pytest.mark.parametrize("line, says", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, not an array"),
    (b'"just a string"', "must be a JSON object, not a string"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_malformed_messages_get_an_error_response_and_the_connection_lives_on(tcp_hub, connect, line, says):
    hub = tcp_hub("," "max_message_bytes: 1048576")
    c = connect(hub)
    c.send(line)
    resp = c.recv()
    assert resp["type"] == "response" and says in errors(resp)[0]
    c.send(req("variable.get", name="x"))
    assert errors(c.recv()) == []


def test_a_request_for_another_device_is_refused_not_dropped(tcp_hub, connect):
    hub = tcp_hub()
    c = connect(hub)
    c.send({**req("variable.set", k="v"), "target": "kitchen-pi"})
    assert "target 'kitchen-pi' is not this device ('tcp-test')" in errors(c.recv())[0]
    c.send({**req("variable.get", name="k"), "target": "tcp-test"})
    assert c.recv()["response"]["output"] == {"k": None}


def test_platypush_style_one_message_then_half_close(tcp_hub):
    hub = tcp_hub()
    host, port = hub.backends["tcp"].address
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(json.dumps({**req("variable.set", k="nl-less"), "token": ENV_TOKEN}).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert errors(json.loads(data)) == []
    assert hub.execute("variable.get", {"name": "k"}).output == {"k": "nl-less"}


def test_an_oversized_message_is_refused_and_the_connection_closed(tcp_hub, connect):
    hub = tcp_hub(", max_message_bytes: 1024")
    c = connect(hub)
    c.sock.sendall(b"x" * 5000)  # no newline: it can only grow
    assert "over the 1024-byte limit" in errors(c.recv())[0]
    assert c.closed()


def test_a_trickling_message_is_cut_off_at_the_message_timeout(tcp_hub, connect):
    hub = tcp_hub(", message_timeout: 0.3")
    c = connect(hub)
    c.send(req("variable.get", name="x"))  # authenticated: only the message's own deadline is left
    assert errors(c.recv()) == []
    c.sock.sendall(b'{"type": "req')
    assert "not complete within 0.3 s" in errors(c.recv())[0]
    assert c.closed()


def test_an_idle_connection_is_closed(tcp_hub, connect):
    hub = tcp_hub(", idle_timeout: 0.2")
    c = connect(hub)
    assert c.closed()
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 0, 5)


def test_connections_beyond_the_limit_are_refused_with_the_reason(tcp_hub, connect):
    hub = tcp_hub(", max_connections: 2")
    a, b = connect(hub, "127.0.0.1"), connect(hub, "127.0.0.2")  # one per address is within its limit
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 2, 5)
    third = connect(hub, "127.0.0.3")
    assert "too many connections (max_connections: 2)" in errors(third.recv())[0]
    assert third.closed()
    a.send(req("variable.get", name="x"))
    assert errors(a.recv()) == []
    b.close()
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 1, 5)
    d = connect(hub, "127.0.0.2")
    d.send(req("variable.get", name="x"))
    assert errors(d.recv()) == []


def keep_sending_until_closed(c: Client, payload: bytes, received: list[bytes] | None = None) -> Callable[[], bool]:
    """A ``wait_for`` predicate: send ``payload`` (if any), read what comes back for a moment;
    True once the server has closed the connection."""
    c.sock.settimeout(0.02)

    def step() -> bool:
        try:
            if payload:
                c.sock.sendall(payload)
            data = c.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:  # reset or broken pipe: the server closed it
            return True
        if received is not None:
            received.append(data)
        return data == b""

    return step


def test_blank_lines_do_not_keep_a_connection_open_past_the_idle_timeout(tcp_hub, connect):
    hub = tcp_hub(", idle_timeout: 0.3")
    c = connect(hub)
    c.send(req("variable.get", name="x"))  # authenticated: only idle_timeout can close it now
    assert errors(c.recv()) == []
    received: list[bytes] = []
    assert wait_for(keep_sending_until_closed(c, b"\n \r\n", received), 10)
    assert b"".join(received) == b""  # blank lines are not answered, and idling out is silent
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 0, 5)


def _read_only_token(hub: Any) -> str:
    hub.auth.add_user("reader", "a long enough password", scope="read")
    return hub.auth.create_token("reader", scopes=["read"])[0]


@pytest.mark.parametrize("attack", [
    "silent", "half a message", "blank lines", "no token", "a wrong token", "a read-only token", "not JSON",
    "the token in a list", "the token in UTF-16",
])
def test_a_connection_without_a_valid_token_is_closed_at_the_message_timeout(tcp_hub, connect, attack):
    hub = tcp_hub(", message_timeout: 0.3, idle_timeout: 60")
    get = req("variable.get", name="x")
    payload, once = {
        "silent": (b"", False),
        "half a message": (b'{"type": "request", ', True),
        "blank lines": (b"\n", False),
        "no token": (json.dumps(get).encode() + b"\n", False),
        "a wrong token": (json.dumps({**get, "token": "ph_wrong_" + "0" * 40}).encode() + b"\n", False),
        "a read-only token": (json.dumps({**get, "token": _read_only_token(hub)}).encode() + b"\n", False),
        "not JSON": (b"hello\n", False),
        "the token in a list": (json.dumps([{**get, "token": ENV_TOKEN}]).encode() + b"\n", False),
        "the token in UTF-16": (json.dumps({**get, "token": ENV_TOKEN}).encode("utf-16") + b"\n", False),
    }[attack]
    c = connect(hub)
    if once:
        c.sock.sendall(payload)
    received: list[bytes] = []
    assert wait_for(keep_sending_until_closed(c, b"" if once else payload, received), 10)
    if not payload or once:  # nothing unread at the server, so its reason arrives before the close
        text = b"".join(received).decode()
        assert "INVALID_CREDENTIALS: no valid token within 0.3 s of connecting (message_timeout)" in text
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 0, 5)


@pytest.mark.parametrize("first", ["request", "event"])
def test_a_valid_token_lifts_the_deadline(tcp_hub, connect, first):
    hub = tcp_hub(", message_timeout: 0.3, idle_timeout: 60")
    legit = connect(hub, "127.0.0.2")
    if first == "request":
        legit.send(req("variable.set", k="v"))
        assert errors(legit.recv()) == []
    else:
        legit.send({"type": "event", "args": {"type": "CustomEvent", "subtype": "tcp", "value": "v"}})
        assert legit.recv() == {}
    later = connect(hub)  # connected after legit's token: its deadline passes after legit's would have
    assert "no valid token within 0.3 s" in errors(later.recv())[0]
    assert later.closed()
    legit.send(req("variable.get", name="x"), token=None)  # a refused message does not undo it
    assert errors(legit.recv())[0].startswith("INVALID_CREDENTIALS")
    legit.send(req("variable.get", name="k"))
    assert errors(legit.recv()) == []


def test_one_address_cannot_take_every_slot(tcp_hub, connect):
    hub = tcp_hub(", max_connections: 5")  # 2 per address
    tcp = hub.backends["tcp"]
    hogs = [connect(hub, "127.0.0.1") for _ in range(2)]
    assert wait_for(lambda: tcp.describe_status()["connections"] == 2, 5)
    third = connect(hub, "127.0.0.1")
    assert "too many connections from 127.0.0.1 (2 per address" in errors(third.recv())[0]
    assert third.closed()
    other = connect(hub, "127.0.0.2")
    other.send(req("variable.get", name="x"))
    assert errors(other.recv()) == []
    hogs[0].close()
    assert wait_for(lambda: tcp.describe_status()["connections"] == 2, 5)
    again = connect(hub, "127.0.0.1")
    again.send(req("variable.get", name="x"))
    assert errors(again.recv()) == []


def test_blank_line_slot_holders_leave_room_for_real_clients_and_are_closed(tcp_hub, connect):
    # the reported attack: 4 tokenless sockets sending "\n" now and then, max_connections 4
    hub = tcp_hub(", max_connections: 4, message_timeout: 0.3, idle_timeout: 60")
    tcp = hub.backends["tcp"]
    attackers = [connect(hub, "127.0.0.1") for _ in range(4)]
    for a in attackers:
        a.sock.sendall(b"\n")
    assert wait_for(lambda: tcp.describe_status()["connections_refused"] == 2, 5)
    legit = connect(hub, "127.0.0.2")
    legit.send(req("variable.get", name="x"))
    assert errors(legit.recv()) == []
    for a in attackers:
        assert wait_for(keep_sending_until_closed(a, b"\n"), 10)
    local = connect(hub, "127.0.0.1")  # the attacker's address may connect again once they are gone
    local.send(req("variable.get", name="x"))
    assert errors(local.recv()) == []


def test_refused_connections_are_counted_and_logged_rate_limited(tcp_hub, connect, caplog):
    hub = tcp_hub(", max_connections: 1")
    tcp = hub.backends["tcp"]
    connect(hub)
    assert wait_for(lambda: tcp.describe_status()["connections"] == 1, 5)
    with caplog.at_level(logging.WARNING, logger="pihub.backends.tcp"):
        for _ in range(3 * limits.REFUSED_LOG_BURST):
            refused = connect(hub)
            assert "too many connections (max_connections: 1)" in errors(refused.recv())[0]
            refused.close()
    assert tcp.describe_status()["connections_refused"] == 3 * limits.REFUSED_LOG_BURST
    warnings = [r.getMessage() for r in caplog.records if "tcp connection from 127.0.0.1 refused" in r.getMessage()]
    assert len(warnings) == limits.REFUSED_LOG_BURST
    assert "1 open, 1 from it (limits: 1 in all, 1 per address)" in warnings[0]


def test_a_refusal_warning_says_how_many_were_held_back(tcp_hub, connect, caplog, monkeypatch):
    monkeypatch.setattr(limits, "REFUSED_LOG_BURST", 1)
    monkeypatch.setattr(limits, "REFUSED_LOG_WINDOW_S", 0.2)
    hub = tcp_hub(", max_connections: 1")
    connect(hub)
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 1, 5)

    def refuse_one() -> bool:
        refused = connect(hub)
        refused.recv()
        refused.close()
        return "more refused since the last warning" in caplog.text

    with caplog.at_level(logging.WARNING, logger="pihub.backends.tcp"):
        assert wait_for(refuse_one, 10, interval=0.01)


def test_a_port_in_use_fails_the_backend_with_the_address_and_the_hub_runs(make_hub, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        hub = make_hub(f"tcp: {{port: {port}}}\nmock: {{}}\n")
        tcp = hub.backends["tcp"]
        assert tcp.status == "failed: runtime error"
        assert f"cannot listen on 127.0.0.1:{port}" in tcp.error
        assert hub.ready


def test_stop_ends_connected_clients_promptly(tcp_hub, connect):
    hub = tcp_hub()
    idle = connect(hub)
    busy = connect(hub)
    busy.sock.sendall(b'{"type": "request", ')  # half a message
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 2, 5)
    finishes(hub.stop, 10, "hub.stop with TCP clients connected")
    assert idle.closed() and busy.closed()


def test_platypush_backend_tcp_section_is_read_as_tcp(write_config, load_config):
    cfg = load_config(write_config("backend.tcp: {port: 0, listen_queue: 3}\n"))
    assert cfg.sections["tcp"]["listen_queue"] == 3
    assert any("backend.tcp" in str(w) for w in cfg.warnings)


def test_the_configs_platypush_token_is_accepted(make_hub, connect, monkeypatch):
    monkeypatch.setenv("STATIC_TOKEN", "platypush-static-token-0123456789")
    hub = make_hub("token: !env STATIC_TOKEN\ntcp: {port: 0}\nmock: {}\n")
    c = connect(hub)
    c.send(req("variable.set", via="static"), token="platypush-static-token-0123456789")
    assert errors(c.recv()) == []
    c.send(req("variable.get", name="x"), token="platypush-static-token-0123456789-wrong")
    assert errors(c.recv())[0].startswith("INVALID_CREDENTIALS")
