"""Requests over plain TCP (``tcp:``; Platypush's ``backend.tcp``).

A client connects, sends request envelopes (the ``POST /execute`` JSON, with its API
token in the envelope's ``token`` key) and reads one response per message::

    echo '{"type":"request","action":"variable.get","args":{"name":"x"},"token":"ph_..."}' \\
        | nc -q1 127.0.0.1 3333

Framing: one JSON message per line (``\\n``), any number per connection, answered in
order with one line each (the response envelope; ``{}`` for an event that was
published, as ``POST /execute`` answers). Platypush's clients send one message and close
their side without a newline: whatever is left when the client half-closes is read as
the last message, answered, and the connection closed. Parsing, tokens, scopes and the
``target`` check are :mod:`pihub.ingress`'s, as for every raw channel.

Bounds, each with its reason sent back before the connection closes: at most
``max_connections`` clients at once (one thread each: a request runs on its connection's
thread, like an HTTP worker), and at most half of them (:func:`per_address_limit`, at
least 1) from one client address, so one host cannot take every slot; a message is at
most ``max_message_bytes`` and must arrive within ``message_timeout`` seconds of its
first byte (a trickling client cannot hold a slot for ever); a connection with no
message for ``idle_timeout`` seconds is closed without a word. A blank line is not a
message: it is skipped, and does not restart ``idle_timeout`` (else ``\n`` now and then
would hold a slot for ever). Until the gate has accepted a token of one of its messages
(a valid one with the ``control`` scope: the gate says so through ``on_accepted``), a
connection is also held to ``message_timeout`` from the moment it connected: past it,
it is closed with ``INVALID_CREDENTIALS: no valid token within ...`` (Platypush's
clients send their message at once; the websocket server's ``auth_timeout`` is the same
rule). So a client without a token holds a slot at most ``message_timeout`` seconds
(10 by default, as HTTP's silent connections). Those deadlines are socket deadlines, in
real seconds (the kernel's timeouts), not rules on :attr:`clock`.

A connection past a limit is refused as soon as it is accepted (its reason is sent, then
it is closed), counted in the status's ``connections_refused``, and logged as a warning at
most :data:`REFUSED_LOG_BURST` times per :data:`REFUSED_LOG_WINDOW_S` seconds (with the
number held back since the last one), as the websocket server does.

Bound to the loopback unless ``bind_address`` says otherwise: TCP carries the
token in clear, so beyond one host use HTTPS or MQTT over TLS.

Differences from Platypush, on purpose: nothing runs without a valid token (the peer's
TCP backend runs whatever arrives, and its docs warn about it); a request for another
device is answered with an error instead of being dropped; bad JSON gets an error
response instead of a closed socket.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Any, ClassVar

from pihub.backends.base import BackendStatus, BackendThread, Emit, RequestChannel
from pihub.config.schema import Field, Schema
from pihub.limits import ConnectionSlots, per_address_limit
from pihub.messages import Response, dumps

CONFIG_SCHEMA = Schema({
    "bind_address": Field(str, "127.0.0.1", doc="address to listen on (0.0.0.0: every interface)"),
    "port": Field(int, 3333, min=0, max=65535, doc="TCP port (0: any free port, shown in the status)"),
    "listen_queue": Field(int, 5, min=1, max=1024, doc="connections waiting to be accepted (listen backlog)"),
    "max_connections": Field(int, 16, min=1, max=1024, doc="clients connected at once; more are refused"),
    "max_message_bytes": Field(int, 65536, min=256, max=16 * 1024 * 1024,
                               doc="largest message (one line), in bytes"),
    "message_timeout": Field(float, 10.0, min=0.1, max=3600.0,
                             doc="seconds a message may take to arrive once its first byte did"),
    "idle_timeout": Field(float, 300.0, min=0.1, max=86400.0,
                          doc="seconds a connection may stay without sending a message"),
}, doc="Requests over TCP: one JSON envelope per line, answered line by line.")


class _ConnectionClosed(Exception):
    """The client went away, or broke a bound (the reason was sent when possible)."""


class TcpBackend(RequestChannel):
    """Listens on ``bind_address:port``; one thread per connection (module docstring)."""

    name: ClassVar[str] = "tcp"
    config_schema: ClassVar[Schema] = CONFIG_SCHEMA

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._acceptor: BackendThread | None = None
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        limit = self.config["max_connections"]
        self._slots = ConnectionSlots(limit, per_address_limit(limit))  # refused: at accept, since open
        self.address: tuple[str, int] | None = None
        self._emit: Emit | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self, emit: Emit) -> None:
        """Listen; raises OSError (naming the address) when the port cannot be had."""
        host, port = self.config["bind_address"], self.config["port"]
        try:
            listener = socket.create_server((host, port), backlog=self.config["listen_queue"], reuse_port=False)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        listener.setblocking(False)
        self._emit = emit
        self._listener = listener
        self.address = listener.getsockname()[:2]
        self._acceptor = BackendThread("pihub-tcp-accept", self._accept_loop)
        self.status, self.error = BackendStatus.RUNNING, None
        self._acceptor.start()
        self.log.info("requests over TCP on %s:%d (one JSON message per line)", *self.address)

    def close(self) -> None:
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._acceptor is not None:
            self._acceptor.stop()
            self._acceptor = None
        with self._lock:
            conns = list(self._connections.items())
        for conn, _ in conns:  # wakes their blocked recv: they see EOF and end
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in conns:
            thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._wake_r.close()
        self._wake_w.close()
        self.status = BackendStatus.STOPPED

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus while listening ``address`` (``host:port``),
        ``connections`` (clients connected now) and ``connections_refused`` (refused at
        accept for ``max_connections`` or the per-address limit, since the backend opened)."""
        status = super().describe_status()
        if self._listener is not None and self.address is not None:
            status["address"] = f"{self.address[0]}:{self.address[1]}"
            with self._lock:
                status["connections"] = len(self._connections)
                status["connections_refused"] = self._slots.refused
        return status

    # ------------------------------------------------------------------ accepting
    def _accept_loop(self, stopping: threading.Event) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not (stopping.is_set() or self._stopping.is_set()):
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._accept_one()

    def _accept_one(self) -> None:
        assert self._listener is not None
        try:
            conn, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # EMFILE...: keep listening, say why
            self.log.warning("accept failed: %s", e)
            return
        conn.setblocking(True)
        address, peer = str(addr[0]), f"{addr[0]}:{addr[1]}"
        slots = self._slots
        limit, per_limit = slots.total, slots.per_address
        if slots.take(address):
            thread = threading.Thread(target=self._serve, args=(conn, peer, address),
                                      name=f"pihub-tcp-{peer}", daemon=True)
            with self._lock:
                self._connections[conn] = thread
            thread.start()
            return
        open_now, from_it = slots.open, slots.of(address)
        ending = self._slots.refusal_warning()
        if ending is not None:
            self.log.warning("tcp connection from %s refused: %d open, %d from it (limits: %d in all, "
                             "%d per address)%s", address, open_now, from_it, limit, per_limit, ending)
        if open_now >= limit:
            why = f"too many connections (max_connections: {limit}); try again later"
        else:
            why = (f"too many connections from {address} ({per_limit} per address: half of "
                   f"max_connections); try again later")
        self._refuse(conn, why)

    def _refuse(self, conn: socket.socket, why: str) -> None:
        try:
            conn.settimeout(1.0)
            conn.sendall(self._line(Response(errors=[why], target=self.name).to_dict()))
        except OSError:
            pass
        finally:
            conn.close()

    # ------------------------------------------------------------------ one connection
    def _serve(self, conn: socket.socket, peer: str, address: str) -> None:
        buf = bytearray()
        idle_timeout = self.config["idle_timeout"]
        connected = time.monotonic()
        idle_deadline = connected + idle_timeout
        auth_deadline = connected + self.config["message_timeout"]  # until the gate accepts a token
        accepted: list[bool] = []  # the gate took a token of this connection (on_accepted)
        try:
            while not self._stopping.is_set():
                message, last = self._read_message(conn, buf, idle_deadline, None if accepted else auth_deadline)
                if message is None:
                    return
                if message.strip():  # a blank line is skipped, and is no activity
                    assert self._emit is not None
                    reply = self.handle_request(bytes(message), emit=self._emit, peer=peer,
                                                on_accepted=lambda: accepted.append(True))
                    conn.sendall(self._line({} if reply is None else reply))
                    idle_deadline = time.monotonic() + idle_timeout
                if last:
                    return
        except _ConnectionClosed:
            pass
        except OSError as e:
            self.log.debug("tcp client %s: %s", peer, e)
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            self._slots.give_back(address)
            conn.close()

    def _read_message(self, conn: socket.socket, buf: bytearray, idle_deadline: float,
                      auth_deadline: float | None) -> tuple[bytearray | None, bool]:
        """The next line (without ``\\n``) and whether the client half-closed after it;
        ``(None, True)`` at a clean end of input.

        ``idle_deadline`` (when no message has begun) and ``auth_deadline`` (None once the
        connection is authenticated) are :func:`time.monotonic` instants; past one, the
        connection is closed (:class:`_ConnectionClosed`).
        """
        limit = self.config["max_message_bytes"]
        message_timeout = self.config["message_timeout"]
        started: float | None = time.monotonic() if buf else None
        while True:
            nl = buf.find(b"\n")
            if nl >= 0:
                line = buf[:nl]
                del buf[:nl + 1]
                return line, False
            if len(buf) > limit:
                self._fail(conn, f"message over the {limit}-byte limit (max_message_bytes); closing")
            now = time.monotonic()
            if auth_deadline is not None and now >= auth_deadline:
                self._fail(conn, f"INVALID_CREDENTIALS: no valid token within {message_timeout} s of "
                                 "connecting (message_timeout); closing")
            if started is None:
                if now >= idle_deadline:
                    raise _ConnectionClosed  # idle: close without a word
                deadline = idle_deadline
            else:
                deadline = started + message_timeout
                if now >= deadline:
                    self._fail(conn, f"message not complete within {message_timeout} s "
                                     "(message_timeout); closing")
            if auth_deadline is not None:
                deadline = min(deadline, auth_deadline)
            conn.settimeout(deadline - now)
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue  # the deadlines are checked above
            if not chunk:  # half-closed: what is left is the last message
                if buf:
                    line = bytearray(buf)
                    buf.clear()
                    return line, True
                return None, True
            if started is None:
                started = now
            buf += chunk

    def _fail(self, conn: socket.socket, why: str) -> None:
        try:
            conn.settimeout(1.0)
            conn.sendall(self._line(Response(errors=[why], target=self.name).to_dict()))
        except OSError:
            pass
        raise _ConnectionClosed

    @staticmethod
    def _line(obj: dict[str, Any]) -> bytes:
        return dumps(obj).encode("utf-8") + b"\n"
