"""Newline-framed sensor lines: JSON objects or ``key=value`` pairs.

Both parsers are pure: :meth:`LineParser.feed` takes whatever bytes a read returned (a
partial line, several lines, a line split anywhere) and returns the readings completed by
them. No I/O, threads or clock; bad input never raises, it is counted.

Framing (shared by both formats)::

    bytes in:   .. \\xff\\x00{"t": 21.5}\\r\\n{"t": 2 | 1.6}\\n  temp=3 ...
                   `-noise-'`---line---'`-'`---line--'`-'
                                        CRLF  (split across feeds)

* A line ends at LF, CR or CRLF; the terminator is not part of the line. Blank lines
  (only ASCII whitespace) are skipped and not counted.
* Bytes outside printable ASCII at the start of a line (UART noise at boot, a baud-rate
  mismatch) are dropped before parsing; a line made only of such bytes is malformed.
* A line longer than ``max_line`` bytes is dropped whole and counted in ``overflows``;
  the buffer never holds more than ``max_line`` bytes, whatever the device sends.
* Lines must be UTF-8.

Counters: ``lines`` (complete non-blank lines within ``max_line``) == ``readings`` +
``malformed``; ``overflows`` counts dropped overlong lines. ``last_error`` says what was
wrong with the last bad line, quoting (the start of) its text for the log; an
``on_error`` callback, if given, receives that message for every bad line.

Why not Platypush's framing: it reads one JSON object byte by byte, counting braces, and
tracks only backslash escapes, so a ``}`` inside a string value ends the object early
and every later object is misframed. Lines need no brace counting: JSON text never
contains a raw newline, so one object per line is unambiguous.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, ClassVar, Final

from pihub.errors import MalformedLine, MessageError
from pihub.messages import loads

__all__ = ["PARSERS", "JsonLineParser", "KeyValueParser", "LineParser", "Reading"]

#: One parsed line: field name -> value (numbers, strings; JSON may nest).
Reading = dict[str, Any]

#: Default and bounds of ``max_line``, in bytes.
DEFAULT_MAX_LINE: Final = 4096
MIN_MAX_LINE: Final = 16

# Leading bytes dropped as noise: controls, space and everything outside ASCII.
_NOISE: Final = bytes(range(0x21)) + bytes(range(0x7F, 0x100))
_SHOWN: Final = 80  # characters of a bad line quoted in last_error


def _quote(text: str | bytes) -> str:
    """A bad line for a message: a repr, cut to ``_SHOWN`` characters."""
    if len(text) > _SHOWN:
        return repr(text[:_SHOWN]) + "..."
    return repr(text)


class LineParser:
    """Base of the line parsers: framing, counters and the bad-line report.

    Subclasses MUST set ``format`` and implement :meth:`parse_line`.

    Attributes:
        max_line: the longest line kept, in bytes, terminator excluded.
        lines: complete non-blank lines seen (not counting dropped overlong ones).
        readings: lines that parsed into a reading.
        malformed: lines that did not parse.
        overflows: lines dropped because they were longer than ``max_line``.
        last_error: what was wrong with the last malformed or overlong line, or None.
    """

    format: ClassVar[str] = ""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *,
                 on_error: Callable[[str], None] | None = None) -> None:
        """Create a parser with an empty buffer.

        Args:
            max_line: the longest line kept, in bytes (at least 16).
            on_error: called during :meth:`feed` with the message of each malformed or
                overlong line, in stream order (a backend logs them, rate-limited).

        Raises:
            ValueError: ``max_line`` is below 16.
        """
        if max_line < MIN_MAX_LINE:
            raise ValueError(f"max_line must be at least {MIN_MAX_LINE} bytes, not {max_line}")
        self.max_line = max_line
        self.on_error = on_error
        self.lines = 0
        self.readings = 0
        self.malformed = 0
        self.overflows = 0
        self.last_error: str | None = None
        self._buf = bytearray()
        self._discarding = False  # inside an overlong line: drop bytes up to its end

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} lines={self.lines} readings={self.readings} "
                f"malformed={self.malformed} overflows={self.overflows}>")

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held in the buffer (at most ``max_line``)."""
        return len(self._buf)

    def stats(self) -> dict[str, Any]:
        """The counters and the last error, as a JSON-able dict."""
        return {"lines": self.lines, "readings": self.readings, "malformed": self.malformed,
                "overflows": self.overflows, "last_error": self.last_error}

    def reset(self) -> None:
        """Forget a partial line (after a reconnect its tail will never come); keep counters."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Reading]:
        """Take the next bytes of the stream; return the readings of the lines they complete.

        Args:
            data: any number of bytes, split anywhere (inside a line, a CRLF, a UTF-8
                sequence).

        Returns:
            One reading per complete line that parsed, in stream order. MalformedLine and
            overlong lines are counted, never raised.
        """
        out: list[Reading] = []
        if not data:
            return out
        parts = bytes(data).replace(b"\r", b"\n").split(b"\n")
        for tail in parts[:-1]:
            self._end_line(tail, out)
        self._extend(parts[-1])
        return out

    def _extend(self, part: bytes) -> None:
        """Buffer the start of a line, or start dropping it once it is too long."""
        if self._discarding or not part:
            return
        if len(self._buf) + len(part) > self.max_line:
            self._overflow()
            self._discarding = True
            self._buf.clear()
            return
        self._buf += part

    def _end_line(self, tail: bytes, out: list[Reading]) -> None:
        """A terminator arrived: ``tail`` ends the buffered line."""
        if self._discarding:
            self._discarding = False  # the overlong line was counted when it overflowed
            self._buf.clear()
            return
        if len(self._buf) + len(tail) > self.max_line:
            self._overflow()
            self._buf.clear()
            return
        line = bytes(self._buf) + tail if self._buf else tail
        self._buf.clear()
        self._line(line, out)

    def _overflow(self) -> None:
        """Count a line dropped for its length."""
        self.overflows += 1
        self._error(f"line longer than {self.max_line} bytes dropped")

    def _error(self, message: str) -> None:
        """Record a bad line's message and pass it to ``on_error``."""
        self.last_error = message
        if self.on_error is not None:
            self.on_error(message)

    def _line(self, raw: bytes, out: list[Reading]) -> None:
        """Parse one complete line into ``out``, or count it as malformed."""
        stripped = raw.rstrip(b" \t\f\v")
        if not stripped:
            return
        self.lines += 1
        line = stripped.lstrip(_NOISE)
        try:
            if not line:
                raise MalformedLine(f"only noise bytes in line {_quote(stripped)}")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MalformedLine(f"invalid utf-8 at byte {e.start} in line {_quote(line)}") from None
            reading = self.parse_line(text)
        except MalformedLine as e:
            self.malformed += 1
            self._error(str(e))
            return
        self.readings += 1
        out.append(reading)

    def parse_line(self, text: str) -> Reading:
        """Parse one line, already framed, stripped of noise and decoded.

        Args:
            text: the line, without terminator or leading noise; never empty.

        Returns:
            The reading.

        Raises:
            MalformedLine: the line is not in this format; the message quotes it.
        """
        raise NotImplementedError


class JsonLineParser(LineParser):
    """One JSON object per line, as Arduino sketches print them (``Serial.println``).

    ``{"temperature": 21.5, "humidity": 40}`` -> ``{"temperature": 21.5, "humidity": 40}``.

    The value must be an object; other JSON values (``42``, ``[1, 2]``) are malformed.
    Printable garbage before the object (``OK {"t": 1}``) is skipped when the rest parses.
    ``NaN``, ``Infinity`` and numbers too large for a float become null, so a reading
    stays finite and serialisable.
    """

    format: ClassVar[str] = "json"

    def parse_line(self, text: str) -> Reading:
        """Parse one line as a JSON object (see the class docstring)."""
        try:
            value = self._decode(text)
        except MalformedLine:
            start = text.find("{")
            if start <= 0:
                raise
            value = self._decode(text[start:])
        if not isinstance(value, dict):
            kind = {list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")
            if value is None:
                kind = "null"
            raise MalformedLine(f"json value is {kind}, not an object: {_quote(text)}")
        return value

    @staticmethod
    def _decode(text: str) -> Any:
        """:func:`pihub.messages.loads`; its errors become :class:`MalformedLine` with the line."""
        try:
            return loads(text)
        except MessageError as e:
            raise MalformedLine(f"{e}: {_quote(text)}") from None


_KEY: Final = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_PAIR: Final = re.compile(
    rf"(?P<key>{_KEY})[ \t]*[=:][ \t]*(?:\"(?P<quoted>[^\"]*)\"|(?P<bare>[^\s,;\"]*))"
    r"(?P<after>[ \t]*(?:[,;][ \t]*|(?=[ \t])|$))")
_SEP: Final = re.compile(r"[\s,;]*")
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT: Final = re.compile(r"[+-]?[0-9]+")


def parse_number(text: str) -> int | float | str | None:
    """A value of a ``key=value`` line: an int, a float, or the text itself.

    Args:
        text: the value as written.

    Returns:
        An int for ``[+-]digits``, a float for other decimal numbers (``1.5``, ``-.5``,
        ``2e3``), None for a decimal number beyond the float range (``1e999``), and the
        text unchanged otherwise (``21.5C``, ``nan``, ``on``).
    """
    if not _NUMBER.fullmatch(text):
        return text
    try:
        if _INT.fullmatch(text):
            return int(text)
        value = float(text)
    except ValueError:  # more digits than int() accepts
        return text
    return value if math.isfinite(value) else None


class KeyValueParser(LineParser):
    """``key=value`` pairs per line, as simple sketches print them.

    All of these give ``{"temp": 21.5, "hum": 40}``::

        temp=21.5 hum=40
        temp=21.5,hum=40
        temp:21.5; hum: 40

    Pairs are separated by spaces, tabs, ``,`` or ``;``; a key is joined to its value by
    ``=`` or ``:`` (spaces around it allowed). Keys start with a letter or ``_`` and may
    hold letters, digits, ``_``, ``.``, ``-``. Values are numbers when they look like
    decimal numbers (see :func:`parse_number`), else strings; ``name="living room"``
    quotes a value with spaces (no escapes). A key given twice keeps its last value. Any
    token that is not a pair makes the whole line malformed: a half line is better
    dropped than half reported.
    """

    format: ClassVar[str] = "keyvalue"

    def parse_line(self, text: str) -> Reading:
        """Parse one line of ``key=value`` pairs (see the class docstring)."""
        reading: Reading = {}
        pos = _SEP.match(text).end()  # type: ignore[union-attr]  # matches the empty string
        while pos < len(text):
            m = _PAIR.match(text, pos)
            if m is None:
                raise MalformedLine(f"expected key=value at column {pos + 1}: {_quote(text)}")
            quoted = m.group("quoted")
            if quoted is not None:
                reading[m.group("key")] = quoted
            else:
                bare = m.group("bare")
                if not bare:
                    raise MalformedLine(f"no value for key {m.group('key')!r}: {_quote(text)}")
                reading[m.group("key")] = parse_number(bare)
            pos = m.end()
            pos = _SEP.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string
        return reading


#: ``format`` config value -> parser class.
PARSERS: Final[dict[str, type[LineParser]]] = {p.format: p for p in (JsonLineParser, KeyValueParser)}
