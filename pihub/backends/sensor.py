"""The sensor base: Platypush's sensor semantics (change test, tolerance, thresholds,
hysteresis, ``enabled_sensors``), minus its quirks, as pure logic.

Shared by every backend that produces readings (``adc``, ``serial_sensor``...). A backend
feeds each new reading to a :class:`SensorState` and emits the events it returns; the
state does no I/O, has no thread and reads no clock, so every rule below is tested with
plain values (``tests/backends/test_sensor_base.py``). Backends merge
:data:`SENSOR_FIELDS` into their config schema and build the state with
:meth:`SensorState.from_config`.

Readings
    A number (``21.5``), a mapping of names to values (``{"temperature": 21.5,
    "humidity": 40}``) or a list (``[0.1, 0.2]``, compared per index). Values that are
    not numbers (strings, bools, nested data) are compared with ``!=`` and never cross
    thresholds. ``bool`` is not a number here (``True`` is not ``1.0`` for a sensor),
    nor is an int beyond the float range (more than ~309 digits, which a JSON or
    key=value line can carry): it is compared with ``!=`` too. Only finite numbers cross
    thresholds: NaN and the infinities never do (they still take part in the change
    test, below). No value makes :meth:`SensorState.update` raise.

Change test, against the last *reported* reading (``SensorState.last``)
    * nothing reported yet -> a change;
    * number: ``abs(new - old) > tolerance`` (strict: a difference equal to the
      tolerance is not a change); NaN differs from every number but not from NaN
      (Platypush's ``abs(nan - x) > t`` is always False, so one NaN froze its
      reference forever);
    * mapping: a change when any key of the new reading changed by more than *its*
      tolerance, or is new (absent from the reference); keys absent from the new reading
      are not compared (a serial sensor may send one key per line);
    * list: per index, each index with its own tolerance (a number applies to *every*
      index, including 0: Platypush gives index 0 a tolerance of 0 because ``0`` is
      falsy); a list of another length is a change;
    * a reading of another kind than the reference (number -> mapping...) is a change.

    ``tolerance`` is one number (every key) or ``{key: number}`` (keys not listed: 0).

The reference moves only when a change is reported
    On a change the whole new reading is merged into the reference (mapping readings are
    merged key by key, as Platypush's ``dict.update``; numbers and lists replace it).
    Readings within tolerance leave it alone, so a slow drift is reported once it adds
    up to more than the tolerance (Platypush current; the legacy backends moved the
    reference every poll and never reported drift).

Events, in this order, only when the change test fired
    1. ``SensorDataChangeEvent(data=<the new reading after enabled_sensors>,
       source=<source>)`` - the full reading, not only the changed keys;
    2. one ``SensorDataAboveThresholdEvent`` / ``SensorDataBelowThresholdEvent`` per key
       that crossed, in the reading's key order, with ``data={key: value}`` for mapping
       and list readings (the crossing key or index only) or the number itself.

    Every event has ``args = {"data": ..., "source": source}``, ``Event.source = source``
    and the ``ts_ns`` given to :meth:`SensorState.update`.

Thresholds
    ``thresholds`` is a number ``t`` (every key, or the number itself), a pair
    ``[low, high]`` (hysteresis; sorted, so ``[high, low]`` is the same), or a mapping
    ``{key: t | [low, high]}`` (only those keys). ``t`` is the band ``[t, t]``.

    Each key with a band is a Schmitt trigger with three states: *unknown* (nothing
    crossed yet), *above* and *below*. A reported value ``v``::

        v > high  and state is not above  ->  Above event, state = above
        v < low   and state is not below  ->  Below event, state = below
        otherwise (low <= v <= high, or already on that side)  ->  nothing

    For example, with ``[5, 10]`` (``A`` = Above, ``B`` = Below)::

        reported:  7    11   9.5  10.5  10   4    6    4.5  11
        state:     ?    ab   ab   ab    ab   be   be   be   ab
        event:          A                    B              A

    So the band's edges count as inside (crossing is strict: ``v > high``, ``v < low``);
    a first reading above ``high`` (or below ``low``) fires at once, as in Platypush
    (``old is None and new > high``); a reading inside the band never fires and never
    re-arms; after an Above, the next threshold event of that key is a Below, only once
    the value has gone below ``low`` - noise around ``high`` gives exactly one Above per
    real crossing. Platypush checks ``old <= high < new`` against the last reported
    value instead, so ``11 -> 9 -> 11`` with ``[5, 10]`` (or even ``11 -> 10 -> 11``
    with a plain ``10``) fires Above twice; pihub fires it once.

    Thresholds are evaluated only on reported changes, against the states left by
    earlier reported values: a tolerance delays a crossing event until the reading has
    moved by more than the tolerance, exactly as it delays the change event.

``enabled_sensors``
    A list of keys, or ``{key: true|false}`` (the legacy form). When set, mapping
    readings keep only those keys before anything else happens; a reading left empty is
    ignored (no event, no reference change). Numbers and lists are not filtered.

At most ``max_keys`` distinct keys (default :data:`MAX_KEYS`)
    The reference keeps every key ever reported, so line noise sending a new key per
    line would grow it (and ``status``) without bound. Once a sensor knows ``max_keys``
    keys, the new keys of a mapping reading are dropped after ``enabled_sensors`` and
    before the change test (known keys keep updating; a reading left empty is ignored),
    counted in ``dropped_keys`` (:meth:`SensorState.describe`) and logged at most once
    per :data:`DROP_LOG_INTERVAL_S` of reading time (``ts_ns``) with the count so far.
    :meth:`SensorState.reset` forgets the keys, not the count.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

from pihub.config.schema import Field
from pihub.errors import ConfigProblem, ConfigProblems
from pihub.events import CATALOGUE, Event
from pihub.logs import LogLimiter

__all__ = ["DROP_LOG_INTERVAL_S", "MAX_KEYS", "SENSOR_FIELDS", "Band", "SensorState", "parse_enabled",
           "parse_thresholds", "parse_tolerance"]

log = logging.getLogger(__name__)

#: Distinct keys a sensor keeps by default (see "At most max_keys distinct keys" above);
#: a real device has a handful, line noise has any number.
MAX_KEYS: Final = 256
#: Seconds of reading time (``ts_ns``) between two log lines about dropped keys.
DROP_LOG_INTERVAL_S: Final = 60.0

Reading = float | int | dict[Any, Any] | list[Any]

#: The options every sensor backend shares; merge them into the backend's schema
#: (``Schema({**SENSOR_FIELDS, "device": ...})``), overriding ``poll_interval`` when
#: another default suits the device better.
SENSOR_FIELDS: Final[dict[str, Field]] = {
    "thresholds": Field(
        (float, list[float], dict), None,
        doc="a number, [low, high] (hysteresis) or {key: number or [low, high]}; "
            "crossings give Above/Below events"),
    "tolerance": Field(
        (float, dict), 0.0, min=0.0,
        doc="smallest change reported: one number, or {key: number} (others 0); strict (> tolerance)"),
    "enabled_sensors": Field(
        (list[str], dict[str, bool]), None,
        doc="keys to keep from mapping readings (a list, or {key: true/false}); null keeps all"),
    "poll_interval": Field(
        float, 15.0, min=0.001, max=86400.0, aliases=("poll_seconds",),
        doc="seconds between two readings"),
}

_CHANGE: Final = CATALOGUE.get("SensorDataChangeEvent")
_ABOVE: Final = CATALOGUE.get("SensorDataAboveThresholdEvent")
_BELOW: Final = CATALOGUE.get("SensorDataBelowThresholdEvent")

_MISSING: Final = object()
_SCALAR: Final = object()  # the key of a number reading's trigger state

Side = Literal["above", "below"]


@dataclass(frozen=True, slots=True)
class Band:
    """A threshold band: Above when a value rises past ``high``, Below when it falls
    past ``low`` (``low == high`` for a plain threshold). Units: the reading's."""

    low: float
    high: float


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits_float(value: object) -> TypeGuard[int | float]:
    """A number that converts to a float (NaN and the infinities included; an int beyond
    ~1.8e308 is not): the change test compares these by tolerance."""
    if isinstance(value, float):
        return True
    if not _is_number(value):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_finite(value: object) -> TypeGuard[int | float]:
    """A number with a finite float value: only these cross thresholds."""
    return _fits_float(value) and math.isfinite(value)


def _number(value: object, path: tuple[Hashable, ...]) -> float:
    if not _is_number(value):
        raise ConfigProblem(path, f"must be a number, not {value!r}")
    if isinstance(value, int) and not _fits_float(value):
        raise ConfigProblem(path, f"must be a number within the float range (about ±1.8e308), "
                                  f"not an int of {value.bit_length()} bits")
    out = float(value)
    if math.isnan(out):
        raise ConfigProblem(path, "must be a number, not NaN")
    return out


def _band(value: object, path: tuple[Hashable, ...]) -> Band:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigProblem(path, f"[low, high] needs exactly 2 numbers, not {len(value)}")
        a, b = (_number(v, (*path, i)) for i, v in enumerate(value))
        return Band(min(a, b), max(a, b))
    if isinstance(value, Band):
        return value
    t = _number(value, path)
    return Band(t, t)


def parse_thresholds(value: object, path: tuple[Hashable, ...] = ("thresholds",)
                     ) -> tuple[Band | None, dict[Hashable, Band]]:
    """Normalise a ``thresholds`` option.

    Args:
        value: None, a number, ``[low, high]``, a :class:`Band`, or a mapping of keys to
            any of those (not None).
        path: where the option is, for errors.

    Returns:
        ``(band for every key or None, {key: band})``; exactly one of them is used.

    Raises:
        ConfigProblems: every malformed part, e.g. ``thresholds.temp: [low, high] needs
            exactly 2 numbers, not 3``.
    """
    if value is None:
        return None, {}
    if isinstance(value, Mapping):
        out: dict[Hashable, Band] = {}
        problems: list[ConfigProblem] = []
        for key, v in value.items():
            try:
                out[key] = _band(v, (*path, key))
            except ConfigProblem as e:
                problems.append(e)
        if problems:
            raise ConfigProblems(problems)
        return None, out
    if isinstance(value, (list, tuple, Band)) or _is_number(value):
        try:
            return _band(value, path), {}
        except ConfigProblem as e:
            raise ConfigProblems([e]) from None
    raise ConfigProblems([ConfigProblem(
        path, f"must be a number, [low, high] or {{key: number or [low, high]}}, not {value!r}")])


def parse_tolerance(value: object, path: tuple[Hashable, ...] = ("tolerance",)
                    ) -> tuple[float, dict[Hashable, float]]:
    """Normalise a ``tolerance`` option: ``(default, {key: tolerance})``.

    A number is the default for every key; a mapping gives per-key tolerances and a
    default of 0. Tolerances are in the reading's units and must be >= 0.

    Raises:
        ConfigProblems: a negative or non-numeric tolerance, naming its key.
    """
    def one(v: object, p: tuple[Hashable, ...]) -> float:
        t = _number(v, p)
        if t < 0:
            raise ConfigProblem(p, f"must be at least 0, not {v!r}")
        return t

    try:
        if value is None:
            return 0.0, {}
        if isinstance(value, Mapping):
            problems: list[ConfigProblem] = []
            out: dict[Hashable, float] = {}
            for key, v in value.items():
                try:
                    out[key] = one(v, (*path, key))
                except ConfigProblem as e:
                    problems.append(e)
            if problems:
                raise ConfigProblems(problems)
            return 0.0, out
        return one(value, path), {}
    except ConfigProblem as e:
        raise ConfigProblems([e]) from None


def parse_enabled(value: object, path: tuple[Hashable, ...] = ("enabled_sensors",)) -> frozenset[Hashable] | None:
    """Normalise ``enabled_sensors``: a list of keys or ``{key: bool}`` -> a set, or None (all).

    Raises:
        ConfigProblems: a value of another shape.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        bad = [k for k, v in value.items() if not isinstance(v, bool)]
        if bad:
            raise ConfigProblems([ConfigProblem((*path, k), "must be true or false")
                                  for k in bad])
        return frozenset(k for k, v in value.items() if v)
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(value)
    raise ConfigProblems([ConfigProblem(path, f"must be a list of keys or {{key: true/false}}, not {value!r}")])


_FLAT: Final = (int, float, str, bool, type(None))


def _copy(data: Any) -> Any:
    """A copy that shares nothing mutable with ``data`` (cheap for flat readings)."""
    if isinstance(data, dict):
        return {k: v if isinstance(v, _FLAT) else copy.deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [v if isinstance(v, _FLAT) else copy.deepcopy(v) for v in data]
    return data if isinstance(data, _FLAT) else copy.deepcopy(data)


def _value_changed(old: Any, new: Any, tolerance: float) -> bool:
    """The per-value change test (see the module docstring)."""
    if old is _MISSING:
        return True
    if _fits_float(old) and _fits_float(new):
        if old == new:  # also inf == inf, where the difference below is NaN
            return False
        old_nan = isinstance(old, float) and math.isnan(old)  # ints are never NaN
        new_nan = isinstance(new, float) and math.isnan(new)
        if old_nan or new_nan:
            return not (old_nan and new_nan)
        return abs(new - old) > tolerance
    if isinstance(old, bool) != isinstance(new, bool) or _fits_float(old) != _fits_float(new):
        return True
    try:
        return bool(old != new)
    except Exception:  # noqa: BLE001 - exotic values whose != raises (numpy arrays): changed
        return True


class SensorState:
    """Pure logic, no threads/clock/I/O: the Platypush sensor semantics (§6.2) minus its quirks.

    See the module docstring for every rule. Not thread-safe: one poll or reader thread
    feeds it (backends that also read from actions take a lock around :meth:`update`).

    Args:
        source: the ``source`` of the events (the backend name).
        thresholds: see :func:`parse_thresholds`.
        tolerance: see :func:`parse_tolerance`.
        enabled_sensors: see :func:`parse_enabled`.
        max_keys: the most distinct keys kept from mapping readings (an int >= 1); new
            keys beyond it are dropped and counted (see the module docstring).

    Raises:
        ConfigProblems: a malformed option (a ``ValueError``), every problem listed.

    Attributes:
        last: the last *reported* reading (for mappings: every key ever reported, each
            with its latest reported value, at most ``max_keys``); None before the first.
        source: as given.
        dropped_keys: how many keys of readings were dropped over ``max_keys`` so far.
    """

    def __init__(self, source: str, *, thresholds: Any = None, tolerance: Any = 0.0,
                 enabled_sensors: Any = None, max_keys: int = MAX_KEYS) -> None:
        problems: list[ConfigProblem] = []
        self.all_band: Band | None = None
        self.bands: dict[Hashable, Band] = {}
        self.default_tolerance = 0.0
        self.tolerances: dict[Hashable, float] = {}
        self.enabled: frozenset[Hashable] | None = None
        try:
            self.all_band, self.bands = parse_thresholds(thresholds)
        except ConfigProblems as e:
            problems += e.problems
        try:
            self.default_tolerance, self.tolerances = parse_tolerance(tolerance)
        except ConfigProblems as e:
            problems += e.problems
        try:
            self.enabled = parse_enabled(enabled_sensors)
        except ConfigProblems as e:
            problems += e.problems
        if not isinstance(max_keys, int) or isinstance(max_keys, bool) or max_keys < 1:
            problems.append(ConfigProblem(("max_keys",), f"must be a whole number of at least 1, not {max_keys!r}"))
        if problems:
            raise ConfigProblems(problems)
        self.source = source
        self.max_keys = max_keys
        self.last: Reading | None = None
        self.dropped_keys = 0
        self._sides: dict[Hashable, Side] = {}
        # on the readings' own time (ts_ns), passed to allow(): this module reads no clock
        self._drop_log = LogLimiter(1, DROP_LOG_INTERVAL_S, time.monotonic)

    @classmethod
    def from_config(cls, source: str, values: Mapping[str, Any]) -> SensorState:
        """Build from a section validated with :data:`SENSOR_FIELDS` (other keys ignored)."""
        return cls(source, thresholds=values.get("thresholds"), tolerance=values.get("tolerance", 0.0),
                   enabled_sensors=values.get("enabled_sensors"))

    # ------------------------------------------------------------------ feeding
    def update(self, reading: float | dict[str, float | int] | list[Any], ts_ns: int = 0) -> list[Event]:
        """Take a new reading; return the events it causes (often none).

        Args:
            reading: a number, a mapping or a list (see the module docstring).
            ts_ns: CLOCK_MONOTONIC nanoseconds of the reading, stamped on the events.

        Returns:
            ``[]`` when nothing changed beyond tolerance; else the Change event followed
            by the threshold events, in key order.
        """
        data = self.filter(reading)
        if isinstance(data, dict):
            self._drop_new_keys(data, ts_ns)
            if not data:
                return []
        if not self.changed(data):
            return []
        events = [Event(_CHANGE, {"data": _copy(data), "source": self.source}, ts_ns, self.source)]
        for key, value in self._items(data):
            band = self.all_band if key is _SCALAR else self.bands.get(key, self.all_band)
            if band is None or not _is_finite(value):
                continue
            side = self._sides.get(key)
            if value > band.high and side != "above":
                self._sides[key] = "above"
                etype = _ABOVE
            elif value < band.low and side != "below":
                self._sides[key] = "below"
                etype = _BELOW
            else:
                continue
            payload = value if key is _SCALAR else {key: value}
            events.append(Event(etype, {"data": payload, "source": self.source}, ts_ns, self.source))
        self._remember(data)
        return events

    def filter(self, reading: Reading) -> Reading:
        """``reading`` after ``enabled_sensors`` (a new dict for mappings; else as given)."""
        if isinstance(reading, Mapping):
            if self.enabled is None:
                return dict(reading)
            return {k: v for k, v in reading.items() if k in self.enabled}
        return reading

    def tolerance(self, key: Hashable | None = None) -> float:
        """The tolerance of ``key`` (None: of a number reading), in the reading's units."""
        if key is None:
            return self.default_tolerance
        return self.tolerances.get(key, self.default_tolerance)

    def changed(self, data: Reading) -> bool:
        """The change test of an already filtered reading against :attr:`last`."""
        last = self.last
        if last is None:
            return True
        if isinstance(data, dict):
            if not isinstance(last, dict):
                return True
            return any(_value_changed(last.get(k, _MISSING), v, self.tolerance(k)) for k, v in data.items())
        if isinstance(data, list):
            if not isinstance(last, list) or len(last) != len(data):
                return True
            return any(_value_changed(o, n, self.tolerance(i)) for i, (o, n) in enumerate(zip(last, data, strict=True)))
        if isinstance(last, (dict, list)):
            return True
        return _value_changed(last, data, self.default_tolerance)

    def side(self, key: Hashable | None = None) -> Side | None:
        """Which side of its band ``key`` (None: a number reading) last crossed to, or None."""
        return self._sides.get(_SCALAR if key is None else key)

    def reset(self) -> None:
        """Forget the reference and the trigger states (e.g. after a device was replaced):
        the next reading is reported as new and may cross again."""
        self.last = None
        self._sides.clear()

    def describe(self) -> dict[str, Any]:
        """For status actions: the last reported reading, the trigger states and
        ``dropped_keys`` (keys dropped over ``max_keys`` so far)."""
        return {"last": _copy(self.last),
                "sides": {("value" if k is _SCALAR else k): v for k, v in self._sides.items()},
                "dropped_keys": self.dropped_keys}

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _items(data: Reading) -> list[tuple[Any, Any]]:
        if isinstance(data, dict):
            return list(data.items())
        if isinstance(data, list):
            return list(enumerate(data))
        return [(_SCALAR, data)]

    def _drop_new_keys(self, data: dict[Any, Any], ts_ns: int) -> None:
        """Remove from ``data`` (in place) its new keys beyond ``max_keys``; count and log them."""
        known = self.last if isinstance(self.last, dict) else {}
        room = self.max_keys - len(known)
        if len(data) <= room:
            return
        new = [k for k in data if k not in known]
        if len(new) <= room:
            return
        dropped = new[max(room, 0):]
        for key in dropped:
            del data[key]
        self.dropped_keys += len(dropped)
        if self._drop_log.allow(ts_ns / 1e9)[0]:
            more = f" and {len(dropped) - 1} more" if len(dropped) > 1 else ""
            log.warning("sensor %r: new key %r%s dropped: a sensor keeps at most max_keys = %d distinct "
                        "keys (%d keys dropped so far)", self.source, dropped[0], more, self.max_keys,
                        self.dropped_keys)

    def _remember(self, data: Reading) -> None:
        if isinstance(data, dict) and isinstance(self.last, dict):
            self.last.update(_copy(data))
        else:
            self.last = _copy(data)

    def __repr__(self) -> str:
        return f"<SensorState {self.source!r} last={self.last!r}>"
