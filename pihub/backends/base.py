"""The backend contract: how hardware edges become events.

A backend owns one device family (GPIO pins, an ADC, a serial sensor, MIDI ports...) and
the threads that read it. It imports nothing from the bus, the engine or the web: the hub
hands it an ``emit`` callable in :meth:`Backend.open` and registers its ``@action``
methods as the plugin of the same name (``gpio.on``, ``mock.emit``).

Subclasses MUST:
    * set ``name`` (the config section and action plugin name);
    * implement :meth:`open` (start producing; return promptly, work in named threads)
      and :meth:`close` (stop and join those threads, release devices; idempotent).

Subclasses MAY:
    * set ``config_schema`` (validated by the config loader; the values arrive as
      ``config`` in ``__init__``);
    * override :meth:`validate_environment` to raise :class:`BackendUnavailable` when a
      library or device is missing, so the hub marks the backend failed and runs on;
    * expose actions with :func:`pihub.plugin.action`.

Lifecycle, driven by the hub: ``__init__(config)`` -> ``validate_environment()`` ->
``open(emit)`` -> ... -> ``close()``. ``status`` tells where it is (see
:class:`BackendStatus`); failures carry a reason in ``error``.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pihub.events import Event
from pihub.plugin import Plugin

#: What a backend calls to publish an event; returns False when the event was dropped
#: (the bus was full). Safe to call from any thread.
Emit = Callable[[Event], bool]


class BackendStatus(enum.StrEnum):
    """Where a backend is in its lifecycle."""

    CONFIGURED = "configured"
    RUNNING = "running"
    STOPPED = "stopped"
    DISABLED = "disabled"
    FAILED_LOAD = "failed: load error"
    FAILED_CONFIG = "failed: config error"
    FAILED_ENVIRONMENT = "failed: unavailable"
    FAILED_RUNTIME = "failed: runtime error"


class Backend(Plugin):
    """Base class of hardware backends (see the module docstring for the contract)."""

    name: ClassVar[str] = ""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.status = BackendStatus.CONFIGURED
        self.error: str | None = None
        self.log = logging.getLogger(f"pihub.backends.{self.name}")

    def validate_environment(self) -> None:
        """Raise :class:`pihub.errors.BackendUnavailable` if the library/device is missing."""

    def open(self, emit: Emit) -> None:  # pragma: no cover - abstract
        """Start producing events through ``emit``. MUST return promptly."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        """Stop producing, join threads, release devices. MUST be idempotent."""
        raise NotImplementedError

    def describe_status(self) -> dict[str, Any]:
        """Status for ``GET /status`` and logs: name, status, error."""
        return {"name": self.name, "status": str(self.status), "error": self.error}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.status}>"


class BackendThread(threading.Thread):
    """A named daemon thread with a ``stopping`` event, for backends' reader loops.

    ``target(stopping)`` must return soon after ``stopping`` is set; :meth:`stop` sets it
    and joins with a timeout, raising ``RuntimeError`` naming the thread if it did not end.
    """

    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self._target_fn = target

    def run(self) -> None:
        self._target_fn(self.stopping)

    def stop(self, timeout: float = 5.0) -> None:
        """Signal and join; ``timeout`` in seconds."""
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
            if self.is_alive():
                raise RuntimeError(f"thread {self.name} did not stop within {timeout} s")
