"""pihub.auth: users, API tokens, sessions, setup code, login rate limits."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from pihub import auth as auth_mod
from pihub.auth import (
    ENV_USERNAME,
    SCOPES,
    SESSION_TTL_S,
    Auth,
    AuthFailed,
    Principal,
    RateLimited,
    TokenInfo,
    TokenNameExists,
    csrf_ok,
    expand_scopes,
)
from pihub.store import MIGRATIONS, Store

PASSWORD = "correct horse battery"
ENV_TOKEN = "env-token-0123456789-abcdefghij"


class Clock:
    """A settable clock, seconds since the epoch."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingHasher(PasswordHasher):
    """A cheap argon2id hasher that counts every argon2 computation."""

    def __init__(self, **params: Any) -> None:
        params = {"time_cost": 1, "memory_cost": 64, "parallelism": 1, **params}
        super().__init__(**params)
        self.calls: list[str] = []

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.calls.append("hash")
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.calls.append("verify")
        return super().verify(hash, password)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "work" / "pihub.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(db)
    yield s
    s.close()


@pytest.fixture
def auth(store: Store, clock: Clock, hasher: CountingHasher) -> Auth:
    return Auth(store, env_token=ENV_TOKEN, clock=clock, hasher=hasher)


@pytest.fixture
def alice(auth: Auth) -> str:
    auth.add_user("alice", PASSWORD)
    return "alice"


def db_bytes(db: Path) -> bytes:
    """Every byte of the database and its WAL/shm side files."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


# -- store schema ------------------------------------------------------------------------


def test_the_current_schema_upgrades_a_version_1_file_and_keeps_its_data(db: Path) -> None:
    with Store(db, MIGRATIONS[:1]) as s:
        s.set_variables({"kept": 1})
        assert s.schema_version == 1
    with Store(db) as s:
        assert s.schema_version == len(MIGRATIONS) >= 2  # 2: users and tokens
        assert s.get_variables() == {"kept": 1}
        assert s.user_count() == 0


def test_removing_a_user_in_sql_cascades_to_tokens_and_sessions(auth: Auth, alice: str, db: Path) -> None:
    auth.create_token(alice)
    auth.create_session(alice)
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("DELETE FROM users")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM api_tokens").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    finally:
        conn.close()


# -- scopes and principals ---------------------------------------------------------------


def test_scopes_are_ordered_and_expand_downwards() -> None:
    assert SCOPES == ("read", "control", "admin")
    assert expand_scopes(["read"]) == ("read",)
    assert expand_scopes(["control"]) == ("read", "control")
    assert expand_scopes("admin") == SCOPES
    assert expand_scopes(["read", "admin"]) == SCOPES
    with pytest.raises(ValueError, match="scope must be one of read, control, admin, not 'root'"):
        expand_scopes(["root"])
    with pytest.raises(ValueError, match="at least one"):
        expand_scopes([])


def test_principal_allows_what_its_scopes_include() -> None:
    p = Principal("bob", frozenset(expand_scopes("control")), "token", token_id=3)
    assert p.allows("read") and p.allows("control")
    assert not p.allows("admin")
    with pytest.raises(ValueError, match="not 'contorl'"):
        p.allows("contorl")


# -- users -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "Bob", "_x", "__env__", "-x", ".x", "a b", "é", "a" * 65, "a/b", None])
def test_add_user_refuses_bad_names(auth: Auth, name: Any) -> None:
    with pytest.raises(ValueError, match="username must be 1..64 characters"):
        auth.add_user(name, PASSWORD)
    assert auth.user_count() == 0


@pytest.mark.parametrize("name", ["a", "bob", "b0b.smith-jr_2", "9" * 64])
def test_add_user_accepts_good_names(auth: Auth, name: str) -> None:
    auth.add_user(name, PASSWORD)
    assert auth.has_user(name)
    assert auth.user_count() == 1


def test_add_user_refuses_short_long_and_non_str_passwords_without_echoing_them(auth: Auth) -> None:
    for bad, shown in (("short7!", "not 7"), ("x" * 4097, "not 4097")):
        with pytest.raises(ValueError, match="password must be 8..4096 characters") as e:
            auth.add_user("bob", bad)
        assert shown in str(e.value) and bad not in str(e.value)
    with pytest.raises(ValueError, match="password must be a str, not int"):
        auth.add_user("bob", 12345678)  # type: ignore[arg-type]
    assert auth.user_count() == 0


def test_add_user_refuses_a_duplicate_and_a_bad_scope(auth: Auth, alice: str) -> None:
    with pytest.raises(ValueError, match="user 'alice' already exists"):
        auth.add_user("alice", PASSWORD)
    with pytest.raises(ValueError, match="not 'owner'"):
        auth.add_user("bob", PASSWORD, scope="owner")
    assert auth.user_count() == 1


def test_passwords_are_stored_as_argon2id(auth: Auth, alice: str, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        (stored,) = conn.execute("SELECT password_hash FROM users WHERE username = 'alice'").fetchone()
    finally:
        conn.close()
    assert stored.startswith("$argon2id$")
    assert PASSWORD.encode() not in db_bytes(db)


def test_default_hasher_is_argon2id_with_owasp_parameters(store: Store) -> None:
    h = Auth(store)._hasher
    # 12 MiB x 3 passes: one of OWASP's equivalent settings, the one chosen for a 512 MB Pi
    assert (h.type.name, h.memory_cost, h.time_cost, h.parallelism) == ("ID", 12288, 3, 1)


def test_a_hash_made_with_the_former_19_mib_parameters_still_logs_in_and_is_upgraded(
        store: Store, clock: Clock) -> None:
    former = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)  # pihub before issue 8
    store.add_user("alice", former.hash(PASSWORD), "admin", clock())
    auth = Auth(store, clock=clock)
    with pytest.raises(AuthFailed):
        auth.login("alice", "wrong password", ip="10.0.0.1")
    assert "m=19456,t=2,p=1" in store.get_user("alice").password_hash  # type: ignore[union-attr]
    assert auth.login("alice", PASSWORD, ip="10.0.0.1").username == "alice"
    assert "m=12288,t=3,p=1" in store.get_user("alice").password_hash  # type: ignore[union-attr]
    assert auth.login("alice", PASSWORD, ip="10.0.0.1").username == "alice"


def test_login_returns_the_user_with_its_scopes(auth: Auth, alice: str) -> None:
    auth.add_user("reader", PASSWORD, scope="read")
    p = auth.login("alice", PASSWORD, ip="10.0.0.1")
    assert (p.username, p.scopes, p.via) == ("alice", frozenset(SCOPES), "password")
    assert auth.login("reader", PASSWORD, ip="10.0.0.1").scopes == frozenset({"read"})


def test_login_fails_the_same_way_for_unknown_user_and_bad_password(auth: Auth, alice: str,
                                                                    hasher: CountingHasher) -> None:
    messages = []
    attempts = (("alice", "wrong password"), ("nobody", PASSWORD), ("nobody", "x" * 9),
                ("Bad Name", PASSWORD))
    for user, pw in attempts:
        hasher.calls.clear()
        with pytest.raises(AuthFailed) as e:
            auth.login(user, pw, ip=f"10.0.0.{len(messages)}")
        assert isinstance(e.value, PermissionError)
        messages.append(str(e.value))
        # one argon2 computation on every path, so timing does not tell which names exist
        assert len(hasher.calls) == 1, (user, hasher.calls)
    assert set(messages) == {"invalid credentials"}


def test_argon2_runs_only_to_add_change_or_check_a_password(auth: Auth, hasher: CountingHasher) -> None:
    assert auth.ensure_setup_code() is not None
    auth.add_user("alice", PASSWORD)
    assert hasher.calls == ["hash"]
    hasher.calls.clear()
    token, info = auth.create_token("alice")
    for _ in range(50):
        assert auth.check_token(token) is not None
    assert auth.check_token(ENV_TOKEN) is not None
    auth.check_token("ph_nope")
    session, _csrf = auth.create_session("alice")
    for _ in range(50):
        assert auth.check_session(session) is not None
    auth.list_tokens()
    auth.user_count()
    auth.refresh()
    auth.flush()
    auth.end_session(session)
    auth.revoke_token(info.id)
    assert hasher.calls == []
    auth.login("alice", PASSWORD, ip="10.0.0.1")
    assert hasher.calls == ["verify"]
    hasher.calls.clear()
    auth.set_password("alice", "another password")
    assert hasher.calls == ["hash"]


def test_set_password_ends_sessions_and_keeps_tokens(auth: Auth, alice: str) -> None:
    session, _ = auth.create_session(alice)
    token, _ = auth.create_token(alice)
    auth.add_user("bob", PASSWORD)
    bob_session, _ = auth.create_session("bob")
    auth.set_password(alice, "new password!")
    assert auth.check_session(session) is None
    assert auth.check_session(bob_session) is not None
    assert auth.check_token(token) is not None
    with pytest.raises(AuthFailed):
        auth.login(alice, PASSWORD, ip="10.0.0.1")
    assert auth.login(alice, "new password!", ip="10.0.0.1").username == alice
    with pytest.raises(ValueError, match="no such user 'carol'"):
        auth.set_password("carol", "new password!")
    with pytest.raises(ValueError, match="password must be 8..4096"):
        auth.set_password(alice, "short")


def test_remove_user_revokes_its_tokens_and_sessions(auth: Auth, alice: str) -> None:
    fired: list[int] = []
    auth.on_revoke(fired.append)
    auth.add_user("bob", PASSWORD)
    t1, i1 = auth.create_token(alice, name="one")
    t2, i2 = auth.create_token(alice, name="two")
    tb, _ = auth.create_token("bob")
    session, _ = auth.create_session(alice)
    assert auth.check_token(t1) is not None and auth.check_session(session) is not None
    auth.remove_user(alice)
    assert sorted(fired) == [i1.id, i2.id]
    assert auth.check_token(t1) is None and auth.check_token(t2) is None
    assert auth.check_session(session) is None
    assert auth.check_token(tb) is not None
    assert not auth.has_user(alice) and auth.user_count() == 1
    assert [t.username for t in auth.list_tokens()] == ["bob"]
    with pytest.raises(ValueError, match="no such user 'alice'"):
        auth.remove_user(alice)


def test_login_upgrades_a_hash_made_with_older_parameters(store: Store, clock: Clock) -> None:
    old = CountingHasher(memory_cost=64)
    Auth(store, clock=clock, hasher=old).add_user("alice", PASSWORD)
    new = CountingHasher(memory_cost=128)
    auth = Auth(store, clock=clock, hasher=new)
    assert auth.login("alice", PASSWORD, ip="10.0.0.1").username == "alice"
    assert new.calls == ["verify", "hash"]
    assert "m=128," in store.get_user("alice").password_hash  # type: ignore[union-attr]
    new.calls.clear()
    auth.login("alice", PASSWORD, ip="10.0.0.1")
    assert new.calls == ["verify"]


# -- api tokens --------------------------------------------------------------------------


def test_tokens_are_256_random_bits_with_a_prefix(auth: Auth, alice: str) -> None:
    tokens = {auth.create_token(alice)[0] for _ in range(20)}
    assert len(tokens) == 20
    for t in tokens:
        assert re.fullmatch(r"ph_[A-Za-z0-9_-]{43}", t), t


def test_check_token_gives_the_owner_scopes_and_id(auth: Auth, alice: str, clock: Clock) -> None:
    token, info = auth.create_token(alice, name="phone", scopes=("control",))
    assert isinstance(info, TokenInfo)
    assert (info.name, info.username, info.scopes, info.created_at, info.expires_at, info.last_used_at) == (
        "phone", alice, ("read", "control"), clock.now, None, None)
    p = auth.check_token(token)
    assert p == Principal(alice, frozenset({"read", "control"}), "token", token_id=info.id)
    assert p.allows("control") and not p.allows("admin")


@pytest.mark.parametrize("bad", ["", "ph_", "ph_" + "A" * 43, "Bearer x", "x" * 10_000, None, 42, b"ph_x"])
def test_check_token_refuses_what_is_not_a_live_token(auth: Auth, alice: str, bad: Any) -> None:
    token, _ = auth.create_token(alice)
    assert auth.check_token(bad) is None
    assert auth.check_token(token[:-1]) is None
    assert auth.check_token(token + "x") is None
    assert auth.check_token(token) is not None


def test_tokens_are_stored_only_as_sha256(auth: Auth, alice: str, db: Path) -> None:
    tokens = [auth.create_token(alice)[0] for _ in range(3)]
    data = db_bytes(db)
    for t in tokens:
        assert t.encode() not in data
        assert t[3:].encode() not in data
        # the digest is there: the bytes read really are the store's
        assert hashlib.sha256(t.encode()).digest() in data


def test_a_check_reads_no_table(auth: Auth, alice: str, store: Store) -> None:
    token, _ = auth.create_token(alice)
    assert auth.check_token(token) is not None  # first check loads the index
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
    try:
        for _ in range(20):
            assert auth.check_token(token) is not None
            assert auth.check_token("ph_" + "B" * 43) is None
    finally:
        store._conn.set_trace_callback(None)  # type: ignore[union-attr]
    assert statements and set(statements) == {"PRAGMA data_version"}


def test_scope_is_capped_by_the_user_and_validated(auth: Auth, alice: str) -> None:
    auth.add_user("reader", PASSWORD, scope="read")
    with pytest.raises(ValueError, match="token scope 'control' is above the scope of user 'reader'"):
        auth.create_token("reader")
    token, info = auth.create_token("reader", scopes=["read"])
    assert info.scopes == ("read",)
    assert not auth.check_token(token).allows("control")  # type: ignore[union-attr]
    admin_token, info = auth.create_token(alice, scopes=("admin",))
    assert info.scopes == SCOPES
    assert auth.check_token(admin_token).allows("admin")  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not 'superuser'"):
        auth.create_token(alice, scopes=["superuser"])
    with pytest.raises(ValueError, match="no such user 'carol'"):
        auth.create_token("carol")


def test_token_names(auth: Auth, alice: str) -> None:
    _, info = auth.create_token(alice)
    assert re.fullmatch(r"alice-[0-9a-f]{8}", info.name)
    auth.create_token(alice, name="phone")
    with pytest.raises(TokenNameExists, match="user 'alice' already has a token named 'phone'"):
        auth.create_token(alice, name="phone")
    auth.add_user("bob", PASSWORD)
    auth.create_token("bob", name="phone")  # names are per user
    for bad, why in (("123", "all digits"), ("ph_x", "must not start with 'ph_'"), ("", "1..64"),
                     ("x" * 65, "1..64"), (" pad", "1..64"), ("tab\there", "1..64")):
        with pytest.raises(ValueError, match=why):
            auth.create_token(alice, name=bad)
    assert len(auth.list_tokens(alice)) == 2


def test_list_tokens_has_no_secrets_and_filters_by_user(auth: Auth, alice: str) -> None:
    auth.add_user("bob", PASSWORD)
    ta, ia = auth.create_token(alice, name="a")
    tb, ib = auth.create_token("bob", name="b")
    assert [t.id for t in auth.list_tokens()] == [ia.id, ib.id]
    assert auth.list_tokens("bob") == [ib]
    assert auth.list_tokens("carol") == []
    shown = repr(auth.list_tokens())
    assert ta not in shown and tb not in shown and ta[3:] not in shown


@pytest.mark.parametrize("how", ["id", "digits", "name", "value"])
def test_revoke_takes_effect_on_the_next_check_and_fires_on_revoke(auth: Auth, alice: str, how: str) -> None:
    fired: list[int] = []
    auth.on_revoke(fired.append)
    token, info = auth.create_token(alice, name="phone")
    other, _ = auth.create_token(alice, name="other")
    assert auth.check_token(token) is not None
    key = {"id": info.id, "digits": str(info.id), "name": "phone", "value": token}[how]
    assert auth.revoke_token(key) is True
    assert auth.check_token(token) is None
    assert fired == [info.id]
    assert auth.check_token(other) is not None
    assert auth.revoke_token(key) is False
    assert fired == [info.id]
    assert [t.name for t in auth.list_tokens()] == ["other"]


def test_revoke_restricted_to_a_user_and_ambiguous_names(auth: Auth, alice: str) -> None:
    auth.add_user("bob", PASSWORD)
    _, ia = auth.create_token(alice, name="phone")
    tb, _ = auth.create_token("bob", name="phone")
    with pytest.raises(ValueError, match="2 users have a token named 'phone'"):
        auth.revoke_token("phone")
    assert auth.revoke_token(ia.id, username="bob") is False
    assert auth.revoke_token("phone", username="alice") is True
    assert auth.revoke_token("phone") is True  # now only bob's is left
    assert auth.check_token(tb) is None
    with pytest.raises(ValueError, match="not float"):
        auth.revoke_token(1.0)  # type: ignore[arg-type]


def test_a_revocation_by_another_process_is_seen_at_the_next_check(auth: Auth, alice: str, db: Path,
                                                                   clock: Clock) -> None:
    fired: list[int] = []
    auth.on_revoke(fired.append)
    token, info = auth.create_token(alice, name="phone")
    assert auth.check_token(token) is not None
    with Store(db) as other:  # the pihub CLI: another connection to the same file
        assert Auth(other, clock=clock).revoke_token("phone") is True
    assert auth.check_token(token) is None
    assert fired == [info.id]


def test_refresh_notices_an_outside_revocation_without_a_check(auth: Auth, alice: str, db: Path,
                                                               clock: Clock) -> None:
    fired: list[int] = []
    auth.on_revoke(fired.append)
    token, info = auth.create_token(alice)
    assert auth.check_token(token) is not None
    auth.refresh()
    assert fired == []
    with Store(db) as other:
        Auth(other, clock=clock).remove_user(alice)
    auth.refresh()
    assert fired == [info.id]


def test_tokens_created_by_another_process_work_at_once(auth: Auth, alice: str, db: Path,
                                                        clock: Clock) -> None:
    assert auth.check_token("ph_" + "C" * 43) is None  # index loaded
    with Store(db) as other:
        token, _ = Auth(other, clock=clock).create_token(alice)
    assert auth.check_token(token) is not None


def test_a_failing_on_revoke_callback_is_logged_and_others_still_run(auth: Auth, alice: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(token_id: int) -> None:
        raise RuntimeError("boom")

    fired: list[int] = []
    auth.on_revoke(broken)
    auth.on_revoke(fired.append)
    _, info = auth.create_token(alice)
    with caplog.at_level(logging.ERROR, logger="pihub.auth"):
        assert auth.revoke_token(info.id) is True
    assert fired == [info.id]
    assert "on_revoke callback" in caplog.text and "boom" in caplog.text


def test_concurrent_checks_never_accept_a_token_after_its_revocation_returned(auth: Auth, alice: str) -> None:
    token, info = auth.create_token(alice)
    revoked = threading.Event()
    late_accepts: list[int] = []
    stop = threading.Event()

    def checker() -> None:
        while not stop.is_set():
            was_revoked = revoked.is_set()
            if auth.check_token(token) is not None and was_revoked:
                late_accepts.append(1)

    threads = [threading.Thread(target=checker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(200):
            auth.check_token(token)
        auth.revoke_token(info.id)
        revoked.set()
        for _ in range(200):
            assert auth.check_token(token) is None
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert late_accepts == []


def test_token_expiry_follows_the_clock_and_fires_on_revoke(auth: Auth, alice: str, clock: Clock) -> None:
    fired: list[int] = []
    auth.on_revoke(fired.append)
    token, info = auth.create_token(alice, expires_days=1)
    forever, _ = auth.create_token(alice)
    assert info.expires_at == clock.now + 86400
    clock.advance(86399)
    assert auth.check_token(token) is not None
    assert fired == []
    clock.advance(1)
    assert auth.check_token(token) is None
    assert fired == [info.id]
    assert auth.check_token(forever) is not None
    clock.advance(10 * 365 * 86400)
    assert auth.check_token(forever) is not None
    # still listed (marked by its expiry), until revoked
    assert [t.id for t in auth.list_tokens() if t.expires_at is not None] == [info.id]
    assert fired == [info.id]


def test_expiry_is_noticed_by_refresh(auth: Auth, alice: str, clock: Clock) -> None:
    fired: list[int] = []
    auth.on_revoke(fired.append)
    _, info = auth.create_token(alice, expires_days=0.5)
    auth.refresh()
    clock.advance(43200)
    auth.refresh()
    assert fired == [info.id]


@pytest.mark.parametrize("days", [0, -1, math.nan, math.inf, True, 36501, "7"])
def test_bad_expiries_are_refused(auth: Auth, alice: str, days: Any) -> None:
    with pytest.raises(ValueError, match=r"expires_days must be a number in \(0, 36500\] or None"):
        auth.create_token(alice, expires_days=days)
    assert auth.list_tokens() == []


def test_last_used_is_batched(auth: Auth, alice: str, clock: Clock, db: Path) -> None:
    token, _ = auth.create_token(alice)

    def stored_last_used() -> float | None:
        with Store(db) as other:
            return other.list_tokens()[0].last_used_at

    clock.advance(5)
    auth.check_token(token)
    assert auth.list_tokens()[0].last_used_at == clock.now  # fresh in this process
    assert stored_last_used() is None  # not written per request
    clock.advance(30)
    auth.check_token(token)
    assert stored_last_used() is None
    clock.advance(30)  # 65 s after the last flush: this check writes the batch
    auth.check_token(token)
    assert stored_last_used() == clock.now
    clock.advance(1)
    auth.check_token(token)
    auth.close()
    assert stored_last_used() == clock.now


# -- env token ---------------------------------------------------------------------------


def test_env_token_is_an_admin_named_env(auth: Auth) -> None:
    p = auth.check_token(ENV_TOKEN)
    assert p == Principal(ENV_USERNAME, frozenset(SCOPES), "env")
    assert auth.check_token(ENV_TOKEN + "x") is None
    assert auth.check_token(ENV_TOKEN[:-1]) is None


@pytest.mark.parametrize("env", [None, ""])
def test_no_env_token_means_none_accepted(store: Store, clock: Clock, env: str | None) -> None:
    auth = Auth(store, env_token=env, clock=clock, hasher=CountingHasher())
    assert auth.check_token("") is None
    assert auth.check_token(ENV_TOKEN) is None


def test_a_short_env_token_is_warned_about_without_showing_it(store: Store,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pihub.auth"):
        Auth(store, env_token="hunter2")
    assert "shorter than 16 characters" in caplog.text
    assert "hunter2" not in caplog.text


def test_the_configs_token_is_accepted_beside_the_env_token(store: Store, clock: Clock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from pihub.auth import CONFIG_USERNAME
    from pihub.config import Secret

    config_token = Secret("platypush-style-static-token-0123")
    auth = Auth(store, env_token=ENV_TOKEN, config_token=config_token, clock=clock, hasher=CountingHasher())
    assert auth.check_token(config_token.reveal()) == Principal(CONFIG_USERNAME, frozenset(SCOPES), "env")
    assert auth.check_token(ENV_TOKEN).username == ENV_USERNAME
    assert auth.check_token(config_token.reveal() + "x") is None
    with caplog.at_level(logging.WARNING, logger="pihub.auth"):
        Auth(store, config_token="short")
    assert "token: is shorter than 16 characters" in caplog.text and "short\n" not in caplog.text


# -- sessions ----------------------------------------------------------------------------


def test_sessions_carry_the_user_and_a_csrf_token(auth: Auth, alice: str) -> None:
    auth.add_user("reader", PASSWORD, scope="read")
    s1, c1 = auth.create_session(alice)
    s2, c2 = auth.create_session(alice)
    s3, _ = auth.create_session("reader")
    assert re.fullmatch(r"phs_[A-Za-z0-9_-]{43}", s1)
    assert len({s1, s2, c1, c2}) == 4
    p, csrf = auth.check_session(s1)  # type: ignore[misc]
    assert (p.username, p.scopes, p.via) == (alice, frozenset(SCOPES), "session")
    assert p.session_id is not None and p.token_id is None
    assert csrf == c1 and auth.check_session(s1)[1] == c1  # type: ignore[index]
    assert auth.check_session(s3)[0].scopes == frozenset({"read"})  # type: ignore[index]
    assert csrf_ok(c1, c1) and not csrf_ok(c1, c2) and not csrf_ok(c1, None) and not csrf_ok(c1, "")
    assert auth.check_session(s1[:-1]) is None
    assert auth.check_session("ph_" + s1[4:]) is None
    assert auth.check_token(s1) is None  # a session is not an api token
    with pytest.raises(ValueError, match="no such user 'carol'"):
        auth.create_session("carol")


def test_sessions_expire_after_12_hours_or_30_days_when_remembered(auth: Auth, alice: str,
                                                                   clock: Clock) -> None:
    short, _ = auth.create_session(alice)
    long, _ = auth.create_session(alice, remember=True)
    clock.advance(12 * 3600 - 1)
    assert auth.check_session(short) is not None
    clock.advance(1)
    assert auth.check_session(short) is None
    assert auth.check_session(long) is not None
    clock.advance(30 * 86400 - 12 * 3600 - 1)
    assert auth.check_session(long) is not None
    clock.advance(1)
    assert auth.check_session(long) is None


def test_end_session_logs_out_only_that_session(auth: Auth, alice: str) -> None:
    s1, _ = auth.create_session(alice)
    s2, _ = auth.create_session(alice)
    auth.end_session(s1)
    auth.end_session(s1)  # idempotent
    auth.end_session("garbage")
    auth.end_session(None)  # type: ignore[arg-type]
    assert auth.check_session(s1) is None
    assert auth.check_session(s2) is not None


def test_sessions_are_stored_hashed_and_survive_a_restart(auth: Auth, alice: str, db: Path, store: Store,
                                                          clock: Clock) -> None:
    session, csrf = auth.create_session(alice)
    data = db_bytes(db)
    assert session.encode() not in data and csrf.encode() not in data
    assert hashlib.sha256(session.encode()).digest() in data
    restarted = Auth(store, clock=clock, hasher=CountingHasher())
    assert restarted.check_session(session) == (auth.check_session(session)[0], csrf)  # type: ignore[index]


def _session_id(auth: Auth, session: str) -> int:
    found = auth.check_session(session)
    assert found is not None
    return found[0].session_id  # type: ignore[return-value]


def test_on_session_end_reports_logout_password_change_and_removal(auth: Auth, alice: str) -> None:
    ended: list[int] = []
    auth.on_session_end(ended.append)
    auth.add_user("bob", PASSWORD)
    s1, s2, s3 = (auth.create_session(alice)[0] for _ in range(3))
    bobs = auth.create_session("bob")[0]
    i1, i2, i3, ib = (_session_id(auth, s) for s in (s1, s2, s3, bobs))
    auth.end_session(s1)
    assert ended == [i1]
    auth.end_session(s1)  # already ended: no second report
    auth.end_session("phs_" + "x" * 43)
    assert ended == [i1]
    auth.set_password(alice, "another long password")
    assert sorted(ended[1:]) == sorted([i2, i3])
    auth.remove_user("bob")
    assert ended[3:] == [ib]
    assert auth.check_session(s2) is None and auth.check_session(bobs) is None
    assert len(ended) == 4  # the failed checks report nothing new


def test_on_session_end_reports_expiry_at_refresh_or_check(auth: Auth, alice: str, clock: Clock) -> None:
    ended: list[int] = []
    auth.on_session_end(ended.append)
    short, _ = auth.create_session(alice)
    checked, _ = auth.create_session(alice)
    long, _ = auth.create_session(alice, remember=True)
    ids = {s: _session_id(auth, s) for s in (short, checked, long)}
    clock.advance(SESSION_TTL_S - 1)
    auth.refresh()
    assert ended == []
    clock.advance(1)
    assert auth.check_session(checked) is None  # noticed by the check itself
    assert ended == [ids[checked]]
    auth.refresh()  # the other 12 h session, with no request
    assert ended == [ids[checked], ids[short]]
    auth.refresh()
    assert len(ended) == 2 and auth.check_session(long) is not None


def test_on_session_end_reports_an_end_by_another_process(auth: Auth, alice: str, db: Path,
                                                          clock: Clock) -> None:
    ended: list[int] = []
    auth.on_session_end(ended.append)
    session, _ = auth.create_session(alice)
    sid = _session_id(auth, session)
    with Store(db) as other:  # `pihub user passwd` from a shell
        Auth(other, clock=clock, hasher=CountingHasher()).set_password(alice, "another long password")
    auth.refresh()
    assert ended == [sid]


def test_a_failing_on_session_end_callback_is_logged_and_others_still_run(
        auth: Auth, alice: str, caplog: pytest.LogCaptureFixture) -> None:
    def broken(session_id: int) -> None:
        raise RuntimeError("boom")

    ended: list[int] = []
    auth.on_session_end(broken)
    auth.on_session_end(ended.append)
    session, _ = auth.create_session(alice)
    sid = _session_id(auth, session)
    with caplog.at_level(logging.ERROR, logger="pihub.auth"):
        auth.end_session(session)
    assert ended == [sid]
    assert "on_session_end callback" in caplog.text and session not in caplog.text


# -- rate limiting -----------------------------------------------------------------------


def test_five_failures_in_five_minutes_then_rate_limited(auth: Auth, alice: str, clock: Clock,
                                                         hasher: CountingHasher) -> None:
    for _ in range(5):
        with pytest.raises(AuthFailed):
            auth.login(alice, "wrong password", ip="192.0.2.7")
        clock.advance(1)
    hasher.calls.clear()
    with pytest.raises(RateLimited) as e:
        auth.login(alice, PASSWORD, ip="192.0.2.7")  # even the right password
    assert isinstance(e.value, PermissionError)
    # the first failure (t=0) leaves the 300 s window at t=300; now is t=5
    assert e.value.retry_after == 295
    assert "retry after 295 s" in str(e.value)
    assert hasher.calls == []  # no argon2 work while limited
    # other addresses are not affected
    assert auth.login(alice, PASSWORD, ip="192.0.2.8").username == alice
    clock.advance(294)
    with pytest.raises(RateLimited) as e:
        auth.login(alice, PASSWORD, ip="192.0.2.7")
    assert e.value.retry_after == 1
    clock.advance(1)
    assert auth.login(alice, PASSWORD, ip="192.0.2.7").username == alice


def test_failures_outside_the_window_do_not_count(auth: Auth, alice: str, clock: Clock) -> None:
    for _ in range(10):
        with pytest.raises(AuthFailed):
            auth.login(alice, "wrong password", ip="192.0.2.7")
        clock.advance(61)  # never 5 within 300 s
    assert auth.login(alice, PASSWORD, ip="192.0.2.7").username == alice


def test_a_success_does_not_reset_the_count(auth: Auth, alice: str) -> None:
    for _ in range(4):
        with pytest.raises(AuthFailed):
            auth.login("bob", PASSWORD, ip="192.0.2.7")
    auth.login(alice, PASSWORD, ip="192.0.2.7")
    with pytest.raises(AuthFailed):
        auth.login("bob", PASSWORD, ip="192.0.2.7")
    with pytest.raises(RateLimited):
        auth.login(alice, PASSWORD, ip="192.0.2.7")


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4(auth: Auth, alice: str) -> None:
    for i in range(5):
        with pytest.raises(AuthFailed):
            auth.login(alice, "wrong password", ip=f"2001:db8:1:2::{i + 1:x}")
    with pytest.raises(RateLimited):
        auth.login(alice, PASSWORD, ip="2001:db8:1:2:ffff::99")
    assert auth.login(alice, PASSWORD, ip="2001:db8:1:3::1").username == alice
    for _ in range(5):
        with pytest.raises(AuthFailed):
            auth.login(alice, "wrong password", ip="::ffff:198.51.100.1")
    with pytest.raises(RateLimited):
        auth.login(alice, PASSWORD, ip="198.51.100.1")


def test_limits_are_configurable_and_validated(store: Store, clock: Clock) -> None:
    auth = Auth(store, max_failures=2, window_s=60, clock=clock, hasher=CountingHasher())
    for _ in range(2):
        with pytest.raises(AuthFailed):
            auth.login("x", PASSWORD, ip="192.0.2.1")
    with pytest.raises(RateLimited) as e:
        auth.login("x", PASSWORD, ip="192.0.2.1")
    assert e.value.retry_after == 60
    for bad in ({"max_failures": 0}, {"window_s": 0}, {"max_failures": True}, {"window_s": math.inf},
                {"max_failures_total": 0}, {"max_failures_total": 2.5}, {"kdf_concurrency": 0},
                {"kdf_queue": -1}, {"kdf_wait_s": 0}, {"kdf_wait_s": math.nan}, {"max_tracked_addresses": 0}):
        (name, value), = bad.items()
        with pytest.raises(ValueError, match=f"^{name} must be .*, not {value!r}$"):
            Auth(store, **bad)


def test_successful_logins_do_not_use_up_the_address_limit(auth: Auth, alice: str) -> None:
    # an attempt is counted when it starts and taken back when it succeeds
    for _ in range(4):
        with pytest.raises(AuthFailed):
            auth.login(alice, "wrong password", ip="192.0.2.7")
    for _ in range(20):
        assert auth.login(alice, PASSWORD, ip="192.0.2.7").username == alice
    with pytest.raises(AuthFailed):
        auth.login(alice, "wrong password", ip="192.0.2.7")
    with pytest.raises(RateLimited) as e:
        auth.login(alice, PASSWORD, ip="192.0.2.7")
    assert e.value.reason == "too many failed logins from this address"


def test_tracked_addresses_are_bounded(store: Store, clock: Clock) -> None:
    auth = Auth(store, max_failures=1, max_tracked_addresses=3, clock=clock, hasher=CountingHasher())
    for i in range(4):
        with pytest.raises(AuthFailed):
            auth.login("x", PASSWORD, ip=f"192.0.2.{i}")
    assert len(auth._failures) == 3
    with pytest.raises(RateLimited):
        auth.login("x", PASSWORD, ip="192.0.2.3")
    with pytest.raises(AuthFailed):  # the oldest address was forgotten
        auth.login("x", PASSWORD, ip="192.0.2.0")


# -- setup code --------------------------------------------------------------------------


def test_setup_code_is_one_time_and_makes_an_admin(auth: Auth, db: Path, hasher: CountingHasher) -> None:
    code = auth.ensure_setup_code()
    assert code is not None and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){3}", code)
    assert auth.ensure_setup_code() == code
    assert code.encode() not in db_bytes(db) and code.replace("-", "").encode() not in db_bytes(db)
    hasher.calls.clear()
    with pytest.raises(AuthFailed, match="invalid setup code"):
        auth.redeem_setup_code(code[:-1] + ("0" if code[-1] != "0" else "1"), "alice", PASSWORD)
    assert hasher.calls == []  # wrong codes cost no argon2 work
    with pytest.raises(ValueError, match="username must be"):
        auth.redeem_setup_code(code, "Alice", PASSWORD)
    with pytest.raises(ValueError, match="password must be"):
        auth.redeem_setup_code(code, "alice", "short")
    assert auth.user_count() == 0
    p = auth.redeem_setup_code(" " + code.upper().replace("-", " ") + "\n", "alice", PASSWORD)
    assert p == Principal("alice", frozenset(SCOPES), "setup")
    assert auth.login("alice", PASSWORD, ip="10.0.0.1").allows("admin")
    with pytest.raises(AuthFailed, match="invalid setup code"):
        auth.redeem_setup_code(code, "mallory", PASSWORD)
    assert auth.user_count() == 1
    assert auth.ensure_setup_code() is None


def test_a_redeemed_code_stays_dead_when_the_users_are_gone(auth: Auth) -> None:
    code = auth.ensure_setup_code()
    assert code is not None
    auth.redeem_setup_code(code, "alice", PASSWORD)
    auth.remove_user("alice")
    assert auth.user_count() == 0
    with pytest.raises(AuthFailed, match="invalid setup code"):
        auth.redeem_setup_code(code, "mallory", PASSWORD)
    fresh = auth.ensure_setup_code()
    assert fresh is not None and fresh != code
    assert auth.redeem_setup_code(fresh, "bob", PASSWORD).username == "bob"


def test_no_setup_code_once_users_exist(auth: Auth, alice: str) -> None:
    assert auth.ensure_setup_code() is None
    with pytest.raises(AuthFailed):
        auth.redeem_setup_code("0" * 32, "bob", PASSWORD)


def test_no_setup_code_was_made_means_none_redeems(auth: Auth) -> None:
    with pytest.raises(AuthFailed, match="invalid setup code"):
        auth.redeem_setup_code("", "alice", PASSWORD)
    assert auth.user_count() == 0


def test_a_restart_replaces_the_setup_code(store: Store, clock: Clock) -> None:
    first = Auth(store, clock=clock, hasher=CountingHasher()).ensure_setup_code()
    restarted = Auth(store, clock=clock, hasher=CountingHasher())
    second = restarted.ensure_setup_code()
    assert first and second and first != second
    with pytest.raises(AuthFailed):
        restarted.redeem_setup_code(first, "alice", PASSWORD)
    assert restarted.redeem_setup_code(second, "alice", PASSWORD).username == "alice"


def test_a_user_added_from_the_cli_kills_the_setup_code(auth: Auth, db: Path, clock: Clock) -> None:
    code = auth.ensure_setup_code()
    assert code is not None
    with Store(db) as other:
        Auth(other, clock=clock, hasher=CountingHasher()).add_user("bob", PASSWORD)
    with pytest.raises(AuthFailed):
        auth.redeem_setup_code(code, "alice", PASSWORD)
    assert auth.ensure_setup_code() is None


# -- secrets stay secret -----------------------------------------------------------------


def test_no_secret_in_logs_reprs_or_errors(store: Store, clock: Clock, db: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    secrets_seen: list[str] = [PASSWORD, "n3w-password", ENV_TOKEN, "wrong password"]
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):
        auth = Auth(store, env_token=ENV_TOKEN, clock=clock, hasher=CountingHasher())
        code = auth.ensure_setup_code()
        assert code is not None
        secrets_seen.append(code)
        for attempt in (code[::-1], code):
            try:
                auth.redeem_setup_code(attempt, "alice", PASSWORD)
            except AuthFailed as e:
                shown.append(str(e))
        token, info = auth.create_token("alice", name="phone", expires_days=3)
        session, csrf = auth.create_session("alice", remember=True)
        secrets_seen += [token, token[3:], session, session[4:], csrf]
        checked = auth.check_session(session)
        assert checked is not None
        shown += [repr(auth), repr(info), repr(auth.check_token(token)), repr(checked[0]),
                  repr(auth.list_tokens()), repr(auth.check_token(ENV_TOKEN)), repr(store),
                  repr(store.list_tokens()), repr(store.get_user("alice")),
                  repr(store.list_sessions(clock.now))]
        for call in (lambda: auth.login("alice", "wrong password", ip="10.0.0.9"),
                     lambda: auth.login("wrong password", PASSWORD, ip="10.0.0.9"),
                     lambda: auth.add_user("bob", "short"),
                     lambda: auth.set_password("alice", "x" * 5000),
                     lambda: auth.create_token("alice", name="phone")):
            try:
                call()
            except (ValueError, PermissionError) as e:
                shown.append(str(e))
        auth.check_token(token)
        auth.check_token(token + "typo")
        auth.set_password("alice", "n3w-password")
        auth.login("alice", "n3w-password", ip="10.0.0.1")
        auth.revoke_token(token)
        auth.end_session(session)
        auth.remove_user("alice")
        auth.close()
    text = caplog.text + "\n".join(shown)
    assert "invalid credentials" in text and "api token" in text  # the log was captured
    for s in secrets_seen:
        assert s not in text, f"a secret leaked: {s[:3]}..."
    # a password typed as a username is not logged either
    assert "wrong password" not in caplog.text


def test_auth_module_avoids_dangerous_calls() -> None:
    source = Path(auth_mod.__file__).read_text(encoding="utf-8")
    for banned in ("eval(", "exec(", "pickle", "shell=True", "yaml.load(", "random."):
        assert banned not in source, banned
