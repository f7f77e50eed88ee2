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

Adding users and tokens (a later issue): write ``_migrate_2(conn)`` that creates the
tables with ``conn.execute`` (never ``executescript``, which commits on its own), append
``Migration(2, "users and api tokens", _migrate_2)`` to :data:`MIGRATIONS`, and add the
methods to :class:`Store`. Never edit a migration that has shipped.

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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pihub.errors import PihubError

log = logging.getLogger("pihub.store")

#: Default database file name inside the work directory.
DB_NAME = "pihub.db"

# Stay well under SQLite's host-parameter limit (999 in old builds).
_CHUNK = 500


class StoreError(PihubError, RuntimeError):
    """The store cannot be opened, migrated or used (closed, not a database, too new)."""


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


#: The schema's history; a store opens at ``MIGRATIONS[-1].version``.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "variables", _migrate_1),
)


def _encode(name: str, value: Any) -> str:
    """``value`` as compact JSON text.

    Raises:
        ValueError: the value is not JSON-serialisable (naming the variable and the value).
    """
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"variable {name!r}: value must be JSON data (null, bool, number, str, list, "
                         f"dict with str keys), not {shown}") from None


def _check_name(name: Any) -> str:
    """Return ``name`` if it is a non-empty str.

    Raises:
        ValueError: otherwise.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"variable name must be a non-empty str, not {name!r}")
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
