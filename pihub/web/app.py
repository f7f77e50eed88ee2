"""The HTTP API as a Bottle application: :func:`make_app` builds it from a hub.

There is no module-global app: every call of :func:`make_app` builds an independent
:class:`PihubApp`, so tests build as many as they like and call them as plain WSGI
callables.

**Wire rules.**

* Bodies in and out are JSON (``application/json``), except ``GET /login`` (a small HTML
  form), ``GET /metrics`` (Prometheus text), files under ``/resources`` and what a webhook's
  hook chooses to answer.
* Every error, whatever its status and whoever raised it (a route, Bottle's router, an
  unexpected exception), has the body ``{"code": <status>, "error": <NAME>, "message":
  <text>}``, with Platypush's names where Platypush has one (``INVALID_CREDENTIALS``,
  ``REGISTRATION_REQUIRED``, ``INVALID_CSRF``, ``INVALID_METHOD``, ``UNKNOWN_ERROR``...).
  Messages never contain a password, a token, a session id or a setup code.
* Every response carries ``Content-Security-Policy: default-src 'self'; frame-ancestors
  'none'``, ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``, plus
  ``Strict-Transport-Security`` when the request came over TLS. They are added by
  :meth:`PihubApp.wsgi` around Bottle, so no code path can forget them.
* A request body is at most ``max_body`` bytes: a larger ``Content-Length`` is refused
  with 413 before any route runs, and a chunked body is cut off (413) as soon as the read
  passes the limit.

**Credentials**, tried in this order; the first one present decides (a wrong one is a
401, never a silent fall-through to the next):

1. ``X-Token: <token>``, else ``Authorization: Bearer <token>``, else ``?token=<token>``
   (only with ``allow_query_token: true``): an API token, or the environment token. The
   check is a SHA-256 lookup in :mod:`pihub.auth`, well under a millisecond.
2. ``Authorization: Basic``: user name and password, as Platypush clients send them.
   Each such request costs one argon2 verification (tens of milliseconds on a Pi, by
   design) and counts toward the failed-login rate limit; prefer an API token.
3. ``X-Session-Token: <session>``: a panel session given explicitly (no CSRF token
   needed: a browser never adds that header on its own).
4. The ``session_token`` cookie (``HttpOnly; SameSite=Strict``, plus ``Secure`` over
   TLS). A state-changing request (anything but GET, HEAD, OPTIONS) made with it MUST
   carry the session's ``X-CSRF-Token`` header, and its ``Origin``, when present, MUST be
   the server's own or one of ``allowed_origins``; otherwise 403 ``INVALID_CSRF``.

Outcomes: no user in the store yet and no valid credential -> 412
``REGISTRATION_REQUIRED`` (the environment token still works, and so does registration
with the setup code); a missing or wrong credential -> 401 ``INVALID_CREDENTIALS`` (or
``INVALID_SESSION`` for a session that expired or ended); five failed logins from one IP
address, or fifty from all addresses together, within five minutes, or a password check
that is busy with a full waiting line -> 429 ``RATE_LIMITED`` with ``Retry-After`` (see
:mod:`pihub.auth`); a valid credential without the route's scope -> 403
``INSUFFICIENT_SCOPE``. Scopes: ``read`` for GET routes, ``control``
for ``/execute`` and webhooks, ``admin`` for token management.

**Webhooks** (``/hook/<name>``, any of GET POST PUT DELETE PATCH OPTIONS): a hook listed
in ``http.hooks`` with ``public: true`` needs nothing; one with a ``token`` accepts that
token (``X-Token``, ``Authorization: Bearer``, or ``?token=`` when the hook or the section
allows query tokens) in place of a user credential; every other hook needs a credential
with the control scope. The ``WebhookEvent`` published for the call never contains the
credential that opened it: ``Cookie``, ``X-Session-Token`` and ``X-CSRF-Token`` are always
removed from its ``headers``, ``Authorization`` and ``X-Token`` unless the hook is public,
and ``token`` from its ``args`` when that is where the credential came from.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import logging
import math
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl

import bottle

from pihub import __version__
from pihub.errors import BodyTooLarge, RateLimited, TokenNameExists
from pihub.auth import ENV_USERNAME, REMEMBER_TTL_S, SCOPES, csrf_ok
from pihub.events import Event
from pihub.messages import MessageError, Request, dumps, parse
from pihub.web import HTTP_SCHEMA

log = logging.getLogger("pihub.web")

__all__ = ["SECURITY_HEADERS", "Caller", "PihubApp", "make_app"]

#: Headers added to every response.
SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
#: Added to responses sent over TLS only (a plain-HTTP answer must not pin HTTPS).
HSTS_HEADER: Final = ("Strict-Transport-Security", "max-age=31536000")
_OWN_HEADERS: Final = frozenset(k.lower() for k, _ in (*SECURITY_HEADERS, HSTS_HEADER))

#: Error name of each status when the route gives none (Platypush's where it has one).
ERROR_NAMES: Final[Mapping[int, str]] = {
    400: "BAD_REQUEST",
    401: "INVALID_CREDENTIALS",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "INVALID_METHOD",
    408: "REQUEST_TIMEOUT",
    411: "LENGTH_REQUIRED",
    412: "REGISTRATION_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "UNKNOWN_ERROR",
    503: "SERVICE_UNAVAILABLE",
}

#: Methods that never change state, so a cookie session needs no CSRF token for them.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Methods ``/hook/<name>`` answers (HEAD comes with GET), as Platypush.
HOOK_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
#: Name of the panel session cookie (Platypush's).
SESSION_COOKIE: Final = "session_token"
#: Request headers that carry pihub credentials (WSGI spelling); see the module docstring.
_ALWAYS_REDACTED: Final = frozenset({"HTTP_COOKIE", "HTTP_X_SESSION_TOKEN", "HTTP_X_CSRF_TOKEN"})
_CREDENTIAL_HEADERS: Final = frozenset({"HTTP_AUTHORIZATION", "HTTP_X_TOKEN"})
#: Response headers a hook's reply may not set: framing is the server's, security ours.
_HOOK_FORBIDDEN_HEADERS: Final = _OWN_HEADERS | frozenset(
    {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"})
_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})


# ---------------------------------------------------------------------------- helpers
def json_response(obj: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    """A JSON response.

    Args:
        obj: the body, serialised with :func:`pihub.messages.dumps`.
        status: the HTTP status code.
        headers: extra response headers.

    Returns:
        A Bottle response; return it or raise it from a route.
    """
    resp = bottle.HTTPResponse(body=dumps(obj), status=status, headers=dict(headers or {}))
    resp.content_type = "application/json"
    return resp


def error_response(status: int, message: str, name: str | None = None,
                   headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    """The ``{"code", "error", "message"}`` response.

    Args:
        status: the HTTP status code.
        message: a human-readable sentence; MUST NOT contain secrets.
        name: the error name; :data:`ERROR_NAMES` (or the status phrase) when None.
        headers: extra response headers (``Retry-After``...).

    Returns:
        A Bottle response; raise it from a route.
    """
    return json_response({"code": status, "error": name or _error_name(status), "message": message},
                         status, headers)


def _error_name(status: int) -> str:
    """The default error name of ``status``."""
    if status in ERROR_NAMES:
        return ERROR_NAMES[status]
    try:
        return HTTPStatus(status).phrase.upper().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "ERROR"


def _truthy(value: Any) -> bool:
    """A form or JSON flag: true, 1, "1", "true", "yes", "on" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in _TRUE_WORDS


def _safe_redirect(target: Any) -> str | None:
    """``target`` if it is a path on this server (``/x``), else None (no open redirect)."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ord(c) < 0x20 or c == "\x7f" or c == "\\" for c in target):
        return None
    return target


def _query(environ: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters, first value of each, decoded as UTF-8 (bad bytes replaced)."""
    qs = environ.get("QUERY_STRING", "")
    if not qs:
        return {}
    out: dict[str, str] = {}
    for k, v in parse_qsl(qs, keep_blank_values=True, encoding="utf-8", errors="replace"):
        out.setdefault(k, v)
    return out


def _request_headers(environ: Mapping[str, Any], drop: Iterable[str]) -> dict[str, str]:
    """The request headers as ``{"X-Foo": value}``, without the WSGI keys in ``drop``."""
    dropped = frozenset(drop)
    out: dict[str, str] = {}
    for key, value in environ.items():
        if key in dropped or not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if not value:
                continue
            name = key
        else:
            continue
        out["-".join(part.capitalize() for part in name.split("_"))] = _wsgi_text(value)
    return out


def _wsgi_text(value: str) -> str:
    """A WSGI (latin-1 transported) string as UTF-8 text, when it is valid UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _same_bytes(a: str, b: str) -> bool:
    """Constant-time equality of two strings."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the request, and how.

    Attributes:
        principal: the :class:`pihub.auth.Principal` (``username``, ``scopes``, ``allows()``).
        source: where the credential came from: ``token`` (``X-Token``/Bearer), ``query``
            (``?token=``), ``basic``, ``session-header`` or ``session-cookie``.
        csrf: the session's CSRF token (sessions only).
        session_token: the session token (sessions only), to end it on logout.
    """

    principal: Any
    source: str
    csrf: str | None = None
    session_token: str | None = None


# ------------------------------------------------------------------------------ app
class PihubApp(bottle.Bottle):
    """A Bottle app whose every response is JSON on error and carries the security headers.

    Built by :func:`make_app`. :meth:`wsgi` wraps Bottle's own: it refuses oversized
    bodies before routing, bounds the body stream, adds the security headers, turns
    Bottle's last-resort HTML error page into JSON, and counts responses by status.
    """

    def __init__(self, max_body: int) -> None:
        """Create the app.

        Args:
            max_body: the largest request body accepted, in bytes.
        """
        super().__init__()
        self.max_body = max_body
        self._counts_lock = threading.Lock()
        #: responses sent, by HTTP status code (for ``/metrics``).
        self.status_counts: dict[int, int] = {}

    def default_error_handler(self, res: bottle.HTTPError) -> str:
        """Render Bottle's own errors (404, 405, a caught 500) as the JSON error body.

        Args:
            res: the error; its ``exception`` (for 500) is logged, never sent.

        Returns:
            The JSON text; the content type is set on Bottle's response.
        """
        status = res.status_code
        if status >= 500:
            if res.exception is not None:
                log.error("unhandled error in %s %s", bottle.request.method, bottle.request.path,
                          exc_info=(type(res.exception), res.exception, res.exception.__traceback__))
            message = "internal error (see the pihub log)"
        elif status == 404:
            message = "no such route or resource"
        elif status == 405:
            message = f"method {bottle.request.method} is not allowed here"
        else:
            message = res.body if isinstance(res.body, str) and res.body else HTTPStatus(status).phrase
        bottle.response.content_type = "application/json"
        return dumps({"code": status, "error": _error_name(status), "message": message})

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI entry point (see the class docstring).

        Args:
            environ: the WSGI environment.
            start_response: the server's ``start_response``.

        Returns:
            The response body iterable.
        """
        https = environ.get("wsgi.url_scheme") == "https"
        early = self._precheck(environ)
        if early is not None:
            status, body = early
            return self._send(start_response, status, [("Content-Type", "application/json"),
                                                       ("Content-Length", str(len(body)))], [body], https)
        environ["wsgi.input"] = _LimitedInput(environ.get("wsgi.input"), self.max_body)
        captured: list[tuple[str, list[tuple[str, str]], Any]] = []

        def capture(status: str, headers: list[tuple[str, str]],
                    exc_info: Any = None) -> Callable[[bytes], None]:
            captured.append((status, headers, exc_info))
            return _no_write

        try:
            out = super().wsgi(environ, capture)
        except Exception:
            log.exception("unhandled error in %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            out, captured = [], []
        if not captured:
            status, body = _internal_error()
            return self._send(start_response, status, [("Content-Type", "application/json"),
                                                       ("Content-Length", str(len(body)))], [body], https)
        status, headers, _ = captured[-1]
        if status.startswith("5") and any(k.lower() == "content-type" and v.startswith("text/html")
                                          for k, v in headers):
            # Bottle's last-resort page (an error while rendering a response) is HTML.
            if hasattr(out, "close"):
                out.close()
            status, body = _internal_error()
            headers, out = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], [body]
        return self._send(start_response, status, headers, out, https)

    def _precheck(self, environ: Mapping[str, Any]) -> tuple[str, bytes] | None:
        """Refuse a bad or too large ``Content-Length`` before routing (status, body) or None."""
        length = environ.get("CONTENT_LENGTH", "")
        if not length:
            return None
        text = length.strip()
        if not text.isdigit() or not text.isascii():
            return _error_bytes(400, "Content-Length is not a number")
        if int(text) > self.max_body:
            return _error_bytes(413, f"the request body is larger than {self.max_body} bytes")
        return None

    def _send(self, start_response: Callable[..., Any], status: str, headers: list[tuple[str, str]],
              out: Iterable[bytes], https: bool) -> Iterable[bytes]:
        """Add the security headers, count the status, call the real ``start_response``."""
        final = [(k, v) for k, v in headers if k.lower() not in _OWN_HEADERS]
        final.extend(SECURITY_HEADERS)
        if https:
            final.append(HSTS_HEADER)
        try:
            code = int(status[:3])
        except ValueError:
            code = 0
        with self._counts_lock:
            self.status_counts[code] = self.status_counts.get(code, 0) + 1
        start_response(status, final)
        return out


def _no_write(data: bytes) -> None:
    """The ``write`` callable of the inner start_response; Bottle never uses it."""
    raise RuntimeError("the legacy WSGI write() callable is not supported")


def _error_bytes(status: int, message: str) -> tuple[str, bytes]:
    """``("413 Request Entity Too Large", b'{"code":...}')`` for the early error paths."""
    body = dumps({"code": status, "error": _error_name(status), "message": message}).encode()
    return f"{status} {HTTPStatus(status).phrase}", body


def _internal_error() -> tuple[str, bytes]:
    """The 500 status line and JSON body."""
    return _error_bytes(500, "internal error (see the pihub log)")


class _LimitedInput:
    """``wsgi.input`` that raises :class:`BodyTooLarge` once more than ``limit`` bytes are read.

    Covers bodies without a ``Content-Length`` (chunked), whose size is only known by
    reading them.
    """

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        """Read at most ``size`` bytes (all when negative), counting toward the limit."""
        if self._stream is None:
            return b""
        if size is None or size < 0:
            size = self._limit + 1 - self._read
        data = self._stream.read(max(0, min(size, self._limit + 1 - self._read)))
        self._read += len(data)
        if self._read > self._limit:
            raise BodyTooLarge
        return data

    def readline(self, size: int = -1) -> bytes:
        """Read one line, counting toward the limit."""
        if self._stream is None:
            return b""
        cap = self._limit + 1 - self._read
        data = self._stream.readline(cap if size is None or size < 0 else min(size, cap))
        self._read += len(data)
        if self._read > self._limit:
            raise BodyTooLarge
        return data


# ----------------------------------------------------------------------- the routes
class _Api:
    """The route handlers and the state they share; one per :func:`make_app` call."""

    def __init__(self, hub: Any, auth: Any, settings: Mapping[str, Any], app: PihubApp) -> None:
        self.hub = hub
        self.auth = auth
        self.app = app
        self.max_body: int = settings["max_body"]
        self.allow_query_token: bool = settings["allow_query_token"]
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in settings["allowed_origins"])
        self.hook_rules: dict[str, dict[str, Any]] = dict(settings["hooks"])
        self.hook_timeout: float = settings["hook_timeout"]
        self.resource_roots: dict[str, str] = {}
        for name, directory in settings["resource_dirs"].items():
            key = name.strip("/")
            root = os.path.realpath(os.path.expanduser(directory))
            if not key:
                log.warning("http.resource_dirs: an empty name is ignored")
                continue
            if not os.path.isdir(root):
                log.warning("http.resource_dirs.%s: %s is not a directory; its files will 404", key,
                            directory)
            self.resource_roots[key] = root
        self._lock = threading.Lock()
        self.webhooks: dict[str, int] = {"replied": 0, "unmatched": 0, "failed": 0}

    # ------------------------------------------------------------- credentials
    def identify(self, environ: Mapping[str, Any]) -> Caller:
        """Authenticate the request (see the module docstring for the order).

        Raises:
            bottle.HTTPResponse: 401, 412 or 429 JSON errors.
        """
        kind, value = self._credential(environ)
        auth = self.auth
        if kind in ("token", "query"):
            principal = auth.check_token(value)
            if principal is not None:
                return Caller(principal, kind)
        elif kind == "basic":
            username, password = value
            principal = self._password_login(username, password, environ)
            if principal is not None:
                return Caller(principal, "basic")
        elif kind in ("session-header", "session-cookie"):
            found = auth.check_session(value)
            if found is not None:
                principal, csrf = found
                return Caller(principal, kind, csrf=csrf, session_token=value)
        if auth.user_count() == 0:
            raise error_response(412, "Please create a user first", "REGISTRATION_REQUIRED")
        if kind in ("session-header", "session-cookie"):
            resp = error_response(401, "Invalid session", "INVALID_SESSION")
            if kind == "session-cookie":
                _clear_session_cookie(resp, environ)
            raise resp
        raise error_response(401, "Invalid credentials", "INVALID_CREDENTIALS",
                             {"WWW-Authenticate": 'Bearer realm="pihub"'})

    def _credential(self, environ: Mapping[str, Any]) -> tuple[str | None, Any]:
        """The first credential the request carries: ``(kind, value)``, or ``(None, None)``."""
        x_token = environ.get("HTTP_X_TOKEN")
        if x_token is not None:
            return "token", _wsgi_text(x_token).strip()
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None:
            scheme, _, rest = authorization.strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "bearer":
                return "token", _wsgi_text(rest).strip()
            if scheme == "basic":
                try:
                    decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
                except (binascii.Error, ValueError):
                    return "basic", ("", "")
                username, _, password = decoded.partition(":")
                return "basic", (username, password)
            return "token", ""  # an unknown scheme is a credential that cannot be valid
        if self.allow_query_token:
            token = _query(environ).get("token")
            if token is not None:
                return "query", token
        session = environ.get("HTTP_X_SESSION_TOKEN")
        if session is not None:
            return "session-header", _wsgi_text(session).strip()
        cookie = _session_cookie(environ)
        if cookie is not None:
            return "session-cookie", cookie
        return None, None

    def _password_login(self, username: str, password: str, environ: Mapping[str, Any]) -> Any:
        """``auth.login``; None when refused.

        Raises:
            bottle.HTTPResponse: 429 with ``Retry-After`` (in seconds) when rate limited.
        """
        try:
            return self.auth.login(username, password, ip=_client_ip(environ))
        except RateLimited as e:
            raise _too_many(e, e.reason) from None
        except (PermissionError, ValueError):
            return None

    def require(self, scope: str) -> Caller:
        """Authenticate the current request and check ``scope`` and, for cookie sessions, CSRF.

        Args:
            scope: ``read``, ``control`` or ``admin``.

        Returns:
            The caller.

        Raises:
            bottle.HTTPResponse: 401/412/429 (see :meth:`identify`), 403 ``INVALID_CSRF``,
                403 ``INSUFFICIENT_SCOPE``.
        """
        environ = bottle.request.environ
        caller = self.identify(environ)
        self.check_csrf(caller, environ)
        if not caller.principal.allows(scope):
            raise error_response(403, f"this credential lacks the {scope!r} scope", "INSUFFICIENT_SCOPE")
        return caller

    def check_csrf(self, caller: Caller, environ: Mapping[str, Any]) -> None:
        """403 ``INVALID_CSRF`` for a state-changing cookie-session request without its token.

        Raises:
            bottle.HTTPResponse: the 403.
        """
        if caller.source != "session-cookie" or environ.get("REQUEST_METHOD", "GET") in SAFE_METHODS:
            return
        sent = environ.get("HTTP_X_CSRF_TOKEN")
        if not caller.csrf or not csrf_ok(caller.csrf, _wsgi_text(sent).strip() if sent else None):
            raise error_response(403, "missing or wrong X-CSRF-Token header", "INVALID_CSRF")
        if not self.origin_ok(environ):
            raise error_response(403, "cross-origin request refused", "INVALID_CSRF")

    def origin_ok(self, environ: Mapping[str, Any]) -> bool:
        """True when the request has no ``Origin`` or a trusted one (own or allowed)."""
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}".lower()
        return origin == own or origin in self.allowed_origins

    # ------------------------------------------------------------------ bodies
    def body(self) -> bytes:
        """The request body, read once, at most ``max_body`` bytes.

        Raises:
            bottle.HTTPResponse: 413 past the limit.
        """
        environ = bottle.request.environ
        cached = environ.get("pihub.body")
        if cached is not None:
            return cached
        stream = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH", "").strip()
        chunks: list[bytes] = []
        try:
            if length:
                remaining = int(length)
                while remaining > 0:
                    chunk = stream.read(min(remaining, 65536))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
            elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                while chunk := stream.read(65536):
                    chunks.append(chunk)
        except BodyTooLarge:
            raise error_response(413, f"the request body is larger than {self.max_body} bytes") from None
        data = b"".join(chunks)
        environ["pihub.body"] = data
        return data

    def json_body(self) -> Any:
        """The body parsed as JSON.

        Raises:
            bottle.HTTPResponse: 400 for invalid JSON (or nesting too deep), 413.
        """
        raw = self.body()
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise error_response(400, f"the body is not valid JSON: {_json_error(e)}") from None

    def fields(self) -> dict[str, Any]:
        """The body as a mapping: a JSON object or a urlencoded form (first value per key).

        Raises:
            bottle.HTTPResponse: 400 (not an object, bad encoding), 415 (another media type).
        """
        raw = self.body()
        ctype = bottle.request.environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise error_response(400, "the form is not valid UTF-8") from None
            out: dict[str, Any] = {}
            for k, v in parse_qsl(text, keep_blank_values=True):
                out.setdefault(k, v)
            return out
        if ctype.startswith("multipart/"):
            raise error_response(415, "send JSON or application/x-www-form-urlencoded")
        if not raw.strip():
            return {}
        value = self.json_body()
        if not isinstance(value, dict):
            raise error_response(400, f"the body must be a JSON object, not {_json_kind(value)}")
        return value

    # ----------------------------------------------------------------- /execute
    def execute(self) -> bottle.HTTPResponse:
        """``POST /execute``: run a request, or publish an event (Platypush's envelope)."""
        self.require("control")
        ctype = bottle.request.environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        # No Content-Type is read as JSON: Platypush's /execute does (Flask keeps such a
        # body), and minimal HTTP clients send none. A declared other type is refused:
        # curl -d alone sends a form type, which Platypush could not read either.
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise error_response(415, f"POST /execute takes Content-Type application/json, not {ctype!r} "
                                      "(with curl: -H 'Content-Type: application/json')")
        message = self.json_body()
        if not isinstance(message, dict):
            raise error_response(400, f"the message must be a JSON object, not {_json_kind(message)}",
                                 "INVALID_MESSAGE")
        try:
            parsed = parse(message, default_origin="http")
        except MessageError as e:
            raise error_response(400, str(e), "INVALID_MESSAGE") from None
        if isinstance(parsed, Request):
            parsed.origin = "http"  # as Platypush: the reply is addressed to the HTTP caller
            resp = self.hub.execute(parsed)
            return json_response(resp.to_dict())
        parsed.source = "http"
        if not self.hub.publish(parsed):
            raise error_response(503, "the event bus is full; try again", "BUS_FULL", {"Retry-After": "1"})
        return json_response({})

    # -------------------------------------------------------------------- /auth
    def auth_post(self) -> bottle.HTTPResponse:
        """``POST /auth?type=token|login|register|setup`` (token by default)."""
        kind = _query(bottle.request.environ).get("type", "token") or "token"
        if kind == "token":
            return self._issue_token()
        if kind == "login":
            return self._login(include_session_token=True)
        if kind in ("register", "setup"):
            return self._register()
        raise error_response(400, f"unknown auth type {kind!r} (token, login, register, setup)",
                             "INVALID_AUTH_TYPE")

    def _credentials_in(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        """``username`` and ``password`` of a form.

        Raises:
            bottle.HTTPResponse: 400 ``MISSING_USERNAME`` / ``MISSING_PASSWORD``.
        """
        username, password = fields.get("username"), fields.get("password")
        if not isinstance(username, str) or not username:
            raise error_response(400, "the username is missing", "MISSING_USERNAME")
        if not isinstance(password, str) or not password:
            raise error_response(400, "the password is missing", "MISSING_PASSWORD")
        return username, password

    def _checked_login(self, username: str, password: str) -> Any:
        """``auth.login`` or the 401/412/429 error."""
        environ = bottle.request.environ
        principal = self._password_login(username, password, environ)
        if principal is None:
            if self.auth.user_count() == 0:
                raise error_response(412, "Please create a user first", "REGISTRATION_REQUIRED")
            raise error_response(401, "Invalid credentials", "INVALID_CREDENTIALS")
        return principal

    def _issue_token(self) -> bottle.HTTPResponse:
        """A new API token, for username/password in the body or for the caller's credential."""
        fields = self.fields()
        if fields.get("username") or fields.get("password"):
            principal = self._checked_login(*self._credentials_in(fields))
        else:
            principal = self.require("admin").principal
        if not principal.allows("admin"):
            raise error_response(403, "creating tokens needs the 'admin' scope", "INSUFFICIENT_SCOPE")
        name = fields.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 100):
            raise error_response(400, "name must be a non-empty string of at most 100 characters")
        days = fields.get("expiry_days", fields.get("expires_days"))
        if days in ("", None):
            days = None
        else:
            try:
                days = float(days)
            except (TypeError, ValueError):
                days = math.nan
            if not (0 < days <= 36500):
                raise error_response(400, "expiry_days must be a number of days in (0, 36500]")
        scopes = fields.get("scopes", fields.get("scope", "control"))
        if isinstance(scopes, str):
            scopes = scopes.replace(",", " ").split()
        if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
            raise error_response(400, f"scopes must be a non-empty list of {', '.join(SCOPES)}")
        for s in scopes:
            if not principal.allows(s):
                raise error_response(403, f"you cannot grant the {s!r} scope", "INSUFFICIENT_SCOPE")
        try:
            token, info = self.auth.create_token(principal.username, name=name, scopes=tuple(scopes),
                                                 expires_days=days)
        except TokenNameExists as e:
            raise error_response(400, str(e), "TOKEN_NAME_EXISTS") from None
        except ValueError as e:
            raise error_response(400, str(e)) from None
        log.info("API token %r created for %s", getattr(info, "name", "?"), principal.username)
        return json_response({"token": token, **_token_info(info)})

    def _login(self, *, include_session_token: bool) -> bottle.HTTPResponse:
        """Check username/password, open a session, set its cookie."""
        environ = bottle.request.environ
        if not self.origin_ok(environ):
            raise error_response(403, "cross-origin login refused", "INVALID_CSRF")
        fields = self.fields()
        principal = self._checked_login(*self._credentials_in(fields))
        return self._session_reply(principal, fields, include_session_token=include_session_token)

    def _session_reply(self, principal: Any, fields: Mapping[str, Any], *,
                       include_session_token: bool) -> bottle.HTTPResponse:
        """Open a session for ``principal``; the JSON reply (or 303 to ``redirect``) with its cookie."""
        environ = bottle.request.environ
        remember = _truthy(fields.get("remember"))
        session_token, csrf = self.auth.create_session(principal.username, remember=remember)
        redirect = _safe_redirect(fields.get("redirect") or _query(environ).get("redirect"))
        body: dict[str, Any] = {"status": "ok", "username": principal.username,
                                "scopes": _scope_list(principal.scopes), "csrf_token": csrf,
                                "redirect": redirect or "/"}
        if include_session_token:
            body["session_token"] = session_token
        form = environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")
        if form and redirect:
            resp = bottle.HTTPResponse(status=303, headers={"Location": redirect})
        else:
            resp = json_response(body)
        _set_session_cookie(resp, environ, session_token, int(REMEMBER_TTL_S) if remember else None)
        log.info("session opened for %s from %s", principal.username, _client_ip(environ))
        return resp

    def _register(self) -> bottle.HTTPResponse:
        """Create the first user with the one-time setup code (no open registration)."""
        environ = bottle.request.environ
        if not self.origin_ok(environ):
            raise error_response(403, "cross-origin registration refused", "INVALID_CSRF")
        fields = self.fields()
        if self.auth.user_count() > 0:
            raise error_response(401, "registration is closed: a user exists (use `pihub user add`)",
                                 "REGISTRATION_DISABLED")
        code = fields.get("setup_code", fields.get("code"))
        if not isinstance(code, str) or not code.strip():
            raise error_response(401, "registration needs the one-time setup code printed in the pihub log",
                                 "REGISTRATION_DISABLED")
        username, password = self._credentials_in(fields)
        confirm = fields.get("confirm_password")
        if confirm is not None and confirm != password:
            raise error_response(400, "the passwords do not match", "PASSWORD_MISMATCH")
        try:
            principal = self.auth.redeem_setup_code(code, username, password)
        except RateLimited as e:
            raise _too_many(e, "too many attempts") from None
        except PermissionError:
            raise error_response(401, "invalid setup code", "INVALID_CREDENTIALS") from None
        except ValueError as e:
            raise error_response(400, str(e)) from None
        log.warning("first user %r registered with the setup code", principal.username)
        return self._session_reply(principal, fields, include_session_token=True)

    def auth_get(self) -> bottle.HTTPResponse:
        """``GET /auth``: who the credential belongs to."""
        caller = self.identify(bottle.request.environ)
        p = caller.principal
        return json_response({"status": "ok", "username": p.username, "scopes": _scope_list(p.scopes),
                              "via": caller.source})

    def auth_delete(self) -> bottle.HTTPResponse:
        """``DELETE /auth``: revoke the API token in the body, or end the caller's session."""
        environ = bottle.request.environ
        fields = self.fields()
        token = fields.get("token")
        if token is not None:
            if not isinstance(token, str):
                raise error_response(400, "token must be a string", "INVALID_TOKEN")
            principal = self.auth.check_token(token)
            if principal is None:
                raise error_response(404, "no such live API token", "INVALID_TOKEN")
            if principal.token_id is None:
                raise error_response(400, "the environment token cannot be revoked here: unset "
                                          "PIHUB_API_TOKEN and restart", "INVALID_TOKEN")
            self.auth.revoke_token(principal.token_id, username=principal.username)
            log.info("API token %s of %s revoked by its holder", principal.token_id, principal.username)
            return json_response({"status": "ok"})
        return self._end_session(environ, json_response({"status": "ok"}))

    def _end_session(self, environ: Mapping[str, Any], resp: bottle.HTTPResponse) -> bottle.HTTPResponse:
        """End the session of ``X-Session-Token`` or the cookie (if any); clear the cookie."""
        header = environ.get("HTTP_X_SESSION_TOKEN")
        for token in (_wsgi_text(header).strip() if header else None, _session_cookie(environ)):
            if token:
                self.auth.end_session(token)
        _clear_session_cookie(resp, environ)
        return resp

    def tokens_get(self) -> bottle.HTTPResponse:
        """``GET /tokens``: the caller's API tokens (everyone's for the env token); never a secret."""
        caller = self.require("admin")
        tokens = self.auth.list_tokens(_owner(caller.principal))
        return json_response({"tokens": [_token_info(t) for t in tokens]})

    def tokens_delete(self, token_id: str) -> bottle.HTTPResponse:
        """``DELETE /tokens/<id>``: revoke one of the caller's tokens, by id or name."""
        caller = self.require("admin")
        try:
            done = self.auth.revoke_token(token_id, username=_owner(caller.principal))
        except ValueError as e:
            raise error_response(400, str(e), "INVALID_TOKEN") from None
        if not done:
            raise error_response(404, "no such token", "NOT_FOUND")
        log.info("API token %r of %s revoked", token_id, caller.principal.username)
        return json_response({"status": "ok"})

    # ------------------------------------------------------------ /login /logout
    def login_get(self) -> bottle.HTTPResponse:
        """``GET /login``: a minimal HTML form posting to ``/login``."""
        redirect = _safe_redirect(_query(bottle.request.environ).get("redirect")) or ""
        page = _LOGIN_PAGE.format(redirect=html.escape(redirect, quote=True))
        resp = bottle.HTTPResponse(body=page, status=200)
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Cache-Control", "no-store")
        return resp

    def login_post(self) -> bottle.HTTPResponse:
        """``POST /login``: the form's target; sets the session cookie."""
        return self._login(include_session_token=False)

    def logout(self) -> bottle.HTTPResponse:
        """``GET|POST /logout``: end the session, clear the cookie, optionally redirect."""
        environ = bottle.request.environ
        redirect = _safe_redirect(_query(environ).get("redirect"))
        if redirect:
            resp = bottle.HTTPResponse(status=303, headers={"Location": redirect})
        else:
            resp = json_response({"status": "ok"})
        return self._end_session(environ, resp)

    # -------------------------------------------------------------------- hooks
    def hook(self, name: str) -> bottle.HTTPResponse:
        """``/hook/<name>``: publish a ``WebhookEvent`` and answer with the hook's reply."""
        environ = bottle.request.environ
        rule = self.hook_rules.get(name) or {}
        public = bool(rule.get("public"))
        query = _query(environ)
        used_query_token = False
        if not public:
            presented, used_query_token = self._hook_token(environ, rule, query)
            if not presented:
                caller = self.require("control")
                used_query_token = caller.source == "query"
        drop = set(_ALWAYS_REDACTED)
        if not public:
            drop |= _CREDENTIAL_HEADERS
        if used_query_token:
            query.pop("token", None)
        event = Event.of("WebhookEvent", source="http", hook=name,
                         method=environ.get("REQUEST_METHOD", "GET").upper(), args=query,
                         data=self._hook_data(), headers=_request_headers(environ, drop))
        reply = self.hub.webhook(event, timeout=self.hook_timeout)
        if reply is None:
            self._count_webhook("unmatched")
            return json_response({"status": "ok", **{k: event.args[k] for k in
                                                     ("hook", "method", "args", "data", "headers")}})
        if reply.errors:
            self._count_webhook("failed")
            log.warning("webhook %s: %s", name, "; ".join(reply.errors))
            message = "the hook failed (see the pihub log)" if public else "; ".join(reply.errors)
            raise error_response(500, message, "HOOK_FAILED")
        self._count_webhook("replied")
        if reply.output is None:
            return json_response({"status": "ok", **{k: event.args[k] for k in
                                                     ("hook", "method", "args", "data", "headers")}})
        return _hook_reply(reply.output)

    def _hook_token(self, environ: Mapping[str, Any], rule: Mapping[str, Any],
                    query: Mapping[str, str]) -> tuple[bool, bool]:
        """Whether the request carries the hook's own token: ``(matched, from_query)``."""
        secret = rule.get("token")
        if not secret:
            return False, False
        expected = str.__str__(secret)
        header = environ.get("HTTP_X_TOKEN")
        if header is None:
            scheme, _, rest = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
            header = rest if scheme.lower() == "bearer" else None
        if header is not None:
            return _same_bytes(_wsgi_text(header).strip(), expected), False
        if (rule.get("allow_query_token") or self.allow_query_token) and "token" in query:
            return _same_bytes(query["token"], expected), True
        return False, False

    def _hook_data(self) -> Any:
        """The webhook body: parsed JSON for a JSON body, else text (None when empty)."""
        raw = self.body()
        if not raw:
            return None
        ctype = bottle.request.environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype == "application/json" or ctype.endswith("+json"):
            try:
                return json.loads(raw)
            except (ValueError, RecursionError):
                pass  # a mislabelled body is still delivered, as text
        return raw.decode("utf-8", errors="replace")

    def _count_webhook(self, outcome: str) -> None:
        with self._lock:
            self.webhooks[outcome] += 1

    # --------------------------------------------------------------- /resources
    def resource(self, rest: str) -> bottle.HTTPResponse:
        """``GET /resources/<name>/<path>``: a file under a ``resource_dirs`` root, never outside."""
        self.require("read")
        environ = bottle.request.environ
        found = self._resolve_resource(environ.get("bottle.raw_path", ""))
        if found is None:
            raise error_response(404, "no such resource")
        root, relative = found
        return bottle.static_file(relative, root=root)

    def _resolve_resource(self, raw_path: str) -> tuple[str, str] | None:
        """``(root, path relative to it)`` of a servable regular file, or None.

        ``raw_path`` is the WSGI ``PATH_INFO`` before Bottle re-decodes it (Bottle drops
        invalid UTF-8 bytes, which would turn ``.%FF.`` into ``..``): it is decoded
        strictly here, split on ``/``, and refused if any segment is empty, ``.``, ``..``,
        or holds a NUL or a backslash. The joined path is then resolved with
        :func:`os.path.realpath` (following every symlink) and MUST stay under the root's
        own real path (:func:`os.path.commonpath`), and be a regular file.
        """
        try:
            path = raw_path.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return None
        prefix = "/resources/"
        if not path.startswith(prefix):
            return None
        segments = path[len(prefix):].split("/")
        for k in range(len(segments) - 1, 0, -1):
            root = self.resource_roots.get("/".join(segments[:k]))
            if root is not None:
                rest = segments[k:]
                break
        else:
            return None
        if any(s in ("", ".", "..") or "\x00" in s or "\\" in s for s in rest):
            return None
        real = os.path.realpath(os.path.join(root, *rest))
        try:
            if os.path.commonpath([root, real]) != root or real == root:
                return None
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except (OSError, ValueError):
            return None
        return root, os.path.relpath(real, root)

    # ----------------------------------------------------------- introspection
    def actions(self) -> bottle.HTTPResponse:
        """``GET /actions``: every action with its arguments and doc."""
        self.require("read")
        return json_response(self.hub.registry.describe())

    def openapi(self) -> bottle.HTTPResponse:
        """``GET /openapi.json``: the OpenAPI 3.0 description of this API."""
        from pihub.web.openapi import openapi_document

        return json_response(openapi_document())

    def livez(self) -> bottle.HTTPResponse:
        """``GET /livez``: the process answers."""
        return json_response({"status": "ok"})

    def readyz(self) -> bottle.HTTPResponse:
        """``GET /readyz``: 200 once the hub is started and its dispatcher runs, else 503."""
        hub = self.hub
        started = getattr(hub, "started", getattr(hub, "_started", False))
        if started and hub.dispatcher.running:
            return json_response({"status": "ready"})
        raise error_response(503, "pihub is not started, or its dispatcher is not running", "NOT_READY")

    def metrics(self) -> bottle.HTTPResponse:
        """``GET /metrics``: Prometheus text exposition (format 0.0.4)."""
        self.require("read")
        resp = bottle.HTTPResponse(body=self.metrics_text(), status=200)
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        return resp

    def metrics_text(self) -> str:
        """The Prometheus exposition of the hub's and the web layer's counters."""
        hub = self.hub
        out = _Exposition()
        out.add("pihub_info", "gauge", "pihub version and device id",
                [({"version": __version__, "device_id": str(hub.device_id)}, 1)])
        try:
            bus = hub.bus.stats()
        except Exception:  # a stopped hub has closed its bus
            bus = {}
        out.add("pihub_bus_published_total", "counter", "events accepted by the bus, per producer",
                [({"producer": n}, s.published) for n, s in bus.items()])
        out.add("pihub_bus_dropped_total", "counter", "events dropped because a producer's ring was full",
                [({"producer": n}, s.dropped) for n, s in bus.items()])
        out.add("pihub_bus_depth", "gauge", "events waiting in a producer's ring",
                [({"producer": n}, s.depth) for n, s in bus.items()])
        out.add("pihub_bus_capacity", "gauge", "events a producer's ring holds at most",
                [({"producer": n}, s.capacity) for n, s in bus.items()])
        st = hub.dispatcher.stats
        out.add("pihub_dispatch_events_total", "counter", "events dispatched", [({}, st.events)])
        out.add("pihub_hooks_fired_total", "counter", "hook jobs queued", [({}, st.hooks_fired)])
        out.add("pihub_hooks_dropped_total", "counter", "hook jobs dropped (worker queue full)",
                [({}, st.hooks_dropped)])
        out.add("pihub_bus_overflow_reports_total", "counter", "BusOverflowEvents published",
                [({}, st.overflow_reports)])
        lat = hub.dispatcher.latency
        counts, total_us, n = list(lat.counts), lat.total_us, lat.n
        cumulative, samples = 0, []
        for bound, count in zip(lat.bounds, counts, strict=True):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else _num(bound / 1e6)
            samples.append(({"le": le}, cumulative))
        out.histogram("pihub_dispatch_latency_seconds",
                      "event timestamp to hook job queued, in seconds", samples, total_us / 1e6, n)
        pool = hub.pool
        out.add("pihub_pool_workers", "gauge", "worker threads", [({}, pool.workers)])
        out.add("pihub_pool_pending", "gauge", "jobs queued or running", [({}, pool.pending)])
        out.add("pihub_pool_completed_total", "counter", "jobs run", [({}, pool.completed)])
        out.add("pihub_pool_failed_total", "counter", "jobs that raised", [({}, pool.failed)])
        out.add("pihub_pool_rejected_total", "counter", "jobs refused (queue full)", [({}, pool.rejected)])
        with self.app._counts_lock:
            statuses = sorted(self.app.status_counts.items())
        out.add("pihub_http_requests_total", "counter", "HTTP responses sent, by status code",
                [({"code": str(code)}, count) for code, count in statuses])
        with self._lock:
            hooks = sorted(self.webhooks.items())
        out.add("pihub_webhooks_total", "counter", "/hook calls, by outcome",
                [({"outcome": k}, v) for k, v in hooks])
        clients = getattr(hub, "web_clients", None)
        try:
            count = int(clients()) if callable(clients) else 0
        except Exception:
            count = 0
        out.add("pihub_websocket_clients", "gauge", "websocket clients connected", [({}, count)])
        rss = _rss_bytes()
        if rss is not None:
            out.add("process_resident_memory_bytes", "gauge", "resident set size, in bytes", [({}, rss)])
        out.add("process_threads", "gauge", "Python threads", [({}, threading.active_count())])
        return out.text()


def _too_many(e: Any, what: str) -> bottle.HTTPResponse:
    """The 429 reply to a :class:`pihub.auth.RateLimited`, ``Retry-After`` in whole seconds."""
    retry = max(1, math.ceil(float(e.retry_after)))
    return error_response(429, f"{what}; try again in {retry} s", "RATE_LIMITED", {"Retry-After": str(retry)})


def _json_error(e: Exception) -> str:
    """A JSON error without the document's text (positions only)."""
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at line {e.lineno} column {e.colno}"
    return "not UTF-8" if isinstance(e, UnicodeDecodeError) else "invalid"


def _json_kind(value: Any) -> str:
    """The JSON type name of a decoded value."""
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _client_ip(environ: Mapping[str, Any]) -> str:
    """The peer address (forwarding headers are not trusted)."""
    return str(environ.get("REMOTE_ADDR") or "unknown")


def _session_cookie(environ: Mapping[str, Any]) -> str | None:
    """The ``session_token`` cookie's value, or None."""
    header = environ.get("HTTP_COOKIE")
    if not header:
        return None
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == SESSION_COOKIE:
            value = value.strip().strip('"')
            return value or None
    return None


def _set_session_cookie(resp: bottle.BaseResponse, environ: Mapping[str, Any], value: str,
                        max_age: int | None) -> None:
    """Add the ``session_token`` cookie: ``HttpOnly; SameSite=Strict``, ``Secure`` over TLS.

    Args:
        resp: the response to add it to.
        environ: the request's environ (for the scheme).
        value: the session token (URL-safe characters only), or ``""`` to delete it.
        max_age: lifetime in seconds; None for a browser-session cookie, 0 to delete.
    """
    parts = [f"{SESSION_COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if environ.get("wsgi.url_scheme") == "https":
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
        if max_age == 0:
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    resp.add_header("Set-Cookie", "; ".join(parts))


def _clear_session_cookie(resp: bottle.BaseResponse, environ: Mapping[str, Any]) -> None:
    """Tell the browser to drop the session cookie."""
    _set_session_cookie(resp, environ, "", 0)


def _owner(principal: Any) -> str | None:
    """Whose tokens a principal manages: its own; everyone's for the env token."""
    return None if principal.username == ENV_USERNAME and principal.via == "env" else principal.username


def _scope_list(scopes: Any) -> list[str]:
    """Scopes in :data:`SCOPES` order."""
    return [s for s in SCOPES if s in scopes]


def _token_info(info: Any) -> dict[str, Any]:
    """The public fields of a :class:`pihub.auth.TokenInfo` (it holds no secret)."""
    return {"id": info.id, "name": info.name, "username": info.username, "scopes": _scope_list(info.scopes),
            "created_at": info.created_at, "expires_at": info.expires_at, "last_used_at": info.last_used_at}


def _hook_reply(output: Any) -> bottle.HTTPResponse:
    """A hook's output as the HTTP reply, with the ``(data, code[, headers])`` convention.

    ``{"___data___", "___code___", "___headers___"}`` (Platypush's internal spelling) is
    accepted too. Data: a dict, list, number or bool -> JSON; a string -> text/plain;
    bytes -> application/octet-stream; None -> an empty body. Headers that would break
    the framing or override the security headers are dropped.
    """
    data, code, headers = output, 200, {}
    if isinstance(output, dict) and "___data___" in output and isinstance(output.get("___code___"), int):
        data, code = output["___data___"], output["___code___"]
        headers = output.get("___headers___") or {}
    elif (isinstance(output, (list, tuple)) and len(output) in (2, 3) and type(output[1]) is int
          and 200 <= output[1] <= 599 and (len(output) == 2 or isinstance(output[2], dict))):
        data, code = output[0], output[1]
        headers = output[2] if len(output) == 3 else {}
    if not (isinstance(code, int) and 200 <= code <= 599):
        code = 200
    if isinstance(data, (bytes, bytearray)):
        resp = bottle.HTTPResponse(body=bytes(data), status=code)
        resp.content_type = "application/octet-stream"
    elif isinstance(data, str):
        resp = bottle.HTTPResponse(body=data.encode("utf-8"), status=code)
        resp.content_type = "text/plain; charset=utf-8"
    elif data is None:
        resp = bottle.HTTPResponse(body=b"", status=code)
    else:
        resp = json_response(data, code)
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            k, v = str(key), str(value)
            if k.lower() in _HOOK_FORBIDDEN_HEADERS or not _header_ok(k, v):
                log.warning("webhook reply: header %r dropped", k)
                continue
            resp.set_header(k, v)
    return resp


def _header_ok(name: str, value: str) -> bool:
    """A header name made of token characters and a value without control characters."""
    if not name or not name.isascii() or not name.isprintable():
        return False
    if any(c in name for c in '()<>@,;:\\"/[]?={} \t'):
        return False
    return all(c == "\t" or (" " <= c <= "~") for c in value)


def _num(value: float) -> str:
    """A sample value in Prometheus text."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _label(value: str) -> str:
    """A label value escaped for the exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Exposition:
    """Collects metric families and renders the Prometheus text format."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        """One family: ``# HELP``, ``# TYPE`` and a line per sample."""
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self._lines.append(f"{name}{self._labels(labels)} {_num(value)}")

    def histogram(self, name: str, help_text: str, buckets: list[tuple[dict[str, str], float]],
                  total: float, count: int) -> None:
        """A histogram family: cumulative ``_bucket`` samples, ``_sum`` and ``_count``."""
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for labels, value in buckets:
            self._lines.append(f"{name}_bucket{self._labels(labels)} {_num(value)}")
        self._lines += [f"{name}_sum {_num(float(total))}", f"{name}_count {_num(count)}"]

    @staticmethod
    def _labels(labels: Mapping[str, str]) -> str:
        if not labels:
            return ""
        return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self._lines) + "\n"


def _rss_bytes() -> int | None:
    """Resident set size of this process in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


_LOGIN_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>pihub: log in</title></head>
<body><h1>pihub</h1>
<form method="post" action="/login">
<p><label>User name <input name="username" autocomplete="username" required autofocus></label></p>
<p><label>Password
  <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><label><input name="remember" type="checkbox" value="1"> Keep me logged in</label></p>
<input name="redirect" type="hidden" value="{redirect}">
<p><button type="submit">Log in</button></p>
</form></body></html>
"""


def _guard(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Bottle plugin: an unexpected exception in a route becomes a logged JSON 500."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except bottle.HTTPResponse:
            raise
        except BodyTooLarge:
            return error_response(413, "the request body is too large")
        except Exception:
            req = bottle.request
            log.exception("unhandled error in %s %s", req.method, req.path)
            return error_response(500, "internal error (see the pihub log)")

    return wrapper


def make_app(hub: Any, *, auth: Any = None, settings: Mapping[str, Any] | None = None) -> PihubApp:
    """Build the HTTP API of ``hub``.

    Args:
        hub: the :class:`pihub.hub.Hub` (``execute``, ``publish``, ``webhook``, ``registry``,
            ``bus``, ``dispatcher``, ``pool``, ``device_id``; optionally ``web_clients()``
            returning the websocket client count, and ``started``).
        auth: the :class:`pihub.auth.Auth`; ``hub.auth`` when None.
        settings: the ``http`` section (raw or already validated); the hub config's
            ``http`` section when None, else every default.

    Returns:
        The app (a :class:`bottle.Bottle`, so a WSGI callable).

    Raises:
        ValueError: ``settings`` do not validate, or there is no Auth.
    """
    if auth is None:
        auth = getattr(hub, "auth", None)
    if auth is None:
        raise ValueError("make_app needs an Auth: pass auth= or set hub.auth")
    if settings is None:
        config = getattr(hub, "config", None)
        settings = getattr(config, "sections", {}).get("http") if config is not None else None
    values, problems = HTTP_SCHEMA.validate(dict(settings or {}), ("http",))
    errors = [p for p in problems if not getattr(p, "warning", False)]
    if errors:
        raise ValueError("; ".join(str(p) for p in errors))

    app = PihubApp(values["max_body"])
    api = _Api(hub, auth, values, app)
    app.api = api  # type: ignore[attr-defined]
    app.install(_guard)
    app.route("/execute", "POST", api.execute)
    app.route("/auth", "POST", api.auth_post)
    app.route("/auth", "GET", api.auth_get)
    app.route("/auth", "DELETE", api.auth_delete)
    app.route("/tokens", "GET", api.tokens_get)
    app.route("/tokens/<token_id>", "DELETE", api.tokens_delete)
    app.route("/login", "GET", api.login_get)
    app.route("/login", "POST", api.login_post)
    app.route("/logout", ["GET", "POST"], api.logout)
    app.route("/hook/<name>", list(HOOK_METHODS), api.hook)
    app.route("/resources/<rest:path>", "GET", api.resource)
    app.route("/actions", "GET", api.actions)
    app.route("/openapi.json", "GET", api.openapi)
    app.route("/metrics", "GET", api.metrics)
    app.route("/livez", "GET", api.livez)
    app.route("/readyz", "GET", api.readyz)
    return app
