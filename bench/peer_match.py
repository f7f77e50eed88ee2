"""Platypush's own hook-matching cost, measured inside the peer's venv.

Run by ``bench/peer_platypush.py`` as::

    $PEER_DIR/venv/bin/python bench/peer_match.py --hooks 10,100,1000,10000

It imports only the standard library and the installed ``platypush`` package (never
pihub) and prints one JSON object on stdout.

What is timed, per hook count N (the same workload as pihub's ``engine.match``):

* N hooks built the way Platypush builds ``event.hook.*`` config entries:
  ``EventProcessor(hooks={name: {"if": {...}, "then": [...]}})`` ->
  ``EventHook.build`` -> ``EventCondition.build`` (type resolved by import). Hook ``i``
  is ``if: {type: platypush.message.event.gpio.GPIOEvent, pin: i, value: 1}`` with one
  ``variable.set`` action (never run).
* Events: ``GPIOEvent(pin=p, value=v)`` with ``p`` uniform in ``[0, 2N)`` and ``v`` in
  {0, 1} (seeded), built before timing; so about a quarter of the events match exactly
  one hook and the rest match none.
* The timed call is ``EventProcessor.process_event(event)`` itself (Platypush 1.3.x,
  ``platypush/event/processor/__init__.py``): ``self.hooks`` (a fresh list each call), then
  ``hook.matches_event(event)`` -> ``Event.matches_condition`` for every hook, with the
  max-score / max-priority bookkeeping; then ``hook.run(event)`` for the selected hooks.
  Two things are switched off so that only matching is timed: each hook's ``run`` is
  replaced by a recorder (the real one matches the hook a second time, logs and starts
  one thread per hook), and the event has ``disable_web_clients_notification=True``
  (with the HTTP backend configured, every event is first pushed to websocket clients).
  Both omissions make Platypush look faster than it is, not slower.

Result per N: the median over ``--runs`` runs (after one warm-up run) of
(wall time of processing every event once) / (number of events), in microseconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time

GPIO = "platypush.message.event.gpio.GPIOEvent"


def build(n_hooks: int) -> object:
    from platypush.event.processor import EventProcessor

    hooks = {
        f"bench_hook_{i}": {
            "if": {"type": GPIO, "pin": i, "value": 1},
            "then": [{"action": "variable.set", "args": {"bench": i}}],
        }
        for i in range(n_hooks)
    }
    return EventProcessor(hooks=hooks)


def measure(n_hooks: int, n_events: int, runs: int, seed: int, max_s: float) -> dict:
    from platypush.message.event.gpio import GPIOEvent

    t0 = time.perf_counter()
    proc = build(n_hooks)
    build_s = time.perf_counter() - t0
    fired: list[str] = []

    def recorder(name: str):
        def run(event: object) -> None:
            fired.append(name)
        return run

    for hook in proc.hooks:
        # Instance attribute shadows EventHook.run: record instead of re-match + thread.
        hook.run = recorder(hook.name)
    rng = random.Random(seed)
    events = [
        GPIOEvent(pin=rng.randrange(2 * n_hooks), value=rng.randrange(2),
                  disable_web_clients_notification=True)
        for _ in range(n_events)
    ]
    process = proc.process_event

    def one_run() -> float:
        fired.clear()
        t = time.perf_counter_ns()
        for ev in events:
            process(ev)
        return (time.perf_counter_ns() - t) / 1000.0 / len(events)

    deadline = time.monotonic() + max_s
    gc.collect()
    one_run()  # warm-up
    per_event = []
    for _ in range(runs):
        per_event.append(one_run())
        if time.monotonic() > deadline:
            break
    return {
        "hooks": n_hooks,
        "events": n_events,
        "us_per_event": statistics.median(per_event),
        "runs": [round(x, 2) for x in per_event],
        "hits_per_run": len(fired),
        "build_s": round(build_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hooks", default="10,100,1000,10000", help="comma-separated hook counts")
    ap.add_argument("--events", type=int, default=200, help="events per run (fewer above 1000 hooks)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-s", type=float, default=60.0, help="time budget per hook count")
    a = ap.parse_args(argv)
    import importlib.metadata

    out = {
        "peer": "platypush",
        "version": importlib.metadata.version("platypush"),
        "python": sys.version.split()[0],
        "results": [],
    }
    for n in (int(x) for x in a.hooks.split(",") if x.strip()):
        # Keep every hook count to a few seconds: about 2e6 hook checks per run.
        n_events = max(20, min(a.events, 2_000_000 // max(n, 1)))
        out["results"].append(measure(n, n_events, a.runs, a.seed, a.max_s))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
