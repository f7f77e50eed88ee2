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
that caused them, with ``"caused_by": <line number>``.

Actions of plugins with effects outside pihub (hardware backends, ``shell``) are not run
unless ``run_actions`` is true; they are listed with ``"skipped"`` saying so. Everything
else runs for real, but on a scratch copy of the state (a temporary work directory), so a
replay never changes the daemon's variables; with ``run_actions`` the real work directory
and the backends are used.

A line that is not a valid event is reported as ``{"line": n, "error": "..."}`` and
counted; :func:`replay` returns the number of such lines.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from pihub.engine.procedures import Runner, procedure_name
from pihub.errors import MessageError
from pihub.events import Event
from pihub.messages import Response, dumps, parse


def parse_event_line(line: str) -> Event:
    """Parse one line (envelope or short form); raises MessageError naming the problem."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise MessageError(f"not valid JSON: {e}") from None
    if isinstance(obj, dict) and obj.get("type") not in ("event", "request") and "type" in obj:
        obj = {"type": "event", "args": obj}
    msg = parse(obj, default_origin="replay")
    if not isinstance(msg, Event):
        raise MessageError("a request is not an event; replay takes events")
    return msg


def replay(config: Any, lines: Iterable[str], out: TextIO, *, run_actions: bool = False) -> int:
    """Replay ``lines`` through ``config``'s hooks, writing the trace to ``out``.

    Returns:
        The number of input lines that were not valid events.
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
        self.runner = Runner(self._execute, self._spawn_inline)
        hub.publish_sink = self._capture

    def _capture(self, event: Event) -> bool:
        self.pending.append((event, self.current_line))
        return True

    def run(self, lines: Iterable[str], out: TextIO) -> int:
        bad = 0
        for n, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                event = parse_event_line(text)
            except MessageError as e:
                bad += 1
                out.write(dumps({"line": n, "error": str(e)}) + "\n")
                continue
            self.current_line = n
            self._one(event, out, None)
            while self.pending:
                ev, cause = self.pending.popleft()
                self._one(ev, out, cause)
        return bad

    def _one(self, event: Event, out: TextIO, caused_by: int | None) -> None:
        fired, not_fired = self.hub.matcher.explain(event)
        self.records = []
        hook_errors: dict[str, list[str]] = {}
        for hook in fired:
            self.current_hook = hook.name
            first = len(self.records)
            resp = self.runner.run_hook(hook, event, hook.condition.match(event).captures)
            shown = {str(e) for rec in self.records[first:] for e in rec["errors"]}
            unshown = [str(e) for e in resp.errors if str(e) not in shown]
            if unshown:
                hook_errors[hook.name] = unshown
        line: dict[str, Any] = {
            "event": event.to_dict(self.hub.device_id),
            "fired": [h.name for h in fired],
            "not_fired": not_fired,
            "actions": self.records,
        }
        if hook_errors:
            line["hook_errors"] = hook_errors
        if caused_by is not None:
            line["caused_by"] = caused_by
        out.write(dumps(line) + "\n")
        out.flush()

    def _spawn_inline(self, fn: Any) -> None:
        fn()

    def _execute(self, action: str, args: Any, context: Mapping[str, Any]) -> Response:
        rec: dict[str, Any] = {"hook": self.current_hook, "action": action, "args": args,
                               "output": None, "errors": [], "skipped": None}
        self.records.append(rec)
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
        rec["output"] = resp.output
        rec["errors"] = resp.errors
        return resp
