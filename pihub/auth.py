"""Users, API tokens, panel sessions and the first-start setup code.

Who is who:

* A **user** has a name, an argon2id password hash and a scope. Users log in to the
  panel (a cookie session) and own API tokens. There is no open registration: the first
  user comes from ``pihub user add`` or from the one-time setup code the hub logs at
  first start (:meth:`Auth.ensure_setup_code` / :meth:`Auth.redeem_setup_code`).
* An **API token** (``ph_`` + 43 url-safe characters) belongs to a user and carries
  scopes; it is what phones, Tasker and scripts send (``Authorization: Bearer``).
* A **session** (``phs_`` + 43 characters) is the panel's cookie, with a CSRF token
  derived from it.
* The **env token** is a headless token the hub passes in (``PIHUB_API_TOKEN``); it
  authenticates as user ``__env__`` with every scope. The config's root ``token:``
  (Platypush's static token) is accepted the same way, as user ``__config__``.

Scopes are ordered, each including the ones before it: ``read`` (state, events),
``control`` (run actions, post events), ``admin`` (users, tokens, everything).
A :class:`Principal` carries the expanded set, so a route asks ``p.allows("control")``.

Cost model, and why:

* **Passwords** are low-entropy, so they get a memory-hard KDF, and only where a password
  is typed: :meth:`Auth.add_user`, :meth:`Auth.set_password`, :meth:`Auth.login`,
  :meth:`Auth.redeem_setup_code`. The parameters are argon2id with 12 MiB, 3 passes,
  1 lane: one of the settings OWASP lists as equivalent (19 MiB x 2 passes is its first;
  it has 46 MiB x 1 to 7 MiB x 5), chosen for a 512 MB Pi Zero 2 W: 7 MiB less per
  computation than 19 MiB x 2 for the same time (17 ms against 18 ms on this x86 box;
  a few hundred ms on a Pi), while keeping most of the memory hardness. Hashes stored
  with other parameters (pihub used 19 MiB x 2 before) still verify, since a hash
  carries its parameters, and are rewritten with the current ones at the next good
  login.
* **At most one argon2 computation runs at a time** (``kdf_concurrency``), and always on
  the same dedicated thread (``pihub-kdf``). The count bounds the peak, and the thread
  bounds what stays: glibc keeps a freed argon2 buffer in the malloc arena of the thread
  that used it, so when every HTTP worker thread ran argon2, each kept its own 19 MiB
  and a login flood grew the daemon from 38 to 210 MB, for good. Now the same flood
  leaves it at about 51 MB (one 12 MiB buffer kept), with or without
  ``MALLOC_ARENA_MAX=1``/``2`` (measured), so the systemd unit does not set it and a
  daemon started by hand is bounded too. A login that finds the
  computation busy waits in a short line (``kdf_queue`` callers, at most ``kdf_wait_s``
  seconds); beyond that it is refused with :class:`RateLimited` (``Retry-After: 1``)
  without any argon2 work, so a flood ties up a few HTTP threads, not all of them.
  Adding a user or changing a password waits its turn without a limit.
* A login for an unknown user verifies the password against a dummy hash with the
  current parameters: the same argon2 work and memory as a wrong password, so timing
  does not tell which names exist. The dummy is built from random bytes (no argon2 run
  to make it).
* **Tokens, sessions and the setup code** are 128 to 256 random bits from
  :mod:`secrets`, so they are stored as plain SHA-256 digests. A slow KDF exists to make
  guessing a *low-entropy* secret from its hash expensive; guessing 2**256 tokens is
  impossible at any hash speed, so a per-request PBKDF2 (the peer's 45 ms) buys nothing.
* :meth:`Auth.check_token` runs on every request: SHA-256 of the token, a dict lookup in
  an in-memory index of every live token (hash -> principal), ``hmac.compare_digest``,
  and one ``PRAGMA data_version`` (about 2 us) that tells whether another process (a
  ``pihub token revoke`` from a shell) changed the file, in which case the index is
  reloaded. Changes made through this object update the index directly. So a
  revocation, from here or from the CLI, takes effect on the very next check, and a
  check never reads a table. ``last_used_at`` is kept in memory and written once a
  minute (and by :meth:`Auth.flush`/:meth:`Auth.close`).
* Failed logins are counted in memory, per client address (IPv6 per /64) and for the
  whole hub: after ``max_failures`` (5) from one address, or ``max_failures_total`` (50)
  from all addresses together, within ``window_s`` seconds (300), :meth:`Auth.login`
  raises :class:`RateLimited` without doing any argon2 work. The hub-wide budget is what
  stops many source addresses (a botnet, or one IPv6 host's many /64s) from guessing
  5 times each; its price is that during such an attack password logins are refused for
  everyone, while API tokens and open sessions keep working. An attempt is counted when
  it starts, in the same locked step as the check, and taken back when it succeeds or
  is turned away as busy: so simultaneous attempts cannot all pass the check before any
  of them fails (32 at once let 12 through when failures were counted at the end). A
  successful login does not clear the count: otherwise an attacker holding one valid
  account could interleave its logins with guesses at other accounts' passwords and
  never be limited.

Use one :class:`Auth` per :class:`~pihub.store.Store`. Every method is thread-safe.
Secrets (passwords, tokens, session and CSRF tokens, setup codes) never appear in logs,
exception messages or reprs; the plain setup code is returned to the hub, which logs it
once on purpose because that is how the owner gets it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pihub.errors import AuthFailed, RateLimited, StoreError, TokenNameExists
from pihub.store import SessionRow, Store, TokenRow

if TYPE_CHECKING:
    from argon2 import PasswordHasher

log = logging.getLogger("pihub.auth")

#: Every scope, ordered: each includes the ones before it.
SCOPES: tuple[str, ...] = ("read", "control", "admin")
#: Prefix of API tokens (so they are recognisable in configs and by secret scanners).
TOKEN_PREFIX = "ph_"
#: Prefix of panel session tokens.
SESSION_PREFIX = "phs_"
#: Random bytes in an API or session token: 256 bits (43 url-safe characters).
TOKEN_BYTES = 32
#: Random bytes in the setup code: 128 bits (32 hex digits).
SETUP_CODE_BYTES = 16
#: The user name the env token authenticates as (not a valid name for a real user).
ENV_USERNAME = "__env__"
#: the user the config's root ``token:`` authenticates as
CONFIG_USERNAME = "__config__"
#: Session lifetime, seconds: 12 h, or 30 days with ``remember``.
SESSION_TTL_S = 12 * 3600.0
REMEMBER_TTL_S = 30 * 86400.0
#: Longest token/session string looked at; longer ones are rejected without hashing.
MAX_TOKEN_CHARS = 512
#: Password length bounds, characters.
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 4096
#: Longest token expiry, days (100 years).
MAX_EXPIRES_DAYS = 36500.0

#: argon2id parameters of new hashes: memory in KiB (12 MiB), passes, lanes (see the
#: module docstring for the choice).
ARGON2_MEMORY_KIB = 12288
ARGON2_TIME_COST = 3
ARGON2_PARALLELISM = 1

_USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_DIGITS_RE = re.compile(r"[0-9]+")
_CSRF_LABEL = b"pihub csrf v1"


#: :attr:`RateLimited.reason` values.
LIMIT_ADDRESS = "too many failed logins from this address"
LIMIT_TOTAL = "too many failed logins on this hub"
LIMIT_BUSY = "too many logins in progress"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as.

    Attributes:
        username: the user (``__env__`` for the env token).
        scopes: the expanded scopes (``admin`` -> ``{"read", "control", "admin"}``).
        via: how it authenticated: ``"token"``, ``"session"``, ``"env"``, ``"setup"``
            (redeemed the setup code) or ``"password"`` (:meth:`Auth.login`).
        token_id: the API token's id when ``via == "token"``.
        session_id: the session's id when ``via == "session"``.
    """

    username: str
    scopes: frozenset[str]
    via: str
    token_id: int | None = None
    session_id: int | None = None

    def allows(self, scope: str) -> bool:
        """True when the principal holds ``scope``.

        Raises:
            ValueError: ``scope`` is not one of :data:`SCOPES` (a typo in a route).
        """
        if scope in self.scopes:
            return True
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        return False


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown about an API token (never the token itself).

    Attributes:
        id: the token's id (never reused).
        name: its name, unique per user.
        username: its owner.
        scopes: the expanded scopes, in :data:`SCOPES` order.
        created_at, expires_at, last_used_at: seconds since the epoch; ``expires_at`` None
            means never, ``last_used_at`` None means not used yet (it lags by up to a
            minute in other processes: it is written in batches).
    """

    id: int
    name: str
    username: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    last_used_at: float | None


def expand_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """The scopes implied by ``scopes``: ``["control"]`` -> ``("read", "control")``.

    Args:
        scopes: one scope name, or several (the highest wins).

    Raises:
        ValueError: empty, or a name that is not one of :data:`SCOPES`.
    """
    names = [scopes] if isinstance(scopes, str) else list(scopes)
    if not names:
        raise ValueError(f"scopes must name at least one of {', '.join(SCOPES)}")
    top = -1
    for name in names:
        if name not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {name!r}")
        top = max(top, SCOPES.index(name))
    return SCOPES[:top + 1]


def csrf_ok(expected: str, given: str | None) -> bool:
    """Constant-time check of a CSRF token from a request against the session's.

    Args:
        expected: the CSRF token :meth:`Auth.check_session` returned.
        given: the ``X-CSRF-Token`` header or form field; None when missing.
    """
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"),
                               given.encode("utf-8", "surrogatepass"))


def _digest(secret: str) -> bytes:
    """SHA-256 of a token, session token or normalised setup code (32 bytes)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _csrf_for(session_token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session token.

    Derived rather than stored: nothing more to keep, and knowing a CSRF token (it is
    sent in pages and headers) reveals nothing about the session token it came from.
    """
    mac = hmac.new(session_token.encode("utf-8", "surrogatepass"), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def _normalise_code(code: str) -> str:
    """A setup code as typed (any case, dashes, spaces) -> 32 lower-case hex digits."""
    return re.sub(r"[\s-]+", "", code).lower()


def _ip_key(ip: str) -> str:
    """The rate-limit bucket of a client address: the address, or its /64 for IPv6.

    One IPv6 host usually owns a whole /64, so counting per address would let it rotate
    through 2**64 of them. IPv4-mapped IPv6 addresses count as their IPv4 address.
    Strings that are not addresses (a UNIX socket peer) are their own bucket.
    """
    try:
        addr = ipaddress.ip_address(str(ip).split("%", 1)[0])
    except ValueError:
        return str(ip)[:100]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def check_username(username: object) -> str:
    """Return ``username`` if it is a valid user name.

    Valid: 1..64 characters of ``a-z 0-9 _ . -``, starting with a letter or digit (so
    names such as ``__env__`` stay reserved for pihub itself).

    Raises:
        ValueError: otherwise, naming the value.
    """
    if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username):
        raise ValueError(f"username must be 1..64 characters of a-z 0-9 _ . - starting with a letter or "
                         f"digit, not {username!r}")
    return username


def check_password(password: object) -> str:
    """Return ``password`` if it is acceptable: a str of 8..4096 characters.

    Raises:
        ValueError: otherwise; the message gives the length, never the password.
    """
    if not isinstance(password, str):
        # ValueError, not TypeError: it comes from a client (JSON), and callers map ValueError to 400
        raise ValueError(f"password must be a str, not {type(password).__name__}")  # noqa: TRY004
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValueError(f"password must be {MIN_PASSWORD_CHARS}..{MAX_PASSWORD_CHARS} characters, "
                         f"not {len(password)}")
    return password


def _check_token_name(name: object) -> str:
    """Return a valid API token name: 1..64 printable characters, not all digits, not
    starting with the token prefix (so ``revoke ID_OR_NAME`` is never ambiguous).

    Raises:
        ValueError: otherwise.
    """
    if (not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isprintable()
            or name != name.strip()):
        raise ValueError(f"token name must be 1..64 printable characters without surrounding spaces, "
                         f"not {name!r}")
    if _DIGITS_RE.fullmatch(name):
        raise ValueError(f"token name must not be all digits (those are ids), not {name!r}")
    if name.startswith(TOKEN_PREFIX):
        raise ValueError(f"token name must not start with {TOKEN_PREFIX!r} (that is how tokens start), "
                         f"not {name!r}")
    return name


def _expires_at(now: float, expires_days: float | None) -> float | None:
    """``now + expires_days`` days, in seconds since the epoch; None for never.

    Raises:
        ValueError: ``expires_days`` is not a number in (0, 36500].
    """
    if expires_days is None:
        return None
    if (isinstance(expires_days, bool) or not isinstance(expires_days, (int, float))
            or not math.isfinite(expires_days) or not 0 < expires_days <= MAX_EXPIRES_DAYS):
        raise ValueError(f"expires_days must be a number in (0, {MAX_EXPIRES_DAYS:g}] or None, "
                         f"not {expires_days!r}")
    return now + float(expires_days) * 86400.0


def _when(ts: float) -> str:
    """Seconds since the epoch as local ``YYYY-MM-DD HH:MM``."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _token_info(row: TokenRow, last_used: float | None = None) -> TokenInfo:
    """The public view of a token row, with a fresher in-memory ``last_used`` if any."""
    scopes = tuple(s for s in SCOPES if s in row.scopes.split())
    used = row.last_used_at
    if last_used is not None and (used is None or last_used > used):
        used = last_used
    return TokenInfo(row.id, row.name, row.username, scopes, row.created_at, row.expires_at, used)


@dataclass(frozen=True, slots=True)
class _TokenEntry:
    """An indexed live token."""

    digest: bytes
    principal: Principal
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class _SessionEntry:
    """An indexed live session."""

    digest: bytes
    principal: Principal
    expires_at: float


_T = TypeVar("_T")


class _Busy(Exception):
    """The argon2 gate's waiting line was full, or the wait ran out."""


class _KdfGate:
    """At most ``slots`` argon2 computations at once, run on ``slots`` dedicated threads.

    A caller takes a slot (waiting its turn), hands the computation to the pool and blocks
    for its result: holding a slot means a pool thread is idle, so the work starts at
    once. The pool's threads are the only ones that ever run argon2, which is what bounds
    the memory glibc keeps (see the module docstring). The pool is made on first use and
    stopped by :meth:`close` (and made again if used after that).
    """

    def __init__(self, slots: int, max_waiting: int, max_wait_s: float) -> None:
        self._slots, self._max_waiting, self._max_wait_s = slots, max_waiting, max_wait_s
        self._cond = threading.Condition(threading.Lock())
        self._running = 0
        self._waiting = 0
        self._pool: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[..., _T], *args: Any, bounded: bool) -> _T:
        """``fn(*args)`` on a KDF thread once a slot is free; its result or exception.

        Args:
            bounded: wait only if fewer than ``max_waiting`` callers are already waiting,
                and at most ``max_wait_s`` seconds; False: wait as long as it takes.

        Raises:
            _Busy: ``bounded``, and the line was full or the wait ran out; ``fn`` did not run.
        """
        with self._cond:
            if bounded and self._running >= self._slots and self._waiting >= self._max_waiting:
                raise _Busy
            self._waiting += 1
            try:
                free = self._cond.wait_for(lambda: self._running < self._slots,
                                           self._max_wait_s if bounded else None)
            finally:
                self._waiting -= 1
            if not free:
                raise _Busy
            self._running += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._slots, thread_name_prefix="pihub-kdf")
            pool = self._pool
        try:
            return pool.submit(fn, *args).result()
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify()

    def close(self) -> None:
        """Stop the pool's threads once the computations in progress are done."""
        with self._cond:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _unmatchable_hash(hasher: PasswordHasher) -> str:
    """An encoded argon2 hash with ``hasher``'s parameters that no password matches.

    Salt and digest are random bytes, so making it costs no argon2 run, while verifying a
    password against it costs exactly what verifying against a real hash made by
    ``hasher`` costs (same type, memory, passes and lanes), then fails: a match would need
    a password whose argon2 digest equals ``hash_len`` random bytes.
    """
    from argon2.low_level import ARGON2_VERSION

    def b64(n: int) -> str:
        return base64.b64encode(secrets.token_bytes(n)).rstrip(b"=").decode("ascii")

    return (f"$argon2{hasher.type.name.lower()}$v={ARGON2_VERSION}$m={hasher.memory_cost},"
            f"t={hasher.time_cost},p={hasher.parallelism}${b64(hasher.salt_len)}${b64(hasher.hash_len)}")


class Auth:
    """Users, tokens, sessions, setup code and login rate limits over a :class:`Store`.

    Args:
        store: the open store (schema 2 or later).
        env_token: the headless token (``PIHUB_API_TOKEN``), or None/empty for none. Only
            its SHA-256 is kept.
        config_token: the config's root ``token:`` (Platypush's static token), or None/empty
            for none; it acts as the env token does, as user ``__config__``.
        max_failures: failed logins allowed per address within ``window_s``, >= 1.
        max_failures_total: failed logins allowed from all addresses together within
            ``window_s``, >= 1 (the hub-wide budget).
        window_s: the rate-limit window, seconds, > 0.
        clock: seconds since the epoch (injected by tests); used for expiry, the
            rate-limit window and the ``last_used_at`` batching.
        hasher: the argon2 hasher; None for argon2id with the module's ``ARGON2_*``
            parameters (12 MiB, t=3, p=1). Tests pass a cheaper or an instrumented one.
        flush_interval_s: how often, seconds, token last-use times are written.
        max_tracked_addresses: addresses whose failures are remembered; the oldest are
            forgotten beyond this, so spoofed sources cannot grow memory without bound.
        kdf_concurrency: argon2 computations allowed at once, each on its own dedicated
            thread (12 MiB each with the default hasher), >= 1.
        kdf_queue: logins allowed to wait for a computation slot, >= 0; more are refused
            at once with :class:`RateLimited` (:data:`LIMIT_BUSY`).
        kdf_wait_s: the longest a login waits for a slot, seconds, > 0.

    Raises:
        ValueError: a bound is out of range.
    """

    def __init__(self, store: Store, *, env_token: str | None = None, config_token: str | None = None,
                 max_failures: int = 5,
                 max_failures_total: int = 50, window_s: float = 300.0,
                 clock: Callable[[], float] = time.time, hasher: PasswordHasher | None = None,
                 flush_interval_s: float = 60.0, max_tracked_addresses: int = 10_000,
                 kdf_concurrency: int = 1, kdf_queue: int = 3, kdf_wait_s: float = 2.0) -> None:
        for name, value, least in (("max_failures", max_failures, 1), ("max_failures_total", max_failures_total, 1),
                                   ("max_tracked_addresses", max_tracked_addresses, 1),
                                   ("kdf_concurrency", kdf_concurrency, 1), ("kdf_queue", kdf_queue, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, not {value!r}")
        for name, seconds in (("window_s", window_s), ("kdf_wait_s", kdf_wait_s)):
            if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                    or not 0 < seconds < math.inf):
                raise ValueError(f"{name} must be a number of seconds > 0, not {seconds!r}")
        self._store = store
        self._clock = clock
        # argon2 is imported on first use: the daemon only needs it at login (saves ~1.5 MB RSS)
        self._hasher_given = hasher
        self._kdf = _KdfGate(kdf_concurrency, kdf_queue, float(kdf_wait_s))
        self._max_failures = max_failures
        self._max_total = max_failures_total
        # every counted attempt in the window, all addresses: the hub-wide budget (under _lock)
        self._recent: deque[float] = deque()
        self._window_s = float(window_s)
        self._flush_interval_s = float(flush_interval_s)
        self._max_addresses = max_tracked_addresses
        self._env_digest = _digest(env_token) if env_token else None
        if env_token and len(env_token) < 16:
            log.warning("the env api token is shorter than 16 characters: use a random one "
                        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        self._env_principal = Principal(ENV_USERNAME, frozenset(SCOPES), "env")
        self._config_digest = _digest(config_token) if config_token else None
        if config_token and len(config_token) < 16:
            log.warning("the config's token: is shorter than 16 characters: use a random one "
                        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        self._config_principal = Principal(CONFIG_USERNAME, frozenset(SCOPES), "env")

        self._lock = threading.Lock()
        # the complete index of live tokens and sessions; None until the first check
        self._tokens: dict[bytes, _TokenEntry] | None = None
        self._sessions: dict[bytes, _SessionEntry] | None = None
        self._version: int | None = None
        self._next_expiry = math.inf
        self._used: dict[int, float] = {}
        self._last_flush = clock()
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._callbacks: list[Callable[[int], None]] = []
        self._session_callbacks: list[Callable[[int], None]] = []
        # ids of sessions that ended and were not yet reported to on_session_end (under _lock)
        self._ended_sessions: list[int] = []
        self._setup_code: str | None = None
        self._dummy_hash: str | None = None

    def __repr__(self) -> str:
        env = "set" if self._env_digest else "unset"
        return f"<Auth store={str(self._store.path)!r} env_token={env}>"

    # -- users ----------------------------------------------------------------------------

    def user_count(self) -> int:
        """How many users exist (0 means the hub answers 412 and offers the setup code)."""
        return self._store.user_count()

    def has_user(self, username: str) -> bool:
        """True when a user of that name exists."""
        return isinstance(username, str) and self._store.get_user(username) is not None

    def add_user(self, username: str, password: str, *, scope: str = "admin") -> None:
        """Create a user (runs argon2 once).

        Args:
            username: see :func:`check_username`.
            password: 8..4096 characters.
            scope: the user's highest scope; its sessions get it and its tokens may not
                exceed it. ``admin`` by default: like the peer, a user is the hub's owner
                unless said otherwise.

        Raises:
            ValueError: a bad name, password or scope, or the user exists.
        """
        check_username(username)
        check_password(password)
        top = expand_scopes(scope)[-1]
        if self._store.get_user(username) is not None:
            raise ValueError(f"user {username!r} already exists")
        self._store.add_user(username, self._hash(password), top, self._clock())
        log.info("user %r added (scope %s)", username, top)

    def set_password(self, username: str, password: str) -> None:
        """Replace a user's password (runs argon2 once) and end all of its sessions.

        API tokens stay valid: they are independent credentials, revoked on their own.

        Raises:
            ValueError: a bad password, or no such user.
        """
        check_password(password)
        if not isinstance(username, str) or self._store.get_user(username) is None:
            raise ValueError(f"no such user {username!r}")
        hashed = self._hash(password)
        with self._lock:
            ended = self._store.set_password_hash(username, hashed, self._clock())
            if ended is None:
                raise ValueError(f"no such user {username!r}")
            self._drop_sessions(username)
        log.info("password of user %r changed; %d session(s) ended", username, len(ended))
        self._report_ended_sessions()

    def remove_user(self, username: str) -> None:
        """Delete a user with its API tokens (``on_revoke`` fires for each) and sessions.

        Raises:
            ValueError: no such user.
        """
        with self._lock:
            ids = self._store.remove_user(username) if isinstance(username, str) else None
            if ids is None:
                raise ValueError(f"no such user {username!r}")
            self._drop_tokens(set(ids))
            self._drop_sessions(username)
        log.info("user %r removed with %d api token(s)", username, len(ids))
        self._fire(ids)
        self._report_ended_sessions()

    def login(self, username: str, password: str, *, ip: str) -> Principal:
        """Check a user's password (runs argon2 once, whether or not the user exists).

        The attempt counts toward both failure limits from the moment it is let in (see
        the module docstring); a success or a :data:`LIMIT_BUSY` refusal takes it back.

        Args:
            username, password: as typed.
            ip: the client address, for the per-address failure count.

        Returns:
            The user, ``via="password"``; the caller then makes a session or a token.

        Raises:
            RateLimited: ``max_failures`` attempts from that address, or
                ``max_failures_total`` from all addresses, within ``window_s``; or the
                password check is busy and its line full (``kdf_queue``) or the wait
                exceeded ``kdf_wait_s``. No password work is done then.
            AuthFailed: ``"invalid credentials"``, the same for an unknown user and a
                wrong password (it is also a :class:`PermissionError`).
        """
        key = _ip_key(ip)
        admitted_at, n, total = self._admit(key, self._clock())
        user = None
        if isinstance(username, str) and _USERNAME_RE.fullmatch(username):
            user = self._store.get_user(username)
        ok = False
        if isinstance(password, str) and len(password) <= MAX_PASSWORD_CHARS:
            # an unknown user is checked against a hash no password matches: the same work
            stored = user.password_hash if user is not None else self._unmatchable()
            try:
                ok = self._kdf.run(self._verify, stored, password, bounded=True)
            except _Busy:
                self._take_back(key, admitted_at)
                log.warning("login from %s refused: %s", key, LIMIT_BUSY)
                raise RateLimited(1, LIMIT_BUSY) from None
        if not ok or user is None:
            # refusals are logged at debug level: under a flood, one line per failure is plenty
            log.warning("failed login from %s (%d of %d allowed from it, %d of %d from all addresses, "
                        "in %g s)", key, n, self._max_failures, total, self._max_total, self._window_s)
            raise AuthFailed("invalid credentials")
        self._take_back(key, admitted_at)
        self._maybe_rehash(user.id, user.password_hash, password)
        log.info("user %r logged in from %s", user.username, key)
        return Principal(user.username, frozenset(expand_scopes(user.scope)), "password")

    # -- api tokens -----------------------------------------------------------------------

    def create_token(self, username: str, *, name: str | None = None, scopes: Sequence[str] = ("control",),
                     expires_days: float | None = None) -> tuple[str, TokenInfo]:
        """Create an API token; the plain token is returned here and never again.

        The token is ``ph_`` + :func:`secrets.token_urlsafe` of 32 bytes: 256 random bits,
        46 characters. Only its SHA-256 is stored.

        Args:
            username: the owner; must exist.
            name: unique per user; None for ``<username>-<8 hex digits>``.
            scopes: the scopes (the highest wins); may not exceed the user's own scope.
            expires_days: lifetime in days, in (0, 36500]; None for never.

        Returns:
            ``(token, info)``.

        Raises:
            ValueError: no such user, a bad name/scope/expiry, or a scope above the user's.
            TokenNameExists: the user has a token of that name (a ValueError too).
        """
        expanded = expand_scopes(scopes)
        now = self._clock()
        expires_at = _expires_at(now, expires_days)
        user = self._store.get_user(username) if isinstance(username, str) else None
        if user is None:
            raise ValueError(f"no such user {username!r}")
        if SCOPES.index(expanded[-1]) > SCOPES.index(user.scope):
            raise ValueError(f"token scope {expanded[-1]!r} is above the scope of user {username!r} "
                             f"({user.scope!r})")
        name = _check_token_name(name if name is not None else f"{username}-{secrets.token_hex(4)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        digest = _digest(token)
        with self._lock:
            try:
                row = self._store.add_token(username, name, digest, " ".join(expanded), now, expires_at)
            except FileExistsError as e:
                raise TokenNameExists(str(e)) from None
            except LookupError as e:
                raise ValueError(str(e)) from None
            if self._tokens is not None:
                principal = Principal(username, frozenset(expanded), "token", token_id=row.id)
                self._tokens[digest] = _TokenEntry(digest, principal, expires_at)
                if expires_at is not None:
                    self._next_expiry = min(self._next_expiry, expires_at)
        log.info("api token %d (%r) created for user %r, scope %s, expires %s", row.id, name, username,
                 expanded[-1], "never" if expires_at is None else _when(expires_at))
        return token, _token_info(row)

    def list_tokens(self, username: str | None = None) -> list[TokenInfo]:
        """Every API token of ``username`` (of everyone when None), by id; no secrets."""
        with self._lock:
            used = dict(self._used)
        return [_token_info(r, used.get(r.id)) for r in self._store.list_tokens(username)]

    def revoke_token(self, token: int | str, *, username: str | None = None) -> bool:
        """Revoke an API token; the next check refuses it and ``on_revoke`` fires.

        Args:
            token: the id (an int, or a str of digits), the name, or the token itself.
            username: only revoke a token of this user (a non-admin revoking its own).

        Returns:
            False when nothing matched.

        Raises:
            ValueError: a name used by several users and no ``username`` given, or a
                ``token`` that is neither int nor str.
        """
        if isinstance(token, bool) or not isinstance(token, (int, str)):
            raise ValueError(  # noqa: TRY004 (client input: callers map ValueError to 400)
                f"token must be an id (int) or a name, not {type(token).__name__}")
        if isinstance(token, int):
            ids = self._store.find_token_ids(token_id=token, username=username)
            shown = f"id {token}"
        elif _DIGITS_RE.fullmatch(token):
            ids = self._store.find_token_ids(token_id=int(token), username=username)
            shown = f"id {token}"
        elif token.startswith(TOKEN_PREFIX):
            ids = self._store.find_token_ids(token_hash=_digest(token), username=username)
            shown = "given by value"
        else:
            ids = self._store.find_token_ids(name=token, username=username)
            shown = f"named {token!r}"
            if len(ids) > 1:
                raise ValueError(f"{len(ids)} users have a token named {token!r}: revoke it by id or give "
                                 f"the username")
        if not ids:
            return False
        with self._lock:
            gone = self._store.delete_tokens(ids)
            self._drop_tokens(set(gone))
            for i in gone:
                self._used.pop(i, None)
        if gone:
            log.info("api token %s revoked (id %s)", shown, ", ".join(map(str, gone)))
            self._fire(gone)
        return bool(gone)

    def check_token(self, token: str) -> Principal | None:
        """The principal of an API token or of the env token; None when it is not valid.

        The hot path: one SHA-256, one dict lookup, ``hmac.compare_digest`` and one
        ``PRAGMA data_version``; no table is read (see the module docstring). The dict
        lookup compares digests in variable time, which is safe: it can only reveal
        something about the SHA-256 of the attacker's own guess, nothing about a stored
        token.

        Args:
            token: from ``Authorization: Bearer``, ``X-Token`` or the first websocket
                message. Anything that is not a str of at most 512 characters is None.

        Raises:
            StoreError: the store is closed (the hub is stopping).
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = _digest(token)
        if self._env_digest is not None and hmac.compare_digest(digest, self._env_digest):
            return self._env_principal
        if self._config_digest is not None and hmac.compare_digest(digest, self._config_digest):
            return self._config_principal
        if not token.startswith(TOKEN_PREFIX):
            return None
        now = self._clock()
        principal = None
        with self._lock:
            gone = self._sync(now)
            assert self._tokens is not None
            entry = self._tokens.get(digest)
            if (entry is not None and hmac.compare_digest(entry.digest, digest)
                    and (entry.expires_at is None or now < entry.expires_at)):
                principal = entry.principal
                self._used[entry.principal.token_id or 0] = now
            due = now - self._last_flush >= self._flush_interval_s
        if gone:
            self._fire(gone)
        if due:
            self.flush()
        return principal

    # -- panel sessions -------------------------------------------------------------------

    def create_session(self, username: str, *, remember: bool = False) -> tuple[str, str]:
        """Start a panel session for ``username`` (after :meth:`login` or setup).

        Args:
            remember: 30 days instead of 12 hours.

        Returns:
            ``(session_token, csrf_token)``: the session token goes in an ``HttpOnly;
            SameSite=Strict`` cookie, the CSRF token in the page, to come back in an
            ``X-CSRF-Token`` header on state-changing requests (see :func:`csrf_ok`).

        Raises:
            ValueError: no such user.
        """
        now = self._clock()
        expires_at = now + (REMEMBER_TTL_S if remember else SESSION_TTL_S)
        token = SESSION_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        digest = _digest(token)
        with self._lock:
            try:
                row = self._store.add_session(username, digest, now, expires_at)
            except LookupError as e:
                raise ValueError(str(e)) from None
            if self._sessions is not None:
                self._expire_sessions(now)
                self._sessions[digest] = self._session_entry(row)
        log.info("session %d started for user %r (%s)", row.id, username, "30 days" if remember else "12 h")
        self._report_ended_sessions()
        return token, _csrf_for(token)

    def check_session(self, session_token: str) -> tuple[Principal, str] | None:
        """The principal and CSRF token of a live session; None when it is not valid.

        Same cost as :meth:`check_token`, plus one HMAC for the CSRF token.
        """
        if (not isinstance(session_token, str) or not session_token.startswith(SESSION_PREFIX)
                or len(session_token) > MAX_TOKEN_CHARS):
            return None
        digest = _digest(session_token)
        now = self._clock()
        principal = None
        with self._lock:
            gone = self._sync(now)
            assert self._sessions is not None
            entry = self._sessions.get(digest)
            if entry is not None and hmac.compare_digest(entry.digest, digest):
                if now < entry.expires_at:
                    principal = entry.principal
                else:
                    del self._sessions[digest]
                    self._ended_sessions.append(entry.principal.session_id or 0)
        if gone:
            self._fire(gone)
        self._report_ended_sessions()
        return (principal, _csrf_for(session_token)) if principal is not None else None

    def end_session(self, session_token: str) -> None:
        """End a session (logout); unknown or malformed tokens are ignored."""
        if not isinstance(session_token, str) or not session_token.startswith(SESSION_PREFIX):
            return
        digest = _digest(session_token)
        with self._lock:
            sid = self._store.delete_session(digest)
            if self._sessions is not None:
                self._sessions.pop(digest, None)
            if sid is not None:
                self._ended_sessions.append(sid)
        if sid is not None:
            log.info("session %d ended", sid)
        self._report_ended_sessions()

    # -- first start ----------------------------------------------------------------------

    def ensure_setup_code(self) -> str | None:
        """The one-time setup code while no user exists; None once one does.

        The code is 128 random bits as 32 hex digits in four dash-separated groups. It
        is made on the first call of this object (each start of the hub: a code that
        nobody can read any more would be useless, so a restart replaces it), stored only
        as SHA-256, and the same plain code is returned by later calls until it is
        redeemed, so the hub can log it. Log it once, at start.
        """
        with self._lock:
            if self._store.user_count():
                self._setup_code = None
                return None
            if self._setup_code is None:
                raw = secrets.token_hex(SETUP_CODE_BYTES)
                code = "-".join(raw[i:i + 8] for i in range(0, len(raw), 8))
                if not self._store.set_setup_code(_digest(_normalise_code(code)), self._clock()):
                    return None
                self._setup_code = code
            return self._setup_code

    def redeem_setup_code(self, code: str, username: str, password: str) -> Principal:
        """Create the first user (scope ``admin``) with the setup code; the code then dies.

        The code is compared before any argon2 work, so wrong codes cost nothing. Case,
        spaces and dashes in the code do not matter.

        Returns:
            The new user, ``via="setup"``.

        Raises:
            ValueError: a bad username or password (the code stays valid).
            AuthFailed: a wrong code, no code pending, or a user already exists.
        """
        check_username(username)
        check_password(password)
        if not isinstance(code, str) or len(code) > 200:
            raise AuthFailed("invalid setup code")
        digest = _digest(_normalise_code(code))

        def matches(stored: bytes | None) -> bool:
            return stored is not None and hmac.compare_digest(stored, digest)

        if self._store.user_count() or not matches(self._store.setup_code_hash()):
            raise AuthFailed("invalid setup code")
        hashed = self._hash(password)
        if self._store.add_first_user(username, hashed, "admin", self._clock(), matches) is None:
            raise AuthFailed("invalid setup code")
        with self._lock:
            self._setup_code = None
        log.info("setup code redeemed: first user %r created (scope admin)", username)
        return Principal(username, frozenset(SCOPES), "setup")

    # -- housekeeping ---------------------------------------------------------------------

    def on_revoke(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(token_id)`` whenever a token stops being valid.

        That is: :meth:`revoke_token`, :meth:`remove_user`, a revocation by another
        process (noticed at the next check or :meth:`refresh`), or expiry (noticed at
        the next check or :meth:`refresh` after it). Callbacks run on the thread that
        noticed, outside any lock; they must be quick (hand off to an event loop) and
        an exception is logged, not raised.
        """
        with self._lock:
            self._callbacks.append(callback)

    def on_session_end(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(session_id)`` whenever a panel session stops being valid.

        That is: :meth:`end_session` (logout), :meth:`set_password` and :meth:`remove_user`
        (all of that user's sessions), expiry (noticed by :meth:`refresh`, or when the
        session is checked or another one is created), and a removal by another process
        (``pihub user remove``/``passwd``, noticed when the index is reloaded and reported
        by the next :meth:`refresh`, check or session call). Session ids are numbered apart
        from token ids. Same rules as :meth:`on_revoke`: run outside any lock on the thread
        that noticed, quick, an exception logged, not raised.
        """
        with self._lock:
            self._session_callbacks.append(callback)

    def refresh(self) -> None:
        """Notice revocations by other processes and expired tokens and sessions now.

        Fires ``on_revoke`` and ``on_session_end``. Checks do most of this anyway; the hub
        calls it every second or so, so open websockets of a token revoked from the CLI,
        or of a session that expired, close even when no request arrives.
        """
        with self._lock:
            now = self._clock()
            gone = self._sync(now)
            self._expire_sessions(now)
        if gone:
            self._fire(gone)
        self._report_ended_sessions()

    def flush(self) -> None:
        """Write the batched token last-use times now (checks do it once a minute)."""
        with self._lock:
            used, self._used = self._used, {}
            self._last_flush = self._clock()
        if not used:
            return
        try:
            self._store.touch_tokens(used)
        except (StoreError, sqlite3.Error) as e:
            log.warning("could not record api token last-use times: %s", e)
            with self._lock:
                for i, t in used.items():
                    self._used[i] = max(t, self._used.get(i, t))

    def close(self) -> None:
        """Flush last-use times and stop the argon2 thread; call before closing the store."""
        self.flush()
        self._kdf.close()

    # -- internals ------------------------------------------------------------------------

    def _sync(self, now: float) -> list[int]:
        """Bring the index up to date; the caller holds ``_lock``.

        Returns:
            Ids of tokens that stopped being valid since the last sync (revoked by
            another process, or expired), for ``on_revoke``.
        """
        version = self._store.data_version()
        gone: list[int] = []
        if self._tokens is None or version != self._version:
            before = None if self._tokens is None else {e.principal.token_id for e in self._tokens.values()}
            sessions_before = self._session_ids()
            self._load(now)
            self._version = version
            if before is not None:
                assert self._tokens is not None
                after = {e.principal.token_id for e in self._tokens.values()}
                gone = sorted(i for i in before - after if i is not None)
                self._ended_sessions += sorted(sessions_before - self._session_ids())
        if now >= self._next_expiry:
            assert self._tokens is not None
            expired = [d for d, e in self._tokens.items() if e.expires_at is not None and e.expires_at <= now]
            for d in expired:
                gone.append(self._tokens.pop(d).principal.token_id or 0)
            self._next_expiry = min((e.expires_at for e in self._tokens.values() if e.expires_at is not None),
                                    default=math.inf)
        return gone

    def _load(self, now: float) -> None:
        """Rebuild the token and session index from the store; the caller holds ``_lock``."""
        tokens: dict[bytes, _TokenEntry] = {}
        for r in self._store.list_tokens():
            if r.expires_at is not None and r.expires_at <= now:
                continue
            scopes = frozenset(s for s in r.scopes.split() if s in SCOPES)
            principal = Principal(r.username, scopes, "token", token_id=r.id)
            tokens[r.token_hash] = _TokenEntry(r.token_hash, principal, r.expires_at)
        self._tokens = tokens
        self._next_expiry = min((e.expires_at for e in tokens.values() if e.expires_at is not None),
                                default=math.inf)
        self._sessions = {r.token_hash: self._session_entry(r) for r in self._store.list_sessions(now)}

    @staticmethod
    def _session_entry(row: SessionRow) -> _SessionEntry:
        """The index entry of a session row."""
        scopes = frozenset(expand_scopes(row.user_scope)) if row.user_scope in SCOPES else frozenset()
        return _SessionEntry(row.token_hash, Principal(row.username, scopes, "session", session_id=row.id),
                             row.expires_at)

    def _drop_tokens(self, ids: set[int]) -> None:
        """Remove tokens from the index by id; the caller holds ``_lock``."""
        if self._tokens is not None and ids:
            for d in [d for d, e in self._tokens.items() if e.principal.token_id in ids]:
                del self._tokens[d]

    def _drop_sessions(self, username: str) -> None:
        """Remove a user's sessions from the index, to report as ended; the caller holds ``_lock``."""
        if self._sessions is not None:
            for d in [d for d, e in self._sessions.items() if e.principal.username == username]:
                self._ended_sessions.append(self._sessions.pop(d).principal.session_id or 0)

    def _expire_sessions(self, now: float) -> None:
        """Remove expired sessions from the index, to report as ended; the caller holds ``_lock``."""
        if self._sessions is not None:
            for d in [d for d, e in self._sessions.items() if e.expires_at <= now]:
                self._ended_sessions.append(self._sessions.pop(d).principal.session_id or 0)

    def _session_ids(self) -> set[int]:
        """Ids of the sessions in the index; the caller holds ``_lock``."""
        return {e.principal.session_id or 0 for e in (self._sessions or {}).values()}

    def _report_ended_sessions(self) -> None:
        """Call the ``on_session_end`` callbacks for the sessions ended since the last call."""
        if not self._ended_sessions:  # read without the lock: the common case costs nothing
            return
        with self._lock:
            ended, self._ended_sessions = self._ended_sessions, []
            callbacks = list(self._session_callbacks)
        for sid in ended:
            for cb in callbacks:
                try:
                    cb(sid)
                except Exception:
                    log.exception("on_session_end callback %r failed for session %d", cb, sid)

    def _fire(self, ids: Iterable[int]) -> None:
        """Call the ``on_revoke`` callbacks for each id; never raises."""
        with self._lock:
            callbacks = list(self._callbacks)
        for i in ids:
            for cb in callbacks:
                try:
                    cb(i)
                except Exception:
                    log.exception("on_revoke callback %r failed for api token %d", cb, i)

    @functools.cached_property
    def _hasher(self) -> PasswordHasher:
        """The argon2id hasher (the ``ARGON2_*`` parameters unless one was given)."""
        if self._hasher_given is not None:
            return self._hasher_given
        from argon2 import PasswordHasher

        return PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB,
                              parallelism=ARGON2_PARALLELISM)

    def _hash(self, password: str) -> str:
        """argon2id hash of a password on the KDF thread, waiting as long as it takes."""
        return self._kdf.run(self._hasher.hash, password, bounded=False)

    def _verify(self, password_hash: str, password: str) -> bool:
        """argon2 verification; False for a mismatch or an unreadable stored hash."""
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return bool(self._hasher.verify(password_hash, password))
        except InvalidHashError:
            log.error("a stored password hash is not an argon2 hash: reset it with pihub user passwd")
            return False
        except VerificationError:
            return False

    def _unmatchable(self) -> str:
        """The hash an unknown user's password is checked against (made once; see
        :func:`_unmatchable_hash`)."""
        if self._dummy_hash is None:
            self._dummy_hash = _unmatchable_hash(self._hasher)
        return self._dummy_hash

    def _maybe_rehash(self, user_id: int, old_hash: str, password: str) -> None:
        """Upgrade a stored hash made with older argon2 parameters (after a good login)."""
        from argon2.exceptions import InvalidHashError

        try:
            stale = self._hasher.check_needs_rehash(old_hash)
        except InvalidHashError:
            return
        if stale and self._store.update_password_hash(user_id, old_hash, self._hash(password)):
            log.info("password hash of user id %d upgraded to the current argon2 parameters", user_id)

    def _admit(self, key: str, now: float) -> tuple[float, int, int]:
        """Check both failure limits and count the attempt, in one locked step.

        Returns:
            ``(now, n, total)``: the attempt's time (to give to :meth:`_take_back`), and
            the attempts of ``key`` and of every address now in the window, this one
            included.

        Raises:
            RateLimited: ``key`` or the whole hub has no attempt left in the window;
                nothing is counted then.
        """
        cutoff = now - self._window_s
        with self._lock:
            times = [t for t in self._failures.pop(key, ()) if t > cutoff]
            recent = self._recent
            while recent and recent[0] <= cutoff:
                recent.popleft()
            if len(times) >= self._max_failures:
                # allowed again when the attempt that made the count reach the limit leaves the window
                limit, first = LIMIT_ADDRESS, times[-self._max_failures]
            elif len(recent) >= self._max_total:
                limit, first = LIMIT_TOTAL, recent[-self._max_total]
            else:
                limit = None
                times.append(now)
                recent.append(now)
            if times:
                self._failures[key] = times  # re-inserted last: the oldest keys are evicted first
                while len(self._failures) > self._max_addresses:
                    self._failures.popitem(last=False)
            n, total = len(times), len(recent)
        if limit is not None:
            retry = max(1, math.ceil(first + self._window_s - now))
            log.debug("login from %s refused: %s, for %d s more", key, limit, retry)
            raise RateLimited(retry, limit)
        return now, n, total

    def _take_back(self, key: str, admitted_at: float) -> None:
        """Uncount an attempt :meth:`_admit` counted (it succeeded, or never ran)."""
        with self._lock:
            times = self._failures.get(key)
            if times is not None and admitted_at in times:
                times.remove(admitted_at)
                if not times:
                    del self._failures[key]
            if admitted_at in self._recent:
                self._recent.remove(admitted_at)
