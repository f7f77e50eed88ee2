"""Serial sensors: an Arduino (or any device) printing readings as lines on a serial port.

Config (section ``serial``, Platypush's ``serial`` plugin keys plus pihub's)::

    serial:
      device: /dev/serial/by-id/usb-Arduino_Uno_1234-if00   # required; a path or a pyserial URL
      baud_rate: 9600            # bits/s
      format: json               # json (one object per line) | keyvalue (temp=21.5 hum=40)
      read_timeout: 1.0          # s; a read never blocks longer
      write_timeout: 1.0         # s; a write action fails after this long
      reconnect_interval: 2.0    # s between attempts while the device is missing
      max_line: 4096             # bytes; longer lines are dropped and counted
      reply_key: cmd             # objects with this key are command replies, not readings
      on_connect: []             # command lines written after every (re)connect
      thresholds: {temperature: [24, 26]}    # sensor base (pihub.backends.sensor)
      tolerance: {temperature: 0.1}
      enabled_sensors: [temperature, humidity]

``device`` may also be a pyserial URL: ``socket://host:port`` (ser2net), ``rfc2217://...``,
``loop://`` (what is written comes back: the contract suite uses it).

Data path::

    device --read(timeout)--> LineParser.feed --> reading --> SensorState.update --> emit
                                   |                 `--(has reply_key)--> last reply
                                   `--> malformed/overlong: counted, logged (rate-limited)

One reader thread (``pihub-serial``) owns the port: it opens it (pyserial,
``exclusive=True``: a second program cannot open it too), reads with ``read_timeout``,
and feeds the parser (:mod:`pihub.parsers.line`). Each reading goes through the sensor
base (change test, tolerance, thresholds with hysteresis, ``enabled_sensors``) and gives
``SensorDataChangeEvent``/``SensorDataAboveThresholdEvent``/``SensorDataBelowThresholdEvent``
with ``source: serial``.

The device comes and goes (USB unplug, an Arduino reset, a missing device at start): a
read error, an end of file or a failed open marks it *disconnected* - ``status()`` says
so, ``error`` names the device and the reason, a ``SerialDeviceEvent{device, connected:
false}`` is emitted - and the thread retries every ``reconnect_interval``. When the device
is back: ``SerialDeviceEvent{connected: true}``, the ``on_connect`` lines are written, and
readings resume. Events mark changes only: the first open gives ``connected: true``, a
device missing at start one ``connected: false``, not one per attempt. Bytes queued
before an open are discarded (stale readings), and a partial first line is counted as
malformed. Meanwhile the backend's :class:`BackendStatus` is ``degraded`` (reported
through :meth:`Backend.report_degraded`, so the hub publishes a ``BackendStatusEvent``
with the same ``error``); it is ``running`` again from the moment the device opens. The
hub keeps running either way.

Unlike Platypush's plugin: reads always time out (Platypush reads with no timeout); the
reader never holds the write lock while blocked in a read, so ``write`` is never starved
(Platypush's poll thread holds its lock while blocked and actions fail "could not acquire
the device lock"); lines, not brace counting, frame the JSON.

Actions: ``serial.write(data, newline=True, binary=False, reply_timeout=0)``,
``serial.get_measurement()`` (alias ``get_data``), ``serial.status()`` (the method
:meth:`SerialSensorBackend.device_status`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit, emit_counted
from pihub.backends.sensor import SENSOR_FIELDS, SensorState
from pihub.clock import Clock
from pihub.config.schema import Field, Schema
from pihub.errors import ActionError, BackendUnavailable, ConfigProblem, ConfigProblems
from pihub.events import CATALOGUE, Event
from pihub.logs import LogLimiter
from pihub.parsers.line import DEFAULT_MAX_LINE, MIN_MAX_LINE, PARSERS, LineParser, Reading
from pihub.plugin import action

if TYPE_CHECKING:
    import serial

__all__ = ["SerialSensorBackend"]

_DEVICE_EVENT: Final = CATALOGUE.get("SerialDeviceEvent")
_READ_CHUNK: Final = 4096  # bytes asked of one read at most
_LOG_BURST: Final = 5  # malformed lines logged per window...
_LOG_WINDOW: Final = 60.0  # ...of this many seconds; the rest are counted

State = Literal["connecting", "connected", "disconnected", "stopped"]

_SCHEMA_FIELDS: dict[str, Field] = {
    "device": Field(str, doc="serial device path (/dev/ttyACM0, /dev/serial/by-id/...) or a pyserial URL"),
    "baud_rate": Field(int, 9600, min=50, max=4_000_000, doc="line speed, in bits per second"),
    "format": Field(str, "json", choices=tuple(PARSERS),
                    doc="line format: json (one object per line) or keyvalue (temp=21.5 hum=40)"),
    "read_timeout": Field(float, 1.0, min=0.01, max=60.0,
                          doc="seconds a read may block; there is always a timeout"),
    "write_timeout": Field(float, 1.0, min=0.01, max=60.0, doc="seconds a write may block before failing"),
    "reconnect_interval": Field(float, 2.0, min=0.01, max=3600.0,
                                doc="seconds between attempts to (re)open a missing device"),
    "max_line": Field(int, DEFAULT_MAX_LINE, min=MIN_MAX_LINE, max=1 << 20, aliases=("max_size",),
                      doc="longest line kept, in bytes; longer lines are dropped and counted"),
    "reply_key": Field((str, None), "cmd", doc="objects with this key are command replies, not readings; "
                                       "null makes every object a reading"),
    "on_connect": Field(list, [], doc="command lines (strings, or mappings/lists sent as JSON) "
                                      "written after every (re)connect"),
    # Platypush's serial plugin options that pihub does not need, accepted with a warning.
    "timeout": Field(float, None, deprecated="pihub never waits for a device lock; use write_timeout"),
    "enable_polling": Field(bool, None, deprecated="pihub always reads the device; remove it"),
    **{k: f for k, f in SENSOR_FIELDS.items() if k != "poll_interval"},
    "poll_interval": Field(float, None, aliases=("poll_seconds",),
                           deprecated="readings are processed as the device sends them; remove it"),
}


def _encode_command(data: Any, *, newline: bool, binary: bool = False) -> bytes:
    """The bytes of a command line: text as UTF-8, mappings/lists as compact JSON.

    Args:
        data: a string, a mapping or a list (JSON-encoded).
        newline: end the line with ``\\n`` unless it already ends with one.
        binary: ``data`` is base64 text to decode and send as is (no newline added).
    Raises:
        TypeError: ``data`` has another type.
        ValueError: ``data`` is not JSON-encodable, or is bad base64.

    Messages are fragments without a subject (``must be a string, ...``).
    """
    if binary:
        if not isinstance(data, str):
            raise TypeError(f"must be base64 text when binary is true, not {type(data).__name__}")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"is not valid base64: {data[:40]!r}") from None
    if isinstance(data, str):
        raw = data.encode("utf-8")
    elif isinstance(data, (Mapping, list, tuple)):
        try:
            raw = json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot be sent as json: {str(e).lower()}") from None
    else:
        raise TypeError(f"must be a string, a mapping or a list, not {type(data).__name__}")
    if newline and not raw.endswith(b"\n"):
        raw += b"\n"
    return raw


def _open_error(device: str, exc: BaseException) -> str:
    """Why a device would not open, as a fragment naming it and saying what to check."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return f"serial device {device!r} not found (check the path, e.g. ls /dev/serial/by-id/, and the cable)"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied opening serial device {device!r} (add the user to the 'dialout' group)"
    if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
        return f"serial device {device!r} is in use by another program"
    if "configure port" in text or code == errno.ENOTTY:
        return f"{device!r} is not a serial device ({text})"
    return f"cannot open serial device {device!r}: {text}"


class SerialSensorBackend(Backend):
    """A serial line sensor: readings -> sensor events; reconnects; a write action.

    See the module docstring for the config, the data path and the reconnect rules.

    Args:
        config: the ``serial`` section (validated again here, so a raw mapping works).
        clock: the time of the log rate limit, reading ages and reconnect waits
            (:mod:`pihub.clock`; tests inject a ManualClock).

    Raises:
        ConfigProblems: the section is invalid (a ``ValueError``), every problem listed.
    """

    name: ClassVar[str] = "serial"
    config_schema: ClassVar[Schema] = Schema(
        _SCHEMA_FIELDS, doc="A sensor on a serial port printing JSON or key=value lines (Arduino style).")

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config, clock=clock)
        values = self.config
        errors: list[ConfigProblem] = []
        on_connect: list[bytes] = []
        for i, line in enumerate(values.get("on_connect") or []):
            try:
                on_connect.append(_encode_command(line, newline=True))
            except (TypeError, ValueError) as e:
                errors.append(ConfigProblem(("on_connect", i), str(e)))
        try:
            sensor = SensorState.from_config(self.name, values)
        except ConfigProblems as e:
            errors += e.problems
        if errors:
            raise ConfigProblems(errors)
        self.device: str = values["device"]
        self.baud_rate: int = values["baud_rate"]
        self.format: str = values["format"]
        self.read_timeout: float = values["read_timeout"]
        self.write_timeout: float = values["write_timeout"]
        self.reconnect_interval: float = values["reconnect_interval"]
        self.reply_key: str | None = values["reply_key"]
        self.on_connect = on_connect
        self.sensor = sensor
        self.parser: LineParser = PARSERS[self.format](values["max_line"], on_error=self._bad_line)
        self._limiter = LogLimiter(_LOG_BURST, _LOG_WINDOW, self.clock.now)
        # Lock order: _write_lock, then _port_lock. The reader takes _write_lock only to
        # close a port or write on_connect lines, never around a read.
        self._write_lock = threading.Lock()
        self._port_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._reply = threading.Condition(self._state_lock)
        self._port: serial.Serial | None = None
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None
        self._state: State = "connecting"
        self._last_reading: Reading | None = None
        self._last_reading_at: float | None = None
        self._last_reply: Reading | None = None
        self._replies = 0
        self._counts = {"bytes_read": 0, "bytes_written": 0, "events": 0, "dropped_events": 0,
                        "connects": 0, "disconnects": 0, "open_failures": 0}

    # ------------------------------------------------------------------ lifecycle
    def validate_environment(self) -> None:
        """Check that pyserial is installed and knows the URL scheme of ``device``, if any.

        A missing device is *not* an error here: the reader retries until it appears.

        Raises:
            BackendUnavailable: pyserial is missing (or another ``serial`` module shadows
                it), or the URL scheme is unknown.
        """
        try:
            import serial
        except ImportError:
            raise BackendUnavailable("pyserial is not installed (pip install pyserial)") from None
        if not hasattr(serial, "serial_for_url"):
            raise BackendUnavailable(f"the 'serial' module at {getattr(serial, '__file__', '?')} is not "
                                     f"pyserial (pip uninstall serial; pip install pyserial)")
        if "://" in self.device:
            scheme = self.device.split("://", 1)[0].lower()
            known = ("alt", "cp2110", "hwgrep", "loop", "rfc2217", "socket", "spy")
            if not scheme.isidentifier() or importlib.util.find_spec(
                    f"serial.urlhandler.protocol_{scheme}") is None:
                raise BackendUnavailable(
                    f"serial device {self.device!r}: unknown url scheme {scheme!r} "
                    f"(allowed: a device path, or {', '.join(s + '://' for s in known)})")

    def open(self, emit: Emit) -> None:
        """Start the reader thread ``pihub-serial``; it connects, reads and reconnects."""
        if self._thread is not None:
            return
        self._emit = emit
        with self._state_lock:
            self._state = "connecting"
        self.status, self.error = BackendStatus.RUNNING, None
        self._thread = BackendThread(f"pihub-{self.name}", self._run)
        self._thread.start()

    def close(self) -> None:
        """Stop the reader (waking it from a blocked read) and close the port; idempotent.

        Raises:
            RuntimeError: the reader did not stop (a driver ignored both the cancel and
                the read timeout).
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stopping.set()
            with self._port_lock:
                if self._port is not None:
                    self._cancel_read(self._port)
            thread.stop(timeout=self.read_timeout + self.write_timeout + 5.0)
        self._emit = None
        with self._state_lock:
            self._state = "stopped"
            self._reply.notify_all()
        self.status = BackendStatus.STOPPED

    # ------------------------------------------------------------------ reader thread
    def _run(self, stopping: threading.Event) -> None:
        """The reader: connect, read until the device goes, wait, reconnect; until stopped."""
        while not stopping.is_set():
            try:
                self._session(stopping)
            except Exception as e:  # a bug must not end the reader silently
                self.log.exception("serial reader failed on %s", self.device)
                self._disconnected(f"serial reader failed on {self.device!r}: {type(e).__name__}: {e}")
            if self.clock.wait(stopping, self.reconnect_interval):
                return

    def _session(self, stopping: threading.Event) -> None:
        """One connection: open, read until the device goes or we stop, close."""
        port = self._connect()
        if port is None:
            return
        try:
            lost = self._read_until_lost(port, stopping)
        finally:
            self._drop_port(port)
        if lost is not None:
            self._disconnected(lost)

    def _connect(self) -> serial.Serial | None:
        """Open the device; on failure mark it disconnected and return None."""
        import serial

        try:
            port = serial.serial_for_url(
                self.device, baudrate=self.baud_rate, timeout=self.read_timeout,
                write_timeout=self.write_timeout, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            self._counts["open_failures"] += 1
            self._disconnected(_open_error(self.device, e))
            return None
        try:
            port.reset_input_buffer()  # bytes queued before we opened are stale readings
        except (serial.SerialException, OSError):
            pass
        self.parser.reset()
        with self._port_lock:
            self._port = port
        self._connected()
        for line in self.on_connect:
            try:
                self._write_bytes(line)
            except ActionError as e:
                self.log.warning("on_connect line %r not written: %s", line, e)
        return port

    def _read_until_lost(self, port: serial.Serial, stopping: threading.Event) -> str | None:
        """Read and handle data until stopped (returns None) or the device goes (returns why)."""
        import serial

        while not stopping.is_set():
            try:
                data = port.read(max(1, min(port.in_waiting, _READ_CHUNK)))
            except (serial.SerialException, OSError) as e:
                if stopping.is_set():
                    return None
                detail = str(e) or type(e).__name__
                if "returned no data" in detail:
                    detail = "end of file (device unplugged?)"
                return f"serial device {self.device!r} disconnected: {detail}"
            if data:
                self._handle(data)
        return None

    def _handle(self, data: bytes) -> None:
        """Feed bytes to the parser (bad lines go to :meth:`_bad_line`); publish readings."""
        self._counts["bytes_read"] += len(data)
        for reading in self.parser.feed(data):
            self._reading(reading)

    def _bad_line(self, message: str) -> None:
        """A malformed or overlong line (already counted by the parser): log, rate-limited."""
        allowed, held = self._limiter.allow()
        if allowed:
            more = f" ({held} more bad lines not logged)" if held else ""
            self.log.warning("bad line from serial device %s: %s%s", self.device, message, more)

    def _reading(self, reading: Reading) -> None:
        """One parsed line: a reply is kept for ``write``; a reading goes to the sensor base."""
        if self.reply_key is not None and self.reply_key in reading:
            with self._reply:
                self._last_reply = reading
                self._replies += 1
                self._reply.notify_all()
            self.log.debug("reply from %s: %r", self.device, reading)
            return
        ts_ns = time.monotonic_ns()
        with self._state_lock:
            self._last_reading = reading
            self._last_reading_at = self.clock.now()
            events = self.sensor.update(reading, ts_ns)
        for event in events:
            self._publish(event)

    def _publish(self, event: Event) -> None:
        emit_counted(self._emit, event, self._counts)

    def _connected(self) -> None:
        """The device opened: state, log, ``SerialDeviceEvent{connected: true}``."""
        with self._state_lock:
            self._state = "connected"
        self.report_recovered()
        self._counts["connects"] += 1
        self.log.info("serial device %s connected (%d bit/s, %s lines)", self.device, self.baud_rate, self.format)
        self._publish(Event(_DEVICE_EVENT, {"device": self.device, "connected": True}, time.monotonic_ns(),
                            self.name))

    def _disconnected(self, reason: str) -> None:
        """The device is gone or would not open: state, error, log, event on the change only."""
        error = f"{reason}; retrying every {self.reconnect_interval:g} s"
        with self._state_lock:
            was, self._state = self._state, "disconnected"
            repeated = was == "disconnected" and self.error == error
        # only this thread reports, so the hub's events come in the order of the changes
        self.report_degraded(error)
        if repeated:
            self.log.debug("%s", error)
            return
        # a device that worked and went is worth a warning; one never seen is an error
        self.log.log(logging.WARNING if self._counts["connects"] else logging.ERROR, "%s", error)
        if was != "disconnected":
            if was == "connected":
                self._counts["disconnects"] += 1
            self._publish(Event(_DEVICE_EVENT, {"device": self.device, "connected": False}, time.monotonic_ns(),
                                self.name))

    def _drop_port(self, port: serial.Serial) -> None:
        """Forget and close the port, never under a writer's feet."""
        with self._write_lock, self._port_lock:
            self._port = None
            try:
                port.close()
            except OSError as e:  # a vanished device may fail to close; it is gone anyway
                self.log.debug("closing %s: %s", self.device, e)

    @staticmethod
    def _cancel_read(port: serial.Serial) -> None:
        """Wake a read blocked on ``port`` (pyserial's cancel_read where the driver has one)."""
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            with contextlib.suppress(OSError):  # the read timeout bounds the wait anyway
                cancel()

    def _write_bytes(self, raw: bytes) -> int:
        """Write under the write lock; never waits for the reader.

        Raises:
            ActionError: not connected, timed out, or the device failed.
        """
        import serial

        with self._write_lock:
            port = self._port
            if port is None:
                raise ActionError(f"serial device {self.device!r} is not connected ({self.error or 'connecting'})")
            try:
                n = port.write(raw)
                port.flush()
            except serial.SerialTimeoutException:
                raise ActionError(f"write to serial device {self.device!r} timed out after "
                                  f"{self.write_timeout:g} s") from None
            except (serial.SerialException, OSError) as e:
                raise ActionError(f"write to serial device {self.device!r} failed: {e}") from None
        written = len(raw) if n is None else n
        self._counts["bytes_written"] += written
        return written

    # ------------------------------------------------------------------ actions
    @action
    def write(self, data: str | dict[str, Any] | list[Any], newline: bool = True, binary: bool = False,
              reply_timeout: float = 0.0) -> dict[str, Any]:
        """Send a command line to the device.

        Args:
            data: the command: text is sent as UTF-8; a mapping or a list as compact JSON
                (``{"cmd": "set", "temperature": 30}``).
            newline: end the line with a newline unless it already ends with one.
            binary: ``data`` is base64 text, decoded and sent as is (no newline added).
            reply_timeout: seconds to wait for the device's reply (the next line holding
                the ``reply_key``); 0 returns at once. With several writers at a time,
                the reply is the next one after this write.

        Returns:
            ``{"device": path, "bytes": bytes written, "reply": the reply object or null}``.

        Raises:
            ActionError: bad data, the device is not connected, the write timed out or
                failed, or no reply came within ``reply_timeout``.
        """
        try:
            raw = _encode_command(data, newline=newline, binary=binary)
        except (TypeError, ValueError) as e:
            raise ActionError(f"data {e}") from None
        if reply_timeout < 0:
            raise ActionError(f"reply_timeout must be at least 0 seconds, not {reply_timeout:g}")
        with self._state_lock:
            seen = self._replies
        n = self._write_bytes(raw)
        reply = None
        if reply_timeout > 0:
            with self._reply:
                if not self._reply.wait_for(lambda: self._replies > seen or self._state == "stopped",
                                            reply_timeout) or self._replies == seen:
                    raise ActionError(f"wrote {n} bytes to serial device {self.device!r}, but no reply "
                                      f"came within {reply_timeout:g} s")
                reply = self._last_reply
        return {"device": self.device, "bytes": n, "reply": reply}

    @action(aliases=["get_data"])
    def get_measurement(self) -> Reading | None:
        """The last reading received from the device, as parsed (null before the first).

        Unlike Platypush, this does not read the device: the reader thread always does.
        """
        with self._state_lock:
            return dict(self._last_reading) if self._last_reading is not None else None

    @action(aliases=["status"])
    def device_status(self) -> dict[str, Any]:
        """The device's state and the reader's counters (action ``serial.status``).

        The method is not called ``status``: that name is the backend's lifecycle status
        attribute (:class:`BackendStatus`).

        Returns:
            ``device``, ``connected`` (bool), ``state`` (connecting, connected,
            disconnected, stopped), ``error`` (why disconnected, naming the device),
            ``format``, ``baud_rate``; the parser's ``lines``, ``readings``,
            ``malformed``, ``overflows``, ``last_error``; ``bytes_read``,
            ``bytes_written``, ``events``, ``dropped_events``, ``connects``,
            ``disconnects``, ``open_failures``; ``last_reading``, its age
            ``last_reading_age`` in seconds (null before the first), ``last_reply``,
            and the sensor base's ``sensor`` (last reported reading, threshold sides).
        """
        with self._state_lock:
            age = None if self._last_reading_at is None else self.clock.now() - self._last_reading_at
            return {
                "device": self.device,
                "connected": self._state == "connected",
                "state": self._state,
                "error": self.error,
                "format": self.format,
                "baud_rate": self.baud_rate,
                **self.parser.stats(),
                **self._counts,
                "last_reading": self._last_reading,
                "last_reading_age": age,
                "last_reply": self._last_reply,
                "sensor": self.sensor.describe(),
            }
