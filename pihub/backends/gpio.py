"""The GPIO backend: input edges become ``GPIOEvent``; outputs are driven by actions.

Built on gpiozero's device/pin-factory split. The pin factory comes from the config, and
each gpiozero device gets it as ``pin_factory=``: the global ``Device.pin_factory`` is
never read or changed, so several backends (and tests) can each own a factory. gpiozero
is imported only in :meth:`GpioBackend.validate_environment` and :meth:`GpioBackend.open`,
so ``pihub check-config`` validates a ``gpio:`` section on a machine without it. pihub
closes every device it creates (also one whose constructor failed), and its factories
are :func:`reservation_safe`: gpiozero's ``__del__``, run by a garbage collection while
the factory's reservation lock is held, cannot deadlock them.

Config (section ``gpio``)::

    gpio:
      pin_factory: mock        # auto (default) | lgpio | rpigpio | pigpio | native | mock
      mode: bcm                # how bare pin numbers are read: bcm (default) | board
      bounce_time: 0.01        # seconds; default debounce of every input (0 = none)
      inputs:
        doorbell: {pin: 17, pull: up, bounce_time: 0.05, edges: both, active_state: true}
        pir: {pin: GPIO22, pull: down, edges: rising}
      outputs:
        porch_light: {pin: 27, kind: digital, active_high: true, initial: false}
        fan: {pin: BOARD12, kind: pwm, frequency: 100, initial: 0.0}
        relay: {pin: 23, active_high: false}        # an active-low relay board
      mock_wiring: {27: 17}    # pin_factory: mock only: output pin -> input pin jumper
      # Platypush's keys are read too:
      pins: {led: 5, button: 6}
      monitored_pins: [button, 26]

Pins may be written as a number (BCM in ``mode: bcm``, a 40-pin header position in
``mode: board``) or as a name: ``GPIO17``, ``BCM17``, ``BOARD11``, ``J8:11`` (any case).
Every pin is reserved once: the same pin used twice, whatever the spellings, is a config
error naming both users (``pin GPIO17 is used by both 'doorbell' (input) and 'porch_light'
(output)``). Names (the keys of ``inputs``, ``outputs`` and ``pins``) are unique and must
not look like pins.

Options:

* ``pin_factory``: ``auto`` does what gpiozero does: ``$GPIOZERO_PIN_FACTORY`` if set,
  else the first of lgpio, rpigpio, pigpio, native that loads. ``mock`` is gpiozero's
  ``MockFactory`` with PWM-capable pins (``MockPWMPin``), pretending to be a Pi 3B
  (40-pin header); tests and ``make demo`` drive it (see :meth:`GpioBackend.mock_pin`).
* ``mode``: ``bcm`` unless set. Platypush reads numbers as BOARD positions by default:
  a section using Platypush's ``pins``/``monitored_pins`` without ``mode`` logs a warning
  saying so, and ``mode: board`` keeps a Platypush config's numbering.
* ``inputs.NAME``: ``pin`` (required); ``pull``: ``down`` (default, as Platypush),
  ``up`` or ``none`` (floating, for sensors that drive the line); ``bounce_time``:
  seconds, default the section's ``bounce_time`` (see Debounce); ``edges``: which
  changes of ``value`` make events, ``both`` (default), ``rising`` (0 -> 1) or
  ``falling`` (1 -> 0); ``active_state``: ``true`` (default) reports the level as is
  (1 = high, as Platypush), ``false`` inverts it (1 = low: a button to ground with
  ``pull: up`` then reads 1 while pressed).
* ``outputs.NAME``: ``pin`` (required); ``kind``: ``digital`` (default; LEDs, relays)
  or ``pwm`` (duty cycle 0..1); ``active_high``: true (default), false for active-low
  relay boards (``on`` then drives the pin low); ``initial``: the value set at start,
  false/0 (default), true/1, or a duty cycle 0..1 for ``pwm``; ``frequency``: Hz, ``pwm``
  only, default 100.
* ``mock_wiring``: ``{output: input}`` pairs (pins or names), valid only with
  ``pin_factory: mock``: each configured output is jumpered to a configured input with
  gpiozero's ``MockConnectedPin``, so a loopback rig runs without hardware. A PWM output
  reads high on its input whenever its duty cycle is above 0.
* Platypush's ``pins: {NAME: pin}`` names pins, and ``monitored_pins: [pin or NAME]``
  makes inputs of them, as Platypush does: ``pull: down``, ``edges: both``, the section's
  ``bounce_time`` (Platypush has no debounce). A named pin that is not monitored is set
  up when first used, as Platypush does: as an output by a write, as a floating input by
  a read. Monitored pins' events keep Platypush's format: ``pin`` is the pin's name when
  ``pins`` names it, else its number.

Events: ``GPIOEvent{pin, value, name}`` on each accepted change, from gpiozero's (or, on
the mock, the driving) thread. ``pin`` is the pin's number in the section's ``mode``
(``GPIO17``, ``BCM17`` and ``17`` all give ``17`` in bcm mode, ``11`` in board mode) or,
for a named monitored pin, its name; ``value`` is 0 or 1 (after ``active_state``);
``name`` is the input's name (absent for an unnamed monitored pin). Inputs are set up
before outputs, so an output's initial level on a wired input is reported as an edge.

Actions (``pin`` is a configured name, or a configured pin's number or spelling):
``on``, ``off``, ``toggle``, ``write`` (Platypush), ``read`` (Platypush), ``blink``,
``pwm``, ``read_all`` and ``get_measurement`` (Platypush). Platypush's ``cleanup`` is not
offered: pihub releases its pins when it stops. ``read`` and ``write`` return Platypush's
``{name, pin, value, method}``. Pins that are not configured are refused: pihub reserves
its pins at start, where Platypush set any pin up on first use.

Debounce: where the driver filters glitches itself, pihub passes ``bounce_time`` to
gpiozero; elsewhere pihub debounces in software:

========  =================  ===========================================================
factory   done by            behaviour
========  =================  ===========================================================
lgpio     lgpio (kernel)     a level is reported once stable for ``bounce_time``: every
                             event is ``bounce_time`` late, and pulses shorter than it
                             are never reported
pigpio    pigpiod glitch     as lgpio; limited to 0.3 s by pigpio, so a longer
          filter             ``bounce_time`` falls back to pihub's debounce
rpigpio   pihub              leading edge + settle (below); RPi.GPIO's ``bouncetime``
                             drops every edge in the window, so a short press could
                             leave the last reported level wrong
native    pihub              same; gpiozero's native lockout has RPi.GPIO's flaw
mock      pihub              same; gpiozero's ``MockPin`` ignores ``bounce``
========  =================  ===========================================================

pihub's debounce reports the first edge at once, then ignores edges until the pin has
been quiet for ``bounce_time``, then reads the level once more and reports it if it
differs from the last report (which opens a new window)::

    level   ___|^|_|^^|_|^^^^^^^^^^^^^^^^^^^^^^^^^^^^|_|^|_________________________
               ^ event value=1 (at once)             ^ event value=0 (at once)
               |<- ignored ->|<-- quiet bounce_time -->|            (a window per report)
                             check: 1 == last report: nothing

    level   ___|^^^|________________________________   (a real pulse, shorter than bounce)
               ^ value=1  |<-- quiet bounce_time -->^ check: 0 != 1: event value=0

So events come without delay, a burst of bounces gives one event, a pulse shorter than
``bounce_time`` still gives its 1 and its 0, and once the pin has been quiet for
``bounce_time`` the last event's value always equals the pin's level. ``bounce_time: 0``
reports every change as it comes. ``edges`` filters the debounced changes. The settle
checks are timers on the backend's clock (:mod:`pihub.clock`; one pending per input at
most, cancelled by ``close``), so tests step through a window with a ``ManualClock``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, NewType

from pihub.backends.base import Backend, BackendStatus, Emit
from pihub.clock import Clock, Timer
from pihub.config.schema import Field, Schema, dict_of, show
from pihub.errors import ActionError, BackendUnavailable, ConfigProblem, ConfigProblems
from pihub.events import CATALOGUE, Event
from pihub.plugin import action

if TYPE_CHECKING:  # gpiozero is imported lazily at run time (see the module docstring)
    from gpiozero import DigitalOutputDevice, Factory, InputDevice, OutputDevice
    from gpiozero.pins.mock import MockPin

#: A Broadcom GPIO number (0..27 on the 40-pin header): the one identity of a pin.
Bcm = NewType("Bcm", int)

FACTORIES: Final = ("auto", "lgpio", "rpigpio", "pigpio", "native", "mock")
#: gpiozero's own fallback order for ``auto`` (``Device._default_pin_factory``).
AUTO_ORDER: Final = ("lgpio", "rpigpio", "pigpio", "native")
_FACTORY_CLASSES: Final = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory", "pip install lgpio (or apt install python3-lgpio)"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory",
                "pip install RPi.GPIO (or apt install python3-rpi.gpio)"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory", "pip install pigpio, and run pigpiod"),
    "native": ("gpiozero.pins.native", "NativeFactory", "needs a Raspberry Pi with /dev/gpiomem"),
}
#: factories whose driver debounces itself (see the module docstring), with their limit in s.
_DRIVER_DEBOUNCE: Final = {"lgpio": 3600.0, "pigpio": 0.3}
#: the board the mock factory pretends to be: a Pi 3B, 40-pin header.
MOCK_REVISION: Final = "a02082"

#: 40-pin header position -> BCM number (the same on every 40-pin Pi, Zero to Pi 5).
BOARD_TO_BCM: Final[Mapping[int, int]] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10, 21: 9,
    22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26,
    38: 20, 40: 21,
}
BCM_TO_BOARD: Final[Mapping[int, int]] = {bcm: board for board, bcm in BOARD_TO_BCM.items()}
_POWER_PINS: Final[Mapping[int, str]] = {
    1: "3V3", 17: "3V3", 2: "5V", 4: "5V", 6: "GND", 9: "GND", 14: "GND", 20: "GND", 25: "GND", 30: "GND",
    34: "GND", 39: "GND",
}
_PIN_SPELLING: Final = re.compile(r"^(GPIO|BCM|BOARD|J8:)?(\d+)$")
_HINT_BCM: Final = "use a BCM number 0..27 or a name like 'GPIO17', 'BOARD11'"
_HINT_BOARD: Final = "mode is board: use a header position wired to a GPIO, e.g. 11, or a name like 'GPIO17'"

_GPIO_EVENT: Final = CATALOGUE.get("GPIOEvent")

Kind = Literal["input", "output", "pin"]


def parse_pin(spec: object, mode: str = "bcm") -> Bcm:
    """Turn a pin as written in the config or an action into its BCM number.

    Args:
        spec: an int (BCM in ``mode: bcm``, header position in ``mode: board``), a string
            of digits (read the same way) or a name: ``GPIO17``, ``BCM17``, ``BOARD11``,
            ``J8:11``, in any case.
        mode: ``bcm`` or ``board``.

    Returns:
        The BCM number, 0..27.

    Raises:
        ValueError: the spec names no GPIO of the 40-pin header; the message names it
            and says what is allowed.
    """
    board: int | None = None
    bcm: int | None = None
    if isinstance(spec, int) and not isinstance(spec, bool):
        number, prefix = spec, ""
    elif isinstance(spec, str) and (m := _PIN_SPELLING.match(spec.strip().upper())):
        prefix, number = m.group(1) or "", int(m.group(2))
    else:
        raise ValueError(f"pin {show(spec)} is not a valid pin ({_hint(mode)})")
    if prefix in ("GPIO", "BCM") or (not prefix and mode == "bcm"):
        bcm = number
    else:
        board = number
    if board is not None:
        if board in _POWER_PINS:
            raise ValueError(f"pin {show(spec)} is a {_POWER_PINS[board]} pin, not a GPIO ({_hint(mode)})")
        bcm = BOARD_TO_BCM.get(board)
    if bcm is None or bcm not in BCM_TO_BOARD:
        raise ValueError(f"pin {show(spec)} is not a valid pin ({_hint(mode)})")
    return Bcm(bcm)


def _hint(mode: str) -> str:
    """What pins look like in ``mode``, for error messages."""
    return _HINT_BOARD if mode == "board" else _HINT_BCM


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: ``an input``, ``a named pin``."""
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _is_pin_spelling(name: str) -> bool:
    """True if ``name`` reads as a pin (``GPIO5``, ``12``...) in some mode."""
    return bool(_PIN_SPELLING.match(name.strip().upper()))


def pin_label(bcm: Bcm) -> str:
    """The canonical name of a pin in messages: ``GPIO17``."""
    return f"GPIO{bcm}"


# --------------------------------------------------------------------------------------
# Config

_PIN_DOC = "BCM number (header position in mode: board) or a name: GPIO17, BCM17, BOARD11, J8:11"

INPUT_SCHEMA: Final = Schema(
    {
        "pin": Field((int, str), doc=_PIN_DOC),
        "pull": Field(str, "down", choices=("up", "down", "none"), doc="internal resistor; none = floating"),
        "bounce_time": Field(float, None, min=0.0, max=60.0,
                             doc="debounce in seconds (0 = none); default: the section's bounce_time"),
        "edges": Field(str, "both", choices=("both", "rising", "falling"),
                       doc="which changes of value make events"),
        "active_state": Field(bool, True, doc="true: value 1 = high (Platypush); false: value 1 = low"),
    },
    doc="An input pin that reports its edges as GPIOEvent.",
)
OUTPUT_SCHEMA: Final = Schema(
    {
        "pin": Field((int, str), doc=_PIN_DOC),
        "kind": Field(str, "digital", choices=("digital", "pwm"), doc="digital (on/off) or pwm (duty 0..1)"),
        "active_high": Field(bool, True, doc="false for active-low devices: on drives the pin low"),
        "initial": Field((bool, float), False, doc="value at start: false/true, or a duty 0..1 for pwm"),
        "frequency": Field(float, None, min=0.001, max=1_000_000.0, doc="pwm frequency in Hz (default 100)"),
    },
    doc="An output pin driven by the gpio actions.",
)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input, resolved from the config.

    Attributes:
        name: the input's name, or None for an unnamed monitored pin.
        bcm: the pin.
        event_pin: what events carry as ``pin`` (number in the section's mode, or a
            Platypush name).
        pull: ``up``, ``down`` or ``none``.
        bounce_time: debounce in seconds (0 = none).
        edges: ``both``, ``rising`` or ``falling``.
        active_state: True when value 1 means high.
    """

    name: str | None
    bcm: Bcm
    event_pin: int | str
    pull: str
    bounce_time: float
    edges: str
    active_state: bool


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One output, resolved from the config.

    Attributes:
        name: the output's name.
        bcm: the pin.
        number: the pin's number in the section's mode.
        kind: ``digital`` or ``pwm``.
        active_high: False for active-low devices.
        initial: the value at start, 0..1 (0 or 1 for digital).
        frequency: PWM frequency in Hz (None for digital).
    """

    name: str
    bcm: Bcm
    number: int
    kind: str
    active_high: bool
    initial: float
    frequency: float | None


@dataclass(frozen=True, slots=True)
class GpioConfig:
    """The whole ``gpio`` section, resolved: every pin a BCM number, reserved once.

    Attributes:
        pin_factory: one of :data:`FACTORIES`.
        mode: ``bcm`` or ``board``.
        inputs: input specs in config order (``inputs``, then ``monitored_pins``).
        outputs: output specs in config order.
        lazy: Platypush ``pins`` entries not monitored: name -> BCM, set up on first use.
        wiring: mock jumpers, output BCM -> input BCM.
        platypush_numbering: Platypush's ``pins``/``monitored_pins`` are used without
            ``mode``, whose default differs from Platypush's (a warning is logged).
    """

    pin_factory: str
    mode: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    lazy: Mapping[str, Bcm]
    wiring: Mapping[Bcm, Bcm]
    platypush_numbering: bool

    def number(self, bcm: Bcm) -> int:
        """The number of ``bcm`` in this section's mode (what events and replies carry)."""
        return BCM_TO_BOARD[bcm] if self.mode == "board" else int(bcm)


def resolve_config(values: Mapping[str, Any]) -> GpioConfig:
    """Check a validated ``gpio`` section's pins and names and resolve them.

    Args:
        values: the section as validated by :data:`GpioBackend.config_schema`.

    Returns:
        The resolved config.

    Raises:
        ConfigProblems: every problem found, each located under the section
            (``inputs.doorbell.pin: pin 'GPIO99' is not a valid pin (...)``).
    """
    problems: list[ConfigProblem] = []
    mode = values.get("mode") or "bcm"
    factory = values["pin_factory"]
    owners: dict[Bcm, tuple[str, str]] = {}  # bcm -> (user name, role)
    names: dict[str, str] = {}  # name -> role

    def claim_name(name: str, role: str, path: tuple[str | int, ...]) -> bool:
        """Record ``name`` as taken by a ``role``; False (and a problem) if it cannot be."""
        if _is_pin_spelling(name):
            problems.append(ConfigProblem(path, f"name {name!r} looks like a pin; choose another name"))
            return False
        if name in names:
            problems.append(ConfigProblem(
                path, f"name {name!r} is used by both {_a(names[name])} and {_a(role)}"))
            return False
        names[name] = role
        return True

    def reserve(bcm: Bcm, user: str, role: str, path: tuple[str | int, ...]) -> bool:
        """Reserve ``bcm`` for ``user``; False (and a problem naming both users) if taken."""
        if bcm in owners:
            other, other_role = owners[bcm]
            problems.append(ConfigProblem(
                path, f"pin {pin_label(bcm)} is used by both {other!r} ({other_role}) and {user!r} ({role})"))
            return False
        owners[bcm] = (user, role)
        return True

    def claim_pin(raw: object, user: str, role: str, path: tuple[str | int, ...]) -> Bcm | None:
        """Parse and reserve a pin as written; None (and a problem) if bad or taken."""
        try:
            bcm = parse_pin(raw, mode)
        except ValueError as e:
            problems.append(ConfigProblem(path, str(e)))
            return None
        return bcm if reserve(bcm, user, role, path) else None

    def number(bcm: Bcm) -> int:
        """``bcm`` numbered in this section's mode."""
        return BCM_TO_BOARD[bcm] if mode == "board" else int(bcm)

    inputs: list[InputSpec] = []
    default_bounce = float(values.get("bounce_time", 0.01))
    for name, opts in values.get("inputs", {}).items():
        path = ("inputs", name)
        claim_name(name, "input", path)
        bcm = claim_pin(opts["pin"], name, "input", (*path, "pin"))
        if bcm is None:
            continue
        bounce = opts.get("bounce_time")
        inputs.append(InputSpec(name, bcm, number(bcm), opts["pull"],
                                default_bounce if bounce is None else float(bounce),
                                opts["edges"], opts["active_state"]))

    outputs: list[OutputSpec] = []
    for name, opts in values.get("outputs", {}).items():
        path = ("outputs", name)
        claim_name(name, "output", path)
        bcm = claim_pin(opts["pin"], name, "output", (*path, "pin"))
        initial = opts["initial"]
        value = float(initial)
        kind = opts["kind"]
        if not 0.0 <= value <= 1.0:
            problems.append(ConfigProblem((*path, "initial"), f"must be in range 0..1, not {show(initial)}"))
        elif kind == "digital" and value not in (0.0, 1.0):
            problems.append(ConfigProblem(
                (*path, "initial"),
                f"must be false or true (0 or 1) for a digital output, not {show(initial)}"
                " (use kind: pwm for a duty cycle)"))
        frequency = opts.get("frequency")
        if kind == "digital" and frequency is not None:
            problems.append(ConfigProblem((*path, "frequency"), "only applies to kind: pwm outputs"))
        if bcm is None:
            continue
        if kind == "pwm":
            frequency = 100.0 if frequency is None else float(frequency)
        outputs.append(OutputSpec(name, bcm, number(bcm), kind, opts["active_high"], value, frequency))

    # Platypush: pins {NAME: pin} names pins; monitored_pins [pin or NAME] makes inputs.
    named: dict[str, Bcm] = {}
    for name, raw in values.get("pins", {}).items():
        path = ("pins", name)
        if not claim_name(name, "named pin", path):
            continue
        try:
            named[name] = parse_pin(raw, mode)
        except ValueError as e:
            problems.append(ConfigProblem(path, str(e)))
    by_bcm = {bcm: name for name, bcm in named.items()}
    monitored: set[Bcm] = set()
    for i, raw in enumerate(values.get("monitored_pins", [])):
        path = ("monitored_pins", i)
        if isinstance(raw, str) and raw in named:
            bcm = named[raw]
        else:
            try:
                bcm = parse_pin(raw, mode)
            except ValueError as e:
                msg = str(e)
                if named:
                    msg = msg[:-1] + f", or a name from pins: {', '.join(map(repr, named))})"
                problems.append(ConfigProblem(path, msg))
                continue
        assert bcm is not None
        if bcm in monitored:
            problems.append(ConfigProblem(path, f"pin {pin_label(bcm)} is listed twice in monitored_pins"))
            continue
        monitored.add(bcm)
        pname = by_bcm.get(bcm)
        user = pname if pname is not None else f"monitored_pins[{i}]"
        if not reserve(bcm, user, "monitored pin", path):
            continue
        inputs.append(InputSpec(pname, bcm, pname if pname is not None else number(bcm), "down",
                                default_bounce, "both", True))
    lazy: dict[str, Bcm] = {}
    for name, bcm in named.items():
        if bcm in monitored:
            continue
        if reserve(bcm, name, "named pin", ("pins", name)):
            lazy[name] = bcm

    wiring: dict[Bcm, Bcm] = {}
    raw_wiring = values.get("mock_wiring") or {}
    if raw_wiring and factory != "mock":
        problems.append(ConfigProblem(("mock_wiring",),
                                      f"only works with pin_factory: mock, not {factory!r}"))
    elif raw_wiring:
        out_by = {o.name: o.bcm for o in outputs} | {pin_label(o.bcm): o.bcm for o in outputs}
        in_by = {i.name: i.bcm for i in inputs if i.name} | {pin_label(i.bcm): i.bcm for i in inputs}
        wired_inputs: dict[Bcm, Bcm] = {}
        for out_raw, in_raw in raw_wiring.items():
            path = ("mock_wiring", str(out_raw))
            out_bcm = _wiring_end(out_raw, out_by, mode, "output", path, problems)
            in_bcm = _wiring_end(in_raw, in_by, mode, "input", path, problems)
            if out_bcm is None or in_bcm is None:
                continue
            if in_bcm in wired_inputs:
                problems.append(ConfigProblem(
                    path,
                    f"input {pin_label(in_bcm)} is already wired to output {pin_label(wired_inputs[in_bcm])}"
                    " (one output per input)"))
                continue
            wired_inputs[in_bcm] = out_bcm
            wiring[out_bcm] = in_bcm
    if problems:
        raise ConfigProblems(problems)
    return GpioConfig(factory, mode, tuple(inputs), tuple(outputs), lazy, wiring,
                      bool(values.get("pins") or values.get("monitored_pins")) and values.get("mode") is None)


def _wiring_end(raw: object, configured: Mapping[str, Bcm], mode: str, role: str,
                path: tuple[str | int, ...], problems: list[ConfigProblem]) -> Bcm | None:
    """Resolve one end of a ``mock_wiring`` pair to a configured ``role`` pin, or report why not."""
    if isinstance(raw, str) and raw in configured:
        return configured[raw]
    try:
        bcm = parse_pin(raw, mode)
    except ValueError as e:
        problems.append(ConfigProblem(path, str(e)))
        return None
    if pin_label(bcm) not in configured:
        known = ", ".join(repr(n) for n in configured if not n.startswith("GPIO")) or "none"
        problems.append(ConfigProblem(
            path, f"pin {pin_label(bcm)} is not a configured {role} (mock_wiring connects an output to an"
            f" input; {role}s: {known})"))
        return None
    return bcm


# --------------------------------------------------------------------------------------
# Runtime: one object per input; debounce windows are timers on the backend's clock

#: seconds by which a window's end may differ from its timer's due time through float
#: rounding (rescheduling by less could loop without time moving on).
_SLACK: Final = 1e-6


class _Input:
    """An open input: the gpiozero device, its debounce state and its event template.

    Pin callbacks (:meth:`pin_changed`) come from the driver's thread (or, on the mock,
    the thread that drives the pin); :meth:`settle` from the clock's timer thread. Both run
    under ``lock``, which also orders this input's events. At most one timer is pending per
    input: edges inside a window only move its end, and the timer re-arms itself for the
    rest. Window arithmetic is in the clock's seconds; event timestamps (``ts_ns``, which
    latency metrics compare across threads) stay on ``time.monotonic_ns``.
    """

    def __init__(self, spec: InputSpec, device: InputDevice, software_bounce: float,
                 clock: Clock, settled: threading.Condition, emit: Emit) -> None:
        """Start tracking ``device``; ``software_bounce`` in seconds (0: driver or none).

        ``settled`` is notified (under its own lock) whenever a window closes.
        """
        self.spec = spec
        self.device = device
        self.pin = device.pin
        self.lock = threading.RLock()
        self.bounce = software_bounce
        self.clock = clock
        self.settled = settled
        self.emit: Emit | None = emit
        self.reported = self.level()
        self.window_end: float | None = None  # clock seconds; None = no debounce window open
        self.timer: Timer | None = None
        self.args_base: dict[str, Any] = {"pin": spec.event_pin}
        self.fires_on = {"both": (0, 1), "rising": (1,), "falling": (0,)}[spec.edges]

    def level(self) -> int:
        """The pin's level now: 1 high, 0 low."""
        return 1 if self.pin.state else 0

    def value(self, level: int) -> int:
        """The event value of ``level``: the level, inverted when ``active_state`` is false."""
        return level if self.spec.active_state else 1 - level

    def pin_changed(self, ticks: object, state: object) -> None:
        """gpiozero's ``Pin.when_changed(ticks, state)``: one raw edge (``state`` truthy = high)."""
        level = 1 if state else 0
        ts_ns = time.monotonic_ns()  # the edge's time, before any wait for the lock
        with self.lock:
            if self.window_end is not None:
                # quiet time counts from the last raw edge; the pending timer re-arms for it
                self.window_end = self.clock.now() + self.bounce
                return
            if level == self.reported:
                return
            self.reported = level
            self._fire(level, ts_ns)  # before arming: waking the timer thread costs the GIL
            if self.bounce and self.emit is not None:
                self._arm(self.bounce)

    def _arm(self, delay: float) -> None:
        """Open (or keep open) the window for ``delay`` s from now (caller holds ``lock``)."""
        self.window_end = self.clock.now() + delay
        # a weak reference: a cancelled timer waits in the clock's queue until its due
        # time, and must not keep a closed input (and its device) alive until then
        self.timer = self.clock.call_later(delay, _settle_ref, weakref.ref(self))

    def settle(self) -> None:
        """The window's timer (clock's timer thread): re-arm for late edges, else check the level.

        A level that moved since the last report is reported and opens a new window.
        """
        with self.lock:
            self.timer = None
            end = self.window_end
            if end is None or self.emit is None:
                return
            left = end - self.clock.now()
            if left > _SLACK:
                self.timer = self.clock.call_later(left, _settle_ref, weakref.ref(self))
                return
            self.window_end = None
            level = self.level()
            if level != self.reported:
                self.reported = level
                self._fire(level, time.monotonic_ns())
                self._arm(self.bounce)
                return
        with self.settled:
            self.settled.notify_all()

    def _fire(self, level: int, ts_ns: int) -> None:
        """Emit the event for a debounced change to ``level`` at ``ts_ns`` (caller holds ``lock``)."""
        value = self.value(level)
        if value not in self.fires_on or self.emit is None:
            return
        args = {**self.args_base, "value": value}
        if self.spec.name is not None:
            args["name"] = self.spec.name
        self.emit(Event(_GPIO_EVENT, args, ts_ns, GpioBackend.name))

    def detach(self) -> None:
        """Stop reporting: no event is emitted once this returns, and no timer is pending.

        Taking ``lock`` waits for a callback (or timer) already running on another thread;
        the pin's callback itself is removed when the device closes.
        """
        with self.lock:
            self.emit = None
            self.window_end = None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        with self.settled:
            self.settled.notify_all()


def _settle_ref(ref: weakref.ref[_Input]) -> None:
    """Timer callback: :meth:`_Input.settle` of the input, unless it is gone."""
    inp = ref()
    if inp is not None:
        inp.settle()


@dataclass(slots=True)
class _Output:
    """An open output: its spec and gpiozero device (DigitalOutputDevice or PWMOutputDevice)."""

    spec: OutputSpec
    device: OutputDevice


@dataclass(slots=True)
class _Lazy:
    """A Platypush ``pins`` entry: set up as an output by a write, as an input by a read."""

    name: str
    bcm: Bcm
    number: int
    device: InputDevice | DigitalOutputDevice | None = None
    is_output: bool = False


@dataclass(frozen=True, slots=True)
class _Target:
    """What an action's ``pin`` argument resolved to."""

    kind: Kind
    name: str
    number: int
    obj: Any


# --------------------------------------------------------------------------------------
# Pin reservations that a garbage collection cannot deadlock
#
# gpiozero closes a device from its __del__, and close() releases the device's pins under
# the factory's reservation lock, a plain (non-reentrant) threading.Lock. A collection can
# start at any allocation, also inside reserve_pins()/release_pins() while this thread
# holds that lock; a device finalized there calls release_pins() and waits forever for the
# lock its own thread holds. pihub closes every device it creates (see _new_device), but it
# cannot keep gpiozero from leaving finalizable devices behind: a shared SPI interface
# (SharedMixin, as under gpiozero's MCP3xxx) keeps a `close` closure that refers to
# itself, so even after close() only the collector frees it, and its __del__ releases
# its pins again.
#
# An RLock would not be a fix: reserve_pins() evaluates `self._reservations[pin]` and
# only then allocates `ref(requester)`; a release re-entering there replaces that list,
# so the new reservation would be appended to a discarded list and silently lost.
# Instead a release that re-enters on the thread holding the lock is deferred until the
# lock is released. Nothing is lost by waiting: when the collector finalizes a device it
# has already cleared the weak references gpiozero keeps reservations by, so
# reserve_pins() already treats that device's pins as free.


class _ReservationLock:
    """A gpiozero factory's reservation lock that runs re-entrant releases after it is released.

    Drop-in for the ``threading.Lock`` gpiozero keeps as ``Factory._res_lock`` (used as a
    context manager, and by :meth:`acquire`/:meth:`release`).
    """

    __slots__ = ("__weakref__", "_deferred", "_lock", "_owner")

    def __init__(self, lock: Any) -> None:
        """Wrap ``lock`` (the factory's own lock, which keeps doing the locking)."""
        self._lock = lock
        self._owner: int | None = None
        self._deferred: list[Callable[[], object]] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As ``Lock.acquire``; ``timeout`` in seconds (-1: none)."""
        if not self._lock.acquire(blocking, timeout):
            return False
        # nothing from acquiring to recording the owner allocates, so no collection runs here
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        """As ``Lock.release``, then run the releases deferred while it was held."""
        self._owner = None
        self._lock.release()
        while self._deferred:
            try:
                deferred = self._deferred.pop()
            except IndexError:  # another thread's release() ran it
                break
            deferred()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def locked(self) -> bool:
        """True while some thread holds the lock."""
        return bool(self._lock.locked())

    def held_here(self) -> bool:
        """True when the calling thread holds the lock (so acquiring it would deadlock)."""
        return self._owner == threading.get_ident()

    def after_release(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once the lock is released (caller holds it: see :meth:`held_here`)."""
        self._deferred.append(fn)


#: one guard per underlying lock: gpiozero's local Pi factories share one class-level lock
_GUARDS: weakref.WeakValueDictionary[int, _ReservationLock] = weakref.WeakValueDictionary()
_GUARDS_LOCK = threading.Lock()


def _guard(lock: Any) -> _ReservationLock:
    """The :class:`_ReservationLock` of gpiozero lock ``lock`` (one per lock)."""
    if isinstance(lock, _ReservationLock):
        return lock
    with _GUARDS_LOCK:
        guard = _GUARDS.get(id(lock))  # the guard holds its lock, so the id is not reused meanwhile
        if guard is None:
            guard = _GUARDS[id(lock)] = _ReservationLock(lock)
        return guard


class _SafeReservations:
    """Mixin over a gpiozero ``Factory`` class: see the comment above and :func:`reservation_safe`."""

    _res_lock: _ReservationLock

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._res_lock = _guard(self._res_lock)
        self._recording = threading.local()

    def reserve_pins(self, requester: Any, *names: Any) -> None:
        """gpiozero's, also noting ``requester`` for :meth:`recording_reservers`."""
        super().reserve_pins(requester, *names)  # type: ignore[misc]  # super() is the gpiozero Factory
        made = getattr(self._recording, "reservers", None)
        if made is not None:
            made.append(requester)

    def release_pins(self, reserver: Any, *names: Any) -> None:
        """gpiozero's; deferred when it re-enters (a finalizer) on the thread holding the lock."""
        if self._res_lock.held_here():
            # weakly: a strong reference would resurrect the device the collector is freeing
            self._res_lock.after_release(functools.partial(self._release_later, weakref.ref(reserver), names))
            return
        super().release_pins(reserver, *names)  # type: ignore[misc]  # super() is the gpiozero Factory

    def _release_later(self, reserver: weakref.ref[Any], names: tuple[Any, ...]) -> None:
        """A deferred :meth:`release_pins`; a reserver gone by now leaves only dead references,
        which gpiozero's release_pins prunes when given None."""
        self.release_pins(reserver(), *names)

    @contextlib.contextmanager
    def recording_reservers(self) -> Iterator[list[Any]]:
        """Collect, in order, every object that reserves pins on this thread meanwhile.

        A gpiozero constructor reserves pins before it can fail, and a device whose
        constructor raised is never returned to be closed: this names what to release.
        """
        outer = getattr(self._recording, "reservers", None)
        made: list[Any] = []
        self._recording.reservers = made
        try:
            yield made
        finally:
            self._recording.reservers = outer


@functools.cache
def reservation_safe(factory_class: type[Factory]) -> type[Factory]:
    """``factory_class`` (a gpiozero pin factory class) with reservations a collection cannot deadlock.

    Every factory pihub creates is one of these (see the comment above ``_ReservationLock``);
    a test that builds its own factory for gpiozero devices should subclass one too.
    """
    return type(f"ReservationSafe{factory_class.__name__}", (_SafeReservations, factory_class),
                {"__doc__": f"{factory_class.__name__} whose pin reservations a collection cannot deadlock.",
                 "__module__": __name__})


# --------------------------------------------------------------------------------------
# The backend


def _load_factory(name: str) -> Factory:
    """Create the gpiozero pin factory ``name`` (not ``auto``/``mock``).

    Raises:
        BackendUnavailable: its library is missing or it cannot open the GPIO chip.
    """
    module_name, cls_name, how = _FACTORY_CLASSES[name]
    try:
        module = __import__(module_name, fromlist=[cls_name])
    except ImportError as e:
        raise BackendUnavailable(
            f"pin factory {name!r} cannot load: {e} ({how}; or set gpio.pin_factory: mock to run without"
            " hardware)") from None
    try:
        return reservation_safe(getattr(module, cls_name))()
    except Exception as e:  # noqa: BLE001 - any driver error (PinUnknownPi, OSError, lgpio.error) = unavailable
        raise BackendUnavailable(
            f"pin factory {name!r} cannot open this machine's GPIO: {type(e).__name__}: {e} (is this a"
            " Raspberry Pi? set gpio.pin_factory: mock to run without hardware)") from None


def _mock_factory() -> Factory:
    """A gpiozero MockFactory with PWM-capable pins (a Pi 3B: 40-pin header)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    return reservation_safe(MockFactory)(revision=MOCK_REVISION, pin_class=MockPWMPin)


@functools.cache
def _connected_pin_class() -> type[MockPin]:
    """``MockConnectedPin`` that is also a ``MockPWMPin``, so PWM outputs can be wired.

    MockFactory refuses to hand a non-PWM pin to a factory whose pin class is
    ``MockPWMPin``, and a PWM output needs ``frequency``: the plain connected pin has
    neither.
    """
    from gpiozero.pins.mock import MockConnectedPin, MockPWMPin

    class MockConnectedPWMPin(MockConnectedPin, MockPWMPin):  # type: ignore[misc]  # gpiozero: untyped
        """A PWM-capable mock pin that drives a wired input pin (high while duty > 0)."""

    return MockConnectedPWMPin


class GpioBackend(Backend):
    """GPIO inputs as ``GPIOEvent``, outputs as actions, on gpiozero (see the module docstring)."""

    name: ClassVar[str] = "gpio"
    config_schema: ClassVar[Schema] = Schema(
        {
            "pin_factory": Field(str, "auto", choices=FACTORIES,
                                 doc="gpiozero pin factory (auto: gpiozero's order; mock: no hardware)"),
            "mode": Field(str, None, choices=("bcm", "board"),
                          doc="how bare pin numbers are read: bcm (default) or board (header positions)"),
            "bounce_time": Field(float, 0.01, min=0.0, max=60.0,
                                 doc="default debounce of inputs, in seconds (0 = none)"),
            "inputs": Field(dict_of(INPUT_SCHEMA), {}, doc="input pins by name"),
            "outputs": Field(dict_of(OUTPUT_SCHEMA), {}, doc="output pins by name"),
            "mock_wiring": Field(dict, {}, doc="pin_factory: mock only: {output pin: input pin} jumpers"),
            "pins": Field(dict_of((int, str)), {}, doc="Platypush: {name: pin} names"),
            "monitored_pins": Field(list, [],
                                    doc="Platypush: pins (or names from pins) reported as GPIOEvent"),
        },
        doc="GPIO pins on gpiozero: inputs report GPIOEvent, outputs are driven by actions.",
    )

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        """Validate and resolve the section; nothing is opened and gpiozero is not imported.

        Raises:
            ConfigProblems: (a ValueError) every problem of the section.
        """
        super().__init__(config, clock=clock)
        values = self.config
        self.spec: GpioConfig = resolve_config(values)
        if self.spec.platypush_numbering:
            self.log.warning("gpio: pins and monitored_pins numbers are read as BCM numbers; Platypush reads "
                             "them as BOARD positions unless its mode is bcm: set gpio.mode: board to keep a "
                             "Platypush config's numbering, or gpio.mode: bcm to silence this")
        self._lock = threading.RLock()
        self._factory: Factory | None = None
        self._factory_name: str | None = None
        self._inputs: dict[Bcm, _Input] = {}
        self._outputs: dict[Bcm, _Output] = {}
        self._lazy: dict[Bcm, _Lazy] = {}
        self._settled = threading.Condition()  # notified when a debounce window closes
        self._emit: Emit | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def pin_factory(self) -> Factory | None:
        """The gpiozero pin factory in use (None before validate/open and after close)."""
        return self._factory

    @property
    def factory_name(self) -> str | None:
        """Which factory ``auto`` (or the config) chose: ``lgpio``, ``mock``... or None."""
        return self._factory_name

    def validate_environment(self) -> None:
        """Import gpiozero and create the configured pin factory (kept for :meth:`open`).

        Raises:
            BackendUnavailable: gpiozero is not installed, or the factory (every one, for
                ``auto``) cannot load on this machine; the message says why and what to do.
        """
        with self._lock:
            if self._factory is None:
                self._factory, self._factory_name = self._create_factory()

    def _create_factory(self) -> tuple[Factory, str]:
        """Create the configured factory; returns it and its name."""
        try:
            import gpiozero  # noqa: F401 - checks the library before naming a factory
        except ImportError as e:
            raise BackendUnavailable(f"gpiozero is not installed ({e}): pip install gpiozero") from None
        wanted = self.spec.pin_factory
        if wanted == "auto":
            env = os.environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
            if env:
                if env not in FACTORIES or env == "auto":
                    raise BackendUnavailable(
                        f"GPIOZERO_PIN_FACTORY={env!r} is not a pin factory pihub knows "
                        f"(allowed: {', '.join(f for f in FACTORIES if f != 'auto')})")
                wanted = env
            else:
                reasons = []
                for name in AUTO_ORDER:
                    try:
                        return _load_factory(name), name
                    except BackendUnavailable as e:
                        reasons.append(str(e))
                raise BackendUnavailable("no pin factory loads on this machine: " + "; ".join(reasons))
        if wanted == "mock":
            return _mock_factory(), "mock"
        return _load_factory(wanted), wanted

    def open(self, emit: Emit) -> None:
        """Set up inputs (then outputs, then mock wiring's effects) and start reporting edges.

        Returns promptly: edges are reported from the driver's threads.

        Raises:
            BackendUnavailable: as :meth:`validate_environment`, when not yet called.
            RuntimeError: a device could not be set up (names it, the pin and why);
                everything set up so far is closed again.
        """
        with self._lock:
            if self.status == BackendStatus.RUNNING:
                raise RuntimeError("gpio backend is already open")
            if self._factory is None:
                self._factory, self._factory_name = self._create_factory()
            self._emit = emit
            try:
                self._open_devices(emit)
            except BaseException:
                self._close_devices()
                raise
            self.status = BackendStatus.RUNNING
            self.error = None

    def _open_devices(self, emit: Emit) -> None:
        """Create every gpiozero device on ``self._factory``; see :meth:`open`."""
        from gpiozero import DigitalOutputDevice, InputDevice, PWMOutputDevice

        factory = self._open_factory()
        if self.spec.wiring:
            cls = _connected_pin_class()
            for out_bcm, in_bcm in self.spec.wiring.items():
                factory.pin(out_bcm, pin_class=cls, input_pin=factory.pin(in_bcm))
        driver_limit = _DRIVER_DEBOUNCE.get(self._factory_name or "")
        for spec in self.spec.inputs:
            where = f"input {spec.name or spec.event_pin!r} ({pin_label(spec.bcm)})"
            by_driver = driver_limit is not None and spec.bounce_time <= driver_limit
            device = None
            try:
                pull_up = {"up": True, "down": False, "none": None}[spec.pull]
                device = self._new_device(InputDevice, spec.bcm, pull_up=pull_up,
                                          active_state=True if pull_up is None else None)
                device.pin.bounce = spec.bounce_time if by_driver and spec.bounce_time else None
                device.pin.edges = "both"  # edges are filtered after debounce, which needs both
                inp = _Input(spec, device, 0.0 if by_driver else spec.bounce_time, self.clock,
                             self._settled, emit)
                device.pin.when_changed = inp.pin_changed  # gpiozero keeps a weak ref: _inputs holds inp
            except Exception as e:
                if device is not None:
                    device.close()
                raise RuntimeError(f"{where}: {type(e).__name__}: {e}") from e
            self._inputs[spec.bcm] = inp
        for ospec in self.spec.outputs:
            try:
                if ospec.kind == "pwm":
                    device = self._new_device(PWMOutputDevice, ospec.bcm, active_high=ospec.active_high,
                                              initial_value=ospec.initial, frequency=ospec.frequency)
                else:
                    device = self._new_device(DigitalOutputDevice, ospec.bcm, active_high=ospec.active_high,
                                              initial_value=bool(ospec.initial))
            except Exception as e:
                raise RuntimeError(f"output {ospec.name!r} ({pin_label(ospec.bcm)}): {type(e).__name__}: {e}"
                                   f" (pin factory {self._factory_name!r})") from e
            self._outputs[ospec.bcm] = _Output(ospec, device)
        for name, bcm in self.spec.lazy.items():
            self._lazy[bcm] = _Lazy(name, bcm, self.spec.number(bcm))

    def _open_factory(self) -> Factory:
        """The pin factory devices are created on; RuntimeError when the backend is closed."""
        if self._factory is None:
            raise RuntimeError("the gpio backend is not open")
        return self._factory

    def _new_device(self, cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        """``cls(*args, **kwargs)`` on this backend's factory; a failed one keeps no pin.

        gpiozero reserves a device's pins before its constructor can fail, and leaves a
        device whose constructor raised to the garbage collector (pins held until then:
        a retry would find them in use). Whatever reserved pins during a failed
        construction is closed and released here, before the error propagates.
        """
        factory = self._open_factory()
        with factory.recording_reservers() as reservers:
            try:
                return cls(*args, pin_factory=factory, **kwargs)
            except BaseException:
                for half_built in reversed(reservers):
                    # close() of a half-built device may fail on what its constructor never set
                    with contextlib.suppress(Exception):
                        half_built.close()
                    factory.release_all(half_built)  # close() skips pins it had not opened yet
                raise

    def close(self) -> None:
        """Stop reporting, close every device and the factory; idempotent.

        No event is emitted once this returns. Outputs go back to inputs (gpiozero's
        close), as after a Platypush ``cleanup``.
        """
        with self._lock:
            self._close_devices()
            self.status = BackendStatus.STOPPED

    def _close_devices(self) -> None:
        """Detach inputs (cancelling their timers), close devices and factory (caller holds _lock)."""
        self._emit = None
        for inp in self._inputs.values():
            inp.detach()
        devices = [o.device for o in self._outputs.values()]
        devices += [lz.device for lz in self._lazy.values() if lz.device is not None]
        devices += [i.device for i in self._inputs.values()]
        self._inputs.clear()
        self._outputs.clear()
        self._lazy.clear()
        for device in devices:
            try:
                device.close()
            except Exception:
                self.log.exception("gpio: closing %r failed", device)
        if self._factory is not None:
            try:
                self._factory.close()
            except Exception:
                self.log.exception("gpio: closing the pin factory failed")
            self._factory = None

    # ---------------------------------------------------------------- test/demo rig
    def mock_pin(self, pin: int | str) -> MockPin:
        """The gpiozero ``MockPin`` of a configured pin, for tests and the demo to drive.

        Args:
            pin: a configured name, or a pin number/spelling (as for actions).

        Returns:
            The mock pin: ``drive_high()``/``drive_low()`` for inputs, ``state`` and
            ``states`` (history) for outputs.

        Raises:
            RuntimeError: the backend is not open on the mock factory.
            ActionError: ``pin`` is not configured.
        """
        with self._lock:
            if self._factory_name != "mock" or self._factory is None:
                raise RuntimeError("mock_pin needs gpio.pin_factory: mock and an open backend")
            target = self._resolve(pin)
            return self._factory.pin(_bcm_of(target))

    def wait_settled(self, timeout: float = 5.0) -> bool:
        """Wait until no input has a debounce window open, so every settle check has run.

        The windows close on the backend's clock: on a :class:`~pihub.clock.ManualClock`
        only another thread's ``advance`` closes them (a test on one thread advances the
        clock instead of calling this).

        Args:
            timeout: real seconds to wait at most (it waits for the clock's timer thread).

        Returns:
            True when settled in time (also when closed), False on timeout.
        """
        with self._settled:
            return self._settled.wait_for(
                lambda: all(inp.window_end is None for inp in list(self._inputs.values())), timeout)

    # ---------------------------------------------------------------- actions
    def _require_running(self) -> None:
        """Raise ActionError unless the backend is open."""
        if self.status != BackendStatus.RUNNING:
            why = f": {self.error}" if self.error else ""
            raise ActionError(f"the gpio backend is not running (status: {self.status}{why})")

    def _configured(self) -> str:
        """``'doorbell' (GPIO17), ...`` for error messages."""
        items = [(i.name or str(i.event_pin), i.bcm) for i in self.spec.inputs]
        items += [(o.name, o.bcm) for o in self.spec.outputs]
        items += list(self.spec.lazy.items())
        return ", ".join(f"{n!r} ({pin_label(b)})" for n, b in items) or "none"

    def _resolve(self, pin: int | str) -> _Target:
        """Find the configured input, output or Platypush pin ``pin`` names.

        Raises:
            ActionError: naming the value and listing what is configured.
        """
        if isinstance(pin, str):
            for out in self._outputs.values():
                if out.spec.name == pin:
                    return _Target("output", pin, out.spec.number, out)
            for inp in self._inputs.values():
                if inp.spec.name == pin:
                    return _Target("input", pin, self.spec.number(inp.spec.bcm), inp)
            for lz in self._lazy.values():
                if lz.name == pin:
                    return _Target("pin", pin, lz.number, lz)
        try:
            bcm = parse_pin(pin, self.spec.mode)
        except ValueError as e:
            if isinstance(pin, str) and not _is_pin_spelling(pin):
                raise ActionError(f"unknown pin {show(pin)} (configured: {self._configured()})") from None
            raise ActionError(f"{e}; configured: {self._configured()}") from None
        if bcm in self._outputs:
            out = self._outputs[bcm]
            return _Target("output", out.spec.name, out.spec.number, out)
        if bcm in self._inputs:
            inp = self._inputs[bcm]
            return _Target("input", inp.spec.name or str(inp.spec.event_pin), self.spec.number(bcm), inp)
        if bcm in self._lazy:
            lz = self._lazy[bcm]
            return _Target("pin", lz.name, lz.number, lz)
        raise ActionError(f"pin {pin_label(bcm)} is not configured (configured: {self._configured()}; "
                          "add it under gpio.inputs or gpio.outputs)")

    def _output(self, pin: int | str, what: str, *, pwm: bool = False) -> tuple[_Target, OutputDevice]:
        """Resolve ``pin`` to a drivable device (an output, or a Platypush pin made output).

        Args:
            pin: as the actions take it.
            what: the action, for messages.
            pwm: only ``kind: pwm`` outputs will do.

        Returns:
            The target and its gpiozero output device.
        """
        self._require_running()
        target = self._resolve(pin)
        if target.kind == "output":
            if pwm and target.obj.spec.kind != "pwm":
                raise ActionError(f"{what}: {target.name!r} is a digital output; {what} works on kind: pwm"
                                  f" outputs ({self._names(pwm=True)})")
            return target, target.obj.device
        if target.kind == "pin" and not pwm:
            return target, self._lazy_output(target.obj)
        raise ActionError(f"{what}: {target.name!r} is {'an input' if target.kind == 'input' else 'not pwm'};"
                          f" {what} works on {'kind: pwm ' if pwm else ''}outputs ({self._names(pwm=pwm)})")

    def _names(self, *, pwm: bool = False) -> str:
        """The names of outputs (pwm ones only when ``pwm``), for messages."""
        names = [o.name for o in self.spec.outputs if o.kind == "pwm" or not pwm]
        if not pwm:
            names += list(self.spec.lazy)
        return ", ".join(map(repr, names)) or "none configured"

    def _lazy_output(self, lz: _Lazy) -> DigitalOutputDevice:
        """Set a Platypush pin up as a digital output (once), as Platypush's write does."""
        from gpiozero import DigitalOutputDevice

        if lz.device is not None and lz.is_output:
            return lz.device
        if lz.device is not None:
            lz.device.close()
            lz.device = None
        lz.device = self._new_device(DigitalOutputDevice, lz.bcm, initial_value=False)
        lz.is_output = True
        return lz.device

    def _reply(self, target: _Target, value: float, method: str, name: str | None = None) -> dict[str, Any]:
        """Platypush's ``{name, pin, value, method}`` reply."""
        return {"name": name or target.name, "pin": target.number, "value": value, "method": method}

    @staticmethod
    def _out_value(target: _Target, device: OutputDevice) -> float:
        """An output's value: 0/1 for digital, the duty 0..1 for pwm."""
        if _is_pwm(target):
            return float(device.value)
        return 1 if device.value else 0

    @action(blocking=False)
    def on(self, pin: int | str) -> dict[str, Any]:
        """Turn an output on (duty 1.0 for pwm); stops a blink.

        Args:
            pin: output name, or its pin number/spelling (``27``, ``GPIO27``).

        Returns:
            ``{name, pin, value, method: "on"}``.
        """
        with self._lock:
            target, device = self._output(pin, "on")
            device.on()
            return self._reply(target, self._out_value(target, device), "on")

    @action(blocking=False)
    def off(self, pin: int | str) -> dict[str, Any]:
        """Turn an output off (duty 0.0 for pwm); stops a blink.

        Args:
            pin: output name, or its pin number/spelling.

        Returns:
            ``{name, pin, value, method: "off"}``.
        """
        with self._lock:
            target, device = self._output(pin, "off")
            device.off()
            return self._reply(target, self._out_value(target, device), "off")

    @action(blocking=False)
    def toggle(self, pin: int | str) -> dict[str, Any]:
        """Invert an output (a pwm duty d becomes 1 - d); stops a blink.

        Args:
            pin: output name, or its pin number/spelling.

        Returns:
            ``{name, pin, value, method: "toggle"}`` with the new value.
        """
        with self._lock:
            target, device = self._output(pin, "toggle")
            device.toggle()
            return self._reply(target, self._out_value(target, device), "toggle")

    @action(blocking=False)
    def write(self, pin: int | str, value: bool | float, name: str | None = None) -> dict[str, Any]:
        """Set an output (Platypush's ``gpio.write``); stops a blink.

        Args:
            pin: output name, or its pin number/spelling. A Platypush ``pins`` name is set
                up as an output on first write.
            value: 0/1 or false/true; on a pwm output, a duty cycle 0..1.
            name: label for the reply (Platypush); default the output's name.

        Returns:
            ``{name, pin, value, method: "write"}``.
        """
        with self._lock:
            target, device = self._output(pin, "write")
            v = float(value)
            is_pwm = _is_pwm(target)
            if not 0.0 <= v <= 1.0 or (not is_pwm and v not in (0.0, 1.0)):
                allowed = "a duty cycle 0..1" if is_pwm else "0 or 1 (or false/true)"
                raise ActionError(f"value must be {allowed} for {target.name!r}, not {show(value)}")
            device.value = v if is_pwm else bool(v)
            return self._reply(target, self._out_value(target, device), "write", name)

    @action
    def read(self, pin: int | str, name: str | None = None) -> dict[str, Any]:
        """Read a pin (Platypush's ``gpio.read``).

        Args:
            pin: input or output name, or a configured pin's number/spelling. A Platypush
                ``pins`` name not yet used is set up as a floating input, as Platypush does.
            name: label for the reply (Platypush); default the pin's name.

        Returns:
            ``{name, pin, value, method: "read"}``: an input's level now (0/1, after
            ``active_state``; not debounced), an output's value (0/1, or the duty 0..1 for
            pwm).
        """
        with self._lock:
            self._require_running()
            return self._read(self._resolve(pin), name)

    def _read(self, target: _Target, name: str | None = None) -> dict[str, Any]:
        """Read one resolved target (caller holds _lock)."""
        if target.kind == "input":
            inp: _Input = target.obj
            return self._reply(target, inp.value(inp.level()), "read", name)
        if target.kind == "output":
            return self._reply(target, self._out_value(target, target.obj.device), "read", name)
        lz: _Lazy = target.obj
        if lz.device is None:
            from gpiozero import InputDevice

            lz.device = self._new_device(InputDevice, lz.bcm, pull_up=None, active_state=True)
            lz.is_output = False
        value = self._out_value(target, lz.device) if lz.is_output else (1 if lz.device.pin.state else 0)
        return self._reply(target, value, "read", name)

    @action
    def read_all(self) -> list[dict[str, Any]]:
        """Read every configured pin: inputs, outputs, then Platypush ``pins``.

        Returns:
            A list of ``{name, pin, value, method: "read"}``, as :meth:`read`.
        """
        with self._lock:
            self._require_running()
            targets = [self._resolve(i.name or pin_label(i.bcm)) for i in self.spec.inputs]
            targets += [self._resolve(o.name) for o in self.spec.outputs]
            targets += [self._resolve(n) for n in self.spec.lazy]
            return [self._read(t) for t in targets]

    def describe_entities(self) -> list[dict[str, Any]]:
        """The configured inputs and outputs with their values now, for the web panel.

        Returns:
            :meth:`read_all`'s replies with ``kind`` (``input``/``output``), ``pwm`` and,
            for outputs, ``set``: the action and arguments that drive it (``gpio.write``
            with ``{"pin": name}``; the new value goes in ``value``). Platypush ``pins``
            not yet used are left out (reading one would set it up as an input).
        """
        with self._lock:
            self._require_running()
            out = []
            for i in self.spec.inputs:
                target = self._resolve(i.name or pin_label(i.bcm))
                out.append({**self._read(target), "kind": "input", "pwm": False})
            for o in self.spec.outputs:
                target = self._resolve(o.name)
                out.append({**self._read(target), "kind": "output", "pwm": _is_pwm(target),
                            "set": {"action": "gpio.write", "args": {"pin": o.name}, "value_arg": "value"}})
            return out

    @action
    def get_measurement(self, pin: int | str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """Platypush's ``gpio.get_measurement``: :meth:`read` of ``pin``, or :meth:`read_all`.

        Args:
            pin: as for :meth:`read`; null reads every configured pin.

        Returns:
            One ``{name, pin, value, method: "read"}``, or the list of them.
        """
        return self.read_all() if pin is None else self.read(pin)

    @action
    def blink(self, pin: int | str, on_time: float = 1.0, off_time: float = 1.0,
              n: int | None = None) -> dict[str, Any]:
        """Blink an output in the background; returns at once. Any other action on it stops it.

        Args:
            pin: output name, or its pin number/spelling.
            on_time: seconds on per cycle (> 0).
            off_time: seconds off per cycle (> 0).
            n: number of cycles, >= 1; null blinks until stopped. The output ends off.

        Returns:
            ``{name, pin, method: "blink", on_time, off_time, n}``.
        """
        if not on_time > 0 or not off_time > 0:
            raise ActionError(f"on_time and off_time must be > 0 seconds, not {on_time:g} and {off_time:g}")
        if n is not None and n < 1:
            raise ActionError(f"n must be at least 1 (or null for forever), not {n}")
        with self._lock:
            target, device = self._output(pin, "blink")
            device.blink(on_time=on_time, off_time=off_time, n=n, background=True)
            return {"name": target.name, "pin": target.number, "method": "blink", "on_time": on_time,
                    "off_time": off_time, "n": n}

    @action(blocking=False)
    def pwm(self, pin: int | str, value: float, frequency: float | None = None) -> dict[str, Any]:
        """Set a pwm output's duty cycle, and optionally its frequency; stops a blink.

        Args:
            pin: name (or pin number/spelling) of a ``kind: pwm`` output.
            value: duty cycle 0..1 (0 = off, 1 = fully on).
            frequency: Hz (> 0); null keeps the current one.

        Returns:
            ``{name, pin, value, frequency, method: "pwm"}``.
        """
        if not 0.0 <= value <= 1.0:
            raise ActionError(f"value must be a duty cycle 0..1, not {show(value)}")
        if frequency is not None and not frequency > 0:
            raise ActionError(f"frequency must be > 0 Hz, not {show(frequency)}")
        with self._lock:
            target, device = self._output(pin, "pwm", pwm=True)
            if frequency is not None:
                device.frequency = frequency
            device.value = value
            return {**self._reply(target, float(device.value), "pwm"), "frequency": device.frequency}


def _is_pwm(target: _Target) -> bool:
    """True for a ``kind: pwm`` output."""
    return target.kind == "output" and target.obj.spec.kind == "pwm"


def _bcm_of(target: _Target) -> Bcm:
    """The BCM number of a resolved target."""
    obj = target.obj
    if isinstance(obj, _Lazy):
        return obj.bcm
    spec: InputSpec | OutputSpec = obj.spec
    return spec.bcm


__all__ = ["BCM_TO_BOARD", "BOARD_TO_BCM", "FACTORIES", "GpioBackend", "GpioConfig", "InputSpec",
           "OutputSpec", "parse_pin", "pin_label", "reservation_safe", "resolve_config"]
