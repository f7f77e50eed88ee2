"""pihub.sdnotify against a real AF_UNIX datagram socket owned by the test.

The test plays systemd: it binds the notify socket (a path in tmp, or an abstract ``@name``),
turns on SO_PASSCRED so every datagram carries the sender's credentials (as systemd does to
enforce ``NotifyAccess=main``), and checks what arrives and from which pid.

No test sleeps to decide anything. Sends are synchronous datagrams, so "nothing was sent" is
checked with a non-blocking read after the sender has provably moved past the point where it
would have sent; waits for a datagram are bounded reads that fail the test on timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pihub_testing import FakeSystemd

from pihub.sdnotify import MAX_DATAGRAM, Notifier, Watchdog

REPO = Path(__file__).resolve().parents[1]
_WAIT = 10.0  # seconds: upper bound of every wait; only reached when the test fails


def _path_systemd(tmp_path: Path) -> FakeSystemd:
    """A fake systemd listening on a socket file in ``tmp_path``."""
    path = str(tmp_path / "notify.sock")
    return FakeSystemd(path, path)


def _abstract_systemd() -> FakeSystemd:
    """A fake systemd listening on a unique abstract address (``@name``)."""
    name = f"pihub-test-{uuid.uuid4().hex}"
    return FakeSystemd("\0" + name, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    """A fake systemd on a socket path, then on an abstract address."""
    fake = _path_systemd(tmp_path) if request.param == "path" else _abstract_systemd()
    yield fake
    fake.close()


@pytest.fixture
def path_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    """A fake systemd on a socket path."""
    fake = _path_systemd(tmp_path)
    yield fake
    fake.close()


def _env(fake: FakeSystemd, **extra: str) -> dict[str, str]:
    """The environment systemd would give the service, plus ``extra``."""
    return {"NOTIFY_SOCKET": fake.env_value, **extra}


# --- Notifier ----------------------------------------------------------------------------


def test_ready_status_watchdog_stopping_arrive_from_our_pid(systemd: FakeSystemd) -> None:
    n = Notifier.from_env(_env(systemd, WATCHDOG_USEC="30000000"))
    assert n.enabled

    assert n.ready("hub up: 3 backends") is True
    msg = systemd.recv()
    assert msg.fields == {"READY": "1", "STATUS": "hub up: 3 backends"}
    assert msg.pid == os.getpid()

    assert n.status("camera reconnecting") is True
    msg = systemd.recv()
    assert msg.fields == {"STATUS": "camera reconnecting"}
    assert msg.pid == os.getpid()

    assert n.watchdog() is True
    msg = systemd.recv()
    assert msg.fields == {"WATCHDOG": "1"}
    assert msg.pid == os.getpid()

    assert n.stopping() is True
    msg = systemd.recv()
    assert msg.fields == {"STOPPING": "1"}
    assert msg.pid == os.getpid()


def test_ready_without_status_sends_ready_only(path_systemd: FakeSystemd) -> None:
    assert Notifier.from_env(_env(path_systemd)).ready() is True
    assert path_systemd.recv().raw == b"READY=1"


def test_watchdog_interval_is_half_of_watchdog_usec_in_seconds(path_systemd: FakeSystemd) -> None:
    assert Notifier.from_env(_env(path_systemd, WATCHDOG_USEC="30000000")).watchdog_interval() == 15.0
    assert Notifier.from_env(_env(path_systemd, WATCHDOG_USEC="500000")).watchdog_interval() == 0.25
    assert Notifier.from_env(_env(path_systemd)).watchdog_interval() is None


def test_child_process_notifies_with_its_own_pid() -> None:
    """The real path: a separate process reads the environment systemd would give it."""
    fake = _abstract_systemd()
    try:
        code = ("from pihub.sdnotify import Notifier\n"
                "n = Notifier.from_env()\n"
                "assert n.watchdog_interval() == 15.0\n"
                "assert n.ready('child up') and n.watchdog() and n.stopping()\n")
        env = {**os.environ, "NOTIFY_SOCKET": fake.env_value, "WATCHDOG_USEC": "30000000",
               "PYTHONPATH": str(REPO)}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen([sys.executable, "-c", code], env=env)
        try:
            messages = [fake.recv() for _ in range(3)]
        finally:
            assert proc.wait(timeout=_WAIT) == 0
        assert [m.fields for m in messages] == [
            {"READY": "1", "STATUS": "child up"}, {"WATCHDOG": "1"}, {"STOPPING": "1"}]
        assert {m.pid for m in messages} == {proc.pid}
    finally:
        fake.close()


def test_watchdog_pid_of_another_process_suppresses_pings(path_systemd: FakeSystemd) -> None:
    other = os.getppid()  # alive and never our pid
    n = Notifier.from_env(_env(path_systemd, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(other)))
    assert n.watchdog_interval() is None
    assert n.watchdog() is False
    # Other notifications still go out; the first datagram to arrive must be READY, so no
    # WATCHDOG=1 was queued before it.
    assert n.ready() is True
    assert path_systemd.recv().fields == {"READY": "1"}
    assert path_systemd.recv_nowait() is None


def test_watchdog_pid_equal_to_ours_pings(path_systemd: FakeSystemd) -> None:
    n = Notifier.from_env(_env(path_systemd, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid())))
    assert n.watchdog_interval() == 15.0
    assert n.watchdog() is True
    assert path_systemd.recv().fields == {"WATCHDOG": "1"}


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "30000000"}])
def test_without_notify_socket_everything_is_a_noop(environ: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        """Stands in for socket.socket: any use fails the test."""
        raise AssertionError("a disabled notifier must not open a socket")

    monkeypatch.setattr("pihub.sdnotify.socket.socket", no_socket)
    n = Notifier.from_env(dict(environ))
    assert not n.enabled
    assert n.watchdog_interval() is None
    assert n.ready("x") is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    wd = Watchdog(n, lambda: 0, interval=0.01)
    assert wd.interval is None
    assert wd.start() is False
    assert not wd.running
    assert wd.stop(timeout=1.0) is True


def test_from_env_reads_os_environ_by_default(path_systemd: FakeSystemd,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_systemd.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier.from_env()
    assert n.watchdog_interval() == 1.0
    assert n.status("from os.environ") is True
    assert path_systemd.recv().fields == {"STATUS": "from os.environ"}


def test_unset_environment_removes_the_variables(path_systemd: FakeSystemd) -> None:
    env = _env(path_systemd, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid()), OTHER="kept")
    n = Notifier.from_env(env, unset_environment=True)
    assert env == {"OTHER": "kept"}
    assert n.watchdog() is True  # the notifier keeps what it read
    assert path_systemd.recv().fields == {"WATCHDOG": "1"}


def test_newlines_in_status_cannot_inject_assignments(path_systemd: FakeSystemd) -> None:
    n = Notifier.from_env(_env(path_systemd))
    assert n.status("failed:\nREADY=1\r\nMAINPID=1") is True
    msg = path_systemd.recv()
    assert msg.raw.count(b"\n") == 0
    assert msg.fields == {"STATUS": "failed: READY=1  MAINPID=1"}
    assert n.ready("line one\nline two") is True
    assert path_systemd.recv().fields == {"READY": "1", "STATUS": "line one line two"}


@pytest.mark.parametrize("text", ["x" * 10_000, "é" * 5_000, "€" * 3_000])
def test_long_status_is_cut_to_fit_systemds_buffer(path_systemd: FakeSystemd, text: str) -> None:
    n = Notifier.from_env(_env(path_systemd))
    assert n.ready(text) is True
    msg = path_systemd.recv()
    assert len(msg.raw) < MAX_DATAGRAM
    status = msg.fields["STATUS"]  # decoding above proves the cut kept UTF-8 intact
    assert status.endswith("…")
    assert text.startswith(status[:-1])
    assert len(status) > 1000


def test_short_status_is_not_cut(path_systemd: FakeSystemd) -> None:
    text = "y" * (MAX_DATAGRAM - 1 - len("STATUS="))
    assert Notifier.from_env(_env(path_systemd)).status(text) is True
    assert path_systemd.recv().fields == {"STATUS": text}


@pytest.mark.parametrize("environ, fragment", [
    ({"NOTIFY_SOCKET": "run/notify"}, "absolute path"),
    ({"NOTIFY_SOCKET": "vsock:2:1234"}, "absolute path"),
    ({"NOTIFY_SOCKET": "/" + "a" * 200}, "longer than"),
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "abc"}, "WATCHDOG_USEC"),
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "0"}, "WATCHDOG_USEC"),
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "-5"}, "WATCHDOG_USEC"),
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_PID": "me"}, "WATCHDOG_PID"),
])
def test_malformed_environment_is_refused(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Notifier.from_env(environ)


def test_send_failure_returns_false_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pihub.sdnotify")
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert n.enabled
    assert n.ready("up") is False
    assert any("could not notify systemd" in r.getMessage() and "READY=1" in r.getMessage()
               for r in caplog.records)


# --- Watchdog ----------------------------------------------------------------------------


class FakeProgress:
    """A progress counter driven by the test, counting how often the watchdog reads it."""

    def __init__(self) -> None:
        self.value = 0
        self.calls = 0
        self.fail = False
        self._cond = threading.Condition()

    def __call__(self) -> int:
        """The watchdog's read: count it, then return the value (or raise when ``fail``)."""
        with self._cond:
            self.calls += 1
            self._cond.notify_all()
            if self.fail:
                raise RuntimeError("progress source broken")
            return self.value

    def advance(self) -> None:
        """Make progress: the next read returns a new value."""
        with self._cond:
            self.value += 1

    def wait_for_checks(self, more: int) -> None:
        """Block until the watchdog has read the counter ``more`` further times.

        Once the k-th read has started, every check before it has finished (its ping, if it
        decided to send one, is already in the socket queue).
        """
        with self._cond:
            target = self.calls + more
            assert self._cond.wait_for(lambda: self.calls >= target, _WAIT), "watchdog stopped checking"


def _watchdog(fake: FakeSystemd, progress: FakeProgress, progress_period: float = 0.01) -> Watchdog:
    """A watchdog with a real systemd-style notifier, checking every 10 ms.

    With the default ``progress_period`` every check compares with the previous one.
    """
    notifier = Notifier.from_env(_env(fake, WATCHDOG_USEC="30000000"))
    return Watchdog(notifier, progress, interval=0.01, progress_period=progress_period)


def test_watchdog_pings_only_while_progress_advances(path_systemd: FakeSystemd,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pihub.sdnotify")
    progress = FakeProgress()
    wd = _watchdog(path_systemd, progress)
    assert wd.start() is True
    try:
        assert any(t.name == "pihub-watchdog" and t.daemon for t in threading.enumerate())

        # Stalled from the start: several complete checks, no ping.
        progress.wait_for_checks(3)
        assert path_systemd.recv_nowait() is None
        stalls = [r for r in caplog.records if "no dispatcher progress" in r.getMessage()]
        assert len(stalls) == 1  # logged once per stall, not once per check

        # Progress: exactly one ping for the change, from our pid.
        progress.advance()
        msg = path_systemd.recv()
        assert msg.fields == {"WATCHDOG": "1"}
        assert msg.pid == os.getpid()
        progress.wait_for_checks(3)
        assert path_systemd.recv_nowait() is None

        # And again after the second stall.
        progress.advance()
        assert path_systemd.recv().fields == {"WATCHDOG": "1"}
        assert any("pings resumed" in r.getMessage() for r in caplog.records)
    finally:
        assert wd.stop(timeout=_WAIT) is True
    assert not wd.running
    assert not any(t.name == "pihub-watchdog" for t in threading.enumerate())


def test_watchdog_treats_a_failing_progress_source_as_no_progress(path_systemd: FakeSystemd) -> None:
    progress = FakeProgress()
    progress.fail = True
    wd = _watchdog(path_systemd, progress)
    assert wd.start() is True
    try:
        progress.advance()
        progress.wait_for_checks(3)
        assert path_systemd.recv_nowait() is None
        progress.fail = False
        assert path_systemd.recv().fields == {"WATCHDOG": "1"}
    finally:
        assert wd.stop(timeout=_WAIT) is True


def test_watchdog_checking_faster_than_progress_pings_for_a_whole_period(path_systemd: FakeSystemd) -> None:
    """An idle dispatcher moves its counter every 0.25 s; WatchdogSec=0.2 s checks every 0.1 s.

    One change must keep the pings going for ceil(period / interval) checks, so that a
    healthy hub between two idle wake-ups is not starved of pings; then they stop.
    """
    progress = FakeProgress()
    wd = _watchdog(path_systemd, progress, progress_period=0.035)  # k = 4 checks of 10 ms
    assert wd.start() is True
    try:
        # no history before start: the first k - 1 = 3 checks ping, the 4th compares with
        # the reading taken at start and finds no change
        progress.wait_for_checks(5)
        pings = []
        while (msg := path_systemd.recv_nowait()) is not None:
            pings.append(msg.fields)
        assert pings == [{"WATCHDOG": "1"}] * 3
        progress.advance()
        progress.wait_for_checks(4 + 3)
        pings = []
        while (msg := path_systemd.recv_nowait()) is not None:
            pings.append(msg.fields)
        assert pings == [{"WATCHDOG": "1"}] * 4
    finally:
        assert wd.stop(timeout=_WAIT) is True


@pytest.mark.parametrize("period", [0, -0.25])
def test_watchdog_refuses_a_non_positive_progress_period(period: float) -> None:
    with pytest.raises(ValueError, match="progress_period"):
        Watchdog(Notifier(None), lambda: 0, progress_period=period)


def test_watchdog_does_not_start_without_watchdog_usec(path_systemd: FakeSystemd) -> None:
    wd = Watchdog(Notifier.from_env(_env(path_systemd)), FakeProgress())
    assert wd.interval is None
    assert wd.start() is False
    assert not wd.running


def test_watchdog_interval_defaults_to_the_notifiers(path_systemd: FakeSystemd) -> None:
    wd = Watchdog(Notifier.from_env(_env(path_systemd, WATCHDOG_USEC="30000000")), FakeProgress())
    assert wd.interval == 15.0


def test_watchdog_cannot_start_twice(path_systemd: FakeSystemd) -> None:
    wd = _watchdog(path_systemd, FakeProgress())
    assert wd.start() is True
    try:
        with pytest.raises(RuntimeError, match="already started"):
            wd.start()
    finally:
        assert wd.stop(timeout=_WAIT) is True


@pytest.mark.parametrize("interval", [0, -1.0])
def test_watchdog_refuses_a_non_positive_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        Watchdog(Notifier(None), lambda: 0, interval=interval)
