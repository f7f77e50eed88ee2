"""The web panel: the static files of ``webui/`` and the few JSON views only it needs.

The panel is plain HTML, CSS and JavaScript modules in ``webui/`` (no build step, no
third-party code, nothing fetched from another host). This module serves them and adds
the panel's views to the app; everything else the panel does goes through the API any
client uses: ``POST /login`` and ``/logout`` (the session cookie), ``POST /execute``
(with the session's ``X-CSRF-Token``), ``GET /status``, ``GET /actions`` and the
websocket's ``/ws/events`` (the cookie authenticates the handshake; ``?since=`` replays
what a reconnecting panel missed).

Routes:

* ``GET /``: the panel (``webui/index.html``) for a caller with the ``read`` scope;
  without a valid session (or with an ended one) a 303 to the panel's login page
  ``/ui/login.html?redirect=/``.
* ``GET /ui/<file>``: the files of ``webui/`` (no credential: they hold no data), with a
  strong ``ETag`` (``If-None-Match`` answers 304) and ``Cache-Control: no-cache``, so a
  browser revalidates each file with one small request and an upgrade shows at once.
  Only the files present when the app was built are served: a path is a key of that
  table, never joined to a directory, so no path can leave ``webui/``.
* ``GET /panel/session`` (``read``): ``{username, scopes, csrf_token, device_id, version,
  websocket: {port, path}}``; ``csrf_token`` is the session's (null for a token caller).
* ``GET /panel/devices`` (``read``): :meth:`pihub.hub.Hub.describe_devices`.
* ``GET /panel/hooks`` (``read``): :meth:`pihub.hub.Hub.describe_hooks`.
* ``GET /events/<id>/trace`` (``read``): :meth:`pihub.hub.Hub.trace`, the hook trace
  ``pihub replay`` prints, for one of the last ``http.websocket_replay`` events (fewer when
  they hold more than ``http.websocket_replay_bytes``); 404 when it is not kept, 400 for an id that is not 1 to 64 hex digits.
* ``GET /dashboard/<name>``: a dashboard's page (:mod:`pihub.web.dashboards`; no
  credential: it holds no data), and ``GET /panel/dashboards/<name>`` (``read``): its
  rows, title, and for each carousel the URLs of its folder's images (``/resources/...``).

Content-Security-Policy. The app sends ``default-src 'self'`` on every response; the
panel's HTML pages get :func:`page_csp` instead (the app's ``_send`` substitutes it,
see :data:`PAGE_CSP`): no inline script or style anywhere (``'unsafe-inline'`` is never
allowed), and ``connect-src`` adds exactly the websocket server's origin (same host as
the page, the websocket port, ``ws:`` or ``wss:`` as the page's scheme), which
``'self'`` does not cover since the port differs.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote

import bottle

from pihub import __version__
from pihub.web.access import Refused
from pihub.web.context import WebContext, error_response, json_response, wsgi_view
from pihub.web.dashboards import DASHBOARD_NAME

__all__ = ["PAGE_CSP", "WEBUI_DIR", "PanelHub", "StaticFiles", "mount_panel", "page_csp"]

def _webui_dir() -> Path:
    """The checkout's ``webui/``, else the installed copy ``pihub/webui/`` (pyproject.toml)."""
    here = Path(__file__).resolve()
    checkout = here.parents[2] / "webui"
    return checkout if (checkout / "index.html").is_file() else here.parents[1] / "webui"


#: The panel's files: ``webui/`` in a checkout, ``pihub/webui/`` once installed.
WEBUI_DIR: Final = _webui_dir()
#: WSGI environ key a route sets to give its response its own Content-Security-Policy.
PAGE_CSP: Final = "pihub.page_csp"
#: The panel's login page, where ``/`` sends a caller without a session.
LOGIN_PAGE: Final = "/ui/login.html"

_TYPES: Final[Mapping[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
#: A whole ``Host`` header: a DNS name or IPv4 address, or a bracketed IPv6 one, and an optional port.
_HOST_HEADER: Final = re.compile(
    r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
_EVENT_ID: Final = re.compile(r"^[0-9a-fA-F]{1,64}$")
#: What a carousel shows of a resource folder: image files, at most this many.
_IMAGES: Final = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".svg", ".avif"})
_MAX_IMAGES: Final = 500


class PanelHub(Protocol):
    """What the panel's views use of the hub, besides :class:`pihub.web.WebHub`."""

    device_id: str

    def describe_devices(self) -> list[dict[str, Any]]: ...

    def describe_hooks(self) -> dict[str, Any]: ...

    def trace(self, event_id: str) -> dict[str, Any] | None: ...

    def websocket_port(self) -> int | None: ...

    def dashboards(self) -> dict[str, Any]: ...


def page_csp(host_header: str | None, scheme: str, ws_port: int | None) -> str:
    """The Content-Security-Policy of a panel page.

    Args:
        host_header: the request's ``Host`` header (the page's host, and so the
            websocket's); a value that is not a host name or IP literal with an optional
            port adds no websocket origin.
        scheme: ``http`` or ``https`` (``ws:`` or ``wss:``).
        ws_port: the websocket server's port, None when it does not run.
    """
    connect = "'self'"
    m = _HOST_HEADER.match(host_header.strip()) if ws_port and host_header else None
    if m is not None:
        connect += f" {'wss' if scheme == 'https' else 'ws'}://{m['host']}:{int(ws_port or 0)}"
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"connect-src {connect}; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'; object-src 'none'")


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    etag: str
    content_type: str


class StaticFiles:
    """The files of a folder, read once, by relative path (see the module docstring).

    Args:
        root: the folder; its files with a known suffix (:data:`_TYPES`) are served,
            dot-files and subfolders starting with a dot are not.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, _File] = {}
        if not root.is_dir():
            return
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            ctype = _TYPES.get(path.suffix.lower())
            if ctype is None:
                continue
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self.files[rel.as_posix()] = _File(body, etag, ctype)

    def response(self, rel: str, csp: str | None = None) -> bottle.HTTPResponse:
        """The file ``rel`` (a 304 when the request's ``If-None-Match`` has its ETag).

        Args:
            rel: the path relative to the folder (``app.js``, ``pages/devices.js``).
            csp: the page CSP to send (HTML pages), via :data:`PAGE_CSP`.

        Raises:
            bottle.HTTPResponse: 404 when there is no such file.
        """
        f = self.files.get(rel)
        if f is None:
            raise error_response(404, "no such file in the panel")
        if csp is not None and f.content_type.startswith("text/html"):
            bottle.request.environ[PAGE_CSP] = csp
        headers = {"ETag": f.etag, "Cache-Control": "no-cache"}
        match = bottle.request.environ.get("HTTP_IF_NONE_MATCH", "")
        if f.etag in {m.strip() for m in match.split(",")}:
            return bottle.HTTPResponse(status=304, headers=headers)
        resp = bottle.HTTPResponse(body=f.body, status=200, headers=headers)
        resp.content_type = f.content_type
        return resp


class _Panel:
    """The panel's routes of one app."""

    def __init__(self, ctx: WebContext, files: StaticFiles) -> None:
        self.ctx = ctx
        self.hub: PanelHub = ctx.hub
        self.files = files

    def _csp(self) -> str:
        environ = bottle.request.environ
        return page_csp(environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme", "http"), self.hub.websocket_port())

    def index(self) -> bottle.HTTPResponse:
        """``GET /``: the panel, or a 303 to the login page."""
        environ = bottle.request.environ
        try:
            caller = self.ctx.access.identify(wsgi_view(environ))
        except Refused:
            caller = None
        if caller is None or not caller.principal.allows("read"):
            return bottle.HTTPResponse(status=303, headers={"Location": f"{LOGIN_PAGE}?redirect=/",
                                                            "Cache-Control": "no-store"})
        return self.files.response("index.html", self._csp())

    def static(self, rel: str) -> bottle.HTTPResponse:
        """``GET /ui/<file>``."""
        return self.files.response(rel, self._csp())

    def session(self) -> bottle.HTTPResponse:
        """``GET /panel/session``: who is logged in, the CSRF token, where the websocket is."""
        caller = self.ctx.require("read")
        p = caller.principal
        from pihub.auth import SCOPES

        try:
            port = self.hub.websocket_port()
        except AttributeError:
            port = None
        return json_response({
            "username": p.username, "scopes": [s for s in SCOPES if s in p.scopes],
            "csrf_token": caller.csrf, "device_id": str(self.hub.device_id), "version": __version__,
            "websocket": {"port": port, "path": "/ws/events"} if port else None,
        }, headers={"Cache-Control": "no-store"})

    def devices(self) -> bottle.HTTPResponse:
        """``GET /panel/devices``."""
        self.ctx.require("read")
        return json_response(self.hub.describe_devices(), headers={"Cache-Control": "no-store"})

    def hooks(self) -> bottle.HTTPResponse:
        """``GET /panel/hooks``."""
        self.ctx.require("read")
        return json_response(self.hub.describe_hooks(), headers={"Cache-Control": "no-store"})

    def trace(self, event_id: str) -> bottle.HTTPResponse:
        """``GET /events/<id>/trace``."""
        self.ctx.require("read")
        if not _EVENT_ID.match(event_id):
            raise error_response(400, f"event id must be 1 to 64 hex digits, not {event_id[:80]!r}")
        found = self.hub.trace(event_id.lower())
        if found is None:
            raise error_response(404, f"event {event_id} is not among the recent events kept for tracing "
                                      "(http.websocket_replay events, http.websocket_replay_bytes bytes)")
        return json_response(found, headers={"Cache-Control": "no-store"})

    def dashboard_page(self, name: str) -> bottle.HTTPResponse:
        """``GET /dashboard/<name>``: the dashboard page (it holds no data; its calls need ``read``)."""
        if not DASHBOARD_NAME.match(name):
            raise error_response(404, "no such dashboard")
        return self.files.response("dashboard.html", self._csp())

    def dashboard(self, name: str) -> bottle.HTTPResponse:
        """``GET /panel/dashboards/<name>``: a dashboard's rows, and its carousels' image URLs."""
        self.ctx.require("read")
        boards = self.hub.dashboards()
        board = boards.get(name)
        if board is None:
            known = ", ".join(sorted(boards)) or "none is configured"
            raise error_response(404, f"no dashboard named {name[:80]!r} (dashboards: {known})")
        dirs = {w["dir"] for row in board["rows"] for w in row if w["widget"] == "carousel"}
        return json_response({"name": name, "title": board.get("title") or name, "rows": board["rows"],
                              "images": {d: self._images(d) for d in sorted(dirs)}},
                             headers={"Cache-Control": "no-store"})

    def _images(self, key: str) -> dict[str, Any]:
        """``{"files": [URL under /resources/...], "error": why none}`` of a resource folder."""
        dirs: Mapping[str, str] = self.ctx.settings["resource_dirs"]
        directory = dirs.get(key)
        if directory is None:
            have = ", ".join(sorted(dirs)) or "none"
            return {"files": [], "error": f"http.resource_dirs has no {key!r} (it has: {have})"}
        try:
            names = sorted(e.name for e in os.scandir(os.path.expanduser(directory))
                           if e.is_file() and not e.name.startswith(".")
                           and os.path.splitext(e.name)[1].lower() in _IMAGES)
        except OSError as e:
            return {"files": [], "error": f"http.resource_dirs.{key}: cannot list {directory}: {e.strerror}"}
        files = [f"/resources/{quote(key)}/{quote(n)}" for n in names[:_MAX_IMAGES]]
        return {"files": files, "error": None if files else f"no images in http.resource_dirs.{key}"}


def mount_panel(app: bottle.Bottle, ctx: WebContext, webui: Path = WEBUI_DIR) -> None:
    """Add the panel's routes (module docstring) to ``app``.

    Args:
        app: the app :func:`pihub.web.app.make_app` builds.
        ctx: its shared context; ``ctx.hub`` is a :class:`pihub.web.WebHub` and, for the
            panel's views, a :class:`PanelHub`.
        webui: the folder of the panel's files.
    """
    panel = _Panel(ctx, StaticFiles(webui))
    app.route("/", "GET", panel.index)
    app.route("/ui/<rel:path>", "GET", panel.static)
    app.route("/panel/session", "GET", panel.session)
    app.route("/panel/devices", "GET", panel.devices)
    app.route("/panel/hooks", "GET", panel.hooks)
    app.route("/events/<event_id>/trace", "GET", panel.trace)
    app.route("/dashboard/<name>", "GET", panel.dashboard_page)
    app.route("/panel/dashboards/<name>", "GET", panel.dashboard)
