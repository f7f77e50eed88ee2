"""Who is this request, and may it do this: the one access policy of HTTP and the websocket.

Both servers describe a request as a :class:`RequestView` (method, headers, query,
peer address, scheme, host) and ask one :class:`Access` object; neither parses a
credential, compares an ``Origin`` or checks a scope itself. The decisions are:

**Credentials**, looked for in this order; the first one present decides (a wrong one
is refused, never a silent fall-through to the next):

1. ``X-Token: <token>``;
2. ``Authorization: Bearer <token>``, or ``Authorization: Basic`` (user name and
   password; any other scheme is a credential that cannot be valid);
3. ``?token=<token>`` on the URL: accepted only with ``allow_query_token``, otherwise
   refused at once (``INVALID_CREDENTIALS``, naming ``http.allow_query_token``) rather
   than ignored, so a secret put in a URL by mistake is never silently skipped; given
   twice, it is refused;
4. ``X-Session-Token: <session>``: a panel session given explicitly;
5. the session cookie (``session_token``).

A token is an API token or the environment token (:meth:`pihub.auth.Auth.check_token`,
a SHA-256 lookup). A password (Basic) costs one argon2 check and counts toward the
failed-login limits; the websocket server refuses passwords (``accept_passwords=False``):
the check would stall its event loop, and a password-authenticated socket could not be
closed when the password changes, whereas token and session sockets close at once when
their credential ends. A header sent more than once is read as its values joined with
``, `` (``; `` for ``Cookie``), as HTTP combines repeated fields, so a credential header
sent twice is never a valid credential.

**Refusals** are :class:`Refused`, carrying the HTTP status and error name the README
documents, the HTTP message and the websocket close reason (``NAME: why``):
401 ``INVALID_CREDENTIALS`` (missing, wrong, or a refused query token), 401
``INVALID_SESSION`` (a session that expired or ended), 412 ``REGISTRATION_REQUIRED`` (no
user exists yet and no valid credential; HTTP only, ``registration_hint``), 429
``RATE_LIMITED`` (password limits, with ``Retry-After``), 403 ``INSUFFICIENT_SCOPE``, 403
``INVALID_CSRF``.

**Scopes**: ``read`` < ``control`` < ``admin`` (:data:`pihub.auth.SCOPES`); each route or
endpoint names the one it needs.

**CSRF**: a request authenticated by the session *cookie* (the one credential a browser
adds by itself) whose method changes state (anything but GET, HEAD, OPTIONS) MUST carry
the session's ``X-CSRF-Token`` header, and its ``Origin``, when present, MUST pass the
Origin rule. A websocket handshake is a GET: the Origin rule is its CSRF fence, and the
websocket server applies it to every handshake that has an ``Origin``.

**The Origin rule** (:func:`origin_allowed`), one for both servers: a browser ``Origin``
is trusted when it is one of ``allowed_origins`` (compared case-insensitively, without a
trailing slash), or when it is ``http``/``https`` with the host of the request's ``Host``
header and a port that is either the ``Host`` header's own (a reverse proxy serving
both) or one of this hub's own ports (the HTTP and the websocket port, so the panel
served on one may talk to the other). ``null``, other schemes and a missing ``Host``
are refused. The scheme is not compared with the request's: one host and port serve one
scheme, and behind a TLS-terminating proxy the two differ.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

from pihub.auth import csrf_ok
from pihub.errors import RateLimited, Refused

__all__ = [
    "SAFE_METHODS", "SESSION_COOKIE", "Access", "AuthLike", "Caller", "Credential", "PrincipalLike",
    "Refused", "RequestView", "origin_allowed", "query_params", "read_cookie",
]

#: Methods that never change state, so a cookie session needs no CSRF token for them.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Name of the panel session cookie (Platypush's).
SESSION_COOKIE: Final = "session_token"

#: Where a credential came from (:attr:`Caller.source`, ``GET /auth``'s ``via``).
TOKEN: Final = "token"
QUERY: Final = "query"
BASIC: Final = "basic"
SESSION_HEADER: Final = "session-header"
SESSION_COOKIE_SOURCE: Final = "session-cookie"
_SESSIONS: Final = frozenset({SESSION_HEADER, SESSION_COOKIE_SOURCE})

#: Websocket close reasons (with 1008): the HTTP error name, then why.
REFUSED_CREDENTIALS: Final = "INVALID_CREDENTIALS: authentication failed"
REFUSED_QUERY_TOKEN: Final = "INVALID_CREDENTIALS: ?token= is refused unless http.allow_query_token is true"
REFUSED_PASSWORD: Final = "INVALID_CREDENTIALS: passwords are not accepted here; use an API token"
REFUSED_SESSION: Final = "INVALID_SESSION: the session expired or ended"
REFUSED_REGISTRATION: Final = "REGISTRATION_REQUIRED: create a user first"


class PrincipalLike(Protocol):
    """What :class:`pihub.auth.Principal` offers the web layer (read-only)."""

    @property
    def username(self) -> str: ...

    @property
    def scopes(self) -> frozenset[str]: ...

    @property
    def token_id(self) -> Any: ...

    @property
    def session_id(self) -> Any: ...

    def allows(self, scope: str) -> bool: ...


class AuthLike(Protocol):
    """What :class:`pihub.auth.Auth` offers the policy (``login`` and ``user_count`` only
    when passwords or the registration hint are on)."""

    def check_token(self, token: str) -> PrincipalLike | None: ...

    def check_session(self, session_token: str) -> tuple[PrincipalLike, str] | None: ...


class RequestView:
    """A request as the policy sees it, whichever server received it.

    A plain slotted class rather than a frozen dataclass: one is built per HTTP request,
    and a frozen dataclass's ``__init__`` costs a microsecond more.

    Attributes:
        method: the HTTP method, upper case (``GET`` for a websocket handshake).
        headers: header values by lower-case name (see the module docstring for repeats).
        query_string: the raw query string (without ``?``).
        remote_addr: the peer's address (forwarding headers are not trusted).
        scheme: ``http`` or ``https`` as this server received it.
    """

    __slots__ = ("headers", "method", "query_string", "remote_addr", "scheme")

    def __init__(self, method: str, headers: Mapping[str, str], query_string: str = "",
                 remote_addr: str = "unknown", scheme: str = "http") -> None:
        self.method = method
        self.headers = headers
        self.query_string = query_string
        self.remote_addr = remote_addr
        self.scheme = scheme

    def __repr__(self) -> str:  # no header values: they may hold credentials
        return f"<RequestView {self.method} from {self.remote_addr}>"

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (given in lower case), or None when absent."""
        return self.headers.get(name)

    @property
    def host(self) -> str | None:
        """The ``Host`` header, or None."""
        return self.headers.get("host")

    def params(self) -> dict[str, list[str]]:
        """The query parameters, every value of each (see :func:`query_params`)."""
        return query_params(self.query_string)


class Credential:
    """One credential found in a request (slotted, as :class:`RequestView`).

    Attributes:
        source: :data:`TOKEN`, :data:`QUERY`, :data:`BASIC`, :data:`SESSION_HEADER` or
            :data:`SESSION_COOKIE_SOURCE`.
        secret: the token, session token or password (never in a repr).
        username: the user name of a Basic credential, else ``""``.
    """

    __slots__ = ("secret", "source", "username")

    def __init__(self, source: str, secret: str, username: str = "") -> None:
        self.source = source
        self.secret = secret
        self.username = username

    def __repr__(self) -> str:
        return f"<Credential {self.source}>"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the request, and how.

    Attributes:
        principal: the :class:`pihub.auth.Principal` (``username``, ``scopes``, ``allows()``).
        source: where the credential came from: ``token`` (``X-Token``/Bearer), ``query``
            (``?token=``), ``basic``, ``session-header`` or ``session-cookie``.
        csrf: the session's CSRF token (sessions only).
        session_token: the session token (sessions only), to end or re-check it.
    """

    principal: Any
    source: str
    csrf: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="pihub"'}


def _bad_credentials(reason: str = REFUSED_CREDENTIALS, message: str = "Invalid credentials") -> Refused:
    return Refused(401, "INVALID_CREDENTIALS", message, reason, _CHALLENGE)


def query_params(query_string: str) -> dict[str, list[str]]:
    """Every value of every query parameter, names and values decoded as UTF-8 (bad bytes
    replaced); a name given percent-encoded (``%74oken``) is its decoded name."""
    if not query_string:
        return {}
    return parse_qs(query_string, keep_blank_values=True, encoding="utf-8", errors="replace")


def read_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header (the first one; quotes
    removed), or None when absent or empty. Other cookies, however malformed, are skipped."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            value = value.strip().strip('"')
            return value or None
    return None


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str, host_header: str | None, ports: Iterable[int],
                   allowed: Iterable[str]) -> bool:
    """Whether a browser ``Origin`` is trusted (the rule in the module docstring).

    Args:
        origin: the ``Origin`` header value.
        host_header: the request's ``Host`` header value, or None.
        ports: this hub's own ports (HTTP and websocket); 0 (not bound yet) is ignored.
        allowed: extra origins, ``scheme://host[:port]``, compared case-insensitively.
    """
    norm = _normal_origin(origin)
    if norm in {_normal_origin(a) for a in allowed}:
        return True
    if not host_header or "," in norm:
        return False
    try:
        o = urlsplit(norm)
        h = urlsplit("//" + host_header.strip().lower())
        o_port = o.port or {"http": 80, "https": 443}.get(o.scheme)
        h_port = h.port
    except ValueError:
        return False
    if o.scheme not in ("http", "https") or not o.hostname or o.hostname != h.hostname:
        return False
    own = {p for p in ports if p}
    return o_port in own or o_port == (h_port or {"http": 80, "https": 443}[o.scheme])


class Access:
    """The access policy of one server (see the module docstring).

    Args:
        auth: the authenticator (:class:`pihub.auth.Auth`, or anything with its
            ``check_token``/``check_session``; ``login`` when ``accept_passwords``,
            ``user_count`` when ``registration_hint``).
        allow_query_token: accept ``?token=`` (the config's ``http.allow_query_token``).
        allowed_origins: browser origins trusted besides this hub's own.
        own_ports: this hub's HTTP and websocket ports; a server bound to port 0 sets
            :attr:`own_ports` once it knows the real one.
        session_cookie: the session cookie's name; None reads no cookie.
        accept_passwords: accept ``Authorization: Basic``; False refuses it.
        registration_hint: answer 412 ``REGISTRATION_REQUIRED`` instead of 401 while no
            user exists.

    Attributes:
        own_ports: see above (a tuple of ints).
    """

    def __init__(self, auth: Any, *, allow_query_token: bool = False, allowed_origins: Iterable[str] = (),
                 own_ports: Iterable[int] = (), session_cookie: str | None = SESSION_COOKIE,
                 accept_passwords: bool = True, registration_hint: bool = True) -> None:
        self.auth = auth
        self.allow_query_token = allow_query_token
        self.allowed_origins: tuple[str, ...] = tuple(allowed_origins)
        self.own_ports: tuple[int, ...] = tuple(own_ports)
        self.session_cookie = session_cookie
        self.accept_passwords = accept_passwords
        self.registration_hint = registration_hint

    # ----------------------------------------------------------- credentials
    def credential(self, view: RequestView, *, allow_query_token: bool | None = None) -> Credential | None:
        """The first credential ``view`` carries, in the module docstring's order.

        Args:
            view: the request.
            allow_query_token: overrides :attr:`allow_query_token` (a webhook whose own
                token may come in the query).

        Returns:
            The credential, or None when the request carries none.

        Raises:
            Refused: a ``?token=`` that is not accepted, or given twice.
        """
        x_token = view.header("x-token")
        if x_token is not None:
            return Credential(TOKEN, x_token.strip())
        authorization = view.header("authorization")
        if authorization is not None:
            scheme, _, rest = authorization.strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "basic":
                try:
                    decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
                except (binascii.Error, ValueError):
                    return Credential(BASIC, "")
                username, _, password = decoded.partition(":")
                return Credential(BASIC, password, username)
            # an unknown scheme is a credential that cannot be valid
            return Credential(TOKEN, rest.strip() if scheme == "bearer" else "")
        if view.query_string:
            tokens = view.params().get("token")
            if tokens is not None:
                allowed = self.allow_query_token if allow_query_token is None else allow_query_token
                if not allowed:
                    raise _bad_credentials(REFUSED_QUERY_TOKEN, "?token= is refused unless "
                                                                "http.allow_query_token is true")
                if len(tokens) > 1:
                    raise _bad_credentials()
                return Credential(QUERY, tokens[0])
        session = view.header("x-session-token")
        if session is not None:
            return Credential(SESSION_HEADER, session.strip())
        if self.session_cookie:
            cookie = read_cookie(view.header("cookie"), self.session_cookie)
            if cookie is not None:
                return Credential(SESSION_COOKIE_SOURCE, cookie)
        return None

    def identify(self, view: RequestView) -> Caller:
        """Authenticate ``view``'s credential.

        Raises:
            Refused: 401, 412 or 429 (see the module docstring).
        """
        return self.authenticate(self.credential(view), view)

    def authenticate(self, cred: Credential | None, view: RequestView) -> Caller:
        """Check one credential (found in ``view``, or given in-band, e.g. a websocket's
        first message).

        Raises:
            Refused: 401, 412 or 429 (see the module docstring).
        """
        source = cred.source if cred is not None else None
        if cred is None:
            pass
        elif source in (TOKEN, QUERY):
            principal = self.auth.check_token(cred.secret) if cred.secret else None
            if principal is not None:
                return Caller(principal, cred.source)
        elif source == BASIC:
            if not self.accept_passwords:
                raise _bad_credentials(REFUSED_PASSWORD, "passwords are not accepted here; use an API token")
            principal = self._password_login(cred.username, cred.secret, view)
            if principal is not None:
                return Caller(principal, BASIC)
        else:
            found = self.auth.check_session(cred.secret) if cred.secret else None
            if found is not None:
                principal, csrf = found
                return Caller(principal, cred.source, csrf=csrf, session_token=cred.secret)
        if self.registration_hint and self.auth.user_count() == 0:
            raise Refused(412, "REGISTRATION_REQUIRED", "Please create a user first", REFUSED_REGISTRATION)
        if source in _SESSIONS:
            raise Refused(401, "INVALID_SESSION", "Invalid session", REFUSED_SESSION,
                          clear_cookie=source == SESSION_COOKIE_SOURCE)
        raise _bad_credentials()

    def _password_login(self, username: str, password: str, view: RequestView) -> Any:
        """``auth.login``; None when refused.

        Raises:
            Refused: 429 with ``Retry-After`` (whole seconds) when rate limited.
        """
        try:
            return self.auth.login(username, password, ip=view.remote_addr)
        except RateLimited as e:
            raise rate_limited(e, e.reason) from None
        except (PermissionError, ValueError):
            return None

    # ---------------------------------------------------------------- checks
    def require(self, view: RequestView, scope: str, *, changes_state: bool = False) -> Caller:
        """Authenticate ``view`` and check ``scope`` and, for cookie sessions, CSRF.

        Args:
            view: the request.
            scope: ``read``, ``control`` or ``admin``.
            changes_state: the route acts whatever the method (a webhook's ``GET`` runs
                hooks): CSRF is checked for a ``GET`` too.

        Returns:
            The caller.

        Raises:
            Refused: see :meth:`identify`, :meth:`check_csrf`, :meth:`check_scope`.
        """
        caller = self.authenticate(self.credential(view), view)
        if caller.source == SESSION_COOKIE_SOURCE:
            self.check_csrf(caller, view, changes_state=changes_state)
        if not caller.principal.allows(scope):
            self.check_scope(caller, scope)
        return caller

    @staticmethod
    def check_scope(caller: Caller, scope: str) -> None:
        """Refuse a caller without ``scope``.

        Raises:
            Refused: 403 ``INSUFFICIENT_SCOPE``.
        """
        if not caller.principal.allows(scope):
            raise Refused(403, "INSUFFICIENT_SCOPE", f"this credential lacks the {scope!r} scope",
                          f"INSUFFICIENT_SCOPE: {scope} scope required")

    def check_csrf(self, caller: Caller, view: RequestView, *, changes_state: bool = False) -> None:
        """Refuse a state-changing cookie-session request without its CSRF token, or from
        an untrusted ``Origin``: any method but the safe ones, or any at all with
        ``changes_state``.

        Raises:
            Refused: 403 ``INVALID_CSRF``.
        """
        if caller.source != SESSION_COOKIE_SOURCE or (view.method in SAFE_METHODS and not changes_state):
            return
        sent = view.header("x-csrf-token")
        if not caller.csrf or not csrf_ok(caller.csrf, sent.strip() if sent else None):
            raise Refused(403, "INVALID_CSRF", "missing or wrong X-CSRF-Token header",
                          "INVALID_CSRF: missing or wrong CSRF token")
        if not self.origin_ok(view):
            raise Refused(403, "INVALID_CSRF", "cross-origin request refused",
                          "INVALID_CSRF: cross-origin request refused")

    def origin_ok(self, view: RequestView) -> bool:
        """True when ``view`` has no ``Origin``, or one :func:`origin_allowed` trusts."""
        origin = view.header("origin")
        if origin is None:
            return True
        return origin_allowed(origin, view.host, self.own_ports, self.allowed_origins)

    def token_matches(self, view: RequestView, secret: str, *, allow_query_token: bool) -> tuple[bool, bool]:
        """Whether ``view`` carries ``secret`` (a webhook's own token) as its token credential.

        Args:
            view: the request.
            secret: the expected token.
            allow_query_token: whether it may come as ``?token=``.

        Returns:
            ``(matched, it came from the query)``; ``(False, False)`` when the request's
            credential is of another kind (it is then checked as a user credential).
        """
        try:
            cred = self.credential(view, allow_query_token=allow_query_token)
        except Refused:
            return False, False
        if cred is None or cred.source not in (TOKEN, QUERY):
            return False, False
        matched = hmac.compare_digest(secret.encode("utf-8", "surrogatepass"),
                                      cred.secret.encode("utf-8", "surrogatepass"))
        return matched, cred.source == QUERY


def rate_limited(e: Any, what: str) -> Refused:
    """The 429 refusal of a :class:`pihub.errors.RateLimited`, ``Retry-After`` in whole seconds."""
    retry = max(1, math.ceil(float(e.retry_after)))
    return Refused(429, "RATE_LIMITED", f"{what}; try again in {retry} s", f"RATE_LIMITED: {what}",
                   {"Retry-After": str(retry)})
