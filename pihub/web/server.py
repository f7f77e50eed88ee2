"""The WSGI server that serves :func:`pihub.web.app.make_app`: cheroot, in one named thread.

Why cheroot (measured, see below): it is a real threaded server with HTTP/1.1
keep-alive, a selector-based connection manager (extended here so that no connection
holds a worker until its request has fully arrived, see *Slow and silent clients*), and
built-in TLS through the standard :mod:`ssl` module, including
client certificates. waitress has no TLS at all (HTTPS would need a reverse proxy on a Pi
that should need nothing else), and was no faster for one client and much less steady
under 16. wsgiref is single-threaded and HTTP/1.0, hence not considered.

Measured on the development VM (2 vCPU x86-64 shared with wrk, Python 3.11, bottle 0.13,
the real :func:`~pihub.web.app.make_app` over a real hub on the mock backend, 8 server
threads, loopback): ``wrk -t2 -c16 -d5s`` for throughput, and 2,000 sequential requests
on one keep-alive ``http.client`` connection for single-client latency. Medians of three
interleaved rounds; ``/execute`` runs ``variable.get`` with an API token (Bearer).

=================================================  ===============  ===============
                                                   cheroot 11.1     waitress 3.0
=================================================  ===============  ===============
``GET /livez``, 16 keep-alive clients (req/s)      3,920            1,280 (970-4,130)
``POST /execute``, 16 keep-alive clients (req/s)   2,700            137 (p50 123 ms)
``GET /livez``, one client, p50 / p99 (ms)         0.34 / 0.59      0.32 / 0.44
``POST /execute``, one client, p50 / p99 (ms)      0.51 / 1.09      0.52 / 1.07
=================================================  ===============  ===============

(waitress's concurrent POST figure swung between 120 and 2,500 req/s across sessions on
this VM; cheroot's stayed within 2,450-3,800. The peer's ``/execute``: 130-220 req/s with
16 clients, 45 ms median with a user token.)

**Slow and silent clients** (issue 8). cheroot 11 keeps only *kept-alive* connections in
its selector: a new connection goes straight to a worker, which blocks up to 10 s for the
request line, and each byte restarts that wait. Sixteen silent sockets (or 8 sending a
header line every 5 s) took all 8 workers, and ``/livez`` went unanswered for as long as
they stayed open. Its ``accepted_queue_timeout`` only bounds the queue *to* the workers,
and ``timeout`` is per read, so no setting fixes it. Options weighed: a shorter timeout
(still one worker per attacker socket), per-address caps alone (a distributed attacker
needs 8 sockets), waitress (reads the whole request in its event loop before a worker
takes it, but has no TLS), uvicorn/hypercorn behind a WSGI adapter (an asyncio loop plus
a thread pool: new dependencies, slower per request, and no deadline for a request that
trickles in). Chosen: cheroot, with :class:`_ConnectionManager` in place of its own. It
receives each whole request (head, and a body up to ``max_body``) without blocking in
cheroot's selector thread, TLS handshake included, and only then queues it for a worker.
Waiting for a request costs a file descriptor, never a thread (a client slow to *read*
its responses is bounded by the two write-side limits below). Measured with
``bench/bench_http.py`` (``http.attack``: a real ``pihub run``, 3 rounds of 1,000
sequential ``/execute``, alternating; 64 silent sockets and 8 sending a header line every 0.5 s, open during the
round): p50 0.51 ms without and 0.51 ms with the attack, p99 1.0-3.4 ms both ways (a
shared, busy VM), RSS 38.3 vs 38.5 MiB; cheroot's own manager: no answer at all.

Limits set here: listen backlog 64; at most 256 open connections, 64 from one address
(more are closed at accept); a connection silent for 10 s is closed; a request must
arrive whole within 10 s of its first byte (else 408 and close); 128 kept-alive
connections (counting those waiting for a request); request headers at most 32 KiB; two
different ``Content-Length`` headers are a 400 at once. Request *bodies* are limited by
the app (``http.max_body``), which answers 413 in JSON.

The write side has two bounds (a slow *reader* attack: 12 sockets from one address, each
pipelining 300 requests for ``/openapi.json`` and reading nothing, held all 8 workers in
``send`` and delayed ``/livez`` by up to 16.6 s). **Workers per address**: at most
``max(1, threads // 2)`` requests from one client address are with workers at a time; a
further complete request from it is *parked* (in arrival order, costing no thread) and
handed to a worker when one of that address's workers is done with its connection. A
parked request waits at most :data:`PARKED_TIMEOUT` s (then a 503 and close); a parked
client that closes or resets is closed within half a second (the selector's expiry pass).
So one address, however it behaves, leaves the other half of the workers to everyone
else; its own further requests (a phone sharing a NAT address with the attacker) wait
behind its earlier ones. **Write deadline**: a worker waits at most :data:`WRITE_TIMEOUT`
s for the client to take one response: the head and the first body chunk the app hands
over share the deadline (for most routes that is the whole response), and each further
chunk (a file sent in 64 KiB pieces, a frame of the MJPEG stream) gets its own, so a
stream or a large download over a slow link still works while a client that reads a byte
now and then is closed (logged at debug) and its worker freed. The socket's own timeout
(10 s per ``send``) still applies within that.

A chunked body is read and de-chunked here, in the selector thread, never by a worker:
cheroot's own chunked reader reads a chunk-size line with no length limit and a whole
chunk at once, from the socket, with no deadline (an endless size line held a worker and
grew memory by ~5 MB/s per socket). The worker gets the de-chunked body (at most
``max_body + 1`` bytes: one more lets the app see it is too large, and the connection
then closes). A body framed by ``Content-Length`` (at most ``max_body``) is received
here too, and the worker reads both kinds from memory, never from the socket. Refused at
once with a JSON 400 and closed, before any worker: a ``Content-Length`` that is not 1 to
18 digits, a chunk-size line longer than :data:`MAX_CHUNK_LINE` bytes, a chunk size that
is not hexadecimal (16 digits at most), a chunk not followed by CRLF, more than
:data:`MAX_CHUNK_FRAMING` bytes of chunk framing, and any framing cheroot could read
otherwise than the arrival (RFC 9112, 6.1 and 5.2): ``Transfer-Encoding`` with
``Content-Length`` (an HTTP/1.0 request with both, ``0`` CRLF CRLF as its chunked body,
went to a worker that cheroot then had read the ``Content-Length`` bytes from the socket,
no login needed: two such sockets kept ``/livez`` unanswered for 70 s with 2 workers),
``Transfer-Encoding`` in a request that is not HTTP/1.1, any coding but a single
``chunked``, and a folded header line. The worker checks that cheroot framed the request
as the arrival did, and refuses it (400) if not. When ``accept`` fails for want of file
descriptors, accepting pauses for a growing interval and the error is logged at most once
every 10 s, with a count of the failures held back.

TLS: TLS 1.2 or newer (:func:`make_ssl_context`); client certificates are required when
``ssl_cafile`` or ``ssl_capath`` (a hash-named CA directory) is set. The handshake runs on
the worker thread of the connection, not on cheroot's accept loop
(:class:`_DeferredHandshakeAdapter`): with cheroot's own adapter, one client that connects
and sends nothing stalls every new client for 10 s.
"""

from __future__ import annotations

import collections
import errno
import io
import logging
import os
import re
import select
import selectors
import socket
import ssl
import threading
import time
from typing import Any

from cheroot import connections, wsgi
from cheroot import server as cheroot_server
from cheroot.makefile import MakeFile, StreamWriter
from cheroot.ssl.builtin import BuiltinSSLAdapter

from pihub.limits import MAX_LENGTH_DIGITS, ConnectionSlots, content_length
from pihub.logs import LogLimiter
from pihub.web.context import HSTS_HEADER, SECURITY_HEADERS, error_bytes

log = logging.getLogger("pihub.web.server")

__all__ = ["WebServer", "make_ssl_context"]

#: Pending connections the kernel queues before accept().
LISTEN_BACKLOG = 64
#: Idle keep-alive connections kept open at most (each is one file descriptor).
KEEPALIVE_LIMIT = 128
#: Seconds a connection may stay silent mid-request, or idle between requests.
SOCKET_TIMEOUT = 10
#: Largest request line plus headers, in bytes.
MAX_HEADER_BYTES = 32 * 1024
#: Seconds a request may take to arrive once its first byte has (head and buffered body).
REQUEST_TIMEOUT = 10
#: Open connections at most, served or waiting; more are closed at once.
MAX_CONNECTIONS = 256
#: Open connections at most from one client address; more from it are closed at once.
MAX_CONNECTIONS_PER_ADDRESS = 64
#: Body bytes buffered before a worker is taken, when the app does not say its ``max_body``.
DEFAULT_BODY_BUFFER = 64 * 1024
#: Longest chunk-size line of a chunked body (hex size and extensions), in bytes.
MAX_CHUNK_LINE = 4 * 1024
#: Bytes of chunked framing (size lines, extensions, CRLFs, trailers) past ``max_body``.
MAX_CHUNK_FRAMING = 64 * 1024
#: Seconds a worker waits for the client to take one response (see the module docstring).
WRITE_TIMEOUT = 30
#: Seconds a complete request may stay parked behind its address's busy workers.
PARKED_TIMEOUT = 30
#: Seconds of the first and of the longest pause after ``accept`` failed for lack of fds.
ACCEPT_PAUSE_FIRST, ACCEPT_PAUSE_MAX = 0.01, 0.5
#: Seconds between two logged ``accept`` failures (those in between are counted).
ACCEPT_LOG_WINDOW = 10.0


def make_ssl_context(cert: str, key: str, cafile: str | None = None,
                     capath: str | None = None) -> ssl.SSLContext:
    """A server TLS context: TLS 1.2 or newer, the certificate and key, optional client certs.

    Args:
        cert: PEM certificate (chain) file.
        key: PEM private key file (unencrypted).
        cafile: PEM CA bundle; when given, clients MUST present a certificate it signed.
        capath: directory of PEM CA certificates named by subject hash (``openssl rehash``);
            when given, as ``cafile`` (both may be given).

    Returns:
        The context.

    Raises:
        OSError: a file cannot be read, or ``capath`` is not a directory.
        ValueError: ``capath`` holds no hash-named certificate, so no client could verify.
        ssl.SSLError: a file is not valid PEM, or the key does not match the certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if capath:
        _check_capath(capath)
    if cafile or capath:
        # OpenSSL reads a capath lazily, per handshake, which is why it was checked above
        ctx.load_verify_locations(cafile=cafile or None, capath=capath or None)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


_HASH_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def _check_capath(capath: str) -> None:
    """Raise unless ``capath`` is a directory with at least one ``<hash>.<n>`` certificate name."""
    try:
        names = os.listdir(capath)
    except OSError as e:
        raise type(e)(e.errno, f"http.ssl_capath {capath!r}: {(e.strerror or str(e)).lower()}") from e
    if not any(_HASH_NAME.fullmatch(n) for n in names):
        raise ValueError(f"http.ssl_capath {capath!r} holds no certificate named by its subject hash "
                         f"(like 1a2b3c4d.0), so no client certificate could be verified; run "
                         f"'openssl rehash {capath}', or give a PEM bundle as ssl_cafile instead")


class _Headers(dict[bytes, bytes]):
    """Request headers as cheroot collects them, refusing two different ``Content-Length``.

    cheroot keeps the last of repeated ``Content-Length`` headers, so ``2`` then ``100``
    with a 2-byte body made the worker wait for 98 bytes that never come. Repeats of one
    value are accepted as one (RFC 9110, 8.6).
    """

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if key == b"Content-Length" and key in self and self[key] != value:
            raise ValueError("conflicting Content-Length headers")
        super().__setitem__(key, value)


class _HeaderReader(cheroot_server.HeaderReader):
    """cheroot's header reader over :class:`_Headers` (its ValueError becomes a 400)."""

    def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        """Read the header lines of one request from ``rfile`` into ``hdict``."""
        headers = super().__call__(rfile, _Headers())
        if hdict is None:
            return dict(headers)
        hdict.update(headers)
        return hdict


class _Request(cheroot_server.HTTPRequest):
    """cheroot's request, with :class:`_HeaderReader`, reading a chunked body from memory."""

    header_reader = _HeaderReader()
    conn: _Connection
    #: A body chunk was written: each further one gets its own write deadline.
    _wrote_chunk = False

    def write(self, chunk: bytes) -> None:
        """Write one body chunk the app handed over (cheroot's), under the write deadline.

        The head and the first chunk share the response's deadline; each further chunk
        restarts it (:class:`_ResponseIO`).
        """
        if self._wrote_chunk:
            self.conn.response_io.deadline = None
        self._wrote_chunk = True
        super().write(chunk)

    def respond(self) -> None:
        """cheroot's ``respond``, with the body :class:`_Arrival` received as ``wsgi.input``.

        cheroot would read the body from the socket: chunks unbounded and without a
        deadline, ``Content-Length`` bytes with only the per-read timeout. Here the
        worker reads from memory the body the arrival received, after checking that
        cheroot frames the request as the arrival did (chunked, or that many bytes); a
        disagreement (a bug: the arrival refuses what could cause one) is a 400 and
        close, the socket unread. Only a request whose body the arrival did not take in
        (a ``Content-Length`` past ``body_limit``: the app answers 413 from the head) is
        left to cheroot, unless cheroot sees it chunked.
        """
        conn = self.conn
        body, chunked, cut = conn.arrived_body, conn.arrived_chunked, conn.body_cut
        conn.arrived_body = None
        if body is None and not self.chunked_read:
            super().respond()
            return
        length = None if self.chunked_read else int(self.inheaders.get(b"Content-Length", 0))
        if body is None or chunked != self.chunked_read or (not chunked and length != len(body)):
            log.error("request from %s: cheroot frames its body as %s, the arrival as %s; refused",
                      _peer(conn.socket), "chunked" if length is None else f"{length} bytes",
                      "not received" if body is None else "chunked" if chunked else f"{len(body)} bytes")
            self.close_connection = self.sent_headers = True
            conn.wfile.write(_error_response(400, "the request's body framing is ambiguous (Transfer-"
                                                  "Encoding or Content-Length); send one, and in "
                                                  "HTTP/1.1 for chunked", conn.socket))
            return
        # the stream past a cut body is not a request: close after answering
        self.close_connection = self.close_connection or cut
        self.rfile = io.BytesIO(body)
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")


class _Arrival:
    """The bytes of one request as they arrive, and whether the whole request is there.

    Complete means: the head (request line and headers, up to the blank line) and the
    body, when its size is known and at most ``body_limit`` bytes: ``Content-Length``
    bytes, or a chunked body up to its last chunk and trailers. A request with a larger
    ``Content-Length``, two different ones, or whose head is malformed or passes
    :data:`MAX_HEADER_BYTES` also counts as complete: the worker refuses it from the head
    alone, without reading a body. A chunked body is de-chunked into :attr:`body` as it
    arrives; past ``body_limit`` bytes it is complete with ``body_limit + 1`` of them
    (:attr:`body_end` then -1). Bad framing sets :attr:`refusal` (the request is complete
    and must be refused here). Scanning is incremental, so a client sending one byte at a
    time costs O(size).
    """

    def __init__(self, body_limit: int) -> None:
        self.buf = bytearray()
        self.body_limit = body_limit
        #: :func:`time.monotonic` of the first byte, None before it.
        self.started: float | None = None
        #: The client sent ``Expect: 100-continue`` and its body is still missing.
        self.expects_continue = False
        self.complete = False
        #: ``(status, message)`` to answer at once and close, for bad framing; else None.
        self.refusal: tuple[int, str] | None = None
        #: The de-chunked body of a chunked request (None for any other).
        self.body: bytearray | None = None
        #: Offset in :attr:`buf` where the head ends.
        self.body_start = -1
        #: Offset in :attr:`buf` where a chunked message ends; -1 while unknown or when cut.
        self.body_end = -1
        #: Body bytes to receive after the head when it is framed by ``Content-Length`` (0
        #: with neither that nor Transfer-Encoding) and taken in here; -1 otherwise, or
        #: while the head is incomplete.
        self.length = -1
        self._searched = 0
        self._need = -1
        self._chunk_at = -1

    def add(self, data: bytes) -> bool:
        """Append received bytes; whether the request is now complete."""
        if self.started is None:
            self.started = time.monotonic()
        self.buf += data
        if not self.complete:
            self.complete = self._check()
        return self.complete

    def _refuse(self, status: int, message: str) -> bool:
        self.refusal = (status, message)
        return True

    def _check(self) -> bool:
        buf = self.buf
        if self.body_start < 0:
            # cheroot skips one empty line before a request line, as RFC 9112 allows
            start = 2 if buf.startswith(b"\r\n") else 0
            first_lf = buf.find(b"\n", start)
            if first_lf > start and buf[first_lf - 1] != 0x0D:
                return True  # a bare-LF line: cheroot refuses it at once
            end = buf.find(b"\r\n\r\n", max(start, self._searched - 3))
            self._searched = len(buf)
            if end < 0:
                return len(buf) - start > MAX_HEADER_BYTES
            self.body_start = end + 4
            if self._read_framing(bytes(buf[start:end])):
                return True
        if self._need >= 0:
            return len(buf) >= self._need
        return self._chunks_done()

    def _read_framing(self, head: bytes) -> bool:
        """Find the body's framing in the head; True when nothing more need be read.

        Framing that cheroot could read otherwise than here is refused (see
        :func:`_ambiguous_framing`); what is accepted, cheroot frames the same way, and
        :meth:`_Request.respond` checks that it did.
        """
        lines = head.split(b"\r\n")
        lengths, codings = set(), []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                # cheroot appends a folded line to the header above (a Transfer-Encoding
                # could gain a coding this scan never saw): RFC 9112, 5.2 allows a 400
                return self._refuse(400, "a header line starts with a space or tab (obsolete line "
                                         "folding); send each header on one line")
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                lengths.add(value)
            elif name == b"transfer-encoding":
                codings.append(value)
            elif name == b"expect":
                self.expects_continue = value.lower() == b"100-continue"
        for value in lengths:
            # cheroot's int() would take "+1_0" and raise past 4300 digits: only plain digits
            if content_length(value) is None:
                return self._refuse(400, f"Content-Length must be 1 to {MAX_LENGTH_DIGITS} digits "
                                         f"(got {len(value)} bytes that are not)")
        if codings:
            problem = _ambiguous_framing(lines[0], b", ".join(codings), bool(lengths))
            if problem:
                return self._refuse(400, problem)
            self._chunk_at = self.body_start
            self.body = bytearray()
            return False
        if not lengths:
            self.length, self._need = 0, self.body_start
            return True
        value = lengths.pop()
        if lengths or int(value) > self.body_limit:
            return True
        self.length = int(value)
        self._need = self.body_start + self.length
        return len(self.buf) >= self._need

    def _chunks_done(self) -> bool:
        buf, body = self.buf, self.body
        assert body is not None
        while True:
            at = self._chunk_at
            eol = buf.find(b"\r\n", at, at + MAX_CHUNK_LINE + 2)
            if eol < 0:
                if len(buf) - at >= MAX_CHUNK_LINE + 2:
                    return self._refuse(400, f"a chunk-size line is longer than {MAX_CHUNK_LINE} bytes")
                return self._too_much_framing()
            size_text = bytes(buf[at:eol]).split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                return self._refuse(400, "a chunk size is not a hexadecimal number of 1 to 16 digits")
            size, data_at = int(size_text, 16), eol + 2
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    return self._too_much_framing()
                self.body_end = end + 4
                return True
            if len(body) + min(size, len(buf) - data_at) > self.body_limit:
                # one byte more than the limit is enough for the app to answer 413
                body += buf[data_at:data_at + self.body_limit + 1 - len(body)]
                return True
            if len(buf) < data_at + size + 2:
                return self._too_much_framing()
            if buf[data_at + size:data_at + size + 2] != b"\r\n":
                return self._refuse(400, "a chunk's data is not followed by CRLF")
            body += buf[data_at:data_at + size]
            self._chunk_at = data_at + size + 2

    def _too_much_framing(self) -> bool:
        """Refuse a chunked body whose framing passes :data:`MAX_CHUNK_FRAMING`; else False."""
        if len(self.buf) - self.body_start > self.body_limit + MAX_CHUNK_FRAMING:
            return self._refuse(400, f"the chunked body has more than {MAX_CHUNK_FRAMING} bytes of framing "
                                     "(chunk sizes, extensions, trailers)")
        return False


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
#: Longest Transfer-Encoding value quoted back in a refusal, in characters.
_QUOTED_CODINGS = 64


def _ambiguous_framing(request_line: bytes, transfer_encoding: bytes, has_length: bool) -> str | None:
    """Why a request with a ``Transfer-Encoding`` header cannot be framed safely; None if it can.

    The only one accepted is an HTTP/1.1 request with ``Transfer-Encoding: chunked`` (once,
    alone) and no ``Content-Length`` (RFC 9112, 6.1 and 6.3): with both headers, or in
    HTTP/1.0 (where cheroot ignores Transfer-Encoding and reads ``Content-Length`` bytes
    from the socket), a server and the proxies before it can each see a different body
    end, which is request smuggling; other codings pihub does not decode.

    Args:
        request_line: the request line, without its CRLF.
        transfer_encoding: the ``Transfer-Encoding`` values, repeated headers joined by ``, ``.
        has_length: the request also has a ``Content-Length`` header.
    """
    # cheroot's own reading of the version and of the codings, so that both agree
    parts = request_line.strip().split(b" ", 2)
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        version = parts[2][:16].decode("latin-1") if len(parts) == 3 else "none"
        return (f"Transfer-Encoding is only allowed in HTTP/1.1 requests (this one is {version!r}); "
                "send the body with Content-Length")
    if has_length:
        return ("a request must not have both Transfer-Encoding and Content-Length (its body "
                "would have two lengths); send one of them")
    codings = [c.strip().lower() for c in transfer_encoding.split(b",") if c.strip()]
    if codings != [b"chunked"]:
        quoted = transfer_encoding.decode("latin-1")
        if len(quoted) > _QUOTED_CODINGS:
            quoted = quoted[:_QUOTED_CODINGS] + "..."
        return (f"Transfer-Encoding {quoted!r} is not supported: pihub takes only 'chunked', "
                "once and alone (the last coding must be chunked, and other codings are not decoded)")
    return None


#: ``accept`` errors that mean the process or system is out of something a retry needs.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: poll() events that mean the peer of a parked connection is gone (RDHUP: Linux only).
_HANG_UP = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


class _ResponseIO(socket.SocketIO):
    """The socket as a worker writes a response: every send ends by the response's deadline.

    cheroot sends with the socket's timeout per call (10 s), so a client that took a byte
    every few seconds held a worker for as long as it liked. The first write of a response
    sets :attr:`deadline` to ``server.write_timeout`` s ahead (:class:`_Connection` clears
    it for each request, :class:`_Request` for each further body chunk); a send is given
    only the time left, and past the deadline the write fails with ``ETIMEDOUT``, which
    cheroot takes as a client gone: it closes the connection without logging.

    The fast path costs a monotonic clock read and no system call: the socket's timeout
    is lowered (one ``ioctl``) only when less time than it is left, and raised back to the
    server's for a later chunk's fresh deadline.
    """

    def __init__(self, sock: socket.socket, server: _Server) -> None:
        super().__init__(sock, "wb")
        self._socket, self._server = sock, server
        #: :func:`time.monotonic` by which the current response must be written; None
        #: until its first write.
        self.deadline: float | None = None

    def write(self, b: Any) -> int | None:
        """Send what the socket takes of ``b`` by the deadline; the count sent.

        Raises:
            TimeoutError: (``errno.ETIMEDOUT``) the deadline passed, or the socket's own
                timeout did, before the client took anything.
        """
        now = time.monotonic()
        deadline = self.deadline
        if deadline is None:
            self.deadline = deadline = now + self._server.write_timeout
        sock = self._socket
        try:
            left = deadline - now
            if left <= 0:
                raise TimeoutError
            # the time left, but never more than the server's own socket timeout; raised
            # back for the next chunk's fresh deadline (a lowered timeout must not stay)
            want = min(left, self._server.timeout)
            if sock.gettimeout() != want:
                sock.settimeout(want)
            return super().write(b)
        except TimeoutError:
            log.debug("response to %s not taken within %s: closed", _peer(sock),
                      f"{self._server.write_timeout} s" if time.monotonic() >= deadline
                      else f"the socket timeout ({sock.gettimeout()} s)")
            raise TimeoutError(errno.ETIMEDOUT, "the client did not take the response in time") from None


class _ResponseWriter(StreamWriter):
    """cheroot's buffered socket writer, over a :class:`_ResponseIO`."""

    def __init__(self, raw: _ResponseIO, bufsize: int) -> None:
        # StreamWriter's own __init__ builds a plain SocketIO: skip to its base's
        super(StreamWriter, self).__init__(raw, bufsize)
        self.bytes_written = 0


class _Connection(cheroot_server.HTTPConnection):
    """cheroot's connection, with the state of :class:`_ConnectionManager`."""

    RequestHandlerClass = _Request
    #: Counted in the manager's connection limits (released once, on close).
    admitted = False
    #: The request being received while no worker holds the connection.
    arrival: _Arrival | None = None
    #: The body the arrival received for the request a worker is about to serve
    #: (de-chunked if chunked); None when it took in none (the head alone decides).
    arrived_body: bytes | None = None
    #: :attr:`arrived_body` came chunked (else it is the ``Content-Length`` bytes).
    arrived_chunked = False
    #: :attr:`arrived_body` was cut at ``max_body + 1`` bytes (chunked only).
    body_cut = False
    #: A worker has (or is about to get) this connection: counted in its address's workers.
    working = False
    #: :func:`time.monotonic` when it was parked behind its address's workers; else None.
    parked_at: float | None = None

    def __init__(self, server: _Server, sock: socket.socket, makefile: Any = MakeFile) -> None:
        super().__init__(server, sock, makefile)
        #: What the worker writes through, under its deadline (cheroot's writer buffers over it).
        self.response_io = _ResponseIO(sock, server)
        self.wfile = _ResponseWriter(self.response_io, self.wbufsize)

    def communicate(self) -> bool:
        """Serve one request (cheroot's), its response under a fresh write deadline."""
        self.response_io.deadline = None
        return bool(super().communicate())  # type: ignore[no-untyped-call]  # cheroot: untyped

    def close(self) -> None:
        """Close the socket and give back the connection's place in the limits."""
        try:
            # unsent bytes of a response cut at its deadline are dropped, not flushed at GC
            self.response_io.close()
            super().close()
        finally:
            manager = getattr(self.server, "_connections", None)
            if isinstance(manager, _ConnectionManager):
                manager.release(self)


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _error_response(status: int, message: str, sock: socket.socket) -> bytes:
    """A whole ``Connection: close`` JSON error response, with the app's security headers."""
    line, body = error_bytes(status, message)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Connection", "close"), *SECURITY_HEADERS]
    if isinstance(sock, ssl.SSLSocket):
        headers.append(HSTS_HEADER)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"HTTP/1.1 {line}\r\n{head}\r\n".encode("latin-1") + body


class _ConnectionManager(connections.ConnectionManager):
    """cheroot's selector loop, taught to receive a whole request before a worker takes it.

    cheroot hands a new connection to a worker at once, and the worker blocks on its
    reads: 8 silent sockets took all 8 workers. Here a connection (new, or back from a
    worker after a kept-alive response) stays in the selector, and its bytes are read
    without blocking into an :class:`_Arrival` until the request is complete; only then
    is it queued for a worker, with the bytes put in the front of its read buffer. While
    waiting, a connection costs one file descriptor and its bytes, never a thread.

    Deadlines: a connection that has sent nothing is closed after the server's
    ``timeout`` (idle); a request that started arriving must be complete within
    ``request_timeout`` seconds of its first byte, else it gets a 408 and is closed.
    TLS handshakes run here too, non-blocking, so a silent TLS client costs nothing either.

    Workers per address: a complete request goes to a worker only while fewer than
    ``server.max_workers_per_address`` connections of its address are with workers;
    otherwise it is parked (its connection in a per-address queue, out of the selector)
    and handed over, oldest first, when a worker is done with a connection of that
    address (:meth:`put`, or the connection's close). A parked request older than
    :data:`PARKED_TIMEOUT` gets a 503 and is closed, and so is a parked client seen
    gone (hang-up, reset) by the expiry pass.
    """

    # cheroot's private _ThreadsafeSelector, set by its __init__; its stub has no _selector
    _selector: Any

    def __init__(self, server: _Server) -> None:
        super().__init__(server)
        self._limits_lock = threading.Lock()
        self._slots = ConnectionSlots(server.max_connections, server.max_per_address)
        #: address -> its connections with workers (or queued for one); no entry for 0.
        self._working: dict[str, int] = {}
        #: address -> its parked connections, oldest first; no entry when none.
        self._parked: dict[str, collections.deque[_Connection]] = {}
        #: ``accept`` calls that failed for want of file descriptors (or kernel memory).
        self.accept_failures = 0
        self._accept_pause = 0.0
        self._accept_log = LogLimiter(1, ACCEPT_LOG_WINDOW, time.monotonic)

    # -- accepting
    def _from_server_socket(self, server_socket: socket.socket) -> _Connection | None:
        """cheroot's accept, pausing while it fails for want of file descriptors.

        cheroot lets such an error out of its loop, which logs it and selects again at
        once: the pending connection is still there, so the thread spun, logging a
        traceback per try (81,594 lines in 11 s).
        """
        try:
            conn: _Connection | None = super()._from_server_socket(server_socket)  # type: ignore[misc]  # cheroot: not in its stub
        except OSError as e:
            if e.errno not in _OUT_OF_RESOURCES:
                raise
            self.accept_failures += 1
            self._accept_pause = min(ACCEPT_PAUSE_MAX, max(ACCEPT_PAUSE_FIRST, self._accept_pause * 2))
            allowed, held = self._accept_log.allow()
            if allowed:
                log.error("cannot accept HTTP connections: %s; pausing accepts up to %.1f s at a time%s",
                          os.strerror(e.errno), ACCEPT_PAUSE_MAX,
                          f" ({held} more failed accepts since the last report)" if held else "")
            # Not synchronisation: a retry pause. Nothing will be freed by trying again
            # at once, and this thread is the only one that accepts; connections already
            # open lose at most ACCEPT_PAUSE_MAX of their arrival time.
            time.sleep(self._accept_pause)
            return None
        self._accept_pause = 0.0
        return conn

    # -- limits
    def _admit(self, conn: _Connection) -> bool:
        address = conn.remote_addr or ""
        slots = self._slots
        if slots.take(address):
            conn.admitted = True
            return True
        log.debug("connection from %s refused: %d open, limits %d in all and %d per address",
                  address, slots.open, slots.total, slots.per_address)
        conn.close()
        return False

    def release(self, conn: _Connection) -> None:
        """Give back a closed connection's place in the limits, its worker or parking place (once)."""
        if conn.working:
            self._worker_done(conn)
        elif conn.parked_at is not None:
            self._unpark(conn)
        with self._limits_lock:
            if not conn.admitted:
                return
            conn.admitted = False
        self._slots.give_back(conn.remote_addr or "")

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet closed."""
        return self._slots.open

    @property
    def refused(self) -> int:
        """Connections closed at accept because a limit was reached."""
        return self._slots.refused

    def workers_by_address(self) -> dict[str, tuple[int, int]]:
        """address -> (connections with workers, parked connections), for addresses with any."""
        with self._limits_lock:
            return {a: (self._working.get(a, 0), len(self._parked.get(a, ())))
                    for a in self._working.keys() | self._parked.keys()}

    # -- workers per address
    def _to_worker(self, conn: _Connection) -> None:
        """Queue ``conn`` (its request complete) for a worker, or park it behind its address's."""
        address = conn.remote_addr or ""
        with self._limits_lock:
            working = self._working.get(address, 0)
            if working >= self.server.max_workers_per_address:
                conn.parked_at = time.monotonic()
                self._parked.setdefault(address, collections.deque()).append(conn)
                return
            self._working[address] = working + 1
            conn.working = True
        self.server.dispatch(conn)

    def _worker_done(self, conn: _Connection) -> None:
        """A worker is done with ``conn``: its place goes to its address's oldest parked one."""
        address = conn.remote_addr or ""
        with self._limits_lock:
            if not conn.working:
                return
            conn.working = False
            parked = self._parked.get(address)
            if parked:
                follower = parked.popleft()
                if not parked:
                    del self._parked[address]
                follower.parked_at, follower.working = None, True
            else:
                follower = None
                left = self._working.get(address, 1) - 1
                if left > 0:
                    self._working[address] = left
                else:
                    self._working.pop(address, None)
        if follower is not None:
            self.server.dispatch(follower)

    def _unpark(self, conn: _Connection) -> bool:
        """Take ``conn`` out of its address's parked queue; False if it was not there."""
        address = conn.remote_addr or ""
        with self._limits_lock:
            if conn.parked_at is None:
                return False
            conn.parked_at = None
            parked = self._parked.get(address)
            if parked is not None:
                parked.remove(conn)
                if not parked:
                    del self._parked[address]
            return True

    def _expire_parked(self) -> None:
        """Close parked connections whose client is gone, and 503 those parked too long."""
        with self._limits_lock:
            parked = [conn for queue in self._parked.values() for conn in queue]
        if not parked:
            return
        poller = select.poll()
        by_fd: dict[int, _Connection] = {}
        gone: set[_Connection] = set()
        for conn in parked:
            try:
                fd = conn.socket.fileno()
            except (OSError, ValueError):
                fd = -1
            if fd < 0:
                gone.add(conn)
            else:
                by_fd[fd] = conn
                poller.register(fd, _HANG_UP)
        # a half-close counts as gone, as a read of end-of-stream would
        gone.update(by_fd[fd] for fd, _ in poller.poll(0))
        now = time.monotonic()
        for conn in parked:
            parked_at = conn.parked_at
            late = conn not in gone and parked_at is not None and now - parked_at > PARKED_TIMEOUT
            if (late or conn in gone) and self._unpark(conn):
                if late:
                    log.debug("request from %s parked longer than %s s behind its address's workers: 503",
                              _peer(conn.socket), PARKED_TIMEOUT)
                    _send_quietly(conn.socket, _error_response(
                        503, "too many requests from this address are being served; try again later",
                        conn.socket))
                conn.close()

    def close(self) -> None:
        """Close every connection in the selector (cheroot's) and every parked one."""
        with self._limits_lock:
            parked = [conn for queue in self._parked.values() for conn in queue]
        for conn in parked:
            if self._unpark(conn):
                conn.close()
        super().close()

    # -- receiving
    def put(self, conn: _Connection) -> None:
        """Take back a connection after a kept-alive response (called by a worker)."""
        self._worker_done(conn)
        conn.last_used = time.time()
        rfile = conn.rfile
        # cheroot's reader is _pyio's BufferedReader: bytes of a pipelined next request
        # may already sit in its buffer (cheroot's own has_data() reads the same fields)
        leftover = bytes(rfile._read_buf[rfile._read_pos:])
        rfile._read_buf, rfile._read_pos = b"", 0
        conn.arrival = _Arrival(self.server.body_limit)
        if leftover and conn.arrival.add(leftover):
            self._dispatch(conn)
        else:
            self._watch(conn, selectors.EVENT_READ)

    def arrive(self, conn: _Connection) -> None:
        """A connection just accepted, or one the selector saw readable (selector thread)."""
        if not conn.admitted:
            if not self._admit(conn):
                return
            conn.last_used = time.time()
            conn.arrival = _Arrival(self.server.body_limit)
        self._receive(conn)

    def _receive(self, conn: _Connection) -> None:
        sock, arrival = conn.socket, conn.arrival
        if arrival is None:  # not reachable: every watched connection has one
            conn.close()
            return
        events = selectors.EVENT_READ
        try:
            sock.settimeout(0)
            if isinstance(sock, _LazyTLSSocket) and sock._handshake_ok is None:
                sock.do_handshake()
                sock._handshake_ok = True
            while not arrival.complete:
                data = sock.recv(65536)
                if not data:
                    conn.close()
                    return
                arrival.add(data)
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except ssl.SSLWantWriteError:
            events = selectors.EVENT_READ | selectors.EVENT_WRITE
        except (OSError, ValueError) as e:
            # resets, failed handshakes (plain HTTP to the TLS port, a refused client
            # certificate): the client's business, logged at debug only
            log.debug("connection from %s dropped while receiving: %s", _peer(sock), e)
            conn.close()
            return
        if arrival.refusal is not None:
            status, message = arrival.refusal
            log.debug("request from %s refused: %s", _peer(sock), message)
            _send_quietly(sock, _error_response(status, message, sock))
            conn.close()
            return
        if arrival.complete:
            self._dispatch(conn)
            return
        if arrival.expects_continue:
            arrival.expects_continue = False
            _send_quietly(sock, _CONTINUE)
        self._watch(conn, events)

    def _watch(self, conn: _Connection, events: int) -> None:
        try:
            self._selector.register(conn.socket.fileno(), events, data=conn)
        except (OSError, ValueError, KeyError):
            conn.close()

    def _dispatch(self, conn: _Connection) -> None:
        arrival, rfile = conn.arrival, conn.rfile
        conn.arrival = None
        conn.arrived_body, conn.arrived_chunked, conn.body_cut = None, False, False
        if arrival is not None and arrival.body is not None and arrival.complete:
            # the worker reads the head from rfile, the body from arrived_body, and
            # then what follows the body (a pipelined request), unless the body was cut
            buf = arrival.buf
            rest = buf[arrival.body_end:] if arrival.body_end >= 0 else b""
            rfile._read_buf, rfile._read_pos = bytes(buf[:arrival.body_start] + rest), 0
            conn.arrived_body, conn.body_cut = bytes(arrival.body), arrival.body_end < 0
            conn.arrived_chunked = True
        elif arrival is not None and arrival.length >= 0:
            # framed by Content-Length (or bodiless) and all there: the same split
            buf, end = arrival.buf, arrival.body_start + arrival.length
            rfile._read_buf, rfile._read_pos = bytes(buf[:arrival.body_start] + buf[end:]), 0
            conn.arrived_body = bytes(buf[arrival.body_start:end])
        elif arrival is not None:
            rfile._read_buf, rfile._read_pos = bytes(arrival.buf), 0
        try:
            conn.socket.settimeout(self.server.timeout)
        except OSError:
            conn.close()
            return
        self._to_worker(conn)

    def _expire(self, threshold: float) -> None:
        """Close idle connections older than ``threshold`` (a time.time()) and late requests."""
        now = time.monotonic()
        late = []
        for sock_fd, conn in list(self._selector.connections):
            if conn is self.server:
                continue
            arrival = conn.arrival
            if arrival is not None and arrival.started is not None:
                if now - arrival.started > self.server.request_timeout:
                    late.append((sock_fd, conn, True))
            elif conn.last_used is not None and conn.last_used < threshold:
                late.append((sock_fd, conn, False))
        for sock_fd, conn, started in late:
            self._selector.unregister(sock_fd)
            if started:
                log.debug("request from %s not complete after %.1f s: closed", _peer(conn.socket),
                          self.server.request_timeout)
                _send_quietly(conn.socket, _error_response(408, "the request did not arrive in time",
                                                           conn.socket))
            conn.close()
        if self._parked:
            self._expire_parked()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what fits without blocking; a client that cannot take it loses it."""
    try:
        sock.send(data)
    except (OSError, ValueError):
        pass


class _Server(wsgi.Server):
    """cheroot's server with :class:`_ConnectionManager`, logging its diagnostics.

    Attributes set by :class:`WebServer`: ``body_limit`` (bytes of body received before a
    worker is taken), ``request_timeout`` (s), ``write_timeout`` (s), ``max_connections``,
    ``max_per_address``, ``max_workers_per_address``.
    """

    ConnectionClass = _Connection
    # set by cheroot's prepare() (replaced there by ours); its stub has no _connections
    _connections: _ConnectionManager
    body_limit = DEFAULT_BODY_BUFFER
    request_timeout: float = REQUEST_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT
    max_connections = MAX_CONNECTIONS
    max_per_address = MAX_CONNECTIONS_PER_ADDRESS
    max_workers_per_address = 1

    def prepare(self) -> None:
        """Bind and listen (cheroot), then put :class:`_ConnectionManager` in place."""
        super().prepare()
        theirs = self._connections
        self._connections = _ConnectionManager(self)
        theirs._selector.close()

    def process_conn(self, conn: _Connection) -> None:
        """cheroot's loop calls this for a new connection and a readable one: receive first."""
        self._connections.arrive(conn)

    def dispatch(self, conn: _Connection) -> None:
        """Queue a connection whose request is complete for a worker thread."""
        super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """Log a cheroot diagnostic; tracebacks only for errors (cheroot calls this)."""
        # cheroot reports every client that drops a connection or speaks plain HTTP to the
        # TLS port; those are the clients' business, not errors of the daemon.
        log.log(logging.ERROR if level >= logging.ERROR else logging.DEBUG, "%s", msg,
                exc_info=traceback and level >= logging.ERROR)


class _LazyTLSSocket(ssl.SSLSocket):
    """A server TLS socket that completes its handshake on the first read.

    A failed handshake (a plain-HTTP client, a port scanner, a client certificate that
    does not verify, a timeout) reads as end-of-stream, so cheroot closes the connection
    quietly instead of logging a traceback for every such client.
    """

    #: None until the handshake was tried, then whether it succeeded.
    _handshake_ok: bool | None = None

    def _handshake(self) -> bool:
        """Do the handshake once; False when it failed (the peer is then logged at debug)."""
        if self._handshake_ok is None:
            try:
                self.do_handshake()
                self._handshake_ok = True
            except (OSError, ValueError, AttributeError) as e:
                # OSError: ssl.SSLError, timeouts, resets. ValueError/AttributeError: the
                # server closed the socket (stop()) while this worker was about to read.
                log.debug("TLS handshake with %s failed: %s", _peer(self), e)
                self._handshake_ok = False
        return self._handshake_ok

    def recv_into(self, buffer: Any, nbytes: int | None = 0, flags: int = 0) -> int:
        """``SSLSocket.recv_into``, after the handshake; 0 (end of stream) when it failed."""
        if not self._handshake():
            return 0
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """``SSLSocket.recv``, after the handshake; ``b""`` when it failed."""
        if not self._handshake():
            return b""
        return super().recv(buflen, flags)


def _peer(sock: socket.socket) -> str:
    """``host:port`` of the peer, or ``?``."""
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


class _DeferredHandshakeAdapter(BuiltinSSLAdapter):
    """cheroot's TLS adapter, with the handshake moved off the accept loop.

    cheroot's own adapter completes the TLS handshake inside ``accept``, on the one
    thread that accepts every connection: a client that opens a TCP connection and sends
    nothing stalls every new client for the socket timeout (measured: 9.8 s). Here the
    socket is wrapped without a handshake, which :class:`_LazyTLSSocket` performs on the
    first read, in the worker thread that serves the connection: a stalled client costs
    one worker for at most :data:`SOCKET_TIMEOUT` and nobody else waits.
    """

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        """Wrap an accepted socket for TLS; return it and its WSGI environ entries."""
        tls = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}


class WebServer:
    """A threaded WSGI server for one app, started and stopped by the hub.

    Args:
        app: the WSGI application.
        host: address to bind (``127.0.0.1`` unless the config says otherwise).
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        threads: worker threads, i.e. requests served at the same time; one client
            address gets at most ``max(1, threads // 2)`` of them at a time.
        ssl_cert: PEM certificate file; with ``ssl_key``, serve HTTPS only.
        ssl_key: PEM private key file.
        ssl_cafile: PEM CA bundle to require and verify client certificates.
        ssl_capath: directory of hash-named PEM CA certificates, as ``ssl_cafile``.
        idle_timeout: seconds a connection may stay silent (new, or between requests).
        request_timeout: seconds a request may take to arrive from its first byte.
        write_timeout: seconds a worker waits for the client to take one response (the
            head and first body chunk; each further chunk gets as long again).
        max_connections: open connections at most; more are closed at accept.
        max_per_address: open connections at most from one client address.

    The body of a request is received before a worker is taken when it is at most the
    app's ``max_body`` bytes (:data:`DEFAULT_BODY_BUFFER` for an app without one).

    Raises:
        ValueError: only one of ``ssl_cert`` and ``ssl_key`` is given, ``threads < 1``, or
            a timeout or limit is not positive.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 8008, threads: int = 8,
                 ssl_cert: str | None = None, ssl_key: str | None = None,
                 ssl_cafile: str | None = None, ssl_capath: str | None = None,
                 idle_timeout: float = SOCKET_TIMEOUT, request_timeout: float = REQUEST_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS,
                 max_per_address: int = MAX_CONNECTIONS_PER_ADDRESS) -> None:
        if bool(ssl_cert) != bool(ssl_key):
            raise ValueError("http.ssl_cert and http.ssl_key must be given together")
        if ssl_cafile and not ssl_cert:
            raise ValueError("http.ssl_cafile needs ssl_cert and ssl_key")
        if ssl_capath and not ssl_cert:
            raise ValueError("http.ssl_capath needs ssl_cert and ssl_key")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        for name, value in (("idle_timeout", idle_timeout), ("request_timeout", request_timeout),
                            ("write_timeout", write_timeout),
                            ("max_connections", max_connections), ("max_per_address", max_per_address)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        self.idle_timeout, self.request_timeout = idle_timeout, request_timeout
        self.write_timeout = write_timeout
        self.max_connections, self.max_per_address = max_connections, max_per_address
        self.app = app
        self.host = host
        self._requested_port = port
        self.threads = threads
        self.ssl_cert, self.ssl_key, self.ssl_cafile = ssl_cert, ssl_key, ssl_cafile
        self.ssl_capath = ssl_capath
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def tls(self) -> bool:
        """True when serving HTTPS."""
        return bool(self.ssl_cert)

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when 0 was asked); the requested one before start."""
        return self._port if self._port is not None else self._requested_port

    @property
    def open_connections(self) -> int:
        """Connections open now (accepted and not yet closed, idle or served); 0 when stopped."""
        server = self._server
        manager = getattr(server, "_connections", None) if server is not None else None
        return manager.open_connections if isinstance(manager, _ConnectionManager) else 0

    @property
    def refused_connections(self) -> int:
        """Connections closed at accept because a limit was reached, since :meth:`start`."""
        server = self._server
        manager = getattr(server, "_connections", None) if server is not None else None
        return manager.refused if isinstance(manager, _ConnectionManager) else 0

    def workers_by_address(self) -> dict[str, tuple[int, int]]:
        """Client address -> (its connections with workers, its parked ones), for each
        address with any; empty when stopped."""
        server = self._server
        manager = getattr(server, "_connections", None) if server is not None else None
        return manager.workers_by_address() if isinstance(manager, _ConnectionManager) else {}

    @property
    def url(self) -> str:
        """``http[s]://host:port`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        """Bind, listen, and serve in the thread ``pihub-http``; return once listening.

        Raises:
            OSError: the address cannot be bound (in use, not local, no permission).
            ssl.SSLError: the certificate or key is unusable.
            RuntimeError: already started.
        """
        if self._server is not None:
            raise RuntimeError("the web server is already started")
        if os.environ.get("LISTEN_PID"):
            # cheroot takes over fd 3 when LISTEN_PID is set (systemd socket activation);
            # pihub's unit does not use it, so an inherited variable would be a surprise.
            log.warning("LISTEN_PID is set: cheroot will serve the socket systemd passed as fd 3")
        # cheroot's stub says int, but its timeout is a socket timeout: a float works
        server = _Server((self.host, self._requested_port), self.app, numthreads=self.threads,
                         server_name="pihub", request_queue_size=LISTEN_BACKLOG,
                         timeout=self.idle_timeout,  # type: ignore[arg-type]
                         shutdown_timeout=5)
        max_body = getattr(self.app, "max_body", None)
        server.body_limit = max_body if isinstance(max_body, int) and max_body >= 0 else DEFAULT_BODY_BUFFER
        server.request_timeout, server.write_timeout = self.request_timeout, self.write_timeout
        server.max_connections, server.max_per_address = self.max_connections, self.max_per_address
        server.max_workers_per_address = max(1, self.threads // 2)
        server.keep_alive_conn_limit = KEEPALIVE_LIMIT
        server.max_request_header_size = MAX_HEADER_BYTES
        server.max_request_body_size = 0
        if self.ssl_cert and self.ssl_key:
            context = make_ssl_context(self.ssl_cert, self.ssl_key, self.ssl_cafile, self.ssl_capath)
            context.sslsocket_class = _LazyTLSSocket
            adapter = _DeferredHandshakeAdapter(self.ssl_cert, self.ssl_key)
            adapter.context = context
            server.ssl_adapter = adapter
        server.prepare()
        self._port = server.bind_addr[1]
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="pihub-http", daemon=True)
        self._thread.start()
        log.info("HTTP API on %s (%d threads%s)", self.url, self.threads,
                 ", client certificates required" if self.ssl_cafile or self.ssl_capath else "")

    def _serve(self) -> None:
        """Run the server loop (thread ``pihub-http``) until :meth:`stop`."""
        server = self._server
        if server is None:
            return
        try:
            server.serve()
        except Exception:
            log.exception("the HTTP server stopped on an error")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish the requests in progress, join the threads.

        Args:
            timeout: seconds to wait for the server thread; in-flight requests get
                cheroot's own 5 s shutdown timeout.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown_timeout = timeout
        server.stop()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("the HTTP server thread did not stop within %.1f s", timeout)
        self._server = None
        self._thread = None
