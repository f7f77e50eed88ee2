"""The H.264 fan-out of the ``camera.pi`` backend: one encoder, many TCP viewers.

The stream is what ``vlc tcp/h264://pi:2222`` and ``ffmpeg -f h264 -i tcp://pi:2222``
read: a raw H.264 Annex-B elementary stream, no container, no request (a viewer connects
and reads). The encoder's output reaches :meth:`StreamServer.feed` as byte chunks from the
driver's thread; nothing here decodes or re-encodes.

**Joining at a keyframe.** Both drivers put SPS and PPS before every IDR frame (x264's
``repeat-headers=1``, picamera2's ``repeat=True``), so the SPS NAL unit marks where a
decoder can start. :class:`KeyframeScanner` finds the first SPS in each chunk (start codes
may straddle chunks); a new viewer receives nothing until one, then the stream from that
SPS on, so its first frame decodes. The backend asks the encoder for a keyframe when a
viewer joins (picamera2 can; the ffmpeg stand-in cannot and joins at its next GOP).

**Slow viewers.** Sockets are non-blocking. :meth:`StreamServer.feed` sends each chunk to
each live viewer with one ``send``; what the kernel does not take goes into that viewer's
backlog, flushed by the server thread when the socket is writable. A backlog above
``backlog_limit`` bytes drops the viewer ("too slow"): the others never wait for it. The
kernel send buffer of a viewer socket is fixed at :data:`VIEWER_SNDBUF` (so "slow" is
noticed after a bounded amount of data, not the megabytes TCP autotuning would allow).

**Hostile viewers.** The stream is one-way: what a viewer sends is read and discarded, up
to :data:`MAX_VIEWER_INPUT` bytes in all; more drops it ("sent data"). A reset or an end of
stream from the viewer drops it ("reset" / "closed").

**Viewer slots.** At most ``max_viewers`` viewers at once, and at most half of them (at
least 1) from one client address: the TCP backend's rule
(:func:`pihub.limits.per_address_limit`), kept in :class:`pihub.limits.ConnectionSlots`
as for every server pihub runs, so one host cannot take every slot. A connection past
either limit is closed at once, before anything is sent, and counted in ``refused``; the
warning about it is logged at most :data:`~pihub.limits.REFUSED_LOG_BURST` times per
:data:`~pihub.limits.REFUSED_LOG_WINDOW_S` seconds, with the number held back since
the last one.

Threads: one ``pihub-camera-net`` thread (accept, read, flush backlogs) per open server;
``feed`` runs on the caller's thread. Callbacks (``on_join``, ``on_leave``) run outside the
server's lock, on either thread; they must not block for long.
"""

from __future__ import annotations

import collections
import errno
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pihub.limits import ConnectionSlots, per_address_limit

log = logging.getLogger("pihub.backends.camera")

__all__ = ["MAX_VIEWER_INPUT", "VIEWER_SNDBUF", "KeyframeScanner", "StreamServer", "ViewerInfo"]

#: The Annex-B start code a joining viewer's stream begins with.
START_CODE: Final = b"\x00\x00\x00\x01"
#: NAL unit type of a sequence parameter set (H.264 table 7-1).
NAL_SPS: Final = 7
#: Kernel send buffer of each viewer socket, in bytes (fixed: no autotuning).
VIEWER_SNDBUF: Final = 128 * 1024
#: Bytes a viewer may send in all before it is dropped; players send none.
MAX_VIEWER_INPUT: Final = 64 * 1024


class KeyframeScanner:
    """Finds where an SPS NAL unit starts in a chunked Annex-B stream.

    Feed it every chunk in order; it remembers the last bytes of the previous chunk so a
    start code split across two chunks is found once.
    """

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        """The offset in ``chunk`` of the first SPS NAL header byte, or -1.

        The NAL header byte always lies in ``chunk`` (a start code seen at the end of a
        chunk is reported with the next chunk); the start code before it may not, so a
        stream that starts there is ``START_CODE + chunk[offset:]``.
        """
        tail = self._tail
        buf = tail + chunk if tail else chunk
        skip = len(tail)
        found = -1
        i = buf.find(b"\x00\x00\x01")
        while i >= 0:
            header = i + 3
            if header >= len(buf):
                break
            if header >= skip and buf[header] & 0x1F == NAL_SPS:
                found = header - skip
                break
            i = buf.find(b"\x00\x00\x01", i + 1)
        self._tail = buf[-3:]
        return found


@dataclass(frozen=True, slots=True)
class ViewerInfo:
    """One viewer as :meth:`StreamServer.viewers` reports it.

    Attributes:
        client: the peer address, ``host:port``.
        seconds: how long it has been connected, in seconds.
        live: True once it receives the stream (after its first keyframe).
        sent: bytes sent to it.
        backlog: bytes waiting for it, in bytes.
    """

    client: str
    seconds: float
    live: bool
    sent: int
    backlog: int


@dataclass(eq=False)
class _Viewer:
    sock: socket.socket
    client: str
    address: str  # the host part of ``client``: its key in the viewer slots
    since: float
    live: bool = False
    sent: int = 0
    received: int = 0
    queued: int = 0
    backlog: collections.deque[memoryview] = field(default_factory=collections.deque)
    writing: bool = False


class StreamServer:
    """The TCP server of one camera's H.264 stream (see the module docstring).

    Args:
        host: the address to listen on.
        port: the TCP port (0: any free port; :attr:`port` tells which).
        max_viewers: viewers served at once, >= 1; more are refused, as are more than
            :attr:`max_per_address` (half of it, at least 1) from one client address.
        backlog_limit: bytes queued for one viewer before it is dropped as too slow.
        on_join: called with the client address when a viewer is accepted.
        on_leave: called with the client address and the reason when it goes.
        name: the camera's name, for thread names and log lines.
        clock: seconds (monotonic) for the rate limit of the refusal warnings.
    """

    def __init__(self, host: str, port: int, *, max_viewers: int, backlog_limit: int,
                 on_join: Callable[[str], None], on_leave: Callable[[str, str], None],
                 name: str = "camera", clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.requested_port = port
        self.max_viewers = max_viewers
        #: viewers at most from one client address.
        self.max_per_address = per_address_limit(max_viewers)
        self._slots = ConnectionSlots(max_viewers, self.max_per_address, clock)
        self.backlog_limit = backlog_limit
        self._on_join = on_join
        self._on_leave = on_leave
        self.name = name
        self._lock = threading.Lock()
        self._viewers: list[_Viewer] = []
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        #: the port listened on, once open.
        self.port = 0
        #: viewers dropped for being too slow.
        self.dropped_slow = 0

    @property
    def refused(self) -> int:
        """Connections closed at once for ``max_viewers`` or :attr:`max_per_address`."""
        return self._slots.refused

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Bind, listen and start the ``pihub-camera-net`` thread.

        Raises:
            OSError: the address cannot be bound (in use, not an address of this host,
                a privileged port); the message names the address and what to do.
        """
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.requested_port))
            listener.listen(16)
        except OSError as e:
            listener.close()
            hint = {errno.EADDRINUSE: "another program listens there: choose another listen_port or stop it",
                    errno.EACCES: "ports below 1024 need root: choose listen_port 1024 or above",
                    errno.EADDRNOTAVAIL: "no interface of this host has that address: fix bind_address"
                    }.get(e.errno or 0, "check bind_address and listen_port")
            raise OSError(e.errno, f"{self.name} cannot listen on {self.host}:{self.requested_port}: "
                                   f"{e.strerror} ({hint})") from None
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._sel, self._listener = sel, listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pihub-camera-net", daemon=True)
        self._thread.start()

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._thread is not None

    def close(self, reason: str = "stream stopped") -> None:
        """Stop listening, drop every viewer with ``reason``, join the thread; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join(5.0)
        with self._lock:
            gone = [self._drop_locked(v) for v in list(self._viewers)]
            sel, self._sel = self._sel, None
            for s in (self._listener, self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
            self._listener = self._wake_r = self._wake_w = None
        if sel is not None:
            sel.close()
        for client in gone:
            self._leave(client, reason)

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"x")
            except OSError:
                pass

    # ------------------------------------------------------------------ the stream
    def feed(self, chunk: bytes, sps: int) -> None:
        """Send one chunk of the encoder's output to every viewer (any one thread).

        Args:
            chunk: the bytes, in stream order.
            sps: :meth:`KeyframeScanner.feed`'s answer for this chunk: where the first
                SPS NAL header is, or -1; viewers waiting for a keyframe start there.
        """
        gone: list[tuple[str, str]] = []
        with self._lock:
            for v in list(self._viewers):
                if v.live:
                    data = chunk
                elif sps >= 0:
                    v.live = True
                    data = START_CODE + chunk[sps:]
                else:
                    continue
                reason = self._send_locked(v, data)
                if reason:
                    gone.append((self._drop_locked(v, abort=True), reason))
        for client, reason in gone:
            self._leave(client, reason)

    def _send_locked(self, v: _Viewer, data: bytes) -> str | None:
        """Send or queue ``data`` for ``v``; the reason to drop it, or None."""
        if v.backlog:
            v.backlog.append(memoryview(data))
            v.queued += len(data)
        else:
            try:
                n = v.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                return "reset"
            v.sent += n
            if n == len(data):
                return None
            v.backlog.append(memoryview(data)[n:])
            v.queued += len(data) - n
        if v.queued > self.backlog_limit:
            self.dropped_slow += 1
            return "too slow"
        if not v.writing and self._sel is not None:
            v.writing = True
            self._sel.modify(v.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, v)
        return None

    def _flush_locked(self, v: _Viewer) -> str | None:
        """Send what ``v``'s backlog holds, as far as the socket takes it."""
        while v.backlog:
            head = v.backlog[0]
            try:
                n = v.sock.send(head)
            except BlockingIOError:
                return None
            except OSError:
                return "reset"
            v.sent += n
            v.queued -= n
            if n < len(head):
                v.backlog[0] = head[n:]
                return None
            v.backlog.popleft()
        if v.writing and self._sel is not None:
            v.writing = False
            self._sel.modify(v.sock, selectors.EVENT_READ, v)
        return None

    def _drop_locked(self, v: _Viewer, abort: bool = False) -> str:
        """Forget ``v`` and close its socket (with a reset when ``abort``); its client address."""
        if v in self._viewers:
            self._viewers.remove(v)
            self._slots.give_back(v.address)
        if self._sel is not None:
            try:
                self._sel.unregister(v.sock)
            except (KeyError, ValueError):
                pass
        if abort:
            try:
                # a reset, not a FIN queued behind data the viewer will never read
                v.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        v.sock.close()
        v.backlog.clear()
        return v.client

    def _leave(self, client: str, reason: str) -> None:
        try:
            self._on_leave(client, reason)
        except Exception:
            log.exception("%s: viewer leave callback failed", self.name)

    def viewers(self) -> list[ViewerInfo]:
        """The viewers connected now."""
        now = time.monotonic()
        with self._lock:
            return [ViewerInfo(v.client, round(now - v.since, 3), v.live, v.sent, v.queued) for v in self._viewers]

    def viewer_count(self) -> int:
        """How many viewers are connected now."""
        with self._lock:
            return len(self._viewers)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        while not self._stopping.is_set():
            try:
                ready = sel.select(1.0)
            except (OSError, ValueError):  # closed under us
                return
            for key, mask in ready:
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    try:
                        key.fileobj.recv(4096)  # type: ignore[union-attr]  # the socketpair end
                    except OSError:
                        pass
                else:
                    self._service(key.data, mask)

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: log, let the next turn retry
                log.warning("%s: accept failed: %s", self.name, e)
                return
            address = str(addr[0])
            client = f"{address}:{addr[1]}"
            if not self._slots.take(address):
                self._refuse(sock, address)
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIEWER_SNDBUF)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            with self._lock:
                v = _Viewer(sock, client, address, time.monotonic())
                self._viewers.append(v)
                if self._sel is not None:
                    self._sel.register(sock, selectors.EVENT_READ, v)
            try:
                self._on_join(client)
            except Exception:
                log.exception("%s: viewer join callback failed", self.name)

    def _refuse(self, sock: socket.socket, address: str) -> None:
        """Close a connection :meth:`_accept` could not admit (counted by the slots), before
        any data; say why at most as often as :attr:`_refused_log` allows."""
        slots = self._slots
        ending = slots.refusal_warning()
        if ending is not None:
            log.warning("%s: viewer from %s refused: %d watching, %d from it (limits: %d in all (max_viewers), "
                        "%d per address)%s", self.name, address, slots.open, slots.of(address), slots.total,
                        slots.per_address, ending)
        sock.close()

    def _service(self, v: _Viewer, mask: int) -> None:
        reason: str | None = None
        if mask & selectors.EVENT_READ:
            try:
                data = v.sock.recv(4096)
            except BlockingIOError:
                data = None
            except OSError:
                reason = "reset"
                data = None
            if data is not None and reason is None:
                if not data:
                    reason = "closed"
                else:
                    v.received += len(data)
                    if v.received > MAX_VIEWER_INPUT:
                        reason = "sent data"
        with self._lock:
            if v not in self._viewers:
                return
            if reason is None and mask & selectors.EVENT_WRITE:
                reason = self._flush_locked(v)
            if reason is None:
                return
            client = self._drop_locked(v, abort=reason != "closed")
        self._leave(client, reason)
