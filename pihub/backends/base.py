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
    * set ``config_schema`` (validated by the config loader, and by ``Backend.__init__``,
      whose result is ``self.config``: subclasses check only rules across keys);
    * override :meth:`validate_environment` to raise :class:`BackendUnavailable` when a
      library or device is missing, so the hub marks the backend failed and runs on;
    * expose actions with :func:`pihub.plugin.action`.

Time: every time-dependent rule of a backend (debounce and sequence windows, throttles,
timers, poll intervals, reconnect back-offs) uses ``self.clock`` (a :class:`pihub.clock.Clock`:
``now()``, ``wait(stopping, seconds)``, ``call_later(delay, fn)``), never ``time`` or
``sleep`` directly, so tests drive it with a :class:`pihub.clock.ManualClock`.

Where fakes live: a simulator that runs as its own process (a fake daemon, a virtual
card, a device on a pty) is in ``hw-mocks/``, started by one command. An in-process fake
driver (gpiozero's MockFactory, the bit-level MCP3008) is a driver like any other: it
lives beside its backend, config chooses it (``driver: mock``), and the backend's own
tables and limits never come from it (the fake imports them from the backend).

Lifecycle, driven by the hub: ``__init__(config)`` -> ``validate_environment()`` ->
``open(emit)`` -> ... -> ``close()``. ``status`` tells where it is (see
:class:`BackendStatus`); failures carry a reason in ``error``.

A backend that keeps working while its device is missing or failing (it retries: a
serial sensor unplugged, an ADC that stopped answering) calls :meth:`Backend.report_degraded`
with the reason, and :meth:`Backend.report_recovered` once the device works again. Those two
are the only way a backend changes its status after ``open``: the hub hands over a status
listener once ``open`` has returned (:meth:`Backend.bind_status_listener`) and publishes a
``BackendStatusEvent`` on each change, so a backend never touches the bus itself.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pihub.clock import SYSTEM, Clock
from pihub.errors import ConfigProblems
from pihub.events import Event
from pihub.logs import escape_controls
from pihub.plugin import Plugin

#: What a backend calls to publish an event; returns False when the event was dropped
#: (the bus was full). Safe to call from any thread.
Emit = Callable[[Event], bool]


def emit_counted(emit: Emit | None, event: Event, counts: dict[str, int]) -> bool:
    """Publish ``event`` through ``emit`` and count it in ``counts``: ``events`` when the
    bus took it, ``dropped_events`` when it was full. Nothing happens while ``emit`` is
    None (the backend is not open). The caller keeps ``counts`` to one thread, or locks.

    Returns:
        Whether the bus took it.
    """
    if emit is None:
        return False
    if emit(event):
        counts["events"] += 1
        return True
    counts["dropped_events"] += 1
    return False


#: The hub's status callback (see :meth:`Backend.bind_status_listener`).
StatusListener = Callable[["Backend"], None]

# One lock for every backend's status and error: changes are rare, and one module-level
# lock needs nothing from subclasses' ``__init__``. Reentrant: a listener that publishes
# synchronously (replay) may run code that reports another status on the same thread.
_STATUS_LOCK = threading.RLock()


class BackendStatus(enum.StrEnum):
    """Where a backend is in its lifecycle.

    ``degraded``: open and retrying, but its device is missing or failing (``error`` says
    why); it goes back to ``running`` by itself when the device works again. ``failed:
    ...`` statuses are final until the hub restarts.
    """

    CONFIGURED = "configured"
    RUNNING = "running"
    DEGRADED = "degraded"
    STOPPED = "stopped"
    DISABLED = "disabled"
    FAILED_LOAD = "failed: load error"
    FAILED_CONFIG = "failed: config error"
    FAILED_ENVIRONMENT = "failed: unavailable"
    FAILED_RUNTIME = "failed: runtime error"


class Backend(Plugin):
    """Base class of hardware backends (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    _status_listener: StatusListener | None = None

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        """Validate ``config`` with :attr:`config_schema` into :attr:`config` (defaults filled in).

        A subclass calls this first, then checks what the schema cannot (rules across
        keys), raising :class:`~pihub.errors.ConfigProblems` for those.

        Raises:
            ConfigProblems: (a ValueError) every schema problem of the section.
        """
        values = dict(config or {})
        if self.config_schema is not None:
            values, problems = self.config_schema.validate(values, ())
            errors = [p for p in problems if not getattr(p, "warning", False)]
            if errors:
                raise ConfigProblems(errors)
        #: the section, validated: every key of the schema, with its default when absent.
        self.config: dict[str, Any] = values
        #: the time every window, timer, poll interval and back-off of the backend runs on
        #: (:mod:`pihub.clock`); the hub hands over its own, tests a ManualClock.
        self.clock: Clock = SYSTEM if clock is None else clock
        self.status = BackendStatus.CONFIGURED
        self.error: str | None = None
        self.log = logging.getLogger(f"pihub.backends.{self.name}")

    def bind_status_listener(self, listener: StatusListener) -> None:
        """Hand over the hub's status callback; it is called once now, then on each change.

        The hub calls this once :meth:`open` has returned, so the first call reports the
        status as it is then (``running``, or already ``degraded``), and no change made by
        a reader thread meanwhile is lost or reported out of order. ``listener(backend)``
        runs with the status lock held, so ``status`` and ``error`` are consistent when it
        reads them and calls arrive in the order of the changes; it must be quick and must
        not wait for other threads (the hub publishes one event, which never blocks).
        """
        with _STATUS_LOCK:
            self._status_listener = listener
            self._notify_status()

    def report_degraded(self, reason: str) -> bool:
        """Say that the device is missing or failing and the backend is retrying (any thread).

        Moves ``running`` (or ``degraded`` with another reason) to ``degraded`` with
        ``error = reason``; the reason names the device and what to check, never a
        secret. Ignored in any other status (a report racing :meth:`close` does not revive a
        stopped backend).

        Returns:
            True when the status or the reason changed (the listener was called); False
            for a repeat of the same reason, or when ignored.
        """
        return self._move(BackendStatus.DEGRADED, reason, (BackendStatus.RUNNING, BackendStatus.DEGRADED))

    def report_recovered(self) -> bool:
        """Say that the device works again (any thread): ``degraded`` -> ``running``, no error.

        Returns:
            True when the backend was degraded (the listener was called); False otherwise.
        """
        return self._move(BackendStatus.RUNNING, None, (BackendStatus.DEGRADED,))

    def report_failed(self, reason: str) -> bool:
        """Say that the backend stopped working for good (any thread): ``running`` or
        ``degraded`` -> ``failed: runtime error`` with ``error = reason`` (never a secret);
        ignored in any other status. :class:`BackendThread` calls it when its loop raises.

        Returns:
            True when the status changed (the listener was called).
        """
        return self._move(BackendStatus.FAILED_RUNTIME, reason, (BackendStatus.RUNNING, BackendStatus.DEGRADED))

    def _move(self, to: BackendStatus, reason: str | None, allowed_from: tuple[BackendStatus, ...]) -> bool:
        """``status, error = to, reason`` if the status is one of ``allowed_from`` and that
        changes something; the listener is told. Returns whether it changed."""
        with _STATUS_LOCK:
            if self.status not in allowed_from or (self.status, self.error) == (to, reason):
                return False
            self.status, self.error = to, reason
            self._notify_status()
            return True

    def _notify_status(self) -> None:
        """Call the listener, if any (the caller holds the status lock); never raises."""
        listener = self._status_listener
        if listener is None:
            return
        try:
            listener(self)
        except Exception:
            self.log.exception("status listener failed for backend %s", self.name)

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
        with _STATUS_LOCK:
            return {"name": self.name, "status": str(self.status), "error": self.error}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.status}>"


#: What a request channel hands each message it receives (the hub's
#: :meth:`pihub.ingress.RequestGate.handle`): ``handle(message, channel=, peer=, token=,
#: emit=, on_accepted=)`` returns the response envelope to send back, or None (an event was emitted).
HandleRequest = Callable[..., "dict[str, Any] | None"]


class RequestChannel(Backend):
    """A backend that receives requests (TCP, Redis, MQTT RPC), not only device events.

    The hub binds its request gate (:meth:`bind_requests`) before :meth:`open`; the
    channel passes every message it reads to :meth:`handle_request`, with the ``emit`` it
    was opened with, and sends back what that returns. Parsing, authentication, the
    ``target`` check and running the request are the gate's (:mod:`pihub.ingress`), the
    same for every channel; an event posted on the channel is emitted through the
    channel's own ``emit``, with the channel as its source, like any backend's event.
    """

    _handle: HandleRequest | None = None
    #: the hub's device id (a channel that names its topics after it: MQTT); "" alone
    device_id: str = ""

    def bind_requests(self, handle: HandleRequest, device_id: str = "") -> None:
        """Hand over the hub's request gate and device id (before :meth:`open`)."""
        self._handle = handle
        self.device_id = device_id

    def handle_request(self, message: bytes | str | Mapping[str, Any], *, emit: Emit, peer: str = "",
                       token: str | None = None,
                       on_accepted: Callable[[], object] | None = None) -> dict[str, Any] | None:
        """Run one message through the gate; the response envelope, or None for an event.

        ``on_accepted()`` is called when the gate accepted the sender's token (with the
        ``control`` scope), whatever becomes of the message then.

        Raises:
            RuntimeError: no gate was bound (the backend runs outside a hub).
        """
        if self._handle is None:
            raise RuntimeError(f"the {self.name} backend has no request gate: it must run in a hub")
        return self._handle(message, channel=self.name, peer=peer, token=token, emit=emit, on_accepted=on_accepted)


class BackendThread(threading.Thread):
    """A named daemon thread with a ``stopping`` event, for backends' reader loops.

    ``target(stopping)`` must return soon after ``stopping`` is set; :meth:`stop` sets it
    and joins with a timeout, raising ``RuntimeError`` naming the thread if it did not end.
    An exception that escapes ``target`` (a bug, or input a loop did not expect) is logged
    once with its traceback, and when ``target`` is a method of a :class:`Backend` that
    backend is reported failed with the reason (:meth:`Backend.report_failed`), instead of
    the thread ending silently while the status still says ``running``.
    """

    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self._target_fn = target

    def run(self) -> None:
        try:
            self._target_fn(self.stopping)
        except Exception as e:
            owner = getattr(self._target_fn, "__self__", None)
            log = owner.log if isinstance(owner, Backend) else logging.getLogger("pihub.backends")
            log.exception("thread %s ended on an unexpected error", self.name)
            if isinstance(owner, Backend):
                owner.report_failed(f"thread {self.name} ended: {type(e).__name__}: {escape_controls(str(e), 200)}")

    def stop(self, timeout: float = 5.0) -> None:
        """Signal and join; ``timeout`` in seconds."""
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
            if self.is_alive():
                raise RuntimeError(f"thread {self.name} did not stop within {timeout} s")
