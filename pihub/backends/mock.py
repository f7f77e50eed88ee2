"""The mock backend: scripted and pushed events, with a history for asserts.

Chosen by config like any real backend (``mock:`` section), it stands in for hardware on a
laptop or in CI: ``make demo`` uses it so that hooks visibly fire, and tests drive it::

    mock:
      script:                       # played once after start (repeat: true loops it)
        - {after: 1.0, event: {type: GPIOEvent, pin: 17, value: 1}}
        - {after: 0.5, event: {type: GPIOEvent, pin: 17, value: 0}}
      repeat: true
      outputs: {porch_light: false} # named outputs hooks can drive with mock.set

Actions: ``mock.emit(type, **args)`` publishes an event as if the hardware had produced
it; ``mock.set(name, value)`` drives a named output (logged, recorded);
``mock.history()`` returns what happened, newest last. They touch memory only and are
declared ``blocking=False``, as GPIO outputs are, so the mock rig exercises the same inline
hook path as real pins (:mod:`pihub.engine.dispatcher`).

``after`` is in seconds of the backend's clock, relative to the previous step (to start
for the first).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, ClassVar

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit
from pihub.clock import Clock
from pihub.config.schema import Field, Schema
from pihub.errors import ConfigProblem, ConfigProblems, UnknownEventType
from pihub.events import CATALOGUE, Event
from pihub.plugin import action

_STEP = Schema(
    {
        "after": Field(float, default=0.0, min=0.0, doc="seconds after the previous step"),
        "event": Field(dict, doc="event attributes, with 'type' (a catalogue name)"),
    }
)


class MockBackend(Backend):
    """Scripted events and recorded outputs, for demos and tests."""

    name: ClassVar[str] = "mock"
    config_schema: ClassVar[Schema] = Schema(
        {
            "script": Field(list, default=[], doc="steps {after: seconds, event: {type: ..., ...}}"),
            "repeat": Field(bool, default=False, doc="play the script in a loop"),
            "outputs": Field(dict, default={}, doc="named outputs and their initial values"),
            "history_size": Field(int, default=1000, min=1, max=1_000_000, doc="entries kept"),
        },
        doc="Hardware stand-in: scripted events, named outputs, history.",
    )

    def __init__(self, config: dict[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config, clock=clock)
        self.script: list[tuple[float, Event]] = []
        problems: list[ConfigProblem] = []
        for i, step in enumerate(self.config.get("script", [])):
            values, step_problems = _STEP.validate(step, ("script", i))
            if step_problems:
                problems.extend(step_problems)
                continue
            ev = dict(values["event"])
            type_name = ev.pop("type", None)
            if not isinstance(type_name, str):
                problems.append(ConfigProblem(("script", i, "event"), "needs a 'type' (an event type name)"))
                continue
            try:
                et = CATALOGUE.get(type_name)
            except UnknownEventType as e:
                problems.append(ConfigProblem(("script", i, "event", "type"), str(e)))
                continue
            self.script.append((float(values["after"]), Event(et, ev, 0, self.name)))
        if problems:
            raise ConfigProblems(problems)
        self.repeat = bool(self.config.get("repeat", False))
        self.outputs: dict[str, Any] = dict(self.config.get("outputs", {}))
        self._history: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=int(self.config.get("history_size", 1000)))
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None

    def open(self, emit: Emit) -> None:
        """Start playing the script (if any) on a thread named ``pihub-mock``."""
        self._emit = emit
        self.status = BackendStatus.RUNNING
        if self.script:
            self._thread = BackendThread("pihub-mock", self._play)
            self._thread.start()

    def close(self) -> None:
        """Stop the script thread; idempotent."""
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        self._emit = None
        self.status = BackendStatus.STOPPED

    def _play(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            for after, template in self.script:
                if self.clock.wait(stopping, after):
                    return
                self._publish(Event(template.type, dict(template.args), time.monotonic_ns(), self.name))
            if not self.repeat:
                return

    def _publish(self, event: Event) -> bool:
        emit = self._emit
        if emit is None:
            raise RuntimeError("mock backend is not open")
        ok = emit(event)
        self._record("event", type=event.type.name, args=event.args, delivered=ok)
        return ok

    def _record(self, kind: str, **fields: Any) -> None:
        with self._lock:
            # t: wall-clock seconds; mono_ns: the clock of events' ts_ns (edge -> action timing)
            self._history.append({"kind": kind, "t": time.time(), "mono_ns": time.monotonic_ns(), **fields})

    @action(blocking=False)
    def emit(self, type: str, **args: Any) -> dict[str, Any]:  # noqa: A002 - Platypush arg name
        """Publish an event as if the hardware produced it.

        Args:
            type: event type name (``GPIOEvent``, ``SensorDataChangeEvent``...).
            **args: the event's attributes.

        Returns:
            ``{"delivered": bool}``: false when the bus was full and the event was dropped.
        """
        ev = Event(CATALOGUE.get(type), args, time.monotonic_ns(), self.name)
        return {"delivered": self._publish(ev)}

    @action(blocking=False)
    def set(self, name: str, value: Any) -> dict[str, Any]:  # noqa: A003 - action name
        """Drive a named output (a stand-in for an LED or relay).

        Args:
            name: output name; new names are created.
            value: any JSON value (true/false for on/off).

        Returns:
            ``{"name": name, "value": value, "previous": old value or null}``.
        """
        with self._lock:
            previous = self.outputs.get(name)
            self.outputs[name] = value
        self.log.info("output %s = %r", name, value)
        self._record("output", name=name, value=value)
        return {"name": name, "value": value, "previous": previous}

    def describe_entities(self) -> list[dict[str, Any]]:
        """The named outputs and their values, for the web panel: ``{name, value, kind:
        "output", set}``, ``set`` being the action that drives one (``mock.set``)."""
        with self._lock:
            items = list(self.outputs.items())
        return [{"name": name, "value": value, "kind": "output",
                 "set": {"action": "mock.set", "args": {"name": name}, "value_arg": "value"}}
                for name, value in items]

    @action(blocking=False)
    def get(self, name: str) -> Any:
        """The current value of a named output (null when never set)."""
        with self._lock:
            return self.outputs.get(name)

    @action(blocking=False)
    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` recorded events and output changes, oldest first: ``{kind, t
        (wall-clock s), mono_ns (time.monotonic_ns(), as events' ts_ns), ...}``."""
        with self._lock:
            items = list(self._history)
        return items[-limit:] if limit > 0 else []
