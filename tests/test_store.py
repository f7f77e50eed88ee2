"""The SQLite store: persistence, permissions, migrations, concurrency."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from pihub.errors import StoreError
from pihub.store import MIGRATIONS, Migration, Store

#: The current schema version, and the one a test migration adds on top of it.
LATEST = MIGRATIONS[-1].version
NEXT = LATEST + 1


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "work" / "pihub.db"


def _noop(conn: sqlite3.Connection) -> None:
    """A migration that adds nothing."""


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_values_survive_close_and_reopen(db: Path) -> None:
    with Store(db) as s:
        s.set_variables({"colour": "blue", "n": 3, "cfg": {"a": [1, 2.5, None, True]}})
    with Store(db) as s:
        assert s.get_variables() == {"cfg": {"a": [1, 2.5, None, True]}, "colour": "blue", "n": 3}


def test_file_and_sidecars_are_0600_and_parent_is_created(db: Path) -> None:
    old = os.umask(0o022)
    try:
        s = Store(db)
        s.set_variables({"x": 1})
        assert mode(db) == 0o600
        assert mode(db.parent) == 0o700
        for side in (db.with_name("pihub.db-wal"), db.with_name("pihub.db-shm")):
            assert side.exists() and mode(side) == 0o600
        s.close()
    finally:
        os.umask(old)


def test_an_existing_loose_file_is_tightened(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    Store(db).close()
    assert mode(db) == 0o600


def test_wal_mode(db: Path) -> None:
    Store(db).close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_empty_file_is_migrated_to_the_latest_version(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")
    with Store(db) as s:
        assert s.schema_version == MIGRATIONS[-1].version
        s.set_variables({"a": 1})
        assert s.get_variables(["a"]) == {"a": 1}


def test_migrations_run_forward_only_once(db: Path) -> None:
    ran: list[int] = []

    def m2(conn: sqlite3.Connection) -> None:
        ran.append(2)
        conn.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY)")

    Store(db).close()  # at the current version
    two = (*MIGRATIONS, Migration(NEXT, "tokens", m2))
    with Store(db, two) as s:
        assert s.schema_version == NEXT
    with Store(db, two) as s:
        assert s.schema_version == NEXT
    assert ran == [2]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM tokens").fetchone() == (0,)
    finally:
        conn.close()


def test_a_failed_migration_leaves_the_previous_version(db: Path) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        raise RuntimeError("disk on fire")

    Store(db).close()
    failed = rf"migration to schema version {NEXT} \(broken\) failed: disk on fire"
    with pytest.raises(StoreError, match=failed):
        Store(db, (*MIGRATIONS, Migration(NEXT, "broken", bad)))
    with Store(db) as s:
        assert s.schema_version == LATEST
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    finally:
        conn.close()


def test_a_newer_schema_is_refused(db: Path) -> None:
    Store(db, (*MIGRATIONS, Migration(NEXT, "future", _noop))).close()
    newer = rf"has schema version {NEXT}, newer than this pihub knows \({LATEST}\)"
    with pytest.raises(StoreError, match=newer):
        Store(db)


def test_migration_versions_must_be_consecutive(db: Path) -> None:
    with pytest.raises(ValueError, match=f"position {NEXT} has version {NEXT + 1}"):
        Store(db, (*MIGRATIONS, Migration(NEXT + 1, "gap", _noop)))


def test_not_a_database(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite, just some text that is long enough" * 20)
    with pytest.raises(StoreError, match="is not a usable SQLite database"):
        Store(db)


def test_get_set_unset(db: Path) -> None:
    with Store(db) as s:
        assert s.set_variables({"a": 1, "b": "x"}) == ["a", "b"]
        assert s.set_variables({"a": 1, "b": "y"}) == ["b"]  # a unchanged
        assert s.get_variables(["b", "zz", "a"]) == {"b": "y", "a": 1}
        assert s.unset_variables(["a", "zz", "a"]) == ["a"]
        assert s.get_variables() == {"b": "y"}
        assert s.set_variables({}) == []


def test_many_names_in_one_read(db: Path) -> None:
    with Store(db) as s:
        values = {f"v{i}": i for i in range(1500)}
        s.set_variables(values)
        assert s.get_variables(list(values)) == values


def test_bad_values_write_nothing(db: Path) -> None:
    with Store(db) as s:
        with pytest.raises(ValueError, match="variable 'bad': value must be JSON data"):
            s.set_variables({"good": 1, "bad": object()})
        with pytest.raises(ValueError, match="variable 'nan': value must be JSON data"):
            s.set_variables({"nan": float("nan")})
        with pytest.raises(ValueError, match="variable name must be a non-empty str, not ''"):
            s.set_variables({"": 1})
        with pytest.raises(ValueError) as e:  # a lone surrogate: undecodable bytes of a file name
            s.set_variables({"good": 1, "files": {"names": ["ok", "bad\udcff"]}})
        assert str(e.value) == ("variable 'files': value {'names': ['ok', 'bad\\udcff']} is not valid UTF-8 "
                                "text (it holds undecodable bytes, e.g. a file name that is not UTF-8)")
        assert s.get_variables() == {}


def test_closed_store_refuses_calls(db: Path) -> None:
    s = Store(db)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="is closed"):
        s.get_variables()
    assert "closed" in repr(s)


def test_concurrent_writers_on_one_store(db: Path) -> None:
    s = Store(db)
    n_threads, n_writes = 8, 100

    def writer(t: int) -> None:
        for i in range(n_writes):
            s.set_variables({f"t{t}": i, f"t{t}_{i}": [t, i]})

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = s.get_variables()
    assert len(got) == n_threads * (n_writes + 1)
    assert all(got[f"t{t}"] == n_writes - 1 for t in range(n_threads))
    s.close()


def test_concurrent_writers_on_two_connections(db: Path) -> None:
    a, b = Store(db), Store(db)
    errors: list[BaseException] = []

    def writer(store: Store, prefix: str) -> None:
        try:
            for i in range(100):
                store.set_variables({f"{prefix}{i}": i})
                store.unset_variables([f"{prefix}{i - 1}"] if i % 2 else [])
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    ts = [threading.Thread(target=writer, args=(a, "a")), threading.Thread(target=writer, args=(b, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    with Store(db) as c:
        got = c.get_variables()
    assert got["a99"] == 99 and got["b99"] == 99 and "a98" not in got and "a97" in got
    a.close()
    b.close()
