#!/usr/bin/env python3
"""A MIDI controller on JACK: a port that sends slider sweeps and notes, and can vanish.

HARDWARE.md §3.3: no ALSA sequencer can exist on the CI machine (no sound in the kernel),
but a real JACK server with the dummy driver runs, and python-rtmidi's JACK API talks to
it. This file has the pieces the tests, the benchmark and ``make demo`` use:

* :class:`JackServer`: ``jackd -n NAME --no-realtime -d dummy``, started and stopped;
* :class:`MidiController`: a JACK client ``controller`` with an output port ``slider``
  (names configurable), as a USB controller appears to pihub; ``vanish()`` /
  ``appear()`` unplug and plug it back;
* :class:`MidiControllerProcess`: the same controller in its own process (this command
  line), for tests that stop and restart the JACK server;
* :class:`MidiMonitor`: another JACK client whose input is connected to a port (pihub's
  virtual output), recording what arrives with its arrival time.

Command line (needs mido and python-rtmidi: run it with pihub's venv)::

    .venv/bin/python hw-mocks/midi_controller.py --jackd pihubdemo [--client controller] \\
        [--port slider] [--cycle 5] [--monitor "pihub MIDI out"]

``--jackd NAME`` starts a private JACK server of that name (else it uses the running one
that ``JACK_DEFAULT_SERVER`` names). It prints ``ready``, then takes one command per line
on stdin and answers ``ok ...`` or ``error <why>``:

=======================  ==============================================================
``sweep C FROM TO [MS]``  control change C from FROM to TO (0-127), one step each MS ms (default 5)
``cc C V``                one control change
``note N [VEL] [MS]``     note-on, then note-off MS ms later (default 100)
``send HEX...``           raw bytes (``send b0 07 40``)
``vanish`` / ``appear``   unplug the controller (its JACK client goes) / plug it back
``quit``                  stop (also at end of input, or on SIGTERM)
=======================  ==============================================================

``--cycle S`` sweeps control 7 up and down and plays a note every S seconds by itself
(for ``make demo``; it keeps running when stdin ends). ``--monitor PORT`` prints each
message arriving from that port once it exists (``recv 90 3c 40``), e.g. pihub's ``play_note``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def jack_env(name: str) -> dict[str, str]:
    """Environment variables for libjack clients of server ``name`` (never starting one)."""
    return {"JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1", "JACK_NO_AUDIO_RESERVATION": "1"}


class JackServer:
    """A private ``jackd`` on the dummy driver (no sound card), as a context manager.

    Args:
        name: the server name (``jackd -n``); clients reach it with :func:`jack_env`.
        rate: sample rate, Hz.
        period: frames per period; MIDI is delivered once per period (256 at 48 kHz:
            every 5.3 ms).
        timeout: seconds to wait for the server to answer.
    Raises:
        RuntimeError: jackd is not installed, or did not come up (its output is quoted).
    """

    def __init__(self, name: str, rate: int = 48000, period: int = 256, timeout: float = 10.0) -> None:
        self.name = name
        self.env = jack_env(name)
        self._cmd = ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", str(rate), "-p", str(period)]
        self._timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> JackServer:
        """Start jackd and wait until ``jack_lsp -s NAME`` answers."""
        if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
            raise RuntimeError("jackd is not installed (apt-get install --no-install-recommends jackd2)")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(self._cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise RuntimeError(f"jackd exited with {self.proc.returncode}: {out[-2000:]}")
            if self.alive():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"jackd -n {self.name} did not answer within {self._timeout:g} s")

    def alive(self) -> bool:
        """True when the server answers a client (``jack_lsp``)."""
        env = {**os.environ, **self.env}
        return subprocess.run(["jack_lsp", "-s", self.name], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False).returncode == 0

    def ports(self) -> list[str]:
        """Every port the server has, as another JACK program (``jack_lsp``) sees them."""
        env = {**os.environ, **self.env}
        out = subprocess.run(["jack_lsp", "-s", self.name], env=env, capture_output=True, check=False)
        return [line for line in out.stdout.decode(errors="replace").splitlines() if line.strip()]

    def stop(self) -> None:
        """Stop jackd (SIGTERM, then SIGKILL after 5 s); idempotent. Also removes the
        semaphore files of its clients from /dev/shm (a server stopped while clients are
        connected leaves one per client)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
        for leftover in glob.glob(f"/dev/shm/jack_sem.{os.getuid()}_{glob.escape(self.name)}_*"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def private_jack(name: str, **kw: Any) -> Iterator[JackServer]:
    """A :class:`JackServer` ``name`` running, with this process's environment pointing
    at it (:func:`jack_env`) for the duration (the previous values are put back)."""
    saved = {k: os.environ.get(k) for k in jack_env(name)}
    with JackServer(name, **kw) as server:
        os.environ.update(server.env)
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _rtmidi() -> Any:
    import rtmidi

    return rtmidi


class MidiController:
    """A controller: a JACK client ``client`` with one output port ``port``.

    The JACK server is the one the environment names (:func:`jack_env`). It is plugged
    in (present) once constructed unless ``present=False``.
    """

    def __init__(self, client: str = "controller", port: str = "slider", *, present: bool = True) -> None:
        self.client = client
        self.port = port
        self._lock = threading.Lock()
        self._out: Any = None
        if present:
            self.appear()

    @property
    def present(self) -> bool:
        """True while plugged in."""
        return self._out is not None

    def appear(self) -> None:
        """Plug it in: its client and port appear (no-op when present)."""
        rtmidi = _rtmidi()
        with self._lock:
            if self._out is None:
                out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=self.client)
                out.open_virtual_port(self.port)
                self._out = out

    def vanish(self) -> None:
        """Unplug it: its client leaves the server (no-op when absent)."""
        with self._lock:
            out, self._out = self._out, None
            if out is not None:
                out.close_port()
                out.delete()

    def send(self, message: Sequence[int]) -> None:
        """Send raw bytes.

        Raises:
            RuntimeError: it is unplugged.
        """
        with self._lock:
            if self._out is None:
                raise RuntimeError(f"controller {self.client}:{self.port} is unplugged")
            self._out.send_message(list(message))

    def cc(self, control: int, value: int, channel: int = 0) -> None:
        """One control change."""
        self.send([0xB0 | channel, control, value])

    def note(self, note: int, velocity: int = 100, channel: int = 0, off: bool = False) -> None:
        """A note-on (or, with ``off``, a note-off)."""
        self.send([(0x80 if off else 0x90) | channel, note, 0 if off else velocity])

    def sweep(self, control: int, start: int, stop: int, interval: float = 0.0, channel: int = 0) -> list[int]:
        """Move a slider from ``start`` to ``stop`` (inclusive) one step at a time,
        ``interval`` seconds apart (a hand moving it); returns the values sent."""
        step = 1 if stop >= start else -1
        values = list(range(start, stop + step, step))
        for i, v in enumerate(values):
            if i and interval > 0:
                time.sleep(interval)
            self.cc(control, v, channel)
        return values

    def close(self) -> None:
        """Unplug it for good."""
        self.vanish()

    def __enter__(self) -> MidiController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MidiControllerProcess:
    """A :class:`MidiController` in its own process (this file's command line), driven
    through its stdin: another program on the JACK server, as a real controller's driver
    is. Tests that stop the server use it: libjack's per-process state would otherwise mix
    the test's clients with pihub's (a dead server's clients are freed when the process's
    next client opens).

    It has :class:`MidiController`'s ``client``, ``port``, ``send``, ``cc``, ``vanish``
    and ``appear``; after a server restart, ``vanish()`` then ``appear()`` joins the new one.

    Args:
        client, port: as :class:`MidiController`.
        env: the JACK environment (:func:`jack_env`), added to this process's.
        timeout: seconds to wait for ``ready`` and for each command's answer.
    Raises:
        RuntimeError: the process did not start, or a command failed (its answer or exit
            status, and its stderr, are quoted).
    """

    def __init__(self, client: str = "controller", port: str = "slider", *, env: dict[str, str] | None = None,
                 timeout: float = 10.0) -> None:
        import tempfile

        self.client, self.port, self._timeout = client, port, timeout
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client", client, "--port", port],
            env={**os.environ, **(env or {})}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, bufsize=1)
        self._expect("ready")

    def _expect(self, prefix: str) -> str:
        """The next stdout line, which must start with ``prefix`` (within the timeout)."""
        assert self._proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._timeout)
        line = result[0].strip() if result else ""
        if not line.startswith(prefix):
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"midi controller process: expected {prefix!r}, got {line!r} "
                               f"(exit status {self._proc.poll()}); stderr: {err}")
        return line

    def command(self, line: str) -> str:
        """Send one command line (see the module docstring); its ``ok ...`` answer."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        return self._expect("ok ")

    def send(self, message: Sequence[int]) -> None:
        """Send raw bytes."""
        self.command("send " + " ".join(f"{b:02x}" for b in message))

    def cc(self, control: int, value: int, channel: int = 0) -> None:
        """One control change."""
        self.send([0xB0 | channel, control, value])

    def vanish(self) -> None:
        """Unplug it (its client leaves the server)."""
        self.command("vanish")

    def appear(self) -> None:
        """Plug it back (a new client, on the server running now)."""
        self.command("appear")

    def close(self) -> None:
        """Quit the process (killed after the timeout); idempotent."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
                self._proc.wait(self._timeout)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> MidiControllerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MidiMonitor:
    """Another JACK client listening to one port: ``received`` holds ``(monotonic s, bytes)``.

    Args:
        source: the port to listen to: a full JACK name or its port part
            (``pihub MIDI out``).
        client: this client's name.
        on_message: also called with each message's bytes (on JACK's thread).
    Raises:
        LookupError: no such port (the message lists the ports that exist).
    """

    def __init__(self, source: str, client: str = "monitor",
                 on_message: Callable[[list[int]], None] | None = None) -> None:
        rtmidi = _rtmidi()
        self._on_message = on_message
        self.received: list[tuple[float, list[int]]] = []
        self._cond = threading.Condition()
        self._in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
        ports = self._in.get_ports()
        matches = [i for i, p in enumerate(ports) if p == source or p.partition(":")[2] == source]
        if not matches:
            self._in.delete()
            raise LookupError(f"no JACK MIDI port {source!r}; ports: {ports}")
        self.source = ports[matches[0]]
        self._in.set_callback(self._on)
        self._in.open_port(matches[0], "in")

    def _on(self, event: tuple[list[int], float], _data: Any) -> None:
        with self._cond:
            self.received.append((time.monotonic(), list(event[0])))
            self._cond.notify_all()
        if self._on_message is not None:
            self._on_message(list(event[0]))

    def wait_count(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` messages arrived (or ``timeout`` s passed); whether they did."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.received) >= n, timeout)

    def close(self) -> None:
        """Disconnect and leave the server."""
        self._in.close_port()
        self._in.delete()

    def __enter__(self) -> MidiMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- command line
def _command(ctl: MidiController, line: str) -> str:
    words = line.split()
    cmd, args = words[0], [int(w) for w in words[1:]] if words[0] != "send" else []
    if cmd == "sweep" and len(args) in (3, 4):
        ctl.sweep(args[0], args[1], args[2], (args[3] if len(args) == 4 else 5) / 1000)
    elif cmd == "cc" and len(args) == 2:
        ctl.cc(args[0], args[1])
    elif cmd == "note" and 1 <= len(args) <= 3:
        ctl.note(args[0], args[1] if len(args) > 1 else 100)
        time.sleep((args[2] if len(args) > 2 else 100) / 1000)
        ctl.note(args[0], off=True)
    elif cmd == "send" and len(words) > 1:
        ctl.send([int(w, 16) for w in words[1:]])
    elif cmd == "vanish" and not args:
        ctl.vanish()
    elif cmd == "appear" and not args:
        ctl.appear()
    else:
        return f"error unknown command or wrong arguments: {line!r} (see --help)"
    return f"ok {line}"


def _cycle(ctl: MidiController, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            ctl.sweep(7, 0, 127, 0.004)
            ctl.sweep(7, 127, 0, 0.004)
            ctl.note(60, 100)
            time.sleep(0.2)
            ctl.note(60, off=True)
        except RuntimeError:
            pass  # unplugged by a command meanwhile


def _monitor(port: str, stop: threading.Event, into: list[MidiMonitor]) -> None:
    """Connect a printing MidiMonitor to ``port`` once it exists (retrying every 0.5 s)."""
    while not stop.is_set():
        try:
            into.append(MidiMonitor(port, on_message=lambda m: print(
                "recv " + " ".join(f"{b:02x}" for b in m), flush=True)))
            print(f"monitoring {port}", flush=True)
            return
        except LookupError:
            stop.wait(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jackd", metavar="NAME", help="start a private jackd (dummy driver) of this name")
    ap.add_argument("--client", default="controller", help="JACK client name (default: controller)")
    ap.add_argument("--port", default="slider", help="output port name (default: slider)")
    ap.add_argument("--cycle", type=float, metavar="S", help="sweep control 7 and play a note every S s")
    ap.add_argument("--monitor", metavar="PORT", help="print what arrives from this port (e.g. 'pihub MIDI out')")
    a = ap.parse_args(argv)
    server = None
    if a.jackd:
        os.environ.update(jack_env(a.jackd))
        server = JackServer(a.jackd).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set() or sys.exit(0))
    ctl = MidiController(a.client, a.port)
    monitors: list[MidiMonitor] = []
    try:
        if a.monitor:  # pihub may start after this: wait for its port
            threading.Thread(target=_monitor, args=(a.monitor, stop, monitors), daemon=True).start()
        if a.cycle:
            threading.Thread(target=_cycle, args=(ctl, a.cycle, stop), daemon=True).start()
        print("ready", flush=True)
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            if line == "quit":
                break
            try:
                print(_command(ctl, line), flush=True)
            except (ValueError, RuntimeError) as e:
                print(f"error {e}", flush=True)
        if a.cycle and not stop.is_set():
            stop.wait()
    finally:
        stop.set()
        for monitor in monitors:
            monitor.close()
        ctl.close()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
