"""Flic buttons, as a client of flicd (the Flic daemon of fliclib-linux-hci).

Config (section ``flic``; Platypush's ``backend.button.flic`` and ``flic`` keys are read)::

    flic:
      server: 127.0.0.1            # flicd host (flicd -s); Platypush's key
      port: 5551                   # flicd port (flicd -p)
      buttons: [80:e4:da:70:a1:c0] # channels to these buttons; empty (default): every
                                   # button flicd has verified, and each newly verified one
      long_press_timeout: 0.3      # s; a press held this long or longer is a LongPressEvent
      btn_timeout: 0.5             # s after the last release that ends a press sequence
      latency_mode: normal         # flicd's latency mode: normal (100 ms) | low (17.5 ms) | high (275 ms)
      max_queued_age: 10.0         # s; older queued clicks (made while out of range) are dropped
      connect_timeout: 5.0         # s for the TCP connect, then for flicd's answer to GetInfo
                                   # (a deadline: other packets do not extend it), and for the
                                   # rest of any packet once it has begun
      reconnect_interval: 1.0      # s before the first reconnect; doubles per failed attempt...
      max_reconnect_interval: 30.0 # ...up to this

Events, per button (``btn_addr`` is ``aa:bb:cc:dd:ee:ff``, lower case):

* ``FlicButtonEvent{btn_addr, sequence}``: Platypush's press sequence. A press (flicd's
  ButtonDown -> ButtonUp, timed on :attr:`Backend.clock` when they arrive) shorter than
  ``long_press_timeout`` is a ``"ShortPressEvent"``, else a ``"LongPressEvent"``; each
  release starts a ``btn_timeout`` timer (``clock.call_later``) that a new press on the
  *same button* cancels; when it expires the sequence is emitted and starts again.
  Unlike Platypush, which keeps one sequence for all buttons (two buttons pressed in turn
  merge into one sequence under the last one's address), each button has its own.
* ``FlicButtonClickEvent`` / ``FlicButtonDoubleClickEvent`` / ``FlicButtonHoldEvent``
  ``{btn_addr, was_queued, time_diff}``: flicd's own classification (its
  ButtonSingleOrDoubleClickOrHold events: a click is known only once flicd's double-click
  window has passed; a double click fires no click; a hold fires once held 1 s).
* ``FlicButtonConnectionEvent{btn_addr, status}`` when a button's status changes.

Queued events (``was_queued``: the button was out of range and delivers its presses when
it reconnects) never enter a sequence - their arrival times are not the press times - and
their clicks are emitted with ``was_queued: true`` if not older than ``max_queued_age``.

Status: each button is ``connected`` (flicd's channel is Ready), ``disconnected`` (out of
range, not yet connected, or flicd unreachable) or ``not verified`` (a configured button
flicd has not paired; its channel stays open so it pairs when put in public mode). The
action ``flic.status`` and ``GET /status`` (once open) show them. While flicd is
unreachable the backend is ``degraded`` with the reason, and the reader reconnects with
back-off (``reconnect_interval`` doubling up to ``max_reconnect_interval``, waited on the
clock); once flicd answers it recreates the channels and is ``running`` again. A peer that
accepts the connection but does not answer GetInfo within ``connect_timeout`` of it
(silent, or sending anything else) is treated the same way.

At most :data:`MAX_BUTTONS` buttons per backend (configured or verified): further
buttons flicd announces (in GetInfo or ``EvtNewVerifiedButton``) are ignored, counted
(``ignored_buttons`` in the status) and logged, rate-limited, so a hostile or broken
flicd cannot grow the button table, its channels and the panel without bound.

The client is pihub's own (this module's :class:`FrameReader` and the decoder tables),
not the SDK's ``fliclib.py`` (PyPI ``pyflic``), chosen by measurement (see pyproject.toml):
fliclib decodes a button packet in 1.92 us against 0.74 us here (with two recv calls per
packet against one per chunk), has no connect or read timeout (a silent peer hangs
it), raises KeyError/struct.error/ValueError out of its event loop on a malformed packet
and can only be woken for close() by a ping the server must answer. Here every packet is
checked (length, enums, channel ids); a malformed one resets the connection, which is
logged and retried like a flicd restart. Fields past those the protocol defines are
ignored and unknown opcodes skipped, as the protocol document asks of clients.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit
from pihub.clock import Clock, Timer
from pihub.config.schema import Field, Schema, show
from pihub.errors import ConfigProblem, ConfigProblems, ProtocolError
from pihub.events import CATALOGUE, Event
from pihub.logs import LogLimiter
from pihub.plugin import action

__all__ = ["CLICK_KINDS", "MAX_BUTTONS", "FlicBackend", "FrameReader", "PressSequence", "ProtocolError"]

ButtonStatus = Literal["connected", "disconnected", "not verified"]
SHORT: Final = "ShortPressEvent"
LONG: Final = "LongPressEvent"

_ADDR_RE: Final = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
LATENCY_MODES: Final = {"normal": 0, "low": 1, "high": 2}
_AUTO_DISCONNECT_NEVER: Final = 511  # flicd: the button stays connected
#: the most buttons one backend keeps (a record, a channel and a panel entity each); a
#: Bluetooth controller holds far fewer connected buttons, so more is a broken or hostile flicd
MAX_BUTTONS: Final = 128
_IGNORED_LOG_BURST: Final = 3  # ignored-button lines logged per window...
_IGNORED_LOG_WINDOW: Final = 60.0  # ...of this many seconds of the clock; the rest are counted

# ---------------------------------------------------------------------- the wire protocol
# Commands (client -> flicd): opcode and body layout.
CMD_GET_INFO: Final = 0
CMD_CREATE_CHANNEL: Final = 3
_CREATE_CHANNEL: Final = struct.Struct("<I6sBh")  # conn_id, bd_addr, latency_mode, auto_disconnect_time
# Events (flicd -> client).
EVT_CREATE_RESPONSE: Final = 1
EVT_STATUS: Final = 2
EVT_REMOVED: Final = 3
EVT_UP_DOWN: Final = 4
EVT_CLICK_HOLD: Final = 5
EVT_SINGLE_DOUBLE: Final = 6
EVT_SINGLE_DOUBLE_HOLD: Final = 7
EVT_NEW_VERIFIED: Final = 8
EVT_INFO: Final = 9
EVT_CONTROLLER_STATE: Final = 12
#: event opcode -> (name, body layout); bodies may be longer (later protocol versions)
EVENTS: Final[Mapping[int, tuple[str, struct.Struct]]] = {
    EVT_CREATE_RESPONSE: ("EvtCreateConnectionChannelResponse", struct.Struct("<IBB")),
    EVT_STATUS: ("EvtConnectionStatusChanged", struct.Struct("<IBB")),
    EVT_REMOVED: ("EvtConnectionChannelRemoved", struct.Struct("<IB")),
    EVT_UP_DOWN: ("EvtButtonUpOrDown", struct.Struct("<IBBI")),
    EVT_CLICK_HOLD: ("EvtButtonClickOrHold", struct.Struct("<IBBI")),
    EVT_SINGLE_DOUBLE: ("EvtButtonSingleOrDoubleClick", struct.Struct("<IBBI")),
    EVT_SINGLE_DOUBLE_HOLD: ("EvtButtonSingleOrDoubleClickOrHold", struct.Struct("<IBBI")),
    EVT_NEW_VERIFIED: ("EvtNewVerifiedButton", struct.Struct("<6s")),
    EVT_INFO: ("EvtGetInfoResponse", struct.Struct("<B6sBBhBBH")),
    EVT_CONTROLLER_STATE: ("EvtBluetoothControllerStateChange", struct.Struct("<B")),
}
# enums
CLICK_DOWN, CLICK_UP, CLICK, CLICK_SINGLE, CLICK_DOUBLE, CLICK_HOLD = range(6)
#: button event opcode -> the click types flicd may send in it
_CLICK_TYPES: Final = {EVT_UP_DOWN: (CLICK_DOWN, CLICK_UP), EVT_CLICK_HOLD: (CLICK, CLICK_HOLD),
                       EVT_SINGLE_DOUBLE: (CLICK_SINGLE, CLICK_DOUBLE),
                       EVT_SINGLE_DOUBLE_HOLD: (CLICK_SINGLE, CLICK_DOUBLE, CLICK_HOLD)}
CONN_DISCONNECTED, CONN_CONNECTED, CONN_READY = range(3)
_CREATE_ERRORS: Final = ("NoError", "MaxPendingConnectionsReached")
_DISCONNECT_REASONS: Final = ("Unspecified", "ConnectionEstablishmentFailed", "TimedOut", "BondingKeysMismatch")
_REMOVED_REASONS: Final = ("RemovedByThisClient", "ForceDisconnectedByThisClient", "ForceDisconnectedByOtherClient",
                           "ButtonIsPrivate", "VerifyTimeout", "InternetBackendError", "InvalidData",
                           "CouldntLoadDevice", "DeletedByThisClient", "DeletedByOtherClient",
                           "ButtonBelongsToOtherPartner", "DeletedFromButton")
_CONTROLLER_STATES: Final = ("Detached", "Resetting", "Attached")

_EVENT_TYPES: Final = {CLICK_SINGLE: CATALOGUE.get("FlicButtonClickEvent"),
                       CLICK_DOUBLE: CATALOGUE.get("FlicButtonDoubleClickEvent"),
                       CLICK_HOLD: CATALOGUE.get("FlicButtonHoldEvent")}
_SEQUENCE_EVENT: Final = CATALOGUE.get("FlicButtonEvent")
#: flicd's click type -> the ``kind`` of a button's ``last_press``
_PRESS_KINDS: Final = {CLICK_SINGLE: "click", CLICK_DOUBLE: "double_click", CLICK_HOLD: "hold"}
#: a click event's type name -> its press kind (``FlicButtonHoldEvent`` -> ``hold``), in
#: flicd's order: what Home Assistant's event entity of a button fires
CLICK_KINDS: Final[Mapping[str, str]] = {_EVENT_TYPES[c].name: k for c, k in _PRESS_KINDS.items()}
_CONNECTION_EVENT: Final = CATALOGUE.get("FlicButtonConnectionEvent")
_RECV_CHUNK: Final = 4096  # bytes asked of one recv


def addr_to_wire(addr: str) -> bytes:
    """``08:09:0a:0b:0c:0d`` -> the 6 wire bytes (least significant first)."""
    return bytes.fromhex(addr.replace(":", ""))[::-1]


def addr_from_wire(raw: bytes) -> str:
    """The 6 wire bytes -> ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in raw[::-1])


def command(op: int, body: bytes = b"") -> bytes:
    """One framed command: uint16 LE length (opcode + body), opcode, body."""
    return struct.pack("<HB", len(body) + 1, op) + body


class FrameReader:
    """Splits the byte stream from flicd into packets (``uint16 LE length`` + payload)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add received bytes; the complete packets, as ``(opcode, body)``, in order.

        Raises:
            ProtocolError: a packet of length 0 (it has no opcode).
        """
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        while len(buf) - pos >= 2:
            n = buf[pos] | buf[pos + 1] << 8
            if n == 0:
                raise ProtocolError("a packet of length 0 (no opcode)")
            if len(buf) - pos - 2 < n:
                break
            out.append((buf[pos + 2], bytes(buf[pos + 3:pos + 2 + n])))
            pos += 2 + n
        del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet held."""
        return len(self._buf)


def decode(op: int, body: bytes) -> tuple[Any, ...] | None:
    """The fixed fields of an event packet, or None for an opcode pihub does not use.

    Raises:
        ProtocolError: the body is shorter than its opcode's fields.
    """
    spec = EVENTS.get(op)
    if spec is None:
        return None
    name, layout = spec
    if len(body) < layout.size:
        raise ProtocolError(f"{name} of {len(body)} bytes, shorter than its {layout.size}")
    return layout.unpack_from(body)


# ---------------------------------------------------------------------- press sequences
class PressSequence:
    """Platypush's press-sequence rule for one button, on a :class:`~pihub.clock.Clock`.

    :meth:`down` and :meth:`up` are called as flicd's ButtonDown/ButtonUp arrive (any
    thread); ``on_end(sequence)`` is called on the clock's timer thread ``timeout`` seconds
    after the last release with the presses since the previous end, e.g.
    ``["ShortPressEvent", "LongPressEvent"]``.

    Args:
        clock: the time of presses and of the end timer.
        long_press: seconds; a press held at least this long is a ``LongPressEvent``.
        timeout: seconds after a release that end the sequence unless a press comes.
        on_end: called with the finished sequence (a new list).
    """

    def __init__(self, clock: Clock, long_press: float, timeout: float,
                 on_end: Callable[[list[str]], None]) -> None:
        self._clock = clock
        self.long_press = long_press
        self.timeout = timeout
        self._on_end = on_end
        self._lock = threading.Lock()
        self._presses: list[str] = []
        self._down_at: float | None = None
        self._timer: Timer | None = None
        self._generation = 0  # bumped by every down and end: a timer that lost a race is stale

    def down(self) -> None:
        """The button went down: a pending end is cancelled; the press starts now."""
        with self._lock:
            self._stop_timer()
            self._down_at = self._clock.now()

    def up(self) -> None:
        """The button came up: the press is added and the end timer starts.

        An up with no down before it (the connection began mid-press) is ignored.
        """
        with self._lock:
            if self._down_at is None:
                return
            held = self._clock.now() - self._down_at
            self._down_at = None
            self._presses.append(LONG if held >= self.long_press else SHORT)
            self._stop_timer()
            self._timer = self._clock.call_later(self.timeout, self._expire, self._generation)

    def interrupt(self) -> None:
        """Forget a press in progress (the connection was lost while the button was down:
        its release, if it ever comes, is not this press's). Finished presses stay, and
        end ``timeout`` seconds from now, as after a release."""
        with self._lock:
            if self._down_at is None:
                return
            self._down_at = None
            if self._presses:
                self._timer = self._clock.call_later(self.timeout, self._expire, self._generation)

    def cancel(self) -> None:
        """Forget the presses so far and any pending end (the backend is closing)."""
        with self._lock:
            self._stop_timer()
            self._presses = []
            self._down_at = None

    @property
    def presses(self) -> list[str]:
        """The presses of the sequence in progress."""
        with self._lock:
            return list(self._presses)

    def _stop_timer(self) -> None:
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or not self._presses:
                return
            sequence, self._presses = self._presses, []
            self._timer = None
            self._generation += 1
        self._on_end(sequence)


class _Button:
    """What the backend knows of one button."""

    __slots__ = ("addr", "conn_id", "last_press", "sequence", "status", "verified")

    def __init__(self, addr: str, sequence: PressSequence) -> None:
        self.addr = addr
        self.status: ButtonStatus = "disconnected"
        self.verified = False
        self.conn_id: int | None = None  # the channel of the current flicd connection
        self.sequence = sequence
        #: ``{kind, time, was_queued}`` of the last click flicd classified (the panel's), or None
        self.last_press: dict[str, Any] | None = None


class _Lost(Exception):
    """The flicd connection ended (the message says why)."""


def _connect_error(server: str, port: int, exc: OSError) -> str:
    """Why a connect to flicd failed, as a fragment saying what to check."""
    if exc.errno == errno.ECONNREFUSED:
        return f"connection refused by {server}:{port} (is flicd running? flicd -f flic.db -s {server} -p {port})"
    if isinstance(exc, TimeoutError):
        return f"no answer from {server}:{port} (host down or firewalled?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve flicd host {server!r}: {exc.strerror}"
    return f"cannot connect to {server}:{port}: {exc.strerror or exc}"


_SCHEMA: Final = Schema({
    "server": Field(str, "127.0.0.1", aliases=("host",), doc="flicd host name or address (flicd -s)"),
    "port": Field(int, 5551, min=1, max=65535, doc="flicd TCP port (flicd -p)"),
    "buttons": Field(list[str], [], doc="button addresses (aa:bb:cc:dd:ee:ff) to open channels to; "
                                        "empty: every verified button"),
    "long_press_timeout": Field(float, 0.3, min=0.01, max=60.0,
                                doc="seconds held from which a press is a LongPressEvent"),
    "btn_timeout": Field(float, 0.5, min=0.01, max=60.0, aliases=("sequence_timeout",),
                         doc="seconds after the last release that end a press sequence"),
    "latency_mode": Field(str, "normal", choices=tuple(LATENCY_MODES),
                          doc="flicd latency mode: normal (100 ms), low (17.5 ms), high (275 ms)"),
    "max_queued_age": Field(float, 10.0, min=0.0, max=86400.0,
                            doc="seconds; queued clicks (made out of range) older than this are dropped"),
    "connect_timeout": Field(float, 5.0, min=0.1, max=120.0,
                             doc="seconds for the TCP connect, then (a deadline from it) for flicd's "
                                 "answer to GetInfo, and for the rest of a packet once begun"),
    "reconnect_interval": Field(float, 1.0, min=0.01, max=3600.0,
                                doc="seconds before the first reconnect; doubles per failed attempt"),
    "max_reconnect_interval": Field(float, 30.0, min=0.01, max=3600.0,
                                    doc="seconds; the longest wait between reconnect attempts"),
}, doc="Flic buttons through flicd: press sequences, clicks, double clicks, holds.")


class FlicBackend(Backend):
    """Flic buttons through flicd (see the module docstring).

    Args:
        config: the ``flic`` section (validated again here, so a raw mapping works).
        clock: the time of press sequences and reconnect waits (tests: a ManualClock).

    Raises:
        ConfigProblems: the section is invalid (a ``ValueError``), every problem listed.
    """

    name: ClassVar[str] = "flic"
    config_schema: ClassVar[Schema] = _SCHEMA

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config, clock=clock)
        values = self.config
        errors: list[ConfigProblem] = []
        buttons: list[str] = []
        for i, addr in enumerate(values["buttons"]):
            if not _ADDR_RE.match(addr):
                errors.append(ConfigProblem(("buttons", i), f"must be a Bluetooth address like 80:e4:da:70:a1:c0, "
                                                            f"not {show(addr)}"))
            elif addr.lower() in buttons:
                errors.append(ConfigProblem(("buttons", i), f"button {addr.lower()} is listed twice"))
            else:
                buttons.append(addr.lower())
        if len(values["buttons"]) > MAX_BUTTONS:
            errors.append(ConfigProblem(("buttons",), f"at most {MAX_BUTTONS} buttons, not {len(values['buttons'])}"))
        if values["max_reconnect_interval"] < values["reconnect_interval"]:
            errors.append(ConfigProblem(("max_reconnect_interval",), (
                f"must be at least reconnect_interval ({values['reconnect_interval']:g} s), "
                f"not {values['max_reconnect_interval']:g}")))
        if not values["server"].strip():
            errors.append(ConfigProblem(("server",), "must be a host name or address, not an empty string"))
        if errors:
            raise ConfigProblems(errors)
        self.server: str = values["server"]
        self.port: int = values["port"]
        #: the configured buttons; empty: every verified button
        self.configured: tuple[str, ...] = tuple(buttons)
        self.long_press_timeout: float = values["long_press_timeout"]
        self.btn_timeout: float = values["btn_timeout"]
        self.latency_mode: int = LATENCY_MODES[values["latency_mode"]]
        self.max_queued_age: float = values["max_queued_age"]
        self.connect_timeout: float = values["connect_timeout"]
        self.reconnect_interval: float = values["reconnect_interval"]
        self.max_reconnect_interval: float = values["max_reconnect_interval"]
        self._lock = threading.Lock()  # _buttons, _channels, _flicd, counters
        self._buttons: dict[str, _Button] = {}
        for addr in self.configured:
            self._add_button(addr)
        self._channels: dict[int, _Button] = {}
        self._next_conn_id = 1
        self._flicd: Literal["connecting", "connected", "unreachable", "stopped"] = "connecting"
        self._reported_down = False
        self._sock: socket.socket | None = None
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None
        self._opened = False
        self._counts = {"connects": 0, "connect_failures": 0, "connection_losses": 0, "protocol_errors": 0,
                        "ignored_packets": 0, "ignored_buttons": 0, "sequences": 0, "clicks": 0, "dropped_queued": 0,
                        "dropped_events": 0}
        self._ignored_log = LogLimiter(_IGNORED_LOG_BURST, _IGNORED_LOG_WINDOW, self.clock.now)

    # ------------------------------------------------------------------ lifecycle
    def open(self, emit: Emit) -> None:
        """Start the reader thread ``pihub-flic``: it connects to flicd and reconnects."""
        if self._thread is not None:
            return
        self._emit = emit
        self.status, self.error = BackendStatus.RUNNING, None
        self._opened = True
        self._thread = BackendThread(f"pihub-{self.name}", self._run)
        self._thread.start()

    def close(self) -> None:
        """Stop the reader (waking it from a blocked read), drop pending sequences; idempotent.

        Raises:
            RuntimeError: the reader did not stop.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stopping.set()
            self._shutdown_socket()
            thread.stop(timeout=self.connect_timeout + 5.0)
        self._emit = None
        with self._lock:
            buttons = list(self._buttons.values())
            self._flicd = "stopped"
        for b in buttons:
            b.sequence.cancel()
        self.status = BackendStatus.STOPPED

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus once open ``flicd`` (connecting, connected, unreachable,
        stopped), ``buttons`` (address -> connected, disconnected or not verified) and
        ``ignored_buttons`` (announced by flicd beyond :data:`MAX_BUTTONS`)."""
        out = super().describe_status()
        if self._opened:
            with self._lock:
                out["flicd"] = self._flicd
                out["buttons"] = {a: b.status for a, b in self._buttons.items()}
                out["ignored_buttons"] = self._counts["ignored_buttons"]
        return out

    # ------------------------------------------------------------------ reader thread
    def _run(self, stopping: threading.Event) -> None:
        """Connect, read until the connection ends, wait (back-off), reconnect; until stopped."""
        delay = self.reconnect_interval
        while not stopping.is_set():
            handshake = [False]
            try:
                self._session(stopping, handshake)
                reason = "flicd closed the connection"
            except ProtocolError as e:
                with self._lock:
                    self._counts["protocol_errors"] += 1
                reason = f"malformed packet from flicd ({e}); connection reset"
            except _Lost as e:
                reason = str(e)
            except Exception as e:  # a bug must not end the reader silently
                self.log.exception("flic client failed")
                reason = f"flic client failed: {type(e).__name__}: {e}"
            if stopping.is_set():
                return
            if handshake[0]:
                delay = self.reconnect_interval
            self._lost(reason)
            if self.clock.wait(stopping, delay):
                return
            if not handshake[0]:
                delay = min(delay * 2, self.max_reconnect_interval)

    def _session(self, stopping: threading.Event, handshake: list[bool]) -> None:
        """One connection: connect, GetInfo, channels, then packets until it ends.

        Raises:
            _Lost: the connection failed or ended (why).
            ProtocolError: flicd sent a malformed packet.
        """
        try:
            sock = socket.create_connection((self.server, self.port), timeout=self.connect_timeout)
        except OSError as e:
            with self._lock:
                self._counts["connect_failures"] += 1
            raise _Lost(_connect_error(self.server, self.port, e)) from None
        with self._lock:
            if stopping.is_set():
                sock.close()
                return
            self._sock = sock
            self._channels.clear()
            self._next_conn_id = 1
        # a deadline, not a per-recv timeout: a peer sending anything but the answer (unknown
        # opcodes every half second) must not keep the backend connecting for ever
        deadline = self.clock.now() + self.connect_timeout
        no_answer = (f"{self.server}:{self.port} accepted the connection but did not answer GetInfo "
                     f"within {self.connect_timeout:g} s (is it flicd?)")
        try:
            sock.sendall(command(CMD_GET_INFO))
            reader = FrameReader()
            buf = bytearray(_RECV_CHUNK)
            timeout: float | None = self.connect_timeout
            while not stopping.is_set():
                if not handshake[0]:
                    left = deadline - self.clock.now()
                    if left <= 0:
                        raise _Lost(no_answer)
                    timeout = left
                    sock.settimeout(left)
                elif (self.connect_timeout if reader.pending else None) != timeout:
                    # flicd speaks only when buttons do, so an idle socket waits for ever; but
                    # once a packet has begun, its rest follows at once (a stalled peer is lost)
                    timeout = self.connect_timeout if reader.pending else None
                    sock.settimeout(timeout)
                try:
                    n = sock.recv_into(buf)
                except TimeoutError:
                    if handshake[0]:
                        raise _Lost(f"flicd at {self.server}:{self.port} sent {reader.pending} bytes of a packet, "
                                    f"then nothing for {self.connect_timeout:g} s") from None
                    raise _Lost(no_answer) from None
                except OSError as e:
                    if stopping.is_set():
                        return
                    raise _Lost(f"connection to flicd lost: {e.strerror or e}") from None
                if n == 0:
                    return
                for op, body in reader.feed(bytes(buf[:n])):
                    if self._packet(sock, op, body) and not handshake[0]:
                        handshake[0] = True
        finally:
            with self._lock:
                self._sock = None
            with contextlib.suppress(OSError):
                sock.close()

    def _shutdown_socket(self) -> None:
        """Wake a recv blocked on the flicd socket (close)."""
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ packets
    def _packet(self, sock: socket.socket, op: int, body: bytes) -> bool:
        """Handle one packet; True for the GetInfo response (the handshake is done).

        Raises:
            ProtocolError: a malformed packet (short body, bad enum, unknown channel).
        """
        fields = decode(op, body)
        if fields is None:
            with self._lock:
                self._counts["ignored_packets"] += 1
            return False
        if op == EVT_INFO:
            self._info(sock, fields, body)
            return True
        if op == EVT_NEW_VERIFIED:
            self._new_verified(sock, addr_from_wire(fields[0]))
        elif op == EVT_CONTROLLER_STATE:
            state = fields[0]
            if state >= len(_CONTROLLER_STATES):
                raise ProtocolError(f"EvtBluetoothControllerStateChange with state {state}")
            self.log.info("flicd's Bluetooth controller is %s", _CONTROLLER_STATES[state])
        elif op in _CLICK_TYPES:
            self._button_event(op, *fields)
        else:
            self._channel_event(op, fields)
        return False

    def _info(self, sock: socket.socket, fields: tuple[Any, ...], body: bytes) -> None:
        """GetInfo answered: the verified buttons; open the channels."""
        controller, nb = fields[0], fields[-1]
        size = EVENTS[EVT_INFO][1].size
        if len(body) < size + 6 * nb:
            raise ProtocolError(f"EvtGetInfoResponse lists {nb} verified buttons in {len(body) - size} bytes")
        verified = {addr_from_wire(body[size + 6 * i:size + 6 * i + 6]) for i in range(nb)}
        ignored: list[str] = []
        with self._lock:
            self._flicd = "connected"
            self._counts["connects"] += 1
            targets = list(self.configured) if self.configured else sorted(verified)
            if not self.configured:
                known = [a for a in targets if a in self._buttons]
                room = max(MAX_BUTTONS - len(self._buttons), 0)
                new = [a for a in targets if a not in self._buttons]
                targets, ignored = known + new[:room], new[room:]
                self._counts["ignored_buttons"] += len(ignored)
            for addr in targets:
                self._add_button(addr).verified = addr in verified
        if ignored:
            self._log_ignored(ignored[0], len(ignored))
        self.log.info("connected to flicd at %s:%s (controller %s, %d verified buttons)", self.server, self.port,
                      _CONTROLLER_STATES[controller] if controller < len(_CONTROLLER_STATES) else controller, nb)
        if self._reported_down:
            self._reported_down = False
            self.report_recovered()
        for addr in targets:
            with self._lock:
                button = self._buttons[addr]
            self._set_status(button, "disconnected" if button.verified else "not verified")
            self._open_channel(sock, button)

    def _new_verified(self, sock: socket.socket, addr: str) -> None:
        """A button was paired: all-verified mode opens a channel to it."""
        with self._lock:
            button = self._buttons.get(addr)
            if button is None and self.configured:
                return
            if button is None and len(self._buttons) >= MAX_BUTTONS:
                self._counts["ignored_buttons"] += 1
            else:
                button = self._add_button(addr)
                button.verified = True
                has_channel = button.conn_id is not None
        if button is None:
            self._log_ignored(addr, 1)
            return
        self.log.info("flicd verified a new button %s", addr)
        if has_channel:
            if button.status == "not verified":
                self._set_status(button, "disconnected")
        else:
            self._set_status(button, "disconnected")
            self._open_channel(sock, button)

    def _log_ignored(self, addr: str, count: int) -> None:
        """Log buttons ignored for :data:`MAX_BUTTONS` (``addr`` the first of ``count``), rate-limited."""
        allowed, held = self._ignored_log.allow()
        if allowed:
            with self._lock:
                total = self._counts["ignored_buttons"]
            more = f" and {count - 1} more" if count > 1 else ""
            unlogged = f"; {held} such lines not logged" if held else ""
            self.log.warning("flicd announced button %s%s beyond the %d buttons pihub keeps: ignored "
                             "(%d ignored so far%s)", addr, more, MAX_BUTTONS, total, unlogged)

    def _open_channel(self, sock: socket.socket, button: _Button) -> None:
        with self._lock:
            conn_id, self._next_conn_id = self._next_conn_id, self._next_conn_id + 1
            button.conn_id = conn_id
            self._channels[conn_id] = button
        sock.sendall(command(CMD_CREATE_CHANNEL, _CREATE_CHANNEL.pack(
            conn_id, addr_to_wire(button.addr), self.latency_mode, _AUTO_DISCONNECT_NEVER)))

    def _channel(self, conn_id: int, what: str) -> _Button:
        with self._lock:
            button = self._channels.get(conn_id)
        if button is None:
            raise ProtocolError(f"{what} for connection channel {conn_id}, which pihub never opened")
        return button

    def _channel_event(self, op: int, fields: tuple[Any, ...]) -> None:
        """Channel created / status changed / removed."""
        name = EVENTS[op][0]
        button = self._channel(fields[0], name)
        if op == EVT_REMOVED:
            reason = fields[1]
            if reason >= len(_REMOVED_REASONS):
                raise ProtocolError(f"{name} with reason {reason}")
            with self._lock:
                self._channels.pop(fields[0], None)
                button.conn_id = None
                if reason >= _REMOVED_REASONS.index("DeletedByThisClient"):
                    button.verified = False
            self.log.warning("flicd removed the channel to button %s: %s", button.addr, _REMOVED_REASONS[reason])
            self._set_status(button, "disconnected" if button.verified else "not verified")
            return
        code, status = fields[1], fields[2]
        if op == EVT_CREATE_RESPONSE:
            if code >= len(_CREATE_ERRORS) or status > CONN_READY:
                raise ProtocolError(f"{name} with error {code}, status {status}")
            if code:
                with self._lock:
                    self._channels.pop(fields[0], None)
                    button.conn_id = None
                self.log.warning("flicd refused a channel to button %s: %s", button.addr, _CREATE_ERRORS[code])
        else:
            status, reason = code, status
            if status > CONN_READY or (status == CONN_DISCONNECTED and reason >= len(_DISCONNECT_REASONS)):
                raise ProtocolError(f"{name} with status {status}, reason {reason}")
            if status == CONN_DISCONNECTED:
                self.log.info("button %s disconnected: %s", button.addr, _DISCONNECT_REASONS[reason])
        if status == CONN_READY:
            button.verified = True
            self._set_status(button, "connected")
        else:
            self._set_status(button, "disconnected" if button.verified else "not verified")

    def _button_event(self, op: int, conn_id: int, click: int, was_queued: int, time_diff: int) -> None:
        """ButtonUp/Down feed the button's sequence; single/double/hold become events."""
        name = EVENTS[op][0]
        if click not in _CLICK_TYPES[op]:
            raise ProtocolError(f"{name} with click type {click}")
        button = self._channel(conn_id, name)
        if op == EVT_UP_DOWN:
            if was_queued:
                return  # their arrival times are not the press times
            if click == CLICK_DOWN:
                button.sequence.down()
            else:
                button.sequence.up()
        elif op == EVT_SINGLE_DOUBLE_HOLD:
            if was_queued and time_diff > self.max_queued_age:
                with self._lock:
                    self._counts["dropped_queued"] += 1
                self.log.info("dropped a click of button %s queued %d s ago", button.addr, time_diff)
                return
            with self._lock:
                self._counts["clicks"] += 1
                button.last_press = {"kind": _PRESS_KINDS[click], "was_queued": bool(was_queued),
                                     "time": time.time() - (time_diff if was_queued else 0)}
            self._publish(Event(_EVENT_TYPES[click], {"btn_addr": button.addr, "was_queued": bool(was_queued),
                                                      "time_diff": time_diff}, time.monotonic_ns(), self.name))
        # ops 5 and 6 say again what op 7 says

    # ------------------------------------------------------------------ state and events
    def _add_button(self, addr: str) -> _Button:
        """The button's record, created with its sequence if new (caller holds the lock in open)."""
        button = self._buttons.get(addr)
        if button is None:
            button = _Button(addr, PressSequence(self.clock, self.long_press_timeout, self.btn_timeout,
                                                 functools.partial(self._sequence_ended, addr)))
            self._buttons[addr] = button
        return button

    def _sequence_ended(self, addr: str, sequence: list[str]) -> None:
        with self._lock:
            self._counts["sequences"] += 1
        self._publish(Event(_SEQUENCE_EVENT, {"btn_addr": addr, "sequence": sequence}, time.monotonic_ns(),
                            self.name))

    def _set_status(self, button: _Button, status: ButtonStatus) -> None:
        """Change a button's status; a change emits ``FlicButtonConnectionEvent``."""
        with self._lock:
            if button.status == status:
                return
            button.status = status
        self.log.debug("button %s is %s", button.addr, status)
        self._publish(Event(_CONNECTION_EVENT, {"btn_addr": button.addr, "status": status}, time.monotonic_ns(),
                            self.name))

    def _lost(self, reason: str) -> None:
        """The flicd connection failed or ended: every button is disconnected; degraded."""
        with self._lock:
            was = self._flicd
            self._flicd = "unreachable"
            buttons = list(self._buttons.values())
            for b in buttons:
                b.conn_id = None
                b.sequence.interrupt()
            self._channels.clear()
            if was == "connected":
                self._counts["connection_losses"] += 1
        for b in buttons:
            self._set_status(b, "disconnected")
        error = (f"flicd at {self.server}:{self.port} unreachable: {reason}; reconnecting with back-off "
                 f"{self.reconnect_interval:g}..{self.max_reconnect_interval:g} s")
        self._reported_down = True
        if self.report_degraded(error):
            self.log.warning("%s", error)

    def _publish(self, event: Event) -> None:
        emit = self._emit
        if emit is None:
            return
        if not emit(event):
            with self._lock:
                self._counts["dropped_events"] += 1

    # ------------------------------------------------------------------ actions
    @action(aliases=["status"], blocking=False)
    def flicd_status(self) -> dict[str, Any]:
        """flicd's connection and each button's status (action ``flic.status``).

        Returns:
            ``server`` (host:port), ``flicd`` (connecting, connected, unreachable,
            stopped), ``error`` (why unreachable), ``buttons`` ({address: connected,
            disconnected or not verified}), ``in_progress`` ({address: the presses of a
            sequence not ended yet}), and the counters ``connects``, ``connect_failures``,
            ``connection_losses``, ``protocol_errors``, ``ignored_packets``, ``ignored_buttons``
            (announced beyond :data:`MAX_BUTTONS`), ``sequences``
            (ended), ``clicks``, ``dropped_queued``, ``dropped_events``.
        """
        with self._lock:
            buttons = dict(self._buttons)
            out: dict[str, Any] = {"server": f"{self.server}:{self.port}", "flicd": self._flicd,
                                   "error": self.error, "buttons": {a: b.status for a, b in buttons.items()},
                                   **self._counts}
        out["in_progress"] = {a: p for a, b in buttons.items() if (p := b.sequence.presses)}
        return out

    def describe_entities(self) -> list[dict[str, Any]]:
        """The buttons, for the web panel: ``{"name": address, "kind": "flic_button",
        "status", "last_press"}`` each, ``status`` as in :meth:`describe_status` and
        ``last_press`` the last click flicd classified, ``{"kind": click, double_click or
        hold, "time": seconds since the epoch (for a queued click, when it was made),
        "was_queued"}``, or null before the first."""
        with self._lock:
            return [{"name": a, "kind": "flic_button", "status": b.status,
                     "last_press": dict(b.last_press) if b.last_press is not None else None}
                    for a, b in self._buttons.items()]
