"""The HTTP API at WSGI level (no socket): every route and every authentication path."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from http_support import (
    ENV_TOKEN,
    PASSWORD,
    Rig,
    assert_error,
    assert_security_headers,
    basic,
    bearer,
    build_rig,
    call,
    rig,
    session_cookie,
)
from pihub_testing import wait_for

from pihub.auth import Auth
from pihub.web.app import make_app
from pihub.web.openapi import openapi_document

__all__ = ["rig"]  # the fixture, imported for pytest

EXEC = {"type": "request", "action": "variable.get", "args": {"name": "nothing"}}




# ------------------------------------------------------------------ credentials
class TestCredentials:
    def test_bearer_and_x_token_are_accepted(self, rig: Rig) -> None:
        for headers in (rig.as_("control"), {"X-Token": rig.tokens["control"]}):
            r = rig.call("POST", "/execute", json_body=EXEC, headers=headers)
            assert r.status == 200 and r.json()["response"]["errors"] == []

    def test_missing_credential_is_401_with_challenge(self, rig: Rig) -> None:
        r = rig.call("POST", "/execute", json_body=EXEC)
        body = assert_error(r, 401, "INVALID_CREDENTIALS")
        assert body["message"] == "Invalid credentials"
        assert r.headers["www-authenticate"].startswith("Bearer")

    @pytest.mark.parametrize("headers", [
        {"Authorization": "Bearer ph_wrong"}, {"X-Token": "nope"}, {"Authorization": "Bearer "},
        {"Authorization": "Digest username=alice"}, {"Authorization": "Basic !!notbase64"},
    ])
    def test_wrong_credentials_are_401(self, rig: Rig, headers: dict[str, str]) -> None:
        r = rig.call("POST", "/execute", json_body=EXEC, headers=headers)
        assert_error(r, 401, "INVALID_CREDENTIALS")

    def test_a_wrong_explicit_credential_does_not_fall_back_to_the_cookie(self, rig: Rig) -> None:
        session, csrf = rig.login()
        r = rig.call("GET", "/auth", headers={"Cookie": f"session_token={session}", "X-Token": "ph_wrong"})
        assert_error(r, 401, "INVALID_CREDENTIALS")

    def test_secrets_never_appear_in_error_bodies(self, rig: Rig) -> None:
        for headers in (bearer("ph_secretsecret"), basic("alice", "hunter2-secret")):
            r = rig.call("POST", "/execute", json_body=EXEC, headers=headers)
            assert b"secretsecret" not in r.body and b"hunter2" not in r.body

    def test_revoked_token_is_refused_on_the_next_request(self, rig: Rig) -> None:
        token = rig.tokens["control"]
        assert rig.call("GET", "/auth", headers=bearer(token)).status == 200
        r = rig.call("DELETE", "/tokens/t-control", headers=rig.as_("admin"))
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert_error(rig.call("GET", "/auth", headers=bearer(token)), 401, "INVALID_CREDENTIALS")

    def test_expired_token_is_refused(self, rig: Rig) -> None:
        token, _ = rig.auth.create_token("alice", name="short", scopes=("read",), expires_days=1)
        assert rig.call("GET", "/actions", headers=bearer(token)).status == 200
        rig.clock.advance(2 * 86400)
        assert_error(rig.call("GET", "/actions", headers=bearer(token)), 401, "INVALID_CREDENTIALS")

    @pytest.mark.parametrize("scope,route,method,body,needed", [
        ("read", "/execute", "POST", EXEC, "control"),
        ("read", "/hook/ping", "POST", {"n": 1}, "control"),
        ("control", "/tokens", "GET", None, "admin"),
        ("control", "/tokens/1", "DELETE", None, "admin"),
        ("control", "/auth", "POST", {}, "admin"),
    ])
    def test_missing_scope_is_403(self, rig: Rig, scope: str, route: str, method: str, body: object,
                                  needed: str) -> None:
        r = rig.call(method, route, json_body=body, headers=rig.as_(scope))
        assert needed in assert_error(r, 403, "INSUFFICIENT_SCOPE")["message"]

    @pytest.mark.parametrize("route", ["/actions", "/metrics", "/auth"])
    def test_read_scope_is_enough_for_get_routes(self, rig: Rig, route: str) -> None:
        assert rig.call("GET", route, headers=rig.as_("read")).status == 200

    def test_read_only_user_cannot_run_actions_even_with_a_password(self, rig: Rig) -> None:
        r = rig.call("POST", "/execute", json_body=EXEC, headers=basic("bob", PASSWORD))
        assert_error(r, 403, "INSUFFICIENT_SCOPE")

    def test_basic_auth(self, rig: Rig) -> None:
        assert rig.call("POST", "/execute", json_body=EXEC, headers=basic("alice", PASSWORD)).status == 200
        assert_error(rig.call("POST", "/execute", json_body=EXEC, headers=basic("alice", "wrong password")),
                     401, "INVALID_CREDENTIALS")

    def test_query_token_is_refused_unless_enabled(self, rig: Rig) -> None:
        query = f"token={rig.tokens['control']}"
        assert_error(rig.call("POST", "/execute", json_body=EXEC, query=query), 401, "INVALID_CREDENTIALS")
        rig.rebuild(allow_query_token=True)
        r = rig.call("POST", "/execute", json_body=EXEC, query=query)
        assert r.status == 200 and r.json()["response"]["errors"] == []
        assert rig.call("GET", "/auth", query=query).json()["via"] == "query"
        assert_error(rig.call("GET", "/auth", query="token=ph_bad"), 401, "INVALID_CREDENTIALS")

    def test_env_token_works_and_has_every_scope(self, rig: Rig) -> None:
        r = rig.call("GET", "/auth", headers={"X-Token": ENV_TOKEN})
        assert r.json()["username"] == "__env__" and r.json()["scopes"] == ["read", "control", "admin"]


class TestRegistrationRequired:
    def test_412_before_the_first_user(self, make_hub, tmp_path) -> None:
        rig = build_rig(make_hub, tmp_path, users=False)
        for method, route, headers in [("POST", "/execute", {}), ("GET", "/auth", {}),
                                       ("POST", "/execute", bearer("ph_whatever")),
                                       ("POST", "/execute", basic("alice", PASSWORD)),
                                       ("GET", "/actions", {"Cookie": "session_token=phs_x"})]:
            r = rig.call(method, route, json_body=EXEC if method == "POST" else None, headers=headers)
            body = assert_error(r, 412, "REGISTRATION_REQUIRED")
            assert body["message"] == "Please create a user first"
        # the env token is the one way in without a user
        r = rig.call("POST", "/execute", json_body=EXEC, headers={"X-Token": ENV_TOKEN})
        assert r.status == 200
        # public routes still answer
        assert rig.call("GET", "/livez").status == 200

    def test_setup_code_registers_the_first_user(self, make_hub, tmp_path) -> None:
        rig = build_rig(make_hub, tmp_path, users=False)
        code = rig.auth.ensure_setup_code()
        assert code
        r = rig.call("POST", "/auth", query="type=register",
                     json_body={"setup_code": code, "username": "carol", "password": PASSWORD,
                                "confirm_password": PASSWORD})
        assert r.status == 200, r.body
        body = r.json()
        assert body["username"] == "carol" and body["scopes"] == ["read", "control", "admin"]
        assert body["session_token"] == session_cookie(r)
        assert rig.auth.user_count() == 1
        # the code is single-use, and registration is closed now
        again = rig.call("POST", "/auth", query="type=setup",
                         json_body={"setup_code": code, "username": "dave", "password": PASSWORD})
        assert_error(again, 401, "REGISTRATION_DISABLED")

    @pytest.mark.parametrize("fields,status,name", [
        ({"username": "carol", "password": PASSWORD}, 401, "REGISTRATION_DISABLED"),
        ({"setup_code": "0000-0000", "username": "carol", "password": PASSWORD}, 401, "INVALID_CREDENTIALS"),
        ({"setup_code": "X", "username": "carol", "password": PASSWORD, "confirm_password": "other one"},
         400, "PASSWORD_MISMATCH"),
        ({"setup_code": "X", "password": PASSWORD}, 400, "MISSING_USERNAME"),
        ({"setup_code": "X", "username": "carol"}, 400, "MISSING_PASSWORD"),
        ({"setup_code": "X", "username": "Not Valid!", "password": PASSWORD}, 400, "BAD_REQUEST"),
    ])
    def test_registration_errors(self, make_hub, tmp_path, fields: dict, status: int, name: str) -> None:
        rig = build_rig(make_hub, tmp_path, users=False)
        code = rig.auth.ensure_setup_code()
        fields = {k: (code if v == "X" else v) for k, v in fields.items()}
        assert_error(rig.call("POST", "/auth", query="type=register", json_body=fields), status, name)
        assert rig.auth.user_count() == 0

    def test_registration_is_closed_once_a_user_exists(self, rig: Rig) -> None:
        r = rig.call("POST", "/auth", query="type=register",
                     json_body={"setup_code": "anything", "username": "eve", "password": PASSWORD})
        assert_error(r, 401, "REGISTRATION_DISABLED")
        assert not rig.auth.has_user("eve")


class TestRateLimit:
    def test_429_after_five_failures_then_even_the_right_password(self, rig: Rig) -> None:
        for _ in range(5):
            assert_error(rig.call("GET", "/auth", headers=basic("alice", "wrong password")),
                         401, "INVALID_CREDENTIALS")
        for headers in (basic("alice", "wrong password"), basic("alice", PASSWORD)):
            r = rig.call("GET", "/auth", headers=headers)
            assert_error(r, 429, "RATE_LIMITED")
            assert int(r.headers["retry-after"]) >= 1
        # login and token issuing share the limit
        r = rig.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD})
        assert_error(r, 429, "RATE_LIMITED")
        # another address is not limited, and tokens still work from the limited one
        other = rig.call("GET", "/auth", headers=basic("alice", PASSWORD), remote_addr="10.0.0.2")
        assert other.status == 200
        assert rig.call("GET", "/auth", headers=rig.as_("read")).status == 200
        # the window passes
        rig.clock.advance(301)
        assert rig.call("GET", "/auth", headers=basic("alice", PASSWORD)).status == 200

    def test_failed_form_logins_count_too(self, rig: Rig) -> None:
        for _ in range(5):
            r = rig.call("POST", "/auth", query="type=login",
                         json_body={"username": "alice", "password": "wrong password"})
            assert_error(r, 401, "INVALID_CREDENTIALS")
        r = rig.call("POST", "/auth", query="type=login",
                     json_body={"username": "alice", "password": PASSWORD})
        assert_error(r, 429, "RATE_LIMITED")


# ------------------------------------------------------------- sessions and CSRF
class TestSessions:
    def test_login_sets_a_strict_httponly_cookie(self, rig: Rig) -> None:
        r = rig.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD})
        assert r.status == 200
        (cookie,) = r.cookies
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
        assert "secure" not in attrs and not any(a.startswith("max-age") for a in attrs)
        body = r.json()
        assert "session_token" not in body  # the panel form never hands the session to scripts
        assert body["username"] == "alice" and body["csrf_token"]
        assert session_cookie(r) not in r.body.decode()

    def test_cookie_is_secure_over_tls_and_remember_sets_max_age(self, rig: Rig) -> None:
        r = rig.call("POST", "/login", https=True,
                     json_body={"username": "alice", "password": PASSWORD, "remember": True})
        attrs = [a.strip().lower() for a in r.cookies[0].split(";")]
        assert "secure" in attrs and f"max-age={30 * 86400}" in attrs

    def test_auth_type_login_returns_the_session_like_platypush(self, rig: Rig) -> None:
        r = rig.call("POST", "/auth", query="type=login",
                     body=f"username=alice&password={PASSWORD.replace(' ', '+')}".encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        body = r.json()
        assert r.status == 200 and body["status"] == "ok" and body["session_token"] == session_cookie(r)
        r = rig.call("GET", "/auth", headers={"X-Session-Token": body["session_token"]})
        assert r.json()["via"] == "session-header"

    def test_cookie_session_reads_without_csrf(self, rig: Rig) -> None:
        session, _ = rig.login()
        r = rig.call("GET", "/auth", headers={"Cookie": f"theme=dark; session_token={session}"})
        assert r.status == 200 and r.json()["via"] == "session-cookie"
        assert rig.call("GET", "/actions", headers={"Cookie": f"session_token={session}"}).status == 200

    def test_state_change_with_cookie_needs_the_csrf_token(self, rig: Rig) -> None:
        session, csrf = rig.login()
        cookie = {"Cookie": f"session_token={session}"}
        assert_error(rig.call("POST", "/execute", json_body=EXEC, headers=cookie), 403, "INVALID_CSRF")
        wrong = {**cookie, "X-CSRF-Token": "x" + csrf}
        assert_error(rig.call("POST", "/execute", json_body=EXEC, headers=wrong), 403, "INVALID_CSRF")
        assert_error(rig.call("POST", "/hook/ping", json_body={"n": 1}, headers=cookie), 403, "INVALID_CSRF")
        # a webhook's GET runs hooks as its POST does (an <img src=/hook/...> on a same-site page)
        assert_error(rig.call("GET", "/hook/text", headers=cookie), 403, "INVALID_CSRF")
        assert rig.call("GET", "/hook/text", headers={**cookie, "X-CSRF-Token": csrf}).status == 200
        ok = rig.call("POST", "/execute", json_body=EXEC, headers={**cookie, "X-CSRF-Token": csrf})
        assert ok.status == 200 and ok.json()["response"]["errors"] == []

    def test_csrf_token_of_another_session_is_refused(self, rig: Rig) -> None:
        session, _ = rig.login()
        _, other_csrf = rig.login()
        r = rig.call("POST", "/execute", json_body=EXEC,
                     headers={"Cookie": f"session_token={session}", "X-CSRF-Token": other_csrf})
        assert_error(r, 403, "INVALID_CSRF")

    def test_cross_origin_state_change_is_refused_even_with_the_token(self, rig: Rig) -> None:
        session, csrf = rig.login()
        headers = {"Cookie": f"session_token={session}", "X-CSRF-Token": csrf}
        bad = rig.call("POST", "/execute", json_body=EXEC, headers={**headers, "Origin": "https://evil.example"})
        assert_error(bad, 403, "INVALID_CSRF")
        same = rig.call("POST", "/execute", json_body=EXEC, headers={**headers, "Origin": "http://127.0.0.1:8008"})
        assert same.status == 200
        rig.rebuild(allowed_origins=["https://panel.example"])
        allowed = rig.call("POST", "/execute", json_body=EXEC,
                           headers={**headers, "Origin": "https://panel.example"})
        assert allowed.status == 200

    def test_session_header_needs_no_csrf(self, rig: Rig) -> None:
        session, _ = rig.login()
        r = rig.call("POST", "/execute", json_body=EXEC, headers={"X-Session-Token": session})
        assert r.status == 200

    def test_expired_session_is_401_and_clears_the_cookie(self, rig: Rig) -> None:
        session, _ = rig.login()
        rig.clock.advance(12 * 3600 + 1)
        r = rig.call("GET", "/auth", headers={"Cookie": f"session_token={session}"})
        assert_error(r, 401, "INVALID_SESSION")
        assert any(c.startswith("session_token=") and "Max-Age=0" in c for c in r.cookies)
        assert_error(rig.call("GET", "/auth", headers={"X-Session-Token": session}), 401, "INVALID_SESSION")

    def test_remembered_session_outlives_twelve_hours(self, rig: Rig) -> None:
        session, _ = rig.login(remember=True)
        rig.clock.advance(13 * 3600)
        assert rig.call("GET", "/auth", headers={"Cookie": f"session_token={session}"}).status == 200

    def test_cross_origin_login_is_refused(self, rig: Rig) -> None:
        r = rig.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD},
                     headers={"Origin": "https://evil.example"})
        assert_error(r, 403, "INVALID_CSRF")
        assert not r.cookies

    def test_logout_ends_the_session(self, rig: Rig) -> None:
        session, _ = rig.login()
        r = rig.call("POST", "/logout", headers={"Cookie": f"session_token={session}"})
        assert r.status == 200 and any("Max-Age=0" in c for c in r.cookies)
        assert_error(rig.call("GET", "/auth", headers={"Cookie": f"session_token={session}"}),
                     401, "INVALID_SESSION")

    def test_logout_redirects_only_to_local_paths(self, rig: Rig) -> None:
        r = rig.call("GET", "/logout", query="redirect=/login")
        assert r.status == 303 and r.headers["location"] == "/login"
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            r = rig.call("GET", "/logout", query=f"redirect={target}")
            assert r.status == 200 and "location" not in r.headers

    def test_delete_auth_without_body_ends_the_session(self, rig: Rig) -> None:
        session, _ = rig.login()
        assert rig.call("DELETE", "/auth", headers={"X-Session-Token": session}).json() == {"status": "ok"}
        assert rig.call("GET", "/auth", headers={"X-Session-Token": session}).status == 401


class TestLoginPage:
    def test_form_is_html_with_the_security_headers(self, rig: Rig) -> None:
        r = rig.call("GET", "/login", query="redirect=/actions")
        assert r.status == 200 and r.headers["content-type"].startswith("text/html")
        assert b'<form method="post" action="/login">' in r.body and b'value="/actions"' in r.body
        assert_security_headers(r)

    def test_redirect_is_escaped_and_must_be_local(self, rig: Rig) -> None:
        r = rig.call("GET", "/login", query='redirect=/"><script>alert(1)</script>')
        assert b"<script>" not in r.body
        r = rig.call("GET", "/login", query="redirect=https://evil.example")
        assert b"evil" not in r.body

    def test_the_escaping_module_is_loaded_only_for_the_page(self) -> None:
        """html's entity table (0.3 MiB of RSS) is not part of the idle daemon."""
        code = ("import sys\nimport pihub.cli, pihub.hub, pihub.web.app, pihub.web.live, pihub.web.server\n"
                "print('html' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.strip() == "False"

    def test_form_post_redirects_with_the_cookie(self, rig: Rig) -> None:
        r = rig.call("POST", "/login", body=f"username=alice&password={PASSWORD}&redirect=/actions".encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://127.0.0.1:8008"})
        assert r.status == 303 and r.headers["location"] == "/actions"
        cookie = {"Cookie": f"session_token={session_cookie(r)}"}
        assert rig.call("GET", "/actions", headers=cookie).status == 200

    @pytest.mark.parametrize("fields,name", [({"password": PASSWORD}, "MISSING_USERNAME"),
                                             ({"username": "alice"}, "MISSING_PASSWORD"),
                                             ({"username": "alice", "password": 5}, "MISSING_PASSWORD")])
    def test_missing_fields(self, rig: Rig, fields: dict, name: str) -> None:
        assert_error(rig.call("POST", "/login", json_body=fields), 400, name)

    def test_multipart_is_415(self, rig: Rig) -> None:
        r = rig.call("POST", "/login", body=b"--x\r\n",
                     headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")


# ------------------------------------------------------------------------ tokens
class TestTokens:
    def test_issue_with_password_like_platypush(self, rig: Rig) -> None:
        r = rig.call("POST", "/auth", json_body={"username": "alice", "password": PASSWORD, "name": "phone",
                                                 "expiry_days": 30})
        assert r.status == 200, r.body
        body = r.json()
        assert body["token"].startswith("ph_") and body["name"] == "phone"
        assert body["scopes"] == ["read", "control"]  # control by default
        assert body["expires_at"] == pytest.approx(rig.clock.now + 30 * 86400)
        ok = rig.call("POST", "/execute", json_body=EXEC, headers=bearer(body["token"]))
        assert ok.status == 200
        assert_error(rig.call("GET", "/tokens", headers=bearer(body["token"])), 403, "INSUFFICIENT_SCOPE")

    def test_issue_with_an_admin_token_and_scopes(self, rig: Rig) -> None:
        r = rig.call("POST", "/auth", query="type=token", json_body={"scopes": ["read"]},
                     headers=rig.as_("admin"))
        token = r.json()["token"]
        assert r.json()["scopes"] == ["read"]
        r = rig.call("POST", "/execute", json_body=EXEC, headers=bearer(token))
        assert_error(r, 403, "INSUFFICIENT_SCOPE")

    def test_issue_in_session_mode_needs_csrf(self, rig: Rig) -> None:
        session, csrf = rig.login()
        cookie = {"Cookie": f"session_token={session}"}
        assert_error(rig.call("POST", "/auth", json_body={}, headers=cookie), 403, "INVALID_CSRF")
        r = rig.call("POST", "/auth", json_body={"name": "tablet"}, headers={**cookie, "X-CSRF-Token": csrf})
        assert r.status == 200 and r.json()["name"] == "tablet"

    def test_a_read_user_cannot_issue_or_escalate(self, rig: Rig) -> None:
        r = rig.call("POST", "/auth", json_body={"username": "bob", "password": PASSWORD, "scopes": ["read"]})
        assert_error(r, 403, "INSUFFICIENT_SCOPE")

    @pytest.mark.parametrize("fields,name", [
        ({"name": "t-read"}, "TOKEN_NAME_EXISTS"),
        ({"expiry_days": -1}, "BAD_REQUEST"),
        ({"expiry_days": "soon"}, "BAD_REQUEST"),
        ({"scopes": ["root"]}, "BAD_REQUEST"),
        ({"scopes": []}, "BAD_REQUEST"),
        ({"name": ""}, "BAD_REQUEST"),
        ({"name": 7}, "BAD_REQUEST"),
    ])
    def test_issue_errors(self, rig: Rig, fields: dict, name: str) -> None:
        assert_error(rig.call("POST", "/auth", json_body=fields, headers=rig.as_("admin")), 400, name)

    def test_wrong_password_and_unknown_type(self, rig: Rig) -> None:
        assert_error(rig.call("POST", "/auth", json_body={"username": "alice", "password": "wrong password"}),
                     401, "INVALID_CREDENTIALS")
        assert_error(rig.call("POST", "/auth", query="type=jwt", json_body={}), 400, "INVALID_AUTH_TYPE")

    def test_list_shows_no_secret(self, rig: Rig) -> None:
        r = rig.call("GET", "/tokens", headers=rig.as_("admin"))
        tokens = r.json()["tokens"]
        assert {t["name"] for t in tokens} == {"t-read", "t-control", "t-admin"}
        assert set(tokens[0]) == {"id", "name", "username", "scopes", "created_at", "expires_at",
                                  "last_used_at"}
        for secret in rig.tokens.values():
            assert secret.encode() not in r.body

    def test_revoke_by_id_then_404(self, rig: Rig) -> None:
        tid = next(t["id"] for t in rig.call("GET", "/tokens", headers=rig.as_("admin")).json()["tokens"]
                   if t["name"] == "t-read")
        assert rig.call("DELETE", f"/tokens/{tid}", headers=rig.as_("admin")).status == 200
        assert_error(rig.call("DELETE", f"/tokens/{tid}", headers=rig.as_("admin")), 404, "NOT_FOUND")
        assert rig.call("GET", "/auth", headers=rig.as_("read")).status == 401

    def test_an_admin_cannot_revoke_another_users_token(self, rig: Rig) -> None:
        rig.auth.add_user("mallory", PASSWORD)
        token, _ = rig.auth.create_token("mallory", name="m", scopes=("admin",))
        assert_error(rig.call("DELETE", "/tokens/t-read", headers=bearer(token)), 404, "NOT_FOUND")
        assert rig.call("GET", "/auth", headers=rig.as_("read")).status == 200

    def test_delete_auth_revokes_the_token_given(self, rig: Rig) -> None:
        token = rig.tokens["read"]
        assert rig.call("DELETE", "/auth", json_body={"token": token}).json() == {"status": "ok"}
        assert rig.call("GET", "/auth", headers=bearer(token)).status == 401
        assert_error(rig.call("DELETE", "/auth", json_body={"token": token}), 404, "INVALID_TOKEN")
        # an id is not the token: nobody revokes by guessing ids here
        listed = rig.call("GET", "/tokens", headers=rig.as_("admin")).json()["tokens"]
        control_id = next(t["id"] for t in listed if t["name"] == "t-control")
        assert_error(rig.call("DELETE", "/auth", json_body={"token": str(control_id)}), 404, "INVALID_TOKEN")
        assert rig.call("GET", "/auth", headers=rig.as_("control")).status == 200
        assert_error(rig.call("DELETE", "/auth", json_body={"token": ENV_TOKEN}), 400, "INVALID_TOKEN")
        assert_error(rig.call("DELETE", "/auth", json_body={"token": 5}), 400, "INVALID_TOKEN")


# ---------------------------------------------------------------------- /execute
class TestExecute:
    def test_request_reply_is_platypush_shaped(self, rig: Rig) -> None:
        rig.call("POST", "/execute", headers=rig.as_("control"),
                 json_body={"type": "request", "action": "variable.set", "args": {"colour": "blue"}})
        r = rig.call("POST", "/execute", headers=rig.as_("control"),
                     json_body={"type": "request", "action": "variable.get", "args": {"name": "colour"},
                                "id": "abc"})
        body = r.json()
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        assert body["id"] == "abc" and body["type"] == "response" and body["target"] == "http"
        assert body["origin"] == rig.hub.device_id and isinstance(body["_timestamp"], float)
        assert body["response"] == {"output": {"colour": "blue"}, "errors": []}

    def test_action_errors_are_http_200(self, rig: Rig) -> None:
        r = rig.call("POST", "/execute", headers=rig.as_("control"),
                     json_body={"type": "request", "action": "nosuch.thing"})
        assert r.status == 200 and r.json()["response"]["errors"]
        assert r.json()["response"]["output"] == {"success": False}

    def test_event_is_published_and_answered_with_empty_object(self, rig: Rig) -> None:
        r = rig.call("POST", "/execute", headers=rig.as_("control"),
                     json_body={"type": "event",
                                "args": {"type": "CustomEvent", "subtype": "http-test", "value": 7}})
        assert r.status == 200 and r.json() == {}
        assert wait_for(lambda: rig.hub.execute("variable.get", {"name": "custom_seen"}).output
                        == {"custom_seen": 7})

    def test_full_bus_is_503(self, rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(rig.hub, "publish", lambda event: False)
        r = rig.call("POST", "/execute", headers=rig.as_("control"),
                     json_body={"type": "event", "args": {"type": "CustomEvent", "subtype": "x"}})
        assert_error(r, 503, "BUS_FULL")
        assert r.headers["retry-after"] == "1"

    @pytest.mark.parametrize("body,name", [
        (b"{not json", "BAD_REQUEST"), (b"", "BAD_REQUEST"), (b"\xff\xfe", "BAD_REQUEST"),
        (b"[" * 20000 + b"]" * 20000, "BAD_REQUEST"), (b'"a string"', "INVALID_MESSAGE"),
        (b"[1, 2]", "INVALID_MESSAGE"), (b'{"type": "bogus"}', "INVALID_MESSAGE"),
        (b'{"type": "request"}', "INVALID_MESSAGE"),
        (b'{"type": "request", "action": "noplugin"}', "INVALID_MESSAGE"),
        (b'{"type": "event", "args": {"type": "NoSuchEvent"}}', "INVALID_MESSAGE"),
    ])
    def test_malformed_is_400(self, rig: Rig, body: bytes, name: str) -> None:
        headers = {**rig.as_("control"), "Content-Type": "application/json"}
        r = rig.call("POST", "/execute", body=body, headers=headers)
        assert_error(r, 400, name)

    def test_get_is_405_json(self, rig: Rig) -> None:
        r = rig.call("GET", "/execute", headers=rig.as_("control"))
        assert_error(r, 405, "INVALID_METHOD")
        assert r.headers["allow"] == "POST"

    @pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                       "multipart/form-data; boundary=x", "application/xml"])
    def test_a_body_declared_as_another_type_is_415_naming_it(self, rig: Rig, ctype: str) -> None:
        headers = {**rig.as_("control"), "Content-Type": ctype}
        r = rig.call("POST", "/execute", body=json.dumps(EXEC).encode(), headers=headers)
        message = assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")["message"]
        assert repr(ctype.split(";")[0]) in message and "application/json" in message

    @pytest.mark.parametrize("ctype", [None, "application/json; charset=utf-8", "Application/JSON",
                                       "application/vnd.platypush+json"])
    def test_json_or_no_declared_type_is_read_as_json(self, rig: Rig, ctype: str | None) -> None:
        headers = {**rig.as_("control"), **({"Content-Type": ctype} if ctype else {})}
        r = rig.call("POST", "/execute", body=json.dumps(EXEC).encode(), headers=headers)
        assert r.status == 200 and r.json()["response"]["errors"] == []

    def test_the_media_type_is_checked_after_the_credential(self, rig: Rig) -> None:
        r = rig.call("POST", "/execute", body=b"x", headers={"Content-Type": "text/plain"})
        assert_error(r, 401, "INVALID_CREDENTIALS")


# ------------------------------------------------------------------------- hooks
class TestHooks:
    def test_matching_hook_replies_with_its_output(self, rig: Rig) -> None:
        r = rig.call("POST", "/hook/ping", json_body={"n": 41}, headers=rig.as_("control"))
        assert r.status == 200 and r.json() == {"pong": 42}

    def test_data_code_headers_convention(self, rig: Rig) -> None:
        r = rig.call("PUT", "/hook/created", headers=rig.as_("control"))
        assert r.status == 201 and r.json() == {"made": True}
        assert r.headers["x-made"] == "yes"
        assert "bad name" not in r.headers and "connection" not in r.headers
        assert_security_headers(r)

    def test_text_reply(self, rig: Rig) -> None:
        r = rig.call("GET", "/hook/text", headers=rig.as_("control"))
        assert r.status == 200 and r.body == b"hello there"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"

    def test_failing_hook_is_500_json(self, rig: Rig) -> None:
        r = rig.call("POST", "/hook/broken", headers=rig.as_("control"))
        assert "mock.set" in assert_error(r, 500, "HOOK_FAILED")["message"]
        assert_security_headers(r)

    def test_no_matching_hook_echoes_like_platypush(self, rig: Rig) -> None:
        r = rig.call("PATCH", "/hook/nobody", query="a=1&a=2&b=x", body=b"plain text \xff",
                     headers={**rig.as_("control"), "Content-Type": "text/plain", "X-Custom": "kept",
                              "Cookie": "session_token=phs_secret", "X-CSRF-Token": "csrf-secret"})
        body = r.json()
        assert r.status == 200 and body["status"] == "ok" and body["hook"] == "nobody"
        assert body["method"] == "PATCH" and body["args"] == {"a": "1", "b": "x"}
        assert body["data"] == "plain text \ufffd"
        assert body["headers"]["X-Custom"] == "kept" and body["headers"]["Content-Type"] == "text/plain"
        for secret in (rig.tokens["control"], "phs_secret", "csrf-secret"):
            assert secret not in r.body.decode()
        assert "Authorization" not in body["headers"] and "Cookie" not in body["headers"]

    def test_json_body_is_parsed_and_bad_json_is_text(self, rig: Rig) -> None:
        r = rig.call("POST", "/hook/nobody", json_body={"k": [1, 2]}, headers=rig.as_("control"))
        assert r.json()["data"] == {"k": [1, 2]}
        r = rig.call("POST", "/hook/nobody", body=b"{oops", headers={**rig.as_("control"),
                                                                       "Content-Type": "application/json"})
        assert r.json()["data"] == "{oops"

    def test_null_reply_gives_the_echo_and_the_hook_ran(self, rig: Rig) -> None:
        r = rig.call("DELETE", "/hook/quiet", headers=rig.as_("control"))
        assert r.status == 200 and r.json()["hook"] == "quiet"
        assert rig.hub.execute("variable.get", {"name": "quiet_method"}).output == {"quiet_method": "DELETE"}

    def test_options_and_head(self, rig: Rig) -> None:
        assert rig.call("OPTIONS", "/hook/nobody", headers=rig.as_("control")).json()["method"] == "OPTIONS"
        head = rig.call("HEAD", "/hook/text", headers=rig.as_("control"))
        assert head.status == 200 and head.body == b""

    def test_hooks_need_control_by_default(self, rig: Rig) -> None:
        assert_error(rig.call("POST", "/hook/ping", json_body={"n": 1}), 401, "INVALID_CREDENTIALS")
        assert_error(rig.call("POST", "/hook/ping", json_body={"n": 1}, headers=rig.as_("read")),
                     403, "INSUFFICIENT_SCOPE")

    def test_public_hook_needs_nothing_and_keeps_its_headers(self, rig: Rig) -> None:
        rig.rebuild(hooks={"ping": {"public": True}, "nobody": {"public": True}})
        assert rig.call("POST", "/hook/ping", json_body={"n": 1}).json() == {"pong": 2}
        r = rig.call("GET", "/hook/nobody",
                     headers={"X-Token": "their-own-scheme", "Cookie": "session_token=phs_x"})
        assert r.json()["headers"]["X-Token"] == "their-own-scheme" and "Cookie" not in r.json()["headers"]
        # a public hook's failure details stay in the log
        rig.rebuild(hooks={"broken": {"public": True}})
        assert "mock.set" not in assert_error(rig.call("GET", "/hook/broken"), 500, "HOOK_FAILED")["message"]

    def test_hook_token(self, rig: Rig) -> None:
        rig.rebuild(hooks={"ping": {"token": "doorbell-secret-123"},
                           "nobody": {"token": "doorbell-secret-123", "allow_query_token": True}})
        for headers in ({"X-Token": "doorbell-secret-123"}, bearer("doorbell-secret-123")):
            assert rig.call("POST", "/hook/ping", json_body={"n": 1}, headers=headers).json() == {"pong": 2}
        # the hook's token opens that hook only
        assert_error(rig.call("POST", "/execute", json_body=EXEC, headers={"X-Token": "doorbell-secret-123"}),
                     401, "INVALID_CREDENTIALS")
        assert_error(rig.call("GET", "/hook/text", headers={"X-Token": "doorbell-secret-123"}),
                     401, "INVALID_CREDENTIALS")
        # a wrong one falls back to the user credentials, and fails
        assert_error(rig.call("POST", "/hook/ping", json_body={"n": 1}, headers={"X-Token": "wrong"}),
                     401, "INVALID_CREDENTIALS")
        # a user token still works
        assert rig.call("POST", "/hook/ping", json_body={"n": 1}, headers=rig.as_("control")).status == 200
        # query only where allowed, and the token never reaches the event
        assert_error(rig.call("POST", "/hook/ping", json_body={"n": 1}, query="token=doorbell-secret-123"),
                     401, "INVALID_CREDENTIALS")
        r = rig.call("GET", "/hook/nobody", query="token=doorbell-secret-123&x=1")
        assert r.status == 200 and r.json()["args"] == {"x": "1"}
        assert b"doorbell-secret" not in r.body


# --------------------------------------------------------------------- resources
class TestResources:
    @pytest.fixture
    def files(self, rig: Rig) -> Rig:
        root = rig.tmp / "pub"
        (root / "sub").mkdir(parents=True)
        (root / "a.txt").write_text("hello")
        (root / "sub" / "img.png").write_bytes(b"\x89PNG\r\n")
        (root / "sub" / "data.json").write_text("{}")
        (rig.tmp / "nested").mkdir()
        (rig.tmp / "nested" / "n.txt").write_text("nested")
        rig.rebuild(resource_dirs={"pub": str(root), "deep/er": str(rig.tmp / "nested")})
        return rig

    def test_serves_files_with_their_type(self, files: Rig) -> None:
        r = files.call("GET", "/resources/pub/a.txt", headers=files.as_("read"))
        assert r.status == 200 and r.body == b"hello"
        assert r.headers["content-type"] == "text/plain; charset=UTF-8"
        assert_security_headers(r)
        r = files.call("GET", "/resources/pub/sub/img.png", headers=files.as_("read"))
        assert r.body == b"\x89PNG\r\n" and r.headers["content-type"] == "image/png"
        assert files.call("GET", "/resources/pub/sub/data.json", headers=files.as_("read")).headers[
            "content-type"].startswith("application/json")
        assert files.call("GET", "/resources/deep/er/n.txt", headers=files.as_("read")).body == b"nested"

    def test_needs_a_credential(self, files: Rig) -> None:
        assert_error(files.call("GET", "/resources/pub/a.txt"), 401, "INVALID_CREDENTIALS")

    @pytest.mark.parametrize("path", ["/resources/pub/sub", "/resources/pub/sub/", "/resources/pub/",
                                      "/resources/pub", "/resources/nope/a.txt", "/resources/pub/missing"])
    def test_directories_and_unknown_paths_are_404(self, files: Rig, path: str) -> None:
        assert_error(files.call("GET", path, headers=files.as_("read")), 404, "NOT_FOUND")

    def test_range_requests(self, files: Rig) -> None:
        r = files.call("GET", "/resources/pub/a.txt", headers={**files.as_("read"), "Range": "bytes=1-3"})
        assert r.status == 206 and r.body == b"ell"


# ------------------------------------------------------------ meta and errors
class TestMeta:
    def test_livez_needs_no_auth(self, rig: Rig) -> None:
        r = rig.call("GET", "/livez")
        assert r.status == 200 and r.json() == {"status": "ok"}

    def test_readyz_follows_the_hub(self, make_hub, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
        rig = build_rig(make_hub, tmp_path, start=False, users=False)
        assert_error(rig.call("GET", "/readyz"), 503, "NOT_READY")
        rig.hub.start()
        assert rig.call("GET", "/readyz").json() == {"status": "ready"}
        with monkeypatch.context() as m:  # a dispatcher thread that died
            m.setattr(type(rig.hub.dispatcher), "running", property(lambda self: False))
            assert_error(rig.call("GET", "/readyz"), 503, "NOT_READY")
        assert rig.call("GET", "/readyz").status == 200
        rig.hub.stop()
        assert_error(rig.call("GET", "/readyz"), 503, "NOT_READY")
        assert rig.call("GET", "/livez").status == 200

    def test_actions_lists_the_registry(self, rig: Rig) -> None:
        r = rig.call("GET", "/actions", headers=rig.as_("read"))
        actions = {a["action"]: a for a in r.json()}
        assert "variable.get" in actions and "name" in actions["variable.get"]["args"]
        assert r.json() == json.loads(json.dumps(rig.hub.registry.describe()))

    def test_openapi_describes_every_route(self, rig: Rig) -> None:
        doc = rig.call("GET", "/openapi.json").json()
        assert doc["openapi"].startswith("3.0") and doc == json.loads(json.dumps(openapi_document()))
        documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
        for route in rig.app.routes:
            rule = route.rule.replace("<token_id>", "{token_id}").replace("<name>", "{name}")
            rule = rule.replace("<rest:path>", "{name}/{path}")
            rule = re.sub(r"<(\w+)(?::\w+)?>", r"{\1}", rule)  # any other wildcard: its name
            assert (rule, route.method) in documented, (rule, route.method)
        assert len(documented) == len(rig.app.routes)

    def test_metrics(self, rig: Rig) -> None:
        rig.hub.web_clients = lambda: 3
        rig.call("GET", "/livez")
        rig.call("GET", "/nope")
        rig.call("POST", "/hook/nobody", headers=rig.as_("control"))
        rig.call("POST", "/hook/ping", json_body={"n": 1}, headers=rig.as_("control"))
        rig.hub.flush()
        r = rig.call("GET", "/metrics", headers=rig.as_("read"))
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.body.decode()
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                   for line in text.splitlines() if line and not line.startswith("#")}
        assert samples['pihub_http_requests_total{code="404"}'] >= 1
        assert samples['pihub_http_requests_total{code="200"}'] >= 3
        assert samples['pihub_webhooks_total{outcome="unmatched"}'] == 1
        assert samples['pihub_webhooks_total{outcome="replied"}'] == 1
        assert samples["pihub_websocket_clients"] == 3
        assert samples['pihub_bus_published_total{producer="hub"}'] >= 2
        assert samples["pihub_hooks_fired_total"] >= 1
        st = rig.hub.dispatcher.stats
        assert (samples["pihub_hooks_inline_total"], samples["pihub_inline_overruns_total"],
                samples["pihub_inline_deferred_total"]) == (st.hooks_inline, st.inline_overruns, st.inline_deferred)
        buckets = [v for k, v in samples.items() if k.startswith("pihub_dispatch_latency_seconds_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == samples["pihub_dispatch_latency_seconds_count"]
        assert 'le="+Inf"' in text and samples["pihub_dispatch_latency_seconds_count"] >= 1
        families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        for name in {k.split("{")[0] for k in samples}:
            base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert name in families or base in families, name
        assert_error(rig.call("GET", "/metrics"), 401, "INVALID_CREDENTIALS")

    def test_metrics_without_web_clients_hook(self, rig: Rig) -> None:
        text = rig.call("GET", "/metrics", headers=rig.as_("read")).body.decode()
        assert "\npihub_websocket_clients 0\n" in text


class TestErrorsAndHeaders:
    def test_unknown_route_is_json_404(self, rig: Rig) -> None:
        r = rig.call("GET", "/nope")
        assert_error(r, 404, "NOT_FOUND")
        assert_security_headers(r)

    def test_unexpected_exception_is_json_500_without_details(self, rig: Rig,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
        def boom() -> None:
            raise RuntimeError("secret internals /etc/shadow")

        monkeypatch.setattr(rig.hub.registry, "describe", boom)
        r = rig.call("GET", "/actions", headers=rig.as_("read"))
        assert_error(r, 500, "UNKNOWN_ERROR")
        assert b"secret" not in r.body and b"Traceback" not in r.body
        assert_security_headers(r)

    @pytest.mark.parametrize("https", [False, True])
    def test_security_headers_on_200_401_404_405_413(self, rig: Rig, https: bool) -> None:
        replies = [rig.call("GET", "/livez", https=https),
                   rig.call("POST", "/execute", json_body=EXEC, https=https),
                   rig.call("GET", "/nowhere", https=https), rig.call("PUT", "/livez", https=https),
                   rig.call("POST", "/execute", body=b"x" * 70000, https=https)]
        assert [r.status for r in replies] == [200, 401, 404, 405, 413]
        for r in replies:
            assert_security_headers(r, https=https)

    def test_hsts_over_tls_only(self, rig: Rig) -> None:
        assert "strict-transport-security" not in rig.call("GET", "/livez").headers
        hsts = rig.call("GET", "/livez", https=True).headers["strict-transport-security"]
        assert hsts.startswith("max-age=")

    def test_body_limit_by_content_length_and_by_reading(self, rig: Rig) -> None:
        big = json.dumps({**EXEC, "pad": "x" * 70000}).encode()
        headers = {**rig.as_("control"), "Content-Type": "application/json"}
        assert_error(rig.call("POST", "/execute", body=big, headers=headers), 413, "PAYLOAD_TOO_LARGE")
        chunked = {**headers, "Transfer-Encoding": "chunked"}
        r = rig.call("POST", "/execute", body=big, headers=chunked, content_length=False)
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        small = json.dumps(EXEC).encode()
        assert rig.call("POST", "/execute", body=small, headers=chunked, content_length=False).status == 200
        rig.rebuild(max_body=100_000)
        assert rig.call("POST", "/execute", body=big, headers=headers).status == 200

    def test_body_limit_applies_before_authentication(self, rig: Rig) -> None:
        assert_error(rig.call("POST", "/hook/x", body=b"x" * 70000), 413, "PAYLOAD_TOO_LARGE")

    def test_bad_content_length_is_400(self, rig: Rig) -> None:
        env_app = rig.app
        r = call(env_app, "POST", "/execute", body=b"{}", headers={"Content-Length": "12abc"},
                 content_length=False)
        assert_error(r, 400, "BAD_REQUEST")


class TestMakeApp:
    def test_needs_an_auth(self) -> None:
        with pytest.raises(ValueError, match="Auth"):
            make_app(SimpleNamespace(config=None))

    def test_explicit_auth_wins_and_bad_settings_are_refused(self, rig: Rig) -> None:
        other = Auth(rig.hub.store, env_token="another-env-token-123456")
        app = make_app(rig.hub, auth=other, settings={})
        assert call(app, "GET", "/auth", headers={"X-Token": "another-env-token-123456"}).status == 200
        assert call(app, "GET", "/auth", headers={"X-Token": ENV_TOKEN}).status == 401
        with pytest.raises(ValueError, match="max_body"):
            make_app(rig.hub, settings={"max_body": "big"})

    def test_reads_the_http_section_of_the_hub_config(self, rig: Rig,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(rig.hub.config.sections, "http", {"allow_query_token": True})
        app = make_app(rig.hub)
        assert call(app, "GET", "/auth", query=f"token={rig.tokens['read']}").status == 200

    def test_apps_are_independent(self, rig: Rig) -> None:
        a = make_app(rig.hub, settings={"allow_query_token": True})
        b = make_app(rig.hub, settings={})
        query = f"token={rig.tokens['read']}"
        assert call(a, "GET", "/auth", query=query).status == 200
        assert call(b, "GET", "/auth", query=query).status == 401
