"""pihub's exceptions. Every leaf also inherits the builtin category it belongs to.

Messages are lower-case fragments that name the thing, the bad value and what is
allowed: ``channel must be in range 0..7, not 9``. Secret values never appear in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
        super().__init__(f"unknown event type {name!r}{hint}")

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

    ``path`` is relative to the part being compiled, as a tuple of keys and indices;
    the config loader prefixes it and turns it into a located :class:`Problem`.
    """

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{format_path(path)}: {message}" if path else message)


class ConfigProblems(PihubError, ValueError):
    """Several :class:`ConfigProblem` found in one part; compilers collect, then raise this."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class ConfigError(PihubError, ValueError):
    """The configuration is invalid. ``problems`` holds every located problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = [p for p in problems if not p.warning]
        self.warnings = [p for p in problems if p.warning]
        n = len(self.problems)
        super().__init__(f"{n} configuration error{'s' if n != 1 else ''}:\n"
                         + "\n".join(str(p) for p in self.problems))


class ActionError(PihubError, RuntimeError):
    """An action could not run: unknown plugin or action, bad arguments, disabled."""


class ExpressionError(PihubError, ValueError):
    """A ``${...}`` expression is malformed, uses something not allowed, or failed."""


class BackendUnavailable(PihubError, RuntimeError):
    """A backend's library or device is missing; the hub marks it failed and runs on."""


def format_path(path: Sequence[str | int]) -> str:
    """``("event.hook.x", "then", 2, "args")`` -> ``event.hook.x.then[2].args``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
