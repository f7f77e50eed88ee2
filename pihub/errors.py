"""pihub's exceptions, and the one "did you mean" of its messages.

Every exception pihub raises to a caller is here, under :class:`PihubError`, and also
inherits the builtin category it belongs to (a bad value is a ``ValueError``, an unreadable
file an ``OSError``...). Exceptions used only as control flow inside one module stay
private to it.

Messages are lower-case fragments that name the thing, the bad value and what is
allowed: ``channel must be in range 0..7, not 9``. Secret values never appear in them.
A misspelt name gets :func:`did_you_mean`'s suffix, computed by :func:`close_matches`; a bad
value that may be long is shown by :func:`shorten`.
"""

from __future__ import annotations

import reprlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pihub.config.loader import Config


class PihubError(Exception):
    """Base of every pihub error."""


class NativeMismatch(PihubError, ImportError):
    """The compiled extension does not match this pihub (stale build)."""


class UnknownEventType(PihubError, KeyError):
    """An event type name that is not in the catalogue."""

    def __init__(self, name: str, close: Sequence[str] = ()) -> None:
        self.name = name
        self.close = list(close)
        hint = f" (did you mean {', '.join(repr(c) for c in self.close)}?)" if self.close else ""
        super().__init__(f"unknown event type {shorten(name)}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Problem:
    """One configuration problem, located.

    ``path`` is the dotted/indexed location inside the config (``event.hook.door.if.pin``);
    ``file``/``line``/``col`` are 1-based and point at the offending YAML node when known.
    """

    path: str
    message: str
    file: str = ""
    line: int = 0
    col: int = 0
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: " if self.file else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigProblem(PihubError, ValueError):
    """A problem found while compiling one part of the config (a hook, a step...).

    ``path`` is relative to the part being compiled, as a tuple of keys and indices
    (a YAML mapping key may be any hashable scalar, not only a str); the config loader
    prefixes it and turns it into a located :class:`Problem`.
    """

    def __init__(self, path: tuple[Hashable, ...], message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{format_path(path)}: {message}" if path else message)


class SchemaProblem(ConfigProblem):
    """A :class:`~pihub.errors.ConfigProblem` that may be about a key, or only a warning.

    Attributes:
        path: the path of the value, or, when ``key`` is set, of the mapping holding it.
        key: the offending key (unknown, renamed, missing...) of the mapping at ``path``;
            the loader locates the problem at that key (or, for a missing key, at the key
            of the mapping). None for a problem about the value at ``path``.
        warning: True for a warning (a renamed or deprecated key), which does not fail
            the load.
    """

    def __init__(self, path: tuple[Hashable, ...], message: str, *, key: Hashable | None = None,
                 warning: bool = False) -> None:
        """Create the problem; see the class attributes."""
        super().__init__(tuple(path), message)
        self.key = key
        self.warning = warning


class ConfigProblems(PihubError, ValueError):
    """Several :class:`ConfigProblem` found in one part; compilers collect, then raise this."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class ConfigError(PihubError, ValueError):
    """The configuration is invalid. ``problems`` holds every located problem found.

    Attributes:
        config: the config built from the valid parts, when the loader got that far (so
            that check-config can report their hook and procedure problems too), else None.
    """

    def __init__(self, problems: Sequence[Problem], *, config: Config | None = None) -> None:
        self.problems = [p for p in problems if not p.warning]
        self.warnings = [p for p in problems if p.warning]
        self.config = config
        n = len(self.problems)
        super().__init__(f"{n} configuration error{'s' if n != 1 else ''}:\n"
                         + "\n".join(str(p) for p in self.problems))


class ActionError(PihubError, RuntimeError):
    """An action could not run: unknown plugin or action, bad arguments, disabled."""


class ExpressionError(PihubError, ValueError):
    """A ``${...}`` expression is malformed, uses something not allowed, or failed.

    Attributes:
        path: where the expression is inside the value being compiled (keys and indices),
            when compiling raised it; None otherwise.
    """

    path: tuple[Hashable, ...] | None = None


class BackendUnavailable(PihubError, RuntimeError):
    """A backend's library or device is missing; the hub marks it failed and runs on."""


class MessageError(PihubError, ValueError):
    """A message that is not a valid envelope; the text says which key and why."""


class MalformedLine(PihubError, ValueError):
    """A sensor line that does not parse; the message is a lower-case fragment for the log."""


class ConfigUnreadable(PihubError, OSError):
    """The config file exists but cannot be read (the CLI exits 2).

    Attributes:
        filename: the file concerned, when there is one.
    """

    def __init__(self, message: str, *, filename: str | None = None) -> None:
        """Create the error; ``message`` is a lower-case fragment naming the file."""
        super().__init__(message)
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0])


class ConfigNotFound(ConfigUnreadable):
    """No config file was found (the CLI exits 2).

    Attributes:
        searched: every place looked at, in order.
    """

    def __init__(self, message: str, searched: list[str]) -> None:
        """Create the error; ``searched`` lists the places looked at."""
        super().__init__(message, filename=searched[0] if len(searched) == 1 else None)
        self.searched = list(searched)


class StoreError(PihubError, RuntimeError):
    """The store cannot be opened, migrated or used (closed, not a database, too new)."""


class AuthFailed(PihubError, PermissionError):
    """Credentials or a setup code were refused (HTTP 401). The message names no secret."""


class RateLimited(PihubError, PermissionError):
    """A login refused before any password work (HTTP 429 with ``Retry-After``).

    Attributes:
        retry_after: whole seconds until a new attempt may succeed (at least 1).
        reason: which limit refused it (:mod:`pihub.auth`'s ``LIMIT_*`` texts).
    """

    def __init__(self, retry_after: int, reason: str) -> None:
        """Create the error; ``retry_after`` in whole seconds."""
        self.retry_after = retry_after
        self.reason = reason
        super().__init__(f"{reason}: retry after {retry_after} s")


class TokenNameExists(PihubError, ValueError):
    """The user already has an API token of that name (HTTP 400 ``TOKEN_NAME_EXISTS``)."""


class BodyTooLarge(PihubError, ValueError):
    """A request body went past ``max_body`` while being read (HTTP 413)."""


class Refused(PihubError, PermissionError):
    """The access policy's no (:mod:`pihub.web.access`), with what each transport shows of it.

    Attributes:
        status: the HTTP status.
        name: the error name (``INVALID_CREDENTIALS``...).
        message: the HTTP error message; never contains a secret.
        reason: the websocket close reason, ``NAME: why`` (at most 123 bytes).
        headers: extra HTTP response headers (``WWW-Authenticate``, ``Retry-After``).
        clear_cookie: the session cookie named a session that is gone: HTTP clears it.
    """

    def __init__(self, status: int, name: str, message: str, reason: str,
                 headers: Mapping[str, str] | None = None, *, clear_cookie: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})
        self.clear_cookie = clear_cookie


class ProtocolError(PihubError, ValueError):
    """A daemon or device sent what its protocol does not allow (a flicd frame of a bad
    length...); the connection is reset."""


class FeedError(PihubError, ValueError):
    """A feed poll failed; ``str()`` is the reason (without the feed's name)."""


class AdcNoAnswer(PihubError, OSError):
    """The ADC's reply had its null bit set: nothing drives MISO (wiring, power, CS)."""


class CommandError(PihubError):
    """A ``pihub`` command cannot go on: its message goes to stderr, ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def format_path(path: Sequence[Hashable]) -> str:
    """``("event.hook.x", "then", 2, "args")`` -> ``event.hook.x.then[2].args``.

    An int is a list index; any other part (a str, or a YAML key that is a float, None, a
    date...) is a mapping key, shown with ``str()``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------------------------
# suggestions


def _distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance (edits, with adjacent transpositions counting one)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def close_matches(word: str, candidates: Iterable[object], n: int = 3) -> list[str]:
    """The candidates ``word`` was probably meant to be, closest first, at most ``n``.

    Those within 1 edit (2 for words longer than 3 characters; an adjacent transposition
    counts as one edit, so ``fi`` finds ``if``); when none is that close, those that
    :func:`difflib.get_close_matches` finds similar (ratio >= 0.6: longer slips such as
    ``temprature_sensor``). Non-strings and ``word`` itself are skipped.
    """
    names = sorted({c for c in candidates if isinstance(c, str) and c != word})
    limit = 1 if len(word) <= 3 else 2
    scored = sorted((d, c) for c in names
                    if abs(len(c) - len(word)) <= limit and (d := _distance(word, c)) <= limit)
    if scored:
        return [c for _, c in scored[:n]]
    import difflib  # only when a name is wrong: not part of the daemon's resident set

    return difflib.get_close_matches(word, names, n=n, cutoff=0.6)


class _ShortRepr(reprlib.Repr):
    """A repr that descends at most 3 levels and elides long strings, numbers and containers;
    an object whose own repr raises shows as ``<TypeName>``."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxlong = self.maxother = 100
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 8
        self.maxdict = 6

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    repr_bytearray = repr_bytes

    def repr_instance(self, x: object, level: int) -> str:
        try:
            text = repr(x)
        except Exception:
            return f"<{type(x).__name__}>"
        return text if len(text) <= self.maxother else text[: self.maxother - 3] + "..."


_REPR = _ShortRepr()


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to at most ``limit`` characters (ending ``...``).
    Never raises.

    Bounded in work too (:mod:`reprlib`, 3 levels deep, a few items per container): a value
    nested 100 000 deep or a 10 MB string costs no more than a small one. A value whose
    repr raises shows as ``<TypeName>``.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # a repr that raises (or an int too long for str())
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, candidates: Iterable[object], n: int = 3) -> str:
    """``" (did you mean 'a', 'b'?)"`` naming :func:`close_matches`, or ``""`` when none."""
    close = close_matches(word, candidates, n)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
