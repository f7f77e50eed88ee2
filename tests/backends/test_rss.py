"""The rss backend against a real local HTTP server (http.server in a thread) serving a feed
that changes, with the real SQLite store; poll intervals run on a ManualClock."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pihub_testing import EventRecorder, finishes, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.rss import RssBackend, parse_feed
from pihub.clock import ManualClock
from pihub.errors import ActionError, ConfigProblems, FeedError
from pihub.store import Store


def rss(items: list[tuple[str, str]], title: str = "Pi news") -> bytes:
    """An RSS 2.0 document; items are (guid, title), newest first."""
    body = "".join(f"<item><guid>{g}</guid><title>{t}</title><link>http://example.org/{g}</link>"
                   f"<pubDate>Tue, 02 Jan 2024 10:00:00 +0100</pubDate><description>about {t}&nbsp;!</description>"
                   f"<category>pi</category></item>" for g, t in items)
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>{body}</channel></rss>'.encode()


def _serve(handler: type[http.server.BaseHTTPRequestHandler], path: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A quiet threaded HTTP server on a free loopback port, serving in a daemon thread;
    ``(server, url of path)``."""
    quiet = type("Quiet" + handler.__name__, (handler,), {"log_message": lambda self, *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), quiet)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}{path}"


class FeedServer:
    """Serves ``self.body`` at /feed.xml with an ETag; answers 304 to a matching If-None-Match."""

    def __init__(self) -> None:
        self.body = rss([("1", "first")])
        self.status = 200
        self.requests: list[dict[str, str]] = []
        self.send_length = True
        self.missing = 0  # bytes announced by Content-Length but never sent
        self.lengths: list[str] | None = None  # Content-Length headers sent instead of the true one
        self.reason: str | None = None  # the reason phrase of a status other than 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(dict(self.headers))
                etag = f'"{hash(outer.body) & 0xffffffff:x}"'
                if outer.status != 200:
                    self.send_error(outer.status, outer.reason)
                    return
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("ETag", etag)
                for length in outer.lengths if outer.lengths is not None else [str(len(outer.body) + outer.missing)]:
                    if outer.send_length:
                        self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(outer.body)

        self.server, self.url = _serve(Handler, "/feed.xml")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    s = FeedServer()
    yield s
    s.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def run(clock):
    opened = []

    def start(config, store=None):
        backend = RssBackend({"poll_interval": 60, **config}, clock=clock, store=store)
        rec = EventRecorder()
        backend.open(rec)
        opened.append(backend)
        return backend, rec

    yield start
    for b in opened:
        b.close()


class TrickleServer:
    """Answers 200 with ``Content-Length: 100000`` and then one byte every 20 ms, for ever (in
    the headers when ``in_headers``), until the client goes away or the server closes."""

    def __init__(self, in_headers: bool) -> None:
        self.in_headers = in_headers
        self.got_request = threading.Event()
        self.client_gone = threading.Event()
        self._closing = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.got_request.set()
                try:
                    if in_headers:
                        self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                    else:
                        self.send_response(200)
                        self.send_header("Content-Length", "100000")
                        self.end_headers()
                    while not outer._closing.wait(0.02):  # the pace of the trickle, not a synchronisation
                        self.wfile.write(b"a" if in_headers else b" ")
                        self.wfile.flush()
                except OSError:
                    outer.client_gone.set()

        self.server, self.url = _serve(Handler, "/slow.xml")

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=[False, True], ids=["body", "headers"])
def trickle(request) -> Iterator[TrickleServer]:
    s = TrickleServer(in_headers=request.param)
    yield s
    s.close()


def _polled(server: FeedServer, n: int, backend: RssBackend, polls: int | None = None) -> None:
    """Wait until the server saw ``n`` requests and the backend finished ``polls`` (default ``n``)."""
    polls = n if polls is None else polls
    assert wait_for(lambda: len(server.requests) >= n and backend.feed_status()["feeds"][0]["polls"] >= polls), \
        (server.requests, backend.feed_status())
    assert wait_for(lambda: backend._poke.is_set() is False and _idle(backend))


def _idle(backend: RssBackend) -> bool:
    clock = backend.clock
    return isinstance(clock, ManualClock) and clock.waiters > 0


def _titles(rec: EventRecorder) -> list[str]:
    return [e.args["title"] for e in rec.of("NewFeedEntryEvent")]


def test_new_entries_fire_once_even_across_a_restart(run, server, clock, tmp_path):
    store = Store(tmp_path / "pihub.db")
    try:
        backend, rec = run({"feeds": [server.url]}, store)
        _polled(server, 1, backend)
        assert _titles(rec) == ["first"]
        entry = rec.of("NewFeedEntryEvent")[0]
        assert entry.args == {
            "feed_url": server.url, "feed_title": "Pi news", "id": "1", "url": "http://example.org/1",
            "title": "first", "published": "2024-01-02T09:00:00+00:00", "summary": "about first\xa0!",
            "content": None, "author": None, "tags": ["pi"]}
        update = rec.of("FeedUpdateEvent")[0]
        assert update.args["source_url"] == server.url and update.args["response"] == [entry.args]
        assert update.type.wire_name == "platypush.message.event.http.rss.NewFeedEvent"

        server.body = rss([("3", "third"), ("2", "second"), ("1", "first")])
        clock.advance(60)
        _polled(server, 2, backend)
        assert _titles(rec) == ["first", "second", "third"]  # oldest first
        assert [e["title"] for e in rec.of("FeedUpdateEvent")[1].args["response"]] == ["second", "third"]
        backend.close()

        server.body = rss([("4", "fourth"), ("3", "third"), ("2", "second"), ("1", "first")])
        again, rec2 = run({"feeds": [server.url]}, store)  # a restart: same store, new backend
        _polled(server, 3, again, polls=1)
        assert _titles(rec2) == ["fourth"]
    finally:
        store.close()


def test_a_304_sends_nothing_and_keeps_running(run, server, clock):
    backend, rec = run({"feeds": [server.url]})
    _polled(server, 1, backend)
    n = len(rec.events)
    clock.advance(60)
    _polled(server, 2, backend)
    assert "If-None-Match" not in server.requests[0] and server.requests[1]["If-None-Match"].startswith('"')
    assert backend.feed_status()["feeds"][0]["last_http"] == 304
    assert len(rec.events) == n
    assert backend.status == BackendStatus.RUNNING


def test_a_restart_sends_the_stored_etag(run, server, clock, tmp_path):
    with Store(tmp_path / "pihub.db") as store:
        backend, _ = run({"feeds": [server.url]}, store)
        _polled(server, 1, backend)
        backend.close()
        again, rec = run({"feeds": [server.url]}, store)
        _polled(server, 2, again, polls=1)
        assert "If-None-Match" in server.requests[1]
        assert again.feed_status()["feeds"][0]["last_http"] == 304 and rec.events == []


@pytest.mark.parametrize(("status", "body", "reason"), [
    (500, b"", "HTTP 500 Internal Server Error"),
    (200, b"<html><body>moved</body></html>", "not an RSS or Atom feed (its root element is <html>)"),
    (200, b"/etc/passwd", "not well-formed XML ("),  # parsed as a document, never opened as a path
    (200, b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><rss>&b;</rss>',
     "the document declares XML entities (refused: no feed needs them)"),
    (200, '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">]><rss>&a;</rss>'.encode("utf-16"),
     "the document declares XML entities (refused: no feed needs them)"),
])
def test_a_broken_feed_degrades_with_the_reason_and_recovers(run, server, clock, status, body, reason):
    server.status, server.body = status, body
    backend, rec = run({"feeds": [server.url + "?token=s3cret"]})
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
    assert backend.error.startswith(f"feed {server.url}: {reason}")  # the query (a token) is not shown
    assert rec.events == []
    server.status, server.body = 200, rss([("1", "first")])
    clock.advance(60)
    assert wait_for(lambda: backend.status == BackendStatus.RUNNING)
    assert _titles(rec) == ["first"]


def test_a_trickling_feed_ends_at_the_timeout_and_the_others_are_polled(run, server, trickle):
    backend, rec = run({"feeds": [trickle.url + "?token=s3cret", server.url], "timeout": 0.5})
    assert wait_for(lambda: backend.feed_status()["feeds"][1]["polls"] == 1 and backend.status ==
                    BackendStatus.DEGRADED), backend.feed_status()
    reason = "no answer within 0.5 s" if trickle.in_headers else "the download took more than timeout (0.5 s;"
    assert backend.error.startswith(f"feed {trickle.url}: {reason}")  # the query (a token) is not shown
    assert _titles(rec) == ["first"]  # the other feed was polled after it
    assert backend.feed_status()["feeds"][1]["ok"] is True
    assert trickle.client_gone.wait(5)  # the trickling connection was dropped
    finishes(backend.close, what="close()")


def test_close_cuts_a_poll_in_flight(run, trickle):
    backend, _ = run({"feeds": [trickle.url], "timeout": 300})
    assert trickle.got_request.wait(5)
    finishes(backend.close, what="close() during a 300 s download")  # would wait for the timeout
    assert trickle.client_gone.wait(5)
    assert backend.status == BackendStatus.STOPPED


def test_a_body_cut_short_is_refused(run, server):
    server.missing = 10  # Content-Length announces 10 bytes more than are sent before the close
    backend, rec = run({"feeds": [server.url]})
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
    assert backend.error.startswith(f"feed {server.url}: the connection closed 10 bytes before the end of the "
                                    f"document ({len(server.body)} bytes read)")
    assert rec.events == []


@pytest.mark.parametrize("send_length", [True, False])
def test_an_oversized_feed_is_refused(run, server, send_length):
    server.send_length = send_length  # without Content-Length: refused while reading
    server.body = rss([(str(i), "x" * 100) for i in range(200)])
    backend, rec = run({"feeds": [server.url], "max_bytes": 4096})
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
    assert "more than max_bytes (4096)" in backend.error or "larger than max_bytes (4096 bytes)" in backend.error
    assert rec.events == []


@pytest.mark.parametrize(("lengths", "problem"), [
    *[([v], f"the Content-Length header {shown} is not a byte count (allowed: 1 to 18 ASCII digits 0-9)")
      for v, shown in [("\u00b2", "'\u00b2'"),  # str.isdigit() says yes; int() raised and killed the poller
                       ("1_0", "'1_0'"), ("+5", "'+5'"), ("-1", "'-1'"), ("", "''"), ("7 7", "'7 7'"),
                       ("1" * 19, repr("1" * 19)), ("9" * 5000, repr("9" * 37 + "..."))]],
    (["10", "12"], "the response has different Content-Length headers (10 and 12; allowed: one length)"),
], ids=["superscript", "underscore", "plus", "minus", "empty", "space", "19-digits", "5000-digits", "two"])
def test_a_content_length_that_is_not_one_ascii_number_is_a_feed_error(run, server, clock, lengths, problem):
    server.lengths = lengths
    backend, rec = run({"feeds": [server.url]})
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED), backend.feed_status()
    assert backend.error == f"feed {server.url}: {problem}"
    assert rec.events == []
    server.lengths = [str(len(server.body))] * 2  # repeated with one value: read
    clock.advance(60)
    assert wait_for(lambda: backend.status == BackendStatus.RUNNING), backend.feed_status()
    assert _titles(rec) == ["first"]


@pytest.mark.parametrize("date", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                  "Fri, 31 Dec 9999 23:59:59 -1400", "Tue, 02 Jan 99999999999999999999 10:00:00 +0100"])
def test_an_entry_date_no_datetime_holds_is_read_as_no_date(run, server, clock, date):
    server.body = (f"<rss><channel><title>T</title><item><guid>1</guid><title>odd</title><pubDate>{date}</pubDate>"
                   f"</item></channel></rss>").encode()
    atom = (f'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>a</id><updated>{date}</updated></entry>'
            f'</feed>').encode()
    assert parse_feed(atom)[1][0]["published"] is None
    backend, rec = run({"feeds": [server.url]})
    _polled(server, 1, backend)
    assert [e.args["published"] for e in rec.of("NewFeedEntryEvent")] == [None]
    assert backend.status == BackendStatus.RUNNING
    server.body = rss([("2", "next")])
    clock.advance(60)
    _polled(server, 2, backend)  # the poller lives on
    assert _titles(rec) == ["odd", "next"]


def test_an_unexpected_error_degrades_only_its_feed_and_the_poller_goes_on(run, server, clock, monkeypatch, caplog):
    other = FeedServer()
    try:
        other.body = rss([("f", "fine")])
        server.body = rss([("b", "boom")])
        secret_url = server.url + "?token=s3cret"

        def buggy(body: bytes):  # a bug, or input nobody foresaw, in one feed's poll
            if b"boom" in body:
                raise RuntimeError(f"bug\nnear {secret_url}\x1b[31m " + "x" * 500)
            return parse_feed(body)

        monkeypatch.setattr("pihub.backends.rss.parse_feed", buggy)
        backend, rec = run({"feeds": [secret_url, other.url]})
        assert wait_for(lambda: backend.feed_status()["feeds"][1]["polls"] == 1 and backend.status ==
                        BackendStatus.DEGRADED), backend.feed_status()
        status = backend.feed_status()
        problem = status["feeds"][0]["problem"]
        assert problem == f"unexpected RuntimeError: bug near {server.url} [31m " + "x" * (117 - 15 - len(server.url)) \
            + "...", problem  # one line, shortened, without the query (a token)
        assert backend.error == f"feed {server.url}: {problem}"
        assert status["feeds"][1]["ok"] is True and _titles(rec) == ["fine"]
        assert status["unexpected_errors"] == 1

        clock.advance(60)
        _polled(server, 2, backend)
        assert backend.feed_status()["unexpected_errors"] == 2
        logged = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
        assert len(logged) == 1, logged  # rate-limited: the second failure within the minute is counted only
        assert "s3cret" not in caplog.text and "\x1b" not in caplog.text

        server.body = rss([("2", "fixed")])
        clock.advance(60)
        assert wait_for(lambda: backend.status == BackendStatus.RUNNING), backend.feed_status()
        assert "fixed" in _titles(rec)
    finally:
        other.close()


def test_an_http_reason_with_control_characters_is_one_short_line(run, server, caplog):
    server.status, server.reason = 500, "Bad\rX-Injected: 1\x1b[2J\t" + "r" * 1000
    backend, _ = run({"feeds": [server.url]})
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
    problem = backend.feed_status()["feeds"][0]["problem"]
    assert problem == "HTTP 500 Bad X-Injected: 1 [2J " + "r" * (297 - 31) + "..."
    assert backend.error == f"feed {server.url}: {problem}"
    assert "\r" not in caplog.text and "\x1b" not in caplog.text


def test_a_redirect_just_before_the_deadline_gets_only_the_time_left(run):
    """A 302 sent 0.4 s before the deadline to a listener that never accepts: the connect
    there gets those 0.4 s, not a fresh ``timeout`` (which made the poll 1.8 x timeout)."""
    timeout, margin = 2.0, 1.0  # a correctness bound (a fresh timeout is 1.6 s past it), not a benchmark
    hang = socket.socket()
    fill: list[socket.socket] = []  # connections that fill the listener's backlog: the next connect hangs
    closing = threading.Event()
    try:
        hang.bind(("127.0.0.1", 0))
        hang.listen(0)
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            fill.append(s)
            s.connect_ex(hang.getsockname())
        with pytest.raises(TimeoutError):  # the rig: a connect there hangs
            socket.create_connection(hang.getsockname(), timeout=0.2).close()
        target = "http://{}:{}/feed.xml".format(*hang.getsockname())

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                closing.wait(timeout - 0.4)  # the server's pace, not a synchronisation
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server, url = _serve(Redirect, "/feed.xml")
        try:
            start = time.monotonic()
            backend, _ = run({"feeds": [url], "timeout": timeout})
            assert wait_for(lambda: backend.status == BackendStatus.DEGRADED, timeout=2 * timeout + 5)
            elapsed = time.monotonic() - start
            assert backend.error == f"feed {url}: no answer within 2 s"
            assert elapsed < timeout + margin, f"the poll took {elapsed:.2f} s with timeout {timeout} s"
            finishes(backend.close, what="close()")
        finally:
            closing.set()
            server.shutdown()
            server.server_close()
    finally:
        for s in [hang, *fill]:
            s.close()


def test_max_entries_is_exact_and_the_rest_are_marked_seen(run, server, clock):
    server.body = rss([(str(i), f"e{i}") for i in range(10, 0, -1)])
    backend, rec = run({"feeds": [{"url": server.url, "max_entries": 3}]})
    _polled(server, 1, backend)
    assert _titles(rec) == ["e8", "e9", "e10"]  # the newest three, oldest first
    assert rec.of("FeedUpdateEvent")[0].args["skipped"] == 7
    server.body = rss([(str(i), f"e{i}") for i in range(11, 0, -1)])
    clock.advance(60)
    _polled(server, 2, backend)
    assert _titles(rec) == ["e8", "e9", "e10", "e11"]


def test_announce_existing_false_marks_the_first_poll_seen(run, server, clock):
    server.body = rss([("2", "b"), ("1", "a")])
    backend, rec = run({"feeds": [server.url], "announce_existing": False})
    _polled(server, 1, backend)
    assert rec.events == []
    server.body = rss([("3", "c"), ("2", "b"), ("1", "a")])
    clock.advance(60)
    _polled(server, 2, backend)
    assert _titles(rec) == ["c"]


def test_the_poll_action_polls_now_and_names_unknown_feeds(run, server):
    backend, rec = run({"feeds": [server.url]})
    _polled(server, 1, backend)
    server.body = rss([("2", "second"), ("1", "first")])
    assert backend.poll(server.url) == {"polling": [server.url]}
    _polled(server, 2, backend)
    assert _titles(rec) == ["first", "second"]
    with pytest.raises(ActionError, match=r"no feed 'http://nope/x' is configured \(feeds: http://127"):
        backend.poll("http://user:pw@nope/x?k=v")


_ENTITY_DOC: str = ('<?xml version="1.0" encoding="{enc}"?><!DOCTYPE rss [<!ENTITY e "{big}">]><rss version="2.0">'
                    '<channel><title>t</title><item><guid>1</guid><description>{refs}</description></item>'
                    '</channel></rss>')


@pytest.mark.parametrize(("encoding", "doc"), [
    ("UTF-16", lambda d: b"\xff\xfe" + d.encode("utf-16-le")),  # the byte search saw no b"<!ENTITY" here
    ("UTF-16", lambda d: b"\xfe\xff" + d.encode("utf-16-be")),
    ("UTF-8", lambda d: d.encode()),
    ("UTF-8", lambda d: d.replace("<!ENTITY e", '<!ENTITY % p "x"><!ENTITY e').encode()),  # a parameter entity
    ("UTF-16", lambda d: d.encode("utf-16-le")),  # no BOM: expat reads the encoding from "<\0?\0"
], ids=["utf16-le", "utf16-be", "utf8", "utf8-parameter", "utf16-le-no-bom"])
def test_entity_declarations_are_refused_in_any_encoding(encoding, doc):
    body = doc(_ENTITY_DOC.format(enc=encoding, big="A" * 30000, refs="&e;" * 60))
    with pytest.raises(FeedError) as e:
        parse_feed(body)
    assert str(e.value) == "the document declares XML entities (refused: no feed needs them)"


@pytest.mark.parametrize("encode", [lambda d: d.encode("utf-16"), lambda d: b"\xfe\xff" + d.encode("utf-16-be")],
                         ids=["utf16-le", "utf16-be"])
def test_a_utf16_feed_without_a_dtd_is_read(encode):
    doc = rss([("1", "\u00e9t\u00e9 \u2603")]).decode().replace('<?xml version="1.0"?>',
                                                                   '<?xml version="1.0" encoding="UTF-16"?>')
    title, entries = parse_feed(encode(doc.replace("&nbsp;", "&#160;")))
    assert title == "Pi news" and [(e["id"], e["title"]) for e in entries] == [("1", "\u00e9t\u00e9 \u2603")]


def test_an_rss091_external_doctype_is_read():
    body = (b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
            b'"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel><title>Old</title>'
            b'<item><title>x</title><link>http://o/1</link></item></channel></rss>')
    assert parse_feed(body) == ("Old", [{"id": None, "url": "http://o/1", "title": "x", "published": None,
                                         "summary": None, "content": None, "author": None, "tags": []}])


def test_atom_and_rss1_are_read_and_entries_without_ids_are_keyed():
    atom = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>
      <entry><id>urn:1</id><title>one</title><link rel="alternate" href="http://a/1"/>
      <updated>2024-01-02T10:00:00Z</updated><summary>s</summary><content>c</content>
      <author><name>Ann</name></author><category term="x"/></entry></feed>"""
    title, entries = parse_feed(atom)
    assert title == "A" and entries == [{"id": "urn:1", "url": "http://a/1", "title": "one",
                                         "published": "2024-01-02T10:00:00+00:00", "summary": "s",
                                         "content": "c", "author": "Ann", "tags": ["x"]}]
    rdf = b"""<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
      xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>R</title></channel>
      <item rdf:about="http://r/1"><title>r1</title><link>http://r/1</link><dc:date>2024-01-02</dc:date></item></rdf:RDF>"""
    title, entries = parse_feed(rdf)
    assert title == "R" and entries[0]["id"] == "http://r/1" and entries[0]["published"].startswith("2024-01-02")
    with pytest.raises(FeedError, match="not an RSS or Atom feed"):
        parse_feed(b"<opml/>")


def test_entries_without_id_or_link_are_deduplicated_by_content(run, server, clock):
    server.body = (b'<rss><channel><title>T</title><item><title>no id</title><description>d</description></item>'
                   b'</channel></rss>')
    backend, rec = run({"feeds": [server.url]})
    _polled(server, 1, backend)
    server.body += b" "  # a new ETag, the same entry
    clock.advance(60)
    _polled(server, 2, backend)
    assert _titles(rec) == ["no id"]


@pytest.mark.parametrize(("config", "message"), [
    ({"feeds": []}, "feeds: must list at least one feed URL"),
    ({"feeds": ["file:///etc/passwd"]}, "feeds[0].url: 'file:///etc/passwd' is not an http(s) URL (allowed: "
                                        "http://host/path, https://host/path)"),
    ({"feeds": ["https://u:pw@example.org/f?key=k", "ftp://x/y"]}, "feeds[1].url: 'ftp://x/y' is not an http(s) URL"),
    ({"feeds": [{"url": "http://x/f", "headers": {"X": "a\r\nInjected: 1"}}]},
     "feeds[0].headers: header 'X' must be a string name with a one-line string value"),
    ({"feeds": [{"type": "platypush.backend.http.request.JsonHttpRequest", "url": "http://x/f"}]},
     "feeds[0].type"),
    ({"feeds": ["http://x/f"], "max_bytes": 10}, "max_bytes"),
])
def test_bad_config_names_the_key_and_what_is_allowed(config, message):
    with pytest.raises(ConfigProblems) as e:
        RssBackend(config)
    assert message in str(e.value)
    assert "pw" not in str(e.value)


def test_platypush_keys_are_read():
    legacy = RssBackend({"requests": [{"type": "platypush.backend.http.request.rss.RssUpdates",
                                       "url": "https://example.org/f", "title": "T", "poll_seconds": 120,
                                       "max_entries": 10, "params": {"a": "1"}}]})
    feed = legacy.feeds[0]
    assert (feed.url, feed.title, feed.interval, feed.max_entries) == ("https://example.org/f?a=1", "T", 120.0, 10)
    plugin = RssBackend({"subscriptions": ["https://example.org/f"], "poll_seconds": 300})
    assert plugin.feeds[0].interval == 300.0
