"""Helpers shared by test modules (imported by name; conftest.py files are not importable
reliably once several folders have one)."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pihub.clock import ManualClock
from pihub.events import Event
from pihub.sdnotify import MAX_DATAGRAM

IN_CI = os.environ.get("CI") == "true"


def _need(ok: bool, reason: str, in_ci: str) -> None:
    if ok:
        return
    if IN_CI:  # in CI no test may skip: the machine .ci/run prepares runs every one
        pytest.fail(f"{reason} ({in_ci})")
    pytest.skip(reason)


def need_tool(ok: bool, reason: str) -> None:
    """Skip when a system tool is missing, but fail in CI: .ci/run must install it."""
    _need(ok, reason, "CI must install it: see .ci/run")


def need_absent(present: bool, reason: str) -> None:
    """Skip a test of pihub *without* some hardware or library when this machine has it
    (a Pi with a GPIO chip, picamera2 installed), but fail in CI, whose machine has none."""
    _need(not present, reason, "the CI machine must not have it: these tests check pihub without it")


#: the out-of-process simulators (hw-mocks/README.md)
HW_MOCKS = Path(__file__).resolve().parents[1] / "hw-mocks"


def load_hw_mock(name: str) -> Any:
    """The module ``hw-mocks/<name>.py`` (not a package: the folder name has a dash)."""
    spec = importlib.util.spec_from_file_location(f"pihub_hw_mocks_{name}", HW_MOCKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def need_pcsc_stack() -> None:
    """Skip (fail in CI) unless the smart card stack of HARDWARE.md §3.4 can run here: pcscd,
    vsmartcard's vpcd driver, unshare + ip (pcscd in a private network namespace, as root)
    and pyscard."""
    for tool in ("pcscd", "unshare", "ip"):
        need_tool(shutil.which(tool) is not None, f"{tool} is not installed (apt-get install pcscd util-linux iproute2)")
    need_tool(Path(load_hw_mock("virtual_card").VPCD_DRIVER).exists(),
              "vsmartcard's vpcd driver is not installed (apt-get install vsmartcard-vpcd)")
    need_tool(os.geteuid() == 0, "pcscd in a private network namespace needs root (unshare -n)")
    need_tool(importlib.util.find_spec("smartcard") is not None, "pyscard is not installed (pip install pyscard)")


def wait_for(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.001) -> bool:
    """Poll ``pred`` every ``interval`` s until true or ``timeout`` s pass; its last truth value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


class EventRecorder:
    """An ``emit`` for a backend under test: records the events; tests wait for them.

    Returns True (accepted) for every event, as a bus with room does.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> bool:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()
        return True

    def of(self, type_name: str, since: int = 0, **args: Any) -> list[Event]:
        """The events of ``type_name`` from index ``since`` on whose args include ``args``."""
        with self._cond:
            events = self.events[since:]
        return [e for e in events
                if e.type.name == type_name and all(e.args.get(k) == v for k, v in args.items())]

    def args_of(self, type_name: str, since: int = 0, **args: Any) -> list[dict[str, Any]]:
        """The args of the events :meth:`of` gives."""
        return [e.args for e in self.of(type_name, since, **args)]

    def summary(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event as ``(type name, args)``, in order."""
        with self._cond:
            return [(e.type.name, dict(e.args)) for e in self.events]

    def wait(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` is true (re-checked at each event, and every 20 ms for
        conditions on something else, such as the backend's status); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.02))
        return True

    def wait_count(self, n: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        """The first ``n`` events as :meth:`summary` gives them; fails the test if they do not come."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.events) >= n, timeout), \
                f"expected {n} events, got {self.summary()}"
        return self.summary()[:n]


class RecordingClock(ManualClock):
    """A :class:`~pihub.clock.ManualClock` that records the timeout of every wait (seconds):
    the poll intervals and back-off delays a backend asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self.waits.append(timeout)
        return super().wait(event, timeout)


def free_port() -> int:
    """A TCP port free on the loopback now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


T = TypeVar("T")


def finishes(fn: Callable[[], T], timeout: float = 10.0, what: str = "the call") -> T:
    """``fn()`` on a daemon thread; its result, or a test failure if it has not returned
    within ``timeout`` seconds (so a deadlock fails the test instead of hanging the run; the
    stuck thread is abandoned). An exception from ``fn`` is re-raised here.

    A thread stuck inside a garbage collection leaves the collector off for the rest of
    the run (``gc.collect()`` then returns 0 at once): read the first failure first."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            outcome.append((False, e))

    thread = threading.Thread(target=run, name="pihub-test-finishes", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        pytest.fail(f"{what} did not return within {timeout} s (deadlocked?)")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


@contextlib.contextmanager
def collecting_in(owner: type, name: str, garbage: list[object] | None = None) -> Iterator[list[int]]:
    """Make the next call of method ``owner.name`` run a full garbage collection first.

    Forces finalizers (``__del__``) to run at an exact point, e.g. inside a library's
    critical section. ``garbage`` is emptied just before that collection, so what only it
    kept alive becomes unreachable (and is finalized) exactly there, not at some earlier
    automatic collection. Yields a list that gets the number of unreachable objects the
    collection found.
    """
    original = owner.__dict__[name]
    found: list[int] = []

    @functools.wraps(original)
    def collecting(*args: Any, **kwargs: Any) -> Any:
        if not found:
            found.append(0)  # first: a finalizer calling this again must not collect again
            if garbage:
                garbage.clear()
            found[0] = gc.collect()
        return original(*args, **kwargs)

    setattr(owner, name, collecting)
    try:
        yield found
    finally:
        setattr(owner, name, original)


#: ``struct ucred`` (pid_t pid; uid_t uid; gid_t gid), as SCM_CREDENTIALS carries it.
_UCRED = struct.Struct("iII")


@dataclass
class Datagram:
    """One sd_notify notification as systemd would see it."""

    raw: bytes
    fields: dict[str, str]
    pid: int | None


class FakeSystemd:
    """The receiving end of ``NOTIFY_SOCKET``, with sender credentials, as systemd binds it.

    Args:
        bind_to: the address to bind (a path, or ``"\\0name"`` for an abstract socket).
        env_value: the same address as ``NOTIFY_SOCKET`` spells it (path or ``@name``).
    """

    def __init__(self, bind_to: str, env_value: str) -> None:
        self.env_value = env_value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # systemd enforces NotifyAccess= with the sender's kernel-attached credentials
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(bind_to)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def _read(self) -> Datagram:
        """Read one datagram with its SCM_CREDENTIALS (raises on timeout / empty queue)."""
        raw, ancdata, _flags, _addr = self.sock.recvmsg(MAX_DATAGRAM * 2, socket.CMSG_SPACE(_UCRED.size))
        pid = None
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(data[: _UCRED.size])[0]
        fields = dict(line.split("=", 1) for line in raw.decode().split("\n") if line)
        return Datagram(raw, fields, pid)

    def recv(self, timeout: float = 10.0) -> Datagram:
        """The next datagram; fails the test if none arrives within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self._read()
        except TimeoutError:
            pytest.fail(f"no notification within {timeout} s")

    def recv_within(self, timeout: float) -> Datagram | None:
        """The next datagram, or None if none arrives within ``timeout`` seconds.

        For the watchdog's own rule: systemd acts when no ``WATCHDOG=1`` came within
        ``WATCHDOG_USEC``, so a timeout here is an outcome, not a failure.
        """
        self.sock.settimeout(timeout)
        try:
            return self._read()
        except TimeoutError:
            return None

    def recv_nowait(self) -> Datagram | None:
        """The next queued datagram, or None if nothing has been sent."""
        self.sock.setblocking(False)
        try:
            return self._read()
        except BlockingIOError:
            return None
