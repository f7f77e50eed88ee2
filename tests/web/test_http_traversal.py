"""Path traversal against ``/resources``: a generated corpus of payloads, 0 escapes.

The corpus crosses traversal spellings (``../``, ``..%2f``, ``%2e%2e/``, double encoding,
backslashes, ``....//``, overlong UTF-8, invalid UTF-8 that a lossy decoder would drop,
unicode dots, NUL...) with depths 1..8, start directories and targets (a secret file just
outside the root, absolute paths), plus real symlinks out of the root. Every payload is
sent three ways: at WSGI level decoded as a full-unquoting server would (``%2F`` -> ``/``),
decoded as cheroot does (``%2F`` kept), and over a socket to the real cheroot server. The
secret MUST never come back and no payload may be answered 200; control requests for
files inside the root MUST still be served, so a route that served nothing would fail.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import pytest
from http_support import Rig, build_rig, call

from pihub.web.server import WebServer

SECRET = "TOP-SECRET-" + secrets.token_hex(8)

#: One step up, spelled every way we know. Raw strings: sent as they are on the wire.
UP = [
    "../", "..%2f", "..%2F", "%2e%2e/", "%2e%2e%2f", "%2E%2E%2F", ".%2e/", "%2e./", "%2e%2e%2F",
    "%252e%252e/", "%252e%252e%252f", "..%252f", "%25%32%65%25%32%65/",
    "..\\", "..%5c", "%2e%2e%5c", "..%255c", "....//", "...//", "..;/", ".../", "..%00/", "..%01/",
    "%c0%ae%c0%ae/", "%c0%ae%c0%ae%c0%af", "%e0%80%ae%e0%80%ae/", "%c0%2e%c0%2e/", ".%ff./", "%ff../",
    "..%c0%af", "..%c1%9c", "%e2%80%a4%e2%80%a4/", "%ef%bc%8e%ef%bc%8e/", "%u002e%u002e/", "%uff0e%uff0e/",
    "./../", ".././", "..//", "..%2f%2f", ".%00./", "%2e%2e%00/", "..%0d%0a/", "%20../", "..%20/",
]
DEPTHS = range(1, 9)
STARTS = ["/resources/pub/", "/resources/pub/sub/", "/resources/pub/a.txt/"]


def _targets(tmp: Path) -> list[str]:
    """What the traversals aim at: the secret (relative and absolute) and /etc/passwd."""
    secret = tmp / "secret.txt"
    return ["secret.txt", "etc/passwd", str(secret).lstrip("/")]


def corpus(tmp: Path) -> list[str]:
    """Every payload (raw URL paths), deduplicated, in a stable order."""
    secret = str(tmp / "secret.txt")
    out: list[str] = []
    for start, up, depth, target in itertools.product(STARTS, UP, DEPTHS, _targets(tmp)):
        if start != STARTS[0] and depth not in (1, 4, 8):
            continue  # the other starts at three depths keep the corpus quick
        out.append(start + up * depth + target)
    absolute = [secret, "/etc/passwd", "/proc/self/environ"]
    for a in absolute:
        enc = quote(a, safe="")
        out += [
            "/resources/pub/" + a, "/resources/pub//" + a.lstrip("/"), "/resources/pub/" + enc,
            "/resources/pub/%2F" + a.lstrip("/"), "/resources/pub/%252F" + a.lstrip("/"),
            "/resources/pub/sub/.." + a, "/resources/pub/a.txt%00/" + a, "/resources/pub/%5c" + a.lstrip("/"),
            "/resources/" + a.lstrip("/"), "/resources//" + a.lstrip("/"), "/resources/pub/file:" + a,
        ]
    out += [
        "/resources/pub/a.txt%00", "/resources/pub/a.txt%00.png", "/resources/pub/%00", "/resources/pub/.",
        "/resources/pub/%2e", "/resources/pub/..", "/resources/pub/%2e%2e", "/resources/..",
        "/resources/%2e%2e",
        "/resources/pub/link_out", "/resources/pub/dir_out/secret.txt", "/resources/pub/sub/up/secret.txt",
        "/resources/pub/sub/up/up2/secret.txt", "/resources/pub/abs_out", "/resources/pub/loop",
        "/resources/pub/sub/../../secret.txt", "/resources/pub/./../secret.txt",
        "/resources/pub/%2e/../secret.txt",
        "/resources/pub/dir_out/../secret.txt", "/resources/pub/link_dir_in/../../secret.txt",
        "/resources/pub/fifo",
    ]
    return list(dict.fromkeys(out))


#: Files inside the root, reached by a normal path or a symlink that stays inside: served.
CONTROLS = {
    "/resources/pub/a.txt": b"inside",
    "/resources/pub/sub/b.txt": b"deeper",
    "/resources/pub/link_in": b"inside",
    "/resources/pub/link_dir_in/b.txt": b"deeper",
    # leaves the root through a symlink and comes back: the resolved file is inside
    "/resources/pub/sub/up/pub/a.txt": b"inside",
}


@pytest.fixture
def tree(make_hub, tmp_path: Path) -> Rig:
    """A root with files, symlinks in and out of it, and a secret next to it."""
    (tmp_path / "secret.txt").write_text(SECRET)
    root = tmp_path / "root" / "pub"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("inside")
    (root / "sub" / "b.txt").write_text("deeper")
    (root / "link_out").symlink_to(tmp_path / "secret.txt")
    (root / "abs_out").symlink_to("/etc/passwd")
    (root / "dir_out").symlink_to(tmp_path)
    (root / "sub" / "up").symlink_to("../..")
    (root / "sub" / "up2").symlink_to("../../..")
    (root / "link_in").symlink_to(root / "a.txt")
    (root / "link_dir_in").symlink_to("sub")
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "fifo")
    rig = build_rig(make_hub, tmp_path)
    rig.rebuild(resource_dirs={"pub": str(root)})
    return rig


def _wsgi_path(raw: str, *, keep_quoted_slash: bool) -> str:
    """``PATH_INFO`` as a server makes it from a raw path (bytes as latin-1)."""
    if keep_quoted_slash:
        parts = re.split("(?i)%2f", raw)
        data = b"%2F".join(unquote_to_bytes(p) for p in parts)
    else:
        data = unquote_to_bytes(raw)
    return data.decode("latin-1")


def _check(status: int, body: bytes, payload: str) -> None:
    assert SECRET.encode() not in body, f"ESCAPE: {payload!r} served the secret"
    assert b"root:" not in body, f"ESCAPE: {payload!r} served /etc/passwd"
    assert status != 200, f"{payload!r} was answered 200: {body[:80]!r}"


def test_corpus_size(tmp_path: Path) -> None:
    assert len(corpus(tmp_path)) >= 500


@pytest.mark.parametrize("keep_quoted_slash", [False, True], ids=["unquote-all", "cheroot-style"])
def test_no_escape_at_wsgi_level(tree: Rig, keep_quoted_slash: bool) -> None:
    headers = tree.as_("read")
    payloads = corpus(tree.tmp)
    statuses: dict[int, int] = {}
    for payload in payloads:
        r = call(tree.app, "GET", "", raw_path=_wsgi_path(payload, keep_quoted_slash=keep_quoted_slash),
                 headers=headers)
        _check(r.status, r.body, payload)
        statuses[r.status] = statuses.get(r.status, 0) + 1
    assert set(statuses) <= {400, 404}, statuses
    for path, content in _controls(tree).items():
        r = call(tree.app, "GET", "", raw_path=_wsgi_path(path, keep_quoted_slash=keep_quoted_slash),
                 headers=headers)
        assert (r.status, r.body) == (200, content), path


def _controls(tree: Rig) -> dict[str, bytes]:
    """Control paths and their expected bodies (creates the literal ``%2e%2e`` file)."""
    (tree.tmp / "root" / "pub" / "%2e%2e").write_text("literal name")
    controls = dict(CONTROLS)
    # "%252e%252e" decodes once to the literal name "%2e%2e": a file, not a parent
    controls["/resources/pub/%252e%252e"] = b"literal name"
    return controls


def test_no_escape_over_the_real_server(tree: Rig) -> None:
    server = WebServer(tree.app, host="127.0.0.1", port=0, threads=2)
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        headers = tree.as_("read")
        sent = 0
        statuses: dict[int, int] = {}
        for payload in corpus(tree.tmp):
            for path in _as_sendable(payload):
                conn.putrequest("GET", path, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
                resp = conn.getresponse()
                body = resp.read()
                _check(resp.status, body, payload)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                sent += 1
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        assert sent >= 500
        # 404 from the app, 400 from cheroot for request targets it refuses to parse
        assert set(statuses) <= {400, 404}, statuses
        for path, content in _controls(tree).items():
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, content), path
        conn.close()
    finally:
        server.stop()


def _as_sendable(payload: str) -> Iterator[str]:
    """The payload as a request target: raw bytes other than printable ASCII percent-encoded."""
    yield "".join(c if 0x21 <= ord(c) < 0x7F else quote(c, safe="") for c in payload)
