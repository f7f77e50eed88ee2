"""The ``adc`` backend: an MCP3008 (or MCP3004/3204/3208) on hardware SPI, polled.

A poll thread reads the configured channels every ``poll_interval`` seconds through ONE
``spidev.SpiDev`` opened in :meth:`AdcBackend.open` and kept until :meth:`AdcBackend.close`
(Platypush opens a new one every poll), and feeds ``{name: value}`` to a
:class:`~pihub.backends.sensor.SensorState`, which decides the ``SensorDataChangeEvent``,
``SensorDataAboveThresholdEvent`` and ``SensorDataBelowThresholdEvent`` (tolerance,
thresholds with hysteresis, ``enabled_sensors``: see :mod:`pihub.backends.sensor`).

Config (Platypush's ``sensor.mcp3008`` / ``backend.sensor.mcp3008`` / ``gpio.sensor.mcp3008``
sections are read as ``adc``; ``spi_port``, ``spi_device`` and ``Vdd`` are accepted as old
names of ``bus``, ``device`` and ``vref``)::

    adc:
      chip: mcp3008            # mcp3008 | mcp3004 (10 bit) | mcp3208 | mcp3204 (12 bit)
      bus: 0                   # /dev/spidev<bus>.<device>; 0/0 is valid
      device: 0
      max_speed_hz: 1000000    # SPI clock, Hz (10 kHz..3.6 MHz; the chip's range)
      vref: 3.3                # reference voltage, V (full scale)
      mode: single             # single | differential (for every channel)
      poll_interval: 1.0       # seconds between polls
      driver: spidev           # spidev | mock (the bit-level fake chip)
      channels:                # optional; none = every channel, named "0".."7"
        0: {name: light}
        "1":                   # string keys work too
          name: temperature
          conversion: {scale: 100.0, offset: -50.0}   # value = volts * scale + offset
          tolerance: 0.5       # in the value's units; overrides the top-level one
          thresholds: [20, 25] # a number or [low, high]; overrides the top-level one
        2: soil                # shorthand for {name: soil}
      tolerance: 0.01          # default for every channel: a number or {name: number}
      thresholds: {light: 2.5} # a number, [low, high] or {name: number or [low, high]}
      enabled_sensors: [light] # read and report only these names
      mock:                    # driver: mock only
        voltages: {0: 1.65}    # initial input voltages, V
        idle_bit: 0            # what MISO reads while the chip is high-Z (0 or 1)

Readings and events: ``data`` is ``{name: value}`` where ``value`` is the channel's voltage
(V, rounded to 1 uV) or, with ``conversion``, ``volts * scale + offset`` (a safe linear
conversion: Platypush's ``conv_function`` strings were ``eval``'d and are refused here,
with a message saying what to write instead). Raw codes and volts are available through
the actions below and in ``get_status`` (``last_poll``).

Volts from a code: ``code * vref / 2**bits`` (the datasheet's transfer function, code =
``floor(2**bits * Vin / vref)``); Platypush divides by 1023 instead, which reads up to one
LSB (3.2 mV at 3.3 V) higher at the top of the range.

In differential mode a channel key ``d`` (0..7) is the datasheet's pair selector:
``IN+ = CH<d>``, ``IN- = CH<d ^ 1>`` (0: CH0-CH1, 1: CH1-CH0, 2: CH2-CH3...).

Actions: ``adc.read(channel)`` (number or name) -> ``{channel, name, raw, volts, value}``;
``adc.read_all()`` -> ``{name: {channel, raw, volts, value}}``; ``adc.get_measurement()``
(Platypush's name; alias ``get_data``) -> ``{name: value}``; ``adc.get_status()`` (alias
``status``: ``status`` itself is the backend's lifecycle attribute); and, with
``driver: mock`` only, ``adc.set_voltage(channel, volts)``. Reads from actions do not
touch the change/threshold state: only the poll thread feeds it.

Failures: a missing ``spidev`` module or ``/dev/spidevB.D`` raises
:class:`~pihub.errors.BackendUnavailable` from :meth:`AdcBackend.validate_environment`
(the hub marks the backend failed and runs on). A read that fails while running (an
``OSError``, or a reply whose null bit is 1: nothing drives MISO) is counted in
``errors``, logged once per run of failures, makes the backend ``degraded`` with the reason in
``error``, and is retried with a back-off of 1, 2, 4 ... 60 s (never shorter than
``poll_interval``); the first good read makes it ``running`` again and clears ``error``.
Poll intervals and back-offs run on the backend's clock (:mod:`pihub.clock`), so tests
step through them with a ``ManualClock``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit
from pihub.backends.sensor import SENSOR_FIELDS, SensorState, parse_thresholds
from pihub.clock import Clock
from pihub.config.schema import Field, Schema
from pihub.errors import ActionError, AdcNoAnswer, BackendUnavailable, ConfigProblem, ConfigProblems
from pihub.plugin import action

_MOCK: Final = Schema({
    "voltages": Field(dict, {}, doc="initial input voltage per channel, V ({0: 1.65})"),
    "idle_bit": Field(int, 0, min=0, max=1, doc="what MISO reads while the chip drives nothing"),
}, doc="the fake chip of driver: mock")

if TYPE_CHECKING:  # the fake driver is imported only when config chooses it
    from pihub.backends.fake_mcp3008 import FakeMCP3xxx, FakeSpiRegistry

#: The supported parts: chip name -> (channels, resolution in bits).
CHIPS: Final[dict[str, tuple[int, int]]] = {
    "mcp3004": (4, 10),
    "mcp3008": (8, 10),
    "mcp3204": (4, 12),
    "mcp3208": (8, 12),
}

#: The fastest SPI clock the parts convert at, in Hz (3.6 MHz: the datasheets' 5 V rating).
MAX_CLOCK_HZ: Final = 3_600_000

_SOFTWARE_SPI: Final = ("CLK", "MISO", "MOSI", "CS")

_MAX_BACKOFF_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class AdcChannel:
    """One configured channel.

    Attributes:
        number: the D2..D0 selector (single-ended: the input; differential: the pair).
        name: the key of its value in readings.
        scale: ``value = volts * scale + offset``.
        offset: see ``scale``, in the value's units.
    """

    number: int
    name: str
    scale: float = 1.0
    offset: float = 0.0

    def value(self, volts: float) -> float:
        """The converted value of ``volts`` (rounded to 6 decimals)."""
        return round(volts * self.scale + self.offset, 6)


class AdcBackend(Backend):
    """MCP3xxx channels polled over SPI into sensor events (see the module docstring)."""

    name: ClassVar[str] = "adc"
    config_schema: ClassVar[Schema] = Schema(
        {
            "chip": Field(str, "mcp3008", choices=tuple(CHIPS), doc="the ADC part"),
            "bus": Field(int, 0, min=0, max=255, aliases=("spi_port",), doc="SPI bus: /dev/spidev<bus>.<device>"),
            "device": Field(int, 0, min=0, max=255, aliases=("spi_device",), doc="SPI chip select"),
            "max_speed_hz": Field(int, 1_000_000, min=10_000, max=MAX_CLOCK_HZ,
                                  doc="SPI clock, Hz (the MCP3xxx needs 10 kHz..3.6 MHz; 1.35 MHz max at 2.7 V)"),
            "vref": Field(float, 3.3, min=0.25, max=5.5, aliases=("Vdd",), doc="reference voltage, V"),
            "mode": Field(str, "single", choices=("single", "differential"),
                          doc="single-ended inputs, or the datasheet's differential pairs"),
            "driver": Field(str, "spidev", choices=("spidev", "mock"),
                            doc="spidev (the kernel's /dev/spidevB.D) or mock (a bit-level fake chip)"),
            "channels": Field(dict, {}, doc="{number: {name, conversion: {scale, offset}, tolerance, thresholds}}"),
            "mock": Field(_MOCK, {}, doc="settings of the fake chip (driver: mock)"),
            **SENSOR_FIELDS,
            "poll_interval": Field(float, 1.0, min=0.001, max=86400.0, aliases=("poll_seconds",),
                                   doc="seconds between two polls"),
            **{k: Field(object, None, doc="Platypush software SPI pin: not supported") for k in _SOFTWARE_SPI},
        },
        doc="MCP3008-family ADC on SPI: channels polled into sensor events",
    )

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config, clock=clock)
        values = self.config
        errors: list[ConfigProblem] = []
        self.chip_name: str = values["chip"]
        self.n_channels, self.bits = CHIPS[self.chip_name]
        self.bus: int = values["bus"]
        self.device: int = values["device"]
        self.path = f"/dev/spidev{self.bus}.{self.device}"
        self.max_speed_hz: int = values["max_speed_hz"]
        self.vref: float = values["vref"]
        self.single = values["mode"] == "single"
        self.driver: str = values["driver"]
        self.poll_interval: float = values["poll_interval"]
        soft = [k for k in _SOFTWARE_SPI if values.get(k) is not None]
        if soft:
            errors.append(ConfigProblem(
                (soft[0],), "software SPI (CLK/MISO/MOSI/CS) is not supported: wire the chip to the "
                "hardware SPI pins (SCLK GPIO11, MOSI GPIO10, MISO GPIO9, CE0 GPIO8 or CE1 GPIO7) "
                "and set bus/device"))
        self._channel_options: dict[str, dict[str, Any]] = {}
        self.channels: list[AdcChannel] = self._parse_channels(values["channels"], errors)
        tolerance, thresholds = self._per_channel(values, errors)
        self.mock_voltages = self._parse_voltages(values["mock"].get("voltages", {}), errors)
        if errors:
            raise ConfigProblems(errors)
        self.state = SensorState(self.name, thresholds=thresholds or None, tolerance=tolerance,
                                 enabled_sensors=values["enabled_sensors"])
        enabled = self.state.enabled
        self.polled = [c for c in self.channels if enabled is None or c.name in enabled]
        self._by_name = {c.name: c for c in self.channels}
        self._by_number = {c.number: c for c in self.channels}
        self._requests = {(single, d): _request(single, d, self.bits)
                          for single in (True, False) for d in range(self.n_channels)}
        self.chip: FakeMCP3xxx | None = None
        #: the mock driver's own fake SPI buses (None with spidev)
        self.fake_bus: FakeSpiRegistry | None = None
        if self.driver == "mock":
            from pihub.backends.fake_mcp3008 import FakeMCP3xxx, FakeSpiRegistry

            self.chip = FakeMCP3xxx(self.chip_name, self.vref, values["mock"].get("idle_bit", 0))
            self.fake_bus = FakeSpiRegistry()
            for ch, volts in self.mock_voltages.items():
                self.chip.voltages[ch] = volts
        self._spi: Any = None
        self._io = threading.Lock()
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None
        self.polls = 0
        self.errors = 0
        self.dropped = 0
        self.last_poll: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ config
    def _channel_number(self, key: object, errors: list[ConfigProblem]) -> int | None:
        top = self.n_channels - 1
        number: int | None = None
        if isinstance(key, int) and not isinstance(key, bool):
            number = key
        elif isinstance(key, str) and key.strip().lstrip("-").isdigit():
            number = int(key.strip())
        if number is None:
            errors.append(ConfigProblem(("channels", key), f"channel must be an int in range 0..{top}, not {key!r}"))
            return None
        if not 0 <= number <= top:
            errors.append(ConfigProblem(("channels", key), f"channel must be in range 0..{top}, not {number}"))
            return None
        return number

    def _parse_channels(self, raw: Mapping[Any, Any], errors: list[ConfigProblem]) -> list[AdcChannel]:
        if not raw:
            return [AdcChannel(d, str(d)) for d in range(self.n_channels)]
        out: list[AdcChannel] = []
        seen_numbers: dict[int, object] = {}
        seen_names: dict[str, object] = {}
        for key, spec in raw.items():
            number = self._channel_number(key, errors)
            path: tuple[str | int, ...] = ("channels", key)
            if isinstance(spec, str):
                spec = {"name": spec}
            if spec is None:
                spec = {}
            if not isinstance(spec, Mapping):
                errors.append(ConfigProblem(path, f"must be a name or a mapping {{name, conversion, tolerance, "
                                                  f"thresholds}}, not {spec!r}"))
                continue
            values, problems = _CHANNEL.validate(dict(spec), path)
            if spec.get("conv_function") is not None:
                problems.append(ConfigProblem((*path, "conv_function"), "is not supported (Platypush eval'd it); "
                                              "use conversion: {scale: S, offset: O} for value = volts * S + O"))
            errs = [p for p in problems if not getattr(p, "warning", False)]
            errors += errs
            if errs or number is None:
                continue
            name = values["name"] if values["name"] is not None else str(number)
            if number in seen_numbers:
                errors.append(ConfigProblem(path, f"channel {number} is configured twice "
                                                  f"(also as {seen_numbers[number]!r})"))
                continue
            if name in seen_names:
                errors.append(ConfigProblem((*path, "name"), f"name {name!r} is already used by channel "
                                                             f"{seen_names[name]!r}"))
                continue
            seen_numbers[number] = key
            seen_names[name] = key
            conv = values["conversion"] or {}
            out.append(AdcChannel(number, name, conv.get("scale", 1.0), conv.get("offset", 0.0)))
            self._channel_options[name] = {"tolerance": values["tolerance"], "thresholds": values["thresholds"],
                                           "path": path}
        return sorted(out, key=lambda c: c.number)

    def _per_channel(self, values: Mapping[str, Any], errors: list[ConfigProblem]
                     ) -> tuple[dict[Hashable, float], dict[Hashable, Any]]:
        """Merge top-level tolerance/thresholds with each channel's own (the channel's win)."""
        options = self._channel_options
        top_tol = values["tolerance"]
        tolerance: dict[Hashable, float] = {}
        for c in self.channels:
            own = options.get(c.name, {}).get("tolerance")
            if own is not None:
                tolerance[c.name] = own
            elif isinstance(top_tol, Mapping):
                if c.name in top_tol:
                    tolerance[c.name] = top_tol[c.name]
            else:
                tolerance[c.name] = top_tol
        if isinstance(top_tol, Mapping):
            for key in top_tol:
                if key not in self._names():
                    errors.append(ConfigProblem(("tolerance", key), f"no channel is named {key!r}"))
        enabled = values["enabled_sensors"]
        for key in (enabled or ()):
            if key not in self._names():
                errors.append(ConfigProblem(("enabled_sensors",), f"no channel is named {key!r}"))
        try:
            all_band, bands = parse_thresholds(values["thresholds"])
        except ConfigProblems as e:
            errors += e.problems
            return tolerance, {}
        for key in bands:
            if key not in self._names():
                errors.append(ConfigProblem(("thresholds", key), f"no channel is named {key!r}"))
        thresholds: dict[Hashable, Any] = {}
        for c in self.channels:
            opts = options.get(c.name, {})
            own = opts.get("thresholds")
            if own is not None:
                try:
                    parse_thresholds(own, (*opts["path"], "thresholds"))
                except ConfigProblems as e:
                    errors += e.problems
                    continue
                thresholds[c.name] = own
            elif c.name in bands:
                thresholds[c.name] = bands[c.name]
            elif all_band is not None:
                thresholds[c.name] = all_band
        return tolerance, thresholds

    def _names(self) -> set[str]:
        return {c.name for c in self.channels}

    def _parse_voltages(self, raw: Mapping[Any, Any], errors: list[ConfigProblem]) -> dict[int, float]:
        out: dict[int, float] = {}
        for key, volts in raw.items():
            sub: list[ConfigProblem] = []
            number = self._channel_number(key, sub)
            for p in sub:
                errors.append(ConfigProblem(("mock", "voltages", key), p.message))
            if isinstance(volts, bool) or not isinstance(volts, (int, float)) or not math.isfinite(volts):
                errors.append(ConfigProblem(("mock", "voltages", key), f"must be a number of volts, not {volts!r}"))
                continue
            if number is not None:
                out[number] = float(volts)
        return out

    # ------------------------------------------------------------------ lifecycle
    def validate_environment(self) -> None:
        """Check that spidev imports and the device node exists and is usable (driver: spidev)."""
        if self.driver == "mock":
            return
        try:
            import spidev  # noqa: F401 - lazy: only the spidev driver needs it
            missing = ""
        except ImportError:
            missing = "pip install spidev (Linux only)"
        if not os.path.exists(self.path):
            raise BackendUnavailable(
                f"{self.path} does not exist: enable SPI (raspi-config nonint do_spi 0, or dtparam=spi=on "
                f"in /boot/firmware/config.txt) and reboot, or check bus/device"
                + (f"; and {missing}" if missing else ""))
        if missing:
            raise BackendUnavailable(f"the spidev module is missing: {missing}")
        if not os.access(self.path, os.R_OK | os.W_OK):
            raise BackendUnavailable(f"no permission to use {self.path}: add the user to the 'spi' group")

    def open(self, emit: Emit) -> None:
        """Open the SPI device once, then poll on a thread named ``pihub-adc``."""
        spi = self._open_spi()
        with self._io:
            self._spi = spi
        self._emit = emit
        self.status = BackendStatus.RUNNING
        self.error = None
        self._thread = BackendThread("pihub-adc", self._poll_loop)
        self._thread.start()

    def _open_spi(self) -> Any:
        if self.driver == "mock":
            from pihub.backends.fake_mcp3008 import FakeSpiDev

            assert self.chip is not None and self.fake_bus is not None
            self.fake_bus.attach(self.bus, self.device, self.chip)
            spi: Any = FakeSpiDev(registry=self.fake_bus)
        else:
            import spidev

            spi = spidev.SpiDev()
        spi.open(self.bus, self.device)
        try:
            # spidev keeps the kernel's defaults after open (on a Pi: 125 MHz), far too fast
            spi.max_speed_hz = self.max_speed_hz
            spi.mode = 0
        except Exception:
            spi.close()
            raise
        return spi

    def close(self) -> None:
        """Stop polling, close the SPI device (and unwire the fake chip); idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        with self._io:
            spi, self._spi = self._spi, None
        if spi is not None:
            spi.close()
        if self.chip is not None and self.fake_bus is not None:
            self.fake_bus.detach(self.bus, self.device, self.chip)
        self._emit = None
        if self.status in (BackendStatus.RUNNING, BackendStatus.DEGRADED):
            self.status = BackendStatus.STOPPED

    # ------------------------------------------------------------------ reading
    def read_raw(self, number: int) -> int:
        """One conversion of channel (or pair) ``number``: the raw code, 0..2**bits-1.

        Raises:
            OSError: the transfer failed, or :class:`AdcNoAnswer` when the null bit is 1.
            RuntimeError: the backend is not open.
        """
        tx = self._requests[(self.single, number)]
        with self._io:
            spi = self._spi
            if spi is None:
                raise RuntimeError("the adc backend is not open")
            # a fresh list: spidev writes the reply into the list it is given
            rx: list[int] = spi.xfer2(list(tx))
        word = (rx[0] << 16) | (rx[1] << 8) | rx[2]
        if (word >> self.bits) & 1:
            raise AdcNoAnswer(f"no answer from the {self.chip_name} on {self.path} (the null bit is 1): "
                              f"check its wiring, power and chip select")
        return word & ((1 << self.bits) - 1)

    def volts(self, raw: int) -> float:
        """Volts of a raw code (``raw * vref / 2**bits``, rounded to 1 uV)."""
        return round(raw * self.vref / (1 << self.bits), 6)

    def _sample(self, channel: AdcChannel) -> dict[str, Any]:
        raw = self.read_raw(channel.number)
        volts = self.volts(raw)
        return {"channel": channel.number, "raw": raw, "volts": volts, "value": channel.value(volts)}

    def poll_once(self) -> list[Any]:
        """Read every polled channel once, feed the sensor state and emit its events.

        Returns:
            The events emitted (for tests and benchmarks).
        """
        ts = time.monotonic_ns()
        samples = {c.name: self._sample(c) for c in self.polled}
        self.last_poll = samples
        self.polls += 1
        events = self.state.update({name: s["value"] for name, s in samples.items()}, ts)
        emit = self._emit
        for ev in events:
            if emit is not None and not emit(ev):
                self.dropped += 1
        return events

    def _poll_loop(self, stopping: threading.Event) -> None:
        failures = 0
        clock = self.clock
        while not stopping.is_set():
            start = clock.now()
            try:
                self.poll_once()
            except (OSError, RuntimeError) as e:
                if self._spi is None:
                    return  # closed under us
                self.errors += 1
                failures += 1
                self.report_degraded(f"{type(e).__name__}: {e}")
                if failures == 1:
                    self.log.error("adc read failed, retrying with back-off: %s", e)
                delay = max(self.poll_interval, min(_MAX_BACKOFF_S, 2.0 ** (failures - 1)))
                clock.wait(stopping, delay)
                continue
            if failures:
                self.log.info("adc reads work again after %d failure(s)", failures)
                failures = 0
                self.report_recovered()
            clock.wait(stopping, self.poll_interval - (clock.now() - start))

    # ------------------------------------------------------------------ actions
    def _channel(self, channel: int | str) -> AdcChannel:
        if isinstance(channel, str):
            if channel in self._by_name:
                return self._by_name[channel]
            if channel.strip().isdigit():
                channel = int(channel)
            else:
                names = ", ".join(repr(n) for n in self._by_name)
                raise ActionError(f"no channel named {channel!r} (names: {names})")
        if not 0 <= channel < self.n_channels:
            raise ActionError(f"channel must be in range 0..{self.n_channels - 1}, not {channel}")
        return self._by_number.get(channel) or AdcChannel(channel, str(channel))

    def _read_for_action(self, channel: AdcChannel) -> dict[str, Any]:
        try:
            return self._sample(channel)
        except RuntimeError as e:
            raise ActionError(str(e)) from None

    @action
    def read(self, channel: int | str) -> dict[str, Any]:
        """Read one channel now.

        Args:
            channel: a channel number (0..7; 0..3 on the 4-channel chips) or a configured
                name. In differential mode the number is the pair selector.

        Returns:
            ``{"channel": n, "name": str, "raw": code, "volts": V, "value": converted}``.
        """
        ch = self._channel(channel)
        return {"channel": ch.number, "name": ch.name, **{k: v for k, v in self._read_for_action(ch).items()
                                                             if k != "channel"}}

    @action
    def read_all(self) -> dict[str, dict[str, Any]]:
        """Read every configured channel now: ``{name: {channel, raw, volts, value}}``."""
        return {c.name: self._read_for_action(c) for c in self.channels}

    @action(aliases=["get_data"])
    def get_measurement(self) -> dict[str, float]:
        """Read the polled channels now, as the events carry them: ``{name: value}``."""
        return {c.name: self._read_for_action(c)["value"] for c in self.polled}

    @action(aliases=["status"])
    def get_status(self) -> dict[str, Any]:
        """The backend's state: chip, device, counters, the last poll and the last report.

        Returns:
            ``{"status", "error", "chip", "device", "driver", "mode", "vref", "poll_interval",
            "polls", "errors", "dropped", "last_poll": {name: {channel, raw, volts, value}},
            "last": the last reported reading, "sides": threshold states}``.
        """
        return {"status": str(self.status), "error": self.error, "chip": self.chip_name, "device": self.path,
                "driver": self.driver, "mode": "single" if self.single else "differential", "vref": self.vref,
                "poll_interval": self.poll_interval, "polls": self.polls, "errors": self.errors,
                "dropped": self.dropped, "last_poll": dict(self.last_poll), **self.state.describe()}

    def describe_entities(self) -> list[dict[str, Any]]:
        """The configured channels with the poll thread's last reading, for the web panel.

        Reads nothing from the chip (the poll thread's ``last_poll`` only), so the panel
        never adds SPI traffic.

        Returns:
            One ``{"name", "channel", "kind": "adc", "polled", "value", "volts", "raw"}``
            per configured channel, by channel number: ``value`` in the channel's units
            (volts without ``conversion``), ``volts`` in V, ``raw`` the code; the three are
            null before the first poll and for a channel ``enabled_sensors`` leaves out
            (``polled: false``).
        """
        last = self.last_poll
        polled = {c.name for c in self.polled}
        out = []
        for c in self.channels:
            sample = last.get(c.name) or {}
            out.append({"name": c.name, "channel": c.number, "kind": "adc", "polled": c.name in polled,
                        "value": sample.get("value"), "volts": sample.get("volts"), "raw": sample.get("raw")})
        return out

    @action
    def set_voltage(self, channel: int, volts: float) -> dict[str, Any]:
        """Set the input voltage of one channel of the fake chip (``driver: mock`` only).

        Args:
            channel: the input, 0..7 (0..3 on the 4-channel chips).
            volts: the voltage, V (clipped by the chip to 0..vref when converted).

        Returns:
            ``{"channel": n, "volts": V, "previous": V}``.
        """
        if self.chip is None:
            raise ActionError("set_voltage needs driver: mock (this adc reads a real chip)")
        if not 0 <= channel < self.n_channels:
            raise ActionError(f"channel must be in range 0..{self.n_channels - 1}, not {channel}")
        if not math.isfinite(volts):
            raise ActionError(f"volts must be a finite number, not {volts!r}")
        previous = self.chip.voltages[channel]
        self.chip.set_voltage(channel, volts)
        return {"channel": channel, "volts": volts, "previous": previous}


_CHANNEL: Final = Schema({
    "name": Field(str, None, doc="key of the value in readings; default: the channel number"),
    "conversion": Field(Schema({
        "scale": Field(float, 1.0, doc="multiplier of the volts"),
        "offset": Field(float, 0.0, doc="added after scaling, in the value's units"),
    }), None, doc="value = volts * scale + offset"),
    "tolerance": Field(float, None, min=0.0, doc="smallest change reported, in the value's units"),
    "thresholds": Field((float, list[float]), None, doc="a number or [low, high] (hysteresis)"),
    "conv_function": Field(object, None, doc="Platypush's eval'd conversion: refused, see conversion"),
})


def _request(single: bool, d: int, bits: int) -> tuple[int, int, int]:
    """The three bytes that ask an MCP3xxx for one conversion, aligned so B0 ends the frame.

    One transfer is 24 clocks. The start bit is placed so that the last data bit (B0)
    is the last bit of the third byte; the chip ignores the zeros before the start bit::

        10 bit (MCP3004/3008): start bit at clock 7
        clock   0   1   2   3   4   5   6   7   | 8   9   10  11  12  13  14  15  | 16 .. 23
        MOSI    0   0   0   0   0   0   0   1   | SGL D2  D1  D0  x   x   x   x   | x  .. x
        MISO    ?   ?   ?   ?   ?   ?   ?   ?   | ?   ?   ?   ?   ?   0   B9  B8  | B7 .. B0
                                            st  |                 smp null

        12 bit (MCP3204/3208): start bit at clock 5
        clock   0   1   2   3   4   5   6   7   | 8   9   10  11  12  13  14  15  | 16 .. 23
        MOSI    0   0   0   0   0   1   SGL D2  | D1  D0  x   x   x   x   x   x   | x  .. x
        MISO    ?   ?   ?   ?   ?   ?   ?   ?   | ?   ?   ?   0   B11 B10 B9  B8  | B7 .. B0
                                    st          |         smp null

    ``st`` is the start bit, ``smp`` the sample clock. SGL is 1 for single-ended, 0 for
    differential; D2 D1 D0 select the channel (D2 is ignored by the 4-channel parts).
    ``?`` is high-Z: the reply is masked to ``bits`` bits, and the null bit (clock
    ``23 - bits``) must read 0, or nothing answered.

    Args:
        single: single-ended (True) or differential (False).
        d: the channel / pair selector, 0..7.
        bits: the resolution, 10 or 12.

    Returns:
        The bytes to send, as a tuple (copy it into a list for each transfer).
    """
    start = 17 - bits  # clock of the start bit: B0 = start + 6 + bits must be clock 23
    header = 0b10000 | (int(single) << 3) | (d & 0b111)  # start, SGL/DIFF, D2 D1 D0
    word = header << (23 - (start + 4))  # D0 at clock start + 4; clock c is bit 23 - c
    return ((word >> 16) & 0xFF, (word >> 8) & 0xFF, word & 0xFF)
