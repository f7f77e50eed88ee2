"""The HTTP API as a Bottle application: :func:`make_app` builds it from a hub.

There is no module-global app: every call of :func:`make_app` builds an independent
:class:`PihubApp`, so tests build as many as they like and call them as plain WSGI
callables. The app sees the hub only through :class:`pihub.web.WebHub` (its methods,
never its insides), and every route asks :mod:`pihub.web.access` who the caller is and
whether it may.

Where the routes live:

* this module: the app (routing, JSON errors, security headers, body limits),
  ``POST /execute``, ``GET /status``, ``GET /actions``, ``GET /openapi.json``,
  ``GET /livez``, ``GET /readyz`` and ``GET /metrics`` (rendered by :mod:`pihub.web.metrics`);
* :mod:`pihub.web.login`: ``/login``, ``/logout``, ``/auth``, ``/tokens``;
* :mod:`pihub.web.webhooks`: ``/hook/<name>``;
* :mod:`pihub.web.resources`: ``/resources/<name>/<path>``;
* :mod:`pihub.web.camera`: ``/camera/<name>/photo.jpg`` and ``/camera/<name>/video.mjpeg``;
* :mod:`pihub.web.panel`: the web panel, ``/``, ``/ui/<file>``, ``/panel/...``,
  ``/events/<id>/trace`` and ``/dashboard/<name>``.

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
  :meth:`PihubApp.wsgi` around Bottle, so no code path can forget them. A panel HTML
  page carries the panel's own policy instead (``default-src 'none'``, and its websocket
  origin in ``connect-src``; see :mod:`pihub.web.panel`).
* A request body is at most ``max_body`` bytes: a larger ``Content-Length`` is refused
  with 413 before any route runs, and a chunked body is cut off (413) as soon as the read
  passes the limit.

**Credentials, scopes, CSRF, Origin**: see :mod:`pihub.web.access` (the same policy as
the websocket server's). Scopes: ``read`` for GET routes, ``control`` for ``/execute``
and webhooks, ``admin`` for token management; ``/livez``, ``/readyz``,
``/openapi.json``, ``/login`` and ``/logout`` need none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, BinaryIO

import bottle

from pihub.errors import BodyTooLarge, MessageError
from pihub.messages import Request, dumps, json_kind, parse
from pihub.web import HTTP_SCHEMA, WebHub
from pihub.web.access import SAFE_METHODS, SESSION_COOKIE, Access, Caller
from pihub.web.camera import camera_routes
from pihub.web.context import (
    ERROR_NAMES,
    HSTS_HEADER,
    OWN_HEADERS,
    SECURITY_HEADERS,
    WebContext,
    content_type,
    error_bytes,
    error_name,
    error_response,
    json_response,
)
from pihub.web.login import Accounts
from pihub.web.panel import PAGE_CSP, mount_panel
from pihub.web.resources import Resources
from pihub.web.webhooks import HOOK_METHODS, Webhooks

log = logging.getLogger("pihub.web")

__all__ = ["ERROR_NAMES", "HOOK_METHODS", "SAFE_METHODS", "SECURITY_HEADERS", "SESSION_COOKIE", "Caller",
           "PihubApp", "error_response", "json_response", "make_app"]


# ------------------------------------------------------------------------------ app
class PihubApp(bottle.Bottle):  # type: ignore[misc]  # bottle is untyped (Any)
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
        return dumps({"code": status, "error": error_name(status), "message": message})

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
        return self._send(start_response, status, headers, out, https, environ.get(PAGE_CSP))

    def _precheck(self, environ: Mapping[str, Any]) -> tuple[str, bytes] | None:
        """Refuse a bad or too large ``Content-Length`` before routing (status, body) or None."""
        length = environ.get("CONTENT_LENGTH", "")
        if not length:
            return None
        text = length.strip()
        if not text.isdigit() or not text.isascii():
            return error_bytes(400, "Content-Length is not a number")
        if int(text) > self.max_body:
            return error_bytes(413, f"the request body is larger than {self.max_body} bytes")
        return None

    def _send(self, start_response: Callable[..., Any], status: str, headers: list[tuple[str, str]],
              out: Iterable[bytes], https: bool, csp: str | None = None) -> Iterable[bytes]:
        """Add the security headers, count the status, call the real ``start_response``.

        ``csp``: a panel page's own Content-Security-Policy (:data:`pihub.web.panel.PAGE_CSP`),
        replacing the default one.
        """
        final = [(k, v) for k, v in headers if k.lower() not in OWN_HEADERS]
        final.extend(SECURITY_HEADERS if csp is None else
                     [(k, csp if k == "Content-Security-Policy" else v) for k, v in SECURITY_HEADERS])
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


def _internal_error() -> tuple[str, bytes]:
    """The 500 status line and JSON body."""
    return error_bytes(500, "internal error (see the pihub log)")


class _LimitedInput:
    """``wsgi.input`` that raises :class:`BodyTooLarge` once more than ``limit`` bytes are read.

    Covers bodies without a ``Content-Length`` (chunked), whose size is only known by
    reading them.
    """

    def __init__(self, stream: BinaryIO | None, limit: int) -> None:
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
    """The routes of this module and the state they share; one per :func:`make_app` call."""

    def __init__(self, ctx: WebContext, app: PihubApp) -> None:
        self.ctx = ctx
        self.hub: WebHub = ctx.hub
        self.app = app

    def execute(self) -> bottle.HTTPResponse:
        """``POST /execute``: run a request, or publish an event (Platypush's envelope)."""
        self.ctx.require("control")
        ctype = content_type(bottle.request.environ)
        # No Content-Type is read as JSON: Platypush's /execute does (Flask keeps such a
        # body), and minimal HTTP clients send none. A declared other type is refused:
        # curl -d alone sends a form type, which Platypush could not read either.
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise error_response(415, f"POST /execute takes Content-Type application/json, not {ctype!r} "
                                      "(with curl: -H 'Content-Type: application/json')")
        message = self.ctx.json_body()
        if not isinstance(message, dict):
            raise error_response(400, f"the message must be a JSON object, not {json_kind(message)}",
                                 "INVALID_MESSAGE")
        try:
            parsed = parse(message, default_origin="http", wire_size=len(self.ctx.body()))
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

    def status(self) -> bottle.HTTPResponse:
        """``GET /status``: the daemon's state (:meth:`pihub.hub.Hub.status`)."""
        self.ctx.require("read")
        return json_response(self.hub.status())

    def actions(self) -> bottle.HTTPResponse:
        """``GET /actions``: every action with its arguments and doc."""
        self.ctx.require("read")
        return json_response(self.hub.describe_actions())

    def openapi(self) -> bottle.HTTPResponse:
        """``GET /openapi.json``: the OpenAPI 3.0 description of this API."""
        from pihub.web.openapi import openapi_document

        return json_response(openapi_document())

    def livez(self) -> bottle.HTTPResponse:
        """``GET /livez``: the process answers."""
        return json_response({"status": "ok"})

    def readyz(self) -> bottle.HTTPResponse:
        """``GET /readyz``: 200 once the hub is started and its dispatcher runs, else 503."""
        if self.hub.ready:
            return json_response({"status": "ready"})
        raise error_response(503, "pihub is not started, or its dispatcher is not running", "NOT_READY")

    def metrics(self) -> bottle.HTTPResponse:
        """``GET /metrics``: Prometheus text exposition (format 0.0.4)."""
        self.ctx.require("read")
        resp = bottle.HTTPResponse(body=self.metrics_text(), status=200)
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        return resp

    def metrics_text(self) -> str:
        """The Prometheus exposition of the hub's and the web layer's counters."""
        from pihub.web.metrics import render

        with self.app._counts_lock:
            statuses = dict(self.app.status_counts)
        return render(self.hub.metrics(), statuses, self.ctx.webhook_counts())


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


def make_app(hub: WebHub, *, auth: Any = None, settings: Mapping[str, Any] | None = None) -> PihubApp:
    """Build the HTTP API of ``hub``.

    Args:
        hub: the :class:`pihub.hub.Hub`, or anything with :class:`pihub.web.WebHub`'s
            methods; optionally ``web_clients()``. Its ``auth`` and its config's ``http``
            section are read when ``auth`` and ``settings`` are not given.
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

    access = Access(auth, allow_query_token=values["allow_query_token"],
                    allowed_origins=values["allowed_origins"],
                    own_ports=(values["port"], values["websocket_port"]), session_cookie=SESSION_COOKIE)
    ctx = WebContext(hub, auth, values, access)
    app = PihubApp(values["max_body"])
    api = _Api(ctx, app)
    accounts = Accounts(ctx)
    hooks = Webhooks(ctx)
    files = Resources(ctx, values["resource_dirs"])
    app.api = api
    app.install(_guard)
    app.route("/execute", "POST", api.execute)
    app.route("/auth", "POST", accounts.auth_post)
    app.route("/auth", "GET", accounts.auth_get)
    app.route("/auth", "DELETE", accounts.auth_delete)
    app.route("/tokens", "GET", accounts.tokens_get)
    app.route("/tokens/<token_id>", "DELETE", accounts.tokens_delete)
    app.route("/login", "GET", accounts.login_get)
    app.route("/login", "POST", accounts.login_post)
    app.route("/logout", ["GET", "POST"], accounts.logout)
    app.route("/hook/<name>", list(HOOK_METHODS), hooks.hook)
    app.route("/resources/<rest:path>", "GET", files.resource)
    app.route("/status", "GET", api.status)
    app.route("/actions", "GET", api.actions)
    app.route("/openapi.json", "GET", api.openapi)
    app.route("/metrics", "GET", api.metrics)
    app.route("/livez", "GET", api.livez)
    app.route("/readyz", "GET", api.readyz)
    camera_routes(app, ctx)
    mount_panel(app, ctx)
    return app
