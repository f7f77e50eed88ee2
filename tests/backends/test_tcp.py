"""The TCP request channel (pihub.backends.tcp) through a real hub: tokens, framing, bounds."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pihub_testing import finishes, wait_for

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

    def __init__(self, hub: Any) -> None:
        host, port = hub.backends["tcp"].address
        self.sock = socket.create_connection((host, port), timeout=10)
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
def connect() -> Iterator[Callable[[Any], Client]]:
    clients: list[Client] = []

    def make(hub: Any) -> Client:
        c = Client(hub)
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
    (b"[1, 2]", "must be a JSON object, not list"),
    (b'"just a string"', "must be a JSON object, not str"),
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
    a, b = connect(hub), connect(hub)
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 2, 5)
    third = connect(hub)
    assert "too many connections (max_connections: 2)" in errors(third.recv())[0]
    assert third.closed()
    a.send(req("variable.get", name="x"))
    assert errors(a.recv()) == []
    b.close()
    assert wait_for(lambda: hub.backends["tcp"].describe_status()["connections"] == 1, 5)
    d = connect(hub)
    d.send(req("variable.get", name="x"))
    assert errors(d.recv()) == []


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
