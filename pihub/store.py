"""The daemon's SQLite store: one file, ``<workdir>/pihub.db``.

What lives here is what must survive a restart: persisted variables now, users and API
tokens later. Choices, and why:

* **One connection behind a lock.** The connection is opened with
  ``check_same_thread=False`` and every operation holds a :class:`threading.Lock`. The
  daemon's database traffic is a few small statements per action, so a lock costs
  nothing measurable, and one connection is one file descriptor and one page cache on a
  512 MB Pi (per-thread connections would also need tracking to be closed).
* **WAL mode, ``synchronous=NORMAL``.** Readers in other processes (``pihub`` CLI
  commands) never block the daemon, and a commit is one append to the WAL instead of two
  fsyncs, which spares SD cards. A power cut may lose the last commits, never corrupt the
  file. ``busy_timeout`` is 5 s for writers in other processes.
* **0600 permissions.** The file is created with mode 0600 before SQLite opens it, and an
  existing file is tightened to 0600 (it will hold token hashes). SQLite creates the
  ``-wal``/``-shm`` files with the database file's mode. A missing parent directory is
  created with mode 0700.
* **Versioned schema, forward migrations only.** ``meta(key, value)`` holds
  ``schema_version``. :data:`MIGRATIONS` lists :class:`Migration` steps numbered 1, 2, 3...;
  opening a store applies each step newer than the file's version, each in its own
  transaction together with the version bump, so a failed step leaves the file at the
  previous version. A file whose version is newer than this pihub knows is refused rather
  than misread.

Adding a table: write ``_migrate_N(conn)`` that creates it with ``conn.execute`` (never
``executescript``, which commits on its own), append ``Migration(N, "summary", _migrate_N)``
to :data:`MIGRATIONS`, and add the methods to :class:`Store`. Never edit a migration that
has shipped. Schema 2 added users, API tokens, panel sessions and the setup code; the
policy around them (hashing, scopes, caching, rate limits) lives in :mod:`pihub.auth`, and
the store only keeps rows: it never sees a password, a token or a code, only their hashes.

Values are stored as JSON text: ``null``, bools, numbers, strings, lists and dicts with
string keys. NaN and infinities are refused (JSON has no spelling for them).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pihub.errors import StoreError, shorten

log = logging.getLogger("pihub.store")

#: Default database file name inside the work directory.
DB_NAME = "pihub.db"

# Stay well under SQLite's host-parameter limit (999 in old builds).
_CHUNK = 500

_T = TypeVar("_T")


@dataclass(frozen=True)
class Migration:
    """One forward step of the schema.

    Attributes:
        version: the schema version after this step (1, 2, 3... without gaps).
        summary: what the step adds, for logs and errors.
        apply: ``apply(conn)`` runs the step's statements with ``conn.execute``, inside a
            transaction the store opened; it MUST NOT commit (no ``executescript``).
    """

    version: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


def _migrate_1(conn: sqlite3.Connection) -> None:
    """Schema 1: persisted variables (``variable.set``/``get``/``unset``)."""
    conn.execute(
        "CREATE TABLE variables ("
        " name TEXT PRIMARY KEY NOT NULL,"
        " value TEXT NOT NULL,"  # JSON text
        " updated_at REAL NOT NULL"  # seconds since the epoch
        ")"
    )


def _migrate_2(conn: sqlite3.Connection) -> None:
    """Schema 2: users, API tokens, panel sessions, the one-time setup code.

    Secrets are never stored: ``password_hash`` is an argon2id PHC string, ``token_hash``
    and ``code_hash`` are 32-byte SHA-256 digests (see :mod:`pihub.auth` for why a fast hash
    is right there). Token and session ids are ``AUTOINCREMENT`` so an id is never reused:
    a revoked id named in a log or an ``on_revoke`` callback can never come back as
    another token. Deleting a user cascades to its tokens and sessions
    (``PRAGMA foreign_keys=ON`` is set on every connection).
    """
    conn.execute(
        "CREATE TABLE users ("
        " id INTEGER PRIMARY KEY,"
        " username TEXT NOT NULL UNIQUE,"
        " password_hash TEXT NOT NULL,"  # argon2id PHC string
        " scope TEXT NOT NULL CHECK (scope IN ('read', 'control', 'admin')),"
        " created_at REAL NOT NULL,"  # seconds since the epoch
        " password_changed_at REAL NOT NULL"
        ")"
    )
    conn.execute(
        "CREATE TABLE api_tokens ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
        " name TEXT NOT NULL,"
        " token_hash BLOB NOT NULL UNIQUE,"  # SHA-256 of the token; UNIQUE is the lookup index
        " scopes TEXT NOT NULL,"  # space-separated, expanded: 'read control'
        " created_at REAL NOT NULL,"
        " expires_at REAL,"  # NULL: never
        " last_used_at REAL,"  # written in batches, not per request
        " UNIQUE (user_id, name)"
        ")"
    )
    conn.execute("CREATE INDEX api_tokens_name ON api_tokens (name)")
    conn.execute(
        "CREATE TABLE sessions ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
        " token_hash BLOB NOT NULL UNIQUE,"  # SHA-256 of the session token
        " created_at REAL NOT NULL,"
        " expires_at REAL NOT NULL"
        ")"
    )
    conn.execute("CREATE INDEX sessions_expires_at ON sessions (expires_at)")
    conn.execute(
        "CREATE TABLE setup_code ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"  # at most one code at a time
        " code_hash BLOB NOT NULL,"  # SHA-256 of the normalised code
        " created_at REAL NOT NULL"
        ")"
    )


def _migrate_3(conn: sqlite3.Connection) -> None:
    """Schema 3: the rss backend's feeds (conditional-GET validators) and the entries it has
    announced, so a restart announces none twice. ``entry_key`` is the entry's id (or link,
    or a digest of its content) as :mod:`pihub.backends.rss` makes it, at most 256 chars."""
    conn.execute(
        "CREATE TABLE feeds ("
        " url TEXT PRIMARY KEY NOT NULL,"
        " etag TEXT,"
        " last_modified TEXT,"
        " polled_at REAL NOT NULL"  # seconds since the epoch, last successful poll
        ")"
    )
    conn.execute(
        "CREATE TABLE feed_entries ("
        " url TEXT NOT NULL REFERENCES feeds(url) ON DELETE CASCADE,"
        " entry_key TEXT NOT NULL,"
        " seen_at REAL NOT NULL,"  # last poll that saw it in the feed (pruning keeps the newest)
        " PRIMARY KEY (url, entry_key)"
        ") WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX feed_entries_seen ON feed_entries (url, seen_at)")


#: The schema's history; a store opens at ``MIGRATIONS[-1].version``.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "variables", _migrate_1),
    Migration(2, "users, api tokens, sessions, setup code", _migrate_2),
    Migration(3, "rss feeds and the entries seen", _migrate_3),
)


@dataclass(frozen=True, slots=True)
class UserRow:
    """One row of ``users``. ``password_hash`` is left out of the repr."""

    id: int
    username: str
    password_hash: str = field(repr=False)
    scope: str
    created_at: float


@dataclass(frozen=True, slots=True)
class TokenRow:
    """One row of ``api_tokens`` joined with its user (the hash is left out of the repr).

    Times are seconds since the epoch; ``scopes`` is the space-separated stored text.
    """

    id: int
    user_id: int
    username: str
    name: str
    token_hash: bytes = field(repr=False)
    scopes: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One row of ``sessions`` joined with its user (the hash is left out of the repr)."""

    id: int
    user_id: int
    username: str
    user_scope: str
    token_hash: bytes = field(repr=False)
    created_at: float
    expires_at: float


_TOKEN_SELECT = ("SELECT t.id, t.user_id, u.username, t.name, t.token_hash, t.scopes, t.created_at, "
                 "t.expires_at, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id")
_SESSION_SELECT = ("SELECT s.id, s.user_id, u.username, u.scope, s.token_hash, s.created_at, s.expires_at "
                   "FROM sessions s JOIN users u ON u.id = s.user_id")


def _encode(name: str, value: Any) -> str:
    """``value`` as compact JSON text.

    Raises:
        ValueError: the value is not JSON-serialisable, or holds text that is not valid
            UTF-8 (lone surrogates: a file name whose bytes are not UTF-8), naming the
            variable and the value (shortened).
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        text.encode("utf-8")  # SQLite stores UTF-8: a surrogate would fail later, as a bare codec error
        return text
    except UnicodeEncodeError:
        raise ValueError(f"variable {name!r}: value {shorten(value, 60)} is not valid UTF-8 text (it holds "
                         f"undecodable bytes, e.g. a file name that is not UTF-8)") from None
    except (TypeError, ValueError):
        raise ValueError(f"variable {name!r}: value must be JSON data (null, bool, number, str, list, "
                         f"dict with str keys), not {shorten(value, 60)}") from None


def _check_name(name: Any) -> str:
    """Return ``name`` if it is a non-empty str that is valid UTF-8 text.

    Raises:
        ValueError: otherwise, showing the name shortened (lone surrogates, from bytes that
            were not UTF-8, cannot be stored: SQLite keeps UTF-8).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"variable name must be a non-empty str, not {shorten(name, 60)}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"variable name {shorten(name, 60)} is not valid UTF-8 text (it holds undecodable "
                         f"bytes)") from None
    return name


class Store:
    """The SQLite store (see the module docstring for the design).

    Thread-safe: every method may be called from any thread.

    Args:
        path: the database file, usually ``<workdir>/pihub.db``; created if missing.
        migrations: the schema history to apply; tests pass shorter ones.

    Raises:
        StoreError: the file is not a SQLite database, its schema is newer than
            ``migrations`` knows, or a migration failed.
    """

    def __init__(self, path: str | os.PathLike[str], migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = Path(path)
        for i, m in enumerate(migrations, start=1):
            if m.version != i:
                raise ValueError(f"migration versions must be 1, 2, 3... in order; "
                                 f"position {i} has version {m.version}")
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._open()
        try:
            self._migrate(migrations)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    # -- lifecycle ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Create the file with mode 0600 if needed and connect in WAL mode.

        Raises:
            StoreError: the file cannot be created or is not a SQLite database.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open the store {str(self.path)!r}: {e.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("store %s: journal mode is %s, not wal (filesystem without shared memory?)",
                            self.path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"store {str(self.path)!r} is not a usable SQLite database: {e}") from None
        return conn

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        """Bring the file's schema up to ``migrations[-1].version``, one transaction per step.

        Raises:
            StoreError: the file's schema is newer, or a step failed.
        """
        conn = self._conn
        assert conn is not None
        latest = migrations[-1].version if migrations else 0
        with self._lock:
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT)")
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            except sqlite3.DatabaseError as e:
                raise StoreError(f"store {str(self.path)!r} is not a usable SQLite database: {e}") from None
            version = int(row[0]) if row else 0
            if version > latest:
                raise StoreError(f"store {str(self.path)!r} has schema version {version}, newer than "
                                 f"this pihub knows ({latest}): upgrade pihub or use another workdir")
            for m in migrations[version:]:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    m.apply(conn)
                    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(m.version),))
                    conn.execute("COMMIT")
                except Exception as e:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise StoreError(f"store {str(self.path)!r}: migration to schema version {m.version} "
                                     f"({m.summary}) failed: {e}") from e
                log.info("store %s: migrated to schema version %d (%s)", self.path, m.version, m.summary)

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        with self._lock:
            row = self._db().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the file; idempotent. Later calls of other methods raise :class:`StoreError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r}{'' if self._conn else ' closed'}>"

    def _db(self) -> sqlite3.Connection:
        """The connection; the caller holds the lock.

        Raises:
            StoreError: the store is closed.
        """
        if self._conn is None:
            raise StoreError(f"store {str(self.path)!r} is closed")
        return self._conn

    # -- variables ----------------------------------------------------------------------

    def get_variables(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Read variables.

        Args:
            names: the variables wanted; None for all of them.

        Returns:
            ``{name: value}`` for the names that exist (missing names are left out), in the
            order asked, or sorted by name when ``names`` is None.

        Raises:
            ValueError: a name is not a non-empty str.
        """
        if names is None:
            with self._lock:
                rows = self._db().execute("SELECT name, value FROM variables ORDER BY name").fetchall()
            return {n: json.loads(v) for n, v in rows}
        wanted = [_check_name(n) for n in names]
        found: dict[str, str] = {}
        with self._lock:
            db = self._db()
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(f"SELECT name, value FROM variables WHERE name IN ({marks})",
                                        chunk).fetchall())
        return {n: json.loads(found[n]) for n in wanted if n in found}

    def set_variables(self, values: Mapping[str, Any]) -> list[str]:
        """Create or replace variables, all or none.

        Args:
            values: ``{name: value}``; each value must be JSON data.

        Returns:
            The names whose stored value changed or was created, in ``values`` order.

        Raises:
            ValueError: a name is not a non-empty str or a value is not JSON data; nothing
                is written then.
        """
        encoded = [(_check_name(n), _encode(n, v)) for n, v in values.items()]
        if not encoded:
            return []
        now = time.time()
        changed: list[str] = []
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for name, text in encoded:
                    row = db.execute("SELECT value FROM variables WHERE name = ?", (name,)).fetchone()
                    if row is not None and row[0] == text:
                        continue
                    db.execute("INSERT INTO variables (name, value, updated_at) VALUES (?, ?, ?) "
                               "ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
                               "updated_at = excluded.updated_at", (name, text, now))
                    changed.append(name)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return changed

    def unset_variables(self, names: Iterable[str]) -> list[str]:
        """Delete variables; names that do not exist are ignored.

        Args:
            names: the variables to delete.

        Returns:
            The names actually removed, in the order given (each once).

        Raises:
            ValueError: a name is not a non-empty str; nothing is deleted then.
        """
        wanted = list(dict.fromkeys(_check_name(n) for n in names))
        removed: list[str] = []
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for name in wanted:
                    if db.execute("DELETE FROM variables WHERE name = ?", (name,)).rowcount:
                        removed.append(name)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return removed

    # -- users, api tokens, sessions, setup code (schema 2; policy in pihub.auth) --------

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(conn)`` in one ``BEGIN IMMEDIATE`` transaction under the lock.

        Returns:
            What ``fn`` returned, after the commit.

        Raises:
            StoreError: the store is closed. Whatever ``fn`` raised, after a rollback.
        """
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` of this connection (about 2 us, no disk read).

        The value changes when *another* connection (a ``pihub user``/``pihub token``
        command in another process) commits to the file, and never for this connection's
        own commits; :mod:`pihub.auth` polls it to drop its caches after such changes.
        """
        with self._lock:
            return int(self._db().execute("PRAGMA data_version").fetchone()[0])

    def user_count(self) -> int:
        """How many users exist."""
        with self._lock:
            return int(self._db().execute("SELECT count(*) FROM users").fetchone()[0])

    def get_user(self, username: str) -> UserRow | None:
        """The user named ``username``, or None."""
        with self._lock:
            row = self._db().execute("SELECT id, username, password_hash, scope, created_at FROM users "
                                     "WHERE username = ?", (username,)).fetchone()
        return UserRow(*row) if row else None

    def list_users(self) -> list[UserRow]:
        """Every user, by name."""
        with self._lock:
            rows = self._db().execute("SELECT id, username, password_hash, scope, created_at FROM users "
                                      "ORDER BY username").fetchall()
        return [UserRow(*r) for r in rows]

    def add_user(self, username: str, password_hash: str, scope: str, now: float) -> int:
        """Create a user.

        Args:
            username: the (already validated) name.
            password_hash: the argon2id PHC string.
            scope: ``read``, ``control`` or ``admin``.
            now: the creation time, seconds since the epoch.

        Returns:
            The new user's id.

        Raises:
            ValueError: a user of that name exists.
        """

        def add(db: sqlite3.Connection) -> int:
            if db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise ValueError(f"user {username!r} already exists")
            cur = db.execute("INSERT INTO users (username, password_hash, scope, created_at, "
                             "password_changed_at) VALUES (?, ?, ?, ?, ?)",
                             (username, password_hash, scope, now, now))
            return int(cur.lastrowid or 0)

        return int(self._write(add))

    def add_first_user(self, username: str, password_hash: str, scope: str, now: float,
                       check_code: Callable[[bytes | None], bool]) -> int | None:
        """Create the first user and delete the setup code, atomically.

        Args:
            username, password_hash, scope, now: as for :meth:`add_user`.
            check_code: called inside the transaction with the stored setup-code hash
                (None when there is none); the user is created only if it returns True.

        Returns:
            The new user's id; None (nothing written) when a user already exists or
            ``check_code`` refused.
        """

        def add(db: sqlite3.Connection) -> int | None:
            if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
                return None
            row = db.execute("SELECT code_hash FROM setup_code WHERE id = 1").fetchone()
            if not check_code(bytes(row[0]) if row else None):
                return None
            cur = db.execute("INSERT INTO users (username, password_hash, scope, created_at, "
                             "password_changed_at) VALUES (?, ?, ?, ?, ?)",
                             (username, password_hash, scope, now, now))
            db.execute("DELETE FROM setup_code")
            return int(cur.lastrowid or 0)

        return self._write(add)

    def set_password_hash(self, username: str, password_hash: str, now: float) -> list[int] | None:
        """Replace a user's password hash and delete all of its sessions.

        Returns:
            The ids of the deleted sessions; None when there is no such user.
        """

        def change(db: sqlite3.Connection) -> list[int] | None:
            row = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                       (password_hash, now, row[0]))
            ended = [r[0] for r in db.execute("SELECT id FROM sessions WHERE user_id = ?", (row[0],))]
            db.execute("DELETE FROM sessions WHERE user_id = ?", (row[0],))
            return ended

        return self._write(change)

    def update_password_hash(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        """Replace a password hash by a rehash of the same password (new KDF parameters).

        Only if the stored hash is still ``old_hash`` (a concurrent password change wins);
        sessions are kept. Returns True when the row was updated.
        """
        return bool(self._write(lambda db: db.execute(
            "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
            (new_hash, user_id, old_hash)).rowcount))

    def remove_user(self, username: str) -> list[int] | None:
        """Delete a user with its tokens and sessions.

        Returns:
            The ids of the deleted API tokens; None when there is no such user.
        """

        def remove(db: sqlite3.Connection) -> list[int] | None:
            row = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                return None
            ids = [r[0] for r in db.execute("SELECT id FROM api_tokens WHERE user_id = ? ORDER BY id",
                                            (row[0],))]
            db.execute("DELETE FROM users WHERE id = ?", (row[0],))  # cascades
            return ids

        return self._write(remove)

    def add_token(self, username: str, name: str, token_hash: bytes, scopes: str, now: float,
                  expires_at: float | None) -> TokenRow:
        """Store a new API token's hash.

        Args:
            username: the owner; must exist.
            name: the token's name, unique per user.
            token_hash: the 32-byte SHA-256 digest of the token.
            scopes: space-separated expanded scopes.
            now: creation time; expires_at: expiry time or None (seconds since the epoch).

        Returns:
            The stored row.

        Raises:
            LookupError: there is no such user.
            FileExistsError: the user already has a token of that name.
        """

        def add(db: sqlite3.Connection) -> TokenRow:
            row = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise LookupError(f"no such user {username!r}")
            if db.execute("SELECT 1 FROM api_tokens WHERE user_id = ? AND name = ?",
                          (row[0], name)).fetchone():
                raise FileExistsError(f"user {username!r} already has a token named {name!r}")
            cur = db.execute("INSERT INTO api_tokens (user_id, name, token_hash, scopes, created_at, "
                             "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                             (row[0], name, token_hash, scopes, now, expires_at))
            return TokenRow(int(cur.lastrowid or 0), row[0], username, name, token_hash, scopes, now,
                            expires_at, None)

        return self._write(add)

    def list_tokens(self, username: str | None = None) -> list[TokenRow]:
        """API tokens (of ``username``, or of everyone), by id."""
        with self._lock:
            if username is None:
                rows = self._db().execute(_TOKEN_SELECT + " ORDER BY t.id").fetchall()
            else:
                rows = self._db().execute(_TOKEN_SELECT + " WHERE u.username = ? ORDER BY t.id",
                                          (username,)).fetchall()
        return [TokenRow(r[0], r[1], r[2], r[3], bytes(r[4]), *r[5:]) for r in rows]

    def find_token_ids(self, *, token_id: int | None = None, name: str | None = None,
                       token_hash: bytes | None = None, username: str | None = None) -> list[int]:
        """Ids of the tokens matching every criterion given (by id, name, hash, owner)."""
        where, params = [], []
        for column, value in (("t.id", token_id), ("t.name", name), ("t.token_hash", token_hash),
                              ("u.username", username)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT t.id FROM api_tokens t JOIN users u ON u.id = t.user_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            return [r[0] for r in self._db().execute(sql + " ORDER BY t.id", params)]

    def delete_tokens(self, ids: Iterable[int]) -> list[int]:
        """Delete API tokens by id; returns the ids actually deleted, in the order given."""
        wanted = list(dict.fromkeys(ids))

        def delete(db: sqlite3.Connection) -> list[int]:
            return [i for i in wanted if db.execute("DELETE FROM api_tokens WHERE id = ?", (i,)).rowcount]

        return self._write(delete) if wanted else []

    def touch_tokens(self, used: Mapping[int, float]) -> None:
        """Record last-use times ``{token_id: time}`` in one transaction (never moves back)."""
        if not used:
            return
        self._write(lambda db: db.executemany(
            "UPDATE api_tokens SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?",
            [(t, i) for i, t in used.items()]))

    def add_session(self, username: str, token_hash: bytes, now: float, expires_at: float) -> SessionRow:
        """Store a new panel session's hash and delete expired sessions.

        Raises:
            LookupError: there is no such user.
        """

        def add(db: sqlite3.Connection) -> SessionRow:
            row = db.execute("SELECT id, scope FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise LookupError(f"no such user {username!r}")
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            cur = db.execute("INSERT INTO sessions (user_id, token_hash, created_at, expires_at) "
                             "VALUES (?, ?, ?, ?)", (row[0], token_hash, now, expires_at))
            return SessionRow(int(cur.lastrowid or 0), row[0], username, row[1], token_hash, now, expires_at)

        return self._write(add)

    def list_sessions(self, now: float) -> list[SessionRow]:
        """Sessions that have not expired at ``now``."""
        with self._lock:
            rows = self._db().execute(_SESSION_SELECT + " WHERE s.expires_at > ? ORDER BY s.id",
                                      (now,)).fetchall()
        return [SessionRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    def delete_session(self, token_hash: bytes) -> int | None:
        """Delete the session with that hash; its id, or None when there was none."""

        def delete(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT id FROM sessions WHERE token_hash = ?", (token_hash,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM sessions WHERE id = ?", (row[0],))
            return int(row[0])

        return self._write(delete)

    def setup_code_hash(self) -> bytes | None:
        """The stored setup-code hash, or None when there is none."""
        with self._lock:
            row = self._db().execute("SELECT code_hash FROM setup_code WHERE id = 1").fetchone()
        return bytes(row[0]) if row else None

    def set_setup_code(self, code_hash: bytes, now: float) -> bool:
        """Replace the setup-code hash, only while no user exists; True when stored."""

        def put(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
                return False
            db.execute("INSERT INTO setup_code (id, code_hash, created_at) VALUES (1, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET code_hash = excluded.code_hash, "
                       "created_at = excluded.created_at", (code_hash, now))
            return True

        return bool(self._write(put))

    # -- rss feeds (schema 3; policy in pihub.backends.rss) ------------------------------

    def feed_validators(self, url: str) -> tuple[str | None, str | None] | None:
        """``(etag, last_modified)`` of a feed polled before, or None for a feed never polled."""
        with self._lock:
            row = self._db().execute("SELECT etag, last_modified FROM feeds WHERE url = ?", (url,)).fetchone()
        return None if row is None else (row[0], row[1])

    def feed_seen(self, url: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are recorded as seen for the feed ``url``."""
        keys = list(keys)
        seen: set[str] = set()
        with self._lock:
            db = self._db()
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                seen.update(r[0] for r in db.execute(
                    f"SELECT entry_key FROM feed_entries WHERE url = ? AND entry_key IN ({marks})", (url, *chunk)))
        return seen

    def feed_record(self, url: str, keys: Iterable[str], etag: str | None, last_modified: str | None,
                    now: float, keep: int) -> None:
        """After a poll, in one transaction: store the validators, mark ``keys`` (every entry
        in the feed now) seen at ``now``, and forget all but the ``keep`` most recently seen
        entries of that feed (``keep`` >= ``len(keys)``, so an entry still in the feed is
        never forgotten and announced again)."""
        keys = list(keys)
        keep = max(keep, len(keys))

        def record(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO feeds (url, etag, last_modified, polled_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(url) DO UPDATE SET etag = excluded.etag, "
                       "last_modified = excluded.last_modified, polled_at = excluded.polled_at",
                       (url, etag, last_modified, now))
            db.executemany("INSERT INTO feed_entries (url, entry_key, seen_at) VALUES (?, ?, ?) "
                           "ON CONFLICT(url, entry_key) DO UPDATE SET seen_at = excluded.seen_at",
                           [(url, k, now) for k in keys])
            db.execute("DELETE FROM feed_entries WHERE url = ? AND entry_key NOT IN (SELECT entry_key FROM "
                       "feed_entries WHERE url = ? ORDER BY seen_at DESC LIMIT ?)", (url, url, keep))

        self._write(record)
