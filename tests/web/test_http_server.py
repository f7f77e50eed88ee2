"""The real server (cheroot) over loopback: serving, keep-alive, limits, headers, TLS, mutual TLS."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cheroot import connections
from http_support import PASSWORD, SECURITY, Rig, build_rig, serving
from pihub_testing import need_tool, wait_for

from pihub.web import server as web_server
from pihub.web.server import WebServer, make_ssl_context

EXEC = json.dumps({"type": "request", "action": "variable.get", "args": {"name": "x"}}).encode()


@pytest.fixture
def rig(make_hub, tmp_path: Path) -> Rig:
    return build_rig(make_hub, tmp_path)


@pytest.fixture
def served(rig: Rig) -> Iterator[tuple[Rig, WebServer]]:
    with serving(rig.app) as server:
        yield rig, server


def _get(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def _assert_security(resp: http.client.HTTPResponse, *, tls: bool = False) -> None:
    for name, value in SECURITY.items():
        assert resp.getheader(name) == value, (name, resp.status)
    assert (resp.getheader("Strict-Transport-Security") is not None) is tls


class TestPlain:
    def test_port_zero_picks_a_port_and_serves_in_a_named_thread(self, served) -> None:
        rig, server = served
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert "pihub-http" in {t.name for t in threading.enumerate()}
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        resp, body = _get(conn, "GET", "/livez")
        assert resp.status == 200 and json.loads(body) == {"status": "ok"}

    def test_keep_alive_reuses_the_connection(self, served) -> None:
        rig, server = served
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        _get(conn, "GET", "/livez")
        first = conn.sock
        for _ in range(5):
            resp, body = _get(conn, "POST", "/execute", EXEC,
                              {**rig.as_("control"), "Content-Type": "application/json"})
            assert resp.status == 200 and json.loads(body)["response"]["errors"] == []
        assert conn.sock is first

    def test_security_headers_on_200_401_404_500(self, served, monkeypatch: pytest.MonkeyPatch) -> None:
        rig, server = served

        def boom() -> None:
            raise RuntimeError("no")

        monkeypatch.setattr(rig.hub.registry, "describe", boom)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        seen = []
        for method, path, headers in [("GET", "/livez", {}), ("GET", "/actions", {}), ("GET", "/nope", {}),
                                      ("GET", "/actions", rig.as_("read"))]:
            resp, body = _get(conn, method, path, headers=headers)
            _assert_security(resp)
            if resp.status != 200:
                assert resp.getheader("Content-Type") == "application/json"
                assert set(json.loads(body)) == {"code", "error", "message"}
            seen.append(resp.status)
        assert seen == [200, 401, 404, 500]

    def test_too_large_body_is_413_json_and_the_connection_closes(self, served) -> None:
        rig, server = served
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        resp, body = _get(conn, "POST", "/execute", b"x" * 70_000,
                          {**rig.as_("control"), "Content-Type": "application/json"})
        assert resp.status == 413 and json.loads(body)["error"] == "PAYLOAD_TOO_LARGE"
        _assert_security(resp)
        assert resp.will_close
        # the server is fine afterwards
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        assert _get(conn, "GET", "/livez")[0].status == 200

    def test_chunked_body_is_cut_at_the_limit(self, served) -> None:
        rig, server = served
        # raw socket: the server may answer 413 and close while the body is still being
        # sent, so the send side must tolerate a broken pipe and still read the answer
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        head = "".join(f"{k}: {v}\r\n" for k, v in rig.as_("control").items())
        try:
            sock.sendall(f"POST /hook/nobody HTTP/1.1\r\nHost: x\r\n{head}"
                         "Transfer-Encoding: chunked\r\n\r\n".encode())
            for _ in range(16):
                sock.sendall(b"2000\r\n" + b"x" * 8192 + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 413 and json.loads(resp.read())["error"] == "PAYLOAD_TOO_LARGE"
        sock.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/hook/nobody", body=(c for c in [b'{"a":', b"1}"]), encode_chunked=True,
                     headers={**rig.as_("control"), "Transfer-Encoding": "chunked",
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["data"] == {"a": 1}

    def _raw(self, rig: Rig, server: WebServer, lengths: list[int], body: bytes) -> http.client.HTTPResponse:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        head = "".join(f"{k}: {v}\r\n" for k, v in rig.as_("control").items())
        head += "".join(f"Content-Length: {n}\r\n" for n in lengths)
        sock.sendall(f"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}\r\n"
                     .encode() + body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()  # the 5 s socket timeout fails the test if the server waits for more body
        sock.close()
        return resp

    def test_conflicting_content_lengths_are_400_at_once(self, served) -> None:
        rig, server = served
        assert self._raw(rig, server, [2, len(EXEC) + 50], b"{}").status == 400
        assert self._raw(rig, server, [len(EXEC), 2], EXEC).status == 400

    def test_a_repeated_equal_content_length_is_one(self, served) -> None:
        rig, server = served
        resp = self._raw(rig, server, [len(EXEC), len(EXEC)], EXEC)
        assert resp.status == 200 and json.loads(resp.read())["response"]["errors"] == []

    def test_expect_100_continue_is_answered_before_the_body(self, served) -> None:
        rig, server = served
        head = "".join(f"{k}: {v}\r\n" for k, v in rig.as_("control").items())
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(f"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
                         f"Expect: 100-continue\r\nContent-Length: {len(EXEC)}\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(EXEC)
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            while resp.status == 100:  # a second 100 may come from cheroot itself (allowed)
                resp = http.client.HTTPResponse(sock)
                resp.begin()
            assert resp.status == 200 and json.loads(resp.read())["response"]["errors"] == []

    def test_pipelined_requests_are_all_answered(self, served) -> None:
        rig, server = served
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            data = b""
            while data.count(b'"ok"}') < 3 and (chunk := sock.recv(65536)):
                data += chunk
            assert data.count(b"HTTP/1.1 200 OK\r\n") == 3, data

    def test_stop_closes_the_port(self, rig: Rig) -> None:
        server = WebServer(rig.app, port=0, threads=2)
        server.start()
        port = server.port
        server.stop()
        assert "pihub-http" not in {t.name for t in threading.enumerate()}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        server.stop()  # idempotent

    def test_bind_errors_raise_from_start(self, served) -> None:
        rig, server = served
        other = WebServer(rig.app, port=server.port, threads=1)
        with pytest.raises(OSError):
            other.start()

    def test_start_twice_is_an_error(self, served) -> None:
        with pytest.raises(RuntimeError):
            served[1].start()

    @pytest.mark.parametrize("kw", [{"ssl_cert": "c.pem"}, {"ssl_key": "k.pem"}, {"ssl_cafile": "ca.pem"},
                                    {"threads": 0}, {"request_timeout": 0}, {"idle_timeout": -1},
                                    {"max_connections": 0}, {"max_per_address": 0}])
    def test_bad_arguments(self, rig: Rig, kw: dict) -> None:
        with pytest.raises(ValueError):
            WebServer(rig.app, port=0, **kw)


# ------------------------------------------------------------- hostile framing
def _send_raw(port: int, data: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    """Send ``data``, read one response; the 5 s timeout fails the test if none comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while still sending: the answer is already on its way
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp, resp.read()
    finally:
        sock.close()


def _read_responses(sock: socket.socket, n: int) -> list[tuple[int, bytes]]:
    """``(status, body)`` of the next ``n`` responses on ``sock``, read through one buffer
    (an ``HTTPResponse`` per response would each buffer ahead and swallow the next)."""
    stream = sock.makefile("rb")
    out = []
    for _ in range(n):
        status = int(stream.readline().split()[1])
        length = 0
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((status, stream.read(length)))
    return out


def _livez_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    return _get(conn, "GET", "/livez")[0].status == 200


CHUNKED_LOGIN = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")


class TestHostileFraming:
    def test_an_endless_chunk_size_line_is_400_before_any_worker(self, rig: Rig) -> None:
        # one worker: were the request handed to it, /livez could not be answered
        with serving(rig.app, threads=1) as server:
            socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
            try:
                for sock in socks:
                    sock.sendall(CHUNKED_LOGIN + b"1" * 65537)
                for sock in socks:
                    resp = http.client.HTTPResponse(sock)
                    resp.begin()
                    body = json.loads(resp.read())
                    assert resp.status == 400 and "chunk-size line" in body["message"]
                    assert resp.will_close
                    _assert_security(resp)
            finally:
                for sock in socks:
                    sock.close()
            assert _livez_ok(server.port)

    def test_a_chunk_size_line_trickling_in_gets_408(self, rig: Rig) -> None:
        with serving(rig.app, threads=1, request_timeout=0.5) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(CHUNKED_LOGIN + b"1" * 100)
                resp = http.client.HTTPResponse(sock)
                resp.begin()
                assert resp.status == 408 and json.loads(resp.read())["error"] == "REQUEST_TIMEOUT"
            assert _livez_ok(server.port)

    def test_a_huge_chunk_is_413_from_what_arrived_and_the_worker_reads_no_more(self, served) -> None:
        rig, server = served
        # declares 4 GiB, sends max_body + 1 bytes and then nothing: were the worker reading
        # the chunk from the socket, no answer would come before the client's timeout
        resp, body = _send_raw(server.port, CHUNKED_LOGIN + b"FFFFFFFF\r\n" + b"x" * 70_000)
        assert resp.status == 413 and json.loads(body)["error"] == "PAYLOAD_TOO_LARGE"
        assert resp.will_close
        assert _livez_ok(server.port)

    @pytest.mark.parametrize("chunks, words", [
        (b"zz\r\nab\r\n0\r\n\r\n", "hexadecimal"),
        (b"-2\r\nab\r\n0\r\n\r\n", "hexadecimal"),
        (b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", "hexadecimal"),
        (b"1" * 17 + b"\r\n", "hexadecimal"),
        (b"2\r\nabcd\r\n0\r\n\r\n", "CRLF"),
        (b"1;" + b"e" * 5000 + b"\r\n", "chunk-size line"),
    ])
    def test_bad_chunk_framing_is_400(self, served, chunks: bytes, words: str) -> None:
        rig, server = served
        resp, body = _send_raw(server.port, CHUNKED_LOGIN + chunks)
        assert resp.status == 400 and words in json.loads(body)["message"]
        assert _livez_ok(server.port)

    def test_endless_chunk_framing_is_400(self, served) -> None:
        rig, server = served
        # each chunk is one byte and a long extension: little body, unbounded framing
        chunk = b"1;" + b"e" * 4000 + b"\r\nx\r\n"
        resp, body = _send_raw(server.port, CHUNKED_LOGIN + chunk * 200)
        assert resp.status == 400 and "framing" in json.loads(body)["message"]

    @pytest.mark.parametrize("framing", ["chunked, with extensions and trailers", "Content-Length"])
    def test_a_body_then_a_pipelined_request(self, served, framing: str) -> None:
        rig, server = served
        head = "".join(f"{k}: {v}\r\n" for k, v in rig.as_("control").items()).encode()
        body = json.dumps({"a": 1}).encode()
        if framing == "Content-Length":
            framed = f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        else:
            framed = (b"Transfer-Encoding: chunked\r\n\r\n" + b"3;name=value\r\n" + body[:3] + b"\r\n"
                      + f"{len(body) - 3:x}\r\n".encode() + body[3:] + b"\r\n" + b"0\r\nX-Trailer: yes\r\n\r\n")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /hook/nobody HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + head + framed + b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            (first, hooked), (second, livez) = _read_responses(sock, 2)
            assert first == 200 and json.loads(hooked)["data"] == {"a": 1}
            assert second == 200 and json.loads(livez) == {"status": "ok"}

    @pytest.mark.parametrize("value", ["9" * 5000, "9" * 19, "1_0", "+5", "0x10"])
    def test_a_content_length_that_is_not_plain_digits_is_400_naming_it(self, served, value: str) -> None:
        rig, server = served
        resp, body = _send_raw(server.port, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               b"application/json\r\nContent-Length: " + value.encode() + b"\r\n\r\n{}")
        message = json.loads(body)["message"]
        assert resp.status == 400 and "Content-Length" in message and value not in message
        assert _livez_ok(server.port)

    # RFC 9112, 6.1 and 6.3: framing cheroot could read otherwise than the arrival. Each
    # sends ``0`` CRLF CRLF (a whole chunked body) but declares 60000 bytes or codings the
    # arrival does not decode: a worker that took it would block reading the socket.
    @pytest.mark.parametrize("version, framing, words", [
        (b"HTTP/1.0", b"Transfer-Encoding: chunked\r\nContent-Length: 60000\r\n", "only allowed in HTTP/1.1"),
        (b"HTTP/1.0", b"Transfer-Encoding: chunked\r\n", "only allowed in HTTP/1.1"),
        (b"HTTP/1.1", b"Transfer-Encoding: chunked\r\nContent-Length: 60000\r\n", "both"),
        (b"HTTP/1.1", b"Content-Length: 60000\r\nTransfer-Encoding: chunked\r\n", "both"),
        (b"HTTP/1.1", b"Transfer-Encoding: gzip, chunked\r\n", "'gzip, chunked' is not supported"),
        (b"HTTP/1.1", b"Transfer-Encoding: chunked, gzip\r\n", "last coding must be chunked"),
        (b"HTTP/1.1", b"Transfer-Encoding: chunked, chunked\r\n", "only 'chunked', once"),
        (b"HTTP/1.1", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "only 'chunked', once"),
        (b"HTTP/1.1", b"Transfer-Encoding: xchunked\r\n", "'xchunked' is not supported"),
        (b"HTTP/1.1", b"Transfer-Encoding: chunked\r\n gzip\r\n", "folding"),
        (b"HTTP/1.1", b"X-Pad: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 60000\r\n", "folding"),
    ])
    def test_ambiguous_framing_is_400_before_any_worker(
            self, rig: Rig, version: bytes, framing: bytes, words: str) -> None:
        # one worker: were a request handed to it, /livez could not be answered
        with serving(rig.app, threads=1) as server:
            socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
            try:
                for sock in socks:
                    sock.sendall(b"POST /login " + version + b"\r\nHost: x\r\nContent-Type: "
                                 b"application/json\r\n" + framing + b"\r\n0\r\n\r\n")
                for sock in socks:
                    resp = http.client.HTTPResponse(sock)
                    resp.begin()
                    body = json.loads(resp.read())
                    assert resp.status == 400 and words in body["message"], body
                    assert resp.will_close
                    _assert_security(resp)
                assert server.workers_by_address() == {}  # refused in the arrival
                assert _livez_ok(server.port)  # the attackers' sockets still open
            finally:
                for sock in socks:
                    sock.close()

    def test_http_1_0_with_content_length_is_served(self, served) -> None:
        rig, server = served
        head = "".join(f"{k}: {v}\r\n" for k, v in rig.as_("control").items()).encode()
        resp, body = _send_raw(server.port, b"POST /execute HTTP/1.0\r\nHost: x\r\nContent-Type: "
                               b"application/json\r\n" + head
                               + f"Content-Length: {len(EXEC)}\r\n\r\n".encode() + EXEC)
        assert resp.status == 200 and json.loads(body)["response"]["errors"] == []

    def test_a_worker_refuses_framing_cheroot_reads_otherwise_without_reading_the_socket(
            self, rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
        # an arrival that let ambiguous framing through (a regression): the HTTP/1.0
        # request is de-chunked there, while cheroot frames it by its Content-Length
        monkeypatch.setattr(web_server, "_ambiguous_framing", lambda *a: None)
        with serving(rig.app, threads=1) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"POST /login HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\nContent-Length: 60000\r\n\r\n0\r\n\r\n")
                resp = http.client.HTTPResponse(sock)
                resp.begin()  # the 5 s timeout fails the test if the worker reads on
                assert resp.status == 400 and "framing" in json.loads(resp.read())["message"]
                assert resp.will_close
                _assert_security(resp)
                assert _livez_ok(server.port)
        assert any("frames its body as 60000 bytes, the arrival as chunked" in r.getMessage()
                   and r.levelno == logging.ERROR for r in caplog.records)


class TestOutOfDescriptors:
    def test_accept_failing_with_emfile_is_paced_and_logged_once(
            self, served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
        rig, server = served
        real = connections.ConnectionManager._from_server_socket
        failures = {"left": 6}

        def accept(manager: connections.ConnectionManager, sock: socket.socket) -> object:
            if failures["left"] > 0:  # the connection stays pending, as with a real EMFILE
                failures["left"] -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return real(manager, sock)

        monkeypatch.setattr(connections.ConnectionManager, "_from_server_socket", accept)
        with caplog.at_level(logging.DEBUG, logger="pihub.web.server"):
            assert _livez_ok(server.port)  # served once accept works again
        assert failures["left"] == 0
        errors = [r for r in caplog.records if r.name == "pihub.web.server" and r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "accept" in errors[0].getMessage() and errors[0].exc_info is None


# ------------------------------------------------------------------ slow readers
#: A response larger than the socket buffers (the send buffer grows to 4 MiB): a client
#: that reads next to nothing blocks the worker writing it.
BIG = b"x" * (8 << 20)
ATTACKER, OTHER = "127.0.0.1", "127.0.0.2"


def _stream_app(pause: float) -> Any:
    """A WSGI app: ``/big`` (:data:`BIG`), ``/small``, and ``/stream``: five chunks, ``pause``
    seconds apart (paced by the app, as the camera paces MJPEG frames), no Content-Length."""

    def chunks() -> Iterator[bytes]:
        for i in range(5):
            if i:
                threading.Event().wait(pause)
            yield b"chunk %d;" % i

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return chunks()
        body = BIG if path == "/big" else b"small"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def _from(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def _never_reader(port: int, source: str = ATTACKER) -> socket.socket:
    """A socket that pipelines 5 requests for :data:`BIG` and never reads a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
    return sock


def _small(sock: socket.socket) -> int:
    """Send ``GET /small`` on ``sock``; the status of the answer (5 s socket timeout)."""
    sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
    [(status, body)] = _read_responses(sock, 1)
    assert status != 200 or body == b"small"
    return status


@pytest.fixture
def attackers() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


class TestSlowReaders:
    # idle_timeout=60: only pihub's own bounds may free a worker blocked on a never-reader
    def test_an_address_that_never_reads_leaves_workers_for_others(self, attackers) -> None:
        with serving(_stream_app(0), threads=4, idle_timeout=60) as server:  # 2 workers per address
            attackers.extend(_never_reader(server.port) for _ in range(6))
            assert wait_for(lambda: server.workers_by_address().get(ATTACKER) == (2, 4)), \
                server.workers_by_address()
            with _from(OTHER, server.port) as other:
                assert _small(other) == 200
                assert _small(other) == 200  # kept alive, served again
            # served while the attacker's two workers were still blocked in send
            assert server.workers_by_address()[ATTACKER] == (2, 4)
            with _from(ATTACKER, server.port) as same:
                same.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
                assert wait_for(lambda: server.workers_by_address().get(ATTACKER) == (2, 5))
                for sock in attackers:  # unread data: a reset, which frees the blocked workers
                    sock.close()
                [(status, body)] = _read_responses(same, 1)  # parked last, served in turn
                assert (status, body) == (200, b"small")
            assert wait_for(lambda: server.workers_by_address() == {} and server.open_connections == 0), \
                (server.workers_by_address(), server.open_connections)

    def test_a_parked_client_that_closes_is_released(self, attackers) -> None:
        with serving(_stream_app(0), threads=2, idle_timeout=60) as server:  # 1 worker per address
            attackers.append(_never_reader(server.port))
            assert wait_for(lambda: server.workers_by_address().get(ATTACKER) == (1, 0))
            parked = _from(ATTACKER, server.port)
            parked.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            assert wait_for(lambda: server.workers_by_address().get(ATTACKER) == (1, 1))
            assert server.open_connections == 2
            parked.close()
            # released while the worker is still held by the never-reader
            assert wait_for(lambda: server.workers_by_address().get(ATTACKER) == (1, 0)
                            and server.open_connections == 1), server.workers_by_address()
            attackers.pop().close()
            assert wait_for(lambda: server.workers_by_address() == {} and server.open_connections == 0)

    def test_a_request_parked_too_long_gets_503(self, attackers, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(web_server, "PARKED_TIMEOUT", 0.2)
        with serving(_stream_app(0), threads=2, idle_timeout=60) as server:
            attackers.append(_never_reader(server.port))
            assert wait_for(lambda: server.workers_by_address().get(ATTACKER) == (1, 0))
            with _from(ATTACKER, server.port) as parked:
                assert _small(parked) == 503
                assert parked.recv(1) == b""  # and closed
            assert server.workers_by_address() == {ATTACKER: (1, 0)}
            attackers.pop().close()
            assert wait_for(lambda: server.workers_by_address() == {} and server.open_connections == 0)

    def test_a_client_reading_a_byte_at_a_time_is_cut_at_the_write_deadline(
            self, caplog: pytest.LogCaptureFixture) -> None:
        with serving(_stream_app(0), threads=1, idle_timeout=60, write_timeout=0.5) as server:
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            slow.settimeout(5)
            slow.connect(("127.0.0.1", server.port))
            got = bytearray()
            done = threading.Event()

            def read_slowly() -> None:  # the client's pace, not synchronisation
                with contextlib.suppress(OSError):
                    while not done.wait(0.2) and (byte := slow.recv(1)):
                        got.extend(byte)

            reader = threading.Thread(target=read_slowly, name="test-slow-reader", daemon=True)
            with caplog.at_level(logging.DEBUG, logger="pihub.web.server"):
                slow.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                reader.start()
                try:
                    # the only worker is freed while the client still reads: another is served
                    with _from(OTHER, server.port) as other:
                        assert _small(other) == 200
                    assert wait_for(lambda: server.open_connections == 0, timeout=10)
                    assert 0 < len(got) < len(BIG)
                finally:
                    done.set()
                    reader.join(5)
                    slow.close()
            assert any("not taken within 0.5 s" in r.getMessage() for r in caplog.records
                       if r.name == "pihub.web.server" and r.levelno == logging.DEBUG)
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    def test_a_stream_may_outlast_the_write_deadline_chunk_by_chunk(self) -> None:
        # each chunk is taken at once; the whole stream takes 4 pauses, past the deadline
        with serving(_stream_app(0.15), threads=1, write_timeout=0.3) as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            resp, body = _get(conn, "GET", "/stream")
            assert resp.status == 200 and body == b"".join(b"chunk %d;" % i for i in range(5))
            resp, body = _get(conn, "GET", "/big")  # the connection is still kept alive
            assert resp.status == 200 and body == BIG


# --------------------------------------------------------------------------- TLS
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all self-made."""
    need_tool(shutil.which("openssl") is not None, "openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=pihub test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", f"/CN={who}", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{who}.pem", "-days", "2", "-extfile", f"{who}.ext", cwd=d)
    # a second, unrelated CA and client, for the refused-certificate case
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem",
             "-days", "2", "-subj", "/CN=rogue", cwd=d)
    return d


def _tls_conn(port: int, pki: Path, *, cert: str | None = None) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)


@pytest.fixture
def tls_server(rig: Rig, pki: Path) -> Iterator[tuple[Rig, WebServer]]:
    server = WebServer(rig.app, port=0, threads=4, ssl_cert=str(pki / "server.pem"),
                       ssl_key=str(pki / "server.key"))
    server.start()
    try:
        yield rig, server
    finally:
        server.stop()


class TestTLS:
    def test_serves_https_with_hsts_and_secure_cookies(self, tls_server, pki: Path) -> None:
        rig, server = tls_server
        assert server.url.startswith("https://")
        conn = _tls_conn(server.port, pki)
        resp, body = _get(conn, "GET", "/livez")
        assert resp.status == 200
        _assert_security(resp, tls=True)
        login = json.dumps({"username": "alice", "password": PASSWORD}).encode()
        resp, body = _get(conn, "POST", "/login", login, {"Content-Type": "application/json"})
        cookie = resp.getheader("Set-Cookie")
        assert resp.status == 200
        assert "; Secure" in cookie and "; HttpOnly" in cookie and "; SameSite=Strict" in cookie
        headers = {**rig.as_("control"), "Content-Type": "application/json"}
        resp, body = _get(conn, "POST", "/execute", EXEC, headers)
        assert resp.status == 200 and json.loads(body)["response"]["errors"] == []

    def test_plain_http_to_the_tls_port_is_dropped_and_harmless(self, tls_server, pki: Path) -> None:
        rig, server = tls_server
        plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            _get(plain, "GET", "/livez")
        assert _get(_tls_conn(server.port, pki), "GET", "/livez")[0].status == 200

    def test_a_silent_client_does_not_stall_the_others(self, tls_server, pki: Path) -> None:
        rig, server = tls_server
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            # served while the silent connection is still open and unanswered (the client
            # times out after 5 s; the server would wait 10 s for the silent one)
            assert _get(_tls_conn(server.port, pki), "GET", "/livez")[0].status == 200
            silent.setblocking(False)
            with pytest.raises(BlockingIOError):
                silent.recv(1)
        finally:
            silent.close()

    def test_untrusted_server_certificate_is_refused_by_clients(self, tls_server, pki: Path) -> None:
        rig, server = tls_server
        ctx = ssl.create_default_context(cafile=str(pki / "rogue.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(conn, "GET", "/livez")


class TestMutualTLS:
    @pytest.fixture
    def mtls(self, rig: Rig, pki: Path) -> Iterator[WebServer]:
        server = WebServer(rig.app, port=0, threads=2, ssl_cert=str(pki / "server.pem"),
                           ssl_key=str(pki / "server.key"), ssl_cafile=str(pki / "ca.pem"))
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def test_a_client_certificate_from_the_ca_is_required(self, mtls: WebServer, pki: Path) -> None:
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _get(_tls_conn(mtls.port, pki), "GET", "/livez")
        resp, _ = _get(_tls_conn(mtls.port, pki, cert="client"), "GET", "/livez")
        assert resp.status == 200

    def test_a_client_certificate_from_another_ca_is_refused(self, mtls: WebServer, pki: Path) -> None:
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _get(_tls_conn(mtls.port, pki, cert="rogue"), "GET", "/livez")

    def test_the_certificate_does_not_replace_credentials(self, mtls: WebServer, pki: Path) -> None:
        resp, body = _get(_tls_conn(mtls.port, pki, cert="client"), "POST", "/execute", EXEC,
                          {"Content-Type": "application/json"})
        assert resp.status == 401


def test_make_ssl_context_refuses_a_mismatched_key(pki: Path) -> None:
    with pytest.raises(ssl.SSLError):
        make_ssl_context(str(pki / "server.pem"), str(pki / "client.key"))
    ctx = make_ssl_context(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_chunk_sent_near_its_deadline_does_not_shorten_the_next_chunks_timeout() -> None:
    # a slow chunk lowers the socket's timeout to the time it had left; the next chunk's
    # fresh deadline must get the server's timeout back, or a long stream dies later on
    server = types.SimpleNamespace(timeout=10.0, write_timeout=30.0)
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(10.0)
        out = web_server._ResponseIO(a, server)  # type: ignore[arg-type]
        out.deadline = time.monotonic() + 0.5
        out.write(b"x")
        assert a.gettimeout() <= 0.5
        out.deadline = None  # the next chunk (as _Request.write does)
        out.write(b"y")
        assert a.gettimeout() == 10.0
        assert b.recv(2) == b"xy"
