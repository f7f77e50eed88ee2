"""variable.get/set/unset: Platypush output shapes, persistence, change events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pihub.engine.actions import ActionRegistry
from pihub.events import Event
from pihub.messages import Response
from pihub.plugins.variable import VariablePlugin
from pihub.store import Store


class Hub:
    """A registry with the variable plugin on a real store, recording emitted events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[Event] = []
        self.store = Store(path)
        self.registry = ActionRegistry()
        self.registry.register(VariablePlugin(self.store, self.events.append))

    def run(self, action: str, args: object = None) -> Response:
        return self.registry.execute(action, args)

    def changes(self) -> list[tuple[str, object]]:
        out = [(e.args["name"], e.args["value"]) for e in self.events]
        assert all(e.type.name == "VariableChangedEvent" and e.source == "variable" for e in self.events)
        self.events.clear()
        return out


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path / "pihub.db")
    yield h
    h.store.close()


def test_set_returns_the_values_and_get_answers_name_value(hub: Hub) -> None:
    assert hub.run("variable.set", {"colour": "blue", "n": 3}) == Response(output={"colour": "blue", "n": 3})
    assert hub.run("variable.get", {"name": "colour"}) == Response(output={"colour": "blue"})
    assert hub.run("variable.get", "n").output == {"n": 3}


def test_get_without_a_name_returns_all(hub: Hub) -> None:
    hub.run("variable.set", {"b": [1, {"x": None}], "a": True})
    assert hub.run("variable.get").output == {"a": True, "b": [1, {"x": None}]}
    assert hub.run("variable.get", {}).output == {"a": True, "b": [1, {"x": None}]}


def test_get_missing_answers_the_default(hub: Hub) -> None:
    assert hub.run("variable.get", {"name": "nope"}).output == {"nope": None}
    assert hub.run("variable.get", {"name": "nope", "default": 5}).output == {"nope": 5}
    assert hub.run("variable.get", {"name": "nope", "default_value": "x"}).output == {"nope": "x"}
    assert hub.run("variable.get", {"name": "a", "default": 1, "default_value": 2}).errors == [
        "variable.get: give 'default' or 'default_value', not both"]


def test_values_keep_their_types(hub: Hub) -> None:
    hub.run("variable.set", {"s": "123", "f": 1.5, "i": 2})
    assert hub.run("variable.get").output == {"f": 1.5, "i": 2, "s": "123"}


def test_variables_survive_a_restart(tmp_path: Path) -> None:
    h = Hub(tmp_path / "pihub.db")
    h.run("variable.set", {"colour": "blue", "cfg": {"k": [1, 2]}})
    h.store.close()
    h2 = Hub(tmp_path / "pihub.db")
    try:
        assert h2.run("variable.get", {"name": "cfg"}).output == {"cfg": {"k": [1, 2]}}
        assert h2.run("variable.get").output == {"cfg": {"k": [1, 2]}, "colour": "blue"}
    finally:
        h2.store.close()


def test_each_change_emits_an_event_and_no_change_emits_none(hub: Hub) -> None:
    hub.run("variable.set", {"a": 1, "b": 2})
    assert hub.changes() == [("a", 1), ("b", 2)]
    hub.run("variable.set", {"a": 1, "b": 3})
    assert hub.changes() == [("b", 3)]


def test_unset_by_name_and_by_list(hub: Hub) -> None:
    hub.run("variable.set", {"a": 1, "b": 2, "c": 3})
    hub.changes()
    assert hub.run("variable.unset", {"name": "a"}) == Response(output=["a"])
    assert hub.run("variable.unset", ["b", "zz"]) == Response(output=["b"])
    assert hub.run("variable.unset", "zz") == Response(output=[])
    assert hub.run("variable.unset", {"names": ["c"]}).output == ["c"]
    assert hub.changes() == [("a", None), ("b", None), ("c", None)]
    assert hub.run("variable.get").output == {}


def test_unset_needs_a_name(hub: Hub) -> None:
    assert hub.run("variable.unset").errors == [
        "variable.unset: no variable named (pass 'name' or a list of names)"]


def test_set_null_removes_the_variable(hub: Hub) -> None:
    hub.run("variable.set", {"a": 1})
    hub.changes()
    assert hub.run("variable.set", {"a": None}).output == {"a": None}
    assert hub.changes() == [("a", None)]
    assert hub.run("variable.get", {"name": "a", "default": 7}).output == {"a": 7}


def test_non_json_values_are_refused_and_nothing_is_written(hub: Hub) -> None:
    resp = hub.run("variable.set", {"ok": 1, "bad": float("inf")})
    assert resp.output is None
    assert resp.errors == ["variable.set: variable 'bad': value must be JSON data (null, bool, number, str, "
                           "list, dict with str keys), not inf"]
    assert hub.run("variable.get").output == {}
    assert hub.changes() == []


def test_a_value_that_is_not_utf8_names_the_variable_and_writes_nothing(hub: Hub) -> None:
    path = "/inbox/" + "x" * 5000 + "bad\udcff\udcfe"  # os.fsdecode of a file name that is not UTF-8
    resp = hub.run("variable.set", {"ok": 1, "last": path})
    assert resp.output is None
    [error] = resp.errors
    assert error.startswith("variable.set: variable 'last': value '/inbox/xxx")
    assert error.endswith("... is not valid UTF-8 text (it holds undecodable bytes, e.g. a file name that is not "
                          "UTF-8)")
    assert len(error) < 200  # the 5 kB path is shortened
    assert hub.run("variable.get").output == {}
    assert hub.changes() == []


def test_a_name_that_is_not_utf8_is_an_error_naming_it_in_every_action(hub: Hub) -> None:
    name = "last\udfff"  # a key decoded from bytes that were not UTF-8
    said = "variable name 'last\\udfff' is not valid UTF-8 text (it holds undecodable bytes)"
    for action, args in (("variable.get", {"name": name}), ("variable.set", {name: 1}),
                         ("variable.set", {name: None}), ("variable.unset", {"name": name})):
        assert hub.run(action, args).errors == [f"{action}: {said}"], action
    assert hub.run("variable.get").output == {}


def test_set_needs_values(hub: Hub) -> None:
    assert hub.run("variable.set", {}).errors[0].startswith("variable.set: no variables given")
    assert hub.run("variable.set", 5).errors[0].startswith("variable.set: takes no positional arguments")


def test_get_empty_name(hub: Hub) -> None:
    assert hub.run("variable.get", {"name": ""}).errors == [
        "variable.get: name must be a non-empty str, not ''"]


def test_a_failing_emit_does_not_fail_the_action(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("ring closed")

    with Store(tmp_path / "pihub.db") as store:
        r = ActionRegistry()
        r.register(VariablePlugin(store, broken))
        assert r.execute("variable.set", {"a": 1}) == Response(output={"a": 1})
        assert store.get_variables() == {"a": 1}
    assert any("VariableChangedEvent" in rec.getMessage() for rec in caplog.records)


def test_replay_may_run_variable_actions(hub: Hub) -> None:
    assert not hub.registry.has_side_effects("variable.set")
