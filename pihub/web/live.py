"""The websocket server: the live event stream with replay, and requests over a socket.

Endpoints (Platypush's layout, on ``websocket_port``)::

    /ws/events    server -> client: every event, as the Platypush envelope plus "seq"
                  client -> server: {"type":"event",...} is published (scope control)
    /ws/requests  client -> server: the POST /execute envelope (requests, or events)
                  server -> client: the response envelope, with the request's "id"

The two endpoints stay separate, as in Platypush: a client that only watches never
needs the ``control`` scope, and a request client never pays for the event stream.

Authentication, within :data:`AUTH_TIMEOUT_S` of the handshake. Who the client is and
whether it may open the endpoint is decided by :mod:`pihub.web.access`, the policy HTTP
uses, so a handshake carries the same credentials as an HTTP request, in the same order
(the first one present decides): ``X-Token``, ``Authorization: Bearer``, ``?token=``
(only with ``allow_query_token``, the config's ``http.allow_query_token``; otherwise
refused at once rather than ignored), ``X-Session-Token``, and the panel's session
cookie (when ``session_cookie`` names it). ``Authorization: Basic`` (a password) is
refused here: its argon2 check would stall the event loop, and a password socket could
not be closed when the password changes. With a handshake credential there is no auth
message and no acknowledgement: the stream starts at once, and ``?since=n`` on the URL
asks for replay. The URL is never logged with a token: websockets' own log lines go
through :data:`WS_LOGGER`, which masks it.

Without one (a browser cannot set headers on a websocket), the first message carries
it: ``{"type":"auth","token":"..."}`` or ``{"type":"auth","session":"..."}`` (optionally
with ``"since": n``). The server answers
``{"type":"auth","status":"ok","user":...,"scopes":[...],"seq":last,"epoch":...}``.
On ``/ws/requests`` the first message may instead be a request (or event) envelope with
the API token in its ``token`` key, as Platypush's clients send it: the token
authenticates the connection (no acknowledgement), and that message is run as its
first request. Later messages run as the same caller; a ``token`` in them is ignored.

No or bad authentication closes with 1008 and nothing else is ever sent. The close
reason starts with the error name HTTP uses for the same refusal, then says why:
``INVALID_CREDENTIALS: ...`` (no, a wrong, or a refused query token, a password, or no
credential in time), ``INVALID_SESSION: ...`` (a session that expired or ended),
``INSUFFICIENT_SCOPE: ...``. Scopes: ``read`` for ``/ws/events``, ``control`` for
``/ws/requests`` and for posting events.

Authentication is checked on the event-loop thread, in the same step that registers the
client, so an end of its credential (:meth:`LiveServer.on_revoke`,
:meth:`LiveServer.on_session_end`, also run on that thread) can never slip between the
check and the registration. ``Auth.on_revoke`` reports API tokens (revoked, expired, user
removed): their sockets close at once with 1008 "token revoked". ``Auth.on_session_end``
reports panel sessions (logout, password change, user removed, expiry): their sockets
close at once with 1008 "session ended". As a backstop (a session ended by another
process and not yet noticed by ``Auth``), each session socket is also re-checked every
``session_recheck`` seconds.

Origin: a browser ``Origin`` is checked at every handshake with the one Origin rule of
:mod:`pihub.web.access` (``allowed_origins``, or the ``Host`` header's host with its own
port, the HTTP port or the websocket port); anything else, ``null`` included, is refused
with 403. No ``Origin`` (non-browser) is accepted. Browsers do not apply the same-origin
policy to websockets, so this is the socket's CSRF fence (the session cookie travels on
a cross-site handshake); for tokens, which travel in-band, it is a second fence.

Event stream. :meth:`LiveServer.listener` runs on the dispatcher thread for every event.
It takes one lock, gives the event the next sequence number, stores it in a ring slot
(``seq % capacity``) and, if any stream client is attached and no wake-up is pending,
schedules one ``call_soon_threadsafe`` wake-up; a burst of events costs one wake-up.
It never serialises, never touches a client and never blocks, so its cost does not
grow with the number of clients. This is the explicit hand-off: the ring *is* every
client's queue. Each client is a cursor into it, and its pump task on the event-loop
thread sends the entries from its cursor on. An event is serialised to JSON once, by
the first pump that needs it, and the text is cached in its ring entry for every other
client and for replay.

Per-client bound: a client is *behind* by the number of live events (those after it
attached) that it has not been sent. Past ``queue_size`` it is closed with 1013
("client too slow") and detached at once; the others never wait for it. The close frame
sits behind the data the client has not read, so after :data:`CLOSE_GRACE_S` the TCP
connection is aborted: a client that stopped reading is gone at most a few seconds after
its queue filled. The ring keeps ``replay + queue_size`` entries, so a client replaying
the whole ring while new events arrive never finds its next entry overwritten.

Memory bound: the ring also keeps at most ``max_ring_bytes`` (the config's
``http.websocket_replay_bytes``) by estimate, so a flood of big events (MQTT messages,
sysex, posted events) cannot fill the Pi's memory through it. Each entry is charged its
event's :meth:`pihub.events.Event.approx_size` when it is stored, and its JSON text's
length once a pump makes it; past the budget the oldest entries are dropped, except the
newest, which is always kept. A dropped entry is the same as one overwritten by the count
bound: a replay reports it in a ``gap``, and a client whose cursor it was is closed with
1013 ("client too slow").

Replay: ``since`` = n asks for the events with seq > n still among the last ``replay``
events (and still in the ring: see the memory bound), then the live stream, with no gap
and no duplicate (the cursor is placed and the client registered under the ring lock).
When some of those events have left the ring, ``{"type":"gap","from":a,"to":b}`` comes
first: a..b are lost. A ``since`` ahead of the server's last seq comes from an earlier run
(numbering starts at 1 with each server; ``epoch`` in the auth answer tells runs apart)
and is read as 0.

Connection limits, as on the HTTP port and with its defaults (:mod:`pihub.web.server`'s
``MAX_CONNECTIONS``, 256, and ``MAX_CONNECTIONS_PER_ADDRESS``, 64): every open TCP
connection counts, authenticated or still in its handshake or auth deadline. One past a
limit is closed as soon as it is accepted, before a byte is read or a task is made, and
counted in ``stats["connections_refused"]``; the warning about it is rate-limited. A
connection already open is never closed for the limits. Without them a flood of silent
sockets, each held for the handshake and auth deadlines, took every file descriptor of
the process (HTTP's accept too). With TLS the connection is counted once its TLS
handshake is done (asyncio hands it over only then); that handshake is bounded by
:data:`HANDSHAKE_TIMEOUT_S`.

Requests run on a small thread pool of this server's own, so socket clients cannot
starve the hub's hook workers: at most :data:`MAX_IN_FLIGHT` per connection and
:data:`MAX_PENDING` in all; beyond, an error response with the request's id comes back
at once. The reader never waits for an action.

Why asyncio (websockets' asyncio API) in one dedicated thread rather than the threaded
``websockets.sync.server``: the sync server needs a thread per connection, plus a
writer thread per connection so that a stuck client cannot block the fan-out, and its
``send`` has no timeout. One event loop holds every connection in one thread, sends
with flow control, cancels and times out cleanly (slow-client and revocation closes),
and keeps all per-client state single-threaded: only the ring and the sequence number
are shared with the dispatcher, under one lock. Keepalive pings every
:data:`PING_INTERVAL_S` are websockets' own; frames over ``max_frame`` bytes close the
connection with 1009 (websockets' ``max_size``). permessage-deflate is off: it would
compress every event once per client and keep zlib state per connection on a Pi.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import secrets
import ssl
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, unquote_plus, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HTTPRequest
from websockets.http11 import Response as HTTPResponse

from pihub.errors import MessageError
from pihub.events import Event, new_event_id
from pihub.limits import ConnectionSlots
from pihub.messages import Request, Response, dumps, json_kind, loads, parse
from pihub.web import WebHub, access
from pihub.web.access import (
    REFUSED_CREDENTIALS,
    REFUSED_QUERY_TOKEN,
    REFUSED_SESSION,
    SESSION_HEADER,
    TOKEN,
    Access,
    Caller,
    Credential,
    PrincipalLike,
    Refused,
    RequestView,
    origin_allowed,
)
from pihub.web.server import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS

__all__ = ["AuthLike", "LiveServer", "PrincipalLike", "REFUSED_CREDENTIALS", "REFUSED_QUERY_TOKEN",
           "REFUSED_SESSION", "REFUSED_TIMEOUT", "origin_allowed", "plan_replay"]

log = logging.getLogger("pihub.web.live")


class _MaskCredentials(logging.Filter):
    """Masks ``?token=`` values and credential headers in a record's text (with ``***``).

    websockets logs the request line and every header at debug level; with a query token
    the request line holds it.
    """

    _PARAM = re.compile(r"([?&;])([^=&;#\s]*)=([^&;#\s]*)")
    _HEADER = re.compile(r"^([<>] (?:authorization|cookie|set-cookie|x-token|x-session-token): ).*$",
                         re.IGNORECASE | re.MULTILINE)

    @staticmethod
    def _param(m: re.Match[str]) -> str:
        # the name as parse_qs decodes it: %74oken= is a token parameter too
        if unquote_plus(m.group(2)).lower() == "token":
            return f"{m.group(1)}{m.group(2)}=***"
        return m.group(0)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = self._HEADER.sub(r"\1***", self._PARAM.sub(self._param, text))
        if masked != text:
            record.msg, record.args = masked, None
        return True


#: The logger websockets writes its own lines to (handshakes, protocol errors); its
#: filter keeps credentials out of them.
WS_LOGGER = logging.getLogger("pihub.web.live.websockets")
WS_LOGGER.addFilter(_MaskCredentials())

EVENTS_PATH = "/ws/events"
REQUESTS_PATH = "/ws/requests"
#: endpoint -> scope a principal needs to open it.
ENDPOINT_SCOPES: dict[str, str] = {EVENTS_PATH: "read", REQUESTS_PATH: "control"}

#: Seconds a client has, after the handshake, to authenticate.
AUTH_TIMEOUT_S = 5.0
#: Seconds between keepalive pings, and to wait for each pong.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
#: Seconds a close handshake may take before the TCP connection is aborted.
CLOSE_GRACE_S = 2.0

#: Seconds a client has for the HTTP upgrade request at least (websockets' open_timeout).
#: Kept apart from ``auth_timeout``: a short credential deadline must not cut the handshake
#: of a client whose request is merely slow to be read on a loaded Pi.
HANDSHAKE_TIMEOUT_S = 5.0
#: Requests running or waiting per connection, and in all.
MAX_IN_FLIGHT = 10
MAX_PENDING = 64
#: Seconds between re-checks of session-authenticated sockets (a backstop: ends are reported).
SESSION_RECHECK_S = 5.0
#: Threads running socket requests.
REQUEST_WORKERS = 4
#: Ring entries a pump copies out per lock acquisition.
_FETCH = 64
#: Bytes the ring keeps at most by default (estimated; see the module docstring).
MAX_RING_BYTES = 16 << 20
#: Bytes charged per ring entry besides its event and text: the entry list and its seq.
_ENTRY_BYTES = 120

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013

#: Close reason (with 1008) when no credential came in time; the others
#: (``REFUSED_CREDENTIALS``...) are :mod:`pihub.web.access`'s.
REFUSED_TIMEOUT = "INVALID_CREDENTIALS: authentication timed out"


class AuthLike(access.AuthLike, Protocol):
    """What :mod:`pihub.auth`'s ``Auth`` offers this module: the policy's checks, and the
    reports of ended credentials."""

    def on_revoke(self, callback: Callable[[Any], None]) -> None: ...

    def on_session_end(self, callback: Callable[[Any], None]) -> None: ...


def plan_replay(since: int | None, last: int, replay: int,
                kept_from: int = 1) -> tuple[int, tuple[int, int] | None]:
    """Where a new stream client starts, and which events it can no longer get.

    Args:
        since: the last seq the client has, or None for the live stream only.
        last: the last seq assigned (0 before the first event).
        replay: how many of the latest events are kept for replay.
        kept_from: the lowest seq still in the ring (older ones were dropped for its
            byte budget); 1 when none was.

    Returns:
        ``(first seq to send, gap)``; ``gap`` is ``(from, to)``, inclusive, of the events
        after ``since`` that left the ring, or None. A ``since`` above ``last`` is from an
        earlier server run and counts as 0.
    """
    if since is None:
        return last + 1, None
    if since > last:
        since = 0
    oldest = max(last - replay + 1, kept_from)  # kept_from is 1 at least
    start = since + 1
    if start < oldest:
        return oldest, (start, oldest - 1)
    return start, None


@dataclass(eq=False)
class _Client:
    """One authenticated (or authenticating) connection; touched only on the loop thread."""

    ws: ServerConnection
    endpoint: str
    principal: PrincipalLike | None = None
    #: the session token, kept to re-check it (None for API tokens).
    session: str | None = field(default=None, repr=False)
    #: next seq to send (stream clients).
    cursor: int = 0
    #: last seq when it attached: the events after it are live, and count towards the bound.
    attach_seq: int = 0
    attached: bool = False
    closing: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: non-event frames to send before the next events (gap notice, publish_json).
    extra: deque[str] = field(default_factory=deque)
    pump: asyncio.Task[None] | None = None
    in_flight: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class _CountedConnection(ServerConnection):
    """websockets' connection, admitted against :class:`LiveServer`'s connection limits.

    ``connection_made`` is asyncio's first call for an accepted socket: a connection past
    a limit is aborted there, before websockets starts its handshake task. Its place is
    given back in ``connection_lost`` (asyncio calls it once). :meth:`LiveServer._main`
    makes a subclass with ``live`` set.
    """

    live: LiveServer
    _address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = _transport_peer(transport)
        if not self.live._admit(address):
            cast(asyncio.Transport, transport).abort()
            return
        self._address = address
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        address, self._address = self._address, None
        if address is None:
            return  # refused in connection_made: websockets never saw it
        self.live._release(address)
        super().connection_lost(exc)


class LiveServer:
    """The websocket server on its own thread and event loop.

    Args:
        hub_like: the hub (:class:`pihub.web.WebHub`; this server calls ``execute`` and
            ``publish`` and reads ``device_id``).
        auth: the authenticator (``check_token``, ``check_session``, ``on_revoke``,
            ``on_session_end``).
        host: address to bind (the config's ``bind_address``).
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        max_frame: largest frame or message accepted from a client, in bytes; bigger
            closes with 1009.
        replay: how many of the latest events are kept for ``since`` replay (0: none).
        queue_size: live events a client may be behind before it is closed (>= 1).
        allowed_origins: browser origins accepted besides the server's own.
        ssl_context: TLS for ``wss://``, or None.
        http_port: the HTTP server's port, so that the panel's origin is accepted.
        session_cookie: name of the panel's session cookie, read from the handshake; None
            accepts sessions only in the auth message.
        auth_timeout: seconds a client has to authenticate.
        request_workers: threads running socket requests.
        max_in_flight: requests running or queued per connection.
        session_recheck: seconds between re-checks of session sockets.
        allow_query_token: accept an API token as ``?token=`` on the URL (it ends up in
            proxy logs and browser history); off, such a URL is refused.
        max_connections: open TCP connections at most (authenticated or not); more are
            closed as soon as they are accepted.
        max_per_address: open TCP connections at most from one client address.
        max_ring_bytes: bytes the event ring keeps at most, by the events' estimated size
            plus their JSON text (the newest entry is kept whatever its size), >= 1.

    Attributes:
        port: the bound port (the real one after :meth:`start` with port 0).
        epoch: random per server object; sent in the auth answer so that a client can
            tell that sequence numbers restarted.
        stats: counters for ``/metrics``, written on the server thread only:
            ``connections`` (accepted handshakes), ``connections_refused`` (closed at
            accept by ``max_connections`` or ``max_per_address``), ``auth_failures``, ``origin_rejected``,
            ``closed_slow``, ``closed_revoked``, ``closed_session_ended``, ``frames_sent``, ``requests``,
            ``requests_rejected``; and ``ring_evicted_for_bytes`` (entries dropped for
            ``max_ring_bytes``, written under the ring lock on whichever thread dropped them).

    The listener may be registered (and called) before :meth:`start` and after
    :meth:`stop`: events are numbered and kept for replay either way. :meth:`start`
    after :meth:`stop` serves again, with the same numbering.
    """

    def __init__(
        self,
        hub_like: WebHub,
        auth: AuthLike,
        *,
        host: str = "127.0.0.1",
        port: int = 8009,
        max_frame: int = 65536,
        replay: int = 1000,
        queue_size: int = 256,
        allowed_origins: Iterable[str] = (),
        ssl_context: ssl.SSLContext | None = None,
        http_port: int | None = None,
        session_cookie: str | None = None,
        auth_timeout: float = AUTH_TIMEOUT_S,
        request_workers: int = REQUEST_WORKERS,
        max_in_flight: int = MAX_IN_FLIGHT,
        session_recheck: float = SESSION_RECHECK_S,
        allow_query_token: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        max_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        max_ring_bytes: int = MAX_RING_BYTES,
    ) -> None:
        for name, value in (("max_connections", max_connections), ("max_per_address", max_per_address)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        if replay < 0:
            raise ValueError(f"replay must be 0 or more, not {replay}")
        if max_frame < 1:
            raise ValueError(f"max_frame must be at least 1 byte, not {max_frame}")
        if max_ring_bytes < 1:
            raise ValueError(f"max_ring_bytes must be at least 1 byte, not {max_ring_bytes}")
        self.hub = hub_like
        self.auth = auth
        self.host = host
        self.port = port
        self.max_frame = max_frame
        self.max_ring_bytes = max_ring_bytes
        self.replay = replay
        self.queue_size = queue_size
        self.allowed_origins = tuple(allowed_origins)
        self.ssl_context = ssl_context
        self.http_port = http_port
        self.session_cookie = session_cookie
        self.auth_timeout = auth_timeout
        self.max_in_flight = max_in_flight
        self.session_recheck = session_recheck
        self.allow_query_token = allow_query_token
        self.max_connections, self.max_per_address = max_connections, max_per_address
        #: who a handshake is and what it may open (the HTTP app's policy, with this
        #: server's settings); its own ports are completed once the port is bound.
        self.access = Access(auth, allow_query_token=allow_query_token, allowed_origins=self.allowed_origins,
                             own_ports=(port, http_port or 0), session_cookie=session_cookie,
                             accept_passwords=False, registration_hint=False)
        self.device_id = str(getattr(hub_like, "device_id", "") or "")
        #: changes with every server object: a client's ``since`` is only meaningful
        #: within one epoch.
        self.epoch = secrets.token_hex(8)

        # Shared with the dispatcher thread, under _lock: the ring and the counters.
        self._lock = threading.Lock()
        self._cap = replay + queue_size
        # entries [seq, event, JSON text or None, bytes charged]
        self._ring: list[list[Any] | None] = [None] * self._cap
        self._seq = 0
        self._kept_from = 1  # the lowest seq still in the ring (when any is)
        self._ring_bytes = 0
        self._streaming = 0
        self._wake_pending = False

        # Loop-thread state.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._server: Server | None = None
        self._clients: set[_Client] = set()
        self._stream: set[_Client] = set()
        self._conns: set[ServerConnection] = set()
        # open TCP connections, in all and by address (the limits)
        self._slots = ConnectionSlots(max_connections, max_per_address)
        self._bg: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._stop_grace = 5.0
        self._request_workers = request_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.stats: dict[str, int] = {
            "connections": 0, "connections_refused": 0, "auth_failures": 0, "origin_rejected": 0, "closed_slow": 0,
            "closed_revoked": 0, "closed_session_ended": 0, "frames_sent": 0, "requests": 0,
            "requests_rejected": 0, "ring_evicted_for_bytes": 0,
        }
        auth.on_revoke(self.on_revoke)
        auth.on_session_end(self.on_session_end)

    # ------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> None:
        """Start the server thread; return once it listens (``timeout`` in seconds).

        Raises:
            OSError: the address could not be bound (the thread has ended).
            TimeoutError: the server did not listen within ``timeout``.
        """
        if self._thread is not None:
            return
        self._started.clear()
        self._start_error = None
        self._clients.clear()
        self._stream.clear()
        self._conns.clear()
        self._slots = ConnectionSlots(self.max_connections, self.max_per_address)
        self._pending = 0
        with self._lock:
            self._streaming = 0
            self._wake_pending = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._request_workers, thread_name_prefix="pihub-ws-request")
        self._thread = threading.Thread(target=self._run, name="pihub-websocket", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"websocket server did not start within {timeout:g} s")
        # the server thread sets _start_error meanwhile: mypy still sees the None set above
        if self._start_error is not None:
            self._thread.join(timeout)  # type: ignore[unreachable]
            self._thread = None
            self._executor.shutdown(wait=False)
            raise self._start_error

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (1001) and the listening socket; join the thread.

        Args:
            timeout: seconds for all of it; connections still closing then are aborted.
        """
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        self._stop_grace = max(0.1, timeout * 0.8)
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass  # the loop has already ended
        thread.join(timeout)
        if thread.is_alive():
            log.error("websocket server did not stop within %.1f s", timeout)
        self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def client_count(self) -> int:
        """Authenticated connections open now, on both endpoints."""
        return len(self._clients)

    def connection_count(self) -> int:
        """TCP connections open now and counted in the limits, authenticated or not."""
        return self._slots.open

    @property
    def last_seq(self) -> int:
        """The sequence number of the latest event (0 before the first)."""
        return self._seq

    @property
    def ring_bytes(self) -> int:
        """Bytes the ring's entries are charged now (estimated; <= ``max_ring_bytes``
        unless its newest entry alone is bigger)."""
        return self._ring_bytes

    def _run(self) -> None:
        """The server thread: run :meth:`_main` on a new event loop, then tear it down."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:
            if self._started.is_set():
                log.exception("websocket server failed")
            else:
                self._start_error = e
        finally:
            self._loop = None
            self._started.set()
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()

    async def _main(self) -> None:
        """Listen, report it to :meth:`start`, serve until :meth:`stop`, close all."""
        self._stopping = asyncio.Event()
        server = await serve(
            self._handle, self.host, self.port,
            ssl=self.ssl_context,
            process_request=self._check_handshake,
            compression=None,
            server_header="pihub",
            open_timeout=max(self.auth_timeout, HANDSHAKE_TIMEOUT_S),
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            close_timeout=CLOSE_GRACE_S,
            max_size=self.max_frame,
            logger=WS_LOGGER,
            create_connection=type("_LiveConnection", (_CountedConnection,), {"live": self}),
        )
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        self.access.own_ports = (self.port, self.http_port or 0)
        log.info("websocket listening on %s://%s:%d", "wss" if self.ssl_context else "ws",
                 self.host, self.port)
        self._started.set()
        sweeper = asyncio.ensure_future(self._recheck_sessions())
        await self._stopping.wait()
        sweeper.cancel()
        server.close(close_connections=True)
        try:
            async with asyncio.timeout(self._stop_grace):
                await server.wait_closed()
        except TimeoutError:
            for ws in list(self._conns):
                ws.transport.abort()
            await asyncio.sleep(0)

    # ------------------------------------------------------ dispatcher side
    def listener(self, event: Event) -> None:
        """Number and keep one event; wake the stream clients (dispatcher thread).

        O(1) whatever the number of clients: one lock, one ring slot, at most one
        thread-safe wake-up per burst; amortised O(1) evictions for the byte budget (each
        entry is dropped once). Never blocks, never raises.
        """
        try:
            if not event.id:
                # set here, on the thread that owns the event, not lazily by a pump
                event.id = new_event_id()
            size = _ENTRY_BYTES + event.approx_size()
            with self._lock:
                self._seq += 1
                seq = self._seq
                slot = seq % self._cap
                old = self._ring[slot]
                if old is not None:  # the count bound: seq - cap leaves
                    self._ring_bytes -= old[3]
                    self._kept_from = max(self._kept_from, old[0] + 1)
                self._ring[slot] = [seq, event, None, size]
                self._ring_bytes += size
                self._evict_locked()
                wake = self._streaming > 0 and not self._wake_pending
                if wake:
                    self._wake_pending = True
            if wake:
                loop = self._loop
                if loop is not None:
                    loop.call_soon_threadsafe(self._on_wake)
        except Exception:
            log.exception("websocket listener failed on %r", event)

    def _evict_locked(self) -> None:
        """Drop the oldest entries while the ring is over ``max_ring_bytes``, the newest
        excepted (with :attr:`_lock` held)."""
        ring, cap = self._ring, self._cap
        while self._ring_bytes > self.max_ring_bytes and self._kept_from < self._seq:
            low = self._kept_from
            entry = ring[low % cap]
            if entry is not None and entry[0] == low:
                ring[low % cap] = None
                self._ring_bytes -= entry[3]
                self.stats["ring_evicted_for_bytes"] += 1
            self._kept_from = low + 1

    def publish_json(self, obj: Any) -> None:
        """Send a non-event message to every stream client, in order with the events.

        Thread-safe; the message is serialised once. It counts towards each client's
        ``queue_size`` bound. Dropped when the server is not running.
        """
        try:
            text = dumps(obj)
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._broadcast_extra, text)
        except Exception:
            log.exception("websocket publish_json failed")

    def on_revoke(self, token_id: Any) -> None:
        """Close the sockets of a revoked API token with 1008 (any thread).

        Registered with ``auth.on_revoke``; matches ``Principal.token_id`` of token
        sockets only (session ids are numbered apart).
        """
        self._on_loop(self._revoke, token_id)

    def on_session_end(self, session_id: Any) -> None:
        """Close the sockets of an ended panel session with 1008 (any thread).

        Registered with ``auth.on_session_end``; matches ``Principal.session_id`` of
        session sockets only (token ids are numbered apart).
        """
        self._on_loop(self._end_session, session_id)

    def _on_loop(self, fn: Callable[[Any], None], ident: Any) -> None:
        """Run ``fn(ident)`` on the loop thread, if the server runs and ``ident`` is not None."""
        loop = self._loop
        if ident is None or loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, ident)
        except RuntimeError:
            pass  # the loop has just ended: no sockets left

    # ------------------------------------------------------------ loop side
    def _on_wake(self) -> None:
        """New events (loop thread): close clients past the bound, wake the others' pumps."""
        with self._lock:
            self._wake_pending = False
            last = self._seq
            kept_from = self._kept_from
        for c in list(self._stream):
            behind = last - max(c.cursor - 1, c.attach_seq)
            if behind > self.queue_size or c.cursor < kept_from:  # its next event was dropped
                self._too_slow(c, behind)
            else:
                c.wake.set()

    def _broadcast_extra(self, text: str) -> None:
        for c in list(self._stream):
            if len(c.extra) >= self.queue_size:
                self._too_slow(c, len(c.extra))
            else:
                c.extra.append(text)
                c.wake.set()

    def _revoke(self, token_id: Any) -> None:
        for c in list(self._clients):
            p = c.principal
            if p is not None and c.session is None and p.token_id == token_id:
                self.stats["closed_revoked"] += 1
                log.info("closing websocket of %s: token revoked", p.username)
                self._close_soon(c, CLOSE_POLICY, "token revoked")

    def _end_session(self, session_id: Any) -> None:
        for c in list(self._clients):
            p = c.principal
            if p is not None and c.session is not None and p.session_id == session_id:
                self._session_ended(c)

    def _session_ended(self, c: _Client) -> None:
        if c.closing:
            return
        self.stats["closed_session_ended"] += 1
        log.info("closing websocket of %s: session ended", c.principal.username if c.principal else "?")
        self._close_soon(c, CLOSE_POLICY, "session ended")

    async def _recheck_sessions(self) -> None:
        """Every ``session_recheck`` seconds, close the sockets whose session ended unreported."""
        while True:
            await asyncio.sleep(self.session_recheck)
            for c in list(self._clients):
                if c.session is not None and not c.closing and self._check_session(c.session) is None:
                    self._session_ended(c)

    def _too_slow(self, c: _Client, behind: int) -> None:
        self.stats["closed_slow"] += 1
        log.warning("closing websocket of %s: %d events unsent (queue %d)",
                    c.principal.username if c.principal else "?", behind, self.queue_size)
        self._close_soon(c, CLOSE_TRY_AGAIN, "client too slow")

    def _close_soon(self, c: _Client, code: int, reason: str) -> None:
        if c.closing:
            return
        c.closing = True
        self._detach(c)
        if c.pump is not None:
            c.pump.cancel()
        self._spawn(self._close(c.ws, code, reason))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    @staticmethod
    async def _close(ws: ServerConnection, code: int, reason: str) -> None:
        """Close with ``code``; abort the TCP connection after :data:`CLOSE_GRACE_S`."""
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await ws.close(code, reason)
        except TimeoutError:
            # the close frame is stuck behind data the client does not read
            ws.transport.abort()

    def _attach(self, c: _Client, since: int | None, ack: bool) -> None:
        """Place the cursor and register ``c`` for wake-ups, atomically with the ring."""
        with self._lock:
            last = self._seq
            c.cursor, gap = plan_replay(since, last, self.replay, self._kept_from)
            c.attach_seq = last
            c.attached = True
            self._streaming += 1
        self._stream.add(c)
        if ack:
            c.extra.append(self._ack(c, last))
        if gap is not None:
            c.extra.append(dumps({"type": "gap", "from": gap[0], "to": gap[1]}))
        c.pump = asyncio.ensure_future(self._pump(c))
        c.wake.set()

    def _detach(self, c: _Client) -> None:
        if not c.attached:
            return
        c.attached = False
        self._stream.discard(c)
        with self._lock:
            self._streaming -= 1

    def _fetch(self, cursor: int) -> list[list[Any]] | None:
        """Ring entries from ``cursor`` on (at most :data:`_FETCH`); None if overwritten."""
        with self._lock:
            end = min(self._seq, cursor + _FETCH - 1)
            out = []
            for seq in range(cursor, end + 1):
                entry = self._ring[seq % self._cap]
                if entry is None or entry[0] != seq:
                    return None
                out.append(entry)
            return out

    def _text(self, entry: list[Any]) -> str:
        """The frame of a ring entry ``[seq, event, text, bytes]``, serialised on first use
        (and its length charged to the ring's byte budget while the entry is kept)."""
        text: str | None = entry[2]
        if text is None:
            seq, event = entry[0], entry[1]
            try:
                d = event.to_dict(self.device_id)
                d["seq"] = seq
                text = dumps(d)
            except (TypeError, ValueError, RecursionError) as e:
                log.error("event %r cannot be serialised: %s", event, e)
                text = dumps({"type": "event", "seq": seq, "id": event.id,
                              "args": {"type": event.type.wire_name},
                              "error": f"event not serialisable: {type(e).__name__}"})
            entry[2] = text
            with self._lock:
                if self._ring[seq % self._cap] is entry:
                    entry[3] += len(text)
                    self._ring_bytes += len(text)
                    self._evict_locked()
        return text

    async def _pump(self, c: _Client) -> None:
        """Send a stream client its frames, in order, until it closes."""
        ws = c.ws
        try:
            while not c.closing:
                await c.wake.wait()
                c.wake.clear()
                while not c.closing:
                    if c.extra:
                        await ws.send(c.extra.popleft())
                        self.stats["frames_sent"] += 1
                        continue
                    batch = self._fetch(c.cursor)
                    if batch is None:
                        with self._lock:
                            behind = self._seq - c.cursor + 1
                        self._too_slow(c, behind)
                        return
                    if not batch:
                        break
                    for entry in batch:
                        await ws.send(self._text(entry))
                        c.cursor = entry[0] + 1
                        self.stats["frames_sent"] += 1
        except ConnectionClosed:
            pass

    # ---------------------------------------------------------- connections
    def _admit(self, address: str) -> bool:
        """Count a new connection from ``address`` in the limits; False when one is reached
        (the caller closes it; it is counted and logged here)."""
        slots = self._slots
        if slots.take(address):
            return True
        self.stats["connections_refused"] += 1
        ending = slots.refusal_warning()
        if ending is not None:
            log.warning("websocket connection from %s refused: %d open, %d from it (limits: %d in all, "
                        "%d per address)%s", address, slots.open, slots.of(address), self.max_connections,
                        self.max_per_address, ending)
        return False

    def _release(self, address: str) -> None:
        """Give back the place of a closed connection from ``address``."""
        self._slots.give_back(address)

    def _check_handshake(self, conn: ServerConnection, request: HTTPRequest) -> HTTPResponse | None:
        """websockets' ``process_request``: 404 for other paths, 403 for a foreign Origin."""
        path = urlsplit(request.path).path
        if path not in ENDPOINT_SCOPES:
            return conn.respond(HTTPStatus.NOT_FOUND, "no such websocket endpoint\n")
        view = self._view(request, conn)
        if not self.access.origin_ok(view):
            self.stats["origin_rejected"] += 1
            log.warning("websocket from origin %r refused", (view.header("origin") or "")[:200])
            return conn.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        return None

    def _view(self, request: HTTPRequest, conn: ServerConnection) -> RequestView:
        """The handshake as :mod:`pihub.web.access` sees a request (repeated headers joined
        as HTTP combines them: ``, ``, or ``; `` for ``Cookie``)."""
        headers: dict[str, str] = {}
        for name, value in request.headers.raw_items():
            key = name.lower()
            if key in headers:
                headers[key] += ("; " if key == "cookie" else ", ") + value
            else:
                headers[key] = value
        return RequestView("GET", headers, urlsplit(request.path).query, _peer(conn),
                           "https" if self.ssl_context is not None else "http")

    async def _handle(self, ws: ServerConnection) -> None:
        """One connection, from the handshake to its close."""
        assert ws.request is not None  # set once the handshake is done, before the handler runs
        url = urlsplit(ws.request.path)
        c = _Client(ws, url.path)
        self._conns.add(ws)
        self.stats["connections"] += 1
        try:
            ok, since, ack, first = await self._authenticate(c, url.query)
            if not ok:
                return
            # no await between the check in _authenticate and here: see on_revoke
            if c.endpoint == EVENTS_PATH:
                self._attach(c, since, ack)
                await self._read_events(c)
            else:
                if ack:
                    await ws.send(self._ack(c, self._seq))
                if first is not None:  # a Platypush client's first request carried the token
                    await self._on_request(c, first)
                await self._read_requests(c)
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(ws)
            self._clients.discard(c)
            self._detach(c)
            c.closing = True
            for t in [c.pump, *c.tasks]:
                if t is not None:
                    t.cancel()

    async def _authenticate(self, c: _Client, query: str
                            ) -> tuple[bool, int | None, bool, dict[str, Any] | None]:
        """Authenticate ``c`` and register it.

        Returns:
            ``(ok, since, send an acknowledgement, first request)``; not ok means the socket
            is closed. ``first request`` is a request or event envelope that carried the
            token itself (Platypush's clients do, on ``/ws/requests``): it is run once the
            client is registered, and no acknowledgement is sent.
        """
        ws = c.ws
        since = None
        values = parse_qs(query, keep_blank_values=True).get("since")
        if values:
            since = _as_since(values[-1])
        assert ws.request is not None  # set once the handshake is done, before the handler runs
        view = self._view(ws.request, ws)
        found = self._handshake_caller(view)
        ack = False
        first: dict[str, Any] | None = None
        if found is None:
            try:
                async with asyncio.timeout(self.auth_timeout):
                    raw = await ws.recv()
            except TimeoutError:
                return await self._reject(ws, REFUSED_TIMEOUT), None, False, None
            msg = _decode(raw)
            if (c.endpoint == REQUESTS_PATH and isinstance(msg, dict)
                    and msg.get("type") in ("request", "event") and isinstance(msg.get("token"), str)):
                caller, refusal = self._check(Credential(TOKEN, msg["token"]), view)
                first = msg
            else:
                caller, msg_since, refusal = self._message_caller(msg, view)
                if msg_since is not None:
                    since = msg_since
                ack = True
        else:
            caller, refusal = found
        if caller is None:
            return await self._reject(ws, refusal), None, False, None
        try:
            self.access.check_scope(caller, ENDPOINT_SCOPES[c.endpoint])
        except Refused as e:
            return await self._reject(ws, e.reason), None, False, None
        c.principal = caller.principal
        c.session = caller.session_token
        self._clients.add(c)
        return True, since, ack, first

    def _ack(self, c: _Client, seq: int) -> str:
        assert c.principal is not None
        return dumps({"type": "auth", "status": "ok", "user": c.principal.username,
                      "scopes": sorted(c.principal.scopes), "seq": seq, "epoch": self.epoch})

    def _handshake_caller(self, view: RequestView) -> tuple[Caller | None, str] | None:
        """The caller of the handshake's credential (the policy's order).

        Returns:
            None when the handshake carries none (the first message must); else
            ``(caller or None, close reason when refused)``.
        """
        try:
            cred = self.access.credential(view)
        except Refused as e:
            return None, e.reason
        if cred is None:
            return None
        return self._check(cred, view)

    def _message_caller(self, msg: dict[str, Any] | str, view: RequestView
                        ) -> tuple[Caller | None, int | None, str]:
        """``(caller or None, since, close reason when refused)`` from the first message
        (decoded by :func:`_decode`: a dict, or the error text)."""
        if isinstance(msg, str) or msg.get("type") != "auth":
            return None, None, REFUSED_CREDENTIALS
        since = None
        if "since" in msg:
            since = _as_since(msg["since"])
            if since is None:
                return None, None, REFUSED_CREDENTIALS
        token, session = msg.get("token"), msg.get("session")
        if isinstance(token, str) and token:
            cred = Credential(TOKEN, token)
        elif isinstance(session, str) and session:
            cred = Credential(SESSION_HEADER, session)
        else:
            return None, None, REFUSED_CREDENTIALS
        caller, refusal = self._check(cred, view)
        return caller, since, refusal

    def _check(self, cred: Credential, view: RequestView) -> tuple[Caller | None, str]:
        """``(caller, "")``, or ``(None, close reason)`` when the policy refuses ``cred``."""
        try:
            return self.access.authenticate(cred, view), ""
        except Refused as e:
            return None, e.reason
        except Exception:
            log.exception("credential check failed")
            return None, REFUSED_CREDENTIALS

    def _check_session(self, session: str) -> PrincipalLike | None:
        try:
            found = self.auth.check_session(session) if session else None
        except Exception:
            log.exception("session check failed")
            return None
        return found[0] if found else None

    async def _reject(self, ws: ServerConnection, reason: str) -> bool:
        self.stats["auth_failures"] += 1
        log.info("websocket from %s refused: %s", _peer(ws), reason)
        await self._close(ws, CLOSE_POLICY, reason)
        return False

    # -------------------------------------------------------- client input
    async def _read_events(self, c: _Client) -> None:
        """Messages from a stream client: posted events (control scope), else an error frame."""
        async for raw in c.ws:
            msg = _decode(raw)
            if isinstance(msg, str):
                await self._send_error(c, 400, msg)
                continue
            kind = msg.get("type")
            if kind == "event":
                assert c.principal is not None
                if not c.principal.allows("control"):
                    await self._send_error(c, 403, "control scope required to post events")
                    continue
                try:
                    event = parse(msg, default_origin="websocket", wire_size=len(raw))
                except MessageError as e:
                    await self._send_error(c, 400, str(e))
                    continue
                assert isinstance(event, Event)  # parse() returns an Event for type "event"
                if not self.hub.publish(event):
                    await self._send_error(c, 503, "the event bus is full: event dropped")
            elif kind == "auth":
                await self._send_error(c, 400, "already authenticated")
            else:
                await self._send_error(c, 400, f"unexpected message type {kind!r} on {EVENTS_PATH}")

    async def _read_requests(self, c: _Client) -> None:
        """Messages from a request client: each request starts a task; never waits for one."""
        async for raw in c.ws:
            await self._on_request(c, _decode(raw))

    async def _on_request(self, c: _Client, msg: dict[str, Any] | str) -> None:
        """One decoded message of a request client. A ``token`` in it is not looked at: the
        connection was authenticated once, and runs as that caller."""
        if isinstance(msg, str):
            await self._send_response(c, Response(errors=[msg]))
            return
        rid = str(msg.get("id") or "")
        try:
            req = parse(msg, default_origin="websocket")
        except MessageError as e:
            await self._send_response(c, Response(errors=[str(e)], id=rid))
            return
        if isinstance(req, Event):
            ok = self.hub.publish(req)
            await self._send_response(c, Response(
                errors=[] if ok else ["the event bus is full: event dropped"], id=req.id))
            return
        self.stats["requests"] += 1
        if c.in_flight >= self.max_in_flight or self._pending >= MAX_PENDING:
            self.stats["requests_rejected"] += 1
            limit = (f"{self.max_in_flight} on this connection" if c.in_flight >= self.max_in_flight
                     else f"{MAX_PENDING} in all")
            await self._send_response(c, Response(
                errors=[f"too many requests in flight ({limit}): {req.action} not run"], id=req.id))
            return
        c.in_flight += 1
        self._pending += 1
        task = asyncio.ensure_future(self._run_request(c, req))
        c.tasks.add(task)
        task.add_done_callback(c.tasks.discard)

    async def _run_request(self, c: _Client, req: Request) -> None:
        """Run ``req`` on the request pool and send its response."""
        try:
            loop = asyncio.get_running_loop()
            try:
                resp = await loop.run_in_executor(self._executor, self._execute, req)
            except RuntimeError as e:  # the pool was shut down: the server is stopping
                resp = Response(errors=[f"server stopping: {e}"])
            resp.id = req.id
            await self._send_response(c, resp)
        except ConnectionClosed:
            pass
        finally:
            c.in_flight -= 1
            self._pending -= 1

    def _execute(self, req: Request) -> Response:
        try:
            return self.hub.execute(req)
        except Exception as e:
            log.exception("websocket request %s failed", req.action)
            return Response(errors=[f"{type(e).__name__}: {e}"])

    async def _send_response(self, c: _Client, resp: Response) -> None:
        try:
            text = dumps(resp.to_dict())
        except (TypeError, ValueError, RecursionError) as e:
            text = dumps(Response(errors=[f"response not serialisable: {type(e).__name__}"],
                                  id=resp.id).to_dict())
        await c.ws.send(text)
        self.stats["frames_sent"] += 1

    async def _send_error(self, c: _Client, code: int, message: str) -> None:
        err = {400: "bad_request", 403: "forbidden", 503: "unavailable"}.get(code, "error")
        await c.ws.send(dumps({"type": "error", "code": code, "error": err, "message": message}))
        self.stats["frames_sent"] += 1


def _as_since(value: Any) -> int | None:
    """Read a ``since`` value as a seq (int >= 0); None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def _decode(raw: str | bytes) -> dict[str, Any] | str:
    """Decode a client message: a JSON object, or the reason it is not one."""
    try:
        msg = loads(raw)
    except MessageError as e:
        return f"message is {e}"
    if not isinstance(msg, dict):
        return f"message must be a JSON object, not {json_kind(msg)}"
    return msg


def _transport_peer(transport: asyncio.BaseTransport) -> str:
    """The client address of a transport, as the limits count it ("?" when unknown)."""
    peer = transport.get_extra_info("peername")
    try:
        return str(peer[0])
    except (TypeError, IndexError):
        return "?"


def _peer(ws: ServerConnection) -> str:
    try:
        return str(ws.remote_address[0])
    except (TypeError, IndexError, AttributeError):
        return "?"
