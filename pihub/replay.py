"""``pihub replay``: feed recorded events through the hooks, without hardware.

Input: one event per line, either a Platypush envelope
(``{"type": "event", "args": {"type": "GPIOEvent", "pin": 17, "value": 1}}``) or the short
form (``{"type": "GPIOEvent", "pin": 17, "value": 1}``). Blank lines and lines starting
with ``#`` are skipped.

Output: one JSON line per event::

    {"event": {...envelope...},
     "fired": ["porch_light"],
     "not_fired": {"doorbell": "pin: 17 != 4"},
     "actions": [{"hook": "porch_light", "action": "mock.set", "args": {...},
                  "output": ..., "errors": [], "skipped": null}],
     "hook_errors": {"porch_light": ["hook 'porch_light': [1]: name 'nosuch' is not defined"]}}

``hook_errors`` is there only when a fired hook's run had errors that no action record
shows: the ``${...}`` expression, loop value or ``while`` guard that ended its steps. They
are logged as in the daemon, too.

Events that the hooks' actions publish (``event.fire``...) are replayed after the line
that caused them, with ``"caused_by": <line number>``. At most :data:`MAX_CAUSED` of them
per input line: a hook that fires an event its own hooks answer again would run forever.
Past the cap the events are dropped, and the line gets an error record saying how many.

Actions of plugins with effects outside pihub (hardware backends, ``shell``) are not run
unless ``run_actions`` is true; they are listed with ``"skipped"`` saying so. Everything
else runs for real, but on a scratch copy of the state (a temporary work directory), so a
replay never changes the daemon's variables; with ``run_actions`` the real work directory
and the backends are used.

A line that is not a valid event is reported as ``{"line": n, "error": "..."}`` and
counted, and replay goes on with the next line; :func:`replay` returns the number of such
lines (a line whose caused events hit the cap counts too). Not valid: a line that is not
UTF-8, longer than :data:`MAX_LINE_BYTES` (:func:`read_lines` skips it without holding it),
not JSON, nested deeper than the JSON decoder's recursion limit, not a JSON object, or not
an event envelope with an object ``args`` and a string event ``type`` from the catalogue.
Lines are decoded and checked as the wire's messages are (:func:`pihub.messages.loads`,
:func:`pihub.messages.parse`): ``NaN``, ``Infinity`` and ``1e999`` become null, in the
trace and for the hooks alike.
"""

from __future__ import annotations

import collections
import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, Final, TextIO

from pihub.engine.procedures import Runner, procedure_name
from pihub.errors import MessageError
from pihub.events import Event, approx_size, new_event_id
from pihub.messages import Response, dumps, json_kind, loads, parse

#: The longest input line read, in bytes (terminator excluded): a recorded event is a few
#: hundred bytes, and a longer line is skipped by :func:`read_lines` in chunks of this size.
MAX_LINE_BYTES: Final = 1 << 20

#: The most events the hooks may cause (``event.fire``...) from one input line, counting
#: the events those cause in turn; the rest are dropped and reported on that line.
MAX_CAUSED: Final = 1000

# ------------------------------------------------------------------------- the trace
# One event's trace has the same shape whether ``pihub replay`` prints it or the running
# daemon serves it (``GET /events/<id>/trace``, :class:`LiveTraces`): the functions below
# build it for both.


def action_record(hook: str, action: str, args: Any) -> dict[str, Any]:
    """The trace record of one action a hook runs, before it runs (see the module docstring)."""
    return {"hook": hook, "action": action, "args": args, "output": None, "errors": [], "skipped": None}


def finish_action_record(rec: dict[str, Any], resp: Response) -> None:
    """Fill ``rec`` (:func:`action_record`) with the action's response."""
    rec["output"] = resp.output
    rec["errors"] = resp.errors


def unshown_errors(records: Sequence[Mapping[str, Any]], resp: Response) -> list[str]:
    """The errors of a hook's run (``resp``) that none of its action ``records`` shows:
    the ``${...}`` expression, loop value or ``while`` guard that ended its steps."""
    shown = {str(e) for rec in records for e in rec["errors"]}
    return [str(e) for e in resp.errors if str(e) not in shown]


def trace_line(event: Mapping[str, Any], fired: Sequence[str], not_fired: Mapping[str, str],
               actions: Sequence[Mapping[str, Any]], hook_errors: Mapping[str, list[str]]) -> dict[str, Any]:
    """One event's trace: ``{"event", "fired", "not_fired", "actions"[, "hook_errors"]}``.

    Args:
        event: the event envelope (:meth:`pihub.events.Event.to_dict`).
        fired: the names of the hooks it fired, in the order they started.
        not_fired: every other hook's name -> the first condition that failed
            (:meth:`pihub.engine.rules.Matcher.explain`).
        actions: the action records (:func:`action_record`), in the order they ran.
        hook_errors: hook name -> errors no action record shows (:func:`unshown_errors`);
            left out when empty.
    """
    line: dict[str, Any] = {"event": dict(event), "fired": list(fired), "not_fired": dict(not_fired),
                            "actions": [dict(a) for a in actions]}
    if hook_errors:
        line["hook_errors"] = {k: list(v) for k, v in hook_errors.items()}
    return line


@dataclasses.dataclass(frozen=True, slots=True)
class LongLine:
    """A line :func:`read_lines` skipped because it is longer than ``cap`` bytes."""

    cap: int


def read_lines(stream: BinaryIO, cap: int = MAX_LINE_BYTES) -> Iterator[bytes | LongLine]:
    """The lines of a binary ``stream``, one item per line, in at most ``cap + 2`` bytes of memory.

    A line ends with ``\n`` (or ``\r\n``), or at the end of the stream; a lone ``\r`` does
    not end one.

    Args:
        stream: read with ``readline(size)`` (a buffered binary file, ``sys.stdin.buffer``).
        cap: the longest line yielded, in bytes, its terminator excluded.

    Yields:
        Each line's bytes (with its terminator), or a :class:`LongLine` for a line longer
        than ``cap``: that line is read in chunks of ``cap`` bytes and thrown away.
    """
    while line := stream.readline(cap + 2):  # room for the longest line and its "\r\n"
        ended = line.endswith(b"\n")
        body = len(line) - (2 if line.endswith(b"\r\n") else 1 if ended else 0)
        if body <= cap:
            yield line
            continue
        if not ended:
            while (rest := stream.readline(cap)) and not rest.endswith(b"\n"):
                pass
        yield LongLine(cap)


def _decode_line(line: str | bytes | LongLine) -> str:
    """One input line as text; raises MessageError when it is too long or not UTF-8."""
    if isinstance(line, LongLine):
        raise MessageError(f"line is longer than {line.cap} bytes, the longest replay reads; skipped")
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(f"line is not UTF-8 text: byte 0x{line[e.start]:02x} at byte offset {e.start} "
                           f"({e.reason})") from None


def parse_event_line(line: str) -> Event:
    """Parse one line (envelope or short form); raises MessageError naming the problem."""
    try:
        obj = loads(line)
    except MessageError as e:
        raise MessageError(f"the line is {e}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"the line must be a JSON object, not {json_kind(obj, show=True)}")
    if obj.get("type") not in ("event", "request") and "type" in obj:
        obj = {"type": "event", "args": obj}  # the short form: the event's own fields
    msg = parse(obj, default_origin="replay")
    if not isinstance(msg, Event):
        raise MessageError("a request is not an event; replay takes events")
    return msg


def replay(config: Any, lines: Iterable[str | bytes | LongLine], out: TextIO, *,
           run_actions: bool = False) -> int:
    """Replay ``lines`` through ``config``'s hooks, writing the trace to ``out``.

    Args:
        config: the loaded config whose hooks run.
        lines: the input, one item per line: text, UTF-8 bytes, or :class:`LongLine`
            (a file's lines as :func:`read_lines` gives them).
        out: where the JSON trace lines go.
        run_actions: run the actions that act outside pihub, on the real work directory.

    Returns:
        The number of input lines that were not valid events or caused more than
        :data:`MAX_CAUSED` events.
    """
    from pihub.hub import Hub

    with tempfile.TemporaryDirectory(prefix="pihub-replay-") as tmp:
        if not run_actions:
            config = dataclasses.replace(config, workdir=tmp)
        # backends are built (to know which actions act on hardware) but opened only with run_actions
        hub = Hub(config)
        try:
            if run_actions:
                hub.start()
            return _Replayer(hub, run_actions).run(lines, out)
        finally:
            hub.stop()


class _Replayer:
    def __init__(self, hub: Any, run_actions: bool) -> None:
        self.hub = hub
        self.run_actions = run_actions
        self.pending: collections.deque[tuple[Event, int]] = collections.deque()
        self.records: list[dict[str, Any]] = []
        self.current_hook = ""
        self.current_line = 0
        self.caused = 0  # events the hooks published since the current input line, up to MAX_CAUSED
        self.dropped = 0  # and those dropped past the cap
        self.runner = Runner(self._execute, self._spawn_inline)
        hub.publish_sink = self._capture

    def _capture(self, event: Event) -> bool:
        if self.caused >= MAX_CAUSED:
            self.dropped += 1
            return True
        self.caused += 1
        self.pending.append((event, self.current_line))
        return True

    def run(self, lines: Iterable[str | bytes | LongLine], out: TextIO) -> int:
        bad = 0
        for n, line in enumerate(lines, 1):
            try:
                text = _decode_line(line).strip()
                if not text or text.startswith("#"):
                    continue
                event = parse_event_line(text)
            except MessageError as e:
                bad += 1
                out.write(dumps({"line": n, "error": str(e)}) + "\n")
                continue
            self.current_line = n
            self.caused = self.dropped = 0
            self._one(event, out, None)
            while self.pending:
                ev, cause = self.pending.popleft()
                self._one(ev, out, cause)
            if self.dropped:
                bad += 1
                out.write(dumps({"line": n, "error": f"the hooks caused more than {MAX_CAUSED} events from "
                                 f"this line (the cap): {self.dropped} more dropped; does a hook fire an event "
                                 f"that fires it again?"}) + "\n")
        return bad

    def _one(self, event: Event, out: TextIO, caused_by: int | None) -> None:
        fired, not_fired = self.hub.matcher.explain(event)
        self.records = []
        hook_errors: dict[str, list[str]] = {}
        for hook in fired:
            self.current_hook = hook.name
            first = len(self.records)
            resp = self.runner.run_hook(hook, event, hook.condition.match(event).captures)
            unshown = unshown_errors(self.records[first:], resp)
            if unshown:
                hook_errors[hook.name] = unshown
        line = trace_line(event.to_dict(self.hub.device_id), [h.name for h in fired], not_fired,
                          self.records, hook_errors)
        if caused_by is not None:
            line["caused_by"] = caused_by
        out.write(dumps(line) + "\n")
        out.flush()

    def _spawn_inline(self, fn: Any) -> None:
        fn()

    def _execute(self, action: str, args: Any, context: Mapping[str, Any], target: str = "") -> Response:
        rec = action_record(self.current_hook, action, args)
        self.records.append(rec)
        resp: Response
        if action.startswith("procedure."):
            name = procedure_name(action)
            proc = self.hub.procedures.get(name)
            if proc is None:
                resp = self.hub.call_procedure(name, args)  # the error message
            else:
                resp = self.runner.call(proc, args, context=context)
        elif not self.run_actions and self.hub.registry.has_side_effects(action):
            rec["skipped"] = "acts outside pihub (hardware, shell): run with --run-actions"
            return Response(output=None)
        else:
            resp = self.hub.registry.execute(action, args)
        finish_action_record(rec, resp)
        return resp


# -------------------------------------------------------------------- the live traces
#: Bytes the daemon's traces keep at most by default (:class:`LiveTraces`, estimated).
MAX_TRACE_BYTES: Final = 16 << 20
#: Bytes charged per action record besides its args, output and errors: the record dict.
_RECORD_BYTES: Final = 400


@dataclasses.dataclass(slots=True)
class _Trace:
    """What the daemon saw of one event (guarded by :attr:`LiveTraces._lock`)."""

    event: Event
    started: list[str] = dataclasses.field(default_factory=list)
    finished: int = 0
    pending: int = 0  # carried parts (fork iterations, async procedures) not run yet
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    hook_errors: dict[str, list[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class _Run:
    """One hook running on the current thread."""

    hook: str
    trace: _Trace | None
    first: int = 0


class Carried:
    """A task handed to another thread by :meth:`LiveTraces.carry`: call it (once) to run it
    there inside the hook's trace, or :meth:`drop` it when it will never run."""

    __slots__ = ("_done", "_fn", "_traces", "run")

    def __init__(self, traces: LiveTraces, fn: Callable[[], Any], run: _Run | None) -> None:
        self._traces = traces
        self._fn = fn
        self.run = run
        self._done = False

    def __call__(self) -> Any:
        local = self._traces._local
        previous: _Run | None = getattr(local, "run", None)
        local.run = self.run
        try:
            return self._fn()
        finally:
            local.run = previous
            self._finish()

    def drop(self) -> None:
        """It will not run (the pool refused it)."""
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._traces._carried(self)


class LiveTraces:
    """The running daemon's event traces, as ``pihub replay`` prints them (``GET /events/<id>/trace``).

    A bounded ring of the last ``capacity`` events the dispatcher handed to
    :meth:`listener`, by event id, the oldest dropped first, holding at most
    ``max_bytes`` by estimate: each event is charged its
    :meth:`pihub.events.Event.approx_size` by :meth:`charge`, and each action record its
    :func:`pihub.events.approx_size` when the action is done; past the budget the oldest
    events are dropped (the newest is kept whatever its size), as if by the count bound,
    so a dropped event's trace is None (the panel's 404). For each, the hooks that ran
    and a record of every action their steps ran (:func:`action_record`), on whichever
    thread ran the hook: :meth:`begin`/:meth:`end` bracket a hook's run and mark the
    thread, :meth:`action_started`/:meth:`action_done` bracket each action on it.

    Which hooks an event fires and the first failed condition of every other hook are
    worked out when a trace is asked for (:meth:`trace`, with the pure
    ``Matcher.explain``), never on the dispatcher thread: there, :meth:`listener` costs
    one dict insert under a lock whatever the number of hooks.

    A hook's asynchronous parts (``fork`` iterations, ``procedure.async.*``), which run on
    worker threads after the hook returned, are handed to the pool through :meth:`carry`:
    their actions join the hook's record, and the trace stays incomplete until they ran.

    It also counts, for every event kept or not, how many times each hook fired and
    when it last did (:meth:`hook_stats`, the read-only hooks view).

    Args:
        capacity: events kept, >= 1.
        clock: wall-clock seconds since the epoch (``last_fired``).
        max_bytes: bytes the kept events and their action records may hold, estimated, >= 1.

    Raises:
        ValueError: ``capacity`` or ``max_bytes`` < 1.
    """

    def __init__(self, capacity: int = 1000, clock: Callable[[], float] = time.time, *,
                 max_bytes: int = MAX_TRACE_BYTES) -> None:
        if capacity < 1:
            raise ValueError(f"trace capacity must be >= 1 event, not {capacity!r}")
        if max_bytes < 1:
            raise ValueError(f"trace max_bytes must be >= 1 byte, not {max_bytes!r}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        #: bytes charged per kept event id (the same keys as _events), and their sum
        self._charged: dict[str, int] = {}
        self.bytes = 0
        #: events dropped for max_bytes (not for capacity)
        self.evicted_for_bytes = 0
        self._clock = clock
        self._lock = threading.Lock()
        # an event no hook has started for yet is kept as itself; its _Trace is made by the
        # first begin(): most events fire nothing, and the listener runs on the dispatcher
        self._events: collections.OrderedDict[str, _Trace | Event] = collections.OrderedDict()
        self._fired: dict[str, tuple[int, float]] = {}
        self._local = threading.local()

    def listener(self, event: Event) -> None:
        """Keep ``event`` (dispatcher thread, before its hooks start); gives it its id.

        Its bytes are charged later, by :meth:`charge` (an observer, after the hooks
        started): estimating them here would delay the hooks' actions.
        """
        if not event.id:
            event.id = new_event_id()
        with self._lock:
            self._events[event.id] = event
            if len(self._events) > self.capacity:
                old, _ = self._events.popitem(last=False)
                self.bytes -= self._charged.pop(old, 0)

    def charge(self, event: Event) -> None:
        """Charge a kept ``event``'s estimated size and drop the oldest events past
        ``max_bytes`` (dispatcher thread, after :meth:`listener` and the event's hooks)."""
        size = event.approx_size()
        with self._lock:
            if event.id not in self._events:
                return  # already gone by the count bound
            # added to what its inline hooks' action records were charged already
            self._charged[event.id] = self._charged.get(event.id, 0) + size
            self.bytes += size
            self._evict_locked()

    def _evict_locked(self) -> None:
        """Drop the oldest events while over ``max_bytes``, the newest excepted (lock held)."""
        while self.bytes > self.max_bytes and len(self._events) > 1:
            old, _ = self._events.popitem(last=False)
            self.bytes -= self._charged.pop(old, 0)
            self.evicted_for_bytes += 1

    def begin(self, hook: str, event: Event) -> _Run | None:
        """Hook ``hook`` starts running for ``event`` on this thread.

        Returns:
            What :meth:`end` needs back (the run this one interrupts, if any).
        """
        now = self._clock()
        with self._lock:
            n, _ = self._fired.get(hook, (0, 0.0))
            self._fired[hook] = (n + 1, now)
            kept = self._events.get(event.id) if event.id else None
            if isinstance(kept, Event):  # the first hook for it: the same key keeps its place
                kept = self._events[event.id] = _Trace(kept)
            trace = kept
            if trace is not None:
                trace.started.append(hook)
                first = len(trace.actions)
            else:
                first = 0
        previous: _Run | None = getattr(self._local, "run", None)
        self._local.run = _Run(hook, trace, first)
        return previous

    def end(self, previous: _Run | None, resp: Response | None) -> None:
        """The hook :meth:`begin` started has ended with ``resp`` (None: it raised)."""
        run: _Run | None = getattr(self._local, "run", None)
        self._local.run = previous
        if run is None or run.trace is None:
            return
        with self._lock:
            trace = run.trace
            trace.finished += 1
            errors = unshown_errors(trace.actions[run.first:], resp) if resp is not None else ["the hook raised"]
            if errors:
                trace.hook_errors.setdefault(run.hook, []).extend(errors)

    def carry(self, fn: Callable[[], Any]) -> Carried:
        """``fn``, to run later on another thread as part of the hook running on this one.

        Its actions join that hook's trace, which reads as incomplete until ``fn`` ran (or
        was dropped). Outside a traced hook, the result just runs ``fn``.
        """
        run: _Run | None = getattr(self._local, "run", None)
        trace = run.trace if run is not None else None
        if run is None or trace is None:
            return Carried(self, fn, None)
        with self._lock:
            trace.pending += 1
        return Carried(self, fn, _Run(run.hook, trace))

    def _carried(self, carried: Carried) -> None:
        """``carried`` ran or will never run: its trace no longer waits for it."""
        run = carried.run
        if run is None or run.trace is None:
            return
        with self._lock:
            run.trace.pending -= 1

    def action_started(self, action: str, args: Any) -> dict[str, Any] | None:
        """An action starts on this thread; its record, or None outside a traced hook."""
        run: _Run | None = getattr(self._local, "run", None)
        if run is None or run.trace is None:
            return None
        rec = action_record(run.hook, action, args)
        with self._lock:
            run.trace.actions.append(rec)
        return rec

    def action_done(self, rec: dict[str, Any] | None, resp: Response) -> None:
        """The action of ``rec`` (:meth:`action_started`) answered ``resp``; the record is
        charged to its event's trace (the hook's run on this thread, as at the start)."""
        if rec is None:
            return
        run: _Run | None = getattr(self._local, "run", None)
        size = approx_size(rec["args"]) + approx_size(resp.output) + approx_size(resp.errors) + _RECORD_BYTES
        with self._lock:
            finish_action_record(rec, resp)
            key = run.trace.event.id if run is not None and run.trace is not None else ""
            if key in self._events:
                self._charged[key] = self._charged.get(key, 0) + size
                self.bytes += size
                self._evict_locked()

    def trace(self, event_id: str, explain: Callable[[Event], tuple[Sequence[Any], Mapping[str, str]]],
              device_id: str) -> dict[str, Any] | None:
        """The trace of a kept event (:func:`trace_line`), plus ``"complete"``.

        Args:
            event_id: the event's ``id``.
            explain: ``Matcher.explain`` (the fired hooks and why the others did not).
            device_id: this hub's device id, for the envelope.

        Returns:
            The trace; ``complete`` is false while a hook it fired has not finished (ask
            again). None when the event is not (or no longer) kept.
        """
        with self._lock:
            kept = self._events.get(event_id)
            if kept is None:
                return None
            trace = _Trace(kept) if isinstance(kept, Event) else kept
            actions = [dict(a) for a in trace.actions]
            hook_errors = {k: list(v) for k, v in trace.hook_errors.items()}
            finished = trace.finished
            started = len(trace.started)
            pending = trace.pending
        fired, not_fired = explain(trace.event)
        line = trace_line(trace.event.to_dict(device_id), [h.name for h in fired], not_fired, actions,
                          hook_errors)
        line["complete"] = finished == started and started >= len(fired) and not pending
        return line

    def hook_stats(self) -> dict[str, tuple[int, float]]:
        """Hook name -> (times fired, wall-clock seconds of the last time) since start."""
        with self._lock:
            return dict(self._fired)
