"""Connection slots (open connections counted in all and per client address), and the
bounded ``Content-Length`` every HTTP peer of pihub (server or client) accepts.

What every server pihub runs (the HTTP API, the websocket, the TCP channel, the camera
stream) checks at accept: at most ``total`` connections at once, and at most
``per_address`` from one client address, so one host cannot take every slot. A server
asks :meth:`ConnectionSlots.take` for each accepted connection and closes the ones
refused; it gives the place back with :meth:`ConnectionSlots.give_back` when an admitted
connection closes. The warning about refused connections is logged at most
:data:`REFUSED_LOG_BURST` times per :data:`REFUSED_LOG_WINDOW_S`, with the number held
back: :meth:`ConnectionSlots.refusal_warning` says when, and how the line ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pihub.logs import LogLimiter

__all__ = ["MAX_LENGTH_DIGITS", "REFUSED_LOG_BURST", "REFUSED_LOG_WINDOW_S", "ConnectionSlots", "content_length",
           "per_address_limit"]

#: Warnings about refused connections: at most this many per window (seconds, real time).
REFUSED_LOG_BURST = 5
REFUSED_LOG_WINDOW_S = 60.0

#: Longest ``Content-Length`` value, in digits (10**18 bytes is more than any body).
MAX_LENGTH_DIGITS = 18


def content_length(value: str | bytes) -> int | None:
    """A ``Content-Length`` header's value (surrounding spaces already stripped) as bytes,
    or None when it is not 1 to :data:`MAX_LENGTH_DIGITS` ASCII decimal digits.

    ``int()`` would also take a sign, ``_``, spaces and other scripts' digits (``"\u0663"``),
    and a superscript (``"\u00b2"``) passes ``str.isdigit()`` but fails ``int()``: only
    ASCII ``0-9`` pass here.
    """
    if isinstance(value, str):
        if not value.isascii():
            return None
        value = value.encode("ascii")
    if not (1 <= len(value) <= MAX_LENGTH_DIGITS and value.isdigit()):  # bytes.isdigit(): ASCII 0-9 only
        return None
    return int(value)


def per_address_limit(max_connections: int) -> int:
    """Connections at most from one client address where only a total is configured (the
    TCP channel, the camera stream): half of ``max_connections``, at least 1."""
    return max(1, max_connections // 2)


class ConnectionSlots:
    """Open connections, in all and per address (thread-safe).

    Args:
        total: connections at most, >= 1.
        per_address: connections at most from one address, >= 1.

    Raises:
        ValueError: a limit below 1.

    Attributes:
        refused: connections :meth:`take` refused so far.
    """

    def __init__(self, total: int, per_address: int, clock: Callable[[], float] = time.monotonic) -> None:
        for name, value in (("total", total), ("per_address", per_address)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1 connection, not {value!r}")
        self.total, self.per_address = total, per_address
        self.refused = 0
        self._lock = threading.Lock()
        self._warnings = LogLimiter(REFUSED_LOG_BURST, REFUSED_LOG_WINDOW_S, clock)
        self._open = 0
        self._by_address: dict[str, int] = {}

    @property
    def open(self) -> int:
        """Connections admitted and not given back."""
        return self._open

    def of(self, address: str) -> int:
        """Connections from ``address`` admitted and not given back."""
        return self._by_address.get(address, 0)

    def take(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and counted in :attr:`refused`)
        when a limit is reached."""
        with self._lock:
            from_it = self._by_address.get(address, 0)
            if self._open >= self.total or from_it >= self.per_address:
                self.refused += 1
                return False
            self._open += 1
            self._by_address[address] = from_it + 1
            return True

    def refusal_warning(self) -> str | None:
        """Whether the server should warn about the refusal it just made (any thread).

        Returns:
            None while warnings are held back (at most :data:`REFUSED_LOG_BURST` per
            :data:`REFUSED_LOG_WINDOW_S` seconds of the clock); else how the warning line
            ends: ``""``, or ``"; N more refused since the last warning"``.
        """
        with self._lock:
            allowed, held = self._warnings.allow()
        if not allowed:
            return None
        return f"; {held} more refused since the last warning" if held else ""

    def give_back(self, address: str) -> None:
        """An admitted connection from ``address`` closed (call once per :meth:`take` that
        returned True)."""
        with self._lock:
            self._open -= 1
            left = self._by_address.get(address, 1) - 1
            if left > 0:
                self._by_address[address] = left
            else:
                self._by_address.pop(address, None)
