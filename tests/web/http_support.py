"""Shared helpers of the HTTP API tests: a rig (real hub, real Auth, the app) and a WSGI caller.

The WSGI caller builds the environ itself (no socket, no third-party client), the way
bottle's own tests call an app: every test of ``tests/web/test_http_*.py`` that does not
need a socket goes through :func:`call`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from argon2 import PasswordHasher

from pihub.auth import Auth
from pihub.web.app import make_app
from pihub.web.server import WebServer

#: A cheap argon2 (the real one costs 19 MiB and ~30 ms per hash).
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"
ENV_TOKEN = "env-token-0123456789abcdef"
SECURITY = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

#: The hub of most tests: the mock backend, and webhooks with every kind of reply.
RIG_YAML = """
mock: {}
event.hook.ping:
  if: {type: WebhookEvent, hook: ping}
  then:
    - return: '${ {"pong": data["n"] + 1} }'
event.hook.created:
  if: {type: WebhookEvent, hook: created}
  then:
    - return: >-
        ${ [{"made": True}, 201, {"X-Made": "yes", "Content-Security-Policy": "none",
        "Connection": "close", "Bad Name": "x"}] }
event.hook.text:
  if: {type: WebhookEvent, hook: text}
  then:
    - return: hello there
event.hook.broken:
  if: {type: WebhookEvent, hook: broken}
  then:
    - action: mock.set
      args: {}
event.hook.quiet:
  if: {type: WebhookEvent, hook: quiet}
  then:
    - action: variable.set
      args: {quiet_method: '${method}'}
    - return: null
event.hook.custom:
  if: {type: CustomEvent, subtype: http-test}
  then:
    - action: variable.set
      args: {custom_seen: '${value}'}
"""


class Clock:
    """A settable clock for :class:`Auth` (seconds since the epoch)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Reply:
    """A response: status code, headers (lower-case names; repeated ones joined by a NUL), body."""

    status: int
    headers: dict[str, str]
    body: bytes
    header_list: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def cookies(self) -> list[str]:
        return [v for k, v in self.header_list if k.lower() == "set-cookie"]


def environ(method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None,
            query: str = "", https: bool = False, remote_addr: str = "127.0.0.1",
            content_length: bool = True, raw_path: str | None = None) -> dict[str, Any]:
    """A WSGI environ as a server would build it (``PATH_INFO`` percent-decoded, latin-1)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": raw_path if raw_path is not None else path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8008",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote_addr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if https else "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "HTTP_HOST": "127.0.0.1:8008",
    }
    if body and content_length:
        env["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[key] = value
        else:
            env["HTTP_" + key] = value
    return env


def call(app: Callable[..., Iterable[bytes]], method: str, path: str, *, json_body: Any = None,
         body: bytes | None = None, **kw: Any) -> Reply:
    """Call the WSGI app once and collect the response."""
    headers = dict(kw.pop("headers", None) or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    env = environ(method, path, body=body or b"", headers=headers, **kw)
    seen: dict[str, Any] = {}

    def start_response(status: str, header_list: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, header_list

    chunks = app(env, start_response)
    try:
        data = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    header_list = seen["headers"]
    merged: dict[str, str] = {}
    for k, v in header_list:
        merged[k.lower()] = merged[k.lower()] + "\0" + v if k.lower() in merged else v
    return Reply(int(seen["status"][:3]), merged, data, list(header_list))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def session_cookie(reply: Reply) -> str:
    """The ``session_token`` value a reply sets."""
    for c in reply.cookies:
        name, _, rest = c.partition("=")
        if name == "session_token":
            return rest.split(";")[0].strip('"')
    raise AssertionError(f"no session cookie in {reply.cookies}")


def assert_security_headers(reply: Reply, *, https: bool = False) -> None:
    for name, value in SECURITY.items():
        assert reply.headers.get(name) == value, (name, reply.status, reply.headers)
    assert ("strict-transport-security" in reply.headers) is https


def assert_error(reply: Reply, status: int, name: str) -> dict[str, Any]:
    """The reply is the JSON error ``{"code": status, "error": name, "message": ...}``."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == status and body["error"] == name and isinstance(body["message"], str), body
    assert set(body) == {"code", "error", "message"}
    return body


@dataclass
class Rig:
    """A started hub on the mock backend, its Auth (cheap hasher, settable clock) and the app."""

    hub: Any
    auth: Auth
    app: Any
    clock: Clock
    tmp: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, **kw: Any) -> Reply:
        return call(self.app, method, path, **kw)

    def as_(self, scope: str) -> dict[str, str]:
        """Headers carrying alice's token of ``scope``."""
        return bearer(self.tokens[scope])

    def rebuild(self, **settings: Any) -> Any:
        """A new app over the same hub and auth with other ``http`` settings."""
        self.app = make_app(self.hub, settings=settings)
        return self.app

    def login(self, *, remember: bool = False, https: bool = False) -> tuple[str, str]:
        """A panel session for alice: ``(session_token, csrf_token)``."""
        r = self.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD,
                                                   "remember": remember}, https=https)
        assert r.status == 200, r.body
        return session_cookie(r), r.json()["csrf_token"]


def build_rig(make_hub: Callable[..., Any], tmp_path: Path, *, yaml: str = RIG_YAML, users: bool = True,
              settings: Mapping[str, Any] | None = None, start: bool = True, max_failures: int = 5,
              max_failures_total: int = 50) -> Rig:
    """A :class:`Rig`; with ``users``, alice (admin) has one token per scope and bob is read-only.

    ``max_failures`` and ``max_failures_total`` are the Auth's failed-login limits per
    address and for the whole hub (5 and 50, as in production).
    """
    hub = make_hub(yaml, start=start)
    clock = Clock()
    # one Auth per store: the hub's is swapped for one with a cheap hasher and a settable clock
    hub.auth.close()
    hub.auth = auth = Auth(hub.store, env_token=ENV_TOKEN, hasher=CHEAP_HASHER, clock=clock,
                           max_failures=max_failures, max_failures_total=max_failures_total)
    app = make_app(hub, settings=dict(settings or {}))
    rig = Rig(hub, auth, app, clock, tmp_path)
    if users:
        auth.add_user("alice", PASSWORD)
        auth.add_user("bob", PASSWORD, scope="read")
        for scope in ("read", "control", "admin"):
            rig.tokens[scope], _ = auth.create_token("alice", name=f"t-{scope}", scopes=(scope,))
    return rig


@pytest.fixture
def rig(make_hub: Callable[..., Any], tmp_path: Path) -> Rig:
    """The standard rig: users, tokens, default settings."""
    return build_rig(make_hub, tmp_path)


def url_path(*segments: str) -> str:
    """Segments joined with ``/``, each percent-encoded."""
    return "/".join(quote(s, safe="") for s in segments)


@contextlib.contextmanager
def serving(app: Any, **kw: Any) -> Iterator[WebServer]:
    """``app`` on the real WSGI server on a free loopback port (4 workers unless ``threads``
    says otherwise), stopped on exit."""
    server = WebServer(app, **{"host": "127.0.0.1", "port": 0, "threads": 4, **kw})
    server.start()
    try:
        yield server
    finally:
        server.stop()
