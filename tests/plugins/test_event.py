"""event.fire / event.trigger: catalogue lookup, emission, returned id."""

from __future__ import annotations

import re

import pytest

from pihub.engine.actions import ActionRegistry
from pihub.events import Event
from pihub.plugins.event import EventPlugin


@pytest.fixture
def fired() -> list[Event]:
    return []


@pytest.fixture
def reg(fired: list[Event]) -> ActionRegistry:
    r = ActionRegistry()
    r.register(EventPlugin(fired.append))
    return r


def test_fire_defaults_to_custom_event_and_returns_its_id(reg: ActionRegistry, fired: list[Event]) -> None:
    resp = reg.execute("event.fire", {"subtype": "doorbell", "floor": 2})
    assert resp.errors == []
    assert re.fullmatch(r"[0-9a-f]{32}", resp.output)
    assert len(fired) == 1
    ev = fired[0]
    assert ev.type.name == "CustomEvent" and ev.args == {"subtype": "doorbell", "floor": 2}
    assert ev.id == resp.output and ev.source == "event" and ev.ts_ns > 0


def test_trigger_is_an_alias(reg: ActionRegistry, fired: list[Event]) -> None:
    resp = reg.execute("event.trigger", {"type": "GPIOEvent", "pin": 17, "value": 1})
    assert resp.errors == []
    assert fired[0].type.name == "GPIOEvent" and fired[0].args == {"pin": 17, "value": 1}


def test_platypush_paths_are_accepted(reg: ActionRegistry, fired: list[Event]) -> None:
    reg.execute("event.fire", {"type": "platypush.message.event.sensor.SensorDataChangeEvent",
                               "data": {"t": 21}, "source": "dht"})
    assert fired[0].type.name == "SensorDataChangeEvent"
    assert fired[0].args == {"data": {"t": 21}, "source": "dht"}


def test_scalar_arg_is_the_type(reg: ActionRegistry, fired: list[Event]) -> None:
    assert reg.execute("event.fire", "ApplicationStartedEvent").errors == []
    assert fired[0].type.name == "ApplicationStartedEvent"


def test_unknown_type_suggests_from_the_catalogue(reg: ActionRegistry, fired: list[Event]) -> None:
    resp = reg.execute("event.fire", {"type": "CustomEvnt"})
    assert resp.output is None
    assert resp.errors == ["event.fire: unknown event type 'CustomEvnt' (did you mean 'CustomEvent'?)"]
    assert fired == []


def test_abstract_types_are_refused_with_their_subtypes(reg: ActionRegistry, fired: list[Event]) -> None:
    resp = reg.execute("event.fire", {"type": "SensorDataEvent"})
    assert resp.errors == ["event.fire: event type 'SensorDataEvent' is abstract; fire one of its subtypes: "
                           "SensorDataChangeEvent, SensorDataAboveThresholdEvent, "
                           "SensorDataBelowThresholdEvent"]
    assert fired == []


def test_each_fire_has_a_new_id(reg: ActionRegistry, fired: list[Event]) -> None:
    ids = {reg.execute("event.fire", {"subtype": "x"}).output for _ in range(20)}
    assert len(ids) == 20 and {e.id for e in fired} == ids


def test_describe_shows_the_alias(reg: ActionRegistry) -> None:
    (desc,) = reg.describe()
    assert desc["action"] == "event.fire" and desc["aliases"] == ["event.trigger"]
    assert desc["args"]["type"]["default"] == "CustomEvent"


def test_replay_may_run_event_actions(reg: ActionRegistry) -> None:
    assert not reg.has_side_effects("event.fire")
