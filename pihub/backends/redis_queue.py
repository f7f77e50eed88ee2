"""Requests over a Redis list (``redis_queue:``; Platypush's ``backend.redis``).

Named ``redis_queue`` rather than ``redis`` because Platypush's top-level ``redis:`` is the
connection of its own bus, which pihub does not have: a Platypush config carrying it must
not start a request channel. Platypush's ``redis_args`` (redis-py arguments) are read:
``host``, ``port``, ``db``, ``username``, ``password``, ``unix_socket_path``, ``ssl``.

A producer pushes request envelopes (the ``POST /execute`` JSON, with its API token in
the envelope's ``token`` key) onto the list ``queue``; pihub pops them and pushes each
response onto ``platypush/responses/<request id>``, which expires after
``response_ttl`` seconds, as Platypush's clients expect::

    redis-cli RPUSH platypush/backend/redis \\
        '{"type":"request","id":"42","action":"variable.get","args":{"name":"x"},"token":"ph_..."}'
    redis-cli BLPOP platypush/responses/42 10

An event envelope is emitted and answered with nothing (as Platypush). Parsing, tokens,
scopes and the ``target`` check are :mod:`pihub.ingress`'s; a refused or malformed
request is answered with an error response on its reply list, or, when no ``id`` can be
read from it (so no list can be named), logged (rate-limited) and dropped.

The reader blocks in ``BLPOP`` for at most ``poll_timeout`` seconds at a time (the
longest :meth:`close` waits), so an idle channel makes one round trip per
``poll_timeout``. A value over ``max_message_bytes`` is refused, but only after ``BLPOP``
has read it whole (Redis cannot pop and check a size in one blocking call): on a Redis that
other clients can write to, bound what one command may carry with the server's
``proto-max-bulk-len`` (e.g. ``proto-max-bulk-len 1mb`` in ``redis.conf``, the least it
takes; the default lets one client push 512 MB). Redis down or gone:
the status is ``degraded`` with the reason, and the reader reconnects with a back-off
on :attr:`clock` (``retry_interval`` doubling up to ``max_retry_interval``); it is
``running`` again once a command succeeds.

Differences from Platypush, on purpose: nothing runs without a valid token (the peer
runs whatever is pushed); a request for another device gets an error response instead of
being dropped; Redis being down never stops the daemon.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from pihub.backends.base import BackendStatus, BackendThread, Emit, RequestChannel
from pihub.config.schema import Field, Schema
from pihub.errors import BackendUnavailable, ConfigProblem, ConfigProblems
from pihub.logs import LogLimiter
from pihub.messages import dumps

CONFIG_SCHEMA = Schema({
    "host": Field(str, None, doc="Redis host (default localhost)"),
    "port": Field(int, None, min=1, max=65535, doc="Redis port (default 6379)"),
    "unix_socket_path": Field(str, None, doc="Redis UNIX socket (instead of host/port)"),
    "db": Field(int, None, min=0, max=1024, doc="database number (default 0)"),
    "username": Field(str, None, doc="Redis ACL user (Redis 6+)"),
    "password": Field(str, None, secret=True, doc="Redis password (use !env or !file)"),
    "ssl": Field(bool, None, doc="connect with TLS (default false)"),
    "queue": Field(str, "platypush/backend/redis", aliases=("redis_queue",),
                   doc="the list requests are pushed onto"),
    "response_prefix": Field(str, "platypush/responses/", doc="responses go to <prefix><request id>"),
    "response_ttl": Field(int, 60, min=1, max=86400, doc="seconds a response list is kept"),
    "max_message_bytes": Field(int, 65536, min=256, max=16 * 1024 * 1024, doc="largest request, in bytes"),
    "poll_timeout": Field(float, 1.0, min=0.1, max=60.0, doc="seconds one BLPOP waits (and close waits at most)"),
    "connect_timeout": Field(float, 5.0, min=0.1, max=120.0, doc="seconds to connect and for each command"),
    "retry_interval": Field(float, 1.0, min=0.05, max=3600.0, doc="first wait before reconnecting, seconds"),
    "max_retry_interval": Field(float, 30.0, min=0.05, max=3600.0, doc="longest wait between reconnects"),
    "redis_args": Field(dict, None, doc="Platypush's redis-py arguments (host, port, db, username, password, "
                                        "unix_socket_path, ssl); the keys above win"),
}, doc="Requests over a Redis list, Platypush's backend.redis layout.")

#: the redis_args keys read (each fills the setting of its name)
_REDIS_ARGS = ("host", "port", "db", "username", "password", "unix_socket_path", "ssl")
#: the connection settings' defaults, when neither the section nor redis_args sets them
_DEFAULTS = {"host": "localhost", "port": 6379, "db": 0, "ssl": False}


class RedisQueueBackend(RequestChannel):
    """Pops requests from a Redis list and pushes the responses (module docstring)."""

    name: ClassVar[str] = "redis_queue"
    config_schema: ClassVar[Schema] = CONFIG_SCHEMA

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        given = dict(config or {})
        args = given.get("redis_args")
        if isinstance(args, dict):
            unknown = sorted(set(args) - set(_REDIS_ARGS), key=str)
            if unknown:
                raise ConfigProblems([ConfigProblem(("redis_args", unknown[0]),
                                                    f"is not read by pihub (allowed: {', '.join(_REDIS_ARGS)})")])
            for key in _REDIS_ARGS:  # the section's own keys win; then the schema checks them
                if key in args and given.get(key) is None:
                    given[key] = args[key]
        super().__init__(given, **kwargs)
        for key, default in _DEFAULTS.items():
            if self.config[key] is None:
                self.config[key] = default
        self._thread: BackendThread | None = None
        self._emit: Emit | None = None
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "events": 0, "refused_unaddressed": 0, "oversized": 0, "reconnects": 0}
        self._drop_log = LogLimiter(1, 10.0, self.clock.now)

    @property
    def where(self) -> str:
        """The server as the logs and the status name it (never the password)."""
        c = self.config
        return f"unix:{c['unix_socket_path']}" if c["unix_socket_path"] else f"{c['host']}:{c['port']}"

    def validate_environment(self) -> None:
        try:
            import redis  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(f"the redis backend needs redis-py: pip install 'pihub[redis]' ({e})") from None

    def open(self, emit: Emit) -> None:
        self._emit = emit
        self.status, self.error = BackendStatus.RUNNING, None
        self._thread = BackendThread("pihub-redis", self._run)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            # BLPOP returns within poll_timeout; a connect in progress within connect_timeout
            self._thread.stop(self.config["poll_timeout"] + self.config["connect_timeout"] + 5)
            self._thread = None
        self.status = BackendStatus.STOPPED

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus once open ``server`` and ``counts`` (requests, events...)."""
        status = super().describe_status()
        if self._emit is not None:
            status["server"] = self.where
            with self._lock:
                status["counts"] = dict(self._counts)
        return status

    # ------------------------------------------------------------------ the reader
    def _client(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        c = self.config
        password = c["password"].reveal() if hasattr(c["password"], "reveal") else c["password"]
        common: dict[str, Any] = {"db": c["db"], "username": c["username"], "password": password,
                                  "socket_timeout": c["poll_timeout"] + c["connect_timeout"],
                                  "socket_connect_timeout": c["connect_timeout"],
                                  # no retries inside redis-py (its default backs off for seconds
                                  # per command): reconnecting is this backend's, on its clock
                                  "retry": Retry(NoBackoff(), 0)}
        if c["unix_socket_path"]:
            return redis.Redis(unix_socket_path=c["unix_socket_path"], **common)
        return redis.Redis(host=c["host"], port=c["port"], ssl=c["ssl"], **common)

    def _run(self, stopping: threading.Event) -> None:
        import redis

        delay = self.config["retry_interval"]
        client = None
        failed = False
        while not stopping.is_set():
            try:
                if client is None:
                    client = self._client()
                    client.ping()
                    if failed:  # back after a failure: not at the first connect
                        self.report_recovered()
                        self.log.info("Redis at %s reachable again", self.where)
                        failed = False
                    delay = self.config["retry_interval"]
                item = client.blpop([self.config["queue"]], timeout=self.config["poll_timeout"])
                if item is not None:
                    self._one(client, item[1])
            except redis.AuthenticationError:
                self._down(client, "Redis refused the credentials (username/password)")
                client = None
            except redis.RedisError as e:
                self._down(client, f"{type(e).__name__}: {e}")
                client = None
            except OSError as e:
                self._down(client, f"{type(e).__name__}: {e}")
                client = None
            if client is None and not stopping.is_set():
                failed = True
                with self._lock:
                    self._counts["reconnects"] += 1
                self.clock.wait(stopping, delay)
                delay = min(delay * 2, self.config["max_retry_interval"])
        if client is not None:
            client.close()

    def _down(self, client: Any, why: str) -> None:
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                pass
        msg = f"Redis at {self.where} unreachable ({why}); retrying"
        if self.report_degraded(msg):
            self.log.warning("%s", msg)

    def _log_drop(self, why: str) -> None:
        """Log a dropped message, at most once per 10 s of :attr:`clock` (a flood of junk
        must not flood the journal; ``counts`` in the status has every one)."""
        if self._drop_log.allow()[0]:
            self.log.warning("%s: %s (counts so far: %s)", self.config["queue"], why, self._counts)

    def _one(self, client: Any, raw: bytes) -> None:
        limit = self.config["max_message_bytes"]
        if len(raw) > limit:
            with self._lock:
                self._counts["oversized"] += 1
            self._log_drop(f"dropped a {len(raw)}-byte message: over max_message_bytes ({limit})")
            return
        assert self._emit is not None
        reply = self.handle_request(raw, emit=self._emit, peer=self.where)
        with self._lock:
            self._counts["events" if reply is None else "requests"] += 1
        if reply is None:
            return
        rid = reply.get("id")
        if not rid:
            with self._lock:
                self._counts["refused_unaddressed"] += 1
            self._log_drop("a message without an id, so its answer cannot be sent: "
                           + ("; ".join(reply["response"]["errors"]) or "(no error)"))
            return
        key = f"{self.config['response_prefix']}{rid}"
        pipe = client.pipeline(transaction=True)
        pipe.rpush(key, dumps(reply))
        pipe.expire(key, self.config["response_ttl"])
        pipe.execute()
