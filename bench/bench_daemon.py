"""``pihub run`` as a process: start -> ready time and idle memory, with the demo config.

Each run copies ``hw-mocks/demo.yaml`` two levels down into a fresh temporary directory
(its relative ``workdir`` then lands there, not in the checkout), binds an ``AF_UNIX``
datagram socket there, and starts ``pihub --config demo.yaml run --ready-file F`` with
``NOTIFY_SOCKET`` pointing at it, as systemd would for ``Type=notify``.

* **start -> ready**: from just before ``fork/exec`` to the arrival of the ``READY=1``
  datagram (wall clock, ``time.perf_counter``). This includes interpreter start-up,
  imports, config loading, the native extension, the SQLite store, the worker pool,
  the dispatcher and the mock backend. The in-process figure ``pihub run`` writes to
  ``--ready-file`` (from ``main`` to ready, so without interpreter start-up) is kept
  as ``in_process_s``.
* **idle memory**, 3 s after READY=1: ``VmRSS`` from ``/proc/PID/status`` and ``Pss``
  from ``/proc/PID/smaps_rollup``, summed over the process and any children (there
  should be none), in MiB (the goal's "30 MB" is read as 30 MiB, like the peer's figures).

Then SIGTERM; the time to exit is kept as ``stop_s``. One warm-up start (discarded:
byte-code compilation, page cache), then ``--runs`` starts; the figures are medians.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peer_platypush
from common import ROOT, Context, cpu_snapshot, median, others_cpu_pct, result, rounded, tree_memory

DEMO = ROOT / "hw-mocks" / "demo.yaml"
READY_TIMEOUT_S = 20.0
IDLE_S = 3.0
STOP_TIMEOUT_S = 15.0


def pihub_command() -> list[str]:
    """The ``pihub`` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "pihub"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pihub"]


def one_start(log) -> dict[str, Any]:
    """Start pihub on the demo config once; measure; stop it. Returns the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="pihub-bench-daemon-"))
    proc: subprocess.Popen[bytes] | None = None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        # two levels down, so a relative workdir such as ../run/demo stays inside tmp
        cfg = tmp / "a" / "b" / "demo.yaml"
        cfg.parent.mkdir(parents=True)
        # the demo's HTTP on free ports: a pihub service on this machine may hold 8008/8009
        text = DEMO.read_text(encoding="utf-8")
        served = text.replace("\nhttp:\n  port: 8008", "\nhttp:\n  port: 0\n  websocket_port: 0", 1)
        if served == text:
            raise RuntimeError(f"{DEMO} no longer starts its http section with 'port: 8008': update bench_daemon")
        cfg.write_text(served, encoding="utf-8")
        notify = tmp / "notify.sock"
        sock.bind(str(notify))
        ready_file = tmp / "ready.txt"
        env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID", "PIHUB_CONFIG")}
        env["NOTIFY_SOCKET"] = str(notify)
        cmd = [*pihub_command(), "--config", str(cfg), "run", "--ready-file", str(ready_file)]
        with open(tmp / "pihub.log", "wb") as logf:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        ready_s = None
        messages: list[str] = []
        deadline = t0 + READY_TIMEOUT_S
        while ready_s is None and proc.poll() is None:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            sock.settimeout(min(left, 0.5))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            t = time.perf_counter()
            msg = data.decode("utf-8", "replace")
            messages.append(msg)
            if "READY=1" in msg.split("\n"):
                ready_s = t - t0
        if ready_s is None:
            tail = (tmp / "pihub.log").read_text(encoding="utf-8", errors="replace")[-1500:]
            raise RuntimeError(f"pihub run sent no READY=1 within {READY_TIMEOUT_S} s "
                               f"(exit {proc.poll()}, messages {messages}); log tail:\n{tail}")
        time.sleep(IDLE_S)
        if proc.poll() is not None:
            raise RuntimeError(f"pihub run exited ({proc.returncode}) while idle")
        mem = tree_memory(proc.pid)
        in_process = None
        try:
            in_process = float(ready_file.read_text(encoding="utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            pass
        t_stop = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(STOP_TIMEOUT_S)
            stop_s = time.perf_counter() - t_stop
        except subprocess.TimeoutExpired:
            log(f"pihub run (pid {proc.pid}) still running {STOP_TIMEOUT_S} s after SIGTERM; SIGKILL")
            proc.kill()
            proc.wait(5)
            rc, stop_s = None, None
        return {"ready_s": ready_s, "in_process_s": in_process, "exit": rc,
                "stop_s": stop_s, **mem}
    finally:
        sock.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_run(ctx: Context) -> Iterator[dict[str, Any]]:
    """``pihub run`` with the demo config: start -> READY=1, idle RSS/PSS."""
    runs = 2 if ctx.quick else ctx.runs
    snap = cpu_snapshot()
    one_start(ctx.log)  # warm-up: byte-code compilation, page cache
    starts = [one_start(ctx.log) for _ in range(runs)]
    # how busy the box was while pihub was measured (the peer's run below is not included)
    others = round(others_cpu_pct(snap, cpu_snapshot()), 1)
    figs, peer_note = peer_platypush.daemon_figures(ctx)

    def col(key: str) -> list[float]:
        return [s[key] for s in starts if s.get(key) is not None]

    common = {"n": runs, "procs": max(col("procs")), "threads": median(col("threads")) if col("threads") else None,
              "others_cpu_pct": others}
    yield result("daemon.start", "start_to_ready_s", median(col("ready_s")), "s", goal=0.5, better="lower",
                 peer=figs.get("ready_s"), peer_note=f"warm start -> first good /execute; {peer_note}",
                 runs=rounded(col("ready_s")), in_process_s=median(col("in_process_s")) if col("in_process_s") else None,
                 note="exec of `pihub --config demo.yaml run` -> READY=1 on our NOTIFY_SOCKET (wall clock); "
                      "in_process_s = what pihub writes to --ready-file (main() -> ready)", **common)
    yield result("daemon.idle", "rss_mib", median(col("rss_mib")), "MiB", goal=30, better="lower",
                 peer=figs.get("rss_mib"), runs=rounded(col("rss_mib")),
                 peer_note=f"RSS summed over the Platypush process tree incl. Redis, 10 s after ready; {peer_note}",
                 note=f"VmRSS of the pihub process (+ children) {IDLE_S:.0f} s after READY=1, demo config", **common)
    yield result("daemon.idle", "pss_mib", median(col("pss_mib")), "MiB", better="lower",
                 peer=figs.get("pss_mib"), runs=rounded(col("pss_mib")),
                 peer_note=f"PSS summed over the Platypush process tree incl. Redis; {peer_note}",
                 note=f"Pss from /proc/PID/smaps_rollup {IDLE_S:.0f} s after READY=1", **common)
    if col("stop_s"):
        yield result("daemon.stop", "sigterm_to_exit_s", median(col("stop_s")), "s", better="lower",
                     runs=rounded(col("stop_s")), n=runs, others_cpu_pct=others,
                     note="SIGTERM -> process exit, after the idle window")


BENCHES = [bench_run]
