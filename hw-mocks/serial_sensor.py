#!/usr/bin/env python3
"""A serial sensor on a real pty: an Arduino-like device printing JSON lines.

It behaves like ``hw-mocks/arduino/serial_sensor.ino`` on a USB serial port: every
``interval`` seconds it prints one reading, and it obeys command lines written to it.
pihub (or ``screen``, ``miniterm``...) opens the pty's slave side, by default through a
stable symlink (``--link``, like socat's ``link=``), exactly as it opens
``/dev/ttyACM0``.

Line protocol (both ends; ``\\n`` terminated, UTF-8)::

    device -> host   {"temperature": 22.41, "humidity": 45.3, "light": 512}
                     {"ok": true, "cmd": "set"}                (a reply to a command)
    host -> device   {"cmd": "set", "temperature": 30}         pin a value (null: drift again)
                     {"cmd": "interval", "value": 0.1}         seconds between readings (0: silent)
                     {"cmd": "read"}                           print one reading now
                     {"cmd": "garbage"}                        print one malformed line
                     {"cmd": "unplug", "seconds": 2}           vanish for that long (USB unplug)

Every command is answered ``{"ok": true, "cmd": ...}`` before its effect shows (the
reply of ``read`` precedes the reading; the reply of ``unplug`` reaches the host before
the device goes), or ``{"ok": false, "cmd": ..., "error": ...}``. With ``--format keyvalue`` readings and replies are printed as
``temperature=22.41 humidity=45.3 light=512`` / ``ok=true cmd=set``; commands stay JSON.

Values drift as a seeded random walk pulled back to a centre (same ``--seed``, same
sequence): temperature around 22 °C (10..40), humidity around 45 %RH (0..100), light
around 500 (a 10-bit ADC count, 0..1023).

*Unplug* closes the pty master and removes the link, so the host's reads end (end of
file) and opening the link fails with ENOENT; after ``seconds`` a new pty appears at the
same link path - a USB serial device unplugged and plugged back in.

Command line::

    python3 hw-mocks/serial_sensor.py --link run/ttySENSOR [--interval 1.0] [--seed 0]
        [--format json|keyvalue] [--set temperature=24.5 ...] [--verbose]

It prints the pty path on stderr when ready and runs until SIGINT/SIGTERM, removing
its link on exit. In process (tests)::

    with SerialSensorSimulator(tmp_path / "ttySENSOR", interval=0.05, seed=1) as sim:
        ...  # open sim.path with pyserial; sim.set(temperature=30); sim.unplug(); sim.replug()

Standard library only, like the sketch it stands in for: it shares no code with pihub.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import math
import os
import queue
import random
import select
import signal
import struct
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

__all__ = ["SerialSensorSimulator", "main"]

#: name -> (centre, step per reading, low, high, decimals); in print order.
SENSORS: dict[str, tuple[float, float, float, float, int]] = {
    "temperature": (22.0, 0.15, 10.0, 40.0, 2),  # °C
    "humidity": (45.0, 0.5, 0.0, 100.0, 1),  # %RH
    "light": (500.0, 12.0, 0.0, 1023.0, 0),  # ADC counts
}
PULL = 0.05  # fraction of the distance to the centre recovered per reading
MAX_COMMAND = 256  # bytes: a longer command line is dropped, as the sketch's buffer would
GARBAGE = b'{"temperature": 21.5, "humid\x00\xff\n'
COMMANDS = ("garbage", "interval", "read", "set", "unplug")


class SerialSensorSimulator:
    """The simulated device: a pty, a drifting reading every ``interval``, commands.

    All pty I/O happens on one thread (``serial-sensor-sim``); the methods below queue
    work for it, so they are safe from any thread.

    Args:
        link: a path for a symlink to the pty slave (replaced atomically), or None to use
            the slave's own ``/dev/pts/N`` name (which changes after a replug).
        interval: seconds between readings; 0 prints readings only on ``read``.
        seed: the random walk's seed.
        fmt: ``json`` or ``keyvalue`` for the lines the device prints.
        values: start values, by name (others start at their centre).
        pinned: values that do not drift, by name (as the ``set`` command pins them).
        log: called with one line per command received and per plug change (None: quiet).

    Attributes:
        commands: every command object received, oldest first.
        readings: readings printed so far.
        dropped: lines dropped because nobody read the pty (its buffer was full).
        plugs: how many times a pty was created (1 after start, 2 after one replug...).
    """

    def __init__(self, link: str | os.PathLike[str] | None = None, *, interval: float = 1.0, seed: int = 0,
                 fmt: str = "json", values: dict[str, float] | None = None,
                 pinned: dict[str, float] | None = None, log: Callable[[str], None] | None = None) -> None:
        if fmt not in ("json", "keyvalue"):
            raise ValueError(f"format must be 'json' or 'keyvalue', not {fmt!r}")
        if interval < 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be a number of seconds >= 0, not {interval!r}")
        self.link = Path(link) if link is not None else None
        self.interval = float(interval)
        self.fmt = fmt
        self._rng = random.Random(seed)
        self._values = {k: spec[0] for k, spec in SENSORS.items()}
        self._values.update(values or {})
        self._pinned: dict[str, float] = {}
        self._pin(dict(pinned or {}))
        self._log = log
        self.commands: list[dict[str, Any]] = []
        self.readings = 0
        self.dropped = 0
        self.plugs = 0
        self._master = -1
        self._slave = -1
        self._slave_name = ""
        self._inbuf = bytearray()
        self._ops: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._replug_at: float | None = None
        self._next_reading = 0.0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> Self:
        """Create the pty (and link) and start printing; returns self.

        Raises:
            RuntimeError: already started.
            OSError: the pty or the link could not be created.
        """
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._plug()
        self._next_reading = time.monotonic() + self.interval
        self._thread = threading.Thread(target=self._loop, name="serial-sensor-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, close the pty and remove the link; idempotent.

        Args:
            timeout: seconds to wait for the thread.
        """
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join(timeout)
        self._unplug_now()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        with self._changed:
            self._changed.notify_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def path(self) -> str:
        """What a host opens: the link, or the current slave name when there is no link."""
        return str(self.link) if self.link is not None else self._slave_name

    @property
    def device(self) -> str:
        """The pty slave's own name (``/dev/pts/N``; new after each replug), or "" when unplugged."""
        return self._slave_name if self.plugged else ""

    @property
    def plugged(self) -> bool:
        """True while the pty exists."""
        return self._master >= 0

    def values(self) -> dict[str, float]:
        """The current values (what the next reading will drift from)."""
        return dict(self._values)

    def set(self, **values: float | None) -> None:
        """Pin values (``None`` lets a value drift again), as the ``set`` command does."""
        self._submit(lambda: self._pin(values))

    def set_interval(self, seconds: float) -> None:
        """Seconds between readings (0: only on ``read``), as the ``interval`` command does."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"interval must be a number of seconds >= 0, not {seconds!r}")
        self._submit(lambda: self._set_interval(seconds))

    def read_now(self) -> None:
        """Print one reading now, as the ``read`` command does."""
        self._submit(self._print_reading)

    def send_line(self, line: bytes | str | dict[str, Any]) -> None:
        """Print an arbitrary line (bytes as given, text plus newline, a mapping as JSON)."""
        if isinstance(line, dict):
            raw = json.dumps(line).encode() + b"\n"
        elif isinstance(line, str):
            raw = line.encode() + b"\n"
        else:
            raw = bytes(line)
        self._submit(lambda: self._write(raw))

    def unplug(self, seconds: float | None = None) -> None:
        """Vanish (close the pty, remove the link); come back after ``seconds``, or on :meth:`replug`."""
        self._submit(lambda: self._unplug_for(seconds))

    def replug(self) -> None:
        """Come back now with a new pty at the same link path."""
        self._submit(self._replug_now)

    def wait_for(self, predicate: Callable[[SerialSensorSimulator], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until ``predicate(self)`` is true; returns it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
        return True

    # ------------------------------------------------------------------ the thread
    def _submit(self, op: Callable[[], None]) -> None:
        """Queue ``op`` for the simulator thread and wake it."""
        if self._thread is None:
            raise RuntimeError("simulator is not started")
        self._ops.put(op)
        self._wake()

    def _wake(self) -> None:
        """Wake the loop out of its select."""
        with contextlib.suppress(OSError):  # a full pipe already wakes the loop
            os.write(self._wake_w, b"x")

    def _loop(self) -> None:
        """The simulator thread: queued ops, commands from the host, timed readings, replugs."""
        while not self._stopping.is_set():
            now = time.monotonic()
            if self.plugged:
                deadline = self._next_reading if self.interval > 0 else None
            else:
                deadline = self._replug_at
            timeout = None if deadline is None else max(0.0, deadline - now)
            fds = [self._wake_r] + ([self._master] if self.plugged else [])
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except OSError:  # the master was closed by an op between loops
                ready = []
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            while True:
                try:
                    op = self._ops.get_nowait()
                except queue.Empty:
                    break
                op()
            if self._stopping.is_set():
                return
            if self.plugged and self._master in ready:
                self._read_commands()
            now = time.monotonic()
            if not self.plugged and self._replug_at is not None and now >= self._replug_at:
                self._replug_now()
            elif self.plugged and self.interval > 0 and now >= self._next_reading:
                self._print_reading()
                self._next_reading = max(self._next_reading + self.interval, now)
            self._notify()

    def _notify(self) -> None:
        """Wake :meth:`wait_for` callers to re-check their predicate."""
        with self._changed:
            self._changed.notify_all()

    def _say(self, text: str) -> None:
        """Log one line through the ``log`` callback, if any."""
        if self._log is not None:
            self._log(text)

    def _read_commands(self) -> None:
        """Read what the host wrote; run each complete command line (overlong ones dropped)."""
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:  # nobody has the slave open; cannot happen while we hold it
                return
            raise
        self._inbuf += data
        while b"\n" in self._inbuf:
            line, _, rest = bytes(self._inbuf).partition(b"\n")
            self._inbuf = bytearray(rest)
            line = line.strip()
            if line and self.plugged:
                self._command(line)
        if len(self._inbuf) > MAX_COMMAND:
            self._inbuf.clear()

    def _command(self, line: bytes) -> None:
        """Run one command line and reply; the reply precedes the command's visible effect."""
        try:
            cmd = json.loads(line)
        except ValueError as e:
            self._reply({"ok": False, "error": f"invalid json: {e}"})
            return
        if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
            self._reply({"ok": False, "error": "expected an object with a 'cmd' string"})
            return
        name = cmd["cmd"]
        with self._changed:
            self.commands.append(cmd)
        self._say(f"command {cmd}")
        try:
            after = self._run_command(name, cmd)
        except ValueError as e:
            self._reply({"ok": False, "cmd": name, "error": str(e)})
            return
        self._reply({"ok": True, "cmd": name})
        if after is not None:
            after()

    def _run_command(self, name: str, cmd: dict[str, Any]) -> Callable[[], None] | None:
        """Check a command; apply it, or return what to do after the reply."""
        if name == "set":
            values = {k: v for k, v in cmd.items() if k != "cmd"}
            for key, value in values.items():
                if value is not None and not _is_number(value):
                    raise ValueError(f"{key} must be a number or null, not {value!r}")
            self._pin(values)
            return None
        if name == "interval":
            value = cmd.get("value")
            if not _is_number(value) or value < 0:
                raise ValueError(f"value must be a number of seconds >= 0, not {value!r}")
            self._set_interval(float(value))
            return None
        if name == "read":
            return self._print_reading
        if name == "garbage":
            return lambda: self._write(GARBAGE)
        if name == "unplug":
            seconds = cmd.get("seconds", 2)
            if not _is_number(seconds) or seconds <= 0:
                raise ValueError(f"seconds must be a number > 0, not {seconds!r}")
            return lambda: self._unplug_for(float(seconds))
        raise ValueError(f"unknown command {name!r} (allowed: {', '.join(COMMANDS)})")

    def _pin(self, values: dict[str, float | None]) -> None:
        """Pin values (None unpins: the value drifts again from where it is)."""
        for key, value in values.items():
            if value is None:
                self._pinned.pop(key, None)
            else:
                self._pinned[key] = value
                self._values[key] = value

    def _set_interval(self, seconds: float) -> None:
        """Seconds between readings from now on (0: silent)."""
        self.interval = seconds
        self._next_reading = time.monotonic() + seconds

    def next_reading(self) -> dict[str, float | int]:
        """Advance the random walk by one step and return the reading it gives.

        Pinned values stay as pinned; ``light`` is an int unless pinned; the others are
        rounded to their decimals. Same seed, same sequence. Not thread-safe: the
        simulator's thread calls it for every printed reading.
        """
        for key, (centre, step, low, high, decimals) in SENSORS.items():
            if key in self._pinned:
                continue
            v = self._values[key]
            v += self._rng.gauss(0.0, step) + PULL * (centre - v)
            v = min(high, max(low, v))
            self._values[key] = round(v, decimals) if decimals else float(round(v))
        out = dict(self._values)
        for key, (*_, decimals) in SENSORS.items():
            if decimals == 0 and key not in self._pinned:
                out[key] = int(out[key])
        return out

    def _print_reading(self) -> None:
        """Print the next reading, if plugged in."""
        if not self.plugged:
            return
        self._write(self._format(self.next_reading()))
        self.readings += 1

    def _reply(self, obj: dict[str, Any]) -> None:
        """Print a reply line."""
        self._write(self._format(obj))

    def _format(self, obj: dict[str, Any]) -> bytes:
        """One line in the configured format (json, or key=value with text quoted when needed)."""
        if self.fmt == "json":
            return json.dumps(obj).encode() + b"\n"
        parts = []
        for key, value in obj.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, str):
                value = f'"{value}"' if (" " in value or not value) else value
            parts.append(f"{key}={value}")
        return " ".join(parts).encode() + b"\n"

    def _write(self, raw: bytes) -> None:
        """Write to the master without ever blocking the loop for long: like a UART whose
        host is not reading, lines that do not fit are lost (and counted)."""
        view = memoryview(raw)
        while view and self.plugged:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                _, ready, _ = select.select([], [self._master], [], 0.1)
                if not ready:
                    self.dropped += 1
                    return
                continue
            except OSError:
                self.dropped += 1
                return
            view = view[n:]

    # ------------------------------------------------------------------ plug / unplug
    def _plug(self) -> None:
        """Create a new pty (raw mode) and point the link at it."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo of the host's commands, no CR/LF translation
        os.set_blocking(master, False)
        name = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(name, tmp)
            os.replace(tmp, self.link)
        # The simulator keeps its own slave fd open: without one, reads of the master fail
        # with EIO whenever the host has the port closed.
        self._master, self._slave, self._slave_name = master, slave, name
        self._inbuf.clear()
        self.plugs += 1
        self._say(f"plugged in: {name}" + (f" (link {self.link})" if self.link else ""))

    def _unplug_now(self) -> None:
        """Remove the link and close the pty: the host reads end of file."""
        if self._master < 0:
            return
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1
        self._say("unplugged")

    def _unplug_for(self, seconds: float | None) -> None:
        """Unplug once the host has read pending output; replug after ``seconds`` (None: never)."""
        self._drain()
        self._unplug_now()
        self._replug_at = None if seconds is None else time.monotonic() + seconds

    def _drain(self, limit: float = 0.5) -> None:
        """Wait, at most ``limit`` seconds, until the host has read what was written.

        Closing a pty master discards the slave's unread input, so without this the reply
        to ``unplug`` (and any line just before it) would never reach the host. The queue
        is taken as empty after three empty looks 2 ms apart: the kernel moves written
        bytes into the queue shortly after the write, not during it.
        """
        deadline = time.monotonic() + limit
        empty = 0
        while empty < 3 and time.monotonic() < deadline:
            try:
                queued = struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return
            empty = empty + 1 if queued == 0 else 0
            time.sleep(0.002)

    def _replug_now(self) -> None:
        """Plug back in now (no-op when plugged); readings resume one interval later."""
        self._replug_at = None
        if not self.plugged:
            self._plug()
            self._next_reading = time.monotonic() + self.interval


def _is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_set(text: str) -> tuple[str, float]:
    """``temperature=24.5`` -> ``("temperature", 24.5)`` for ``--set``."""
    key, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not key or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, not {text!r}")
    return key, number


@contextlib.contextmanager
def _signals_stop(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` instead of killing the process mid-write."""
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--link", help="symlink to create to the pty (like socat's link=)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings (0: silent)")
    parser.add_argument("--seed", type=int, default=0, help="random walk seed")
    parser.add_argument("--format", choices=("json", "keyvalue"), default="json", help="line format printed")
    parser.add_argument("--set", type=_parse_set, action="append", default=[], metavar="NAME=NUMBER",
                        help="pin a value (repeatable)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log commands and plug changes")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        """Log to stderr, prefixed."""
        print(f"serial-sensor: {text}", file=sys.stderr, flush=True)

    stop = threading.Event()
    sim = SerialSensorSimulator(args.link, interval=args.interval, seed=args.seed, fmt=args.format,
                                pinned=dict(args.set), log=log if args.verbose else None)
    with _signals_stop(stop):
        try:
            sim.start()
        except (OSError, ValueError) as e:
            print(f"serial-sensor: cannot start: {e}", file=sys.stderr)
            return 1
        try:
            log(f"ready on {sim.device}" + (f" (link {sim.link})" if sim.link else ""))
            while not stop.wait(0.5):
                pass
        finally:
            sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
