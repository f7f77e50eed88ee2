"""The GPIO backend on gpiozero's MockFactory: pins, inputs, debounce, outputs, loopback, hub.

Inputs are driven with ``MockPin.drive_high()/drive_low()`` (the callback runs on the
driving thread); outputs are read back from the mock pins' ``state``/``states``. Debounce
windows run on a ``ManualClock`` the tests advance (its timers run inside ``advance``);
other waits are bounded (``wait_for``, ``GpioBackend.wait_settled``); nothing asserts a
duration.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pihub_testing import collecting_in, finishes, need_absent, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.gpio import BOARD_TO_BCM, GpioBackend, parse_pin
from pihub.clock import ManualClock
from pihub.errors import ActionError, BackendUnavailable, ConfigError
from pihub.events import Event

ON_A_PI = os.path.exists("/dev/gpiochip0")




class Rig:
    """An open GpioBackend on the mock factory and the events it emitted."""

    def __init__(self, config: dict[str, Any], clock: ManualClock | None = None) -> None:
        self.clock = ManualClock() if clock is None else clock
        self.backend = GpioBackend({"pin_factory": "mock", **config}, clock=self.clock)
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self.backend.validate_environment()
        self.backend.open(self._emit)

    def _emit(self, event: Event) -> bool:
        with self._lock:
            self.events.append(event)
        return True

    def pin(self, spec: int | str) -> Any:
        return self.backend.mock_pin(spec)

    def args(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e.args) for e in self.events]

    def values(self) -> list[int]:
        return [a["value"] for a in self.args()]


@pytest.fixture
def rig() -> Iterator[Callable[[dict[str, Any]], Rig]]:
    rigs: list[Rig] = []

    def make(config: dict[str, Any], clock: ManualClock | None = None) -> Rig:
        r = Rig(config, clock)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.backend.close()


def config_error(config: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as info:
        GpioBackend(config)
    return str(info.value)


# ------------------------------------------------------------------ pins and config


@pytest.mark.parametrize(("spec", "mode", "bcm"), [
    (17, "bcm", 17), ("17", "bcm", 17), ("GPIO17", "bcm", 17), ("gpio17", "bcm", 17), ("BCM17", "bcm", 17),
    ("BOARD11", "bcm", 17), ("J8:11", "bcm", 17), (11, "board", 17), ("GPIO17", "board", 17), (0, "bcm", 0),
    (27, "bcm", 27), (40, "board", 21),
])
def test_pin_spellings_resolve_to_bcm(spec: int | str, mode: str, bcm: int) -> None:
    assert parse_pin(spec, mode) == bcm


def test_board_table_matches_gpiozero_40_pin_header() -> None:
    from gpiozero.pins.mock import MockFactory

    header = MockFactory(revision="a02082").board_info.headers["J8"].pins
    gpios = {n: int(p.name[4:]) for n, p in header.items() if p.name.startswith("GPIO")}
    assert gpios == dict(BOARD_TO_BCM)


ALLOWED = "(use a BCM number 0..27 or a name like 'GPIO17', 'BOARD11')"


@pytest.mark.parametrize(("spec", "mode", "message"), [
    ("GPIO99", "bcm", f"pin 'GPIO99' is not a valid pin {ALLOWED}"),
    (28, "bcm", "pin 28 is not a valid pin (use a BCM number 0..27"),
    (-1, "bcm", "pin -1 is not a valid pin"),
    ("BOARD1", "bcm", "pin 'BOARD1' is a 3V3 pin, not a GPIO"),
    (6, "board", "pin 6 is a GND pin, not a GPIO (mode is board"),
    (41, "board", "pin 41 is not a valid pin (mode is board"),
    (True, "bcm", "pin true is not a valid pin"),
    ("doorbell", "bcm", "pin 'doorbell' is not a valid pin"),
])
def test_bad_pins_name_the_value_and_what_is_allowed(spec: object, mode: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_pin(spec, mode)


def test_bad_pin_in_config_is_a_config_error_at_its_path() -> None:
    msg = config_error({"inputs": {"doorbell": {"pin": "GPIO99"}}})
    assert msg == f"inputs.doorbell.pin: pin 'GPIO99' is not a valid pin {ALLOWED}"


@pytest.mark.parametrize("spelling", [17, "GPIO17", "BCM17", "BOARD11", "J8:11", "gpio17"])
def test_a_pin_used_as_input_and_output_names_both_users(spelling: int | str) -> None:
    msg = config_error({"inputs": {"doorbell": {"pin": 17}}, "outputs": {"porch_light": {"pin": spelling}}})
    assert msg == ("outputs.porch_light.pin: "
                   "pin GPIO17 is used by both 'doorbell' (input) and 'porch_light' (output)")


@pytest.mark.parametrize(("config", "message"), [
    ({"inputs": {"a": {"pin": "BOARD11"}, "b": {"pin": "BCM17"}}},
     "inputs.b.pin: pin GPIO17 is used by both 'a' (input) and 'b' (input)"),
    ({"outputs": {"a": {"pin": 27}, "b": {"pin": "BOARD13"}}},
     "outputs.b.pin: pin GPIO27 is used by both 'a' (output) and 'b' (output)"),
    ({"outputs": {"light": {"pin": 17}}, "monitored_pins": ["GPIO17"]},
     ("monitored_pins[0]: pin GPIO17 is used by both 'light' (output) and 'monitored_pins[0]' "
      "(monitored pin)")),
    ({"inputs": {"door": {"pin": 5}}, "pins": {"led": "BOARD29"}},
     "pins.led: pin GPIO5 is used by both 'door' (input) and 'led' (named pin)"),
    ({"mode": "board", "inputs": {"door": {"pin": 11}}, "outputs": {"lamp": {"pin": 17}}},
     None),  # board 11 is GPIO17, board 17 is 3V3: that one is a bad pin, not a conflict
])
def test_every_reservation_conflict_names_both(config: dict[str, Any], message: str | None) -> None:
    msg = config_error(config)
    if message is None:
        assert msg == ("outputs.lamp.pin: pin 17 is a 3V3 pin, not a GPIO (mode is board: use a header "
                       "position wired to a GPIO, e.g. 11, or a name like 'GPIO17')")
    else:
        assert msg == message


def test_every_problem_is_reported_at_once() -> None:
    msg = config_error({"inputs": {"a": {"pin": "GPIO99"}, "b": {"pin": 4}},
                        "outputs": {"c": {"pin": 4}, "d": {"pin": 5, "initial": 0.5}}})
    assert "inputs.a.pin: pin 'GPIO99'" in msg
    assert "outputs.c.pin: pin GPIO4 is used by both 'b' (input) and 'c' (output)" in msg
    assert "outputs.d.initial: must be false or true (0 or 1) for a digital output, not 0.5" in msg


@pytest.mark.parametrize(("config", "message"), [
    ({"inputs": {"x": {"pin": 4}}, "outputs": {"x": {"pin": 5}}},
     "outputs.x: name 'x' is used by both an input and an output"),
    ({"outputs": {"GPIO5": {"pin": 6}}}, "outputs.GPIO5: name 'GPIO5' looks like a pin; choose another name"),
    ({"outputs": {"fan": {"pin": 6, "frequency": 50}}},
     "outputs.fan.frequency: only applies to kind: pwm outputs"),
    ({"outputs": {"fan": {"pin": 6, "kind": "pwm", "initial": 1.5}}},
     "outputs.fan.initial: must be in range 0..1, not 1.5"),
    ({"mock_wiring": {27: 17}, "inputs": {"a": {"pin": 17}}, "outputs": {"b": {"pin": 27}}},
     "mock_wiring: only works with pin_factory: mock, not 'auto'"),
    ({"pin_factory": "mock", "mock_wiring": {27: 17}, "inputs": {"a": {"pin": 27}},
      "outputs": {"b": {"pin": 17}}},
     "mock_wiring.27: pin GPIO27 is not a configured output"),
    ({"pin_factory": "mock", "mock_wiring": {"b": "GPIO99"}, "inputs": {"a": {"pin": 17}},
      "outputs": {"b": {"pin": 27}}}, "mock_wiring.b: pin 'GPIO99' is not a valid pin"),
    ({"pin_factory": "mock", "mock_wiring": {27: 17, 22: "a"}, "inputs": {"a": {"pin": 17}},
      "outputs": {"b": {"pin": 27}, "c": {"pin": 22}}},
     "mock_wiring.22: input GPIO17 is already wired to output GPIO27 (one output per input)"),
    ({"pin_factory": "wiringpi"},
     "pin_factory: must be one of 'auto', 'lgpio', 'rpigpio', 'pigpio', 'native', 'mock', not 'wiringpi'"),
    ({"inputs": {"a": {"pin": 4, "edges": "up"}}},
     "inputs.a.edges: must be one of 'both', 'rising', 'falling'"),
])
def test_config_errors(config: dict[str, Any], message: str) -> None:
    assert config_error(config).startswith(message)


def test_the_section_is_validated_without_importing_gpiozero() -> None:
    code = ("import sys; from pihub.backends.gpio import GpioBackend;"
            "GpioBackend({'pin_factory': 'lgpio', 'inputs': {'a': {'pin': 'BOARD11'}},"
            " 'outputs': {'b': {'pin': 27}}});"
            "assert 'gpiozero' not in sys.modules, 'gpiozero imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_platypush_numbering_warns_unless_mode_is_set(caplog: pytest.LogCaptureFixture) -> None:
    GpioBackend({"pins": {"led": 5}})
    assert "set gpio.mode: board to keep a Platypush config's numbering" in caplog.text
    caplog.clear()
    GpioBackend({"pins": {"led": 5}, "mode": "bcm"})
    assert "Platypush" not in caplog.text


def test_schema_describes_itself_as_json() -> None:
    import json

    d = GpioBackend.config_schema.describe()
    json.dumps(d)
    assert d["properties"]["inputs"]["additionalProperties"]["properties"]["edges"]["enum"] == [
        "both", "rising", "falling"]


# ------------------------------------------------------------------ inputs


def test_pull_up_input_reports_press_and_release(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"doorbell": {"pin": 17, "pull": "up", "bounce_time": 0}}})
    pin = r.pin("doorbell")
    assert pin.state is True and r.events == []  # pulled up, nothing happened yet
    pin.drive_low()
    pin.drive_high()
    assert r.args() == [{"pin": 17, "value": 0, "name": "doorbell"},
                        {"pin": 17, "value": 1, "name": "doorbell"}]
    assert all(e.type.name == "GPIOEvent" and e.source == "gpio" and e.ts_ns > 0 for e in r.events)


def test_pull_down_input_and_active_state_false(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"pir": {"pin": "GPIO22", "pull": "down", "bounce_time": 0},
                        "button": {"pin": "BOARD11", "pull": "up", "active_state": False, "bounce_time": 0}}})
    assert r.pin(22).state is False
    r.pin(22).drive_high()
    r.pin("button").drive_low()  # pressed: low, active_state false -> value 1
    assert r.args() == [{"pin": 22, "value": 1, "name": "pir"}, {"pin": 17, "value": 1, "name": "button"}]
    assert r.backend.read("button") == {"name": "button", "pin": 17, "value": 1, "method": "read"}


@pytest.mark.parametrize(("edges", "expected"),
                         [("both", [1, 0, 1, 0]), ("rising", [1, 1]), ("falling", [0, 0])])
def test_edge_selection(rig: Callable[..., Rig], edges: str, expected: list[int]) -> None:
    r = rig({"inputs": {"s": {"pin": 4, "edges": edges, "bounce_time": 0}}})
    for _ in range(2):
        r.pin(4).drive_high()
        r.pin(4).drive_low()
    assert r.values() == expected


def test_board_mode_events_carry_board_numbers(rig: Callable[..., Rig]) -> None:
    r = rig({"mode": "board", "inputs": {"door": {"pin": 11, "bounce_time": 0}}})
    r.pin("GPIO17").drive_high()
    assert r.args() == [{"pin": 11, "value": 1, "name": "door"}]


def test_platypush_monitored_pins_keep_platypush_event_format(rig: Callable[..., Rig]) -> None:
    r = rig({"mode": "bcm", "bounce_time": 0, "pins": {"button": 6, "led": 5},
             "monitored_pins": ["button", 26]})
    assert r.pin(6).state is False and r.pin(26).state is False  # Platypush pulls monitored pins down
    r.pin(6).drive_high()
    r.pin(26).drive_high()
    assert r.args() == [{"pin": "button", "value": 1, "name": "button"}, {"pin": 26, "value": 1}]


def test_platypush_named_pin_is_set_up_on_first_use(rig: Callable[..., Rig]) -> None:
    r = rig({"mode": "bcm", "pins": {"led": 5, "probe": 12}})
    assert r.backend.read("probe")["value"] == 0  # a floating input until something drives it
    r.pin(12).drive_high()
    assert r.backend.read("probe") == {"name": "probe", "pin": 12, "value": 1, "method": "read"}
    assert r.backend.read("led")["value"] == 0  # a read first makes it an input...
    assert r.backend.write("led", 1, name="porch") == {"name": "porch", "pin": 5, "value": 1,
                                                       "method": "write"}
    assert r.pin(5).state == 1 and r.pin(5).function == "output"  # ...a write an output
    assert [x["name"] for x in r.backend.read_all()] == ["led", "probe"]


# ------------------------------------------------------------------ debounce


def test_a_burst_of_bounces_gives_one_event(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 0.3}}})
    pin = r.pin(17)
    for _ in range(5):
        pin.drive_high()
        r.clock.advance(0.01)
        pin.drive_low()
        r.clock.advance(0.01)
    pin.drive_high()  # ends high, as the first edge
    assert r.values() == [1]  # the first edge, at once
    assert r.clock.pending()  # the window is open: one timer...
    r.clock.advance(0.3)
    assert r.clock.pending() == []  # ...which closed it
    assert r.values() == [1]  # settled high == reported: no second event


def test_a_burst_ending_elsewhere_is_corrected_when_it_settles(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 0.2}}})
    pin = r.pin(17)
    for _ in range(4):
        pin.drive_high()
        pin.drive_low()  # a pulse shorter than bounce_time, ending low
    assert r.values() == [1]
    r.clock.advance(0.2)
    assert r.values() == [1, 0]  # the last event matches the pin's level
    assert r.backend.read("b")["value"] == 0
    assert r.clock.pending() == [pytest.approx(0.4)]  # the correction opened a window of its own
    r.clock.advance(0.2)
    assert r.clock.pending() == [] and r.values() == [1, 0]


def test_quiet_time_counts_from_the_last_raw_edge(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 0.1}}})
    pin = r.pin(17)
    pin.drive_high()
    r.clock.advance(0.08)
    pin.drive_low()  # 0.08 s into the window: it now ends at 0.18
    r.clock.advance(0.09)  # 0.17: past the first end, not yet quiet for 0.1 s
    assert r.values() == [1]
    r.clock.advance(0.01)
    assert r.values() == [1, 0]


def test_the_window_lasts_until_the_pin_is_quiet(rig: Callable[..., Rig]) -> None:
    # glitches keep coming for longer than bounce_time in all, each well within it of the
    # last: the check waits for quiet, so it never samples the mostly-low middle
    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 0.3}}})
    pin = r.pin(17)
    pin.drive_high()
    pin.drive_low()
    for _ in range(45):  # 0.9 s of glitches, three windows' worth
        r.clock.advance(0.02)
        pin.drive_high()
        pin.drive_low()
        assert len(r.clock.pending()) <= 1  # one timer per input, re-armed, never one per edge
    pin.drive_high()
    r.clock.advance(0.3)
    assert r.clock.pending() == []
    assert r.values() == [1]


def test_after_settling_the_next_edge_is_reported_at_once(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 0.05}}})
    pin = r.pin(17)
    pin.drive_high()
    r.clock.advance(0.05)
    pin.drive_low()
    assert r.values() == [1, 0]


def test_each_input_has_its_own_window(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"a": {"pin": 17, "bounce_time": 0.1}, "b": {"pin": 22, "bounce_time": 0.5}}})
    r.pin(17).drive_high()
    r.clock.advance(0.05)
    r.pin(22).drive_high()
    assert r.clock.pending() == [pytest.approx(0.1), pytest.approx(0.55)]
    r.pin(17).drive_low()  # inside a's window: moves its end, adds no timer
    r.clock.advance(0.2)
    assert [(a["name"], a["value"]) for a in r.args()] == [("a", 1), ("b", 1), ("a", 0)]
    assert r.clock.pending() == [pytest.approx(0.55)]  # a's correction window ended; b's is open


def test_bounce_time_zero_reports_every_change(rig: Callable[..., Rig]) -> None:
    r = rig({"bounce_time": 0, "inputs": {"b": {"pin": 17}}})
    for _ in range(3):
        r.pin(17).drive_high()
        r.pin(17).drive_low()
    assert r.values() == [1, 0, 1, 0, 1, 0]
    assert r.clock.pending() == []  # nothing to settle: no timer


def test_close_cancels_the_window(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 5.0}}})
    pin = r.pin(17)
    pin.drive_high()  # opens a 5 s window: close must not wait for it
    pin.drive_low()
    assert r.clock.pending() == [5.0]
    r.backend.close()
    assert r.clock.pending() == []
    r.clock.advance(10)
    assert r.values() == [1]  # the low level is never reported after close


def test_a_closed_input_is_freed_while_its_timer_waits(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 5.0}}})
    r.pin(17).drive_high()
    inp = weakref.ref(r.backend._inputs[17])  # type: ignore[attr-defined]
    timer = inp().timer  # type: ignore[union-attr]
    r.backend.close()
    assert timer is not None and not timer.active
    assert inp() is None  # the cancelled timer, still queued, holds only a weak reference


def test_windows_close_on_the_system_clock(rig: Callable[..., Rig]) -> None:
    from pihub.clock import SYSTEM

    r = rig({"inputs": {"b": {"pin": 17, "bounce_time": 0.01}}}, clock=SYSTEM)
    r.pin(17).drive_high()
    r.pin(17).drive_low()
    assert r.backend.wait_settled(10)  # the process's timer thread closed both windows
    assert r.values() == [1, 0]


# ------------------------------------------------------------------ outputs


OUTPUTS = {
    "porch_light": {"pin": 27},
    "relay": {"pin": 23, "active_high": False},
    "fan": {"pin": "BOARD12", "kind": "pwm", "initial": 0.1, "frequency": 50},
    "lamp": {"pin": 24, "initial": True},
}


def test_initial_states(rig: Callable[..., Rig]) -> None:
    r = rig({"outputs": OUTPUTS})
    assert r.pin(27).state == 0
    assert r.pin(23).state == 1  # active low relay, off
    assert r.pin(18).state == pytest.approx(0.1) and r.pin(18).frequency == 50
    assert r.pin(24).state == 1


def test_on_off_toggle_drive_the_pin(rig: Callable[..., Rig]) -> None:
    r = rig({"outputs": OUTPUTS})
    b = r.backend
    assert b.on("porch_light") == {"name": "porch_light", "pin": 27, "value": 1, "method": "on"}
    assert r.pin(27).state == 1
    assert b.off(27)["value"] == 0 and r.pin(27).state == 0
    assert b.toggle("GPIO27")["value"] == 1 and r.pin(27).state == 1
    assert b.toggle("porch_light")["value"] == 0 and r.pin(27).state == 0
    assert b.on("relay")["value"] == 1 and r.pin(23).state == 0  # active low: on drives low
    assert b.off("relay")["value"] == 0 and r.pin(23).state == 1
    assert [s.state for s in r.pin(27).states] == [0, 1, 0, 1, 0]


def test_write_and_read_with_platypush_shapes(rig: Callable[..., Rig]) -> None:
    r = rig({"outputs": OUTPUTS})
    b = r.backend
    assert b.write("porch_light", True) == {"name": "porch_light", "pin": 27, "value": 1, "method": "write"}
    assert b.read(27) == {"name": "porch_light", "pin": 27, "value": 1, "method": "read"}
    assert b.write(27, 0, name="x") == {"name": "x", "pin": 27, "value": 0, "method": "write"}
    assert r.pin(27).state == 0
    with pytest.raises(ActionError,
                       match=re.escape("value must be 0 or 1 (or false/true) for 'porch_light', not 0.5")):
        b.write("porch_light", 0.5)
    assert b.write("fan", 0.75)["value"] == pytest.approx(0.75)
    assert r.pin(18).state == pytest.approx(0.75)
    assert b.read("fan")["value"] == pytest.approx(0.75)
    with pytest.raises(ActionError, match=r"^value must be a duty cycle 0..1 for 'fan', not 2.0$"):
        b.write("fan", 2.0)


def test_pwm_values_and_frequency_read_back(rig: Callable[..., Rig]) -> None:
    r = rig({"outputs": OUTPUTS})
    b = r.backend
    out = b.pwm("fan", 0.25, frequency=200)
    assert out == {"name": "fan", "pin": 18, "value": 0.25, "method": "pwm", "frequency": 200}
    assert r.pin(18).state == pytest.approx(0.25) and r.pin(18).frequency == 200
    b.pwm("fan", 0.5)
    assert r.pin(18).state == pytest.approx(0.5) and r.pin(18).frequency == 200
    assert b.toggle("fan")["value"] == pytest.approx(0.5)
    b.pwm("fan", 0.2)
    assert b.toggle("fan")["value"] == pytest.approx(0.8)
    assert b.off("fan")["value"] == 0.0 and r.pin(18).state == 0
    with pytest.raises(ActionError, match=r"^pwm: 'porch_light' is a digital output; pwm works on kind: pwm "
                                          r"outputs \('fan'\)$"):
        b.pwm("porch_light", 0.5)
    with pytest.raises(ActionError, match="^value must be a duty cycle 0..1, not 1.5$"):
        b.pwm("fan", 1.5)
    with pytest.raises(ActionError, match="^frequency must be > 0 Hz, not 0$"):
        b.pwm("fan", 0.5, frequency=0)


def started_threads(fn: Callable[[], Any]) -> tuple[Any, set[threading.Thread]]:
    """``fn()`` and the threads it left running (gpiozero's blink thread, which waits in real time)."""
    before = set(threading.enumerate())
    return fn(), set(threading.enumerate()) - before


def test_blink_runs_in_the_background_n_times(rig: Callable[..., Rig]) -> None:
    r = rig({"outputs": OUTPUTS})
    pin = r.pin(27)
    out, blinkers = started_threads(lambda: r.backend.blink("porch_light", on_time=0.01, off_time=0.01, n=2))
    assert out == {"name": "porch_light", "pin": 27, "method": "blink", "on_time": 0.01, "off_time": 0.01,
                   "n": 2}
    for thread in blinkers:  # none left: it had already ended
        thread.join(10)
        assert not thread.is_alive()
    assert [s.state for s in pin.states] == [0, 1, 0, 1, 0]  # no third cycle


def test_blink_returns_at_once_and_any_write_stops_it(rig: Callable[..., Rig]) -> None:
    r = rig({"outputs": OUTPUTS})
    pin = r.pin(27)
    _, blinkers = started_threads(  # would take minutes in the foreground
        lambda: r.backend.blink("porch_light", on_time=60, off_time=60))
    assert blinkers
    assert wait_for(lambda: pin.state == 1)
    r.backend.off("porch_light")
    assert pin.state == 0
    assert not any(t.is_alive() for t in blinkers)  # stopped, so nothing can write the pin again
    assert [s.state for s in pin.states] == [0, 1, 0]


def test_blink_arguments_are_checked(rig: Callable[..., Rig]) -> None:
    r = rig({"outputs": OUTPUTS})
    with pytest.raises(ActionError, match="^n must be at least 1"):
        r.backend.blink("porch_light", n=0)
    with pytest.raises(ActionError, match="^on_time and off_time must be > 0 seconds, not 0 and 1$"):
        r.backend.blink("porch_light", on_time=0)


def test_read_all(rig: Callable[..., Rig]) -> None:
    r = rig({"bounce_time": 0, "inputs": {"door": {"pin": 17}}, "outputs": OUTPUTS})
    r.pin(17).drive_high()
    assert r.backend.read_all() == [
        {"name": "door", "pin": 17, "value": 1, "method": "read"},
        {"name": "porch_light", "pin": 27, "value": 0, "method": "read"},
        {"name": "relay", "pin": 23, "value": 0, "method": "read"},
        {"name": "fan", "pin": 18, "value": pytest.approx(0.1), "method": "read"},
        {"name": "lamp", "pin": 24, "value": 1, "method": "read"},
    ]
    assert r.backend.get_measurement() == r.backend.read_all()  # Platypush's name for both
    assert r.backend.get_measurement("lamp") == {"name": "lamp", "pin": 24, "value": 1, "method": "read"}


CONFIGURED = "'door' (GPIO17), 'porch_light' (GPIO27)"


@pytest.mark.parametrize(("pin", "message"), [
    ("porch", f"unknown pin 'porch' (configured: {CONFIGURED})"),
    (5, f"pin GPIO5 is not configured (configured: {CONFIGURED}; add it under gpio.inputs or gpio.outputs)"),
    ("GPIO99", f"pin 'GPIO99' is not a valid pin {ALLOWED}; configured: {CONFIGURED}"),
    (99, f"pin 99 is not a valid pin {ALLOWED}; configured: {CONFIGURED}"),
])
def test_unknown_pins_name_the_value_and_list_what_is_configured(rig: Callable[..., Rig], pin: int | str,
                                                                 message: str) -> None:
    r = rig({"inputs": {"door": {"pin": 17}}, "outputs": {"porch_light": {"pin": 27}}})
    with pytest.raises(ActionError) as info:
        r.backend.on(pin)
    assert str(info.value) == message


def test_outputs_actions_refuse_inputs(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"door": {"pin": 17}}, "outputs": {"porch_light": {"pin": 27}}})
    with pytest.raises(ActionError, match=r"^on: 'door' is an input; on works on outputs \('porch_light'\)$"):
        r.backend.on("door")
    assert r.pin(17).function == "input"


def test_actions_need_a_running_backend() -> None:
    b = GpioBackend({"pin_factory": "mock", "outputs": {"porch_light": {"pin": 27}}})
    with pytest.raises(ActionError, match=r"^the gpio backend is not running \(status: configured\)$"):
        b.on("porch_light")


# ------------------------------------------------------------------ loopback (mock_wiring)


def test_mock_wiring_loops_an_output_into_an_input(rig: Callable[..., Rig]) -> None:
    r = rig({"bounce_time": 0, "inputs": {"sense": {"pin": 17}, "sense2": {"pin": 5}},
             "outputs": {"drive": {"pin": 27}, "dim": {"pin": 22, "kind": "pwm"}},
             "mock_wiring": {"drive": "sense", "GPIO22": 5}})
    assert r.events == []  # outputs start off, inputs pulled down: no edge
    r.backend.on("drive")
    r.backend.off("drive")
    r.backend.pwm("dim", 0.3)  # any duty above 0 reads high on the wired input
    r.backend.pwm("dim", 0.0)
    assert r.args() == [{"pin": 17, "value": 1, "name": "sense"}, {"pin": 17, "value": 0, "name": "sense"},
                        {"pin": 5, "value": 1, "name": "sense2"}, {"pin": 5, "value": 0, "name": "sense2"}]


def test_an_outputs_initial_level_on_a_wired_input_is_an_edge_at_open(rig: Callable[..., Rig]) -> None:
    r = rig({"inputs": {"sense": {"pin": 17, "pull": "up"}}, "outputs": {"drive": {"pin": 27}},
             "mock_wiring": {27: 17}})
    assert r.args() == [{"pin": 17, "value": 0, "name": "sense"}]  # the output (low) beats the pull-up


# ------------------------------------------------------------------ factories and lifecycle


def test_lgpio_is_unavailable_here() -> None:
    need_absent(ON_A_PI, "this machine has a GPIO chip")
    b = GpioBackend({"pin_factory": "lgpio", "outputs": {"porch_light": {"pin": 27}}})
    with pytest.raises(BackendUnavailable, match=r"^pin factory 'lgpio' cannot (load|open)"):
        b.validate_environment()
    assert b.pin_factory is None


def test_auto_tries_gpiozeros_order_and_says_why_each_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    need_absent(ON_A_PI, "this machine has a GPIO chip")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    b = GpioBackend({})
    with pytest.raises(BackendUnavailable) as info:
        b.validate_environment()
    msg = str(info.value)
    assert msg.startswith("no pin factory loads on this machine: ")
    positions = [msg.index(f"pin factory {name!r}") for name in ("lgpio", "rpigpio", "pigpio", "native")]
    assert positions == sorted(positions)


def test_auto_honours_gpiozero_pin_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    b = GpioBackend({"outputs": {"fan": {"pin": 18, "kind": "pwm"}}})
    b.open(lambda e: True)
    try:
        assert b.factory_name == "mock"
        b.pwm("fan", 0.5)  # the mock has PWM-capable pins
        assert b.mock_pin("fan").state == 0.5
    finally:
        b.close()


def test_the_global_pin_factory_is_never_touched() -> None:
    from gpiozero import Device

    before = Device.pin_factory
    b = GpioBackend({"pin_factory": "mock", "inputs": {"a": {"pin": 4}}, "outputs": {"b": {"pin": 5}}})
    b.open(lambda e: True)
    assert b.pin_factory is not None and Device.pin_factory is before
    b.close()
    assert Device.pin_factory is before


def test_two_backends_have_separate_factories(rig: Callable[..., Rig]) -> None:
    r1 = rig({"outputs": {"a": {"pin": 27}}})
    r2 = rig({"outputs": {"a": {"pin": 27}}})
    r1.backend.on("a")
    assert r1.pin(27).state == 1 and r2.pin(27).state == 0


def test_close_releases_everything_and_is_idempotent(rig: Callable[..., Rig]) -> None:
    r = rig({"bounce_time": 0, "inputs": {"s": {"pin": 17}}, "outputs": {"d": {"pin": 27, "initial": True}}})
    pin = r.pin(17)
    r.backend.close()
    assert r.backend.status == BackendStatus.STOPPED and r.backend.pin_factory is None
    pin.drive_high()  # the old pin object: nothing listens any more
    assert r.events == []
    r.backend.close()
    assert r.backend.status == BackendStatus.STOPPED
    with pytest.raises(RuntimeError, match="needs gpio.pin_factory: mock and an open backend"):
        r.backend.mock_pin(17)


def test_reopen_after_close(rig: Callable[..., Rig]) -> None:
    r = rig({"bounce_time": 0, "inputs": {"s": {"pin": 17}}})
    r.backend.close()
    r.backend.open(r._emit)
    r.pin(17).drive_high()
    assert r.values() == [1]


@pytest.mark.parametrize("step", ["reserve", "release"])
def test_a_collection_inside_pin_reservation_cannot_deadlock(step: str) -> None:
    """gpiozero closes a device from ``__del__``, which releases its pins under the factory's
    reservation lock; a collection forced while this thread holds that lock (inside
    reserve_pins for a write, release_pins for a close) finalizes an unclosed device there."""
    from gpiozero import InputDevice
    from gpiozero.exc import GPIOPinInUse
    from gpiozero.pins import BoardInfo

    b = GpioBackend({"pin_factory": "mock", "mode": "bcm", "pins": {"led": 5},
                     "outputs": {"lamp": {"pin": 27}}})
    b.open(lambda e: True)
    stray = InputDevice(6, pin_factory=b.pin_factory)  # never closed, and in a reference cycle
    cycle: list[object] = [stray]
    cycle.append(cycle)
    finalized = weakref.ref(stray)
    garbage: list[object] = [cycle]
    del stray, cycle
    act = functools.partial(b.write, "led", 1) if step == "reserve" else b.close
    with collecting_in(BoardInfo, "find_pin", garbage) as found:  # its first call holds the lock
        # on failure b stays open: closing it would wait for the deadlocked lock too
        finishes(act, what=f"{step} with a collection inside")
    assert found[0] > 0 and finalized() is None  # the stray was finalized in there
    if step == "reserve":
        assert b.read("led")["value"] == 1
        with pytest.raises(GPIOPinInUse):  # the reservation taken meanwhile was kept
            InputDevice(5, pin_factory=b.pin_factory)
        b.close()
    assert b.status == BackendStatus.STOPPED


def test_factories_sharing_gpiozeros_lock_share_its_guard() -> None:
    """gpiozero's local Pi factories (lgpio, rpigpio, native) share one class-level
    reservation lock: every pihub factory on it must know which thread holds it."""
    from gpiozero.pins.local import LocalPiFactory

    from pihub.backends.gpio import reservation_safe

    a, b = reservation_safe(LocalPiFactory)(), reservation_safe(LocalPiFactory)()
    with a._res_lock:
        assert b._res_lock.held_here()
        held_elsewhere = finishes(b._res_lock.held_here, what="held_here")
    assert not held_elsewhere and not b._res_lock.held_here()


def test_a_device_that_fails_to_build_keeps_no_pin(rig: Callable[..., Rig],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """gpiozero reserves a pin before its constructor can fail; pihub releases it at once,
    not when the half-built device is garbage collected."""
    from gpiozero.pins.mock import MockPWMPin

    def busy(self: object, state: object) -> None:
        raise OSError(errno.EBUSY, "GPIO busy")

    r = rig({"mode": "bcm", "pins": {"led": 5}})
    monkeypatch.setattr(MockPWMPin, "output_with_state", busy)
    with pytest.raises(OSError) as failed:  # keeps the half-built device reachable (its traceback)
        r.backend.write("led", 1)
    monkeypatch.undo()
    assert failed.value.errno == errno.EBUSY
    assert r.backend.write("led", 1)["value"] == 1
    assert r.pin(5).state == 1


# ------------------------------------------------------------------ through the hub


def test_gpio_is_registered_as_a_backend() -> None:
    from pihub.hub import backend_classes

    assert backend_classes().get("gpio") is GpioBackend, "pyproject: pihub.backends entry point gpio missing"


HUB_RIG = """
gpio:
  pin_factory: mock
  inputs:
    doorbell: {pin: 17, pull: down, bounce_time: 0}
    porch_sense: {pin: 22, bounce_time: 0}
  outputs:
    porch_light: {pin: 27}
  mock_wiring: {porch_light: porch_sense}
event.hook.ring:
  if: {type: GPIOEvent, pin: 17, value: 1}
  then:
    - action: gpio.on
      args: {pin: porch_light}
event.hook.light_seen:
  if: {type: GPIOEvent, name: porch_sense, value: 1}
  then:
    - action: variable.set
      args: {porch_seen: "${pin}"}
"""


def test_edge_to_event_to_hook_to_output(make_hub: Callable[..., Any]) -> None:
    hub = make_hub(HUB_RIG)
    gpio = hub.backends["gpio"]
    assert gpio.status == BackendStatus.RUNNING
    light = gpio.mock_pin("porch_light")
    gpio.mock_pin("doorbell").drive_low()  # already low: no edge
    assert hub.flush()
    assert light.state == 0
    gpio.mock_pin(17).drive_high()
    assert wait_for(lambda: light.state == 1)
    # the output is jumpered to porch_sense: its edge went through the hub as well
    assert wait_for(lambda: hub.execute("variable.get", {"name": "porch_seen"}).output == {"porch_seen": 22})


def test_gpio_actions_through_the_registry(make_hub: Callable[..., Any]) -> None:
    hub = make_hub(HUB_RIG)
    resp = hub.execute("gpio.write", {"pin": "porch_light", "value": 1})
    assert resp.ok and resp.output == {"name": "porch_light", "pin": 27, "value": 1, "method": "write"}
    resp = hub.execute("gpio.read", {"pin": "27"})
    assert resp.output == {"name": "porch_light", "pin": 27, "value": 1, "method": "read"}
    resp = hub.execute("gpio.on", {"pin": "porch"})
    assert not resp.ok and resp.errors[0].startswith("gpio.on: unknown pin 'porch' (configured: 'doorbell'")


def test_an_unavailable_factory_leaves_the_hub_running(make_hub: Callable[..., Any]) -> None:
    need_absent(ON_A_PI, "this machine has a GPIO chip")
    hub = make_hub("""
        gpio:
          pin_factory: lgpio
          outputs: {porch_light: {pin: 27}}
        mock: {}
        event.hook.fallback:
          if: {type: CustomEvent, subtype: ping}
          then:
            - action: mock.set
              args: {name: pong, value: true}
    """)
    gpio = hub.backends["gpio"]
    assert gpio.status == BackendStatus.FAILED_ENVIRONMENT
    assert gpio.error.startswith("pin factory 'lgpio' cannot")
    assert hub.backends["mock"].status == BackendStatus.RUNNING
    resp = hub.execute("gpio.on", {"pin": "porch_light"})
    assert resp.errors == [
        f"gpio.on: the gpio backend is not running (status: failed: unavailable: {gpio.error})"]
    hub.publish(Event.of("CustomEvent", subtype="ping"))
    assert wait_for(lambda: hub.backends["mock"].outputs.get("pong") is True)
    status = {b["name"]: b for b in hub.status()["backends"]}
    assert status["gpio"]["status"] == "failed: unavailable"


def test_a_bad_pin_fails_the_config_with_its_location(make_hub: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError) as info:
        make_hub("""
            gpio:
              pin_factory: mock
              inputs: {doorbell: {pin: 17}}
              outputs: {porch_light: {pin: BOARD11}}
        """)
    assert "pin GPIO17 is used by both 'doorbell' (input) and 'porch_light' (output)" in str(info.value)


def test_the_documented_example_config_works(rig: Callable[..., Rig]) -> None:
    import textwrap

    import yaml

    import pihub.backends.gpio as module

    doc = module.__doc__ or ""
    block = doc.split("Config (section ``gpio``)::\n\n", 1)[1].split("\n\n", 1)[0]
    section = yaml.safe_load(textwrap.dedent(block))["gpio"]
    r = rig(section)
    assert r.backend.factory_name == "mock"
    r.backend.on("porch_light")  # jumpered to doorbell (pull-up, so it was low until now)
    r.clock.advance(1)  # past every debounce window
    assert {"pin": 17, "value": 1, "name": "doorbell"} in r.args()
    assert r.backend.pwm("fan", 0.5)["pin"] == 18
