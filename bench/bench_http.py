"""The HTTP API of a real ``pihub run``: /execute latency and throughput, webhooks, start, memory.

Every figure is taken against a ``pihub run`` process (never an in-process app), started
from a temporary config written here:

* ``http`` on a free loopback port, the websocket server on another (enabled, as by
  default), ``http.hooks.bench.public: true`` (Platypush's webhooks are unauthenticated,
  so the peer's ``/hook/bench`` is too);
* the ``mock`` backend;
* ``event.hook.bench``: ``if {type: WebhookEvent, hook: bench}`` ->
  ``variable.set(bench_hook=${data['seq']})``, the peer's bench hook
  (``shared/peers/platypush/config/scripts/bench_hooks.py``) in pihub's YAML;
* ``logging.level: INFO`` (the peer's level).

Before the first start a user and an API token are created with the CLI, as an operator
would: ``pihub user add bench --password-stdin`` then ``pihub token create bench``
(control scope). Every request below carries that token (``Authorization: Bearer``), so
each one goes through the store-backed token check; the peer's comparable figure is its
``AUTH=user`` run (a registered user's API token), measured in the same run with
``--peer``.

Per start (one warm-up start, discarded, then ``--runs`` starts; medians):

* **start -> first authenticated /execute**: from just before ``fork/exec`` to the first
  ``200`` of ``POST /execute variable.get`` whose body carries the output. The probe
  retries a refused connection every ~2 ms. ``READY=1`` on a ``NOTIFY_SOCKET`` the
  benchmark binds is recorded too (``ready_s``).
* **idle memory**, 3 s after ``READY=1``: ``VmRSS`` and ``Pss`` summed over the process
  (and children: there should be none), in MiB. Its floor (``stack_floor_rss_mib``): the
  ``VmRSS`` of the same interpreter, in a process of its own, after importing only the
  third-party stack the design mandates (:data:`FLOOR_STAGES`), no pihub code.

Then, on the last start's process (after its idle memory was taken):

* **sequential /execute**: one ``http.client`` connection (keep-alive), 20 warm-up
  requests, then 1000 sequential ``POST /execute`` of ``variable.get``; p50/p99 of the
  client-side round trip, per round; ``--runs`` rounds, medians of the rounds' figures.
* **webhook -> hook -> reply**: 10 warm-up, then 500 ``POST /hook/bench {"seq": i}`` per
  round, each reply checked to be ``{"bench_hook": i}``; p50 (and p99) per round, medians.
* **wrk**: ``wrk -t2 -c16 -d10s --latency -s bench/post-execute.lua`` (the peer's
  request and checks): requests/s counting only 200 replies that carry an output.

All traffic is to 127.0.0.1; every loop is bounded in count and time; pihub is stopped
by its own PID (SIGTERM, then SIGKILL after 15 s).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peer_platypush
from bench_daemon import pihub_command
from common import (
    ROOT,
    Context,
    Deadline,
    cpu_snapshot,
    median,
    others_cpu_pct,
    percentile,
    result,
    rounded,
    tree_memory,
)

HOST = "127.0.0.1"  # loopback only
LUA = ROOT / "bench" / "post-execute.lua"
START_TIMEOUT_S = 20.0
IDLE_S = 3.0
STOP_TIMEOUT_S = 15.0
CLI_TIMEOUT_S = 60.0
SEQ_N, SEQ_WARMUP = 1000, 20
HOOK_N, HOOK_WARMUP = 500, 10
WRK_THREADS, WRK_CONNS, WRK_SECONDS = 2, 16, 10
PHASE_MAX_S = 120.0  # wall-clock bound of one measured round

EXEC_BODY = json.dumps({"type": "request", "action": "variable.get", "args": {"name": "bench"}})

CONFIG = """\
# written by bench/bench_http.py
workdir: {workdir}
logging:
  level: INFO
http:
  bind_address: 127.0.0.1
  port: {port}
  websocket_port: {ws_port}
  hooks:
    bench: {{public: true}}   # as the peer: Platypush webhooks need no credential
mock: {{}}
event.hook.bench:
  if: {{type: WebhookEvent, hook: bench}}
  then:
    - action: variable.set
      args: {{bench_hook: "${{data['seq']}}"}}
"""


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on the loopback (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env() -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE dropped so the warm-up start writes the byte-code of a module
    # edited since the last run: compiling it again at every start costs ~0.6 MiB of RSS that
    # an installed pihub (byte-code compiled by pip) never pays
    drop = ("WATCHDOG_USEC", "WATCHDOG_PID", "PIHUB_CONFIG", "PIHUB_API_TOKEN", "NOTIFY_SOCKET",
            "PYTHONDONTWRITEBYTECODE")
    return {k: v for k, v in os.environ.items() if k not in drop}


class Rig:
    """The temporary config, workdir, user and API token (created with the CLI).

    Args:
        tmp: the directory it all goes in.
        config: the config template (``workdir``, ``port``, ``ws_port`` are filled in).
        user: the user created, with a random :attr:`password`, and its ``control`` token.
    """

    def __init__(self, tmp: Path, config: str = CONFIG, user: str = "bench") -> None:
        self.tmp = tmp
        self.port, self.ws_port = _free_ports(2)
        self.cfg = tmp / "pihub.yaml"
        self.cfg.write_text(config.format(workdir=tmp / "work", port=self.port, ws_port=self.ws_port),
                            encoding="utf-8")
        cli = [*pihub_command(), "--config", str(self.cfg)]
        self.password = password = "bench-" + os.urandom(12).hex()
        cp = subprocess.run([*cli, "user", "add", user, "--password-stdin"], input=password + "\n",
                            capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=tmp, env=_env(),
                            check=False)
        if cp.returncode != 0:
            raise RuntimeError(f"pihub user add failed ({cp.returncode}): {cp.stderr.strip()[-500:]}")
        cp = subprocess.run([*cli, "token", "create", user, "--name", "bench", "--scope", "control"],
                            capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=tmp, env=_env(),
                            check=False, stdin=subprocess.DEVNULL)
        lines = cp.stdout.strip().splitlines()
        if cp.returncode != 0 or not lines:
            raise RuntimeError(f"pihub token create failed ({cp.returncode}): {cp.stderr.strip()[-500:]}")
        self.token = lines[-1].strip()
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


class Client:
    """One keep-alive HTTP/1.1 connection to the loopback server (reconnects after an error)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: str | None, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers)
            rs = self.conn.getresponse()
            return rs.status, rs.read()
        except (http.client.HTTPException, OSError):
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def _execute_ok(status: int, data: bytes, name: str = "bench") -> bool:
    if status != 200:
        return False
    try:
        rs = json.loads(data)["response"]
        return not rs.get("errors") and name in rs["output"]
    except (ValueError, KeyError, TypeError):
        return False


class Daemon:
    """One ``pihub run`` process: started, probed until the first good /execute, stopped."""

    def __init__(self, rig: Rig, log, command: list[str] | None = None) -> None:
        self.rig, self.log = rig, log
        self.command = command or pihub_command()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify = rig.tmp / "notify.sock"
        if self.notify.exists():
            self.notify.unlink()
        self.sock.bind(str(self.notify))
        self.sock.setblocking(False)
        self.t0 = 0.0
        self.ready_at: float | None = None
        self.first_ok_s: float | None = None
        self.listen_s: float | None = None
        self.probes = 0

    def _poll_notify(self) -> None:
        while self.ready_at is None:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if "READY=1" in data.decode("utf-8", "replace").split("\n"):
                self.ready_at = time.perf_counter()

    def start(self) -> None:
        env = _env()
        env["NOTIFY_SOCKET"] = str(self.notify)
        cmd = [*self.command, "--config", str(self.rig.cfg), "run"]
        with open(self.rig.tmp / "pihub.log", "ab") as logf:
            self.t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, cwd=self.rig.tmp, env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf)
        dl = Deadline(START_TIMEOUT_S)
        while self.first_ok_s is None and not dl.expired() and self.probes < 100_000:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pihub run exited ({self.proc.returncode}) while starting; log tail:\n"
                                   + self._log_tail())
            self._poll_notify()
            self.probes += 1
            c = Client(self.rig.port, timeout=5.0)
            try:
                status, data = c.request("POST", "/execute", EXEC_BODY, self.rig.headers)
            except OSError:  # refused: not listening yet
                time.sleep(0.002)
                continue
            finally:
                c.close()
            t = time.perf_counter()
            if self.listen_s is None:
                self.listen_s = t - self.t0
            if _execute_ok(status, data):
                self.first_ok_s = t - self.t0
            else:
                time.sleep(0.002)
        if self.first_ok_s is None:
            raise RuntimeError(f"no good /execute within {START_TIMEOUT_S} s ({self.probes} probes); log tail:\n"
                               + self._log_tail())
        # READY=1 (normally before the first good /execute)
        while self.ready_at is None and not dl.expired() and self.proc.poll() is None:
            self._poll_notify()
            time.sleep(0.002)
        if self.ready_at is None:
            raise RuntimeError(f"pihub run sent no READY=1 within {START_TIMEOUT_S} s")

    @property
    def ready_s(self) -> float:
        assert self.ready_at is not None
        return self.ready_at - self.t0

    def memory(self) -> dict[str, float]:
        """RSS/PSS/USS (MiB) and threads summed over the process and its children."""
        assert self.proc is not None
        return tree_memory(self.proc.pid)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the pihub process so far."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _log_tail(self) -> str:
        return (self.rig.tmp / "pihub.log").read_text(encoding="utf-8", errors="replace")[-1500:]

    def stop(self) -> float | None:
        """SIGTERM, wait; SIGKILL after STOP_TIMEOUT_S. Returns the time to exit (None if killed)."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                return None
            t = time.perf_counter()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
                return time.perf_counter() - t
            except subprocess.TimeoutExpired:
                self.log(f"pihub run (pid {self.proc.pid}) still running {STOP_TIMEOUT_S} s after SIGTERM; SIGKILL")
                self.proc.kill()
                self.proc.wait(5)
                return None
        finally:
            self.sock.close()
            if self.notify.exists():
                self.notify.unlink()


# ----------------------------------------------------------------------- load phases


def seq_round(port: int, headers: dict[str, str], n: int) -> dict[str, Any]:
    """``n`` sequential POST /execute on one keep-alive connection: latencies in ms."""
    c = Client(port)
    errors = 0
    try:
        for _ in range(SEQ_WARMUP):
            c.request("POST", "/execute", EXEC_BODY, headers)
        lat: list[float] = []
        dl = Deadline(PHASE_MAX_S)
        for _ in range(n):
            if dl.expired():
                break
            t = time.perf_counter()
            try:
                status, data = c.request("POST", "/execute", EXEC_BODY, headers)
            except OSError:
                errors += 1
                continue
            dt = time.perf_counter() - t
            if _execute_ok(status, data):
                lat.append(dt * 1000)
            else:
                errors += 1
    finally:
        c.close()
    return _summary(lat, errors)


def hook_round(port: int, n: int) -> dict[str, Any]:
    """``n`` sequential POST /hook/bench {"seq": i}; each reply must be {"bench_hook": i}."""
    c = Client(port)
    hdr = {"Content-Type": "application/json"}
    errors = 0
    lat: list[float] = []
    dl = Deadline(PHASE_MAX_S)
    try:
        for i in range(HOOK_WARMUP + n):
            if dl.expired():
                break
            t = time.perf_counter()
            try:
                status, data = c.request("POST", "/hook/bench", json.dumps({"seq": i}), hdr)
                dt = time.perf_counter() - t
                ok = status == 200 and json.loads(data) == {"bench_hook": i}
            except (OSError, ValueError):
                ok, dt = False, 0.0
            if i < HOOK_WARMUP:
                continue
            if ok:
                lat.append(dt * 1000)
            else:
                errors += 1
    finally:
        c.close()
    return _summary(lat, errors)


def _summary(lat: list[float], errors: int) -> dict[str, Any]:
    if not lat:
        raise RuntimeError(f"no successful request ({errors} errors)")
    lat.sort()
    return {"n": len(lat), "errors": errors, "p50": percentile(lat, 50), "p90": percentile(lat, 90),
            "p99": percentile(lat, 99), "max": lat[-1], "mean": sum(lat) / len(lat)}


def run_wrk(port: int, token: str, seconds: int) -> dict[str, Any]:
    """wrk POST /execute with the token; requests/s of good replies (200 with an output)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    env = _env()
    env["BENCH_TOKEN"] = token
    cmd = [wrk, f"-t{WRK_THREADS}", f"-c{WRK_CONNS}", f"-d{seconds}s", "--timeout", "5s", "--latency",
           "-s", str(LUA), f"http://{HOST}:{port}/execute"]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, env=env, check=False,
                        stdin=subprocess.DEVNULL)
    out = cp.stdout
    fields = dict(re.findall(r"(\w+)=(\d+)", " ".join(ln for ln in out.splitlines() if ln.startswith("LUA_"))))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    if cp.returncode != 0 or rps is None or "good" not in fields:
        raise RuntimeError(f"wrk failed ({cp.returncode}): {(cp.stderr or out).strip()[-500:]}")
    good, duration_s = int(fields["good"]), int(fields["duration_us"]) / 1e6
    return {"rps_wrk": float(rps.group(1)), "good_rps": good / duration_s, "good": good,
            "bad": int(fields["bad"]), "requests": int(fields["requests"]), "duration_s": duration_s,
            "timeouts": int(fields.get("err_timeout", 0)),
            "p50_ms": int(fields["p50_us"]) / 1000, "p99_ms": int(fields["p99_us"]) / 1000}


# ----------------------------------------------------------------------- the benchmark


def bench_api(ctx: Context) -> Iterator[dict[str, Any]]:
    """``pihub run`` with HTTP + websocket: start -> first /execute, idle memory, latency, wrk."""
    runs = 2 if ctx.quick else ctx.runs
    seq_n, hook_n = ctx.scale(SEQ_N, 50), ctx.scale(HOOK_N, 50)
    wrk_s = 3 if ctx.quick else WRK_SECONDS
    tmp = Path(tempfile.mkdtemp(prefix="pihub-bench-http-"))
    snap = cpu_snapshot()
    starts: list[dict[str, Any]] = []
    seqs: list[dict[str, Any]] = []
    hooks: list[dict[str, Any]] = []
    wrk: dict[str, Any] = {}
    after: dict[str, float] = {}
    try:
        rig = Rig(tmp)
        for k in range(runs + 1):  # start 0: warm-up (byte-code, page cache, the store's first open)
            d = Daemon(rig, ctx.log)
            try:
                d.start()
                time.sleep(max(0.0, d.ready_at + IDLE_S - time.perf_counter()))  # type: ignore[operator]
                if d.proc is not None and d.proc.poll() is not None:
                    raise RuntimeError(f"pihub run exited ({d.proc.returncode}) while idle")
                mem = d.memory()
                fig = {"first_ok_s": d.first_ok_s, "ready_s": d.ready_s, "listen_s": d.listen_s,
                       "probes": d.probes, **mem}
                if k == runs:  # the last start also serves the load phases
                    for _ in range(runs):
                        seqs.append(seq_round(rig.port, rig.headers, seq_n))
                    for _ in range(runs):
                        hooks.append(hook_round(rig.port, hook_n))
                    cpu0 = d.cpu_s()
                    wrk = run_wrk(rig.port, rig.token, wrk_s)
                    wrk["server_cpu_s"] = d.cpu_s() - cpu0
                    after = d.memory()
            finally:
                fig_stop = d.stop()
            if k > 0:
                starts.append({**fig, "stop_s": fig_stop})
        imports = traced_idle_imports(rig, ctx.log)
        floors = [{stage: floor_memory(mods)["rss_mib"] for stage, mods in FLOOR_STAGES.items()}
                  for _ in range(runs)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # how busy the box was while pihub was measured (the peer's AUTH=user run below is not included)
    others = round(others_cpu_pct(snap, cpu_snapshot()), 1)

    peer = peer_platypush.http_figures(ctx)
    env_f, env_note = peer["env"]
    user_f, user_note = peer["user"]

    def col(rows: list[dict[str, Any]], key: str) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None]

    base = {"others_cpu_pct": others}
    auth_note = "Authorization: Bearer <API token of user 'bench', created with `pihub token create`>"

    # ---- sequential /execute
    for pct, goal in (("p50", 1.0), ("p99", 3.0)):
        yield result("http.execute", f"seq_{pct}_ms", median(col(seqs, pct)), "ms", goal=goal, better="lower",
                     peer=user_f.get(f"seq_{pct}_ms"), peer_auth_env=env_f.get(f"seq_{pct}_ms"),
                     peer_note=f"the peer's AUTH=user run (a registered user's API token); peer_auth_env: its "
                               f"static-token run. {user_note} | {env_note}",
                     runs=rounded(col(seqs, pct)), n=sum(col(seqs, "n")), errors=sum(col(seqs, "errors")),
                     note=f"{len(seqs)} rounds of {seq_n} sequential POST /execute variable.get on one keep-alive "
                          f"connection (http.client, {SEQ_WARMUP} warm-up), client-side round trip, {auth_note}; "
                          "median of the rounds' figures", **base)
    # ---- wrk
    peer_rps = env_f.get("wrk_rps")
    yield result("http.wrk", "execute_req_per_s", wrk["good_rps"], "req/s",
                 goal=None if peer_rps is None else round(10 * peer_rps, 1), better="higher", peer=peer_rps,
                 peer_auth_user=user_f.get("wrk_rps"), peer_wrk_duration_s=env_f.get("wrk_duration_s"),
                 peer_note=("goal = 10 x the peer's figure of this run (its static-token AUTH=env run, the faster "
                            "of its two modes; peer_auth_user: with a user's API token). "
                            f"{env_note} | {user_note}") if peer_rps is not None
                           else f"no peer figure, so no goal: {env_note}",
                 n=wrk["good"], bad=wrk["bad"], timeouts=wrk["timeouts"], wrk_rps=wrk["rps_wrk"],
                 wrk_p50_ms=wrk["p50_ms"], wrk_p99_ms=wrk["p99_ms"], duration_s=wrk["duration_s"],
                 server_cpu_ms_per_req=(1000 * wrk["server_cpu_s"] / wrk["good"]) if wrk["good"] else None,
                 note=f"wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{wrk_s}s POST /execute variable.get with the user's "
                      "API token (bench/post-execute.lua: only 200 replies carrying an output count); "
                      "server and wrk share the box", **base)
    # ---- webhook
    yield result("http.hook", "webhook_p50_ms", median(col(hooks, "p50")), "ms", goal=2.0, better="lower",
                 peer=env_f.get("hook_p50_ms"), peer_auth_user=user_f.get("hook_p50_ms"),
                 peer_note=f"the peer's POST /hook/bench -> Python @when hook -> variable.set (webhooks need no "
                           f"credential in either auth mode); {env_note}",
                 runs=rounded(col(hooks, "p50")), n=sum(col(hooks, "n")), errors=sum(col(hooks, "errors")),
                 note=f"{len(hooks)} rounds of {hook_n} POST /hook/bench {{seq: i}} ({HOOK_WARMUP} warm-up) -> "
                      "WebhookEvent -> event.hook.bench -> variable.set -> reply {bench_hook: i} (checked); public "
                      "hook as the peer's; one keep-alive connection; median of the rounds' p50", **base)
    yield result("http.hook", "webhook_p99_ms", median(col(hooks, "p99")), "ms", better="lower",
                 peer=env_f.get("hook_p99_ms"), peer_auth_user=user_f.get("hook_p99_ms"), peer_note=env_note,
                 runs=rounded(col(hooks, "p99")), n=sum(col(hooks, "n")),
                 note="as webhook_p50_ms; median of the rounds' p99", **base)
    # ---- start -> first good /execute
    peer_ready = user_f.get("ready_s")
    yield result("http.start", "start_to_first_execute_s", median(col(starts, "first_ok_s")), "s", goal=0.5,
                 better="lower", peer=peer_ready if peer_ready is not None else env_f.get("ready_s"),
                 peer_auth_env=env_f.get("ready_s"),
                 peer_note=("the peer's warm start -> first good /execute with a user's API token (AUTH=user); "
                            f"peer_auth_env: with its static token. {user_note} | {env_note}")
                           if peer_ready is not None else f"AUTH=user not measured ({user_note}); {env_note}",
                 runs=rounded(col(starts, "first_ok_s")), n=len(starts),
                 ready_s=median(col(starts, "ready_s")), listen_s=median(col(starts, "listen_s")),
                 probes=median(col(starts, "probes")),
                 note="exec of `pihub run` (HTTP + websocket, mock backend, existing workdir) -> first 200 of "
                      f"POST /execute variable.get with the user's API token (probe every ~2 ms; {auth_note}); "
                      "ready_s = READY=1 on our NOTIFY_SOCKET, listen_s = first accepted request", **base)
    # ---- idle memory
    mem_common = {"n": len(starts), "procs": max(col(starts, "procs")), "threads": median(col(starts, "threads")),
                  **base}
    yield result("http.idle", "rss_mib", median(col(starts, "rss_mib")), "MiB", goal=30, better="lower",
                 peer=env_f.get("rss_mib"), runs=rounded(col(starts, "rss_mib")),
                 rss_after_load_mib=after.get("rss_mib"),
                 peer_note=f"RSS summed over the Platypush process tree incl. Redis, 10 s after ready; {env_note}",
                 note=f"VmRSS of `pihub run` (+ children) with HTTP and websocket servers, {IDLE_S:.0f} s after "
                      "READY=1 (one /execute served); rss_after_load_mib: after the load phases", **mem_common)
    yield result("http.idle", "pss_mib", median(col(starts, "pss_mib")), "MiB", better="lower",
                 peer=env_f.get("pss_mib"), runs=rounded(col(starts, "pss_mib")),
                 uss_mib=median(col(starts, "uss_mib")) if col(starts, "uss_mib") else None,
                 peer_note=f"PSS summed over the Platypush process tree incl. Redis; {env_note}",
                 note=f"Pss from /proc/PID/smaps_rollup {IDLE_S:.0f} s after READY=1", **mem_common)
    yield result("http.idle", "traced_rss_mib", imports["rss_kib"] / 1024, "MiB", better="lower",
                 baseline_mib=round(imports["baseline_kib"] / 1024, 2), by_import_kib=imports["by_import"],
                 note="one more start of the same daemon under bench/import_rss.py, the idle RSS and what each "
                      "import added to it (KiB, exclusive of nested imports, summed per top-level package; pihub "
                      "per subpackage); baseline_mib: interpreter + site before pihub's first import. The "
                      "tracer's own cost is in the total", **base)
    floor = median(col(floors, "mandated"))
    yield result("http.idle", "stack_floor_rss_mib", floor, "MiB", better="lower", runs=rounded(col(floors, "mandated")),
                 interpreter_rss_mib=median(col(floors, "interpreter")),
                 web_stack_rss_mib=median(col(floors, "web_stack")),
                 with_sqlite3_rss_mib=median(col(floors, "with_sqlite3")),
                 pihub_over_floor_mib=median(col(starts, "rss_mib")) - floor,
                 note=f"VmRSS of a bare `{Path(sys.executable).name} -c` (the daemon's interpreter, no pihub code) "
                      f"after importing only {', '.join(FLOOR_STAGES['mandated'])}: the web stack DESIGN.md §7 "
                      "mandates, the YAML parser (§5) and cffi's runtime for the native core (§2); what that stack "
                      "imports comes with it (ssl, hashlib, asyncio, email...). interpreter_rss_mib: nothing "
                      "imported; web_stack_rss_mib: the first three only; with_sqlite3_rss_mib: also sqlite3, the "
                      "token store's engine (pihub's choice, not the design's); pihub_over_floor_mib: rss_mib "
                      "minus this floor. One process per figure, median of the runs", **base)


#: Imports of the ``stack_floor_rss_mib`` row, per figure (each in its own bare interpreter).
_WEB_STACK = ("bottle", "cheroot.wsgi", "websockets.asyncio.server")
FLOOR_STAGES: dict[str, tuple[str, ...]] = {
    "interpreter": (),
    "web_stack": _WEB_STACK,
    "mandated": (*_WEB_STACK, "yaml", "_cffi_backend"),
    "with_sqlite3": (*_WEB_STACK, "yaml", "_cffi_backend", "sqlite3"),
}
_FLOOR_CHILD = "import sys\nfor m in sys.argv[1:]:\n    __import__(m)\nprint('imported', flush=True)\nsys.stdin.read()\n"


def floor_memory(modules: tuple[str, ...], timeout_s: float = 30.0) -> dict[str, float]:
    """Memory (MiB, as :func:`tree_memory`) of ``sys.executable -c`` once it imported ``modules``.

    Raises:
        RuntimeError: the child did not report its imports done within ``timeout_s``.
    """
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR_CHILD, *modules], env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else b""
        if line != b"imported\n":
            raise RuntimeError(f"importing {', '.join(modules) or 'nothing'} in a bare {sys.executable} did not "
                               f"finish within {timeout_s} s (exit {proc.poll()})")
        return tree_memory(proc.pid)
    finally:
        proc.stdin.close()  # the child's stdin.read() returns: it exits
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def traced_idle_imports(rig: Rig, log) -> dict[str, Any]:
    """Start the daemon under bench/import_rss.py; after the idle window, its import table."""
    out = rig.tmp / "imports.json"
    d = Daemon(rig, log, command=[sys.executable, str(Path(__file__).with_name("import_rss.py")), str(out), "--"])
    try:
        d.start()
        time.sleep(max(0.0, d.ready_at + IDLE_S - time.perf_counter()))  # type: ignore[operator]
        assert d.proc is not None
        d.proc.send_signal(signal.SIGUSR1)
        dl = Deadline(10.0)
        while not out.exists() and not dl.expired():
            time.sleep(0.01)
        return json.loads(out.read_text(encoding="utf-8"))
    finally:
        d.stop()


#: The idle-socket attack of issue 8: silent sockets, and sockets that send one header
#: line now and then without ever ending their request, from other loopback addresses.
ATTACK_SILENT, ATTACK_SLOW, ATTACK_TRICKLE_S = 64, 8, 0.5


class IdleSocketAttack:
    """Open the attack's sockets on ``port``; :meth:`close` ends it (a context manager)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="bench-trickle", daemon=True)

    def __enter__(self) -> IdleSocketAttack:
        for i in range(ATTACK_SILENT + ATTACK_SLOW):
            source = "127.0.0.2" if i < ATTACK_SILENT else "127.0.0.3"
            sock = socket.create_connection((HOST, self.port), timeout=5, source_address=(source, 0))
            self.socks.append(sock)
            if i >= ATTACK_SILENT:
                sock.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\n")
                self.slow.append(sock)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(ATTACK_TRICKLE_S):
            for sock in self.slow:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass  # closed by the server at its request deadline: that is the point

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


def bench_idle_attack(ctx: Context) -> Iterator[dict[str, Any]]:
    """Control ``/execute`` p50/p99 and RSS with and without the idle-socket attack, alternating."""
    runs = 2 if ctx.quick else ctx.runs
    seq_n = ctx.scale(SEQ_N, 50)
    tmp = Path(tempfile.mkdtemp(prefix="pihub-bench-attack-"))
    snap = cpu_snapshot()
    calm: list[dict[str, Any]] = []
    attacked: list[dict[str, Any]] = []
    rss: dict[str, list[float]] = {"calm": [], "attack": []}
    try:
        rig = Rig(tmp)
        d = Daemon(rig, ctx.log)
        try:
            d.start()
            for _ in range(runs):
                calm.append(seq_round(rig.port, rig.headers, seq_n))
                rss["calm"].append(d.memory()["rss_mib"])
                with IdleSocketAttack(rig.port):
                    attacked.append(seq_round(rig.port, rig.headers, seq_n))
                    rss["attack"].append(d.memory()["rss_mib"])
        finally:
            d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = {"others_cpu_pct": round(others_cpu_pct(snap, cpu_snapshot()), 1)}
    attack_note = (f"{ATTACK_SILENT} silent sockets + {ATTACK_SLOW} sending a header line every "
                   f"{ATTACK_TRICKLE_S} s (never ending the request), from 127.0.0.2/.3, open during the round")
    yield from _calm_and_loaded_rows("http.attack", "attack", calm, attacked, attack_note, seq_n, base)
    for label in ("calm", "attack"):
        yield result("http.attack", f"rss_mib_{label}", median(rss[label]), "MiB", better="lower",
                     runs=rounded(rss[label]), note="VmRSS of `pihub run` after the round", **base)


def _calm_and_loaded_rows(bench: str, load: str, calm: list[dict[str, Any]], loaded: list[dict[str, Any]],
                          load_note: str, seq_n: int, base: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``execute_{p50,p99}_ms_{calm,<load>}`` rows of rounds run alternately without and
    with a load (``seq_round`` results: p50, p99, n, errors), medians of the rounds."""
    for pct in ("p50", "p99"):
        for label, rows in (("calm", calm), (load, loaded)):
            values = [r[pct] for r in rows if r.get(pct) is not None]
            yield result(bench, f"execute_{pct}_ms_{label}", median(values),
                         "ms", better="lower", runs=rounded(values), n=sum(r["n"] for r in rows),
                         errors=sum(r["errors"] for r in rows),
                         note=f"{len(rows)} rounds of {seq_n} sequential POST /execute variable.get on one "
                              f"keep-alive connection, alternating without and with the {load} ("
                              + ("none" if label == "calm" else load_note) + "); median of the rounds", **base)


#: The login flood of issue 8: wrong passwords (for the bench user and an unknown one,
#: alternately) on a fresh connection each, from a fresh loopback address each, without pause.
FLOOD_THREADS = 16
FLOOD_CODE = r"""
import http.client, json, sys, threading
port, threads = int(sys.argv[1]), int(sys.argv[2])
stop, lock, counts = threading.Event(), threading.Lock(), {}
bodies = [json.dumps({"username": u, "password": "not-the-password"}) for u in ("bench", "nobody")]
def run(t):
    i = 0
    while not stop.is_set():
        src = f"127.{100 + t}.{i // 250 % 250}.{i % 250 + 1}"
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(src, 0))
            c.request("POST", "/login", body=bodies[i % 2], headers={"Content-Type": "application/json"})
            r = c.getresponse(); r.read(); c.close(); key = str(r.status)
        except OSError as e:
            key = type(e).__name__
        i += 1
        with lock:
            counts[key] = counts.get(key, 0) + 1
workers = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
for w in workers:
    w.start()
print("started", flush=True)
sys.stdin.read()
stop.set()
for w in workers:
    w.join(15)
print(json.dumps(counts), flush=True)
"""


class LoginFlood:
    """The flood in its own process (its client threads must not share the GIL of the
    measuring client); a context manager. :attr:`counts`: replies by status, after exit."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: dict[str, int] = {}
        self.proc: subprocess.Popen[str] | None = None
        self.seconds = 0.0

    def __enter__(self) -> LoginFlood:
        self.proc = subprocess.Popen([sys.executable, "-c", FLOOD_CODE, str(self.port), str(FLOOD_THREADS)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "started":
            raise RuntimeError("the login flood process did not start")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(input="", timeout=STOP_TIMEOUT_S + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        self.seconds = time.perf_counter() - self.t0
        self.counts = json.loads(out.strip().splitlines()[-1])


def bench_login_flood(ctx: Context) -> Iterator[dict[str, Any]]:
    """Control ``/execute`` p50/p99 and RSS with and without a login flood, alternating."""
    runs = 2 if ctx.quick else ctx.runs
    seq_n = ctx.scale(SEQ_N, 50)
    tmp = Path(tempfile.mkdtemp(prefix="pihub-bench-login-flood-"))
    snap = cpu_snapshot()
    calm: list[dict[str, Any]] = []
    flooded: list[dict[str, Any]] = []
    rss: dict[str, list[float]] = {"calm": [], "flood": []}
    logins: dict[str, int] = {}
    flood_s = 0.0
    try:
        rig = Rig(tmp)
        d = Daemon(rig, ctx.log)
        try:
            d.start()
            rss_start = d.memory()["rss_mib"]
            for _ in range(runs):
                calm.append(seq_round(rig.port, rig.headers, seq_n))
                rss["calm"].append(d.memory()["rss_mib"])
                with LoginFlood(rig.port) as flood:
                    flooded.append(seq_round(rig.port, rig.headers, seq_n))
                    rss["flood"].append(d.memory()["rss_mib"])
                for k, v in flood.counts.items():
                    logins[k] = logins.get(k, 0) + v
                flood_s += flood.seconds
        finally:
            d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = {"others_cpu_pct": round(others_cpu_pct(snap, cpu_snapshot()), 1)}
    attempts = sum(logins.values())
    flood_note = (f"{FLOOD_THREADS} client threads in another process posting wrong passwords to /login (the "
                  f"bench user and an unknown one, alternately), a new connection and source address "
                  f"(127.100-115.x.y) per attempt, without pause; over all rounds {attempts} attempts in "
                  f"{flood_s:.1f} s: {logins.get('401', 0)} checked by argon2 (401), {logins.get('429', 0)} "
                  "refused before any password work (429: the hub-wide budget of 50 failures per 5 min, or "
                  "the one-at-a-time check's line full)")
    yield from _calm_and_loaded_rows("http.login_flood", "flood", calm, flooded, flood_note, seq_n, base)
    for label in ("calm", "flood"):
        yield result("http.login_flood", f"rss_mib_{label}", median(rss[label]), "MiB", better="lower",
                     runs=rounded(rss[label]), rss_at_start_mib=rss_start, max_mib=max(rss[label]),
                     logins_401=logins.get("401", 0) if label == "flood" else None,
                     logins_429=logins.get("429", 0) if label == "flood" else None,
                     note="VmRSS of `pihub run` after the round (" + ("no flood" if label == "calm" else
                          "the flood still running") + "); rss_at_start_mib: after the first good /execute",
                     **base)


BENCHES = [bench_api, bench_idle_attack, bench_login_flood]
