"""systemd service notifications (``sd_notify``) and a progress-gated watchdog, stdlib only.

pihub runs as a ``Type=notify`` unit (``systemd/pihub.service``). systemd passes two things in
the environment:

- ``NOTIFY_SOCKET``: an ``AF_UNIX`` datagram socket, either a filesystem path (``/run/...``)
  or an abstract address written ``@name``. Each message is one datagram of newline-separated
  ``KEY=value`` assignments (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``).
  With ``NotifyAccess=main`` systemd accepts only datagrams whose kernel-attached sender
  credentials name the main pid, so notifications are sent from the daemon process itself.
- ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``): when set, systemd restarts the service unless it
  receives ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` microseconds. ``WATCHDOG_PID``
  names the process the watchdog is meant for; another process (a child that inherited the
  environment, or a forked worker) must not ping.

Choices made here:

- Outside systemd (``NOTIFY_SOCKET`` unset or empty) every method is a no-op returning False,
  so the daemon runs the same from a shell, in tests and under systemd.
- A malformed environment (relative socket path, a non-numeric ``WATCHDOG_USEC``) raises
  ``ValueError`` from :meth:`Notifier.from_env`: it can only come from a broken setup, and
  starting anyway would end in an unexplained start timeout or watchdog kill.
- A failed send never raises into the daemon: it is logged as a warning and reported by a
  False return. Losing one status line must not take the hub down; a lost ``READY=1`` or
  watchdog ping is handled by systemd's own timeouts.
- ``STATUS`` text is made single-line (a newline would start a new assignment, e.g. a forged
  ``READY=1``) and cut so the datagram stays under systemd's 4096-byte notification buffer.
- :class:`Watchdog` pings only while a progress counter moves (the dispatcher's loop counter),
  so a hung dispatcher, not just a dead process, gets the service restarted.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, MutableMapping

__all__ = ["Notifier", "Watchdog"]

log = logging.getLogger(__name__)

#: systemd reads a notification datagram into a buffer of this many bytes (PIPE_BUF) and
#: drops longer ones whole, so messages are kept below it.
MAX_DATAGRAM = 4096

#: ``sun_path`` in ``struct sockaddr_un`` holds at most this many bytes on Linux.
_MAX_SUN_PATH = 108

#: Seconds one ``sendto`` may block when systemd's receive queue is full.
_SEND_TIMEOUT = 2.0

#: The watchdog's stand-in for the readings before it started (unequal to any reading).
_STARTED = object()


def _parse_address(value: str) -> str:
    """Turn a ``NOTIFY_SOCKET`` value into an address for ``socket.sendto``.

    Args:
        value: an absolute path, or ``@name`` for a Linux abstract socket.

    Returns:
        The path unchanged, or ``"\\0name"`` for an abstract address.

    Raises:
        ValueError: the value is neither form (e.g. relative, or ``vsock:``), or too long
            for ``sun_path``.
    """
    if value.startswith("@"):
        address = "\0" + value[1:]
    elif value.startswith("/"):
        address = value
    else:
        raise ValueError(f"NOTIFY_SOCKET must be an absolute path or @abstract name, not {value!r}")
    if len(os.fsencode(address)) > _MAX_SUN_PATH:
        raise ValueError(f"NOTIFY_SOCKET is longer than {_MAX_SUN_PATH} bytes: {value!r}")
    return address


def _parse_positive_int(name: str, value: str) -> int:
    """Parse an environment value that must be a positive decimal integer.

    Args:
        name: the variable's name, for the error message.
        value: its text.

    Returns:
        The integer, > 0.

    Raises:
        ValueError: not a positive decimal integer.
    """
    text = value.strip()
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(text)


def _single_line(text: str) -> str:
    """Collapse line breaks to spaces, so ``text`` cannot add assignments to a message.

    Args:
        text: any text.

    Returns:
        ``text`` with every ``\\r``/``\\n`` replaced by one space each.
    """
    return text.replace("\r", " ").replace("\n", " ")


def _fit_status(prefix: str, text: str) -> str:
    """Build ``STATUS=<text>`` so that ``prefix`` plus it stays under :data:`MAX_DATAGRAM` bytes.

    Args:
        prefix: the assignments sent before the status line, counted in the size.
        text: the status text, already single-line.

    Returns:
        The ``STATUS=`` assignment, truncated on a UTF-8 character boundary if needed (an
        ellipsis marks the cut).
    """
    budget = MAX_DATAGRAM - 1 - len(prefix.encode()) - len("STATUS=")
    raw = text.encode()
    if len(raw) <= budget:
        return "STATUS=" + text
    marker = "…".encode()
    cut = raw[: max(budget - len(marker), 0)].decode(errors="ignore")
    return "STATUS=" + cut + "…"


class Notifier:
    """Sends notifications to systemd's ``NOTIFY_SOCKET``; a no-op when there is none.

    Thread-safe: every message uses its own short-lived socket.

    Args:
        address: ``NOTIFY_SOCKET`` as systemd writes it (absolute path or ``@abstract``), or
            None/empty for "not under systemd".
        watchdog_usec: ``WATCHDOG_USEC`` in microseconds, or None when the watchdog is off.
        watchdog_pid: the pid the watchdog is meant for (``WATCHDOG_PID``); None means the
            process creating this notifier.

    Raises:
        ValueError: ``address`` is malformed, or ``watchdog_usec``/``watchdog_pid`` is not a
            positive integer.
    """

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None,
                 watchdog_pid: int | None = None) -> None:
        self._address = _parse_address(address) if address else None
        self._display = address or ""
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise ValueError(f"watchdog_usec must be positive, not {watchdog_usec!r}")
        if watchdog_pid is not None and watchdog_pid <= 0:
            raise ValueError(f"watchdog_pid must be positive, not {watchdog_pid!r}")
        self._watchdog_usec = watchdog_usec
        # Recorded now rather than read at ping time: a child forked later has another pid
        # and must not ping on the parent's behalf.
        self._watchdog_pid = watchdog_pid if watchdog_pid is not None else os.getpid()

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *,
                 unset_environment: bool = False) -> Notifier:
        """Build a notifier from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        Args:
            environ: where to read the variables; ``os.environ`` when None.
            unset_environment: remove the three variables from ``environ`` afterwards, so
                child processes (ffmpeg, helpers) do not inherit them, as ``sd_notify(3)``'s
                ``unset_environment`` does.

        Returns:
            A notifier; a disabled one when ``NOTIFY_SOCKET`` is unset or empty.

        Raises:
            ValueError: a variable is set but malformed.
        """
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec_text = env.get("WATCHDOG_USEC")
        pid_text = env.get("WATCHDOG_PID")
        usec = _parse_positive_int("WATCHDOG_USEC", usec_text) if usec_text else None
        pid = _parse_positive_int("WATCHDOG_PID", pid_text) if pid_text else None
        notifier = cls(address, watchdog_usec=usec, watchdog_pid=pid)
        if unset_environment:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (running under systemd ``Type=notify``)."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """How often to ping the watchdog, in seconds.

        Returns:
            Half of ``WATCHDOG_USEC`` (systemd's recommendation, leaving one missed tick of
            slack), or None when the watchdog is off, there is no socket, or the watchdog is
            meant for another pid.
        """
        if not self._watchdog_active():
            return None
        assert self._watchdog_usec is not None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd that start-up finished (``READY=1``), with an optional status line.

        Args:
            status: shown by ``systemctl status``; made single-line and size-limited.

        Returns:
            True if the datagram was sent, False if disabled or the send failed.
        """
        if status is None:
            return self._send("READY=1")
        return self._send("READY=1\n" + _fit_status("READY=1\n", _single_line(status)))

    def status(self, text: str) -> bool:
        """Set the free-form status line shown by ``systemctl status`` (``STATUS=``).

        Args:
            text: the status; made single-line and size-limited.

        Returns:
            True if sent, False if disabled or the send failed.
        """
        return self._send(_fit_status("", _single_line(text)))

    def stopping(self) -> bool:
        """Tell systemd that an orderly shutdown has begun (``STOPPING=1``).

        Returns:
            True if sent, False if disabled or the send failed.
        """
        return self._send("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the service watchdog (``WATCHDOG=1``).

        Sent only from the process the watchdog is meant for (``WATCHDOG_PID``, or the
        process that built this notifier when it is unset).

        Returns:
            True if sent; False if disabled, meant for another pid, or the send failed.
        """
        if self._address is None or os.getpid() != self._watchdog_pid:
            return False
        return self._send("WATCHDOG=1")

    def _watchdog_active(self) -> bool:
        """True when a watchdog is configured for this very process and there is a socket."""
        return (self._address is not None and self._watchdog_usec is not None
                and os.getpid() == self._watchdog_pid)

    def _send(self, message: str) -> bool:
        """Send one datagram to the notify socket.

        Args:
            message: newline-separated ``KEY=value`` assignments.

        Returns:
            True if sent; False if disabled or on an ``OSError`` (logged as a warning).
        """
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_SEND_TIMEOUT)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            first = message.split("\n", 1)[0]
            log.warning("could not notify systemd at %s (%s): %s", self._display, first, exc)
            return False
        return True


class Watchdog:
    """Pings the systemd watchdog while a progress counter keeps moving.

    A daemon thread named ``name`` wakes every ``interval`` seconds, reads ``progress()``
    and sends ``WATCHDOG=1`` only if the value differs from the one read ``k`` checks
    earlier, where ``k = ceil(progress_period / interval)`` (at least 1). The first ``k - 1``
    checks after :meth:`start` ping (the hub has just reported ready; there is no history
    yet), the ``k``-th compares with the value read by :meth:`start`, and a failed read
    counts as the previous reading. If the counter stops (the dispatcher is
    stuck in a hook, deadlocked, or its thread died), pings stop within
    ``k * interval`` seconds and systemd restarts the service once ``WatchdogSec`` passes
    without one.

    Why a window of ``k`` checks: an idle dispatcher moves the counter only every
    ``progress_period`` seconds, and systemd wants a ping every ``WATCHDOG_USEC / 2``. With
    ``WatchdogSec`` under twice the period (e.g. 0.2 s), comparing with the previous check
    alone would withhold pings from a healthy, idle hub between two wake-ups, long enough
    for systemd to kill it.

    Contract for ``progress``: it must change at least every ``progress_period`` seconds
    even when the hub is idle (the dispatcher increments it on every loop turn, idle
    wake-ups included, every ≤ 0.25 s), must be cheap and must not block. An exception from
    it counts as no progress.

    Args:
        notifier: where the pings go.
        progress: returns the current progress counter.
        interval: seconds between checks; defaults to ``notifier.watchdog_interval()``.
        progress_period: the longest time, in seconds, between two changes of a healthy
            counter (the dispatcher's idle wake-up period).
        name: the thread's name.

    Raises:
        ValueError: ``interval`` is given and not > 0, or ``progress_period`` is not > 0.
    """

    def __init__(self, notifier: Notifier, progress: Callable[[], int], *,
                 interval: float | None = None, progress_period: float = 0.25,
                 name: str = "pihub-watchdog") -> None:
        if interval is not None and not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, not {interval!r}")
        if not progress_period > 0:
            raise ValueError(f"progress_period must be > 0 seconds, not {progress_period!r}")
        self._progress_period = progress_period
        self._notifier = notifier
        self._progress = progress
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> float | None:
        """Seconds between progress checks, or None when there is no watchdog to feed."""
        if self._interval is not None:
            return self._interval if self._notifier.enabled else None
        return self._notifier.watchdog_interval()

    @property
    def running(self) -> bool:
        """True while the watchdog thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start the watchdog thread, unless there is no watchdog to feed.

        Returns:
            True if the thread was started; False when the notifier is disabled or has no
            watchdog for this process (then nothing runs and :meth:`stop` is a no-op).

        Raises:
            RuntimeError: called a second time.
        """
        if self._thread is not None:
            raise RuntimeError("watchdog already started")
        interval = self.interval
        if interval is None:
            log.debug("systemd watchdog not enabled; not starting %s", self._name)
            return False
        baseline = self._read_progress()
        self._thread = threading.Thread(target=self._run, args=(interval, baseline),
                                        name=self._name, daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Stop pinging and join the thread.

        Args:
            timeout: seconds to wait for the thread; None waits until it ends (it wakes at
                once, so this returns promptly unless ``progress()`` itself blocks).

        Returns:
            True if no watchdog thread is alive afterwards.
        """
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _read_progress(self) -> int | None:
        """Call ``progress()``; an exception is logged and read as None (no progress)."""
        try:
            return self._progress()
        except Exception:
            log.exception("watchdog progress check failed; treating it as no progress")
            return None

    def _run(self, interval: float, baseline: int | None) -> None:
        """Thread body: check progress every ``interval`` seconds, ping when it moved.

        Args:
            interval: seconds between checks.
            baseline: the progress value read at start (None if that read failed).
        """
        # The readings of the last k checks, oldest first. Before start there is no history:
        # the hub has just reported ready, so the first k - 1 checks count as progress
        # (_STARTED differs from every reading). A failed read repeats the previous reading.
        k = max(1, math.ceil(self._progress_period / interval - 1e-9))
        window: collections.deque[object] = collections.deque([_STARTED] * (k - 1) + [baseline], maxlen=k)
        stalled = False
        while not self._stop.wait(interval):
            current = self._read_progress()
            oldest = window[0]
            window.append(current if current is not None else window[-1])
            if current is not None and current != oldest:
                self._notifier.watchdog()
                if stalled:
                    log.info("dispatcher progresses again; watchdog pings resumed")
                    stalled = False
            elif not stalled:
                log.warning("no dispatcher progress for %.1f s; withholding watchdog pings "
                            "(systemd restarts pihub if this lasts)", k * interval)
                stalled = True
