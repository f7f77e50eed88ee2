"""Connection slots: open connections counted in all and per client address.

What every server pihub runs (the HTTP API, the websocket, the TCP channel) checks at
accept: at most ``total`` connections at once, and at most ``per_address`` from one
client address, so one host cannot take every slot. A server asks :meth:`take` for each
accepted connection and closes the ones refused; it gives the place back with
:meth:`give_back` when an admitted connection closes.
"""

from __future__ import annotations

import threading

__all__ = ["ConnectionSlots"]


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

    def __init__(self, total: int, per_address: int) -> None:
        for name, value in (("total", total), ("per_address", per_address)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1 connection, not {value!r}")
        self.total, self.per_address = total, per_address
        self.refused = 0
        self._lock = threading.Lock()
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
