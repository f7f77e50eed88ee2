"""Logging set-up for the daemon: journald-friendly under systemd, timestamped elsewhere.

Every component logs through its own logger below ``pihub`` (``pihub.hub``,
``pihub.backends.gpio``, ``pihub.engine.dispatcher``...), normally
``logging.getLogger(__name__)`` in the module; :func:`get_logger` gives the same for a
component name that is not a module.

:func:`setup_logging` installs one handler on the root logger, so messages from libraries
(gpiozero, bottle, the MQTT client...) come out in the same format:

- **journal mode**, when stderr is connected to the journal (systemd sets ``JOURNAL_STREAM``
  to the ``device:inode`` of that stream; it is compared with the stream actually written
  to, because the variable is inherited by children whose stderr may point elsewhere).
  Every line starts with a syslog priority prefix that journald turns into the entry's
  priority (``<7>`` debug, ``<6>`` info, ``<4>`` warning, ``<3>`` error, ``<2>`` critical)
  and carries no timestamp (journald records one). Each line of a multi-line record (a
  traceback) gets the prefix, because journald makes every line its own entry and would
  otherwise file traceback lines at the default priority::

      <6>INFO pihub.hub: web panel on http://127.0.0.1:8008/

- **plain mode** otherwise, local time with milliseconds::

      2026-11-21 15:09:01.123 INFO pihub.hub: web panel on http://127.0.0.1:8008/

Levels: the ``pihub`` logger gets the requested level; the root logger (third-party
libraries) gets the requested level but never below WARNING, so ``DEBUG`` debugs pihub
without flooding the journal with every library's debug output. Python ``warnings``
(e.g. gpiozero's ``PinFactoryFallback``) are routed into logging.

Calling :func:`setup_logging` again replaces the handler it installed before (no doubled
lines) and applies the new arguments.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

__all__ = ["LEVELS", "JournalFormatter", "LogLimiter", "escape_controls", "get_logger", "journal_connected",
           "parse_level", "setup_logging", "syslog_priority"]

#: Accepted level names (case-insensitive), most to least severe.
LEVELS: tuple[str, ...] = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

PLAIN_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
PLAIN_DATEFMT = "%Y-%m-%d %H:%M:%S"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"

#: Attribute set on handlers installed here, so a second call finds and replaces them.
_MARK = "_pihub_handler"

#: What :func:`escape_controls` escapes: C0 and C1 controls (newline, carriage return, ESC...),
#: DEL, the Unicode line and paragraph separators, and lone surrogates (undecodable bytes of
#: a file name, which no UTF-8 log stream can write).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def get_logger(component: str) -> logging.Logger:
    """Return the logger of one pihub component.

    Args:
        component: a module name (``pihub.backends.gpio``) or a component name below
            ``pihub`` (``backends.gpio``).

    Returns:
        ``logging.getLogger("pihub.<component>")`` (the name is not prefixed twice).
    """
    if component == "pihub" or component.startswith("pihub."):
        return logging.getLogger(component)
    return logging.getLogger(f"pihub.{component}")


def escape_controls(text: str, limit: int | None = None) -> str:
    """Make ``text`` safe to put in a log line written from outside data (a hook's message,
    a file name): it cannot start a forged line nor send a terminal escape sequence.

    Args:
        text: any text.
        limit: at most this many characters of the escaped text are kept, then ``...``
            (None: all).

    Returns:
        ``text`` with newline, carriage return and tab written ``\\n``, ``\\r``, ``\\t``, and
        the other control characters, line separators and lone surrogates as ``\\xNN`` /
        ``\\uNNNN`` (ESC is ``\\x1b``); everything else, backslashes included, unchanged.
    """
    if limit is None:
        return _CONTROLS.sub(_escape_one, text)
    out = _CONTROLS.sub(_escape_one, text[: limit + 1])  # escaping only lengthens it
    return out if len(out) <= limit and len(text) <= limit else out[:limit] + "..."


def _escape_one(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def syslog_priority(levelno: int) -> int:
    """Map a logging level number to a syslog priority (RFC 5424 severity).

    Args:
        levelno: a ``logging`` level; custom levels fall into the band below them.

    Returns:
        2 (crit) for >= CRITICAL, 3 (err) for >= ERROR, 4 (warning) for >= WARNING,
        6 (info) for >= INFO, else 7 (debug).
    """
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a formatted record with its ``<N>`` syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` and prefix each of its lines.

        Args:
            record: the record.

        Returns:
            The formatted text, every line starting with ``<N>``.
        """
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = super().format(record)
        return "\n".join(prefix + line for line in text.split("\n"))


def parse_level(level: str) -> int:
    """Validate a level name.

    Args:
        level: one of :data:`LEVELS`, any case, surrounding blanks ignored.

    Returns:
        The ``logging`` level number.

    Raises:
        ValueError: an unknown name (or not a string); the message lists the allowed names.
    """
    name = level.strip().upper() if isinstance(level, str) else ""
    if name not in LEVELS:
        allowed = ", ".join(n.lower() for n in LEVELS)
        raise ValueError(f"unknown log level {level!r}; allowed: {allowed}")
    return logging.getLevelNamesMapping()[name]


def journal_connected(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Tell whether ``stream`` is the journal stream systemd announced in ``JOURNAL_STREAM``.

    Args:
        stream: the stream to be logged to.
        environ: the environment; ``os.environ`` when None.

    Returns:
        True if ``JOURNAL_STREAM`` is ``<device>:<inode>`` and equals the ``st_dev:st_ino``
        of ``stream``'s file descriptor; False when unset, malformed, or the stream has no
        descriptor or points elsewhere.
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev_text, sep, ino_text = value.partition(":")
    if not sep or not dev_text.isdigit() or not ino_text.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev_text), int(ino_text))


def setup_logging(level: str = "INFO", *, stream: TextIO | None = None, fmt: str | None = None,
                  filename: str | os.PathLike[str] | None = None,
                  journal: bool | None = None) -> logging.Logger:
    """Configure logging for the daemon (see the module docstring for the formats).

    Args:
        level: minimum level for pihub's loggers, one of :data:`LEVELS` (any case).
        stream: where to write; ``sys.stderr`` (looked up at call time) when None.
        fmt: a ``logging`` format string for the message part, replacing the default. In
            journal mode the ``<N>`` prefix is still added in front of each line; in plain
            mode the timestamp is whatever ``fmt`` contains (``%(asctime)s`` uses
            ``YYYY-MM-DD HH:MM:SS``).
        filename: log to this file (appended, UTF-8, plain mode) instead of ``stream``;
            mutually exclusive with ``stream``, as in ``logging.basicConfig``.
        journal: force journal mode on or off; None detects it from ``JOURNAL_STREAM``.

    Returns:
        The ``pihub`` logger.

    Raises:
        ValueError: unknown ``level``, or both ``stream`` and ``filename`` given.
        OSError: ``filename`` cannot be opened.
    """
    levelno = parse_level(level)
    if stream is not None and filename is not None:
        raise ValueError("give either stream or filename, not both")

    handler: logging.Handler
    if filename is not None:
        handler = logging.FileHandler(filename, mode="a", encoding="utf-8")
        use_journal = False if journal is None else journal
    else:
        out = sys.stderr if stream is None else stream
        handler = logging.StreamHandler(out)
        use_journal = journal_connected(out) if journal is None else journal

    formatter: logging.Formatter
    if use_journal:
        formatter = JournalFormatter(fmt or JOURNAL_FORMAT)
    else:
        formatter = logging.Formatter(fmt or PLAIN_FORMAT, datefmt=PLAIN_DATEFMT)
    handler.setFormatter(formatter)
    setattr(handler, _MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(max(levelno, logging.WARNING))

    pihub_logger = logging.getLogger("pihub")
    pihub_logger.setLevel(levelno)
    logging.captureWarnings(True)
    return pihub_logger


class LogLimiter:
    """At most ``burst`` log lines per ``window`` seconds; counts what it holds back.

    For warnings about hostile or broken input and overload (noise, floods, drops), which
    must be visible but must not flood the journal. Not thread-safe: one per logging
    thread, or called under the caller's lock.
    """

    def __init__(self, burst: int, window: float, clock: Callable[[], float]) -> None:
        """Create the limiter; ``window`` in seconds of ``clock``."""
        self.burst = burst
        self.window = window
        self._clock = clock
        self._start = -float("inf")
        self._count = 0
        self._held = 0

    def allow(self, now: float | None = None) -> tuple[bool, int]:
        """Ask to log one line, at ``now`` (seconds; the clock's reading when None: for a
        caller whose time comes with its data, such as a reading's timestamp).

        Returns:
            ``(allowed, held back since the last allowed line)``; when not allowed, the
            line is counted and the count is reported with the next allowed one.
        """
        if now is None:
            now = self._clock()
        if now - self._start >= self.window:
            self._start, self._count = now, 0
        if self._count < self.burst:
            self._count += 1
            held, self._held = self._held, 0
            return True, held
        self._held += 1
        return False, 0
