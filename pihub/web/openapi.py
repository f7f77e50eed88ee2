"""The hand-written OpenAPI 3.0 description of the HTTP API (``GET /openapi.json``).

Written by hand rather than derived from the routes so that it states the contract
(every status a route may answer, every body shape) independently of the code; the
schemathesis tests in ``tests/web`` check the app against it, so the two cannot drift
apart unnoticed.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from pihub import __version__
from pihub.events import CATALOGUE

__all__ = ["openapi_document"]

_JSON: Final = "application/json"


def _ref(name: str) -> dict[str, str]:
    """A reference to ``#/components/schemas/<name>``."""
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    """A response with the ``{"code","error","message"}`` body."""
    out: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}
    if retry_after:
        out["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return out


def _ok(schema: dict[str, Any], description: str = "OK", media: str = _JSON) -> dict[str, Any]:
    """A 200 response with ``schema`` as ``media``."""
    return {"description": description, "content": {media: {"schema": schema}}}


#: Errors of any route that authenticates (401, 403, 412, 429) and reads a body (413).
_AUTH_ERRORS: Final = {
    "401": _error("INVALID_CREDENTIALS or INVALID_SESSION: missing, wrong, revoked or expired credential"),
    "403": _error("INSUFFICIENT_SCOPE, or INVALID_CSRF for a cookie session without its X-CSRF-Token"),
    "412": _error("REGISTRATION_REQUIRED: no user exists yet"),
    "429": _error("RATE_LIMITED: too many failed logins from this address", retry_after=True),
}
_BODY_ERRORS: Final = {
    "400": _error("the body is not valid JSON, or not a valid message"),
    "413": _error("PAYLOAD_TOO_LARGE: the body is larger than http.max_body"),
    "415": _error("UNSUPPORTED_MEDIA_TYPE: multipart bodies are not accepted"),
}
_NOT_FOUND: Final = {"404": _error("NOT_FOUND")}

_FORM_FIELDS: Final = {
    "username": {"type": "string", "minLength": 1},
    "password": {"type": "string", "format": "password", "minLength": 1},
    "remember": {"type": "boolean"},
    "redirect": {"type": "string", "description": "a path on this server (/...) to go to afterwards"},
}

_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["code", "error", "message"],
        "properties": {
            "code": {"type": "integer", "description": "the HTTP status"},
            "error": {"type": "string", "description": "the error name (Platypush's where it has one)"},
            "message": {"type": "string"},
        },
    },
    "RequestMessage": {
        "type": "object",
        "required": ["type", "action"],
        "properties": {
            "type": {"type": "string", "enum": ["request"]},
            "action": {"type": "string", "pattern": r"^.+\.[^.]+$",
                       "description": "plugin.method or procedure.NAME", "example": "variable.get"},
            "args": {"description": "keyword arguments (object), positional (array) or one value"},
            "id": {"type": "string"},
            "target": {"type": "string"},
        },
    },
    "EventMessage": {
        "type": "object",
        "required": ["type", "args"],
        "properties": {
            "type": {"type": "string", "enum": ["event"]},
            "args": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string", "enum": [t.name for t in CATALOGUE],
                                        "description": "an event type: its short name, or its Platypush "
                                                       "class path"}},
                "additionalProperties": True,
            },
        },
    },
    "ResponseMessage": {
        "type": "object",
        "required": ["type", "response"],
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["response"]},
            "target": {"type": "string"},
            "origin": {"type": "string"},
            "_timestamp": {"type": "number"},
            "response": {
                "type": "object",
                "required": ["output", "errors"],
                "properties": {"output": {}, "errors": {"type": "array", "items": {"type": "string"}}},
            },
        },
    },
    "Scopes": {"type": "array", "items": {"type": "string", "enum": ["read", "control", "admin"]}},
    "TokenInfo": {
        "type": "object",
        "required": ["id", "name", "username", "scopes", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "username": {"type": "string"},
            "scopes": _ref("Scopes"),
            "created_at": {"type": "number", "description": "seconds since the epoch"},
            "expires_at": {"type": "number", "nullable": True},
            "last_used_at": {"type": "number", "nullable": True},
        },
    },
    "NewToken": {
        "allOf": [_ref("TokenInfo"),
                  {"type": "object", "required": ["token"],
                   "properties": {"token": {"type": "string", "description": "shown once, never again"}}}],
    },
    "Session": {
        "type": "object",
        "required": ["status", "username", "scopes", "csrf_token"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "username": {"type": "string"},
            "scopes": _ref("Scopes"),
            "csrf_token": {"type": "string", "description": "send it back as X-CSRF-Token"},
            "session_token": {"type": "string", "description": "POST /auth only (also set as a cookie)"},
            "redirect": {"type": "string"},
        },
    },
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Whoami": {
        "type": "object",
        "required": ["status", "username", "scopes", "via"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "username": {"type": "string"},
            "scopes": _ref("Scopes"),
            "via": {"type": "string",
                    "enum": ["token", "query", "basic", "session-header", "session-cookie"]},
        },
    },
    "WebhookEcho": {
        "type": "object",
        "required": ["status", "hook", "method", "args", "headers"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "hook": {"type": "string"},
            "method": {"type": "string"},
            "args": {"type": "object", "additionalProperties": {"type": "string"}},
            "data": {"description": "the JSON body, else its text, else null"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Action": {
        "type": "object",
        "required": ["action", "doc", "args"],
        "properties": {
            "action": {"type": "string"},
            "doc": {"type": "string"},
            "aliases": {"type": "array", "items": {"type": "string"}},
            "args": {"type": "object", "additionalProperties": {"type": "object"}},
        },
    },
    "BackendStatus": {
        "type": "object",
        "required": ["name", "status", "error"],
        "properties": {
            "name": {"type": "string"},
            "status": {"type": "string", "example": "degraded",
                       "description": "configured, running, degraded, stopped, disabled, or failed: <why> "
                                      "(load error, config error, unavailable, runtime error)"},
            "error": {"type": "string", "nullable": True,
                      "description": "the reason, for degraded and failed backends"},
        },
    },
    "DaemonStatus": {
        "type": "object",
        "required": ["device_id", "version", "pid", "ready", "uptime_s", "backends", "bus", "hooks",
                     "dispatcher", "pool", "procedures", "websocket_clients"],
        "properties": {
            "device_id": {"type": "string"},
            "version": {"type": "string"},
            "pid": {"type": "integer"},
            "ready": {"type": "boolean", "description": "started, and the dispatcher runs"},
            "uptime_s": {"type": "number", "minimum": 0, "description": "seconds since the hub started"},
            "backends": {"type": "array", "items": _ref("BackendStatus")},
            "bus": {
                "type": "object",
                "required": ["published", "dropped", "depth", "producers"],
                "properties": {
                    "published": {"type": "integer"},
                    "dropped": {"type": "integer", "description": "events refused by a full ring"},
                    "depth": {"type": "integer"},
                    "producers": {"type": "object", "additionalProperties": {
                        "type": "object", "required": ["published", "dropped", "depth", "capacity"],
                        "properties": {k: {"type": "integer"}
                                       for k in ("published", "dropped", "depth", "capacity")}}},
                },
            },
            "hooks": {"type": "object", "required": ["defined", "fired", "dropped", "regex_timeouts"],
                      "properties": {k: {"type": "integer"}
                                     for k in ("defined", "fired", "dropped", "regex_timeouts")}},
            "dispatcher": {"type": "object", "additionalProperties": {"type": "integer"}},
            "pool": {"type": "object", "additionalProperties": {"type": "integer"}},
            "procedures": {"type": "array", "items": {"type": "string"}},
            "websocket_clients": {"type": "integer"},
            "connections_refused": {"type": "object", "additionalProperties": {"type": "integer"},
                                    "description": "per server (http, websocket): connections closed at "
                                                   "accept because a limit was reached"},
            "recent_events": {"type": "object", "description": "per ring of recent events (traces, websocket)",
                              "additionalProperties": {
                                  "type": "object", "required": ["bytes", "evicted_for_bytes"],
                                  "properties": {
                                      "bytes": {"type": "integer", "description": "kept, by estimate"},
                                      "evicted_for_bytes": {"type": "integer", "description":
                                                            "dropped for http.websocket_replay_bytes"}}}},
        },
    },
}

_SECURITY_SCHEMES: Final = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API token (or the env token)"},
    "xToken": {"type": "apiKey", "in": "header", "name": "X-Token", "description": "an API token"},
    "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                   "description": "an API token; only with http.allow_query_token: true"},
    "basic": {"type": "http", "scheme": "basic",
              "description": "user name and password: one argon2 check per request; prefer a token"},
    "sessionHeader": {"type": "apiKey", "in": "header", "name": "X-Session-Token"},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "session_token",
                      "description": "state-changing requests also need X-CSRF-Token"},
}

_HOOK_NAME: Final = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _hook_operation(method: str) -> dict[str, Any]:
    """One method of ``/hook/{name}``."""
    op: dict[str, Any] = {
        "operationId": f"hook_{method}",
        "tags": ["webhooks"],
        "summary": f"{method.upper()} a webhook",
        "description": "Publishes a WebhookEvent{hook, method, args, data, headers} and answers with the "
                       "matching hook's reply: its output as JSON or text, or (data, code[, headers]); "
                       "without a matching hook (or with a null reply), the echo below. Protected by "
                       "a control-scope credential, the hook's own token, or nothing (public hooks), "
                       "as http.hooks says.",
        "parameters": [_HOOK_NAME],
        "responses": {
            "200": {"description": "the echo, or the hook's reply",
                    "content": {_JSON: {"schema": {"anyOf": [_ref("WebhookEcho"), {}]}},
                                "*/*": {"schema": {}}}},
            **_AUTH_ERRORS, **_BODY_ERRORS, **_NOT_FOUND,
            "500": _error("HOOK_FAILED: the hook's actions failed, or it did not reply in time"),
            "default": {"description": "a status chosen by the hook's (data, code) reply",
                        "content": {"*/*": {"schema": {}}}},
        },
    }
    if method not in ("get", "options"):
        op["requestBody"] = {"required": False, "content": {_JSON: {"schema": {}},
                                                             "text/plain": {"schema": {"type": "string"}}}}
    return op


def _paths() -> dict[str, Any]:
    """Every route."""
    public: list[dict[str, Any]] = []
    form = {"type": "object", "properties": _FORM_FIELDS, "required": ["username", "password"]}
    return {
        "/execute": {"post": {
            "operationId": "execute",
            "tags": ["api"],
            "summary": "Run an action, or publish an event (Platypush's /execute)",
            "description": "A request gets the action's response envelope with HTTP 200 even when the "
                           "action fails (errors are in response.errors); an event gets {} once it is on "
                           "the bus. Needs the control scope.",
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "oneOf": [_ref("RequestMessage"), _ref("EventMessage")]}}}},
            "responses": {
                "200": _ok({"oneOf": [_ref("ResponseMessage"),
                                      {"type": "object", "maxProperties": 0}]}),
                **_AUTH_ERRORS, **_BODY_ERRORS,
                "503": _error("BUS_FULL: the event could not be queued; retry", retry_after=True),
            },
        }},
        "/auth": {
            "get": {
                "operationId": "whoami",
                "tags": ["auth"],
                "summary": "Who the credential belongs to",
                "responses": {"200": _ok(_ref("Whoami")), **_AUTH_ERRORS},
            },
            "post": {
                "operationId": "auth",
                "tags": ["auth"],
                "summary": "Create an API token, log in, or register the first user with the setup code",
                "description": "type=token (default): username+password in the body, or an admin "
                               "credential (a cookie session needs X-CSRF-Token), with optional name, "
                               "scopes and expiry_days. type=login: a session (cookie and JSON). "
                               "type=register or setup: the first user, with setup_code; no open "
                               "registration.",
                "security": public,
                "parameters": [{"name": "type", "in": "query", "required": False,
                                "schema": {"type": "string",
                                           "enum": ["token", "login", "register", "setup"]}}],
                "requestBody": {"required": False, "content": {
                    _JSON: {"schema": {"type": "object", "properties": {
                        **_FORM_FIELDS, "name": {"type": "string"}, "scopes": _ref("Scopes"),
                        "expiry_days": {"type": "number"}, "setup_code": {"type": "string"},
                        "confirm_password": {"type": "string"}}}},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object",
                                                                     "properties": _FORM_FIELDS}}}},
                "responses": {
                    "200": _ok({"oneOf": [_ref("NewToken"), _ref("Session")]}),
                    "303": {"description": "form login with a redirect"},
                    **_AUTH_ERRORS, **_BODY_ERRORS,
                },
            },
            "delete": {
                "operationId": "auth_delete",
                "tags": ["auth"],
                "summary": "Revoke the API token in the body, or end the caller's session",
                "security": public,
                "requestBody": {"required": False, "content": {_JSON: {"schema": {
                    "type": "object", "properties": {"token": {"type": "string"}}}}}},
                "responses": {"200": _ok(_ref("Status")), **_BODY_ERRORS,
                              "404": _error("INVALID_TOKEN: no such live API token")},
            },
        },
        "/tokens": {"get": {
            "operationId": "tokens",
            "tags": ["auth"],
            "summary": "The caller's API tokens (admin scope; never the tokens themselves)",
            "responses": {"200": _ok({"type": "object", "required": ["tokens"], "properties": {
                "tokens": {"type": "array", "items": _ref("TokenInfo")}}}), **_AUTH_ERRORS},
        }},
        "/tokens/{token_id}": {"delete": {
            "operationId": "token_revoke",
            "tags": ["auth"],
            "summary": "Revoke one of the caller's API tokens, by id or name (admin scope)",
            "parameters": [{"name": "token_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _ok(_ref("Status")), **_AUTH_ERRORS, **_NOT_FOUND,
                          "400": _error("INVALID_TOKEN: an ambiguous name")},
        }},
        "/login": {
            "get": {
                "operationId": "login_form",
                "tags": ["auth"],
                "summary": "A minimal HTML login form",
                "security": public,
                "parameters": [{"name": "redirect", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": _ok({"type": "string"}, media="text/html")},
            },
            "post": {
                "operationId": "login",
                "tags": ["auth"],
                "summary": "Log in: sets the session_token cookie, answers the CSRF token",
                "security": public,
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {"schema": form}, _JSON: {"schema": form}}},
                "responses": {"200": _ok(_ref("Session")), "303": {"description": "to the redirect"},
                              **_AUTH_ERRORS, **_BODY_ERRORS},
            },
        },
        "/logout": {
            method: {
                "operationId": f"logout_{method}",
                "tags": ["auth"],
                "summary": "End the session and clear its cookie",
                "security": public,
                "parameters": [{"name": "redirect", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": _ok(_ref("Status")), "303": {"description": "to the redirect"}},
            } for method in ("get", "post")
        },
        "/hook/{name}": {m: _hook_operation(m) for m in ("get", "post", "put", "delete", "patch", "options")},
        "/resources/{name}/{path}": {"get": {
            "operationId": "resource",
            "tags": ["api"],
            "summary": "A file under one of http.resource_dirs (read scope); never outside it",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "a path below the directory; may contain /"}],
            "responses": {"200": {"description": "the file", "content": {"*/*": {"schema": {}}}},
                          "206": {"description": "a byte range of the file",
                                  "content": {"*/*": {"schema": {}}}},
                          "304": {"description": "not modified"},
                          **_AUTH_ERRORS, **_NOT_FOUND, "403": _error("not readable, or a missing scope"),
                          "416": _error("the range is not satisfiable")},
        }},
        "/camera/{name}/photo.jpg": {"get": {
            "operationId": "camera_photo",
            "tags": ["api"],
            "summary": "A JPEG taken after the request by camera section camera.<name> (read scope)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok({"type": "string", "format": "binary"}, "the picture", "image/jpeg"),
                          **_AUTH_ERRORS, **_NOT_FOUND,
                          "503": _error("CAMERA_UNAVAILABLE: no picture in time", retry_after=True)},
        }},
        "/camera/{name}/video.mjpeg": {"get": {
            "operationId": "camera_mjpeg",
            "tags": ["api"],
            "summary": "JPEG frames as multipart/x-mixed-replace (boundary 'frame'), at most the camera's "
                       "mjpeg_fps per second (read scope)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok({"type": "string", "format": "binary"}, "the stream, until the client goes",
                                     "multipart/x-mixed-replace"),
                          **_AUTH_ERRORS, **_NOT_FOUND,
                          "503": _error("CAMERA_UNAVAILABLE: max_mjpeg_viewers reached, or the camera failed",
                                        retry_after=True)},
        }},
        "/status": {"get": {
            "operationId": "status",
            "tags": ["api"],
            "summary": "The daemon's state: device id, version, uptime, each backend's status "
                       "(running, degraded or failed, and why), bus and hook counters (read scope)",
            "responses": {"200": _ok(_ref("DaemonStatus")), **_AUTH_ERRORS},
        }},
        "/actions": {"get": {
            "operationId": "actions",
            "tags": ["api"],
            "summary": "Every action with its arguments and documentation (read scope)",
            "responses": {"200": _ok({"type": "array", "items": _ref("Action")}), **_AUTH_ERRORS},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "tags": ["meta"],
            "summary": "This document",
            "security": public,
            "responses": {"200": _ok({"type": "object"})},
        }},
        "/metrics": {"get": {
            "operationId": "metrics",
            "tags": ["meta"],
            "summary": "Prometheus metrics, text format 0.0.4 (read scope)",
            "responses": {"200": _ok({"type": "string"}, media="text/plain"), **_AUTH_ERRORS},
        }},
        "/livez": {"get": {
            "operationId": "livez",
            "tags": ["meta"],
            "summary": "Liveness: the process answers",
            "security": public,
            "responses": {"200": _ok(_ref("Status"))},
        }},
        "/readyz": {"get": {
            "operationId": "readyz",
            "tags": ["meta"],
            "summary": "Readiness: 200 once the hub runs its dispatcher, else 503",
            "security": public,
            "responses": {"200": _ok(_ref("Status")), "503": _error("NOT_READY")},
        }},
        # the web panel (pihub.web.panel)
        "/": {"get": {
            "operationId": "panel",
            "tags": ["panel"],
            "summary": "The web panel (read scope); without a session, 303 to its login page",
            "responses": {"200": _ok({"type": "string"}, media="text/html"),
                          "303": {"description": "to /ui/login.html"}},
        }},
        "/ui/{rel}": {"get": {
            "operationId": "panel_file",
            "tags": ["panel"],
            "summary": "A file of the panel (webui/); ETag and If-None-Match (304)",
            "security": public,
            "parameters": [{"name": "rel", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok({"type": "string"}, media="application/octet-stream"),
                          "304": {"description": "not modified"}, "404": _error("NOT_FOUND")},
        }},
        "/panel/session": {"get": {
            "operationId": "panel_session",
            "tags": ["panel"],
            "summary": "Who is logged in, the session's CSRF token, the websocket's port (read scope)",
            "responses": {"200": _ok({"type": "object"}), **_AUTH_ERRORS},
        }},
        "/panel/devices": {"get": {
            "operationId": "panel_devices",
            "tags": ["panel"],
            "summary": "Each backend's status and entities (read scope)",
            "responses": {"200": _ok({"type": "array", "items": {"type": "object"}}), **_AUTH_ERRORS},
        }},
        "/panel/hooks": {"get": {
            "operationId": "panel_hooks",
            "tags": ["panel"],
            "summary": "Hooks (conditions, times fired, last fired) and procedures, read-only (read scope)",
            "responses": {"200": _ok({"type": "object"}), **_AUTH_ERRORS},
        }},
        "/events/{event_id}/trace": {"get": {
            "operationId": "event_trace",
            "tags": ["panel"],
            "summary": "The hook trace of a recent event, as `pihub replay` prints it (read scope)",
            "parameters": [{"name": "event_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{1,64}$"}}],
            "responses": {"200": _ok({"type": "object"}), "400": _error("BAD_REQUEST"),
                          "404": _error("NOT_FOUND"), **_AUTH_ERRORS},
        }},
        "/dashboard/{name}": {"get": {
            "operationId": "dashboard_page",
            "tags": ["panel"],
            "summary": "A dashboard's page (holds no data; a read token may come in the URL fragment)",
            "security": public,
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok({"type": "string"}, media="text/html"), "404": _error("NOT_FOUND")},
        }},
        "/panel/dashboards/{name}": {"get": {
            "operationId": "dashboard",
            "tags": ["panel"],
            "summary": "A dashboard's rows and its carousels' image URLs (read scope)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok({"type": "object"}), "404": _error("NOT_FOUND"), **_AUTH_ERRORS},
        }},
    }


_DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.0.3",
    "info": {
        "title": "pihub HTTP API",
        "version": __version__,
        "description": "Platypush-compatible automation API: /execute, webhooks, resources, tokens. "
                       "Every error body is {code, error, message}.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"xToken": []}, {"queryToken": []}, {"basic": []}, {"sessionHeader": []},
                 {"sessionCookie": []}],
    "paths": _paths(),
    "components": {"schemas": _SCHEMAS, "securitySchemes": _SECURITY_SCHEMES},
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document, as a fresh dict (callers may modify it)."""
    return copy.deepcopy(_DOCUMENT)
