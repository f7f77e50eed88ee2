"""The Redis request channel (pihub.backends.redis_queue) against a real redis-server."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import finishes, need_tool, wait_for

ENV_TOKEN = "ph_redis_test_env_token_0123456789abcdefghijklm"
QUEUE = "platypush/backend/redis"


class RedisServer:
    """redis-server on a UNIX socket in a temp dir, no persistence; restartable."""

    def __init__(self, tmp: Path, password: str | None = None) -> None:
        self.sock = tmp / "redis.sock"
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: self.sock.exists(), 10, 0.01), "redis-server did not create its socket"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=str(self.sock), password=self.password)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    need_tool(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    s = RedisServer(tmp_path)
    s.start()
    yield s
    s.stop()


CONFIG = """
device_id: redis-test
redis_queue: {{unix_socket_path: "{sock}", poll_timeout: 0.2, retry_interval: 0.05, max_retry_interval: 0.2{extra}}}
mock: {{}}
event.hook.note_custom:
  if: {{type: CustomEvent, subtype: redis}}
  then:
    - action: variable.set
      args: {{from_event: "${{value}}"}}
"""


@pytest.fixture
def redis_hub(make_hub: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
              server: RedisServer) -> Callable[..., Any]:
    def make(extra: str = "") -> Any:
        monkeypatch.setenv("PIHUB_API_TOKEN", ENV_TOKEN)
        hub = make_hub(CONFIG.format(sock=server.sock, extra=extra))
        assert wait_for(lambda: hub.backends["redis_queue"].status == "running", 5)
        return hub

    return make


def push(server: RedisServer, obj: Any, token: str | None = ENV_TOKEN) -> None:
    if isinstance(obj, dict) and token is not None:
        obj = {**obj, "token": token}
    server.client().rpush(QUEUE, obj if isinstance(obj, bytes) else json.dumps(obj))


def answer(server: RedisServer, rid: str, timeout: float = 5) -> dict[str, Any]:
    item = server.client().blpop([f"platypush/responses/{rid}"], timeout=timeout)
    assert item is not None, f"no response for {rid}"
    return json.loads(item[1])


def req(rid: str, action: str, **args: Any) -> dict[str, Any]:
    return {"type": "request", "id": rid, "action": action, "args": args}


def test_a_request_is_answered_on_its_response_list_which_expires(redis_hub, server):
    redis_hub()
    push(server, req("r1", "variable.set", colour="red"))
    assert answer(server, "r1")["response"]["errors"] == []
    push(server, req("r2", "variable.get", name="colour"))
    client = server.client()
    assert wait_for(lambda: client.exists("platypush/responses/r2"), 5)
    assert 0 < client.ttl("platypush/responses/r2") <= 60
    resp = answer(server, "r2")
    assert resp["id"] == "r2" and resp["response"]["output"] == {"colour": "red"}
    assert resp["origin"] == "redis-test" and resp["target"] == "redis_queue"


def test_an_event_is_emitted_with_the_channel_as_source_and_not_answered(redis_hub, server):
    hub = redis_hub()
    push(server, {"type": "event", "id": "e1", "args": {"type": "CustomEvent", "subtype": "redis", "value": 3}})
    assert wait_for(lambda: hub.execute("variable.get", {"name": "from_event"}).output == {"from_event": 3}, 5)
    assert not server.client().exists("platypush/responses/e1")
    assert hub.metrics().bus["backend:redis_queue"].published == 1


def test_a_request_without_a_valid_token_is_refused_on_its_list(redis_hub, server, caplog):
    hub = redis_hub()
    with caplog.at_level(logging.WARNING, logger="pihub.ingress"):
        push(server, req("bad1", "variable.set", owned="yes"), token=None)
        push(server, req("bad2", "variable.set", owned="yes"), token="ph_wrong_0000000000000000000000000000000000")
        first, second = answer(server, "bad1"), answer(server, "bad2")
    assert first["response"]["errors"][0].startswith("INVALID_CREDENTIALS")
    assert second["response"]["errors"][0].startswith("INVALID_CREDENTIALS")
    assert hub.execute("variable.get", {"name": "owned"}).output == {"owned": None}
    assert caplog.text.count("redis_queue: refused a message") == 1 and "ph_wrong" not in caplog.text


def test_junk_without_an_id_is_counted_and_dropped_and_the_channel_goes_on(redis_hub, server, caplog):
    hub = redis_hub(", max_message_bytes: 1024")
    with caplog.at_level(logging.WARNING, logger="pihub.backends.redis_queue"):
        for junk in (b"{not json", b"[1]", b"\xff", b"x" * 5000):
            push(server, junk)
        push(server, req("after", "variable.get", name="x"))
        assert answer(server, "after")["response"]["errors"] == []
    counts = hub.backends["redis_queue"].describe_status()["counts"]
    assert counts["refused_unaddressed"] == 3 and counts["oversized"] == 1
    assert caplog.text.count("a message without an id") + caplog.text.count("over max_message_bytes") == 1


def test_a_redis_restart_degrades_then_recovers(redis_hub, server):
    hub = redis_hub()
    backend = hub.backends["redis_queue"]
    server.stop()
    assert wait_for(lambda: backend.status == "degraded", 10), backend.describe_status()
    assert "Redis at unix:" in backend.error and "unreachable" in backend.error
    server.start()
    assert wait_for(lambda: backend.status == "running", 10), backend.describe_status()
    push(server, req("back", "variable.get", name="x"))
    assert answer(server, "back")["response"]["errors"] == []


def test_wrong_credentials_say_so_without_the_password(make_hub, monkeypatch, tmp_path):
    need_tool(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path, password="right-password-123")
    server.start()
    try:
        monkeypatch.setenv("PIHUB_API_TOKEN", ENV_TOKEN)
        monkeypatch.setenv("REDIS_PW", "wrong-password-456")
        hub = make_hub(f'redis_queue: {{unix_socket_path: "{server.sock}", password: !env REDIS_PW, '
                       'retry_interval: 0.05}\nmock: {}\n')
        backend = hub.backends["redis_queue"]
        assert wait_for(lambda: backend.status == "degraded", 10)
        assert "refused the credentials" in backend.error
        assert "wrong-password-456" not in json.dumps(backend.describe_status())
    finally:
        server.stop()


def test_stop_is_prompt_while_the_reader_waits(redis_hub):
    hub = redis_hub()
    finishes(hub.stop, 5, "hub.stop with the Redis reader in BLPOP")


def test_platypush_backend_redis_is_read_with_its_redis_args(write_config, load_config):
    cfg = load_config(write_config("backend.redis:\n  redis_args: {host: redis.lan, port: 6380}\n"))
    assert cfg.sections["redis_queue"]["redis_args"] == {"host": "redis.lan", "port": 6380}
    assert any("backend.redis" in str(w) for w in cfg.warnings)
    from pihub.backends.redis_queue import RedisQueueBackend

    backend = RedisQueueBackend(cfg.sections["redis_queue"])
    assert (backend.config["host"], backend.config["port"], backend.where) == ("redis.lan", 6380, "redis.lan:6380")
