"""The adc backend and its bit-level fake MCP3xxx (pihub/backends/{adc,fake_mcp3008}.py)."""

from __future__ import annotations

import errno
import functools
import math
import os
import threading
import weakref

import pytest
from pihub_testing import RecordingClock, collecting_in, finishes, need_absent, wait_for

import pihub.hub as hubmod
from pihub.backends.adc import CHIPS, AdcBackend, _request
from pihub.backends.base import BackendStatus
from pihub.backends.fake_mcp3008 import (
    DEFAULT_SPEED_HZ,
    FakeMCP3xxx,
    FakeMCP3008,
    FakeMCP3208,
    FakeSpiDev,
    FakeSpiRegistry,
)
from pihub.backends.gpio import reservation_safe
from pihub.clock import ManualClock
from pihub.errors import AdcNoAnswer, BackendUnavailable, ConfigError, ConfigProblems

VOLTS = [0.0, 0.4, 0.9, 1.3, 1.7, 2.2, 2.9, 3.3]  # none on a code boundary of 3.3 V


#: This module's fake SPI buses (the product has no global one: a mock adc backend owns its own).
BUS = FakeSpiRegistry()


@pytest.fixture(autouse=True)
def clean_registry():
    BUS.clear()
    yield
    BUS.clear()


@pytest.fixture
def adc_hub(make_hub, monkeypatch):
    """make_hub with ``adc`` registered even before pyproject's entry point is installed."""
    real = hubmod.backend_classes
    monkeypatch.setattr(hubmod, "backend_classes", lambda *a, **kw: {**real(*a, **kw), "adc": AdcBackend})
    return make_hub




def expected_code(v: float, vref: float, bits: int) -> int:
    """The datasheet's transfer function, computed independently of the fake."""
    if v <= 0:
        return 0
    return min((1 << bits) - 1, int(v * (1 << bits) / vref))


def to_bits(data: list[int]) -> list[int]:
    return [(b >> (7 - i)) & 1 for b in data for i in range(8)]


def from_bits(bits: list[int]) -> list[int]:
    return [sum(bit << (7 - i) for i, bit in enumerate(bits[k:k + 8])) for k in range(0, len(bits), 8)]


def conversion(spi, start: int, single: bool, d: int, bits: int, nbytes: int = 4) -> tuple[list[int], int]:
    """Send a request whose start bit is at clock ``start``; decode the reply by hand.

    Returns ``(rx bits, code)`` with the code read from clocks start+7 .. start+6+bits.
    """
    tx = [0] * (nbytes * 8)
    tx[start] = 1
    tx[start + 1] = int(single)
    for i in range(3):
        tx[start + 2 + i] = (d >> (2 - i)) & 1
    rx = to_bits(spi.xfer2(from_bits(tx)))
    assert rx[start + 6] == 0, "null bit"
    code = 0
    for bit in rx[start + 7:start + 7 + bits]:
        code = code << 1 | bit
    return rx, code


def open_fake(chip: FakeMCP3xxx, bus: int = 0, device: int = 0, registry=BUS) -> FakeSpiDev:
    registry.attach(bus, device, chip)
    spi = FakeSpiDev(bus, device, registry=registry)
    spi.max_speed_hz = 1_000_000
    return spi


# ---------------------------------------------------------------------- the fake chip, bit by bit

@pytest.mark.parametrize("chip_name", sorted(CHIPS))
def test_fake_answers_every_channel_single_ended(chip_name):
    chip = FakeMCP3xxx(chip_name)
    chip.voltages[:] = VOLTS[:chip.channels]
    spi = open_fake(chip)
    for d in range(chip.channels):
        _, code = conversion(spi, 7, True, d, chip.bits)
        assert code == expected_code(VOLTS[d], 3.3, chip.bits), (chip_name, d)


@pytest.mark.parametrize("chip_name", sorted(CHIPS))
def test_fake_answers_every_pair_differential(chip_name):
    chip = FakeMCP3xxx(chip_name)
    chip.voltages[:] = VOLTS[:chip.channels]
    spi = open_fake(chip)
    for d in range(chip.channels):
        plus, minus = d, d ^ 1           # 000: CH0+ CH1-, 001: CH0- CH1+, 010: CH2+ CH3- ...
        _, code = conversion(spi, 7, False, d, chip.bits)
        assert code == expected_code(VOLTS[plus] - VOLTS[minus], 3.3, chip.bits), (chip_name, d)
    assert conversion(spi, 7, False, 1, chip.bits)[1] > 0   # CH1 - CH0 = 0.4 V
    assert conversion(spi, 7, False, 0, chip.bits)[1] == 0  # CH0 - CH1 < 0: pseudo-differential


@pytest.mark.parametrize("start", range(16))
def test_start_bit_is_found_anywhere(start):
    chip = FakeMCP3008()
    chip.voltages[5] = 2.2
    _, code = conversion(open_fake(chip), start, True, 5, 10)
    assert code == expected_code(2.2, 3.3, 10)


def test_classic_three_byte_read():
    chip = FakeMCP3008()
    chip.voltages[0] = 1.65
    chip.voltages[5] = 3.3
    spi = open_fake(chip)
    assert spi.xfer2([1, 0x80, 0]) == [0, 2, 0]                 # 512: half of 3.3 V
    assert spi.xfer2([1, (8 + 5) << 4, 0]) == [0, 3, 255]       # full scale
    assert chip.requests[-2:] == [(True, 0), (True, 5)]


def test_mcp3208_datasheet_frame():
    chip = FakeMCP3208()
    chip.voltages[7] = 1.65
    spi = open_fake(chip)
    rx = spi.xfer2([0x07, 0xC0, 0])                             # start, SGL, D2 | D1 D0 ...
    assert ((rx[1] & 0x0F) << 8 | rx[2]) == 2048


def test_four_channel_chips_ignore_d2():
    chip = FakeMCP3xxx("mcp3004")
    chip.voltages[1] = 1.3
    spi = open_fake(chip)
    assert conversion(spi, 7, True, 5, 10)[1] == conversion(spi, 7, True, 1, 10)[1] == expected_code(1.3, 3.3, 10)


def test_high_z_bits_read_as_the_idle_bit_and_the_null_bit_is_zero():
    chip = FakeMCP3008(idle_bit=1)
    chip.voltages[0] = 1.65
    rx = open_fake(chip).xfer2([1, 0x80, 0])
    assert rx == [0xFF, 0b11111010, 0]                           # ? ... ? 0 B9 B8 | B7..B0
    assert (rx[1] >> 2) & 1 == 0


def test_extra_clocks_give_lsb_first_data_then_zeros():
    chip = FakeMCP3008()
    chip.voltages[0] = 2.2
    code = expected_code(2.2, 3.3, 10)
    rx, _ = conversion(open_fake(chip), 7, True, 0, 10, nbytes=6)
    tail = rx[24:24 + 9]                                          # after B0 at clock 23: B1 .. B9
    assert tail == [(code >> i) & 1 for i in range(1, 10)]
    assert set(rx[33:]) == {0}


def test_each_transfer_is_one_chip_select_session():
    chip = FakeMCP3008()
    spi = open_fake(chip)
    assert spi.xfer2([1]) == [0] and chip.conversions == 0       # a start bit, then CS goes high
    spi.xfer2([0x80, 0])                                          # not the SGL=1, D=000 it would finish...
    assert chip.requests == [(False, 0)]                          # ...but a new start bit: DIFF, pair 0
    spi.xfer([1, 0x80 | 3 << 4, 0])                               # xfer: CS held for the list too
    assert chip.requests[-1] == (True, 3) and chip.conversions == 2


def test_clipping_and_full_scale():
    chip = FakeMCP3008()
    chip.voltages[:2] = [-1.0, 5.0]
    spi = open_fake(chip)
    assert conversion(spi, 7, True, 0, 10)[1] == 0
    assert conversion(spi, 7, True, 1, 10)[1] == 1023
    chip.voltages[2] = 1.65
    assert conversion(spi, 7, True, 2, 10)[1] == 512               # an exact boundary, despite floats


@pytest.mark.parametrize(("attr", "value"), [("mode", 1), ("mode", 2), ("cshigh", True),
                                             ("max_speed_hz", 10_000_000), ("no_cs", True)])
def test_chip_ignores_wrong_bus_settings(attr, value):
    chip = FakeMCP3008()
    chip.voltages[0] = 1.65
    spi = open_fake(chip)
    setattr(spi, attr, value)
    assert spi.xfer2([1, 0x80, 0]) == [0, 0, 0]
    assert chip.rejected == 1 and chip.conversions == 0


def test_mode_3_works_and_default_speed_after_open_is_too_fast():
    chip = FakeMCP3008()
    chip.voltages[0] = 1.65
    BUS.attach(0, 0, chip)
    spi = FakeSpiDev(0, 0, registry=BUS)
    assert spi.max_speed_hz == DEFAULT_SPEED_HZ
    assert spi.xfer2([1, 0x80, 0]) == [0, 0, 0]                    # 125 MHz: not converted
    spi.max_speed_hz, spi.mode = 1_000_000, 3
    assert spi.xfer2([1, 0x80, 0]) == [0, 2, 0]
    assert spi.xfer2([1, 0x80, 0], 20_000_000) == [0, 0, 0]        # per-transfer speed_hz counts


def test_disconnected_chip_answers_nothing():
    chip = FakeMCP3008(idle_bit=1)
    spi = open_fake(chip)
    chip.connected = False
    assert spi.xfer2([1, 0x80, 0]) == [0xFF, 0xFF, 0xFF]


def test_fake_spidev_interface():
    reg = FakeSpiRegistry()
    with pytest.raises(FileNotFoundError) as e:
        FakeSpiDev(1, 0, registry=reg)
    assert e.value.errno == errno.ENOENT and e.value.filename == "/dev/spidev1.0"
    chip = reg.attach(1, 0, FakeMCP3008())
    spi = FakeSpiDev(registry=reg)
    assert spi.fileno() == -1
    spi.open_path("/dev/spidev1.0")
    assert spi.fileno() >= 0 and reg.opens[(1, 0)] == 1 and reg.chip(1, 0) is chip
    spi.max_speed_hz = 500_000
    buf = [1, 0x80, 0]
    assert spi.xfer2(buf) is buf and buf == [0, 0, 0]             # the reply overwrites the list
    assert spi.xfer2((1, 0x80, 0)) == (0, 0, 0)
    assert spi.xfer3([1, 0x80, 0]) == (0, 0, 0)
    assert spi.readbytes(2) == [0, 0]
    spi.writebytes([1, 2]), spi.writebytes2(b"\x01\x02")
    spi.loop = True
    assert spi.xfer2([0xA5, 0x5A]) == [0xA5, 0x5A]
    with pytest.raises(TypeError):
        spi.xfer2([])
    with pytest.raises(ValueError, match="bits_per_word 8 only"):
        spi.xfer2([1], 0, 0, 16)
    spi.close()
    spi.close()
    with pytest.raises(OSError) as e:
        spi.xfer2([1, 0x80, 0])
    assert e.value.errno == errno.EBADF
    with pytest.raises(LookupError, match="/dev/spidev0.0"):
        reg.chip(0, 0)


def test_chip_set_voltage_is_checked():
    chip = FakeMCP3xxx("mcp3004")
    with pytest.raises(ValueError, match="channel must be in range 0..3, not 4"):
        chip.set_voltage(4, 1.0)
    with pytest.raises(ValueError, match="finite"):
        chip.set_voltage(0, math.nan)


@pytest.fixture
def gpiozero_on_fake_spi(monkeypatch):
    """gpiozero with its hardware-SPI class reading the fake chips, on a pihub pin factory.

    The factory is :func:`reservation_safe`, as every factory pihub makes: gpiozero's
    MCP3xxx need the global ``Device.pin_factory``, restored afterwards.
    """
    import gpiozero  # a test dependency (the test extra): a missing one fails, never skips
    from gpiozero.pins import local
    from gpiozero.pins.mock import MockFactory

    class HardwareSpiMockFactory(reservation_safe(MockFactory)):
        def _get_spi_class(self, shared, hardware):
            return local.LocalPiHardwareSPIShared if shared else local.LocalPiHardwareSPI

    monkeypatch.setattr(local, "SpiDev", functools.partial(FakeSpiDev, registry=BUS))
    saved = gpiozero.Device.pin_factory
    gpiozero.Device.pin_factory = factory = HardwareSpiMockFactory()
    try:
        yield gpiozero
    finally:
        factory.close()
        gpiozero.Device.pin_factory = saved


def test_gpiozero_hardware_spi_reads_the_fake(gpiozero_on_fake_spi):
    """An independent MCP3xxx implementation (gpiozero's, over its spidev class) agrees."""
    gpiozero = gpiozero_on_fake_spi
    c8 = BUS.attach(0, 0, FakeMCP3008(idle_bit=1))
    c12 = BUS.attach(0, 1, FakeMCP3208(idle_bit=1))
    c8.voltages[:] = c12.voltages[:] = VOLTS
    for d in range(8):
        with gpiozero.MCP3008(channel=d) as adc:
            assert adc.raw_value == expected_code(VOLTS[d], 3.3, 10)
        with gpiozero.MCP3208(channel=d, device=1) as adc:
            assert adc.raw_value == expected_code(VOLTS[d], 3.3, 12)
    with gpiozero.MCP3008(channel=2, differential=True) as adc:
        assert adc.raw_value == expected_code(VOLTS[2] - VOLTS[3], 3.3, 10)


def test_a_closed_gpiozero_adc_collected_inside_the_next_reservation(gpiozero_on_fake_spi):
    """A closed MCP3008 leaves its shared SPI interface to the garbage collector (gpiozero's
    SharedMixin refers to itself), and its ``__del__`` releases pins under the factory's
    reservation lock: collected while the next device's reservation holds that lock, it must
    not deadlock, and the next device reads the chip."""
    from gpiozero.pins import BoardInfo

    gpiozero = gpiozero_on_fake_spi
    chip = BUS.attach(0, 0, FakeMCP3008(idle_bit=1))
    chip.voltages[:] = VOLTS

    def next_device() -> int:
        with gpiozero.MCP3008(channel=1) as adc:
            return adc.raw_value

    # A full test run sometimes keeps the closed interface alive past the reservation (a
    # reference this test does not own): the scenario is tried again then, a few times.
    for _ in range(3):
        with gpiozero.MCP3008(channel=0) as adc:
            garbage: list[object] = [adc._spi]  # kept until the collection below: no earlier one frees it
            spi = weakref.ref(adc._spi)
        with collecting_in(BoardInfo, "find_pin", garbage) as found:  # first call: inside reserve_pins
            raw = finishes(next_device, what="the next MCP3008's pin reservation")
        assert found and raw == expected_code(VOLTS[1], 3.3, 10)
        if spi() is None:  # finalized in there: only `garbage` held it, dropped by the first find_pin
            break
    else:
        pytest.fail("the closed interface was never finalized inside the next reservation in 3 tries")


# ---------------------------------------------------------------------- the request builder

def test_request_bytes_match_the_datasheets():
    assert _request(True, 0, 10) == (0x01, 0x80, 0x00)
    assert _request(True, 5, 10) == (0x01, 0xD0, 0x00)
    assert _request(False, 3, 10) == (0x01, 0x30, 0x00)
    assert _request(True, 0, 12) == (0x06, 0x00, 0x00)
    assert _request(True, 7, 12) == (0x07, 0xC0, 0x00)
    assert _request(False, 2, 12) == (0x04, 0x80, 0x00)


# ---------------------------------------------------------------------- the backend

def mock_adc(clock: ManualClock | None = None, **config) -> AdcBackend:
    return AdcBackend({"driver": "mock", **config}, clock=clock)


def test_bus_device_0_0_works_also_under_platypush_names():
    b = mock_adc(spi_port=0, spi_device=0, Vdd=3.3, channels={0: {"name": "light"}})
    assert (b.bus, b.device, b.path) == (0, 0, "/dev/spidev0.0")
    b.chip.voltages[0] = 1.65
    b.open(lambda e: True)
    try:
        assert b.read(0) == {"channel": 0, "name": "light", "raw": 512, "volts": 1.65, "value": 1.65}
    finally:
        b.close()


def test_one_spidev_open_for_many_polls():
    b = mock_adc(poll_interval=0.001)
    b.open(lambda e: True)
    try:
        assert wait_for(lambda: b.polls >= 50)
        for _ in range(10):
            b.read_all()
    finally:
        b.close()
    assert b.fake_bus.opens[(0, 0)] == 1
    assert b.chip.conversions >= 50 * 8
    assert b.chip.last_speed_hz == 1_000_000                      # set after open, not spidev's default


@pytest.mark.parametrize("chip_name", sorted(CHIPS))
def test_backend_reads_raw_and_volts_on_every_chip(chip_name):
    b = mock_adc(chip=chip_name, vref=3.3)
    n, bits = CHIPS[chip_name]
    b.chip.voltages[:] = VOLTS[:n]
    b.open(lambda e: True)
    try:
        got = b.read_all()
    finally:
        b.close()
    assert list(got) == [str(d) for d in range(n)]                # no channels: every input, "0".."7"
    for d in range(n):
        raw = expected_code(VOLTS[d], 3.3, bits)
        assert got[str(d)]["raw"] == raw
        assert got[str(d)]["volts"] == pytest.approx(raw * 3.3 / (1 << bits), abs=1e-6)


def test_backend_differential_mode():
    b = mock_adc(mode="differential", channels={0: "ch0_ch1", 1: "ch1_ch0"}, mock={"voltages": {0: 2.0, 1: 0.5}})
    b.open(lambda e: True)
    try:
        assert b.get_measurement() == {"ch0_ch1": pytest.approx(1.5, abs=0.004), "ch1_ch0": 0.0}
    finally:
        b.close()


def test_backend_masks_high_z_bits():
    b = mock_adc(mock={"idle_bit": 1, "voltages": {2: 1.65}})
    b.open(lambda e: True)
    try:
        assert b.read(2)["raw"] == 512
    finally:
        b.close()


def test_string_channel_keys_shorthand_and_conversion():
    b = mock_adc(channels={"0": {"name": "temp", "conversion": {"scale": 100.0, "offset": -50.0}}, "3": "pot"},
                 mock={"voltages": {0: 0.75, "3": 1.65}})
    assert [(c.number, c.name) for c in b.channels] == [(0, "temp"), (3, "pot")]
    b.open(lambda e: True)
    try:
        temp = b.read("temp")
        assert temp["value"] == pytest.approx(temp["volts"] * 100 - 50) and temp["value"] == pytest.approx(25, abs=0.5)
        assert b.read("3")["name"] == "pot" and b.read(3)["raw"] == 512
    finally:
        b.close()


@pytest.mark.parametrize(("config", "message"), [
    ({"channels": {9: "x"}}, "channels[9]: channel must be in range 0..7, not 9"),
    ({"channels": {"9": "x"}}, "channels.9: channel must be in range 0..7, not 9"),
    ({"chip": "mcp3004", "channels": {4: "x"}}, "channels[4]: channel must be in range 0..3, not 4"),
    ({"channels": {"a": "x"}}, "channels.a: channel must be an int in range 0..7, not 'a'"),
    ({"channels": {0: "a", "0": "b"}}, "channels.0: channel 0 is configured twice (also as 0)"),
    ({"channels": {0: "a", 1: "a"}}, "channels[1].name: name 'a' is already used by channel 0"),
    ({"channels": {0: {"conv_function": "x * 2"}}},
     ("channels[0].conv_function: is not supported (Platypush eval'd it); use conversion: "
      "{scale: S, offset: O} for value = volts * S + O")),
    ({"channels": {0: {"thresholds": [1, 2, 3]}}}, "channels[0].thresholds: [low, high] needs exactly 2 numbers, not 3"),
    ({"thresholds": {"nope": 1}}, "thresholds.nope: no channel is named 'nope'"),
    ({"channels": {0: "a"}, "enabled_sensors": ["b"]}, "enabled_sensors: no channel is named 'b'"),
    ({"mock": {"voltages": {8: 1.0}}}, "mock.voltages[8]: channel must be in range 0..7, not 8"),
    ({"CLK": 11}, "CLK: software SPI (CLK/MISO/MOSI/CS) is not supported"),
    ({"max_speed_hz": 125_000_000}, "max_speed_hz: must be in range 10000..3600000, not 125000000"),
])
def test_bad_configs_name_the_value_and_what_is_allowed(config, message):
    with pytest.raises(ConfigProblems) as e:
        AdcBackend(config)
    assert str(e.value).startswith(message)
    assert isinstance(e.value, ValueError)


def test_per_channel_options_override_the_top_level_ones():
    b = mock_adc(channels={0: {"name": "a", "tolerance": 0.5, "thresholds": [1, 2]}, 1: "b", 2: "c"},
                 tolerance=0.1, thresholds={"b": 3})
    s = b.state
    assert (s.tolerance("a"), s.tolerance("b"), s.tolerance("c")) == (0.5, 0.1, 0.1)
    assert (s.bands["a"].low, s.bands["a"].high, s.bands["b"].high) == (1.0, 2.0, 3.0) and "c" not in s.bands


def test_enabled_sensors_limits_what_is_read():
    b = mock_adc(channels={0: "a", 1: "b"}, enabled_sensors=["b"])
    b.open(lambda e: True)
    try:
        assert wait_for(lambda: b.polls >= 1)
        assert b.get_measurement() == {"b": 0.0}
    finally:
        b.close()
    assert [c.name for c in b.polled] == ["b"]


def test_the_panels_entities_are_the_last_poll_of_each_channel():
    b = mock_adc(channels={0: "light", 1: {"name": "temp", "conversion": {"scale": 100.0, "offset": -50.0}},
                           2: "off"},
                 enabled_sensors=["light", "temp"], mock={"voltages": {0: 1.65, 1: 0.75, 2: 3.0}})
    unread = {"value": None, "volts": None, "raw": None}
    assert b.describe_entities() == [  # before the first poll: no reading, and none is made
        {"name": "light", "channel": 0, "kind": "adc", "polled": True, **unread},
        {"name": "temp", "channel": 1, "kind": "adc", "polled": True, **unread},
        {"name": "off", "channel": 2, "kind": "adc", "polled": False, **unread}]
    b.open(lambda e: True)
    try:
        assert wait_for(lambda: b.polls >= 1)
        b._thread.stop()
        b.set_voltage(0, 3.0)  # not polled: the panel shows the last poll and reads nothing
        assert b.describe_entities() == [
            {"name": "light", "channel": 0, "kind": "adc", "polled": True, "value": 1.65, "volts": 1.65, "raw": 512},
            {"name": "temp", "channel": 1, "kind": "adc", "polled": True, "value": 24.7656, "volts": 0.747656,
             "raw": 232},
            {"name": "off", "channel": 2, "kind": "adc", "polled": False, **unread}]
    finally:
        b.close()


def test_poll_once_feeds_the_sensor_state():
    b = mock_adc(channels={0: {"name": "light", "thresholds": [1.0, 2.0]}}, tolerance=0.05,
                 mock={"voltages": {0: 1.5}})
    got = []
    b.open(lambda e: got.append(e) or True)
    try:
        assert wait_for(lambda: b.polls >= 1)
        b._thread.stop()                  # drive the polls by hand from here
        assert [e.type.name for e in got] == ["SensorDataChangeEvent"]
        names = []
        for v in (2.5, 1.9, 2.1, 1.5, 0.5, 0.52):
            b.set_voltage(0, v)
            names.append([e.type.name.removeprefix("SensorData").removesuffix("Event") for e in b.poll_once()])
    finally:
        b.close()
    assert names == [["Change", "AboveThreshold"], ["Change"], ["Change"], ["Change"],
                     ["Change", "BelowThreshold"], []]
    assert len(got) == 1 + 7 and b.dropped == 0


def test_polls_follow_the_clock_and_the_interval_counts_from_each_polls_start():
    clock = RecordingClock()
    b = AdcBackend({"driver": "mock", "poll_interval": 2.0}, clock=clock)
    polled = b.poll_once

    def slow_poll():  # each poll takes 0.5 s of clock time
        clock.advance(0.5)
        return polled()

    b.poll_once = slow_poll
    b.open(lambda e: True)
    try:
        for n in range(1, 4):
            assert wait_for(lambda n=n: len(clock.waits) == n)
            assert b.polls == n and clock.now() == pytest.approx(0.5 + 2.0 * (n - 1))
            clock.advance(1.5)
        assert clock.waits == [1.5, 1.5, 1.5]
    finally:
        b.close()


@pytest.mark.parametrize(("poll_interval", "waits"), [
    (0.5, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]),   # doubling from 1 s, at most 60 s
    (5.0, [5.0, 5.0, 5.0, 8.0, 16.0, 32.0, 60.0]),         # never shorter than poll_interval
    (100.0, [100.0, 100.0]),
])
def test_failed_reads_back_off_on_the_clock_and_reads_resume(poll_interval, waits):
    clock = RecordingClock()
    b = AdcBackend({"driver": "mock", "poll_interval": poll_interval, "mock": {"idle_bit": 1}}, clock=clock)
    b.chip.connected = False
    b.open(lambda e: True)
    try:
        for n in range(1, len(waits) + 1):
            assert wait_for(lambda n=n: len(clock.waits) == n)
            assert b.errors == n and b.status == BackendStatus.DEGRADED
            assert "null bit" in b.get_status()["error"]
            if n < len(waits):
                clock.advance(clock.waits[-1])
        assert clock.waits == waits
        b.chip.connected = True
        clock.advance(waits[-1])
        assert wait_for(lambda: len(clock.waits) == len(waits) + 1)
        assert clock.waits[-1] == poll_interval  # back to the poll interval
        assert b.polls == 1 and b.error is None and b.status == BackendStatus.RUNNING
    finally:
        b.close()


def test_an_unplugged_chip_raises_from_poll_once():
    b = mock_adc(mock={"idle_bit": 1}, clock=ManualClock())
    b.open(lambda e: True)
    try:
        b.chip.connected = False
        with pytest.raises(AdcNoAnswer, match="no answer from the mcp3008 on /dev/spidev0.0"):
            b.poll_once()
    finally:
        b.close()


def test_set_voltage_needs_the_mock_driver():
    from pihub.errors import ActionError

    b = AdcBackend({"channels": {0: "x"}})
    with pytest.raises(ActionError, match="set_voltage needs driver: mock"):
        b.set_voltage(0, 1.0)
    m = mock_adc()
    with pytest.raises(ActionError, match="channel must be in range 0..7, not 8"):
        m.set_voltage(8, 1.0)
    with pytest.raises(ActionError, match="not open"):
        m.read(0)


def test_status_action():
    b = mock_adc(channels={0: "light"}, mock={"voltages": {0: 1.65}})
    b.open(lambda e: True)
    try:
        assert wait_for(lambda: b.polls >= 1)
        st = b.get_status()
    finally:
        b.close()
    assert st["status"] == "running" and st["device"] == "/dev/spidev0.0" and st["driver"] == "mock"
    assert st["last_poll"]["light"]["raw"] == 512 and st["last"] == {"light": 1.65}
    assert b.describe_status() == {"name": "adc", "status": "stopped", "error": None}


def test_close_unwires_the_fake_chip_and_is_idempotent():
    b = mock_adc()
    b.open(lambda e: True)
    assert b.fake_bus.get(0, 0) is b.chip
    b.close()
    b.close()
    assert b.fake_bus.get(0, 0) is None and b.status == BackendStatus.STOPPED


# ---------------------------------------------------------------------- through a real hub

RIG = """
adc:
  driver: mock
  poll_interval: 0.005
  tolerance: 0.02
  channels:
    0: {name: light, thresholds: [1.0, 2.0]}
    "1": {name: temp, conversion: {scale: 100, offset: -50}}
  mock: {voltages: {0: 1.5, 1: 0.7}}
mock:
  outputs: {lamp: false}
event.hook.bright:
  if: {type: SensorDataAboveThresholdEvent, data: {light: {$gt: 2}}}
  then:
    - action: mock.set
      args: {name: lamp, value: true}
event.hook.dark:
  if: {type: SensorDataBelowThresholdEvent, source: adc}
  then:
    - action: mock.set
      args: {name: lamp, value: false}
"""


def test_events_flow_through_a_real_hub(adc_hub):
    hub = adc_hub(RIG, start=False)
    seen = []
    lock = threading.Lock()

    def listen(e):
        if e.type.name.startswith("SensorData"):
            with lock:
                seen.append((e.type.name, e.args["data"], e.source))

    hub.dispatcher.add_listener(listen)
    hub.start()
    adc = hub.backends["adc"]
    lamp = hub.backends["mock"].outputs
    assert adc.status == BackendStatus.RUNNING
    assert wait_for(lambda: seen)
    name, data, source = seen[0]
    assert name == "SensorDataChangeEvent" and source == "adc"
    assert data["light"] == pytest.approx(1.5, abs=0.004) and data["temp"] == pytest.approx(20, abs=0.5)

    assert hub.execute("adc.set_voltage", {"channel": 0, "volts": 2.5}).ok
    assert wait_for(lambda: lamp["lamp"] is True)
    for v in (1.9, 2.2, 1.95, 2.3):                               # noise around high: no new Above
        hub.execute("adc.set_voltage", {"channel": 0, "volts": v})
        assert wait_for(lambda v=v: adc.last_poll["light"]["volts"] == pytest.approx(v, abs=0.004))
    hub.execute("adc.set_voltage", {"channel": 0, "volts": 0.5})
    assert wait_for(lambda: lamp["lamp"] is False)
    assert hub.flush()
    with lock:
        crossings = [(n, d) for n, d, _ in seen if "Threshold" in n]
    assert [n for n, _ in crossings] == ["SensorDataAboveThresholdEvent", "SensorDataBelowThresholdEvent"]
    assert crossings[0][1] == {"light": pytest.approx(2.5, abs=0.004)}
    assert crossings[1][1] == {"light": pytest.approx(0.5, abs=0.004)}
    out = hub.execute("adc.read", {"channel": "temp"})
    assert out.ok and out.output["name"] == "temp" and out.output["channel"] == 1
    assert hub.execute("adc.status").output["driver"] == "mock"
    assert hub.execute("adc.get_data").output.keys() == {"light", "temp"}
    assert hub.backends["adc"].fake_bus.opens[(0, 0)] == 1


def test_platypush_section_name_and_keys(adc_hub):
    hub = adc_hub("""
        sensor.mcp3008:
          driver: mock
          spi_port: 0
          spi_device: 0
          Vdd: 5.0
          channels: {"0": {name: light}}
    """, start=False)
    adc = hub.backends["adc"]
    assert (adc.bus, adc.device, adc.vref) == (0, 0, 5.0)


def test_bad_channel_is_a_located_config_error(adc_hub):
    with pytest.raises(ConfigError) as e:
        adc_hub("""
            adc:
              driver: mock
              channels: {9: {name: x}}
        """)
    assert "channel must be in range 0..7, not 9" in str(e.value)


def test_spidev_driver_without_the_device_fails_and_the_hub_runs_on(adc_hub):
    need_absent(os.path.exists("/dev/spidev0.0"), "this machine has a real /dev/spidev0.0")
    hub = adc_hub("""
        adc:
          channels: {0: light}
        mock:
          outputs: {lamp: false}
    """)
    adc = hub.backends["adc"]
    assert adc.status == BackendStatus.FAILED_ENVIRONMENT
    assert "/dev/spidev0.0" in adc.error
    with pytest.raises(BackendUnavailable, match="/dev/spidev0.0"):
        adc.validate_environment()
    assert not hub.execute("adc.read", {"channel": 0}).ok
    assert hub.execute("mock.set", {"name": "lamp", "value": True}).ok
    assert hub.backends["mock"].outputs["lamp"] is True


def test_environment_errors_say_what_to_do(monkeypatch):
    import pihub.backends.adc as adcmod

    b = AdcBackend({"bus": 1, "device": 2})
    monkeypatch.setitem(__import__("sys").modules, "spidev", None)      # import fails
    monkeypatch.setattr(adcmod.os.path, "exists", lambda p: False)
    with pytest.raises(BackendUnavailable, match=r"/dev/spidev1\.2 does not exist: enable SPI .*pip install spidev"):
        b.validate_environment()
    monkeypatch.setattr(adcmod.os.path, "exists", lambda p: p == "/dev/spidev1.2")
    with pytest.raises(BackendUnavailable, match="the spidev module is missing: pip install spidev"):
        b.validate_environment()
    monkeypatch.setitem(__import__("sys").modules, "spidev", FakeSpiDev)  # any importable module object
    monkeypatch.setattr(adcmod.os, "access", lambda p, mode: False)
    with pytest.raises(BackendUnavailable, match=r"no permission to use /dev/spidev1\.2: add the user to the 'spi'"):
        b.validate_environment()
    AdcBackend({"driver": "mock"}).validate_environment()                 # the fake needs nothing
