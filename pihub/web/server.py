"""The WSGI server that serves :func:`pihub.web.app.make_app`: cheroot, in one named thread.

Why cheroot (measured, see below): it is a real threaded server with HTTP/1.1
keep-alive, a selector-based connection manager (idle keep-alive connections hold no
worker thread), and built-in TLS through the standard :mod:`ssl` module, including
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

Limits set here: listen backlog 64, 128 idle keep-alive connections, a 10 s socket
timeout, request headers at most 32 KiB. Request *bodies* are limited by the app
(``http.max_body``), which answers 413 in JSON; a limit here would answer in HTML.

TLS: TLS 1.2 or newer (:func:`make_ssl_context`); client certificates are required when
``ssl_cafile`` is set. The handshake runs on the worker thread of the connection, not on
cheroot's accept loop (:class:`_DeferredHandshakeAdapter`): with cheroot's own adapter,
one client that connects and sends nothing stalls every new client for 10 s.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

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


def make_ssl_context(cert: str, key: str, cafile: str | None = None) -> ssl.SSLContext:
    """A server TLS context: TLS 1.2 or newer, the certificate and key, optional client certs.

    Args:
        cert: PEM certificate (chain) file.
        key: PEM private key file (unencrypted).
        cafile: PEM CA bundle; when given, clients MUST present a certificate it signed.

    Returns:
        The context.

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: a file is not valid PEM, or the key does not match the certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Server(wsgi.Server):
    """cheroot's server with its diagnostics sent to :mod:`logging` instead of stderr."""

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

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
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
        threads: worker threads, i.e. requests served at the same time.
        ssl_cert: PEM certificate file; with ``ssl_key``, serve HTTPS only.
        ssl_key: PEM private key file.
        ssl_cafile: PEM CA bundle to require and verify client certificates.

    Raises:
        ValueError: only one of ``ssl_cert`` and ``ssl_key`` is given, or ``threads < 1``.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 8008, threads: int = 8,
                 ssl_cert: str | None = None, ssl_key: str | None = None,
                 ssl_cafile: str | None = None) -> None:
        if bool(ssl_cert) != bool(ssl_key):
            raise ValueError("http.ssl_cert and http.ssl_key must be given together")
        if ssl_cafile and not ssl_cert:
            raise ValueError("http.ssl_cafile needs ssl_cert and ssl_key")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.app = app
        self.host = host
        self._requested_port = port
        self.threads = threads
        self.ssl_cert, self.ssl_key, self.ssl_cafile = ssl_cert, ssl_key, ssl_cafile
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
        server = _Server((self.host, self._requested_port), self.app, numthreads=self.threads,
                         server_name="pihub", request_queue_size=LISTEN_BACKLOG, timeout=SOCKET_TIMEOUT,
                         shutdown_timeout=5)
        server.keep_alive_conn_limit = KEEPALIVE_LIMIT
        server.max_request_header_size = MAX_HEADER_BYTES
        server.max_request_body_size = 0
        if self.ssl_cert and self.ssl_key:
            context = make_ssl_context(self.ssl_cert, self.ssl_key, self.ssl_cafile)
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
                 ", client certificates required" if self.ssl_cafile else "")

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
