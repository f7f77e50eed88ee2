"""Accounts over HTTP: the login page, panel sessions, first-user registration and API tokens.

Routes (wired by :func:`pihub.web.app.make_app`):

* ``GET /login``: a minimal HTML form posting to ``/login``; ``POST /login``: check the
  password, open a session, set its cookie (``HttpOnly; SameSite=Strict``, ``Secure`` over
  TLS), 303 to ``redirect`` for a form, else JSON with the ``csrf_token``;
* ``GET|POST /logout``: end the session of ``X-Session-Token`` or the cookie, clear the
  cookie, optionally 303 to ``redirect`` (a path on this server only: no open redirect);
* ``POST /auth?type=token|login|register|setup``: a new API token (for a user name and
  password in the body, or for the caller's admin credential), a session with its token
  in the body, or the first user with the one-time setup code;
* ``GET /auth``: who the credential belongs to; ``DELETE /auth``: revoke the API token in
  the body, or end the caller's session;
* ``GET /tokens``, ``DELETE /tokens/<id>``: the caller's API tokens (everyone's for the
  environment token), never showing a secret.

Who may call what is :mod:`pihub.web.access`'s decision; a login or a registration is
refused (403 ``INVALID_CSRF``) from an ``Origin`` its rule does not trust.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Final

import bottle

from pihub.auth import ENV_USERNAME, REMEMBER_TTL_S, SCOPES
from pihub.errors import RateLimited, TokenNameExists
from pihub.web.access import Refused, rate_limited, read_cookie
from pihub.web.context import (
    WebContext,
    client_ip,
    error_response,
    json_response,
    query,
    set_session_cookie,
    truthy,
    wsgi_text,
)

log = logging.getLogger("pihub.web")

__all__ = ["Accounts", "safe_redirect"]

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


def safe_redirect(target: Any) -> str | None:
    """``target`` if it is a path on this server (``/x``), else None (no open redirect)."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ord(c) < 0x20 or c == "\x7f" or c == "\\" for c in target):
        return None
    return target


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


class Accounts:
    """The account routes of one app (see the module docstring).

    Args:
        ctx: the app's shared context.
    """

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.auth = ctx.auth
        self.cookie = ctx.access.session_cookie or ""

    # -------------------------------------------------------------------- /auth
    def auth_post(self) -> bottle.HTTPResponse:
        """``POST /auth?type=token|login|register|setup`` (token by default)."""
        kind = query(bottle.request.environ).get("type", "token") or "token"
        if kind == "token":
            return self._issue_token()
        if kind == "login":
            return self._login(include_session_token=True)
        if kind in ("register", "setup"):
            return self._register()
        raise error_response(400, f"unknown auth type {kind!r} (token, login, register, setup)",
                             "INVALID_AUTH_TYPE")

    @staticmethod
    def _credentials_in(fields: Mapping[str, Any]) -> tuple[str, str]:
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
        try:
            principal = self.auth.login(username, password, ip=client_ip(environ))
        except RateLimited as e:
            raise _http(rate_limited(e, e.reason)) from None
        except (PermissionError, ValueError):
            principal = None
        if principal is None:
            if self.auth.user_count() == 0:
                raise error_response(412, "Please create a user first", "REGISTRATION_REQUIRED")
            raise error_response(401, "Invalid credentials", "INVALID_CREDENTIALS")
        return principal

    def _issue_token(self) -> bottle.HTTPResponse:
        """A new API token, for username/password in the body or for the caller's credential."""
        fields = self.ctx.fields()
        if fields.get("username") or fields.get("password"):
            principal = self._checked_login(*self._credentials_in(fields))
        else:
            principal = self.ctx.require("admin").principal
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
        self.ctx.refuse_cross_origin("login")
        fields = self.ctx.fields()
        principal = self._checked_login(*self._credentials_in(fields))
        return self._session_reply(principal, fields, include_session_token=include_session_token)

    def _session_reply(self, principal: Any, fields: Mapping[str, Any], *,
                       include_session_token: bool) -> bottle.HTTPResponse:
        """Open a session for ``principal``; the JSON reply (or 303 to ``redirect``) with its cookie."""
        environ = bottle.request.environ
        remember = truthy(fields.get("remember"))
        session_token, csrf = self.auth.create_session(principal.username, remember=remember)
        redirect = safe_redirect(fields.get("redirect") or query(environ).get("redirect"))
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
        set_session_cookie(resp, environ, session_token, int(REMEMBER_TTL_S) if remember else None,
                           self.cookie)
        log.info("session opened for %s from %s", principal.username, client_ip(environ))
        return resp

    def _register(self) -> bottle.HTTPResponse:
        """Create the first user with the one-time setup code (no open registration)."""
        self.ctx.refuse_cross_origin("registration")
        fields = self.ctx.fields()
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
            raise _http(rate_limited(e, "too many attempts")) from None
        except PermissionError:
            raise error_response(401, "invalid setup code", "INVALID_CREDENTIALS") from None
        except ValueError as e:
            raise error_response(400, str(e)) from None
        log.warning("first user %r registered with the setup code", principal.username)
        return self._session_reply(principal, fields, include_session_token=True)

    def auth_get(self) -> bottle.HTTPResponse:
        """``GET /auth``: who the credential belongs to."""
        caller = self.ctx.identify()
        p = caller.principal
        return json_response({"status": "ok", "username": p.username, "scopes": _scope_list(p.scopes),
                              "via": caller.source})

    def auth_delete(self) -> bottle.HTTPResponse:
        """``DELETE /auth``: revoke the API token in the body, or end the caller's session."""
        fields = self.ctx.fields()
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
        return self._end_session(json_response({"status": "ok"}))

    def _end_session(self, resp: bottle.HTTPResponse) -> bottle.HTTPResponse:
        """End the session of ``X-Session-Token`` or the cookie (if any); clear the cookie."""
        environ = bottle.request.environ
        header = environ.get("HTTP_X_SESSION_TOKEN")
        cookie = read_cookie(environ.get("HTTP_COOKIE"), self.cookie)
        for token in (wsgi_text(header).strip() if header else None, cookie):
            if token:
                self.auth.end_session(token)
        set_session_cookie(resp, environ, "", 0, self.cookie)
        return resp

    def tokens_get(self) -> bottle.HTTPResponse:
        """``GET /tokens``: the caller's API tokens (everyone's for the env token); never a secret."""
        caller = self.ctx.require("admin")
        tokens = self.auth.list_tokens(_owner(caller.principal))
        return json_response({"tokens": [_token_info(t) for t in tokens]})

    def tokens_delete(self, token_id: str) -> bottle.HTTPResponse:
        """``DELETE /tokens/<id>``: revoke one of the caller's tokens, by id or name."""
        caller = self.ctx.require("admin")
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
        import html  # here: its entity table (0.3 MiB of the idle daemon's RSS) is for this page only

        redirect = safe_redirect(query(bottle.request.environ).get("redirect")) or ""
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
        redirect = safe_redirect(query(bottle.request.environ).get("redirect"))
        if redirect:
            resp = bottle.HTTPResponse(status=303, headers={"Location": redirect})
        else:
            resp = json_response({"status": "ok"})
        return self._end_session(resp)


def _http(refused: Refused) -> bottle.HTTPResponse:
    """A refusal that involves no session cookie, as its HTTP error."""
    return error_response(refused.status, refused.message, refused.name, refused.headers)
