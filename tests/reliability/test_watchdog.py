"""A stalled dispatcher stops the watchdog pings, so systemd restarts ``pihub run``.

The test plays systemd with the sd_notify protocol: it binds the ``NOTIFY_SOCKET``
datagram socket (:class:`pihub_testing.FakeSystemd`, with sender credentials) and starts
the daemon with ``WATCHDOG_USEC``, as ``systemd/pihub.service`` (``Type=notify``,
``WatchdogSec=``) does. Its watchdog rule is systemd's: when no ``WATCHDOG=1`` arrived
within ``WATCHDOG_USEC``, the service is killed with SIGABRT (systemd's default
``WatchdogSignal``) and, with ``Restart=on-failure``, started again.

The stall: the daemon is started through a wrapper that adds one dispatcher listener
before the hub starts (listeners run on the dispatcher thread). On a
``CustomEvent{subtype: stall}`` it creates ``<fifo>.entered`` and blocks reading a FIFO
until the test writes to it: the dispatcher is stuck as in a hung condition or a deadlock,
while every other thread (HTTP, the watchdog) runs on. Nothing in pihub is changed for the
test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from pihub_testing import FakeSystemd, wait_for
from reliability_support import HANG_BREAKER, Daemon, event, execute

#: ``WATCHDOG_USEC`` given to the daemon (0.2 s: it checks and pings every 0.1 s).
WATCHDOG_USEC = 200_000
_DEADLINE_S = WATCHDOG_USEC / 1e6

#: ``python -c`` wrapper around the CLI: adds the stalling listener, then runs ``main``.
WRAPPER = """
import os, sys
from pihub.hub import Hub

_start = Hub.start
FIFO = os.environ["PIHUB_TEST_STALL_FIFO"]

def stall(ev):
    if ev.type.name == "CustomEvent" and ev.args.get("subtype") == "stall":
        open(FIFO + ".entered", "w").close()
        with open(FIFO) as f:  # blocks until the test writes
            f.read()

def start(self, **kwargs):
    self.dispatcher.add_listener(stall)
    return _start(self, **kwargs)

Hub.start = start
from pihub.cli import main
sys.exit(main(sys.argv[1:]))
"""


def watch(systemd: FakeSystemd, pid: int) -> int:
    """systemd's watchdog rule: read pings until none came within ``WATCHDOG_USEC``.

    Returns:
        How many ``WATCHDOG=1`` from ``pid`` arrived before the deadline passed.

    Fails the test when the pings go on for the whole hang-breaker.
    """
    pings = 0
    while pings * _DEADLINE_S / 2 < HANG_BREAKER:
        msg = systemd.recv_within(_DEADLINE_S)
        if msg is None:
            return pings
        if msg.fields == {"WATCHDOG": "1"} and msg.pid == pid:
            pings += 1
    pytest.fail(f"watchdog pings went on for {HANG_BREAKER} s although the dispatcher was stalled")


def expect_pings(systemd: FakeSystemd, pid: int, n: int) -> None:
    """Wait (hang-breaker) for ``n`` watchdog pings from ``pid``."""
    got = 0
    while got < n:
        msg = systemd.recv(HANG_BREAKER)
        assert msg.pid == pid, msg
        assert msg.fields == {"WATCHDOG": "1"}, msg
        got += 1


@pytest.fixture
def daemon(tmp_path: Path):
    fifo = tmp_path / "stall.fifo"
    os.mkfifo(fifo)
    d = Daemon(tmp_path, "mock: {}\n", python_code=WRAPPER,
               env={"WATCHDOG_USEC": str(WATCHDOG_USEC), "PIHUB_TEST_STALL_FIFO": str(fifo)})
    d.fifo = fifo  # type: ignore[attr-defined]
    yield d
    if d.proc is not None and d.proc.poll() is None:
        try:
            release(d)
        except OSError:  # ENXIO: nobody is stalled on the FIFO
            pass
    d.close()


def stall(d: Daemon) -> None:
    """Post the stalling event and wait until the dispatcher is inside the listener."""
    conn = d.connect()
    status, _ = execute(conn, event("CustomEvent", subtype="stall"))
    conn.close()
    assert status == 200
    entered = Path(str(d.fifo) + ".entered")  # type: ignore[attr-defined]
    assert wait_for(entered.exists, timeout=HANG_BREAKER), d.log()
    entered.unlink()


def release(d: Daemon) -> None:
    """Let the stalled listener return."""
    fd = os.open(d.fifo, os.O_WRONLY | os.O_NONBLOCK)  # type: ignore[attr-defined]
    try:
        os.write(fd, b"go")
    finally:
        os.close(fd)


def test_pings_stop_while_the_dispatcher_is_stalled_and_resume_after(daemon: Daemon) -> None:
    ready = daemon.start()
    assert ready.fields["READY"] == "1" and ready.fields["STATUS"].startswith("running")
    pid = daemon.pid
    expect_pings(daemon.systemd, pid, 3)  # healthy: the watchdog is fed...
    # ...without a gap: WATCHDOG_USEC is below the idle dispatcher's wake-up period (0.25 s)
    # times two, which once starved a healthy hub of pings between two wake-ups
    assert "withholding" not in daemon.log()

    stall(daemon)
    watch(daemon.systemd, pid)  # returns only once a deadline passed without a ping
    assert daemon.wait_log("withholding watchdog pings"), daemon.log()
    # and none slipped out after the watchdog decided: systemd would act now
    assert daemon.systemd.recv_within(2 * _DEADLINE_S) is None
    assert daemon.proc.poll() is None  # the process itself is alive: only its progress is gone

    release(daemon)
    expect_pings(daemon.systemd, pid, 2)
    assert daemon.wait_log("pings resumed"), daemon.log()

    assert daemon.terminate() == 0
    rest = [daemon.systemd.recv_nowait() for _ in range(64)]
    assert any(m is not None and m.fields == {"STOPPING": "1"} and m.pid == pid for m in rest)


def test_systemd_aborts_the_stalled_daemon_and_a_restart_serves_again(daemon: Daemon) -> None:
    daemon.start()
    pid = daemon.pid
    expect_pings(daemon.systemd, pid, 1)
    stall(daemon)
    watch(daemon.systemd, pid)
    os.kill(pid, signal.SIGABRT)  # systemd's WatchdogSignal
    # faulthandler dumps every thread, then re-raises SIGABRT; walking the other threads'
    # frames while they run can itself crash (SIGSEGV), which systemd treats the same way
    code = daemon.proc.wait(HANG_BREAKER)
    log = daemon.log()
    assert code in (-signal.SIGABRT, -signal.SIGSEGV), (code, log)
    assert "Fatal Python error: Aborted" in log, log

    # Restart=on-failure: the next process comes up on the same workdir and is fed again
    ready = daemon.start()
    assert ready.pid == daemon.pid != pid
    expect_pings(daemon.systemd, daemon.pid, 2)
    assert daemon.terminate() == 0
