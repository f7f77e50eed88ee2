"""Run pihub's benchmarks and write ``bench/results/latest.jsonl``.

    python bench/run.py                 # every family (make bench adds --peer)
    python bench/run.py native engine   # a subset, by family name
    python bench/run.py --peer          # also the Platypush daemon benchmark (~70 s + ~2 min AUTH=user)
    python bench/run.py --quick         # short runs: checks the harness, figures not for publishing
    python bench/run.py --list          # the families and their benchmarks

Each family is a module of ``bench/`` with a ``BENCHES`` list of functions
``fn(ctx: common.Context) -> Iterable[dict]``; each dict is one result row
(``common.result``). A later benchmark family is one new module plus one line in
:data:`FAMILIES`. A benchmark that raises is reported (traceback on stderr, listed at
the end, exit status 1); the others still run and their rows are still written.

Output: a table on stdout, progress on stderr, and one JSON object per line in
``--out``, replaced atomically at the end: by default ``bench/results/latest.jsonl`` for
a run of every family, ``bench/results/<family>-<family>....jsonl`` for a subset (so that
a subset never replaces the full run's rows).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, Context, cpu_snapshot, default_peer_dir, others_cpu_pct, wait_quiet

#: family name -> module in bench/, in run order (the heavy daemon/peer runs go last).
FAMILIES: dict[str, str] = {
    "native": "bench_native",    # the ring: queue.Queue baseline, C producer drain, Python publish
    "engine": "bench_engine",    # matcher cost, publish->match->dispatch, edge->action latency
    "adc": "bench_adc",          # the ADC backend's poll loop on the mock rig
    "smartcard": "bench_smartcard",  # card insert/remove -> event through real pcscd + vpcd
    "flic": "bench_flic",        # Flic release -> FlicButtonEvent after the window, fake flicd on loopback
    "mpd": "bench_mpd",          # mpd change -> music.mpd event via idle, and one music.mpd action, real mpd
    "mqtt": "bench_mqtt",        # MQTT publish -> hook -> publish, and mqtt.execute between two hubs, mosquitto
    "midi": "bench_midi",        # MIDI CC -> hook action through jackd (dummy); a 1 kHz CC stream, no loss
    "camera": "bench_camera",    # camera.pi H.264 fan-out: CPU per viewer, join latency, 8 viewers, RSS
    "daemon": "bench_daemon",    # `pihub run`: start->ready, idle RSS/PSS
    "http": "bench_http",        # `pihub run`'s HTTP API: /execute latency, wrk, webhook, start, memory
    "panel": "bench_panel",      # the web panel in Chromium: weight, first render, RSS with 5 panels open
    "install": "bench_install",  # deploy/install.py into a staging root: time, venv size, unit exposure
    "peer": "peer_platypush",    # the peer's own rows (matching; daemon with --peer)
}

Bench = Callable[[Context], Iterable[dict[str, Any]]]
REQUIRED = {"bench": str, "metric": str, "value": (int, float), "unit": str}


def precompile(log: Callable[[str], None]) -> None:
    """Compile pihub's and the environment's byte code, as ``pip install`` does on a Pi.

    A checkout run with ``PYTHONDONTWRITEBYTECODE`` (or a read-only tree) would otherwise
    compile every module at each start: slower starts and ~1 MiB more idle RSS than the
    installed daemon the figures stand for.
    """
    import compileall
    import sysconfig

    for path in (ROOT / "pihub", Path(sysconfig.get_paths()["purelib"])):
        if not compileall.compile_dir(path, quiet=2, workers=0):
            log(f"byte-compiling {path} reported errors (the files that failed stay uncompiled)")


def load(family: str) -> list[Bench]:
    module = importlib.import_module(FAMILIES[family])
    return list(module.BENCHES)


def check_row(row: dict[str, Any]) -> None:
    for key, typ in REQUIRED.items():
        if not isinstance(row.get(key), typ) or isinstance(row.get(key), bool):
            raise TypeError(f"result row has no valid {key!r}: {row!r}")
    for key in ("goal", "peer"):
        v = row.get(key, "missing")
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise TypeError(f"result row has an invalid {key!r}: {row!r}")


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1e6:
            return f"{v / 1e6:.3g} M"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("bench", "metric", "value", "unit", "goal", "ok", "peer")
    lines = [head]
    for r in rows:
        ok = r.get("meets_goal")
        lines.append((r["bench"], r["metric"], fmt(r["value"]), r["unit"],
                      ("" if r["goal"] is None else ("<= " if r.get("better") == "lower" else ">= ") + fmt(r["goal"])),
                      "" if ok is None else ("yes" if ok else "NO"), fmt(r["peer"])))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        cells = [str(c).rjust(w) if i in (2, 4, 6) else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run pihub's benchmarks.")
    ap.add_argument("families", nargs="*", metavar="FAMILY", help=f"subset to run: {', '.join(FAMILIES)}")
    ap.add_argument("--peer", action="store_true",
                    help="also run the Platypush daemon benchmark (installs the peer if missing)")
    ap.add_argument("--quick", action="store_true", help="short runs (harness check; do not publish)")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per figure (median) [5]")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON-lines output [bench/results/latest.jsonl; a subset: <families>.jsonl]")
    ap.add_argument("--peer-dir", type=Path, default=default_peer_dir(), help="the peer's PEER_DIR")
    ap.add_argument("--list", action="store_true", help="list the families and their benchmarks")
    ap.add_argument("--quiet-pct", type=float, default=25.0,
                    help="wait until other processes use at most this %% of one core [25]")
    ap.add_argument("--quiet-wait", type=float, default=180.0,
                    help="seconds to wait for a quiet box at most, then run anyway, marked noisy [180]")
    a = ap.parse_args(argv)

    unknown = [f for f in a.families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    families = a.families or list(FAMILIES)
    if a.out is None:
        subset = [f for f in FAMILIES if f in families]  # in run order, each once
        a.out = RESULTS / ("latest.jsonl" if subset == list(FAMILIES) else "-".join(subset) + ".jsonl")
    if a.list:
        for fam in families:
            print(f"{fam} ({FAMILIES[fam]}.py): " + ", ".join(b.__name__ for b in load(fam)))
        return 0

    def log(msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    ctx = Context(quick=a.quick, peer=a.peer, peer_dir=a.peer_dir, runs=max(1, a.runs), log=log)
    precompile(log)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    pre = wait_quiet(a.quiet_pct, 0 if a.quick else a.quiet_wait, log)
    log(f"other processes use {pre:.0f}% of a core before the run")
    meta = {"run": stamp, "host_cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "others_cpu_pct_before": round(pre, 1)}
    if a.quick:
        meta["quick"] = True
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    t_all = time.monotonic()
    for fam in families:
        try:
            benches = load(fam)
        except Exception as e:  # noqa: BLE001 - reported; the other families still run
            log(f"{fam}: cannot load {FAMILIES[fam]}.py: {e!r}")
            traceback.print_exc()
            failed.append(f"{fam} (import)")
            continue
        for bench in benches:
            name = f"{fam}.{bench.__name__}"
            log(f"{name} ...")
            t0 = time.monotonic()
            n0 = len(rows)
            snap = cpu_snapshot()
            try:
                for row in bench(ctx):
                    check_row(row)
                    rows.append({**row, **meta})
                    log(f"  {row['bench']} {row['metric']} = {fmt(row['value'])} {row['unit']}")
            except Exception as e:  # noqa: BLE001 - reported; the other benchmarks still run
                log(f"{name} FAILED: {e!r}")
                traceback.print_exc()
                failed.append(name)
            # CPU that other processes used while this benchmark ran (% of one core): a
            # figure taken while the box was busy is marked noisy.
            others = round(others_cpu_pct(snap, cpu_snapshot()), 1)
            for row in rows[n0:]:
                # rows of a measurement made earlier in the run (the peer's, cached) carry their own
                row.setdefault("others_cpu_pct", others)
                row.setdefault("noisy", row["others_cpu_pct"] > a.quiet_pct)
            log(f"{name}: {len(rows) - n0} rows in {time.monotonic() - t0:.1f} s "
                f"(others: {others:.0f}% of a core)")

    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=False) + "\n")
    os.replace(tmp, a.out)

    print(table(rows))
    print(f"\n{len(rows)} results in {a.out} ({time.monotonic() - t_all:.0f} s, {os.cpu_count()} CPUs)")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
