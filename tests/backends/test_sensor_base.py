"""The sensor base (pihub/backends/sensor.py): each rule of the module docstring, pinned."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pihub.backends.sensor import DROP_LOG_INTERVAL_S, MAX_KEYS, SENSOR_FIELDS, Band, SensorState
from pihub.config.schema import Schema
from pihub.errors import ConfigProblems


def kinds(events):
    return [(e.type.name.removeprefix("SensorData").removesuffix("Event"), e.args["data"]) for e in events]


def feed(state, values):
    out = []
    for v in values:
        out += kinds(state.update(v))
    return out


# ---------------------------------------------------------------------- change test

def test_first_reading_is_a_change():
    s = SensorState("t")
    assert kinds(s.update(1.5)) == [("Change", 1.5)]
    assert s.last == 1.5


def test_same_value_is_not_a_change():
    s = SensorState("t")
    s.update(3)
    assert s.update(3) == []


def test_tolerance_is_strict():
    s = SensorState("t", tolerance=0.5)
    s.update(10.0)
    assert s.update(10.5) == []          # |diff| == tolerance: not a change
    assert s.update(9.5) == []
    assert kinds(s.update(10.5000001)) == [("Change", 10.5000001)]


def test_zero_tolerance_reports_any_change():
    s = SensorState("t")
    s.update(1.0)
    assert kinds(s.update(1.0000001)) == [("Change", 1.0000001)]


def test_reference_moves_only_on_reported_change_so_slow_drift_is_reported():
    s = SensorState("t", tolerance=1.0)
    s.update(20.0)
    got = feed(s, [20.3, 20.6, 20.9, 21.2])
    assert got == [("Change", 21.2)]      # 21.2 - 20.0 > 1 once the drift adds up
    assert s.last == 21.2
    assert feed(s, [21.9, 22.1]) == []
    assert feed(s, [22.3]) == [("Change", 22.3)]


def test_dict_per_key_tolerance_and_default_zero():
    s = SensorState("t", tolerance={"temperature": 0.5})
    s.update({"temperature": 20.0, "humidity": 40})
    assert s.update({"temperature": 20.4, "humidity": 40}) == []
    assert kinds(s.update({"temperature": 20.4, "humidity": 41})) == [
        ("Change", {"temperature": 20.4, "humidity": 41})]       # the full reading


def test_dict_one_number_tolerance_applies_to_every_key():
    s = SensorState("t", tolerance=1)
    s.update({"a": 0, "b": 0})
    assert s.update({"a": 1, "b": -1}) == []
    assert kinds(s.update({"a": 0, "b": 1.5})) == [("Change", {"a": 0, "b": 1.5})]


def test_dict_new_key_is_a_change_and_partial_readings_merge():
    s = SensorState("t", tolerance=1)
    s.update({"temperature": 20})
    assert kinds(s.update({"humidity": 40})) == [("Change", {"humidity": 40})]
    assert s.last == {"temperature": 20, "humidity": 40}
    assert s.update({"temperature": 20.5}) == []             # compared with the merged reference
    assert s.update({"humidity": 40.9}) == []


def test_dict_reference_is_updated_with_the_whole_reading():
    s = SensorState("t", tolerance={"a": 1, "b": 1})
    s.update({"a": 0, "b": 0})
    s.update({"a": 5, "b": 0.9})        # a changed; b is merged too (Platypush's dict.update)
    assert s.last == {"a": 5, "b": 0.9}
    assert s.update({"a": 5, "b": 1.8}) == []


def test_enabled_sensors_filters_dict_readings():
    s = SensorState("t", enabled_sensors=["temperature"])
    assert kinds(s.update({"temperature": 20, "noise": 1})) == [("Change", {"temperature": 20})]
    assert s.update({"temperature": 20, "noise": 2}) == []
    assert s.last == {"temperature": 20}


def test_enabled_sensors_legacy_mapping_form():
    s = SensorState("t", enabled_sensors={"a": True, "b": False})
    assert kinds(s.update({"a": 1, "b": 2})) == [("Change", {"a": 1})]


def test_reading_left_empty_by_enabled_sensors_is_ignored():
    s = SensorState("t", enabled_sensors=["a"])
    assert s.update({"b": 1}) == []
    assert s.last is None


def test_enabled_sensors_does_not_filter_scalars():
    s = SensorState("t", enabled_sensors=["a"])
    assert kinds(s.update(5)) == [("Change", 5)]


def test_list_readings_compare_per_index_including_index_0():
    s = SensorState("t", tolerance=0.5)
    s.update([1.0, 1.0])
    assert s.update([1.4, 1.0]) == []          # Platypush: index 0 had tolerance 0 -> a change
    assert s.update([1.0, 1.4]) == []
    assert kinds(s.update([1.6, 1.0])) == [("Change", [1.6, 1.0])]


def test_list_per_index_tolerance_and_length_change():
    s = SensorState("t", tolerance={0: 2.0})
    s.update([0, 0])
    assert s.update([1.9, 0]) == []
    assert kinds(s.update([1.9, 0.1])) == [("Change", [1.9, 0.1])]
    assert kinds(s.update([1.9, 0.1, 0])) == [("Change", [1.9, 0.1, 0])]


def test_kind_change_is_a_change():
    s = SensorState("t", tolerance=100)
    s.update(1)
    assert kinds(s.update({"a": 1})) == [("Change", {"a": 1})]
    assert kinds(s.update(1)) == [("Change", 1)]


def test_non_numeric_values_compare_with_equality():
    s = SensorState("t", tolerance=10)
    s.update({"state": "open", "ok": True})
    assert s.update({"state": "open", "ok": True}) == []
    assert kinds(s.update({"state": "closed", "ok": True})) == [("Change", {"state": "closed", "ok": True})]
    assert kinds(s.update({"state": "closed", "ok": False})) == [("Change", {"state": "closed", "ok": False})]


def test_nan_does_not_freeze_the_reference():
    s = SensorState("t", tolerance=0.1)
    s.update(1.0)
    assert len(s.update(math.nan)) == 1
    assert s.update(math.nan) == []
    assert kinds(s.update(1.0)) == [("Change", 1.0)]   # Platypush: abs(nan - 1) > t is False forever


def test_infinities():
    s = SensorState("t")
    s.update(math.inf)
    assert s.update(math.inf) == []
    assert len(s.update(0.0)) == 1


BIG = 10 ** 400  # a JSON or key=value line parses it to an int that no float can hold


def test_an_int_beyond_the_float_range_is_compared_as_a_non_number():
    s = SensorState("t", thresholds=0, tolerance=0.5)
    assert kinds(s.update({"a": 1.0})) == [("Change", {"a": 1.0}), ("AboveThreshold", {"a": 1.0})]
    assert kinds(s.update({"a": -BIG})) == [("Change", {"a": -BIG})]   # never crosses: no Below
    assert s.update({"a": -BIG}) == []
    assert kinds(s.update({"a": -BIG + 1})) == [("Change", {"a": -BIG + 1})]   # != , not the tolerance
    assert kinds(s.update({"a": -1.0})) == [("Change", {"a": -1.0}), ("BelowThreshold", {"a": -1.0})]
    assert s.last == {"a": -1.0}


@pytest.mark.parametrize("value", [BIG, -BIG, math.inf, -math.inf, math.nan],
                         ids=["big", "-big", "inf", "-inf", "nan"])
def test_values_that_are_not_finite_floats_never_raise_nor_cross(value):
    for first in (None, 1, 1.5, math.inf, math.nan, BIG, "x"):
        s = SensorState("t", thresholds=[5, 10], tolerance=0.1)
        if first is not None:
            s.update(first)
            s.update({"k": first})
            s.update([first])
        for reading in (value, {"k": value}, [value, 7.0]):
            assert [e.type.name for e in s.update(reading)] == ["SensorDataChangeEvent"]
            assert s.update(reading) == []
    assert kinds(s.update(20)) == [("Change", 20), ("AboveThreshold", 20)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(), st.integers(), st.integers(min_value=2 ** 1024 - 4, max_value=2 ** 1030),
                          st.booleans(), st.text(max_size=3), st.none()), min_size=1, max_size=30))
def test_update_never_raises_on_hostile_values(values):
    s = SensorState("t", thresholds=[0, 1], tolerance={"a": 0.5})
    for i, v in enumerate(values):
        s.update({"a": v, "b": -v if isinstance(v, int) else v}, ts_ns=i)
        s.update([v])
        if isinstance(v, (int, float)):
            s.update(v)


# ---------------------------------------------------------------------- events

def test_events_shape_source_and_timestamp():
    s = SensorState("adc", thresholds={"light": 1.0})
    events = s.update({"light": 2.0, "other": 5.0}, ts_ns=123)
    assert [e.type.name for e in events] == ["SensorDataChangeEvent", "SensorDataAboveThresholdEvent"]
    change, above = events
    assert change.args == {"data": {"light": 2.0, "other": 5.0}, "source": "adc"}
    assert above.args == {"data": {"light": 2.0}, "source": "adc"}      # the crossing key only
    assert {e.source for e in events} == {"adc"} and {e.ts_ns for e in events} == {123}


def test_scalar_threshold_events_carry_the_scalar():
    s = SensorState("t", thresholds=10)
    s.update(5)
    assert kinds(s.update(11)) == [("Change", 11), ("AboveThreshold", 11)]


def test_event_data_is_a_copy():
    s = SensorState("t")
    reading = {"a": 1}
    (ev,) = s.update(reading)
    reading["a"] = 2
    assert ev.args["data"] == {"a": 1} and s.last == {"a": 1}


def test_threshold_events_follow_the_change_in_key_order():
    s = SensorState("t", thresholds=0)
    s.update({"a": 1, "b": -1, "c": 0})
    assert kinds(s.update({"a": -1, "b": 1, "c": 0})) == [
        ("Change", {"a": -1, "b": 1, "c": 0}), ("BelowThreshold", {"a": -1}), ("AboveThreshold", {"b": 1})]


# ---------------------------------------------------------------------- thresholds

def test_first_reading_beyond_a_threshold_fires_at_once():
    assert kinds(SensorState("t", thresholds=10).update(11))[1:] == [("AboveThreshold", 11)]
    assert kinds(SensorState("t", thresholds=10).update(9))[1:] == [("BelowThreshold", 9)]
    assert kinds(SensorState("t", thresholds=10).update(10))[1:] == []      # on the threshold: neither


def test_plain_threshold_crossings_are_strict():
    s = SensorState("t", thresholds=10)
    assert feed(s, [9, 10, 10.5, 10, 11, 9.9]) == [
        ("Change", 9), ("BelowThreshold", 9), ("Change", 10), ("Change", 10.5), ("AboveThreshold", 10.5),
        ("Change", 10), ("Change", 11), ("Change", 9.9), ("BelowThreshold", 9.9)]


def test_plain_threshold_does_not_refire_after_touching_it():
    s = SensorState("t", thresholds=10)
    got = feed(s, [11, 10, 11])               # Platypush fires Above twice here
    assert [k for k, _ in got].count("AboveThreshold") == 1


def test_hysteresis_example_from_the_docstring():
    s = SensorState("t", thresholds=[5, 10])
    got = [k for k, _ in feed(s, [7, 11, 9.5, 10.5, 10, 4, 6, 4.5, 11]) if k != "Change"]
    assert got == ["AboveThreshold", "BelowThreshold", "AboveThreshold"]


def test_hysteresis_pair_is_sorted():
    assert SensorState("t", thresholds=[10, 5]).all_band == Band(5.0, 10.0)


def test_noisy_signal_around_high_gives_one_above_per_crossing():
    s = SensorState("t", thresholds=[9, 10])
    up = [8, 10.2, 9.8, 10.1, 9.5, 10.3, 9.9, 10.4]           # noise around high, never below low
    down = [9.5, 8.9, 9.1, 8.8, 9.05, 8.5]                    # noise around low
    got = [k for k, _ in feed(s, up + down + up) if k != "Change"]
    assert got == ["BelowThreshold", "AboveThreshold", "BelowThreshold", "AboveThreshold"]


def test_band_edges_are_inside():
    s = SensorState("t", thresholds=[5, 10])
    got = [k for k, _ in feed(s, [7, 10, 5, 10, 5]) if k != "Change"]
    assert got == []
    assert s.side() is None


def test_per_key_thresholds_and_per_key_hysteresis():
    s = SensorState("t", thresholds={"temperature": [20, 25], "humidity": 60})
    got = feed(s, [{"temperature": 22, "humidity": 50, "pressure": 1000},
                   {"temperature": 26, "humidity": 61, "pressure": 2000},
                   {"temperature": 24, "humidity": 59, "pressure": 0},
                   {"temperature": 26, "humidity": 59, "pressure": 0}])
    assert [x for x in got if x[0] != "Change"] == [
        ("BelowThreshold", {"humidity": 50}), ("AboveThreshold", {"temperature": 26}),
        ("AboveThreshold", {"humidity": 61}), ("BelowThreshold", {"humidity": 59})]


def test_one_number_threshold_applies_to_every_numeric_key():
    s = SensorState("t", thresholds=0)
    got = feed(s, [{"a": 1, "b": 1, "s": "x"}])
    assert got[1:] == [("AboveThreshold", {"a": 1}), ("AboveThreshold", {"b": 1})]


def test_list_threshold_events_carry_the_index():
    s = SensorState("t", thresholds=[0, 1])
    assert feed(s, [[0.5, 2]]) == [("Change", [0.5, 2]), ("AboveThreshold", {1: 2})]


def test_thresholds_wait_for_the_change_test():
    s = SensorState("t", thresholds=10, tolerance=1)
    s.update(9.5)                          # Below (first reading under 10)
    assert s.update(10.2) == []            # crossed, but within tolerance of 9.5: no event yet
    assert kinds(s.update(10.6)) == [("Change", 10.6), ("AboveThreshold", 10.6)]


def test_non_numeric_values_never_cross():
    s = SensorState("t", thresholds=0)
    events = s.update({"a": "high", "b": True, "c": math.nan})
    assert [e.type.name for e in events] == ["SensorDataChangeEvent"]


def test_reset_forgets_reference_and_sides():
    s = SensorState("t", thresholds=0)
    s.update(1)
    s.reset()
    assert s.last is None and s.side() is None
    assert kinds(s.update(1)) == [("Change", 1), ("AboveThreshold", 1)]


def test_describe():
    s = SensorState("t", thresholds=0)
    s.update({"a": 1})
    assert s.describe() == {"last": {"a": 1}, "sides": {"a": "above"}, "dropped_keys": 0}


# ---------------------------------------------------------------------- max_keys

def test_line_noise_of_new_keys_is_bounded_counted_and_known_keys_still_update(caplog):
    caplog.set_level(logging.WARNING, logger="pihub.backends.sensor")
    s = SensorState("serial", thresholds={"temp": 25})
    s.update({"temp": 20.0, "hum": 40})
    for i in range(20_000):
        s.update({f"k{i}": 1})
    assert len(s.last) == MAX_KEYS == 256
    assert s.dropped_keys == 20_000 - (MAX_KEYS - 2)
    assert s.describe()["dropped_keys"] == s.dropped_keys
    assert len(str(s.describe())) < 10_000
    assert kinds(s.update({"temp": 30.0, "k0": 2, "noise": 1})) == [
        ("Change", {"temp": 30.0, "k0": 2}), ("AboveThreshold", {"temp": 30.0})]
    assert s.last["temp"] == 30.0 and s.last["k0"] == 2 and "noise" not in s.last
    assert s.update({"noise": 1}) == []   # nothing but dropped keys: no event
    assert s.dropped_keys == 20_000 - (MAX_KEYS - 2) + 2


def test_dropped_keys_are_logged_once_per_interval_of_reading_time(caplog):
    caplog.set_level(logging.WARNING, logger="pihub.backends.sensor")
    s = SensorState("serial", max_keys=2)
    interval_ns = int(DROP_LOG_INTERVAL_S * 1e9)
    s.update({"a": 1, "b": 1, "c": 1, "d": 1}, ts_ns=0)
    for i in range(100):
        s.update({f"x{i}": 1}, ts_ns=i)
    s.update({"late": 1}, ts_ns=interval_ns)
    logged = [r.getMessage() for r in caplog.records if r.name == "pihub.backends.sensor"]
    assert logged == [
        "sensor 'serial': new key 'c' and 1 more dropped: a sensor keeps at most max_keys = 2 distinct keys "
        "(2 keys dropped so far)",
        "sensor 'serial': new key 'late' dropped: a sensor keeps at most max_keys = 2 distinct keys "
        "(103 keys dropped so far)",
    ]
    assert s.last == {"a": 1, "b": 1}


def test_max_keys_counts_the_keys_of_the_reference_only():
    s = SensorState("t", max_keys=3)
    s.update(5.0)                                   # a number reference: no keys yet
    assert kinds(s.update({"a": 1, "b": 2, "c": 3, "d": 4})) == [("Change", {"a": 1, "b": 2, "c": 3})]
    s.update([1, 2, 3, 4, 5])                       # lists are not keyed: not bounded by max_keys
    assert s.last == [1, 2, 3, 4, 5] and s.dropped_keys == 1
    s.reset()                                       # forgets the keys, not the count
    assert kinds(s.update({"x": 1, "y": 1, "z": 1, "w": 1})) == [("Change", {"x": 1, "y": 1, "z": 1})]
    assert s.dropped_keys == 2


@pytest.mark.parametrize("max_keys", [0, -1, True, 2.5, "256"])
def test_a_bad_max_keys_is_a_config_error(max_keys):
    with pytest.raises(ConfigProblems) as e:
        SensorState("t", max_keys=max_keys)
    assert str(e.value) == f"max_keys: must be a whole number of at least 1, not {max_keys!r}"


# ---------------------------------------------------------------------- config

def test_sensor_fields_merge_into_a_schema():
    schema = Schema({**SENSOR_FIELDS})
    values, problems = schema.validate({"thresholds": [1, 2], "tolerance": {"a": 0.1}, "poll_seconds": 5})
    assert [p for p in problems if not p.warning] == []
    assert values["poll_interval"] == 5.0 and values["enabled_sensors"] is None
    s = SensorState.from_config("x", values)
    assert s.all_band == Band(1.0, 2.0) and s.tolerance("a") == 0.1 and s.tolerance("b") == 0.0


def test_schema_refuses_a_negative_tolerance():
    _, problems = Schema({**SENSOR_FIELDS}).validate({"tolerance": -1})
    assert any("at least 0" in str(p) for p in problems)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"thresholds": [1, 2, 3]}, "thresholds: [low, high] needs exactly 2 numbers, not 3"),
    ({"thresholds": {"a": "x"}}, "thresholds.a: must be a number, not 'x'"),
    ({"thresholds": "x"}, "thresholds: must be a number, [low, high] or {key: number or [low, high]}, not 'x'"),
    ({"tolerance": {"a": -1}}, "tolerance.a: must be at least 0, not -1"),
    ({"thresholds": [0, 10 ** 400]},
     "thresholds[1]: must be a number within the float range (about ±1.8e308), not an int of 1329 bits"),
    ({"enabled_sensors": 3}, "enabled_sensors: must be a list of keys or {key: true/false}, not 3"),
])
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigProblems) as e:
        SensorState("t", **kwargs)
    assert str(e.value) == message
    assert isinstance(e.value, ValueError)


def test_all_bad_options_are_reported_together():
    with pytest.raises(ConfigProblems) as e:
        SensorState("t", thresholds=[1], tolerance=-2)
    assert len(e.value.problems) == 2


# ---------------------------------------------------------------------- properties

walks = st.lists(st.floats(min_value=-3, max_value=3, allow_nan=False), min_size=1, max_size=200)


@settings(max_examples=300, deadline=None)
@given(start=st.floats(min_value=-20, max_value=20), steps=walks,
       low=st.floats(min_value=-10, max_value=10), width=st.floats(min_value=0, max_value=5),
       tol=st.sampled_from([0.0, 0.1, 1.0]))
def test_random_walks_give_alternating_crossings(start, steps, low, width, tol):
    high = low + width
    s = SensorState("t", thresholds=[low, high], tolerance=tol)
    value, reported, crossings = start, [], []
    for step in [0.0, *steps]:
        value += step
        for e in s.update(value):
            name = e.type.name
            if name == "SensorDataChangeEvent":
                reported.append(e.args["data"])
            else:
                crossings.append((name, e.args["data"]))
    kinds_ = [n for n, _ in crossings]
    # strictly alternating: never two Above (or two Below) in a row
    assert all(a != b for a, b in itertools.pairwise(kinds_))
    for name, v in crossings:
        assert v > high if name == "SensorDataAboveThresholdEvent" else v < low
    # each crossing is a real one: model the Schmitt trigger over the reported values
    side, expected = None, []
    for v in reported:
        if v > high and side != "above":
            side = "above"
            expected.append(("SensorDataAboveThresholdEvent", v))
        elif v < low and side != "below":
            side = "below"
            expected.append(("SensorDataBelowThresholdEvent", v))
    assert crossings == expected


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=-100, max_value=100), min_size=1, max_size=100),
       tol=st.floats(min_value=0, max_value=10))
def test_every_unreported_value_is_within_tolerance_of_the_last_reported(values, tol):
    s = SensorState("t", tolerance=tol)
    for v in values:
        before = s.last
        events = s.update(v)
        if events:
            assert before is None or abs(v - before) > tol
            assert s.last == v
        else:
            assert abs(v - before) <= tol and s.last == before
