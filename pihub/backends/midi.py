"""MIDI: controllers' messages become events; notes and controls go out to synths.

Config (section ``midi``; Platypush's ``midi`` plugin and legacy ``backend.midi`` keys are
read, each old key with a warning naming the new one)::

    midi:
      api: auto                  # alsa (the Pi) | jack | auto (ALSA, then JACK)
      client_name: pihub         # the MIDI client name other programs see
      inputs: [nanoKONTROL2, "/^Launchpad/"]   # ports to listen to; null (default): every
                                 # input except pihub's own
      output: null               # where actions send without a device: a port (name,
                                 # /regex/ or index); null: the virtual output
      virtual_output: pihub MIDI out   # a virtual output port other programs connect to;
                                 # null: none
      throttle: 0.0              # s; per-control coalescing window for continuous messages
      poll_interval: 1.0         # s between port rescans (plug/unplug), and the first
                                 # retry while no MIDI system answers (doubling up to 30 s)
      max_sysex: 8192            # bytes (F0..F7); a longer sysex is dropped, counted (oversize)
      input_buffer: 16384        # messages per JACK input waiting while pihub is behind;
                                 # more are dropped, counted (dropped_input)

Old keys: ``midi_devices`` (Platypush's plugin) -> ``inputs``; ``event_resolution`` and
``midi_throttle_time`` (legacy backend) -> ``throttle``; ``device_name`` -> ``virtual_output``
(in Platypush's plugin it named pihub's own MIDI client, which is what the virtual output
is; the legacy ``backend.midi`` used it for the one input to monitor, which pihub does by
default, since ``inputs`` defaults to every port); ``port_number`` (legacy backend: the
index of the one input) is added to ``inputs``.

**Ports by name.** An ``inputs`` entry (or ``output``, or an action's ``device``) is
matched against the port names the MIDI system lists: a string equal to the full name
(JACK ``client:port``; ALSA ``client:port N:M``), to its client part, or to its port part
(without ALSA's ``N:M`` numbers, which change on every replug); ``/regex/`` searched in the
full name; an int, the port's index in the list. ``inputs: [nanoKONTROL2]`` thus finds
``nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0`` on a Pi, and ``[slider]`` finds the JACK port
``controller:slider`` even when JACK renamed the client ``controller-01``.

**Devices that come and go.** One thread (``pihub-midi``) rescans the ports every
``poll_interval``: a configured input that appears is opened (``MidiDeviceConnectedEvent
{device, port}``), one that vanishes is closed (``MidiDeviceDisconnectedEvent``) and
reopened when it is back, under whatever name matches then. While an explicitly listed
input has no port, the backend is ``degraded`` and its ``error`` names the missing entries
and the ports that exist; it is ``running`` again as soon as every entry has a port. With
``inputs: null`` nothing is missing, ever. When no MIDI system answers (``auto``: neither
ALSA nor a JACK server), the backend is degraded with both reasons and retries with
back-off. ``describe_status()`` (``GET /status``) adds ``api`` and ``inputs``: each
configured entry (or, with ``inputs: null``, each port listened to) -> ``connected`` or
``waiting``.

**A JACK server that stops or restarts.** libjack tells a client nothing when its server
dies: the port list it keeps answering is the dead server's, sends are accepted (until
rtmidi's 16 KiB output buffer is full; then a send blocks the whole process), and no
error callback fires. So on JACK the scanner checks the server's liveness itself: the
``pihub scan`` client sends itself an active-sensing byte through the server every
``poll_interval`` (a private connection, nothing else sees it). When
``LIVENESS_PINGS`` pings in a row went unanswered over at least ``LIVENESS_TIMEOUT``
seconds, the server is taken as gone: every port and client is closed
(``MidiDeviceDisconnectedEvent`` for each input; notes still sounding are forgotten, since
their connections went with the server), the backend is degraded with the reason, and it
reconnects with the back-off above; once the server answers again, the virtual output and
the inputs are opened again and it is ``running``. All the old clients are closed before
a new one is made: libjack frees a dead server's clients when the next client of the
process opens, and closing one afterwards would crash the process. Closing a dead
output takes rtmidi 1 s (it waits for its buffer to drain). Detection takes
``max(LIVENESS_TIMEOUT, LIVENESS_PINGS * poll_interval)``; a send of more than ~2000
messages within that window to the dead server would still block (see above).

**Events.** ``MidiMessageEvent`` carries Platypush's fields: ``message`` (the raw bytes as
ints: ``[176, 7, 64]``), ``device`` (the port name), ``port`` (its index in the port list
when it was opened) and ``delay`` (seconds since the previous message on that port, as
rtmidi measures it; 0 for the first). pihub adds the fields mido decodes: ``kind``
(``note_on``, ``note_off``, ``control_change``, ``pitchwheel``, ``program_change``,
``aftertouch``, ``polytouch``, ``sysex``, ...), and per kind ``channel`` (0-15), ``note``,
``velocity``, ``control``, ``value``, ``pitch``, ``program``, ``data`` (the sysex payload
without F0/F7, a list of ints as ``message`` is: what the panel shows is what a condition
matches), so
a hook can say ``if: {type: MidiMessageEvent, control: 7}`` as well as test
``message[0] == 0xb0``. A ``note_on`` with velocity 0 is kept as it came (many keyboards send
it for a release); match ``velocity: {$gt: 0}`` for presses only. Timing-clock and
active-sensing messages are ignored (rtmidi's default; 24 per beat would flood the bus),
sysex is delivered, up to ``max_sysex`` bytes: a longer one (a firmware or sample dump, or a
device gone wrong) is dropped on its length, never decoded, counted as ``oversize`` and
warned about at most once per ``_LOG_WINDOW`` s. The default takes the usual patch and bank
dumps (a DX7 32-voice bank is 4104 bytes).

**Throttle** (``throttle`` > 0) *coalesces*, per port, channel and control: a
``control_change`` (likewise ``pitchwheel`` and ``aftertouch`` per channel, ``polytouch``
per note) passes at once when its key has been quiet for ``throttle`` seconds; the ones
that follow within the window are held, each replacing the last, and the last one held is
emitted when the window ends (which starts a new window). A slider sweep thus gives at
most one event per window, the first value at once, and always ends with its final value;
two sliders moved together do not throttle each other. Notes and every other kind are
never throttled. (Platypush drops messages and only ever flushes its first window.)

**Outputs.** ``virtual_output`` is a port pihub creates: synths and DAWs connect to it
(``jack_connect``, ``aconnect``, a DAW's MIDI input list). ``output`` names an existing
port to send to instead. Actions take ``device`` (a port name, /regex/ or index) to send
elsewhere; an unknown one is an error listing the output ports that exist.

Actions: ``midi.send_message(values, device)``, ``midi.play_note(note, velocity, duration,
channel, device)`` (alias ``play``; the note-off is a ``clock.call_later`` timer, so the
action returns at once), ``midi.release_note`` (``release``), ``midi.release_all_notes``
(``release_all``), ``midi.control_change(control, value, channel, device)``,
``midi.list_ports()`` (aliases ``query_ports``, ``query``). Closing the backend sends the
note-off of every note still sounding.

Reading: on ALSA, rtmidi's own input thread calls pihub per message. On JACK, a thread
(``pihub-midi-in``) takes what rtmidi queued, then sleeps ``JACK_POLL`` (1 ms) when every
input was idle, which adds up to 1 ms of latency: Python must not run on JACK's process
thread (see :meth:`MidiBackend._read_jack`). rtmidi's queue (``INPUT_QUEUE`` messages)
drops what overflows it with a line on stderr and no way for pihub to count it (its error
callback is not called for it), so the reader empties it into a per-input backlog between
every ``_JACK_BATCH`` messages it decodes: a burst faster than pihub decodes (~100,000
messages/s on x86) waits there, and what exceeds ``input_buffer`` messages (or
``BACKLOG_BYTES``) is dropped, counted as ``dropped_input`` and warned about, rate-limited.

python-rtmidi owns the ports (the only binding with JACK and ALSA compiled into its
wheels, virtual ports, per-message delta times and a callback thread per port); mido
decodes and checks the bytes (its message kinds are the names hooks match).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit, emit_counted
from pihub.clock import Clock, Timer
from pihub.config.schema import Field, Schema, show
from pihub.errors import ActionError, BackendUnavailable, ConfigProblem, ConfigProblems
from pihub.events import CATALOGUE, Event
from pihub.logs import LogLimiter
from pihub.plugin import action

__all__ = ["APIS", "THROTTLED_KINDS", "MidiBackend", "PortPattern", "Throttle", "decode"]

_MESSAGE: Final = CATALOGUE.get("MidiMessageEvent")
_CONNECTED: Final = CATALOGUE.get("MidiDeviceConnectedEvent")
_DISCONNECTED: Final = CATALOGUE.get("MidiDeviceDisconnectedEvent")

#: config ``api`` -> the rtmidi API names tried, in order
APIS: Final[Mapping[str, tuple[str, ...]]] = {"alsa": ("alsa",), "jack": ("jack",), "auto": ("alsa", "jack")}
_RTMIDI_API: Final = {"alsa": "API_LINUX_ALSA", "jack": "API_UNIX_JACK"}

#: the kinds the throttle coalesces: continuous controls (a slider, a wheel, pressure)
THROTTLED_KINDS: Final = frozenset({"control_change", "pitchwheel", "aftertouch", "polytouch"})

_MAX_API_RETRY: Final = 30.0  # s; the back-off ceiling while no MIDI system answers
#: unanswered liveness pings in a row, over at least LIVENESS_TIMEOUT s, that mean the
#: JACK server is gone (both, so neither a fast poll nor one slow cycle is mistaken for it)
LIVENESS_PINGS: Final = 3
LIVENESS_TIMEOUT: Final = 2.0  # s
_PING: Final = (0xFE,)  # active sensing: one byte, meaningless to anyone listening
_LIVENESS_PORT: Final = "pihub liveness"  # its ports' names start with this
#: s between polls of the JACK inputs when they are idle (see MidiBackend._read_jack)
JACK_POLL: Final = 0.001
#: messages decoded from one input per pass, so one busy port starves none; the reader
#: empties rtmidi's queues between passes
_JACK_BATCH: Final = 64
#: messages rtmidi holds per input (its ``queue_size_limit``) until the JACK reader moves
#: them to the input's backlog: enough for the reader's longest pause (the GIL's 5 ms switch
#: interval at a few hundred thousand messages/s). What overflows it rtmidi drops and
#: reports only on stderr; pihub cannot count it, so the reader empties it every pass.
INPUT_QUEUE: Final = 4096
#: MIDI bytes an input's backlog holds at most (besides ``input_buffer`` messages), so
#: sysex waiting there stays bounded (8 MiB of Python int lists when full). Short messages
#: cost ~130 bytes each whatever their MIDI size: ``input_buffer`` bounds those (2 MiB at
#: its default, 8.5 MiB at its largest)
BACKLOG_BYTES: Final = 1 << 20
_LOG_BURST: Final = 1  # dropped-input and oversize warnings logged per window...
_LOG_WINDOW: Final = 10.0  # ...of this many seconds of the clock; the rest are counted
_ALSA_NUMBERS: Final = re.compile(r" \d+:\d+$")


def decode(raw: Sequence[int]) -> dict[str, Any]:
    """The fields of a MIDI message as mido decodes it: ``kind`` and its own fields.

    Args:
        raw: the message bytes (``[0xB0, 7, 64]``).
    Returns:
        ``{"kind": "control_change", "channel": 0, "control": 7, "value": 64}``; sysex
        ``data`` as a list.
    Raises:
        ValueError: not one complete, valid MIDI message (mido's reason).
    """
    import mido

    fields = mido.Message.from_bytes(raw).dict()
    fields.pop("time", None)
    out: dict[str, Any] = {"kind": fields.pop("type")}
    for k, v in fields.items():
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _sysex(raw: Sequence[int]) -> dict[str, Any]:
    """A sysex's fields, checked as mido checks them, without mido: mido builds and checks
    its data byte by byte in Python (~2.8 ms for 8 KiB on x86; this takes 0.05 ms).

    Returns:
        ``{"kind": "sysex", "data": [payload bytes]}`` (``F0``/``F7`` stripped).
    Raises:
        ValueError: no ``F7`` at the end, or a data byte above 127.
    """
    whole = bytes(raw)
    data = whole[1:-1]
    if len(whole) < 2 or whole[-1] != 0xF7 or not data.isascii():
        raise ValueError("a sysex is F0, data bytes 0-127, F7")
    return {"kind": "sysex", "data": list(data)}


@dataclass(frozen=True, slots=True)
class PortPattern:
    """One way of naming a port (see the module docstring): a name, ``/regex/`` or an index.

    Attributes:
        spelling: as written in the config or the action (for messages).
        name: the plain name, or None.
        regex: the compiled ``/regex/``, or None.
        index: the port index, or None.
    """

    spelling: str
    name: str | None = None
    regex: re.Pattern[str] | None = None
    index: int | None = None

    @classmethod
    def parse(cls, value: object) -> PortPattern:
        """A pattern from a config or action value.

        Raises:
            ValueError: not a non-empty string, a valid ``/regex/`` or an index >= 0
                (message without a subject: ``must be ...``).
        """
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"must be a port name, a /regex/ or a port index, not {show(value)}")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"must be a port index of 0 or more, not {value}")
            return cls(str(value), index=value)
        if not value.strip():
            raise ValueError("must be a port name, a /regex/ or a port index, not an empty string")
        if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
            try:
                return cls(value, regex=re.compile(value[1:-1]))
            except re.error as e:
                raise ValueError(f"{value!r} is not a valid regular expression: {e}") from None
        return cls(repr(value), name=value)

    @property
    def key(self) -> str:
        """The pattern as the config writes it (``slider``, ``/^nano/``, ``3``)."""
        return self.name if self.name is not None else self.spelling

    def matches(self, index: int, port: str) -> bool:
        """True when the port ``index`` named ``port`` is the one this pattern names."""
        if self.index is not None:
            return index == self.index
        if self.regex is not None:
            return self.regex.search(port) is not None
        if port == self.name:
            return True
        client, _, rest = port.partition(":")
        return self.name in (client, _ALSA_NUMBERS.sub("", rest))

    def find(self, ports: Sequence[str]) -> tuple[int, str] | None:
        """The first ``(index, name)`` of ``ports`` this pattern names, or None."""
        for i, p in enumerate(ports):
            if self.matches(i, p):
                return i, p
        return None


class Throttle:
    """Per-key coalescing with a trailing edge (see the module docstring).

    ``offer(key, item)`` says whether to deliver ``item`` now; a held item is delivered
    later by ``deliver(item)`` on ``clock``'s timer thread. Thread-safe.

    Args:
        window: seconds (> 0).
        clock: the time of the windows.
        deliver: called with each held item when its window ends.
    """

    def __init__(self, window: float, clock: Clock, deliver: Callable[[Any], None]) -> None:
        self.window = window
        self._clock = clock
        self._deliver = deliver
        self._lock = threading.Lock()
        self._timers: dict[Hashable, Timer] = {}  # keys whose window is open
        self._held: dict[Hashable, Any] = {}
        #: items replaced by a later one within their window
        self.coalesced = 0

    def offer(self, key: Hashable, item: Any) -> bool:
        """True: deliver ``item`` now (its key was quiet; a window opens). False: it is
        held until the window ends, replacing any item held for ``key``."""
        with self._lock:
            if key in self._timers:
                if key in self._held:
                    self.coalesced += 1
                self._held[key] = item
                return False
            self._timers[key] = self._clock.call_later(self.window, self._end, key)
            return True

    def _end(self, key: Hashable) -> None:
        """A window ended: deliver what was held (opening a new window), or close it."""
        with self._lock:
            if key not in self._timers:
                return  # cancelled
            if key not in self._held:
                del self._timers[key]
                return
            item = self._held.pop(key)
            self._timers[key] = self._clock.call_later(self.window, self._end, key)
        self._deliver(item)

    def cancel(self) -> None:
        """Forget every held item and window (nothing is delivered after this)."""
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self._held.clear()


@dataclass(slots=True)
class _Input:
    """An open input port."""

    name: str
    index: int
    midi_in: Any  # rtmidi.MidiIn
    #: JACK: ``(message, delay)`` taken from rtmidi's queue, not yet decoded (reader thread)
    backlog: deque[tuple[list[int], float]] = field(default_factory=deque)
    held: int = 0  # MIDI bytes in backlog


def _close_only(obj: Any) -> None:
    """Close an rtmidi object's port (and its connections), keeping its client (never raises)."""
    try:
        obj.close_port()
    except Exception:  # a port of a vanished device or server: nothing left to close
        pass


def _close_port(obj: Any) -> None:
    """Close an rtmidi port object and free its client (never raises)."""
    try:
        obj.close_port()
        obj.delete()
    except Exception:  # a port of a vanished device or server: nothing left to free
        pass


_SCHEMA_FIELDS: dict[str, Field] = {
    "api": Field(str, "auto", choices=tuple(APIS),
                 doc="MIDI system: alsa (the Pi), jack (a JACK server), auto (ALSA, then JACK)"),
    "client_name": Field(str, "pihub", doc="the MIDI client name other programs see"),
    "inputs": Field((list, None), None, aliases=("midi_devices",),
                    doc="input ports to listen to (names, /regex/ or indices); null: every input but pihub's own"),
    "port_number": Field(int, None, min=0, deprecated="the legacy backend's one input: use inputs: [N]"),
    "output": Field((str, int, None), None,
                    doc="port actions send to without a device (name, /regex/ or index); null: the virtual output"),
    "virtual_output": Field((str, None), "pihub MIDI out", aliases=("device_name",),
                            doc="name of the virtual output port pihub creates for other programs; null: none"),
    "throttle": Field(float, 0.0, min=0.0, max=60.0, aliases=("event_resolution", "midi_throttle_time"),
                      doc="seconds; per-control coalescing window for continuous messages (0: off)"),
    "poll_interval": Field(float, 1.0, min=0.01, max=3600.0, aliases=("poll_seconds",),
                           doc="seconds between port rescans (devices plugged and unplugged)"),
    "max_sysex": Field(int, 8192, min=2, max=1 << 20,
                       doc="bytes (F0 and F7 included); a longer sysex is dropped and counted (oversize)"),
    "input_buffer": Field(int, 16384, min=64, max=1 << 16,
                          doc="messages per JACK input held while pihub is behind; more are dropped "
                              "and counted (dropped_input)"),
}


class MidiBackend(Backend):
    """MIDI inputs -> ``MidiMessageEvent``; a virtual output and send actions.

    See the module docstring for the config, the events, the throttle and the actions.

    Args:
        config: the ``midi`` section (validated again here, so a raw mapping works).
        clock: the time of the throttle windows, note-off timers and rescans.

    Raises:
        ConfigProblems: the section is invalid (a ``ValueError``), every problem listed.
    """

    name: ClassVar[str] = "midi"
    config_schema: ClassVar[Schema] = Schema(
        _SCHEMA_FIELDS, doc="MIDI controllers in, notes and controls out (ALSA or JACK, via python-rtmidi).")

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config, clock=clock)
        values = self.config
        errors: list[ConfigProblem] = []
        inputs: list[PortPattern] | None = None
        if values["inputs"] is not None or values["port_number"] is not None:
            inputs = []
            for i, item in enumerate(values["inputs"] or []):
                try:
                    inputs.append(PortPattern.parse(item))
                except ValueError as e:
                    errors.append(ConfigProblem(("inputs", i), str(e)))
            if values["port_number"] is not None:
                inputs.append(PortPattern.parse(values["port_number"]))
        output: PortPattern | None = None
        if values["output"] is not None:
            try:
                output = PortPattern.parse(values["output"])
            except ValueError as e:
                errors.append(ConfigProblem(("output",), str(e)))
        for key in ("client_name", "virtual_output"):
            if values[key] is not None and not values[key].strip():
                errors.append(ConfigProblem((key,), "must not be an empty string"
                                            + (" (null: no virtual output)" if key == "virtual_output" else "")))
        if errors:
            raise ConfigProblems(errors)
        self.api: str = values["api"]
        self.client_name: str = values["client_name"]
        #: the input patterns, or None for every input
        self.inputs = inputs
        self.output = output
        self.virtual_output: str | None = values["virtual_output"]
        self.throttle: float = values["throttle"]
        self.poll_interval: float = values["poll_interval"]
        self.max_sysex: int = values["max_sysex"]
        self.input_buffer: int = values["input_buffer"]
        # JACK makes a taken client name unique with "-01"; ALSA may number nothing
        self._own_client = re.compile(re.escape(self.client_name) + r"(?: in| out| scan)?(?:-\d+)?")
        self._rtmidi: Any = None
        self._api_used: str | None = None
        self._api_const: int | None = None
        # _io_lock guards the rtmidi objects (opened and closed by the scanner, used by the
        # actions and the note-off timers); the message callbacks never take it.
        self._io_lock = threading.RLock()
        self._probe_in: Any = None
        self._probe_out: Any = None
        self._vout: Any = None
        self._outs: dict[str, Any] = {}  # output port name -> open rtmidi.MidiOut
        self._open: dict[str, _Input] = {}  # changed under _in_lock (the JACK reader walks it)
        self._in_lock = threading.Lock()
        self._reader: BackendThread | None = None
        self._missing: list[str] = []
        self._reported: str | None = None  # the scanner's last reported problem
        self._opened = False  # describe_status adds the MIDI details once open
        # JACK liveness (see the module docstring): used by the scanner thread only
        self._pinging = False  # the probes' private ping connection is up
        self._unanswered = 0  # pings sent since the last answer
        self._answered_at = 0.0  # clock time of the last answer (or of the connection)
        self._lost: str | None = None  # why the server was given up, until it is back
        self._notes: dict[tuple[str, int, int], Timer | None] = {}  # (port, channel, note) -> note-off timer
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None
        self._throttle = Throttle(self.throttle, self.clock, self._publish) if self.throttle > 0 else None
        self._counts = {"messages": 0, "events": 0, "dropped_events": 0, "malformed": 0,
                        "dropped_input": 0, "oversize": 0, "sent": 0, "connects": 0, "disconnects": 0}
        # the reader and (ALSA) rtmidi's callback threads warn through these, under _log_lock
        self._log_lock = threading.Lock()
        self._dropped_log = LogLimiter(_LOG_BURST, _LOG_WINDOW, self.clock.now)
        self._oversize_log = LogLimiter(_LOG_BURST, _LOG_WINDOW, self.clock.now)

    # ------------------------------------------------------------------ lifecycle
    def validate_environment(self) -> None:
        """Check that mido and python-rtmidi are installed, with the configured API compiled in.

        A missing device or MIDI server is *not* an error here: the scanner waits for it.

        Raises:
            BackendUnavailable: a library is missing, or rtmidi lacks the API.
        """
        try:
            import mido  # noqa: F401
            import rtmidi
        except ImportError as e:
            raise BackendUnavailable(f"{e.name} is not installed (pip install 'pihub[midi]')") from None
        compiled = {rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()}
        if not compiled & set(APIS[self.api]):
            raise BackendUnavailable(
                f"midi api {self.api!r} is not compiled into this python-rtmidi (it has: "
                f"{', '.join(sorted(compiled)) or 'none'}); install the PyPI wheel (pip install python-rtmidi)")

    def open(self, emit: Emit) -> None:
        """Start the scanner thread ``pihub-midi``; it finds the MIDI system and the ports."""
        if self._thread is not None:
            return
        self._emit = emit
        self._reported = self._lost = None
        self._opened = True
        self.status, self.error = BackendStatus.RUNNING, None
        self._thread = BackendThread(f"pihub-{self.name}", self._run)
        self._thread.start()

    def close(self) -> None:
        """Stop the scanner, send pending note-offs, close every port; idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop(timeout=10.0)
        self._emit = None
        if self._throttle is not None:
            self._throttle.cancel()
        with self._io_lock:
            self._release_all()
        self._drop_ports()
        self.status = BackendStatus.STOPPED

    def _drop_ports(self) -> list[_Input]:
        """Stop the JACK reader, close every port and client, forget the MIDI system.

        Returns:
            the inputs that were open.
        """
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stop(timeout=10.0)
        with self._io_lock:
            with self._in_lock:
                inputs = list(self._open.values())
                self._open.clear()
                for inp in inputs:
                    self._forget(inp)
            # the liveness pair first, sender before receiver, every port closed (its
            # connection gone) before any client is freed: a client freed while a
            # connection to another of ours was still up once left jackd not answering
            # the next ClientDeactivate (the close hung in jack_client_close)
            objs = [o for o in (self._probe_out, self._probe_in, *(i.midi_in for i in inputs),
                                *self._outs.values(), self._vout) if o is not None]
            for obj in objs:
                _close_only(obj)
            for obj in objs:
                _close_port(obj)
            self._outs.clear()
            self._vout = self._probe_in = self._probe_out = None
            self._api_used = self._api_const = None
            self._pinging = False
        return inputs

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus once open ``api`` (alsa, jack, or null while no MIDI system
        answers), ``inputs``: each configured entry as written (with ``inputs: null``,
        each port listened to) -> ``connected`` or ``waiting``, and the counters
        ``dropped_input`` and ``oversize`` (see :meth:`list_ports`)."""
        out = super().describe_status()
        if not self._opened:
            return out
        with self._in_lock:
            listening = [(i.index, i.name) for i in self._open.values()]
        out["api"] = self._api_used
        out["dropped_input"], out["oversize"] = self._counts["dropped_input"], self._counts["oversize"]
        if self.inputs is None:
            out["inputs"] = {name: "connected" for _, name in sorted(listening, key=lambda x: x[1])}
        else:
            out["inputs"] = {p.key: "connected" if any(p.matches(i, n) for i, n in listening) else "waiting"
                             for p in self.inputs}
        return out

    # ------------------------------------------------------------------ scanner thread
    def _run(self, stopping: threading.Event) -> None:
        """Find a MIDI system (with back-off), then rescan the ports every ``poll_interval``."""
        retry = self.poll_interval
        while not stopping.is_set():
            try:
                if self._api_const is None:
                    if self._start_api():
                        retry = self.poll_interval
                    else:
                        if self.clock.wait(stopping, retry):
                            return
                        retry = min(retry * 2, max(_MAX_API_RETRY, self.poll_interval))
                        continue
                if self._server_answers():
                    self._scan()
                else:
                    self._server_lost()
            except Exception as e:  # a bug must not end the scanner silently
                self.log.exception("midi scanner failed")
                self._problem(f"midi scanner failed: {type(e).__name__}: {e}; "
                              f"retrying every {self.poll_interval:g} s")
            if self.clock.wait(stopping, self.poll_interval):
                return

    def _start_api(self) -> bool:
        """Open the probes on the first API that answers and create the virtual output."""
        import rtmidi

        reasons = []
        for api in APIS[self.api]:
            const = getattr(rtmidi, _RTMIDI_API[api])
            try:
                probe_in = rtmidi.MidiIn(const, name=f"{self.client_name} scan")
            except (rtmidi.SystemError, rtmidi.RtMidiError, RuntimeError) as e:
                hint = " (is jackd running? JACK_DEFAULT_SERVER names it)" if api == "jack" else \
                       " (no /dev/snd/seq: is snd-seq loaded?)"
                reasons.append(f"{api}: {e}{hint}")
                continue
            try:
                with self._io_lock:
                    self._rtmidi, self._api_used, self._api_const = rtmidi, api, const
                    self._probe_in = probe_in
                    self._probe_out = rtmidi.MidiOut(const, name=f"{self.client_name} scan")
                    if self.virtual_output is not None:
                        vout = rtmidi.MidiOut(const, name=self.client_name)
                        vout.open_virtual_port(self.virtual_output)
                        self._vout = vout
                    if api == "jack":
                        self._connect_ping()
            except Exception:
                self._drop_ports()  # half a setup: the next pass starts again from nothing
                raise
            if api == "jack":
                self._reader = BackendThread(f"pihub-{self.name}-in", self._read_jack)
                self._reader.start()
            self.log.info("midi on %s%s", api, f", virtual output {self.virtual_output!r}"
                          if self.virtual_output else "")
            if self._lost is not None:
                self.log.warning("the JACK server answers again: reopening the ports")
                self._lost = None
            return True
        lost = f"{self._lost}; " if self._lost else ""
        self._problem(f"{lost}no MIDI system answers ({'; '.join(reasons)}); retrying")
        return False

    def _connect_ping(self) -> None:
        """Connect the probes to each other through the JACK server, for the liveness pings
        (caller holds ``_io_lock``): ``pihub scan``'s input port and ``pihub scan-01``'s
        output port, both named ``pihub liveness <random>``.

        Raises:
            RuntimeError: the server did not list the new input port.
        """
        name = f"{_LIVENESS_PORT} {secrets.token_hex(3)}"
        self._probe_in.ignore_types(sysex=True, timing=True, active_sense=False)
        self._probe_in.open_virtual_port(name)
        ports = list(self._probe_out.get_ports())
        found = [i for i, p in enumerate(ports) if p.partition(":")[2] == name]
        if not found:
            raise RuntimeError(f"the JACK server does not list pihub's liveness port {name!r}")
        self._probe_out.open_port(found[0], name)
        self._pinging, self._unanswered, self._answered_at = True, 0, self.clock.now()

    def _server_answers(self) -> bool:
        """The JACK liveness check, once per scan (always True on ALSA): take the pings that
        came back, then send the next one.

        Returns:
            False when ``LIVENESS_PINGS`` pings in a row, over ``LIVENESS_TIMEOUT`` s or more,
            got no answer: the server is gone (or hung).
        """
        if not self._pinging:
            return True
        now = self.clock.now()
        with self._io_lock:
            answered = False
            for _ in range(_JACK_BATCH):  # bounded: a port connected to it from outside cannot hold the scanner
                got = self._probe_in.get_message()
                if got is None:
                    break
                answered = answered or tuple(got[0]) == _PING
            if answered:
                self._unanswered, self._answered_at = 0, now
            elif self._unanswered >= LIVENESS_PINGS and now - self._answered_at >= LIVENESS_TIMEOUT:
                return False
            self._probe_out.send_message(_PING)
            self._unanswered += 1
        return True

    def _server_lost(self) -> None:
        """The JACK server is gone: close everything, report, and let the scanner reconnect."""
        silent = self.clock.now() - self._answered_at
        self._lost = (f"the JACK server stopped answering ({self._unanswered} liveness pings unanswered "
                      f"for {silent:.1f} s)")
        # said first: closing the dead outputs takes rtmidi a second each
        self._problem(f"{self._lost}; its ports are closed, reconnecting every {self.poll_interval:g} s, "
                      f"backing off to {max(_MAX_API_RETRY, self.poll_interval):g} s")
        with self._io_lock:
            for timer in self._notes.values():
                if timer is not None:
                    timer.cancel()
            self._notes.clear()  # their connections went with the server
        inputs = self._drop_ports()
        self._missing = [p.spelling for p in self.inputs or ()]
        for inp in inputs:
            self._counts["disconnects"] += 1
            self._publish(Event(_DISCONNECTED, {"device": inp.name, "port": inp.index}, time.monotonic_ns(),
                                self.name))

    def _own(self, port: str) -> bool:
        """True for a port of one of pihub's own clients (the virtual output, the ports it
        opened to listen or send), which it never listens or sends to: that would loop; and
        for any pihub's liveness ports (another pihub's too: they carry only its pings)."""
        client, _, name = port.partition(":")
        return self._own_client.fullmatch(client) is not None or name.startswith(_LIVENESS_PORT)

    def _scan(self) -> None:
        """List the input ports; open the wanted new ones, close the vanished ones, report."""
        ports = list(self._probe_in.get_ports())
        present = set(ports)
        for name in [n for n in self._open if n not in present]:
            with self._in_lock:
                inp = self._open.pop(name)
                _close_port(inp.midi_in)
                self._forget(inp)
            self._counts["disconnects"] += 1
            self.log.warning("midi input %r went away", name)
            self._publish(Event(_DISCONNECTED, {"device": name, "port": inp.index}, time.monotonic_ns(), self.name))
        for index, name in enumerate(ports):
            if name in self._open or self._own(name) or not self._wanted(index, name):
                continue
            self._open_input(index, name)
        with self._io_lock:
            outs = set(self._probe_out.get_ports())
            for name in [n for n in self._outs if n not in outs]:
                _close_port(self._outs.pop(name))
        theirs = [(i, n) for i, n in enumerate(ports) if not self._own(n)]
        missing = [] if self.inputs is None else [
            p.spelling for p in self.inputs if not any(p.matches(i, n) for i, n in theirs)]
        self._missing = missing
        if missing:
            listed = ", ".join(repr(n) for _, n in theirs) or "none"
            self._problem(f"midi input {', '.join(missing)} not found (input ports: {listed}); "
                          f"waiting for it, rescanning every {self.poll_interval:g} s")
        else:
            self._problem(None)

    def _problem(self, reason: str | None) -> None:
        """Report the scanner's finding when it changed: degraded with ``reason``, or
        recovered (None). Only the scanner thread calls this."""
        if reason == self._reported:
            return
        self._reported = reason
        if reason is None:
            self.report_recovered()
        else:
            self.log.warning("%s", reason)
            self.report_degraded(reason)

    def _wanted(self, index: int, name: str) -> bool:
        return self.inputs is None or any(p.matches(index, name) for p in self.inputs)

    def _open_input(self, index: int, name: str) -> None:
        """Open input ``name`` with its message callback; a failure is retried next scan."""
        rtm = self._rtmidi
        midi_in = rtm.MidiIn(self._api_const, name=f"{self.client_name} in", queue_size_limit=INPUT_QUEUE)
        try:
            midi_in.ignore_types(sysex=False, timing=True, active_sense=True)
            if self._api_used != "jack":
                midi_in.set_callback(self._callback(name, index))
            midi_in.open_port(index, name="in")
        except Exception as e:
            _close_port(midi_in)
            self.log.warning("midi input %r would not open: %s", name, e)
            return
        with self._in_lock:
            self._open[name] = _Input(name, index, midi_in)
        self._counts["connects"] += 1
        self.log.info("listening to midi input %r", name)
        self._publish(Event(_CONNECTED, {"device": name, "port": index}, time.monotonic_ns(), self.name))

    def _read_jack(self, stopping: threading.Event) -> None:
        """The JACK inputs' reader (thread ``pihub-midi-in``): move what rtmidi queued to
        each input's backlog, decode up to ``_JACK_BATCH`` messages of each, again; wait
        ``JACK_POLL`` when every input was idle.

        On JACK, rtmidi calls a callback on JACK's process thread, which runs every
        client's cycle: Python there waits for the GIL, stalling all of JACK for as long as
        another thread holds it, and a thread of this process blocked in a send (rtmidi
        waits for JACK to drain a full buffer) never lets go of it: a deadlock. So pihub
        leaves the messages in rtmidi's queue (filled without Python) and reads them here.
        Taking a message is ~10 times cheaper than decoding it, so a burst waits in the
        backlog (bounded and counted, see :meth:`_take`) rather than in rtmidi's queue,
        whose overflow nobody can count.
        """
        while not stopping.is_set():
            busy = False
            with self._in_lock:
                inputs = list(self._open.values())
                for inp in inputs:
                    self._take(inp)
                for inp in inputs:
                    backlog = inp.backlog
                    for _ in range(min(_JACK_BATCH, len(backlog))):
                        raw, delay = backlog.popleft()
                        inp.held -= len(raw)
                        busy = True
                        self.message(raw, inp.name, inp.index, delay)
            if not busy and self.clock.wait(stopping, JACK_POLL):
                return

    def _take(self, inp: _Input) -> None:
        """Move what rtmidi queued for ``inp`` to its backlog (the reader thread, holding
        ``_in_lock``). An oversize sysex is dropped here already; a message beyond
        ``input_buffer`` messages or ``BACKLOG_BYTES`` is dropped and counted as
        ``dropped_input``, with a warning at most once per ``_LOG_WINDOW`` s."""
        get, backlog = inp.midi_in.get_message, inp.backlog
        dropped = 0
        for _ in range(INPUT_QUEUE):  # bounded: a sender faster than this loop cannot hold it
            got = get()
            if got is None:
                break
            raw = got[0]
            if self._oversize(raw, inp.name):
                continue
            if len(backlog) >= self.input_buffer or inp.held + len(raw) > BACKLOG_BYTES:
                dropped += 1
                continue
            backlog.append(got)
            inp.held += len(raw)
        if dropped:
            self._counts["dropped_input"] += dropped
            self._warn(self._dropped_log, "midi input %r: pihub is %d messages behind, %d dropped "
                       "(input_buffer: %d)", inp.name, len(backlog), dropped, self.input_buffer)

    def _forget(self, inp: _Input) -> None:
        """Count what ``inp``'s backlog still held when it closed as ``dropped_input``."""
        self._counts["dropped_input"] += len(inp.backlog)
        inp.backlog.clear()
        inp.held = 0

    def _warn(self, limiter: LogLimiter, fmt: str, *args: Any) -> None:
        """Log a warning unless ``limiter`` holds it back (it then counts it)."""
        with self._log_lock:
            allowed, held = limiter.allow()
        if allowed:
            self.log.warning(fmt + (f" ({held} more such warnings not logged)" if held else ""), *args)

    def _oversize(self, raw: Sequence[int], device: str) -> bool:
        """True (counted as ``oversize``, warned rate-limited) for a sysex longer than
        ``max_sysex`` bytes, judged on its length alone: it is never decoded."""
        if len(raw) <= self.max_sysex or raw[0] != 0xF0:
            return False
        self._counts["oversize"] += 1
        self._warn(self._oversize_log, "sysex of %d bytes from midi input %r dropped (max_sysex: %d bytes)",
                   len(raw), device, self.max_sysex)
        return True

    def _callback(self, name: str, index: int) -> Callable[[tuple[list[int], float], Any], None]:
        """The rtmidi callback of one ALSA input (on rtmidi's own thread: short, never blocks)."""

        def on_message(event: tuple[list[int], float], _data: Any) -> None:
            self.message(event[0], name, index, event[1])

        return on_message

    def message(self, raw: Sequence[int], device: str, port: int, delay: float, ts_ns: int = 0) -> None:
        """Turn one received message into a ``MidiMessageEvent`` (throttled as configured).

        Called by the input callbacks; tests call it directly.

        Args:
            raw: the message bytes.
            device: the input port name.
            port: its index.
            delay: seconds since the previous message on that port.
            ts_ns: ``time.monotonic_ns()`` of its arrival (0: now).
        """
        self._counts["messages"] += 1
        if self._oversize(raw, device):
            return
        ts = ts_ns or time.monotonic_ns()
        args: dict[str, Any] = {"message": list(raw), "device": device, "port": port, "delay": delay}
        try:
            fields = _sysex(raw) if raw and raw[0] == 0xF0 else decode(raw)
        except (ValueError, TypeError) as e:
            self._counts["malformed"] += 1
            self.log.debug("malformed midi message %r from %r: %s", list(raw), device, e)
            fields = {"kind": "unknown"}
        args.update(fields)
        event = Event(_MESSAGE, args, ts, self.name)
        throttle = self._throttle
        if throttle is not None and fields["kind"] in THROTTLED_KINDS:
            key = (device, raw[0], raw[1] if fields["kind"] in ("control_change", "polytouch") else None)
            if not throttle.offer(key, event):
                return
        self._publish(event)

    def _publish(self, event: Event) -> None:
        emit_counted(self._emit, event, self._counts)

    # ------------------------------------------------------------------ outputs
    def _port_out(self, device: str | int | None) -> tuple[str, Any]:
        """``(port name, rtmidi.MidiOut)`` for ``device`` (None: ``output``, else the virtual port).

        Raises:
            ActionError: no MIDI system yet, no output configured, or no such port (the
                message lists the output ports that exist).
        """
        if self._api_const is None:
            raise ActionError(f"midi is not ready: {self.error or 'no MIDI system yet'}")
        if device is None and self.output is None:
            if self._vout is None:
                raise ActionError("midi has no output: pass device, or set 'output' or 'virtual_output'")
            return self.virtual_output or "", self._vout
        if device is None:
            pattern = self.output
        else:
            try:
                pattern = PortPattern.parse(device)
            except ValueError as e:
                raise ActionError(f"device {e}") from None
        assert pattern is not None
        if self._vout is not None and self.virtual_output is not None and pattern.name == self.virtual_output:
            return self.virtual_output, self._vout
        ports = list(self._probe_out.get_ports())
        found = pattern.find(ports)
        if found is None or self._own(found[1]):
            listed = [p for p in ports if not self._own(p)]
            if self._vout is not None:
                listed.append(self.virtual_output)
            raise ActionError(f"midi output {pattern.spelling} not found; output ports: "
                              f"{', '.join(repr(p) for p in listed) or 'none'}")
        index, name = found
        out = self._outs.get(name)
        if out is None:
            out = self._rtmidi.MidiOut(self._api_const, name=f"{self.client_name} out")
            try:
                out.open_port(index, name="out")
            except Exception as e:
                _close_port(out)
                raise ActionError(f"midi output {name!r} would not open: {e}") from None
            self._outs[name] = out
        return name, out

    def _send(self, values: Sequence[int], device: str | int | None) -> str:
        """Check ``values`` is one MIDI message and send it; returns the port name.

        Raises:
            ActionError: not a valid message, or see :meth:`_port_out`.
        """
        try:
            decode(values)
        except (ValueError, TypeError) as e:
            raise ActionError(f"values {list(values)!r} are not one MIDI message: {e}") from None
        with self._io_lock:
            name, out = self._port_out(device)
            out.send_message(list(values))
        self._counts["sent"] += 1
        return name

    def _note_off(self, port: str, channel: int, note: int, device: str | int | None) -> None:
        """A note-off timer: send it if the note is still sounding (never raises)."""
        with self._io_lock:
            if (port, channel, note) not in self._notes:
                return  # released meanwhile
            del self._notes[(port, channel, note)]
            try:
                self._send([0x80 | channel, note, 0], device)
            except ActionError as e:
                self.log.warning("note-off %d on %r not sent: %s", note, port, e)

    def _release_all(self) -> list[dict[str, int | str]]:
        """Send a note-off for every sounding note (caller holds ``_io_lock``)."""
        done: list[dict[str, int | str]] = []
        for (port, channel, note), timer in list(self._notes.items()):
            if timer is not None:
                timer.cancel()
            del self._notes[(port, channel, note)]
            device = None if port == self.virtual_output else port
            try:
                self._send([0x80 | channel, note, 0], device)
                done.append({"device": port, "channel": channel, "note": note})
            except ActionError as e:
                self.log.warning("note-off %d on %r not sent: %s", note, port, e)
        return done

    # ------------------------------------------------------------------ actions
    @action
    def send_message(self, values: list[int], device: str | int | None = None) -> dict[str, Any]:
        """Send one raw MIDI message.

        Args:
            values: the bytes, e.g. ``[176, 7, 64]`` (control 7 = 64 on channel 1).
            device: the output port (name, /regex/ or index); default: ``output``, else
                the virtual output.

        Returns:
            ``{"device": port name, "message": values}``.
        """
        return {"device": self._send(values, device), "message": list(values)}

    @action(aliases=["play"])
    def play_note(self, note: int, velocity: int = 64, duration: float = 0.0, channel: int = 0,
                  device: str | int | None = None) -> dict[str, Any]:
        """Play a note: note-on now, note-off ``duration`` seconds later (on a timer).

        Args:
            note: 0-127 (60 is middle C).
            velocity: 1-127.
            duration: seconds until the note-off; 0 leaves the note on (``release_note``).
                Playing a sounding note again restarts its duration.
            channel: 0-15 (MIDI channel 1 is 0).
            device: the output port; default as ``send_message``.

        Returns:
            ``{"device", "note", "velocity", "channel", "duration"}``; the action returns at once.
        """
        _check_range("note", note, 0, 127)
        _check_range("velocity", velocity, 1, 127)
        _check_range("channel", channel, 0, 15)
        if not duration >= 0:
            raise ActionError(f"duration must be 0 or more seconds, not {duration:g}")
        with self._io_lock:
            port = self._send([0x90 | channel, note, velocity], device)
            old = self._notes.pop((port, channel, note), None)
            if old is not None:
                old.cancel()
            timer = self.clock.call_later(duration, self._note_off, port, channel, note, device) \
                if duration > 0 else None
            self._notes[(port, channel, note)] = timer
        return {"device": port, "note": note, "velocity": velocity, "channel": channel, "duration": duration}

    @action(aliases=["release"])
    def release_note(self, note: int, channel: int = 0, device: str | int | None = None) -> dict[str, Any]:
        """Send a note-off now (and cancel its pending timer).

        Args:
            note: 0-127.
            channel: 0-15.
            device: the output port; default as ``send_message``.
        """
        _check_range("note", note, 0, 127)
        _check_range("channel", channel, 0, 15)
        with self._io_lock:
            port = self._send([0x80 | channel, note, 0], device)
            timer = self._notes.pop((port, channel, note), None)
            if timer is not None:
                timer.cancel()
        return {"device": port, "note": note, "channel": channel}

    @action(aliases=["release_all"])
    def release_all_notes(self) -> list[dict[str, int | str]]:
        """Send a note-off for every note played and not yet released.

        Returns:
            the notes released, ``[{"device", "channel", "note"}]``.
        """
        with self._io_lock:
            return self._release_all()

    @action
    def control_change(self, control: int, value: int, channel: int = 0,
                       device: str | int | None = None) -> dict[str, Any]:
        """Send a control change (a knob or slider position).

        Args:
            control: the controller number 0-127 (7 is volume).
            value: 0-127.
            channel: 0-15.
            device: the output port; default as ``send_message``.
        """
        _check_range("control", control, 0, 127)
        _check_range("value", value, 0, 127)
        _check_range("channel", channel, 0, 15)
        port = self._send([0xB0 | channel, control, value], device)
        return {"device": port, "control": control, "value": value, "channel": channel}

    @action(aliases=["query_ports", "query"])
    def list_ports(self) -> dict[str, Any]:
        """The MIDI ports that exist and what pihub does with them.

        Returns:
            ``in`` / ``out``: ``{index: port name}`` as Platypush's ``query`` gives them;
            ``listening``: the inputs open now; ``missing``: configured inputs without a
            port; ``virtual_output``: pihub's own port name (null: none); ``api``: alsa or
            jack (null before a MIDI system answered); and the counters ``messages``,
            ``events``, ``dropped_events``, ``malformed``, ``dropped_input`` (JACK: beyond
            ``input_buffer`` while pihub was behind, or still waiting when the input
            closed), ``oversize`` (sysex beyond ``max_sysex``), ``coalesced`` (held and
            replaced by the throttle), ``sent``, ``connects``, ``disconnects``.
        """
        with self._io_lock:
            if self._api_const is None:
                ins: list[str] = []
                outs: list[str] = []
            else:
                ins, outs = list(self._probe_in.get_ports()), list(self._probe_out.get_ports())
            return {
                "in": dict(enumerate(ins)), "out": dict(enumerate(outs)),
                "listening": sorted(self._open), "missing": list(self._missing),
                "virtual_output": self.virtual_output if self._vout is not None else None,
                "api": self._api_used, **self._counts,
                "coalesced": self._throttle.coalesced if self._throttle is not None else 0,
            }

    def describe_entities(self) -> list[dict[str, Any]]:
        """The inputs, for the web panel: ``{"name", "kind": "midi_input", "state"}`` per
        entry of :meth:`describe_status`'s ``inputs`` (``state``: ``connected`` or
        ``waiting``; none before :meth:`open`). The messages themselves reach the panel as
        ``MidiMessageEvent``s; nothing here keeps them."""
        inputs: dict[str, str] = self.describe_status().get("inputs", {})
        return [{"name": name, "kind": "midi_input", "state": state} for name, state in inputs.items()]


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    """Raise ActionError unless ``lo <= value <= hi``."""
    if not lo <= value <= hi:
        raise ActionError(f"{name} must be {lo}-{hi}, not {value}")
