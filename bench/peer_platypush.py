"""The peer: Platypush, measured on this machine in the same run as pihub.

Two measurements, both cached in the run's :class:`common.Context` so that the pihub
families can put the peer's figure in their rows (``peer`` key) and this family can emit
the peer's own rows (``bench: "peer_platypush.*"``):

* **Hook matching** (:func:`match_costs`): ``bench/peer_match.py`` run with the peer's
  own interpreter (``$PEER_DIR/venv/bin/python``), timing Platypush's
  ``EventProcessor.process_event`` over N GPIO hooks (see that script's docstring). Runs
  whenever the peer's venv exists (about 10 s).
* **Daemon** (:func:`daemon`, only with ``--peer``): ``shared/peers/platypush/run-bench.sh``
  with ``AUTH=env`` (cold + warm start, idle footprint, /execute latency, webhook, wrk;
  ~70 s), parsed from the ``result.json`` it writes under ``$PEER_DIR/results/``; and,
  for the ``http.*`` rows, the same script once more with ``AUTH=user`` (a registered
  user's API token, ~2 min), since it measures one auth mode per invocation.

With ``--peer`` a missing peer is installed first with ``install.sh`` (pip + apt, a few
minutes). When the peer cannot be installed or run, the rows say so in ``peer_note`` and
``peer`` is null: never a remembered or made-up figure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import PEER_SCRIPTS, ROOT, Context, cpu_snapshot, others_cpu_pct, result

#: Hook counts of the matching benchmark (pihub's engine.match uses the same).
HOOK_COUNTS = (10, 100, 1000, 10000)
INSTALL_TIMEOUT_S = 1800
MATCH_TIMEOUT_S = 600
DAEMON_TIMEOUT_S = 900


def _venv_python(ctx: Context) -> Path:
    return ctx.peer_dir / "venv" / "bin" / "python"


def _env(ctx: Context) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                                                            "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PEER_DIR"] = str(ctx.peer_dir)
    return env


def ensure_installed(ctx: Context) -> str | None:
    """Install the peer when ``--peer`` asks for it and it is missing.

    Returns:
        None when the peer's venv is usable, else why not (for ``peer_note``).
    """
    if "peer_install" in ctx.cache:
        return ctx.cache["peer_install"]
    why: str | None = None
    if not _venv_python(ctx).exists() or not (ctx.peer_dir / "venv" / "bin" / "platypush").exists():
        script = PEER_SCRIPTS / "install.sh"
        if not ctx.peer:
            why = f"peer not installed in {ctx.peer_dir} (run with --peer, or {script})"
        elif not script.exists():
            why = f"peer install script not found: {script}"
        else:
            ctx.log(f"[peer] installing Platypush into {ctx.peer_dir} ({script}); this takes a few minutes")
            try:
                cp = subprocess.run(["bash", str(script)], env=_env(ctx), capture_output=True, text=True, check=False,
                                    timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
                if cp.returncode != 0:
                    why = f"peer install failed (exit {cp.returncode}): {_tail(cp.stderr or cp.stdout)}"
            except subprocess.TimeoutExpired:
                why = f"peer install did not finish in {INSTALL_TIMEOUT_S} s"
            if why is None and not _venv_python(ctx).exists():
                why = "peer install ran but left no venv"
    ctx.cache["peer_install"] = why
    return why


def _tail(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text[-n:]


def match_costs(ctx: Context) -> tuple[dict[int, dict[str, Any]], str]:
    """Platypush's matching cost per hook count, measured now (cached for the run).

    Returns:
        ``({hooks: {"us_per_event": ..., ...}}, note)``; the dict is empty when the
        peer could not be measured, and the note says why.
    """
    if "peer_match" in ctx.cache:
        return ctx.cache["peer_match"]
    why = ensure_installed(ctx)
    found: dict[int, dict[str, Any]] = {}
    if why is None:
        args = [str(_venv_python(ctx)), str(ROOT / "bench" / "peer_match.py"),
                "--hooks", ",".join(map(str, HOOK_COUNTS)), "--runs", "3" if ctx.quick else str(ctx.runs),
                "--events", "50" if ctx.quick else "200"]
        ctx.log("[peer] Platypush hook matching (bench/peer_match.py in the peer's venv)")
        try:
            snap = cpu_snapshot()
            with tempfile.TemporaryDirectory(prefix="pihub-bench-peer-") as tmp:
                cp = subprocess.run(args, cwd=tmp, env=_env(ctx), capture_output=True, text=True, check=False,
                                    timeout=MATCH_TIMEOUT_S, stdin=subprocess.DEVNULL)
            ctx.cache["peer_match_others_pct"] = round(others_cpu_pct(snap, cpu_snapshot()), 1)
            if cp.returncode != 0:
                why = f"peer_match.py failed (exit {cp.returncode}): {_tail(cp.stderr)}"
            else:
                data = json.loads(cp.stdout.strip().splitlines()[-1])
                for r in data["results"]:
                    r["version"] = data["version"]
                    found[int(r["hooks"])] = r
        except subprocess.TimeoutExpired:
            why = f"peer_match.py did not finish in {MATCH_TIMEOUT_S} s"
        except (ValueError, KeyError, IndexError) as e:
            why = f"peer_match.py printed no usable JSON: {e}"
    note = why or ("Platypush {v} EventProcessor.process_event, measured now in the peer's venv "
                   "(bench/peer_match.py)").format(v=next(iter(found.values()))["version"] if found else "?")
    ctx.cache["peer_match"] = (found, note)
    return found, note


def daemon(ctx: Context, auth: str = "env") -> tuple[dict[str, Any] | None, str]:
    """The peer's run-bench.sh result for ``AUTH=auth`` (cached for the run); None without ``--peer``.

    Args:
        auth: ``"env"`` (static token from ``PLATYPUSH_API_TOKEN``, no DB lookup; what the
            ``daemon.*`` rows compare with) or ``"user"`` (the API token of a registered
            user: DB lookup + PBKDF2 per request; what the ``http.*`` rows compare with).
            run-bench.sh measures one mode per invocation, ~70 s (env) / ~2 min (user).

    Returns:
        ``(result.json as a dict, note)`` or ``(None, why not)``.
    """
    if auth not in ("env", "user"):
        raise ValueError(f"auth must be 'env' or 'user', not {auth!r}")
    key = "peer_daemon" if auth == "env" else f"peer_daemon_{auth}"
    if key in ctx.cache:
        return ctx.cache[key]
    out: tuple[dict[str, Any] | None, str]
    if not ctx.peer:
        out = (None, f"peer daemon benchmark (AUTH={auth}) not run (pass --peer; make bench does)")
    elif (why := ensure_installed(ctx)) is not None:
        out = (None, why)
    else:
        out = _run_daemon_bench(ctx, auth)
    ctx.cache[key] = out
    return out


def _run_daemon_bench(ctx: Context, auth: str = "env") -> tuple[dict[str, Any] | None, str]:
    script = PEER_SCRIPTS / "run-bench.sh"
    if not script.exists():
        return None, f"peer benchmark script not found: {script}"
    results = ctx.peer_dir / "results"
    before = set(results.glob("*/result.json")) if results.exists() else set()
    env = _env(ctx)
    env["AUTH"] = auth
    if ctx.quick:
        env.update(WRK_DURATION="5", SEQ_N="100", HOOK_N="50", EVENT_N="20", IDLE_WAIT="3", QUIET_WAIT_S="10")
    ctx.log(f"[peer] Platypush daemon benchmark ({script}, AUTH={auth}); about "
            + ("70 s" if auth == "env" else "2 min"))
    t0 = time.monotonic()
    snap = cpu_snapshot()
    try:
        cp = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=False,
                            timeout=DAEMON_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"run-bench.sh (AUTH={auth}) did not finish in {DAEMON_TIMEOUT_S} s"
    took = time.monotonic() - t0
    new = sorted(set(results.glob("*/result.json")) - before) if results.exists() else []
    if cp.returncode != 0 or not new:
        return None, f"run-bench.sh (AUTH={auth}) failed (exit {cp.returncode}): {_tail(cp.stderr)}"
    try:
        data = json.loads(new[-1].read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"cannot read {new[-1]}: {e}"
    data["_path"] = str(new[-1])
    data["_took_s"] = round(took, 1)
    data["_others_cpu_pct_run"] = round(others_cpu_pct(snap, cpu_snapshot()), 1)
    return data, f"Platypush run-bench.sh AUTH={auth}, measured now ({new[-1].parent.name})"


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def daemon_figures(ctx: Context, auth: str = "env") -> tuple[dict[str, float | None], str]:
    """The peer figures the pihub daemon/http rows compare with (None entries when not measured).

    Keys: ``ready_s`` (warm start -> first good /execute with that AUTH mode's token),
    ``ready_cold_s``, ``rss_mib``/``pss_mib`` (whole process tree incl. Redis, 10 s after
    ready), ``procs``, ``threads``, ``seq_p50_ms``/``seq_p99_ms`` (sequential /execute),
    ``hook_p50_ms``/``hook_p99_ms`` (POST /hook/bench), ``wrk_rps`` (+ ``wrk_p50_ms``,
    ``wrk_p99_ms``, ``wrk_good``, ``wrk_bad``), ``wrk_duration_s``.
    """
    data, note = daemon(ctx, auth)
    if data is None:
        return {}, note
    warm, cold, idle = data.get("warm") or {}, data.get("cold") or {}, data.get("idle") or {}
    seq, hook, wrk = data.get("seq") or {}, data.get("hook") or {}, data.get("wrk") or {}
    wrk_duration = None
    for part in str(data.get("summary", "")).split():
        if part.startswith("wrk="):  # wrk=THREADSxCONNSxDURATIONs
            wrk_duration = _num(part.split("x")[-1].rstrip("s"))
    figs = {
        "ready_s": _num(warm.get("ready_s")),
        "ready_cold_s": _num(cold.get("ready_s")),
        "rss_mib": _num(idle.get("rss_mb")),
        "pss_mib": _num(idle.get("pss_mb")),
        "uss_mib": _num(idle.get("uss_mb")),
        "procs": _num(idle.get("procs")),
        "threads": _num(idle.get("threads")),
        "idle_cpu_pct": _num(data.get("idle_cpu_pct")),
        "seq_p50_ms": _num(seq.get("seq_p50_ms")),
        "seq_p99_ms": _num(seq.get("seq_p99_ms")),
        "seq_errors": _num(seq.get("seq_errors")),
        "hook_p50_ms": _num(hook.get("hook_p50_ms")),
        "hook_p99_ms": _num(hook.get("hook_p99_ms")),
        "hook_errors": _num(hook.get("hook_errors")),
        "event_p50_ms": _num((data.get("event") or {}).get("event_p50_ms")),
        "wrk_rps": _num(wrk.get("rps")),
        "wrk_p50_ms": _num(wrk.get("p50_ms")),
        "wrk_p99_ms": _num(wrk.get("p99_ms")),
        "wrk_good": _num(wrk.get("good")),
        "wrk_bad": _num(wrk.get("bad")),
        "wrk_duration_s": wrk_duration,
    }
    if str(data.get("noisy")) == "1":
        note += "; noisy=1 (the box was busy before the run)"
    return figs, note


def http_figures(ctx: Context) -> dict[str, tuple[dict[str, float | None], str]]:
    """The peer's HTTP figures in both auth modes, for the ``http.*`` rows.

    With ``--peer`` this runs run-bench.sh with ``AUTH=user`` (~2 min) unless this run
    already did; the ``AUTH=env`` run is shared with the ``daemon.*`` rows.

    Returns:
        ``{"env": (figures, note), "user": (figures, note)}`` (empty figures when not measured).
    """
    return {"env": daemon_figures(ctx, "env"), "user": daemon_figures(ctx, "user")}


# ------------------------------------------------------------------ the family's rows


def bench_match(ctx: Context) -> Iterator[dict[str, Any]]:
    """The peer's matching cost per hook count, as its own rows (us/event)."""
    found, note = match_costs(ctx)
    if not found:
        ctx.log(f"[peer] no matching figures: {note}")
        return
    for n, r in sorted(found.items()):
        yield result("peer_platypush.match", f"us_per_event_{n}_hooks", r["us_per_event"], "us/event",
                     better="lower", n=r["events"], runs=r["runs"], hooks=n,
                     others_cpu_pct=ctx.cache.get("peer_match_others_pct"),
                     note=f"{note}; GPIOEvent hooks pin=i value=1, events pin uniform in [0,2N), "
                          f"value 0/1 ({r['hits_per_run']} hits in {r['events']} events); "
                          "hook.run replaced by a recorder, websocket notification off")


def bench_daemon(ctx: Context) -> Iterator[dict[str, Any]]:
    """The peer's start, footprint and HTTP figures, as its own rows (AUTH=env, then AUTH=user)."""
    units = {
        "ready_s": ("s", "warm start -> first good /execute (bus subscribed)"),
        "ready_cold_s": ("s", "cold start (fresh workdir) -> first good /execute"),
        "rss_mib": ("MiB", "idle RSS summed over the process tree incl. Redis, 10 s after ready"),
        "pss_mib": ("MiB", "idle PSS summed over the process tree incl. Redis"),
        "procs": ("processes", "processes in the tree"),
        "threads": ("threads", "threads in the tree"),
        "seq_p50_ms": ("ms", "sequential POST /execute variable.get, p50"),
        "seq_p99_ms": ("ms", "sequential POST /execute variable.get, p99"),
        "hook_p50_ms": ("ms", "POST /hook/bench -> Python hook -> variable.set, p50"),
        "hook_p99_ms": ("ms", "POST /hook/bench -> Python hook -> variable.set, p99"),
        "event_p50_ms": ("ms", "custom event -> YAML hook -> variable.set, p50"),
        "wrk_rps": ("req/s", "wrk POST /execute, 2 threads, 16 connections"),
    }
    for auth in ("env", "user"):
        if auth == "user" and not ctx.peer:
            continue
        figs, note = daemon_figures(ctx, auth)
        if not figs:
            ctx.log(f"[peer] no daemon figures (AUTH={auth}): {note}")
            continue
        data, _ = daemon(ctx, auth)
        # run-bench.sh's own record of how busy the box was (before the run / while idle-measuring)
        others = _num((data or {}).get("others_cpu_pct_pre"))
        noisy = str((data or {}).get("noisy")) == "1" or (others is not None and others > 25)
        bench = "peer_platypush.daemon" if auth == "env" else f"peer_platypush.daemon_auth_{auth}"
        for key, (unit, what) in units.items():
            v = figs.get(key)
            if v is not None:
                if key == "wrk_rps" and figs.get("wrk_duration_s"):
                    what += f", {figs['wrk_duration_s']:g} s"
                yield result(bench, key, v, unit, better="higher" if key == "wrk_rps" else "lower",
                             note=f"{what}; {note}", others_cpu_pct=others, noisy=noisy, auth=auth)


BENCHES = [bench_match, bench_daemon]

if __name__ == "__main__":  # quick manual check: python bench/peer_platypush.py
    c = Context(log=lambda m: print(m, file=sys.stderr))
    for fn in BENCHES:
        for row in fn(c):
            print(json.dumps(row))
