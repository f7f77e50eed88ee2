"""What the server simulators share: a real server run as a child process on loopback.

Not a simulator itself: :mod:`mqtt_broker` (mosquitto) and :mod:`mpd_server` (mpd) import
it from beside them, whether they run as scripts or are loaded by path (the tests, the
benchmarks).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildServer:
    """A server process that is up once every port of :meth:`ports` accepts on 127.0.0.1.

    Subclasses set :attr:`label` and :attr:`log_file` and define :meth:`command` and
    :meth:`ports`; its stdout and stderr are appended to the log.
    """

    label = "server"
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def ports(self) -> list[int]:
        """The TCP ports it listens on when ready."""
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> Self:
        """Start it and wait until every port accepts (``timeout`` s).

        Raises:
            RuntimeError: it exited or did not listen in time (its log is in the message).
        """
        with open(self.log_file, "ab") as log:  # the child has its own copy of the descriptor
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                for port in self.ports():
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.01)  # a child process's start-up: nothing to wait on but the port
        text = self.log_file.read_text(encoding="utf-8", errors="replace")
        self.stop()
        ports = "/".join(map(str, self.ports()))
        raise RuntimeError(f"{self.label} did not listen on {ports} within {timeout} s:\n{text}")

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Stop and start again on the same ports (clients must reconnect)."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
