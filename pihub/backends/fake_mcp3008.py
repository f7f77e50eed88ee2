"""A bit-level fake MCP3004/3008/3204/3208 behind a fake ``spidev.SpiDev``.

The ``adc`` backend's ``driver: mock`` (chosen by config like a real driver): there is no
kernel SPI on CI machines and a fake ``/dev/spidevX.Y`` cannot be made (spidev ioctls on
open), so the fake sits one level up, at spidev's Python interface.

Three parts:

* :class:`FakeMCP3xxx` - the chip. ``voltages[ch]`` (volts) are its analog inputs; tests
  and the demo set them (``chip.voltages[3] = 1.0``). :meth:`FakeMCP3xxx.exchange` plays
  one chip-select-low session *bit by bit*, as the datasheet clocks it: DOUT is high-Z
  (read as :attr:`~FakeMCP3xxx.idle_bit`) until it has seen a start bit anywhere in the
  stream, then it takes SGL/DIFF and D2 D1 D0, samples for one clock, drives a null bit
  (0), then B9..B0 (B11..B0 on the 12-bit chips) MSB first; if the master keeps clocking
  it repeats the data LSB first (B1..B9) and then zeros (datasheet "LSB-first" mode)::

      clock:   s    s+1  s+2 s+3 s+4 s+5    s+6  s+7 .. s+6+n   then
      DIN:     1    SGL  D2  D1  D0  x      x    x      x
      DOUT:    Z    Z    Z   Z   Z   Z(smp) 0    B(n-1) .. B0   B1 .. B(n-1), 0, 0...

  Single-ended: the code is ``floor(2**n * V(ch) / vref)``, clipped to ``0..2**n-1``.
  Differential (SGL/DIFF = 0): D2..D0 pick a pair per the datasheet table, ``IN+ = CH[d]``
  and ``IN- = CH[d ^ 1]`` (000: CH0+/CH1-, 001: CH0-/CH1+, 010: CH2+/CH3- ...), and the
  code is that of ``IN+ - IN-`` (0 when negative: the chip is pseudo-differential). The
  4-channel chips ignore D2.

  It also behaves like the part where a driver can get it wrong: SPI modes 1 and 2 and
  an active-high chip select (``cshigh``) never select it, a clock above
  :attr:`~FakeMCP3xxx.max_clock_hz` (3.6 MHz, the 5 V rating; spidev's default after open
  is far higher) is not converted, and ``connected = False`` makes it vanish from the
  bus; each of these answers only idle bits and counts in ``rejected``.

* :class:`FakeSpiDev` - spidev's interface (``open``, ``open_path``, ``close``, ``xfer``,
  ``xfer2``, ``xfer3``, ``readbytes``, ``writebytes``, ``writebytes2``, ``fileno``, the
  attributes ``mode``, ``max_speed_hz``, ``bits_per_word``, ``lsbfirst``, ``cshigh``,
  ``threewire``, ``loop``, ``no_cs``, a context manager). ``open(bus, device)`` connects
  to the chip attached at ``(bus, device)`` in its :class:`FakeSpiRegistry`, or fails
  like spidev does for a missing ``/dev/spidevB.D`` (``FileNotFoundError``, errno 2). As
  with spidev's default build, ``xfer`` and ``xfer2`` are one chip-select-low session for
  the whole list.

* :class:`FakeSpiRegistry` - fake SPI buses: which chip is wired at ``(bus, device)``,
  and how many times each was opened. There is no global one: the ``adc`` backend in mock
  mode owns its own (``backend.fake_bus``) with its chip (``backend.chip``) wired while it
  is open, and a test builds its own. The chip table and clock limit come from
  :mod:`pihub.backends.adc`: the fake imports the product's data, never the reverse.
"""

from __future__ import annotations

import errno
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final

__all__ = [
    "CHIPS",
    "FakeMCP3xxx",
    "FakeMCP3004",
    "FakeMCP3008",
    "FakeMCP3204",
    "FakeMCP3208",
    "FakeSpiDev",
    "FakeSpiRegistry",
]

from pihub.backends.adc import CHIPS, MAX_CLOCK_HZ  # the part's data is the backend's, not the fake's

#: spidev's default ``max_speed_hz`` right after ``open`` (the Pi kernel's, 125 MHz):
#: a driver that never lowers it overclocks the chip.
DEFAULT_SPEED_HZ: Final = 125_000_000


class FakeMCP3xxx:
    """One fake MCP3xxx chip (see the module docstring for the bit protocol).

    Args:
        chip: one of :data:`CHIPS`.
        vref: the reference voltage in volts (full scale).
        idle_bit: what the master reads while DOUT is high-impedance (0 or 1); 1 tests
            that a driver masks the bits before the null bit.

    Attributes:
        voltages: the analog input of each channel, in volts; set freely from any thread.
        connected: False makes the chip answer nothing (idle bits), as if unplugged.
        conversions: how many conversions it has answered.
        rejected: how many sessions it ignored (wrong SPI mode, CS polarity, clock too
            fast, disconnected).
        requests: the last 64 requests decoded, as ``(single, d)`` pairs (d = D2..D0).
        last_speed_hz: the SPI clock of the last session, in Hz.
    """

    max_clock_hz: ClassVar[int] = MAX_CLOCK_HZ

    def __init__(self, chip: str = "mcp3008", vref: float = 3.3, idle_bit: int = 0) -> None:
        if chip not in CHIPS:
            raise ValueError(f"chip must be one of {', '.join(sorted(CHIPS))}, not {chip!r}")
        if not vref > 0:
            raise ValueError(f"vref must be more than 0 V, not {vref!r}")
        self.chip = chip
        self.channels, self.bits = CHIPS[chip]
        self.vref = float(vref)
        self.idle_bit = 1 if idle_bit else 0
        self.voltages: list[float] = [0.0] * self.channels
        self.connected = True
        self.conversions = 0
        self.rejected = 0
        self.requests: list[tuple[bool, int]] = []
        self.last_speed_hz = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ analog side
    def code(self, d: int, single: bool = True) -> int:
        """The conversion result for channel selector ``d`` (D2..D0), in LSBs."""
        d &= self.channels - 1  # the 4-channel chips ignore D2
        if single:
            volts = self.voltages[d]
        else:
            volts = self.voltages[d] - self.voltages[d ^ 1]
        full = 1 << self.bits
        if not volts > 0:  # negative, zero or NaN
            return 0
        # 1e-9 LSB absorbs float error on exact code boundaries (1.65 V of 3.3 V -> 512)
        return min(full - 1, math.floor(volts * full / self.vref + 1e-9))

    def set_voltage(self, channel: int, volts: float) -> None:
        """Set one input, in volts (checked: a channel of this chip, a finite number)."""
        if not 0 <= channel < self.channels:
            raise ValueError(f"channel must be in range 0..{self.channels - 1}, not {channel}")
        if not math.isfinite(volts):
            raise ValueError(f"volts must be a finite number, not {volts!r}")
        self.voltages[channel] = float(volts)

    # ------------------------------------------------------------------ digital side
    def exchange(self, tx: Sequence[int], *, speed_hz: int = 1_000_000, mode: int = 0,
                 lsbfirst: bool = False, cshigh: bool = False) -> list[int]:
        """One chip-select-low session: shift ``tx`` bytes in, return the bytes shifted out.

        Args:
            tx: the bytes the master sends (0..255 each).
            speed_hz: the SPI clock, in Hz.
            mode: the SPI mode (the chip supports 0 and 3).
            lsbfirst: bytes go out and come back least significant bit first.
            cshigh: the master drives chip select active-high (this chip's is active-low).

        Returns:
            One byte per byte of ``tx``.
        """
        with self._lock:
            self.last_speed_hz = speed_hz
            usable = (self.connected and mode in (0, 3) and not cshigh
                      and 0 < speed_hz <= self.max_clock_hz)
            if not usable:
                self.rejected += 1
                return [0xFF if self.idle_bit else 0x00] * len(tx)
            order = range(8) if lsbfirst else range(7, -1, -1)
            rx_bits: list[int] = []
            state = _Session(self)
            for byte in tx:
                for i in order:
                    rx_bits.append(state.clock((byte >> i) & 1))
            out = []
            for k in range(0, len(rx_bits), 8):
                chunk = rx_bits[k:k + 8]
                value = 0
                for j, b in enumerate(chunk):
                    value |= b << (j if lsbfirst else 7 - j)
                out.append(value)
            return out


class _Session:
    """The chip's state machine during one CS-low session (one call of ``exchange``).

    ``off`` is None until the start bit, then the number of clocks since it: 1 SGL/DIFF,
    2..4 D2..D0, 5 the sample clock (DOUT still high-Z), 6 the null bit, 7.. the data.
    """

    __slots__ = ("chip", "code", "d", "off", "single")

    def __init__(self, chip: FakeMCP3xxx) -> None:
        self.chip = chip
        self.off: int | None = None
        self.single = True
        self.d = 0
        self.code = 0

    def clock(self, din: int) -> int:
        """One SCLK: return what DOUT shows on it, then latch DIN."""
        chip = self.chip
        if self.off is None:
            if din:
                self.off = 0  # the start bit: the first 1 clocked in with CS low
            return chip.idle_bit
        off = self.off = self.off + 1
        n = chip.bits
        # DOUT depends only on what was clocked in before this clock
        if off < 6:
            dout = chip.idle_bit
        elif off == 6:
            dout = 0  # the null bit
        elif off < 7 + n:
            dout = (self.code >> (n - 1 - (off - 7))) & 1  # B(n-1) .. B0, MSB first
        elif off < 6 + 2 * n:
            dout = (self.code >> (off - 6 - n)) & 1  # B1 .. B(n-1), LSB first
        else:
            dout = 0
        if off == 1:
            self.single = bool(din)
        elif 2 <= off <= 4:
            self.d = (self.d << 1) | din
            if off == 4:  # D0 latched: the sample window opens
                self.code = chip.code(self.d, self.single)
                chip.conversions += 1
                chip.requests.append((self.single, self.d))
                del chip.requests[:-64]
        return dout


class FakeMCP3008(FakeMCP3xxx):
    """A fake MCP3008: 8 channels, 10 bits."""

    def __init__(self, vref: float = 3.3, idle_bit: int = 0) -> None:
        super().__init__("mcp3008", vref, idle_bit)


class FakeMCP3004(FakeMCP3xxx):
    """A fake MCP3004: 4 channels, 10 bits."""

    def __init__(self, vref: float = 3.3, idle_bit: int = 0) -> None:
        super().__init__("mcp3004", vref, idle_bit)


class FakeMCP3208(FakeMCP3xxx):
    """A fake MCP3208: 8 channels, 12 bits."""

    def __init__(self, vref: float = 3.3, idle_bit: int = 0) -> None:
        super().__init__("mcp3208", vref, idle_bit)


class FakeMCP3204(FakeMCP3xxx):
    """A fake MCP3204: 4 channels, 12 bits."""

    def __init__(self, vref: float = 3.3, idle_bit: int = 0) -> None:
        super().__init__("mcp3204", vref, idle_bit)


class FakeSpiRegistry:
    """The fake SPI buses: chips by ``(bus, device)``, and open counts.

    Attributes:
        opens: ``Counter`` of successful ``FakeSpiDev.open`` calls per ``(bus, device)``.
    """

    def __init__(self) -> None:
        self._chips: dict[tuple[int, int], FakeMCP3xxx] = {}
        self.opens: Counter[tuple[int, int]] = Counter()
        self._lock = threading.Lock()

    def attach(self, bus: int, device: int, chip: FakeMCP3xxx) -> FakeMCP3xxx:
        """Wire ``chip`` at ``/dev/spidev<bus>.<device>`` (replacing any chip there); returns it."""
        with self._lock:
            self._chips[(bus, device)] = chip
        return chip

    def detach(self, bus: int, device: int, chip: FakeMCP3xxx | None = None) -> None:
        """Unwire the chip at ``(bus, device)``; with ``chip``, only if it is that one."""
        with self._lock:
            if chip is None or self._chips.get((bus, device)) is chip:
                self._chips.pop((bus, device), None)

    def chip(self, bus: int = 0, device: int = 0) -> FakeMCP3xxx:
        """The chip at ``(bus, device)``; ``LookupError`` naming the device when none."""
        with self._lock:
            try:
                return self._chips[(bus, device)]
            except KeyError:
                raise LookupError(f"no fake chip at /dev/spidev{bus}.{device}") from None

    def get(self, bus: int, device: int) -> FakeMCP3xxx | None:
        """The chip at ``(bus, device)``, or None."""
        with self._lock:
            return self._chips.get((bus, device))

    def clear(self) -> None:
        """Unwire every chip and reset the counts (test isolation)."""
        with self._lock:
            self._chips.clear()
            self.opens.clear()


_PATH_RE: Final = re.compile(r"/dev/spidev(\d+)\.(\d+)")


class FakeSpiDev:
    """A stand-in for ``spidev.SpiDev`` wired to the chips of a :class:`FakeSpiRegistry`.

    Args:
        bus: open ``/dev/spidev<bus>.<device>`` at once when both are given (as spidev).
        device: see ``bus``.
        registry: the fake buses it opens chips on.
    """

    def __init__(self, bus: int | None = None, device: int | None = None, *,
                 registry: FakeSpiRegistry) -> None:
        self.registry = registry
        self._chip: FakeMCP3xxx | None = None
        self._where: tuple[int, int] | None = None
        self.mode = 0
        self.max_speed_hz = 0
        self.bits_per_word = 8
        self.lsbfirst = False
        self.cshigh = False
        self.threewire = False
        self.loop = False
        self.no_cs = False
        if bus is not None and device is not None:
            self.open(bus, device)

    # ------------------------------------------------------------------ lifecycle
    def open(self, bus: int, device: int) -> None:
        """Connect to the chip at ``(bus, device)``; FileNotFoundError when none is wired."""
        chip = self.registry.get(bus, device)
        if chip is None:
            path = f"/dev/spidev{bus}.{device}"
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self._chip, self._where = chip, (bus, device)
        self.mode, self.bits_per_word, self.max_speed_hz = 0, 8, DEFAULT_SPEED_HZ
        self.registry.opens[(bus, device)] += 1

    def open_path(self, path: str) -> None:
        """``open`` by path, ``/dev/spidev<bus>.<device>`` only."""
        m = _PATH_RE.fullmatch(path)
        if m is None:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device", path)
        self.open(int(m.group(1)), int(m.group(2)))

    def close(self) -> None:
        """Disconnect; idempotent, as spidev's."""
        self._chip = None
        self._where = None

    def fileno(self) -> int:
        """A pretend descriptor (-1 when closed, as spidev)."""
        return -1 if self._where is None else 1000 + 16 * self._where[0] + self._where[1]

    def __enter__(self) -> FakeSpiDev:  # noqa: PYI034 - spidev's own signature
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transfers
    def _session(self, values: Iterable[int], speed_hz: int = 0, bits_per_word: int = 0) -> list[int]:
        if self._chip is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        tx = list(values)
        if not tx:
            raise TypeError("Empty argument list.")
        if any(not isinstance(v, int) or isinstance(v, bool) for v in tx):
            raise TypeError("Non-Int/Long value in arguments.")
        bpw = bits_per_word or self.bits_per_word
        if bpw != 8:
            raise ValueError(f"the fake SPI supports bits_per_word 8 only, not {bpw}")
        tx = [v & 0xFF for v in tx]
        if self.loop:
            return tx
        if self.no_cs:  # chip select never asserted: the chip stays deselected
            self._chip.rejected += 1
            return [0xFF if self._chip.idle_bit else 0] * len(tx)
        return self._chip.exchange(tx, speed_hz=speed_hz or self.max_speed_hz, mode=self.mode,
                                   lsbfirst=self.lsbfirst, cshigh=self.cshigh)

    def _reply(self, values: Sequence[int], speed_hz: int, bits_per_word: int) -> Any:
        rx = self._session(values, speed_hz, bits_per_word)
        if isinstance(values, list):  # as spidev: the reply overwrites the list it was given
            values[:] = rx
            return values
        if isinstance(values, tuple):
            return tuple(rx)
        return rx

    def xfer(self, values: Sequence[int], speed_hz: int = 0, delay_usecs: int = 0,
             bits_per_word: int = 0) -> Any:
        """One transfer (spidev's default build holds CS for the whole list, like xfer2)."""
        return self._reply(values, speed_hz, bits_per_word)

    def xfer2(self, values: Sequence[int], speed_hz: int = 0, delay_usecs: int = 0,
              bits_per_word: int = 0) -> Any:
        """One transfer with CS held low for the whole list.

        Returns:
            The bytes read: like spidev, written into ``values`` itself when it is a list
            (and that list returned), a tuple for a tuple.
        """
        return self._reply(values, speed_hz, bits_per_word)

    def xfer3(self, values: Sequence[int], speed_hz: int = 0, delay_usecs: int = 0,
              bits_per_word: int = 0) -> tuple[int, ...]:
        """Like ``xfer2`` for long buffers; returns a tuple, as spidev."""
        return tuple(self._session(values, speed_hz, bits_per_word))

    def readbytes(self, n: int) -> list[int]:
        """Clock ``n`` zero bytes out and return what came back."""
        return self._session([0] * n)

    def writebytes(self, values: Sequence[int]) -> None:
        """Send bytes, discarding the reply."""
        self._session(values)

    def writebytes2(self, values: Any) -> None:
        """Send a buffer or sequence of bytes, discarding the reply."""
        self._session(list(values))

    def __repr__(self) -> str:
        where = "closed" if self._where is None else f"/dev/spidev{self._where[0]}.{self._where[1]}"
        return f"<FakeSpiDev {where}>"
