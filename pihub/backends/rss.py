"""RSS/Atom feeds polled on an interval: new entries become ``NewFeedEntryEvent`` s, once.

Config (section ``rss``; Platypush's ``rss`` plugin keys are accepted as they are, and its
legacy ``backend.http.poll`` section is read as this one, ``requests`` as ``feeds``)::

    rss:
      feeds:                          # required: URLs, or mappings
        - https://example.com/feed.xml
        - url: https://example.org/atom
          title: Example              # else the feed's own title
          poll_interval: 3600         # s (alias poll_seconds); default: the section's
          max_entries: 5              # default: the section's
          headers: {Authorization: !env FEED_AUTH}
      poll_interval: 900              # s between polls of a feed (alias poll_seconds)
      timeout: 20                     # s: connect, and the whole download of one poll
      max_bytes: 2097152              # a larger feed is refused (no unbounded memory)
      max_entries: 20                 # new entries announced per poll and feed; the rest are marked seen
      announce_existing: true         # first poll of a feed never seen: announce what it holds
      remember: 1000                  # seen entries kept per feed (never fewer than the feed holds)
      user_agent: pihub/0.1 (RSS poller)

Each poll is a conditional GET: the ``ETag`` and ``Last-Modified`` of the last answer are
sent back (``If-None-Match``/``If-Modified-Since``) and a ``304`` costs nothing. New
entries (by id: the ``guid``/Atom ``id``, else the link, else a digest of title, date
and text) are recorded in the store, then emitted as ``NewFeedEntryEvent`` (oldest first)
and one ``FeedUpdateEvent`` per poll with the list (Platypush's ``NewFeedEvent`` from
``backend.http.poll``). Recording before emitting means a crash can lose an announcement
but a restart never repeats one. The hub hands the backend its SQLite store (the
``feeds``/``feed_entries`` tables, :mod:`pihub.store`); without one (tests, ``pihub
exec``) the seen entries live in memory until close.

A feed that fails (unreachable, an HTTP error, a timeout, a ``Content-Length`` that is not
1 to 18 ASCII digits, larger than ``max_bytes``, not well-formed XML, not RSS or Atom, or
any unexpected exception: counted in ``unexpected_errors`` and logged at most once a
minute) puts the backend in ``degraded`` with the reason for each failing feed, on one
line, shortened, without the feed's credentials; it is ``running`` again once every feed
answers. One thread (``pihub-rss``) polls the feeds in turn and outlives any feed's
failure: a slow feed delays the others by at most ``timeout`` (redirects included; the
name lookup is the system resolver's and not bounded by it). An entry date that no
datetime holds (before year 1 or after 9999 in UTC) is read as no date.

Parser: the standard library's ElementTree (expat), chosen over feedparser by
measurement (x86-64, a 100-entry 34 KiB RSS 2.0 feed): RSS +0.8 MB vs +11.2 MB after the
import and a parse, 0.3 ms vs 15 ms per parse, 3 ms vs 50 ms to import, no dependency.
expat's handlers build the tree (an ElementTree ``TreeBuilder``) so that expat itself
refuses entity declarations: about twice ``ET.fromstring``'s time (2.3 vs 1.2 ms for a
47 KB 100-item feed on a loaded x86-64 machine).
It reads RSS 2.0/0.9x, RSS 1.0 (RDF) and Atom 1.0; HTML named entities (``&nbsp;``,
which sloppy feeds use undeclared) are read as their characters. What it refuses where
feedparser guesses: XML that is not well-formed (the reason names the line), and any
document that declares entities, in any encoding (no feed needs them; this is the
billion-laughs attack). A DOCTYPE naming only an external DTD (RSS 0.91's) is read: it is
never fetched.

Unlike Platypush: entries are deduplicated by id, not by "published after the newest one
seen" (which drops entries with no date, back-dated ones and ties); ``max_entries`` is
exact (it announced one more); the HTTP status is checked before parsing (it parsed error
pages); the body is read with a size bound and a total deadline; requests are
conditional; and the body is parsed as a document only (feedparser, given the body as a
string, opens it as a URL or a local file path when it looks like one, so a hostile
feed whose body is ``/etc/passwd`` made the peer read that file).

Actions: ``rss.status()`` (the method :meth:`RssBackend.feed_status`), ``rss.poll(url)``
(poll now).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import html.entities
import http.client
import io
import math
import re
import socket
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final
from xml.parsers import expat

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit, emit_counted
from pihub.clock import Clock
from pihub.config.schema import Field, Schema, show
from pihub.errors import ActionError, ConfigProblem, ConfigProblems, FeedError, StoreError
from pihub.events import CATALOGUE, Event
from pihub.limits import MAX_LENGTH_DIGITS, content_length
from pihub.logs import LogLimiter
from pihub.plugin import action

if TYPE_CHECKING:
    from pihub.store import Store

__all__ = ["FeedError", "RssBackend", "parse_feed"]

_ENTRY_EVENT: Final = CATALOGUE.get("NewFeedEntryEvent")
_UPDATE_EVENT: Final = CATALOGUE.get("FeedUpdateEvent")
_LEGACY_TYPE: Final = "platypush.backend.http.request.rss.RssUpdates"
_CHUNK: Final = 65536  # bytes per read of the body
_MAX_KEY: Final = 256  # longest entry key stored as is; longer ones are stored as a digest
_MAX_PROBLEM: Final = 300  # characters of a feed's problem kept for statuses and logs
_MAX_UNEXPECTED: Final = 120  # characters of an unexpected exception's message in a problem
_FAILURE_LOG_BURST, _FAILURE_LOG_WINDOW = 1, 60.0  # unexpected poll failures logged: lines per window (s)

_FEED_SCHEMA: Final = Schema({
    "url": Field(str, doc="the feed's http(s) URL"),
    "title": Field(str, None, doc="the feed's name in events; default: the title the feed gives"),
    "poll_interval": Field(float, None, min=1.0, max=7 * 86400.0, aliases=("poll_seconds",),
                           doc="seconds between polls of this feed; default: the section's"),
    "max_entries": Field(int, None, min=1, max=10_000, doc="new entries announced per poll; default: the section's"),
    "headers": Field(dict, {}, doc="extra request headers (values may be !env secrets)"),
    "params": Field(dict, {}, doc="query parameters added to the URL (Platypush's http.poll key)"),
    "type": Field(str, _LEGACY_TYPE, choices=(_LEGACY_TYPE,),
                  doc="Platypush's backend.http.poll request type; only RssUpdates is read"),
    "timeout": Field(float, None, deprecated="pihub applies the section's timeout to every feed; remove it"),
    "digest_format": Field(str, None, deprecated="pihub writes no digest files; hooks get the entries"),
    "extract_content": Field(bool, None, deprecated="pihub does not fetch the linked pages; remove it"),
}, doc="one feed")

_FIELDS: Final = {
    "feeds": Field(list, aliases=("subscriptions", "requests"),
                   doc="the feeds: URLs, or mappings with url, title, poll_interval, max_entries, headers"),
    "poll_interval": Field(float, 900.0, min=1.0, max=7 * 86400.0, aliases=("poll_seconds",),
                           doc="seconds between two polls of a feed"),
    "timeout": Field(float, 20.0, min=0.1, max=300.0,
                     doc="seconds to connect, and for the whole download of one poll"),
    "max_bytes": Field(int, 2 * 1024 * 1024, min=1024, max=64 * 1024 * 1024,
                       doc="largest feed document read, in bytes; a larger one is refused"),
    "max_entries": Field(int, 20, min=1, max=10_000,
                         doc="new entries announced per poll of a feed; the rest are marked seen"),
    "announce_existing": Field(bool, True, doc="on the first poll of a feed never seen, announce the entries "
                                               "it holds (up to max_entries); false marks them seen"),
    "remember": Field(int, 1000, min=10, max=1_000_000,
                      doc="seen entries kept per feed (at least as many as the feed holds)"),
    "user_agent": Field(str, "pihub/0.1 (RSS poller)", doc="the User-Agent header of the requests"),
}


@dataclass(eq=False)
class _Feed:
    """One configured feed and what its polls learnt."""

    url: str
    shown: str  # the URL without credentials or query, for logs and statuses
    title: str | None
    interval: float
    max_entries: int
    headers: dict[str, str]
    due: float = 0.0
    feed_title: str | None = None
    problem: str | None = None
    last_http: int | None = None
    polls: int = 0
    new_entries: int = 0
    memory: OrderedDict[str, None] = field(default_factory=OrderedDict)  # seen keys without a store
    validators: tuple[str | None, str | None] | None = None  # (etag, last_modified); None: never polled


def _show_url(url: str) -> str:
    """``url`` without user info or query (they may hold credentials)."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


def _one_line(text: str, limit: int = _MAX_PROBLEM) -> str:
    """``text`` for a status or a log line: control characters (newlines, escapes) and runs of
    white space as one space, at most ``limit`` characters (cut with ``...``)."""
    text = "".join(c if c.isprintable() else " " for c in text[:limit * 4])
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib also follows ftp://)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise FeedError(f"redirected to a non-http(s) URL ({urllib.parse.urlsplit(newurl).scheme}:)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Download:
    """The deadline of the poll in flight and its socket, shared by the poller and ``close()``.

    Every read of a response (status line, headers, body) sets the socket's timeout to
    the time left, so a server that trickles bytes cannot stretch a poll past
    ``timeout``; :meth:`cut` shuts the socket so that ``close()`` need not wait for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadline = math.inf  # time.monotonic() seconds
        self._stopping: threading.Event | None = None
        self._sock: socket.socket | None = None

    def start(self, timeout: float, stopping: threading.Event) -> None:
        """A poll begins: it must be over within ``timeout`` seconds."""
        with self._lock:
            self._deadline = time.monotonic() + timeout
            self._stopping, self._sock = stopping, None

    def end(self) -> None:
        with self._lock:
            self._sock = None

    def left(self) -> float:
        """Seconds left before the deadline.

        Raises:
            TimeoutError: none is left.
        """
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the poll's deadline passed")
        return left

    def track(self, sock: socket.socket) -> None:
        """The poll's connection is ``sock`` (cut at once if the backend is stopping)."""
        with self._lock:
            self._sock = sock
            if self._stopping is not None and self._stopping.is_set():
                self._shut(sock)

    def cut(self) -> None:
        """Shut the poll's socket down: a blocked read returns at once."""
        with self._lock:
            if self._sock is not None:
                self._shut(self._sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:  # socket.socket's own: SSLSocket.shutdown would drop its SSL object under the reader
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


class _DeadlineIO(io.RawIOBase):
    """A response's socket stream whose every read times out at the poll's deadline."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, download: _Download) -> None:
        super().__init__()
        self._raw, self._sock, self._download = raw, sock, download

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int | None:
        self._sock.settimeout(self._download.left())
        return self._raw.readinto(b)

    def close(self) -> None:
        self._raw.close()  # the socket's makefile(): closing it lets the socket close
        super().close()


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, download: _Download, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineIO(self.fp.detach(), sock, download))


class _Connection(http.client.HTTPConnection):
    """A connection whose socket the download tracks (close() cuts it) and whose responses
    read under the download's deadline."""

    def __init__(self, *args: Any, download: _Download, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._download = download
        self.response_class = functools.partial(_Response, download=download)  # type: ignore[assignment]
        self._create_connection = self._open_socket

    def connect(self) -> None:
        super().connect()
        self._download.track(self.sock)

    def _open_socket(self, address: tuple[str, int], timeout: Any = None,
                     source_address: tuple[str, int] | None = None) -> socket.socket:
        """``socket.create_connection``, but every address is tried with the time left of
        the poll, never a fresh ``timeout`` (``timeout`` is ignored): a redirect just before
        the deadline, or a second address of the host, cannot stretch the poll past it. The
        socket leaves with the time left as its timeout (a TLS handshake's bound).

        Raises:
            OSError: no address answered; ``TimeoutError`` when the deadline passed.
        """
        error: OSError | None = None
        for family, kind, proto, _, addr in socket.getaddrinfo(*address, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._download.left())
                if source_address:
                    sock.bind(source_address)
                sock.connect(addr)
                sock.settimeout(self._download.left())
                return sock
            except OSError as e:  # TimeoutError too: the next address gets what is left, if anything
                sock.close()
                error = e
        raise error if error is not None else OSError(f"no address for {address[0]!r}")


class _TlsConnection(_Connection, http.client.HTTPSConnection):
    """The same over TLS (HTTPSConnection.connect wraps the socket, then _Connection tracks it)."""


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, download: _Download) -> None:
        super().__init__()
        self._download = download

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_Connection, download=self._download), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, download: _Download) -> None:
        super().__init__()
        self._download = download

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TlsConnection, download=self._download), req)  # default TLS context


# ---------------------------------------------------------------------- parsing
_ENTITY_RE: Final = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
_XML_ENTITIES: Final = frozenset({b"amp", b"lt", b"gt", b"quot", b"apos"})


def _html_entities(body: bytes) -> bytes:
    """Undeclared HTML named entities (``&nbsp;``) as numeric references XML knows."""
    def sub(m: re.Match[bytes]) -> bytes:
        name = m.group(1)
        if name in _XML_ENTITIES:
            return m.group(0)
        cp = html.entities.name2codepoint.get(name.decode("ascii"))
        return b"&#%d;" % cp if cp is not None else m.group(0)

    return _ENTITY_RE.sub(sub, body)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(el: ET.Element, *names: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) in names:
            return c
    return None


def _text(el: ET.Element, *names: str) -> str | None:
    for name in names:  # in order of preference
        c = _child(el, name)
        if c is not None:
            t = "".join(c.itertext()).strip()
            if t:
                return t
    return None


def _date(value: str | None) -> str | None:
    """RFC 822 (RSS) or RFC 3339 (Atom, dc:date) -> ISO 8601 UTC, or None when unreadable
    or not a datetime in UTC (``0001-01-01T00:00:00+14:00`` is before year 1 there)."""
    if not value:
        return None
    dt: datetime | None
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year past C's int
        try:
            dt = datetime.fromisoformat(value)
        except (ValueError, OverflowError):
            return None
    try:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC).isoformat()
    except (ValueError, OverflowError):
        return None


def _entry(el: ET.Element, atom: bool) -> dict[str, Any]:
    if atom:
        link = None
        for c in el:
            if _local(c.tag) == "link" and c.get("rel", "alternate") == "alternate" and c.get("href"):
                link = c.get("href")
                break
        author = _child(el, "author")
        return {"id": _text(el, "id"), "url": link, "title": _text(el, "title"),
                "published": _date(_text(el, "published", "updated")), "summary": _text(el, "summary"),
                "content": _text(el, "content"),
                "author": _text(author, "name") if author is not None else None,
                "tags": [c.get("term") for c in el if _local(c.tag) == "category" and c.get("term")]}
    about = next((v for k, v in el.attrib.items() if _local(k) == "about"), None)
    return {"id": _text(el, "guid") or about, "url": _text(el, "link"), "title": _text(el, "title"),
            "published": _date(_text(el, "pubDate", "date")), "summary": _text(el, "description"),
            "content": _text(el, "encoded"), "author": _text(el, "author", "creator"),
            "tags": ["".join(c.itertext()).strip() for c in el if _local(c.tag) in ("category", "subject")]}


def _refuse_entities(*_: Any) -> None:
    raise FeedError("the document declares XML entities (refused: no feed needs them)")


def _qname(name: str) -> str:
    """expat's ``uri}local`` as ElementTree's ``{uri}local``."""
    return "{" + name if "}" in name else name


def _parse_xml(body: bytes) -> ET.Element:
    """``body`` as an element tree, refusing entity declarations as expat meets them.

    expat itself (not a byte search, which UTF-16 defeats) calls the refusal before any
    declared entity is stored or expanded, whatever the document's encoding. A DOCTYPE with
    only an external identifier (RSS 0.91's Netscape DTD) is read as before: expat never
    fetches it.

    Raises:
        FeedError: an entity declaration (general or parameter), or XML that is not well-formed.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.EntityDeclHandler = _refuse_entities
    parser.StartElementHandler = lambda tag, attrs: builder.start(
        _qname(tag), {_qname(k): v for k, v in attrs.items()})
    parser.EndElementHandler = lambda tag: builder.end(_qname(tag))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
    except expat.ExpatError as e:
        raise FeedError(f"not well-formed XML ({e})") from None
    return builder.close()


def parse_feed(body: bytes) -> tuple[str | None, list[dict[str, Any]]]:
    """Parse an RSS 2.0/0.9x, RSS 1.0 or Atom 1.0 document.

    Returns:
        ``(feed title or None, entries in document order)``; each entry has ``id``,
        ``url``, ``title``, ``published`` (ISO 8601 UTC or None), ``summary``,
        ``content``, ``author``, ``tags``.

    Raises:
        FeedError: the document declares entities, is not well-formed XML, or is not a feed.
    """
    root = _parse_xml(_html_entities(body))
    kind = _local(root.tag)
    if kind == "feed":
        return _text(root, "title"), [_entry(e, True) for e in root if _local(e.tag) == "entry"]
    if kind == "rss":
        channel = _child(root, "channel")
        if channel is None:
            raise FeedError("an <rss> document without a <channel>")
        return _text(channel, "title"), [_entry(e, False) for e in channel if _local(e.tag) == "item"]
    if kind == "RDF":
        channel = _child(root, "channel")
        title = _text(channel, "title") if channel is not None else None
        return title, [_entry(e, False) for e in root if _local(e.tag) == "item"]
    raise FeedError(f"not an RSS or Atom feed (its root element is <{kind[:40]}>)")


def _key(entry: Mapping[str, Any]) -> str:
    """The entry's identity: its id, else its link, else a digest of its content."""
    key = entry.get("id") or entry.get("url")
    if not key:
        raw = "\0".join(str(entry.get(k) or "") for k in ("title", "published", "summary", "content"))
        key = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    elif len(key) > _MAX_KEY:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return str(key)


# ---------------------------------------------------------------------- the backend
class RssBackend(Backend):
    """Feeds polled on the clock -> new-entry events, deduplicated in the store.

    Args:
        config: the ``rss`` section (validated again here).
        clock: the time of the poll intervals (:mod:`pihub.clock`); the download deadline is
            real time (``time.monotonic``), as the socket timeouts that enforce it are.
        store: where seen entries and validators persist; None keeps them in memory.

    Raises:
        ConfigProblems: the section is invalid (a ``ValueError``), every problem listed.
    """

    name: ClassVar[str] = "rss"
    config_schema: ClassVar[Schema] = Schema(_FIELDS, doc="Poll RSS/Atom feeds; new entries become events.")

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None,
                 store: Store | None = None) -> None:
        super().__init__(config, clock=clock)
        c = self.config
        self.timeout: float = c["timeout"]
        self.max_bytes: int = c["max_bytes"]
        self.announce_existing: bool = c["announce_existing"]
        self.remember: int = c["remember"]
        self.user_agent: str = c["user_agent"]
        self.feeds = self._parse_feeds(c["feeds"], c["poll_interval"], c["max_entries"])
        self.store = store
        self._download = _Download()
        self._opener = urllib.request.build_opener(_HttpOnlyRedirects(), _HttpHandler(self._download),
                                                   _HttpsHandler(self._download))
        self._lock = threading.Lock()
        self._poke = threading.Event()
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None
        self._counts = {"events": 0, "dropped_events": 0, "unexpected_errors": 0}
        self._failure_log = LogLimiter(_FAILURE_LOG_BURST, _FAILURE_LOG_WINDOW, time.monotonic)
        self._reported: str | None = None  # the last degraded reason reported; None: running

    @staticmethod
    def _parse_feeds(raw: Any, interval: float, max_entries: int) -> list[_Feed]:
        problems: list[ConfigProblem] = []
        feeds: list[_Feed] = []
        if not raw:
            raise ConfigProblems([ConfigProblem(("feeds",), "must list at least one feed URL")])
        for i, item in enumerate(raw):
            where = ("feeds", i)
            values, ps = _FEED_SCHEMA.validate({"url": item} if isinstance(item, str) else item, where)
            errs = [p for p in ps if not getattr(p, "warning", False)]
            url = values.get("url")
            if not errs and isinstance(url, str):
                parts = urllib.parse.urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    shown = show(_show_url(url)) if type(url) is str else show(url)  # a !env Secret: never shown
                    errs.append(ConfigProblem((*where, "url"), f"{shown} is not an http(s) URL "
                                              f"(allowed: http://host/path, https://host/path)"))
                elif values["params"]:
                    query = urllib.parse.urlencode({str(k): str(v) for k, v in values["params"].items()})
                    url = f"{url}{'&' if parts.query else '?'}{query}"
            bad = [k for k, v in values.get("headers", {}).items() if not isinstance(k, str) or not isinstance(v, str)
                   or "\n" in v or "\r" in v]
            if bad:
                errs.append(ConfigProblem((*where, "headers"), f"header {show(bad[0])} must be a string name "
                                          f"with a one-line string value"))
            if errs:
                problems += errs
                continue
            assert isinstance(url, str)  # validated above
            feeds.append(_Feed(url, _show_url(url), values["title"],
                               values["poll_interval"] or interval, values["max_entries"] or max_entries,
                               dict(values["headers"])))
        if problems:
            raise ConfigProblems(problems)
        return feeds

    # ------------------------------------------------------------------ lifecycle
    def open(self, emit: Emit) -> None:
        """Start the poller thread ``pihub-rss``; every feed is polled at once, then on its interval."""
        if self._thread is not None:
            return
        self._emit = emit
        now = self.clock.now()
        for feed in self.feeds:
            feed.due = now
        self.status, self.error = BackendStatus.RUNNING, None
        self._reported = None
        self._thread = BackendThread(f"pihub-{self.name}", self._run)
        self._thread.start()

    def close(self) -> None:
        """Stop polling (a download in flight is cut at once; a connect ends within ``timeout``);
        idempotent.

        Raises:
            RuntimeError: the poller did not stop.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._emit = None
            thread.stopping.set()
            self._poke.set()
            self._download.cut()
            thread.stop(timeout=self.timeout + 5.0)
        self._emit = None
        self.status = BackendStatus.STOPPED

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            now = self.clock.now()
            for feed in self.feeds:
                if stopping.is_set():
                    return
                if feed.due <= now:
                    self._poll(feed, stopping)
                    feed.due = self.clock.now() + feed.interval
            if stopping.is_set():  # a poll cut by close() is no problem of its feed
                return
            reason = "; ".join(f"feed {f.shown}: {f.problem}" for f in self.feeds if f.problem) or None
            if reason != self._reported:  # report changes only (what the feeds say, not a status poll)
                self._reported = reason
                if reason:
                    self.report_degraded(reason)
                else:
                    self.report_recovered()
            delay = min(f.due for f in self.feeds) - self.clock.now()
            if delay > 0:
                self.clock.wait(self._poke, delay)  # set by poll() and close()
            self._poke.clear()

    # ------------------------------------------------------------------ one poll
    def _poll(self, feed: _Feed, stopping: threading.Event) -> None:
        """Fetch, parse, record and announce one feed; a failure sets ``feed.problem``.

        Any exception is this feed's problem, never the poller's end: one that is not a
        :class:`FeedError` or :class:`StoreError` (a bug, or input nobody foresaw) is
        counted (``unexpected_errors``), logged at most once a minute, and shown as its type
        and shortened message.
        """
        feed.polls += 1
        try:
            if feed.validators is None and self.store is not None:
                feed.validators = self.store.feed_validators(feed.url)
            fetched = self._fetch(feed, stopping)
            if fetched is None:  # 304: nothing new
                feed.problem = None
                return
            body, etag, modified = fetched
            title, entries = parse_feed(body)
            self._record(feed, title, entries, etag, modified, stopping)
            feed.problem = None
        except FeedError as e:
            if stopping.is_set():  # cut by close(): whatever it failed with says nothing of the feed
                return
            problem = self._problem(feed, str(e))
            if feed.problem != problem:
                self.log.warning("feed %s: %s", feed.shown, problem)
            feed.problem = problem
        except StoreError as e:
            feed.problem = self._problem(feed, f"cannot record its entries: {e}")
            self.log.error("feed %s: %s", feed.shown, feed.problem)
        except Exception as e:  # noqa: BLE001 - one feed's surprise must not end the poller of all
            if stopping.is_set():
                return
            self._counts["unexpected_errors"] += 1
            message = self._problem(feed, str(e), _MAX_UNEXPECTED)
            feed.problem = f"unexpected {type(e).__name__}" + (f": {message}" if message else "")
            allowed, held = self._failure_log.allow()
            if allowed:
                where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
                self.log.error("feed %s: poll failed with %s%s (%d unexpected errors so far%s)", feed.shown,
                               feed.problem, f" at {where.filename}:{where.lineno} in {where.name}" if where else "",
                               self._counts["unexpected_errors"],
                               f"; {held} such lines not logged" if held else "")

    @staticmethod
    def _problem(feed: _Feed, text: str, limit: int = _MAX_PROBLEM) -> str:
        """``text`` as ``feed``'s problem: one short line, without the feed's URL credentials,
        query or header values (they may be secrets)."""
        text = text.replace(feed.url, feed.shown)
        parts = urllib.parse.urlsplit(feed.url)
        # header values shorter than 4 characters would blank out ordinary words
        for secret in (parts.password, parts.query, *(v for v in feed.headers.values() if len(v) >= 4)):
            if secret:
                text = text.replace(secret, "***")
        return _one_line(text, limit)

    def _fetch(self, feed: _Feed, stopping: threading.Event) -> tuple[bytes, str | None, str | None] | None:
        """GET the feed, conditionally; None for a 304, else ``(body, etag, last_modified)``.

        The whole exchange (connect, headers, body) ends within ``timeout`` seconds;
        ``close()`` ends it at once.

        Raises:
            FeedError: unreachable, an HTTP error, a timeout, cut short, or larger than ``max_bytes``.
        """
        self._download.start(self.timeout, stopping)
        try:
            return self._exchange(feed, stopping)
        finally:
            self._download.end()

    def _exchange(self, feed: _Feed, stopping: threading.Event) -> tuple[bytes, str | None, str | None] | None:
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity",
                   "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
                   **feed.headers}
        etag, modified = feed.validators or (None, None)
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        try:
            resp = self._opener.open(urllib.request.Request(feed.url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as e:
            feed.last_http = e.code
            e.close()
            if e.code == 304:
                return None
            raise FeedError(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            reason = e.reason if isinstance(e.reason, (str, OSError)) else str(e)
            if isinstance(reason, TimeoutError):
                raise FeedError(f"no answer within {self.timeout:g} s") from None
            raise FeedError(f"cannot reach it: {getattr(reason, 'strerror', None) or reason}") from None
        except TimeoutError:
            raise FeedError(f"no answer within {self.timeout:g} s") from None
        except (OSError, ValueError, http.client.HTTPException) as e:
            if stopping.is_set():
                raise FeedError("the poll was stopped (the backend is closing)") from None
            raise FeedError(f"request failed: {e!r}" if isinstance(e, http.client.HTTPException)
                            else f"request failed: {e}") from None
        with resp:
            feed.last_http = resp.status
            lengths = []
            for value in resp.headers.get_all("Content-Length") or ():
                length = content_length(value.strip(" \t"))
                if length is None:
                    raise FeedError(f"the Content-Length header {show(value)} is not a byte count (allowed: 1 "
                                    f"to {MAX_LENGTH_DIGITS} ASCII digits 0-9)")
                lengths.append(length)
            if len(set(lengths)) > 1:
                raise FeedError(f"the response has different Content-Length headers ({lengths[0]} and "
                                f"{next(n for n in lengths if n != lengths[0])}; allowed: one length)")
            if lengths and lengths[0] > self.max_bytes:
                raise FeedError(f"the document is {lengths[0]} bytes, more than max_bytes ({self.max_bytes}); "
                                f"refused")
            chunks: list[bytes] = []
            size = 0
            try:
                while chunk := resp.read1(_CHUNK):  # what has arrived: a read never waits past the deadline
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FeedError(f"the document is larger than max_bytes ({self.max_bytes} bytes); refused")
                    chunks.append(chunk)
            except TimeoutError:
                raise FeedError(f"the download took more than timeout ({self.timeout:g} s; {size} bytes "
                                f"read)") from None
            except (OSError, http.client.HTTPException) as e:
                if stopping.is_set():
                    raise FeedError("the poll was stopped (the backend is closing)") from None
                raise FeedError(f"the download failed: {e!r}" if isinstance(e, http.client.HTTPException)
                                else f"the download failed: {e}") from None
            if stopping.is_set():
                raise FeedError("the poll was stopped (the backend is closing)")
            if resp.length:  # bytes announced by Content-Length that never came
                raise FeedError(f"the connection closed {resp.length} bytes before the end of the document "
                                f"({size} bytes read)")
            return b"".join(chunks), resp.headers.get("ETag"), resp.headers.get("Last-Modified")

    def _record(self, feed: _Feed, title: str | None, entries: list[dict[str, Any]], etag: str | None,
                modified: str | None, stopping: threading.Event) -> None:
        """Mark the entries seen (store first), then announce the new ones."""
        feed.feed_title = title
        keys = list(dict.fromkeys(_key(e) for e in entries))
        first = feed.validators is None and not feed.memory  # never polled, here or before a restart
        if self.store is not None:
            seen = self.store.feed_seen(feed.url, keys)
        else:
            seen = {k for k in keys if k in feed.memory}
        new: list[dict[str, Any]] = []
        for e in entries:
            k = _key(e)
            if k not in seen:
                seen.add(k)
                new.append(e)
        if self.store is not None:
            self.store.feed_record(feed.url, keys, etag, modified, time.time(), self.remember)
        else:
            for k in keys:
                feed.memory[k] = None
                feed.memory.move_to_end(k)
            while len(feed.memory) > max(self.remember, len(keys)):
                feed.memory.popitem(last=False)
        feed.validators = (etag, modified)
        if first and not self.announce_existing:
            return
        announced = new[:feed.max_entries]
        skipped = len(new) - len(announced)
        if skipped:
            self.log.info("feed %s: %d new entries past max_entries (%d) marked seen without an event",
                          feed.shown, skipped, feed.max_entries)
        if not announced:
            return
        feed.new_entries += len(announced)
        shown_title = feed.title or title
        out = [{"feed_url": feed.url, "feed_title": shown_title, **e} for e in reversed(announced)]
        for args in out:  # oldest first: feeds list the newest first
            if stopping.is_set():
                return
            self._publish(Event(_ENTRY_EVENT, args, time.monotonic_ns(), self.name))
        self._publish(Event(_UPDATE_EVENT, {
            "source_url": feed.url, "source_title": shown_title, "title": shown_title, "response": out,
            "request": {"url": feed.shown, "method": "get"}, "skipped": skipped}, time.monotonic_ns(), self.name))

    def _publish(self, event: Event) -> None:
        emit_counted(self._emit, event, self._counts)

    # ------------------------------------------------------------------ actions
    @action(aliases=["status"], blocking=False)
    def feed_status(self) -> dict[str, Any]:
        """Each feed's state (action ``rss.status``).

        Returns:
            ``feeds``: one ``{url (without credentials or query), title, ok, problem,
            last_http (the last HTTP status, 304 when unchanged), polls, new_entries,
            next_poll_in (seconds)}`` per feed; ``events``, ``dropped_events``,
            ``unexpected_errors`` (polls that failed with an exception pihub did not foresee).
        """
        now = self.clock.now()
        return {"feeds": [{"url": f.shown, "title": f.title or f.feed_title, "ok": f.problem is None,
                           "problem": f.problem, "last_http": f.last_http, "polls": f.polls,
                           "new_entries": f.new_entries, "next_poll_in": max(0.0, f.due - now)}
                          for f in self.feeds], **self._counts}

    @action
    def poll(self, url: str | None = None) -> dict[str, Any]:
        """Poll a feed (or every feed) now instead of at its next interval; returns at once.

        Args:
            url: the feed's URL as configured; null for every feed.

        Raises:
            ActionError: no configured feed has that URL (the message lists them).
        """
        feeds = [f for f in self.feeds if url is None or url in (f.url, f.shown)]
        if not feeds:
            raise ActionError(f"no feed {_show_url(url or '')!r} is configured (feeds: "
                              f"{', '.join(f.shown for f in self.feeds)})")
        now = self.clock.now()
        for f in feeds:
            f.due = now
        self._poke.set()
        return {"polling": [f.shown for f in feeds]}
