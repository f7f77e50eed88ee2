"""``/hook/<name>``: a ``WebhookEvent`` published for the call, answered with the hook's reply.

Any of GET POST PUT DELETE PATCH OPTIONS (HEAD comes with GET), as Platypush. Access: a
hook listed in ``http.hooks`` with ``public: true`` needs nothing; one with a ``token``
accepts that token (``X-Token``, ``Authorization: Bearer``, or ``?token=`` when the hook
or the section allows query tokens) in place of a user credential; every other hook
needs a credential with the control scope (:mod:`pihub.web.access`).

The ``WebhookEvent`` never contains the credential that opened it: ``Cookie``,
``X-Session-Token`` and ``X-CSRF-Token`` are always removed from its ``headers``,
``Authorization`` and ``X-Token`` unless the hook is public, and ``token`` from its
``args`` when that is where the credential came from.

The reply is the hook's output with the ``(data, code[, headers])`` convention (see
:func:`hook_reply`); without a matching hook, or a hook that returns nothing, the echo
``{"status": "ok", "hook", "method", "args", "data", "headers"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import bottle

from pihub.errors import MessageError
from pihub.events import Event
from pihub.messages import loads
from pihub.web.access import QUERY
from pihub.web.context import (
    OWN_HEADERS,
    WebContext,
    content_type,
    error_response,
    json_response,
    query,
    wsgi_text,
    wsgi_view,
)

log = logging.getLogger("pihub.web")

__all__ = ["HOOK_METHODS", "Webhooks", "hook_reply"]

#: Methods ``/hook/<name>`` answers (HEAD comes with GET), as Platypush.
HOOK_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
#: Request headers that carry pihub credentials (WSGI spelling); see the module docstring.
_ALWAYS_REDACTED: Final = frozenset({"HTTP_COOKIE", "HTTP_X_SESSION_TOKEN", "HTTP_X_CSRF_TOKEN"})
_CREDENTIAL_HEADERS: Final = frozenset({"HTTP_AUTHORIZATION", "HTTP_X_TOKEN"})
#: Response headers a hook's reply may not set: framing is the server's, security ours.
_HOOK_FORBIDDEN_HEADERS: Final = OWN_HEADERS | frozenset(
    {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"})
_ECHO: Final = ("hook", "method", "args", "data", "headers")


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
        out["-".join(part.capitalize() for part in name.split("_"))] = wsgi_text(value)
    return out


def _header_ok(name: str, value: str) -> bool:
    """A header name made of token characters and a value without control characters."""
    if not name or not name.isascii() or not name.isprintable():
        return False
    if any(c in name for c in '()<>@,;:\\"/[]?={} \t'):
        return False
    return all(c == "\t" or (" " <= c <= "~") for c in value)


def hook_reply(output: Any) -> bottle.HTTPResponse:
    """A hook's output as the HTTP reply, with the ``(data, code[, headers])`` convention.

    ``{"___data___", "___code___", "___headers___"}`` (Platypush's internal spelling) is
    accepted too. Data: a dict, list, number or bool -> JSON; a string -> text/plain;
    bytes -> application/octet-stream; None -> an empty body. Headers that would break
    the framing or override the security headers are dropped.
    """
    data, code = output, 200
    headers: Any = {}
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


class Webhooks:
    """The ``/hook/<name>`` route of one app.

    Args:
        ctx: the app's shared context (``http.hooks``, ``hook_timeout``, the policy).
    """

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.rules: dict[str, dict[str, Any]] = dict(ctx.settings["hooks"])
        self.timeout: float = ctx.settings["hook_timeout"]

    def hook(self, name: str) -> bottle.HTTPResponse:
        """``/hook/<name>``: publish a ``WebhookEvent`` and answer with the hook's reply."""
        ctx = self.ctx
        environ = bottle.request.environ
        rule = self.rules.get(name) or {}
        public = bool(rule.get("public"))
        args = query(environ)
        used_query_token = False
        if not public:
            presented, used_query_token = self._hook_token(environ, rule)
            if not presented:
                caller = ctx.require("control", changes_state=True)  # a GET runs hooks too
                used_query_token = caller.source == QUERY
        drop = set(_ALWAYS_REDACTED)
        if not public:
            drop |= _CREDENTIAL_HEADERS
        if used_query_token:
            args.pop("token", None)
        event = Event.of("WebhookEvent", source="http", hook=name,
                         method=environ.get("REQUEST_METHOD", "GET").upper(), args=args,
                         data=self._data(), headers=_request_headers(environ, drop))
        event.wire_size = len(ctx.body())  # its bulk, however its JSON hides it from approx_size
        reply = ctx.hub.webhook(event, timeout=self.timeout)
        if reply is None:
            ctx.count_webhook("unmatched")
            return json_response({"status": "ok", **{k: event.args[k] for k in _ECHO}})
        if reply.errors:
            ctx.count_webhook("failed")
            log.warning("webhook %s: %s", name, "; ".join(reply.errors))
            message = "the hook failed (see the pihub log)" if public else "; ".join(reply.errors)
            raise error_response(500, message, "HOOK_FAILED")
        ctx.count_webhook("replied")
        if reply.output is None:
            return json_response({"status": "ok", **{k: event.args[k] for k in _ECHO}})
        return hook_reply(reply.output)

    def _hook_token(self, environ: Mapping[str, Any], rule: Mapping[str, Any]) -> tuple[bool, bool]:
        """Whether the request carries the hook's own token: ``(matched, from_query)``."""
        secret = rule.get("token")
        if not secret:
            return False, False
        access = self.ctx.access
        return access.token_matches(
            wsgi_view(environ), str.__str__(secret),
            allow_query_token=bool(rule.get("allow_query_token")) or access.allow_query_token)

    def _data(self) -> Any:
        """The webhook body: parsed JSON for a JSON body, else text (None when empty)."""
        raw = self.ctx.body()
        if not raw:
            return None
        ctype = content_type(bottle.request.environ)
        if ctype == "application/json" or ctype.endswith("+json"):
            try:
                return loads(raw)
            except MessageError:
                pass  # a mislabelled body is still delivered, as text
        return raw.decode("utf-8", errors="replace")
