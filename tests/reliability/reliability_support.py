"""Shared helpers of the reliability suite: a real ``pihub run`` daemon, soak scaling, memory.

Every test here is bounded to seconds in ``make test``; ``make soak`` sets ``PIHUB_SOAK=1``
and the same tests run their long versions (more trials, longer floods, longer fuzzing).
Nothing in this suite asserts a duration: time limits are hang-breakers that only fire when
something is already broken.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pihub_testing import Datagram, FakeSystemd, wait_for

#: True under ``make soak`` (``PIHUB_SOAK=1``): tests scale their trials and budgets up.
SOAK = os.environ.get("PIHUB_SOAK", "") not in ("", "0")

#: Seconds after which a wait is declared hung; reached only when the test fails.
HANG_BREAKER = 30.0

#: The headless admin token every daemon of this suite is started with (PIHUB_API_TOKEN).
TOKEN = "ph_reliability_0123456789abcdef"

_HTTP_URL = re.compile(r"HTTP API on http://127\.0\.0\.1:(\d+)")


def scaled(ci: int, soak: int) -> int:
    """``ci`` in ``make test``, ``soak`` under ``make soak`` (trial counts, event counts)."""
    return soak if SOAK else ci


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process, in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS in /proc/{pid}/status")


class Daemon:
    """One ``pihub run`` process with a fake systemd, a log file and the HTTP API on a free port.

    The process gets ``NOTIFY_SOCKET`` pointing at ``self.systemd`` and the admin token
    :data:`TOKEN`; its stderr (the log) goes to ``<dir>/daemon-<n>.log``.

    Args:
        dir: a private directory for the config, the workdir, the socket and the logs.
        config: YAML text (dedented); ``workdir`` and ``http`` are added when missing
            (``http`` on port 0, no websocket).
        env: extra environment variables (``WATCHDOG_USEC``...).
        python_code: run this code with ``python -c`` instead of ``python -m pihub``; it
            receives the usual arguments in ``sys.argv[1:]`` (a test seam around the CLI).
    """

    def __init__(self, dir: Path, config: str = "", *, env: dict[str, str] | None = None,
                 python_code: str | None = None) -> None:
        self.dir = dir
        self.workdir = dir / "work"
        body = textwrap.dedent(config)
        if "workdir:" not in body:
            body = f"workdir: {self.workdir}\n" + body
        if not any(line.startswith("http:") for line in body.splitlines()):
            body = "http: {port: 0, disable_websocket: true}\n" + body
        self.config_path = dir / "config.yaml"
        self.config_path.write_text(body, encoding="utf-8")
        self._env = env or {}
        self._code = python_code
        self._starts = 0
        self.systemd = FakeSystemd(str(dir / "notify.sock"), str(dir / "notify.sock"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path = dir / "daemon-0.log"
        self.port = 0

    @property
    def db_path(self) -> Path:
        """The daemon's SQLite store."""
        return self.workdir / "pihub.db"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Datagram:
        """Start the process and wait for ``READY=1``; returns that notification.

        Raises (fails the test): the process exits or says nothing within the hang-breaker.
        """
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self._starts += 1
        self.log_path = self.dir / f"daemon-{self._starts}.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("WATCHDOG_USEC", "WATCHDOG_PID", "PIHUB_CONFIG", "JOURNAL_STREAM")}
        env.update(NOTIFY_SOCKET=self.systemd.env_value, PIHUB_API_TOKEN=TOKEN, **self._env)
        head = [sys.executable, "-c", self._code] if self._code else [sys.executable, "-m", "pihub"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*head, "--config", str(self.config_path), "run"], cwd=self.dir,
                                         env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + HANG_BREAKER
        while True:
            # short reads, so that a daemon that exits during start-up fails the test at once
            msg = self.systemd.recv_within(0.1)
            if msg is not None and msg.fields.get("READY") == "1":
                break
            assert self.proc.poll() is None, f"pihub exited with {self.proc.returncode}:\n{self.log()}"
            assert time.monotonic() < deadline, f"no READY=1 within {HANG_BREAKER} s:\n{self.log()}"
        assert msg.pid == self.proc.pid
        found = _HTTP_URL.search(self.log())
        assert found, f"the daemon did not log its HTTP port:\n{self.log()}"
        self.port = int(found.group(1))
        return msg

    def log(self) -> str:
        """The current daemon's log so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = HANG_BREAKER) -> bool:
        """Wait until ``text`` appears in the log; True if it did within ``timeout`` s."""
        return wait_for(lambda: text in self.log(), timeout=timeout, interval=0.01)

    def connect(self) -> http.client.HTTPConnection:
        """A keep-alive HTTP connection to the API (hang-breaker socket timeout)."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=HANG_BREAKER)

    def kill(self) -> int:
        """SIGKILL the process and reap it; returns its exit status (``-9``)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(HANG_BREAKER)

    def terminate(self) -> int:
        """SIGTERM the process and wait (hang-breaker) for it to exit; returns its status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(HANG_BREAKER)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pihub did not exit within {HANG_BREAKER} s of SIGTERM:\n{self.log()}") from None

    def close(self) -> None:
        """Kill the process if it still runs and close the socket (teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.systemd.close()


def execute(conn: http.client.HTTPConnection, message: dict[str, Any]) -> tuple[int, Any]:
    """``POST /execute`` one Platypush envelope with the admin token; (status, decoded body)."""
    body = json.dumps(message).encode()
    conn.request("POST", "/execute", body=body,
                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, json.loads(data) if data else None


def request(action: str, args: dict[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """A request envelope."""
    return {"type": "request", "action": action, "args": args}


def event(type_: str, **args: Any) -> dict[str, Any]:
    """An event envelope."""
    return {"type": "event", "args": {"type": type_, **args}}
