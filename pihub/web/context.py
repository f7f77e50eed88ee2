"""What every HTTP route module shares: the JSON replies and errors, the request as the
access policy sees it, the body, and the :class:`WebContext` of one app.

Route modules (:mod:`~pihub.web.login`, :mod:`~pihub.web.webhooks`,
:mod:`~pihub.web.resources`, :mod:`~pihub.web.metrics`) import this module, never
:mod:`pihub.web.app`, which imports them: so there is no import cycle, and each of them
can be read without the app.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl

import bottle

from pihub.errors import BodyTooLarge, MessageError
from pihub.messages import dumps, json_kind, loads
from pihub.web.access import Access, Caller, Refused, RequestView

__all__ = ["ERROR_NAMES", "HSTS_HEADER", "SECURITY_HEADERS", "WebContext", "error_response", "json_response",
           "wsgi_view"]

#: Headers added to every response.
SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
#: Added to responses sent over TLS only (a plain-HTTP answer must not pin HTTPS).
HSTS_HEADER: Final = ("Strict-Transport-Security", "max-age=31536000")
#: The lower-case names of the headers above: only the app sets them.
OWN_HEADERS: Final = frozenset(k.lower() for k, _ in (*SECURITY_HEADERS, HSTS_HEADER))

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
_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})


# ---------------------------------------------------------------------- replies
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
    return json_response({"code": status, "error": name or error_name(status), "message": message},
                         status, headers)


def error_name(status: int) -> str:
    """The default error name of ``status``."""
    if status in ERROR_NAMES:
        return ERROR_NAMES[status]
    try:
        return HTTPStatus(status).phrase.upper().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "ERROR"


def error_bytes(status: int, message: str) -> tuple[str, bytes]:
    """``("413 Request Entity Too Large", b'{"code":...}')`` for the early error paths."""
    body = dumps({"code": status, "error": error_name(status), "message": message}).encode()
    return f"{status} {HTTPStatus(status).phrase}", body


def set_session_cookie(resp: bottle.BaseResponse, environ: Mapping[str, Any], value: str,
                       max_age: int | None, name: str) -> None:
    """Add the session cookie: ``HttpOnly; SameSite=Strict``, ``Secure`` over TLS.

    Args:
        resp: the response to add it to.
        environ: the request's environ (for the scheme).
        value: the session token (URL-safe characters only), or ``""`` to delete it.
        max_age: lifetime in seconds; None for a browser-session cookie, 0 to delete.
        name: the cookie's name (:data:`pihub.web.access.SESSION_COOKIE`).
    """
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if environ.get("wsgi.url_scheme") == "https":
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
        if max_age == 0:
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    resp.add_header("Set-Cookie", "; ".join(parts))


def refusal_response(refused: Refused, environ: Mapping[str, Any], cookie: str | None) -> bottle.HTTPResponse:
    """The HTTP error of a policy refusal (clearing the session cookie when it named a
    session that is gone)."""
    resp = error_response(refused.status, refused.message, refused.name, refused.headers)
    if refused.clear_cookie and cookie:
        set_session_cookie(resp, environ, "", 0, cookie)
    return resp


# ------------------------------------------------------------------ the request
def wsgi_text(value: str) -> str:
    """A WSGI (latin-1 transported) string as UTF-8 text, when it is valid UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


#: header name -> WSGI environ key, for the names looked up so far.
_KEYS: dict[str, str] = {}


class _WsgiHeaders(Mapping[str, str]):
    """The request headers of a WSGI environ by lower-case name, read on access (a route
    asks for two or three of them; copying all would cost more than the check)."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = _KEYS.get(name)
        if key is None:
            key = name.upper().replace("-", "_")
            key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
            if len(_KEYS) < 64:  # the policy asks for a handful of names; never grow unbounded
                _KEYS[name] = key
        return key

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(self._key(name))
        if not isinstance(value, str):
            raise KeyError(name)
        return wsgi_text(value)

    def get(self, name: str, default: Any = None) -> Any:
        value = self._environ.get(_KEYS.get(name) or self._key(name))
        return wsgi_text(value) if isinstance(value, str) else default

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if isinstance(value, str) and key.startswith("HTTP_"):
                yield key[5:].lower().replace("_", "-")

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _WsgiView(RequestView):
    """A :class:`RequestView` whose :meth:`header` reads the environ directly (the policy
    looks up two or three headers per request; this is its hot path)."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        # the base's fields, set directly: this runs once per request
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.headers = _WsgiHeaders(environ)
        self.query_string = environ.get("QUERY_STRING", "")
        self.remote_addr = str(environ.get("REMOTE_ADDR") or "unknown")
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self._environ = environ

    def header(self, name: str) -> str | None:
        value = self._environ.get(_KEYS.get(name) or _WsgiHeaders._key(name))
        return wsgi_text(value) if isinstance(value, str) else None


def wsgi_view(environ: Mapping[str, Any]) -> RequestView:
    """The :class:`RequestView` of a WSGI request."""
    return _WsgiView(environ)


def client_ip(environ: Mapping[str, Any]) -> str:
    """The peer address (forwarding headers are not trusted)."""
    return str(environ.get("REMOTE_ADDR") or "unknown")


def query(environ: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters, first value of each, decoded as UTF-8 (bad bytes replaced)."""
    qs = environ.get("QUERY_STRING", "")
    if not qs:
        return {}
    out: dict[str, str] = {}
    for k, v in parse_qsl(qs, keep_blank_values=True, encoding="utf-8", errors="replace"):
        out.setdefault(k, v)
    return out


def truthy(value: Any) -> bool:
    """A form or JSON flag: true, 1, "1", "true", "yes", "on" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in _TRUE_WORDS


# ------------------------------------------------------------------ the context
class WebContext:
    """What the routes of one app share: the hub, the Auth, the access policy, the
    validated ``http`` settings, and the current request's body and credential.

    Args:
        hub: the hub (:class:`pihub.web.WebHub`).
        auth: the :class:`pihub.auth.Auth`.
        settings: the validated ``http`` section.
        access: the app's :class:`~pihub.web.access.Access`.
    """

    def __init__(self, hub: Any, auth: Any, settings: Mapping[str, Any], access: Access) -> None:
        self.hub = hub
        self.auth = auth
        self.settings = settings
        self.access = access
        self.max_body: int = settings["max_body"]
        self._lock = threading.Lock()
        #: ``/hook`` calls by outcome (``/metrics``).
        self.webhooks: dict[str, int] = {"replied": 0, "unmatched": 0, "failed": 0}

    def count_webhook(self, outcome: str) -> None:
        """Count one ``/hook`` outcome."""
        with self._lock:
            self.webhooks[outcome] += 1

    def webhook_counts(self) -> dict[str, int]:
        """A copy of the ``/hook`` outcome counters."""
        with self._lock:
            return dict(self.webhooks)

    # ------------------------------------------------------------- credentials
    def _refused(self, e: Refused, environ: Mapping[str, Any]) -> bottle.HTTPResponse:
        return refusal_response(e, environ, self.access.session_cookie)

    def identify(self) -> Caller:
        """Authenticate the current request (:meth:`Access.identify`).

        Raises:
            bottle.HTTPResponse: the policy's refusal (401, 412, 429).
        """
        environ = bottle.request.environ
        try:
            return self.access.identify(wsgi_view(environ))
        except Refused as e:
            raise self._refused(e, environ) from None

    def require(self, scope: str, *, changes_state: bool = False) -> Caller:
        """Authenticate the current request and check ``scope`` and CSRF (:meth:`Access.require`;
        ``changes_state``: CSRF for a ``GET`` too).

        Raises:
            bottle.HTTPResponse: the policy's refusal (401, 403, 412, 429).
        """
        environ = bottle.request.environ
        try:
            return self.access.require(wsgi_view(environ), scope, changes_state=changes_state)
        except Refused as e:
            raise self._refused(e, environ) from None

    def refuse_cross_origin(self, what: str) -> None:
        """403 ``INVALID_CSRF`` ("cross-origin ``what`` refused") for an untrusted ``Origin``.

        Raises:
            bottle.HTTPResponse: the 403.
        """
        if not self.access.origin_ok(wsgi_view(bottle.request.environ)):
            raise error_response(403, f"cross-origin {what} refused", "INVALID_CSRF")

    # ------------------------------------------------------------------ bodies
    def body(self) -> bytes:
        """The request body, read once, at most ``max_body`` bytes.

        Raises:
            bottle.HTTPResponse: 413 past the limit.
        """
        environ = bottle.request.environ
        cached: bytes | None = environ.get("pihub.body")
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
            return loads(raw)
        except MessageError as e:
            raise error_response(400, f"the body is {e}") from None

    def fields(self) -> dict[str, Any]:
        """The body as a mapping: a JSON object or a urlencoded form (first value per key).

        Raises:
            bottle.HTTPResponse: 400 (not an object, bad encoding), 415 (another media type).
        """
        raw = self.body()
        ctype = content_type(bottle.request.environ)
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
            raise error_response(400, f"the body must be a JSON object, not {json_kind(value)}")
        return value


def content_type(environ: Mapping[str, Any]) -> str:
    """The request's media type, lower case, without parameters (``""`` when none)."""
    return str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
