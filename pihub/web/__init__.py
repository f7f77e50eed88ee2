"""pihub's HTTP front door: the ``http`` config section, the Bottle app, the WSGI server.

* :data:`HTTP_SCHEMA` validates the ``http`` section (Platypush's ``backend.http`` is read
  under that name by the config loader).
* :func:`pihub.web.app.make_app` builds the Bottle application from a hub.
* :class:`pihub.web.server.WebServer` serves it on a threaded WSGI server (cheroot), with
  optional TLS.
* ``pihub.web.live`` is the websocket server on ``websocket_port``.
* :class:`WebHub` is all either server sees of the hub; :mod:`pihub.web.access` is the
  one access policy both apply (credentials, scopes, CSRF, Origin).

Every option Platypush documents for ``backend.http`` loads: the ones pihub has the same
meaning for are read (``ssl_capath`` loads a CA directory; ``run_externally`` leaves the
serving to another WSGI server), and the ones it does not need (``uwsgi_args``, ``maps``,
``dashboard``, ``redis_queue``, ``secret_key_file``...) are accepted with a warning saying
they are ignored and what to do instead, so that a Platypush section loads unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

from pihub.config.schema import Field, Schema, dict_of

if TYPE_CHECKING:
    from pihub.events import Event
    from pihub.hub import HubMetrics
    from pihub.messages import Request, Response
    from pihub.web.camera import CameraSource

__all__ = ["HOOK_SCHEMA", "HTTP_SCHEMA", "WebHub"]


class WebHub(Protocol):
    """What the web layer (the HTTP app and the websocket server) uses of
    :class:`pihub.hub.Hub`: its methods, never its bus, dispatcher, pool or registry."""

    device_id: str

    @property
    def ready(self) -> bool:
        """Started, and the dispatcher thread runs (``GET /readyz``)."""
        ...

    def execute(self, request: Request) -> Response:
        """Run one action request now, on the calling thread."""
        ...

    def publish(self, event: Event) -> bool:
        """Publish an event; False when the bus was full and it was dropped."""
        ...

    def webhook(self, event: Event, timeout: float = 30.0) -> Response | None:
        """Publish a ``WebhookEvent`` and wait (``timeout`` seconds) for its hook's reply."""
        ...

    def status(self) -> dict[str, Any]:
        """The JSON-able daemon state of ``GET /status``."""
        ...

    def metrics(self) -> HubMetrics:
        """The counters ``GET /metrics`` exposes."""
        ...

    def describe_actions(self) -> list[dict[str, Any]]:
        """Every action with its arguments and doc (``GET /actions``)."""
        ...

    def camera(self, name: str) -> CameraSource | None:
        """The running camera backend ``name`` (``camera.pi``), or None (``/camera/...``)."""
        ...

#: One entry of ``http.hooks``: how ``/hook/<name>`` is protected.
HOOK_SCHEMA: Final = Schema(
    {
        "public": Field(bool, False, doc="no authentication at all for this hook (Platypush's behaviour); "
                                         "anyone who can reach the port can fire it"),
        "token": Field(str, None, secret=True,
                       doc="a shared secret for this hook only; a request carrying it in X-Token or "
                           "'Authorization: Bearer' (or ?token= when allow_query_token) needs no user "
                           "credential. Use !env or !file to keep it out of the config file"),
        "allow_query_token": Field(bool, False,
                                   doc="accept this hook's token in the ?token= query parameter, for "
                                       "senders that cannot set headers (the URL then holds the secret)"),
    },
    doc="access rules of one webhook",
)

_IGNORED = "ignored by pihub (it has no effect); remove it"

HTTP_SCHEMA: Final = Schema(
    {
        "enabled": Field(bool, True, doc="serve the HTTP API at all"),
        "port": Field(int, 8008, min=0, max=65535, doc="TCP port of the HTTP API (0: any free port)"),
        "bind_address": Field(str, "127.0.0.1",
                              doc="address to listen on; the loopback default keeps the API off the "
                                  "network until you choose otherwise (0.0.0.0 for every interface)"),
        "websocket_port": Field(int, 8009, min=0, max=65535,
                                doc="TCP port of the websocket server (0: any free port)"),
        "disable_websocket": Field(bool, False, doc="do not start the websocket server"),
        "resource_dirs": Field(dict[str, str], {},
                               doc="name -> directory served read-only under /resources/<name>/ "
                                   "(authenticated, read scope)"),
        "ssl_cert": Field(str, None, doc="PEM certificate (chain) file; with ssl_key, serve HTTPS only"),
        "ssl_key": Field(str, None, doc="PEM private key file of ssl_cert"),
        "ssl_cafile": Field(str, None,
                            doc="PEM CA bundle; when set, clients MUST present a certificate it signed "
                                "(mutual TLS), in addition to the usual credentials"),
        "ssl_capath": Field(str, None,
                            doc="directory of PEM CA certificates named by their OpenSSL subject hash "
                                "('openssl rehash DIR' makes the names); like ssl_cafile (and together "
                                "with it), clients MUST present a certificate one of them signed"),
        "run_externally": Field(bool, False,
                                doc="do not start the built-in HTTP server (nothing binds port): serve "
                                    "pihub.web.app.make_app(hub) from your own WSGI server in the hub's "
                                    "process (README, 'Serving the API from another WSGI server'); the "
                                    "websocket server still runs unless disable_websocket"),
        "allow_query_token": Field(bool, False,
                                   doc="accept API tokens in the ?token= query parameter (they then end "
                                       "up in proxy logs and browser history)"),
        "max_body": Field(int, 65536, min=1024, max=64 << 20, doc="largest request body accepted, in bytes "
                                                                  "(413 beyond)"),
        "max_frame": Field(int, 65536, min=1024, max=64 << 20,
                           doc="largest websocket frame accepted, in bytes (close 1009 beyond)"),
        "websocket_replay": Field(int, 1000, min=0, max=1_000_000,
                                  doc="recent events kept for replay to reconnecting websocket clients, "
                                      "in events"),
        "websocket_replay_bytes": Field(int, 16 << 20, min=64 << 10, max=1 << 30,
                                        doc="memory the recent events may keep, in bytes (estimated): "
                                            "the websocket replay ring and the hook traces each keep at "
                                            "most this much, dropping their oldest events past it, "
                                            "whatever websocket_replay says"),
        "websocket_queue": Field(int, 256, min=1, max=1_000_000,
                                 doc="messages queued per websocket client at most, in messages; a client "
                                     "that falls further behind is disconnected"),
        "allowed_origins": Field(list[str], [],
                                 doc="browser origins (scheme://host[:port]) allowed besides the server's "
                                     "own to log in and to open websockets"),
        "threads": Field(int, 8, min=1, max=256, aliases=("num_workers",),
                         doc="HTTP worker threads, i.e. requests served at the same time"),
        "hooks": Field(dict_of(HOOK_SCHEMA), {},
                       doc="per-webhook access rules, by hook name; a hook not listed needs a user "
                           "credential with the control scope"),
        "hook_timeout": Field(float, 30.0, min=0.1, max=600.0,
                              doc="seconds /hook/<name> waits for the matching hook's reply"),
        # Platypush options that have no meaning here.
        "bind_socket": Field(object, None, doc="Platypush's UNIX socket option; not supported",
                             deprecated="UNIX sockets are not supported; use bind_address and port"),
        "secret_key_file": Field(object, None, doc="Platypush's Flask secret; ignored", deprecated=_IGNORED),
        "use_werkzeug_server": Field(object, None, doc="Platypush's server choice; ignored",
                                     deprecated=_IGNORED),
        "zeroconf_enabled": Field(object, None, doc="Platypush's mDNS announcement; ignored",
                                  deprecated=_IGNORED),
        "uwsgi_args": Field(object, None, doc="Platypush's uWSGI command line; ignored",
                            deprecated="pihub does not use uWSGI and never starts it; remove it, and to "
                                       "serve the API from another server set run_externally: true and "
                                       "serve pihub.web.app.make_app(hub) (see the README)"),
        "maps": Field(object, None, doc="Platypush's Google Maps page settings; ignored",
                      deprecated="pihub has no /map page; remove it"),
        "dashboard": Field(object, None, doc="Platypush's dashboard widgets; ignored",
                           deprecated="pihub's panel has no dashboard widgets; remove it"),
        "redis_queue": Field(object, None, doc="Platypush's Redis queue name; ignored",
                             deprecated="pihub has no Redis bus; remove it"),
        "poll_seconds": Field(object, None, doc="Platypush's backend poll period; ignored",
                              deprecated="the HTTP server does not poll; remove it"),
    },
    doc="The HTTP API (Platypush's backend.http): /execute, /hook/<name>, /resources, /auth...",
)
