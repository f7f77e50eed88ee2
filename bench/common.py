"""Shared helpers of the benchmark families: result rows, repetition, process accounting.

A *result row* is one JSON object of ``bench/results/latest.jsonl``::

    {"bench": str, "metric": str, "value": number, "unit": str,
     "goal": number | null, "peer": number | null, ...extra keys}

``goal`` and ``peer`` are in the row's ``unit``. Extra keys used by the families:
``better`` ("lower"/"higher": which way the goal points), ``meets_goal`` (bool, or null
without a goal), ``n`` (samples or events behind the value), ``runs`` (per-run values the
median was taken from), ``note`` (what exactly was measured), ``peer_note`` (where the
peer figure comes from, or why it is null).

Nothing here imports pihub: the families that need it import it themselves, so a family
that does not (the ``queue.Queue`` baseline, the peer) runs before pihub is built.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The repository root (``bench/..``).
ROOT = Path(__file__).resolve().parent.parent
#: Where results go.
RESULTS = ROOT / "bench" / "results"
#: Platypush peer scripts (shared/ sits beside the checkout).
PEER_SCRIPTS = ROOT.parent / "shared" / "peers" / "platypush"


def default_peer_dir() -> Path:
    """``$PEER_DIR``, else ``<dir holding the checkout>/peers/platypush`` (as run-bench.sh)."""
    env = os.environ.get("PEER_DIR")
    return Path(env) if env else ROOT.parent / "peers" / "platypush"


def result(bench: str, metric: str, value: float, unit: str, *, goal: float | None = None,
           peer: float | None = None, better: str | None = None, **extra: Any) -> dict[str, Any]:
    """One result row (see the module docstring).

    Args:
        bench: the benchmark family and case, e.g. ``"engine.match"``.
        metric: what is measured, e.g. ``"ns_per_event_1000_hooks"``.
        value: the measured figure (finite number).
        unit: its unit (``"ns/event"``, ``"events/s"``, ``"us"``, ``"MiB"``, ``"s"``).
        goal: the target in ``unit``, or None.
        peer: the peer's figure for the same thing in ``unit``, or None.
        better: ``"lower"`` or ``"higher"``: the direction of the goal.
        extra: further keys (``note``, ``n``, ``runs``...), None values dropped.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{bench}/{metric}: value must be a finite number, not {value!r}")
    row: dict[str, Any] = {"bench": bench, "metric": metric, "value": _round(value), "unit": unit,
                           "goal": goal, "peer": None if peer is None else _round(peer)}
    if better is not None:
        if better not in ("lower", "higher"):
            raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
        row["better"] = better
    if goal is not None and better is not None:
        row["meets_goal"] = value <= goal if better == "lower" else value >= goal
    for k, v in extra.items():
        if v is not None:
            row[k] = _round(v) if isinstance(v, float) else v
    return row


def _round(x: float) -> float:
    """Keep 4 significant digits (plenty for a benchmark, and readable JSON)."""
    if isinstance(x, int) or x == 0:
        return x
    digits = 3 - math.floor(math.log10(abs(x)))
    return round(x, max(digits, 0))


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear-interpolated percentile ``p`` (0..100) of an already sorted list."""
    if not sorted_values:
        raise ValueError("no samples")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def repeat(measure: Callable[[], float], runs: int, warmup: int = 1) -> list[float]:
    """Call ``measure`` ``warmup`` times (discarded), then ``runs`` times; return the runs."""
    for _ in range(warmup):
        measure()
    return [measure() for _ in range(runs)]


def rounded(values: list[float]) -> list[float]:
    return [_round(v) for v in values]


@dataclass
class Context:
    """What every benchmark function gets.

    Attributes:
        quick: fewer/shorter runs (a smoke test of the harness, not figures to publish).
        peer: run the full Platypush daemon benchmark (run-bench.sh, ~70 s).
        peer_dir: the peer's PEER_DIR (venv, results).
        runs: how many measured runs a figure is the median of.
        cache: results shared between families within one run (e.g. the peer's figures).
        log: progress messages (stderr).
    """

    quick: bool = False
    peer: bool = False
    peer_dir: Path = field(default_factory=default_peer_dir)
    runs: int = 5
    cache: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def scale(self, n: int, minimum: int = 1) -> int:
        """``n``, or a tenth of it in quick mode."""
        return max(minimum, n // 10) if self.quick else n


class Deadline:
    """A wall-clock budget for a bounded loop: ``while not dl.expired(): ...``."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


def proc_memory(pid: int) -> dict[str, float]:
    """RSS (``/proc/PID/status`` VmRSS), PSS/USS (``smaps_rollup``) and threads, in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mib"] = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as f:
            uss = 0
            for line in f:
                parts = line.split()
                if parts and parts[0] == "Pss:":
                    out["pss_mib"] = int(parts[1]) / 1024
                elif parts and parts[0] in ("Private_Clean:", "Private_Dirty:"):
                    uss += int(parts[1])
            out["uss_mib"] = uss / 1024
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (read from /proc)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as f:
                    stat = f.read()
                parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo and len(out) < 1000:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def tree_memory(pid: int) -> dict[str, float]:
    """:func:`proc_memory` summed over ``pid`` and its descendants, plus ``procs`` (their count)."""
    pids = [pid, *children(pid)]
    mem: dict[str, float] = {}
    for p in pids:
        try:
            for k, v in proc_memory(p).items():
                mem[k] = mem.get(k, 0) + v
        except OSError:
            pass
    mem["procs"] = len(pids)
    return mem


# ------------------------------------------------------------------ how busy the box is

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> tuple[float, float, float]:
    """(box busy CPU seconds, this process's + its waited children's CPU seconds, monotonic time)."""
    import resource

    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = (sum(fields[:8]) - idle) / _CLK_TCK  # user..steal; guest is already in user
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        own += ru.ru_utime + ru.ru_stime
    return busy, own, time.monotonic()


def others_cpu_pct(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """CPU used by other processes between two snapshots, in % of one core."""
    dt = after[2] - before[2]
    if dt <= 0:
        return 0.0
    return max(0.0, 100.0 * ((after[0] - before[0]) - (after[1] - before[1])) / dt)


def wait_quiet(max_pct: float, max_wait_s: float, log: Callable[[str], None], sample_s: float = 3.0) -> float:
    """Wait (at most ``max_wait_s``) until other processes use <= ``max_pct`` % of one core.

    Returns:
        The last sample, in % of one core.
    """
    end = time.monotonic() + max_wait_s
    while True:
        s0 = cpu_snapshot()
        time.sleep(sample_s)
        pct = others_cpu_pct(s0, cpu_snapshot())
        if pct <= max_pct or time.monotonic() >= end:
            return pct
        log(f"box busy: other processes use {pct:.0f}% of a core; waiting for <= {max_pct:.0f}% "
            f"({end - time.monotonic():.0f} s left)")
