#!/usr/bin/env python3
"""A fake flicd: the Flic daemon's TCP protocol, with buttons pressed on command.

The real flicd (fliclib-linux-hci) needs a Bluetooth controller; this one speaks the same
wire protocol (``ProtocolDocumentation.md`` of the SDK: uint16 little-endian length,
opcode byte, little-endian fields, bd_addr reversed) and plays the buttons itself. Any
flicd client works against it: pihub's ``flic`` backend, the SDK's ``fliclib.py`` (PyPI
``pyflic``), the SDK's test clients.

What it answers: CmdGetInfo (verified buttons), CmdCreateConnectionChannel (response,
then Connected -> Ready for a verified button in range; Disconnected otherwise),
CmdRemoveConnectionChannel, CmdForceDisconnect, CmdChangeModeParameters, CmdPing,
CmdGetButtonInfo, CmdDeleteButton. Scanners, the scan wizard and battery listeners are
accepted and never report anything. A malformed command closes that client, as a
protocol error should.

Button presses are played in real time and classified as flicd does (doc timing: a
Click is held at most ``hold_time``, a Hold is sent once the button has been held that
long, a DoubleClick needs the second press within ``double_window`` of the first
release, so a SingleClick is sent only once that window has passed). Every press sends
all four event kinds on every channel of the button (ops 4-7), as flicd does.

Command line (one command; Ctrl-C or SIGTERM stops it)::

    python3 hw-mocks/fake_flicd.py [--host 127.0.0.1] [--port 5551] [--control-port 5552]
        [--button 80:e4:da:70:a1:c0 ...] [--unverified 80:e4:da:70:a1:c1 ...]
        [--hold-time 1.0] [--double-window 0.5] [--cycle 0] [--verbose]

``--cycle S`` double-presses the first button every S seconds by itself (``make demo``).

When ready it prints one line on stderr::

    fake flicd on 127.0.0.1:5551 control 127.0.0.1:5552

Control protocol (port ``--control-port``, loopback; one command per line, each answered
``ok [...]`` or ``error <why>`` once its effect is complete, i.e. after the presses were
played)::

    press ADDR short|long|double|hold   one gesture: short = held 0.05 s; long = held 0.6 s
                                        (a LongPressEvent for pihub, still a Click for flicd);
                                        double = two short presses 0.1 s apart; hold = held
                                        hold_time + 0.1 s
    sequence ADDR GESTURE...            gestures 0.1 s apart: ``sequence ADDR short long short``
    down ADDR / up ADDR                 the raw edges (a test keeps time itself)
    disconnect ADDR / connect ADDR      the button leaves / comes back in range
    verify ADDR                         an unverified button pairs (Ready, EvtNewVerifiedButton)
    drop                                close every client connection (a flicd crash, seen
                                        from the client)
    raw HEX                             send these bytes as they are to every client (frame
                                        them yourself: malformed-packet tests)
    clients                             ``ok N``: connected clients
    quit                                stop the fake

In process (tests)::

    with FakeFlicd(buttons=["80:e4:da:70:a1:c0"]) as flicd:   # port 0: flicd.port
        ...  flicd.press("80:e4:da:70:a1:c0", "double"); flicd.drop_clients()

Standard library only, and written from the protocol document rather than from pihub's
client: a test through it checks pihub against the protocol, not against itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger("fake_flicd")

# ClickType (protocol enum)
DOWN, UP, CLICK, SINGLE, DOUBLE, HOLD = range(6)
# ConnectionStatus
DISCONNECTED, CONNECTED, READY = range(3)
# DisconnectReason
TIMED_OUT = 2
# opcodes of the events sent
EVT_CREATE_RESPONSE, EVT_STATUS, EVT_REMOVED = 1, 2, 3
EVT_UP_DOWN, EVT_CLICK_HOLD, EVT_SINGLE_DOUBLE, EVT_SINGLE_DOUBLE_HOLD = 4, 5, 6, 7
EVT_NEW_VERIFIED, EVT_INFO, EVT_PING, EVT_BUTTON_INFO, EVT_DELETED = 8, 9, 13, 14, 19
# command opcode -> its fixed body size in bytes
COMMAND_SIZES = {0: 0, 1: 4, 2: 4, 3: 13, 4: 4, 5: 6, 6: 7, 7: 4, 8: 6, 9: 4, 10: 4, 11: 6, 12: 10, 13: 4}

#: gesture -> presses as (held seconds, gap seconds after the release)
GESTURES = {"short": [(0.05, 0.0)], "long": [(0.6, 0.0)], "double": [(0.05, 0.1), (0.05, 0.0)]}
GAP = 0.1  # seconds between the gestures of a ``sequence``


def addr_bytes(addr: str) -> bytes:
    """``08:09:0a:0b:0c:0d`` -> the 6 wire bytes, least significant first."""
    parts = addr.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad Bluetooth address {addr!r} (want aa:bb:cc:dd:ee:ff)")
    return bytes(int(p, 16) for p in reversed(parts))


def addr_str(raw: bytes) -> str:
    """The 6 wire bytes -> ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in reversed(raw))


def packet(op: int, fmt: str = "", *fields: object) -> bytes:
    """One framed packet: length, opcode, little-endian fields."""
    body = bytes([op]) + (struct.pack("<" + fmt, *fields) if fmt else b"")
    return struct.pack("<H", len(body)) + body


class _Client:
    """One client connection: its socket, its channels, a write lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.channels: dict[int, str] = {}  # conn_id -> address
        self.lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(data)


class _Button:
    """flicd's click classifier for one button (real time, the fake's own timers)."""

    def __init__(self) -> None:
        self.in_range = True
        self.down_at: float | None = None
        self.second = False  # this press may make a double click
        self.held = False  # the Hold was sent for this press
        self.hold_timer: threading.Timer | None = None
        self.single_timer: threading.Timer | None = None


class FakeFlicd:
    """The fake daemon (see the module docstring).

    Args:
        buttons: verified button addresses, in range.
        unverified: addresses of buttons in range but not verified (``verify`` pairs them).
        host, port: where to listen (port 0: any free port, then :attr:`port`).
        control_port: where the line control protocol listens; None: no control server.
        hold_time: seconds held before a Hold (flicd: 1 s).
        double_window: seconds after a release within which a press makes a DoubleClick
            (flicd: 0.5 s).
    """

    def __init__(self, buttons: Iterable[str] = (), *, unverified: Iterable[str] = (), host: str = "127.0.0.1",
                 port: int = 0, control_port: int | None = None, hold_time: float = 1.0,
                 double_window: float = 0.5) -> None:
        self.verified = [a.lower() for a in buttons]
        self.unverified = [a.lower() for a in unverified]
        for a in self.verified + self.unverified:
            addr_bytes(a)
        self.hold_time = hold_time
        self.double_window = double_window
        self._buttons = {a: _Button() for a in self.verified + self.unverified}
        self._lock = threading.RLock()
        self._clients: list[_Client] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = socket.create_server((host, port), reuse_port=False)
        self.host, self.port = self._server.getsockname()[:2]
        self._control: socket.socket | None = None
        self.control_port: int | None = None
        if control_port is not None:
            self._control = socket.create_server((host, control_port))
            self.control_port = self._control.getsockname()[1]
        #: commands received, as (opcode, body bytes), in order (for tests)
        self.commands: list[tuple[int, bytes]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeFlicd:
        """Start accepting clients (and control connections)."""
        self._spawn(self._accept, self._server, self._serve_client, "fake-flicd-accept")
        if self._control is not None:
            self._spawn(self._accept, self._control, self._serve_control, "fake-flicd-control")
        return self

    def stop(self) -> None:
        """Close every socket and stop the threads."""
        self._stopping.set()
        for srv in (self._server, self._control):
            if srv is not None:
                with contextlib.suppress(OSError):
                    srv.shutdown(socket.SHUT_RDWR)
                srv.close()
        self.drop_clients()
        with self._lock:
            for b in self._buttons.values():
                for t in (b.hold_timer, b.single_timer):
                    if t is not None:
                        t.cancel()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)

    def __enter__(self) -> FakeFlicd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=fn, args=args[:-1], name=args[-1], daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self, server: socket.socket, serve) -> None:  # type: ignore[no-untyped-def]
        while not self._stopping.is_set():
            try:
                sock, _ = server.accept()
            except OSError:
                return
            self._spawn(serve, sock, "fake-flicd-conn")

    # ------------------------------------------------------------------ flicd protocol
    def _serve_client(self, sock: socket.socket) -> None:
        client = _Client(sock)
        with self._lock:
            self._clients.append(client)
        try:
            f = sock.makefile("rb")
            while True:
                head = f.read(2)
                if len(head) < 2:
                    return
                (n,) = struct.unpack("<H", head)
                data = f.read(n)
                if n == 0 or len(data) < n:
                    return
                op, body = data[0], data[1:]
                if op not in COMMAND_SIZES or len(body) < COMMAND_SIZES[op]:
                    log.warning("malformed command op %d (%d bytes): closing the client", op, len(body))
                    return
                self.commands.append((op, bytes(body)))
                self._command(client, op, body)
        except OSError:
            return
        finally:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            with contextlib.suppress(OSError):
                sock.close()

    def _command(self, c: _Client, op: int, body: bytes) -> None:
        with self._lock:
            if op == 0:
                verified = list(self.verified)
                info = struct.pack("<B6sBBhBBH", 2, addr_bytes("00:1a:7d:da:71:13"), 0, 128, -1,
                                   len(self._buttons), 0, len(verified))
                c.send(struct.pack("<H", 1 + len(info) + 6 * len(verified)) + bytes([EVT_INFO]) + info
                       + b"".join(addr_bytes(a) for a in verified))
            elif op == 3:
                conn_id, raw, _latency, _auto = struct.unpack_from("<I6sBh", body)
                addr = addr_str(raw)
                if conn_id in c.channels:
                    return  # the doc: an existing conn_id does nothing
                c.channels[conn_id] = addr
                ready = addr in self.verified and self._buttons.get(addr, _Button()).in_range
                if addr not in self._buttons:
                    self._buttons[addr] = _Button()
                    self._buttons[addr].in_range = False  # an unknown button: never in range
                c.send(packet(EVT_CREATE_RESPONSE, "IBB", conn_id, 0, DISCONNECTED))
                if ready:
                    c.send(packet(EVT_STATUS, "IBB", conn_id, CONNECTED, 0))
                    c.send(packet(EVT_STATUS, "IBB", conn_id, READY, 0))
            elif op == 4:
                (conn_id,) = struct.unpack_from("<I", body)
                if c.channels.pop(conn_id, None) is not None:
                    c.send(packet(EVT_REMOVED, "IB", conn_id, 0))
            elif op == 5:
                addr = addr_str(body[:6])
                for client in self._clients:
                    for conn_id, a in list(client.channels.items()):
                        if a == addr:
                            del client.channels[conn_id]
                            client.send(packet(EVT_REMOVED, "IB", conn_id, 1 if client is c else 2))
            elif op == 7:
                (ping_id,) = struct.unpack_from("<I", body)
                c.send(packet(EVT_PING, "I", ping_id))
            elif op == 8:
                raw = body[:6]
                known = addr_str(raw) in self.verified
                c.send(packet(EVT_BUTTON_INFO, "6s16s17p17pBI", raw, b"\x11" * 16 if known else bytes(16),
                              b"white" if known else b"", b"BG12-A34567" if known else b"", 2, 1))
            elif op == 11:
                addr = addr_str(body[:6])
                if addr in self.verified:
                    self.verified.remove(addr)
                    for client in self._clients:
                        client.send(packet(EVT_DELETED, "6s?", body[:6], client is c))

    def _send_channels(self, addr: str, op: int, fmt: str, *fields: object) -> None:
        """Send one event to every channel of ``addr`` (fields after conn_id)."""
        with self._lock:
            for client in self._clients:
                for conn_id, a in client.channels.items():
                    if a == addr:
                        client.send(packet(op, "I" + fmt, conn_id, *fields))

    def _button_event(self, addr: str, op: int, click: int) -> None:
        self._send_channels(addr, op, "BBI", click, 0, 0)

    # ------------------------------------------------------------------ the buttons
    def _button(self, addr: str) -> _Button:
        addr = addr.lower()
        b = self._buttons.get(addr)
        if b is None or addr not in self.verified:
            raise ValueError(f"no verified button {addr!r} (verified: {', '.join(self.verified) or 'none'})")
        return b

    def down(self, addr: str) -> None:
        """Press the button (op 4 ButtonDown now; Hold after ``hold_time`` if still down)."""
        addr = addr.lower()
        with self._lock:
            b = self._button(addr)
            if b.single_timer is not None and b.single_timer.is_alive():
                b.single_timer.cancel()
                b.second = True
            else:
                b.second = False
            b.down_at, b.held = time.monotonic(), False
            self._button_event(addr, EVT_UP_DOWN, DOWN)
            b.hold_timer = threading.Timer(self.hold_time, self._hold, (addr, b.down_at))
            b.hold_timer.daemon = True
            b.hold_timer.start()

    def up(self, addr: str) -> None:
        """Release the button (op 4 ButtonUp; Click, and DoubleClick or later SingleClick)."""
        addr = addr.lower()
        with self._lock:
            b = self._button(addr)
            if b.down_at is None:
                return
            b.down_at = None
            if b.hold_timer is not None:
                b.hold_timer.cancel()
            self._button_event(addr, EVT_UP_DOWN, UP)
            if b.held:
                return
            self._button_event(addr, EVT_CLICK_HOLD, CLICK)
            if b.second:
                b.second = False
                self._button_event(addr, EVT_SINGLE_DOUBLE, DOUBLE)
                self._button_event(addr, EVT_SINGLE_DOUBLE_HOLD, DOUBLE)
                return
            b.single_timer = threading.Timer(self.double_window, self._single, (addr, b))
            b.single_timer.daemon = True
            b.single_timer.start()

    def _hold(self, addr: str, down_at: float) -> None:
        with self._lock:
            b = self._buttons[addr]
            if b.down_at != down_at:
                return
            b.held, b.second = True, False
            self._button_event(addr, EVT_CLICK_HOLD, HOLD)
            self._button_event(addr, EVT_SINGLE_DOUBLE_HOLD, HOLD)

    def _single(self, addr: str, b: _Button) -> None:
        with self._lock:
            if b.down_at is not None or b.second:
                return
            self._button_event(addr, EVT_SINGLE_DOUBLE, SINGLE)
            self._button_event(addr, EVT_SINGLE_DOUBLE_HOLD, SINGLE)

    def press(self, addr: str, gesture: str) -> None:
        """Play one gesture (``short``, ``long``, ``double``, ``hold``); returns when released."""
        if gesture == "hold":
            presses = [(self.hold_time + 0.1, 0.0)]
        elif gesture in GESTURES:
            presses = GESTURES[gesture]
        else:
            raise ValueError(f"unknown gesture {gesture!r} (allowed: short, long, double, hold)")
        self._button(addr)
        for held, gap in presses:
            self.down(addr)
            time.sleep(held)
            self.up(addr)
            if gap:
                time.sleep(gap)

    def sequence(self, addr: str, gestures: Iterable[str]) -> None:
        """Play gestures ``GAP`` seconds apart (``["short", "long", "short"]``)."""
        for i, g in enumerate(gestures):
            if i:
                time.sleep(GAP)
            self.press(addr, g)

    def play(self, steps: Iterable[tuple[float, str, str]]) -> None:
        """Play raw edges at set times: ``(seconds from now, "down" | "up", address)``, in
        time order; several buttons may interleave. Returns after the last one."""
        t0 = time.monotonic()
        for at, edge, addr in steps:
            if edge not in ("down", "up"):
                raise ValueError(f"unknown edge {edge!r} (allowed: down, up)")
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            (self.down if edge == "down" else self.up)(addr)

    def set_in_range(self, addr: str, in_range: bool) -> None:
        """The button leaves (Disconnected, TimedOut) or comes back (Connected, Ready)."""
        addr = addr.lower()
        with self._lock:
            b = self._buttons.get(addr)
            if b is None:
                raise ValueError(f"unknown button {addr!r}")
            b.in_range = in_range
            if addr not in self.verified:
                return
            if in_range:
                self._send_channels(addr, EVT_STATUS, "BB", CONNECTED, 0)
                self._send_channels(addr, EVT_STATUS, "BB", READY, 0)
            else:
                self._send_channels(addr, EVT_STATUS, "BB", DISCONNECTED, TIMED_OUT)

    def verify(self, addr: str) -> None:
        """An unverified button pairs: Connected, Ready on its channels, then EvtNewVerifiedButton."""
        addr = addr.lower()
        with self._lock:
            if addr not in self.unverified:
                raise ValueError(f"no unverified button {addr!r}")
            self.unverified.remove(addr)
            self.verified.append(addr)
            self._buttons[addr].in_range = True
            self._send_channels(addr, EVT_STATUS, "BB", CONNECTED, 0)
            self._send_channels(addr, EVT_STATUS, "BB", READY, 0)
            for client in self._clients:
                client.send(packet(EVT_NEW_VERIFIED, "6s", addr_bytes(addr)))

    def drop_clients(self) -> None:
        """Close every client connection at once (reset: SO_LINGER 0)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            with contextlib.suppress(OSError):
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.sock.shutdown(socket.SHUT_RDWR)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are to every client (malformed-packet tests)."""
        with self._lock:
            for c in self._clients:
                c.send(data)

    @property
    def clients(self) -> int:
        """Connected clients now."""
        with self._lock:
            return len(self._clients)

    def channels_of(self, addr: str) -> int:
        """Open connection channels to ``addr``, over all clients."""
        with self._lock:
            return sum(a == addr.lower() for c in self._clients for a in c.channels.values())

    # ------------------------------------------------------------------ control protocol
    def _serve_control(self, sock: socket.socket) -> None:
        with sock, sock.makefile("rwb", buffering=0) as f:
            for raw in iter(f.readline, b""):
                words = raw.decode("utf-8", "replace").split()
                if not words:
                    continue
                try:
                    reply = self.control(words)
                except (ValueError, IndexError, TypeError) as e:
                    reply = f"error {e}"
                with contextlib.suppress(OSError):
                    f.write((reply + "\n").encode())
                if words[0] == "quit":
                    threading.Thread(target=self.stop, daemon=True).start()
                    return

    def control(self, words: list[str]) -> str:
        """Run one control command (see the module docstring); its reply line."""
        cmd, args = words[0].lower(), words[1:]
        if cmd == "press":
            self.press(args[0], args[1])
        elif cmd == "sequence":
            self.sequence(args[0], args[1:])
        elif cmd == "down":
            self.down(args[0])
        elif cmd == "up":
            self.up(args[0])
        elif cmd in ("disconnect", "connect"):
            self.set_in_range(args[0], cmd == "connect")
        elif cmd == "verify":
            self.verify(args[0])
        elif cmd == "drop":
            self.drop_clients()
        elif cmd == "raw":
            self.send_raw(bytes.fromhex("".join(args)))
        elif cmd == "clients":
            return f"ok {self.clients}"
        elif cmd != "quit":
            raise ValueError(f"unknown command {cmd!r} (allowed: press, sequence, down, up, disconnect, "
                             "connect, verify, drop, raw, clients, quit)")
        return "ok"


def _iter_signals() -> Iterator[int]:
    yield signal.SIGINT
    yield signal.SIGTERM


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A fake flicd speaking the Flic daemon protocol.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5551, help="flicd port (0: any free port)")
    p.add_argument("--control-port", type=int, default=5552, help="control port (0: any free port)")
    p.add_argument("--button", action="append", default=[], help="a verified button address (repeatable)")
    p.add_argument("--unverified", action="append", default=[], help="an unverified button in range")
    p.add_argument("--hold-time", type=float, default=1.0, help="seconds held before a Hold")
    p.add_argument("--double-window", type=float, default=0.5, help="seconds for a DoubleClick's second press")
    p.add_argument("--cycle", type=float, default=0.0,
                   help="every this many seconds, double-press the first button (make demo); 0: never")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="fake_flicd: %(message)s")
    flicd = FakeFlicd(a.button or ["80:e4:da:70:a1:c0"], unverified=a.unverified, host=a.host, port=a.port,
                      control_port=a.control_port, hold_time=a.hold_time, double_window=a.double_window)
    done = threading.Event()
    for s in _iter_signals():
        signal.signal(s, lambda *_: done.set())
    flicd.start()
    print(f"fake flicd on {flicd.host}:{flicd.port} control {flicd.host}:{flicd.control_port}",
          file=sys.stderr, flush=True)
    next_press = time.monotonic() + a.cycle
    while not done.wait(0.2) and not flicd._stopping.is_set():
        if a.cycle > 0 and time.monotonic() >= next_press:
            flicd.press(flicd.verified[0], "double")
            next_press = time.monotonic() + a.cycle
    flicd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
