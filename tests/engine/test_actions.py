"""ActionRegistry: resolution, argument checks and conversion, result mapping, describe()."""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
from typing import Annotated, Any, Literal

import pytest

from pihub.engine import actions as actions_mod
from pihub.engine.actions import ActionRegistry
from pihub.errors import ActionError
from pihub.messages import Response
from pihub.plugin import Plugin, action


class Gpio(Plugin):
    """A stand-in with typed actions."""

    name = "gpio"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @action
    def on(self, pin: int, mode: Literal["in", "out"] = "out", pull: bool | None = None) -> dict[str, Any]:
        """Drive a pin high.

        Args:
            pin: BCM pin number.
            mode: pin direction; the second line
                continues the description.
            pull: enable the pull-up.
        """
        self.calls.append(("on", pin))
        return {"pin": pin, "mode": mode, "pull": pull}

    @action
    def level(self, volts: float) -> float:
        """Return the level."""
        return volts

    @action
    def flag(self, value: bool) -> bool:
        return value

    @action
    def pins(self, pins: list[int], labels: dict[str, str] | None = None) -> list[Any]:
        return [pins, labels]

    @action
    def either(self, x: int | str) -> Any:
        return x

    @action
    def hinted(self, cmd: Annotated[list[str], "an argv list"]) -> list[str]:
        return cmd

    @action
    def anything(self, value: Any = None, raw=None) -> list[Any]:  # noqa: ANN001 - unannotated on purpose
        return [value, raw]

    @action
    def nothing(self) -> str:
        return "done"

    @action
    def many(self, first: str, *rest: int, sep: str = ",") -> list[Any]:
        return [first, list(rest), sep]

    @action
    def kw(self, a: int = 0, **extra: int) -> dict[str, Any]:
        return {"a": a, **extra}

    @action
    def posonly(self, a: int, b: int = 2, /, c: int = 3) -> list[int]:
        return [a, b, c]

    def not_an_action(self) -> str:
        return "secret"

    @action
    def pair(self, error: Any = None) -> tuple[Any, Any]:
        return {"partial": True}, error

    @action
    def triple(self) -> tuple[int, int, int]:
        return (1, 2, 3)

    @action
    def text(self) -> str:
        return "123"

    @action
    def response(self) -> Response:
        return Response(output="direct", errors=["from the plugin"])

    @action
    def boom(self) -> None:
        raise ValueError("the device caught fire")

    @action
    def bare_boom(self) -> None:
        raise TimeoutError

    @action
    def refuse(self) -> None:
        raise ActionError("pin 99 does not exist (pins: 0..27)")


class Camera(Plugin):
    name = "camera.pi"

    @action
    def take_picture(self, filename: str = "a.jpg") -> str:
        return filename


class Fire(Plugin):
    name = "event"

    @action(aliases=["trigger"])
    def fire(self, type: str = "CustomEvent") -> str:  # noqa: A002
        """Fire an event."""
        return type


@pytest.fixture
def reg() -> ActionRegistry:
    r = ActionRegistry()
    r.register(Gpio())
    return r


def err(resp: Response) -> str:
    assert resp.output is None, resp.output
    assert len(resp.errors) == 1, resp.errors
    return resp.errors[0]


# ----------------------------------------------------------------------------- resolution


def test_action_splits_on_the_last_dot() -> None:
    r = ActionRegistry()
    r.register(Camera())
    resp = r.execute("camera.pi.take_picture", {"filename": "x.jpg"})
    assert resp.errors == [] and resp.output == "x.jpg"


def test_unknown_plugin_suggests_the_closest_name() -> None:
    r = ActionRegistry()
    r.register(Gpio())
    r.register(Camera())

    class Variable(Plugin):
        name = "variable"

        @action
        def get(self) -> None: ...

    r.register(Variable())
    assert err(r.execute("varaible.get")) == "no such plugin 'varaible' (did you mean 'variable'?)"
    assert err(r.execute("zzz.get")) == "no such plugin 'zzz'"


def test_unknown_action_lists_the_actions() -> None:
    r = ActionRegistry()

    class Variable(Plugin):
        name = "variable"

        @action
        def get(self) -> None: ...

        @action
        def set(self) -> None: ...

        @action
        def unset(self) -> None: ...

    r.register(Variable())
    assert err(r.execute("variable.foo")) == (
        "'foo' is not an action of plugin 'variable' (actions: get, set, unset)")
    assert err(r.execute("variable.sett")) == (
        "'sett' is not an action of plugin 'variable' (did you mean 'set'? actions: get, set, unset)")


def test_only_decorated_methods_are_actions(reg: ActionRegistry) -> None:
    assert "'not_an_action' is not an action" in err(reg.execute("gpio.not_an_action"))
    assert "is not an action" in err(reg.execute("gpio.__init__"))
    assert "is not an action" in err(reg.execute("gpio.calls"))


@pytest.mark.parametrize("bad", ["gpio", "gpio.", ".on", ""])
def test_malformed_action_strings(reg: ActionRegistry, bad: str) -> None:
    assert err(reg.execute(bad)) == f"action must be 'plugin.method', not {bad!r}"


def test_non_string_action(reg: ActionRegistry) -> None:
    assert err(reg.execute(42)) == "action must be a 'plugin.method' string, not 42"  # type: ignore[arg-type]


def test_disabled_plugin_says_so_and_how_to_enable() -> None:
    r = ActionRegistry()
    r.register(Gpio(), enabled=False)
    msg = err(r.execute("gpio.on", {"pin": 1}))
    assert msg.startswith("plugin 'gpio' is disabled in the config")
    assert "'gpio:' section" in msg
    assert "gpio" in r.names() and isinstance(r.get("gpio"), Gpio)
    assert r.describe() == []


def test_aliases_call_the_same_method() -> None:
    r = ActionRegistry()
    r.register(Fire())
    assert r.execute("event.trigger", {"type": "X"}).output == "X"
    assert r.execute("event.fire", "Y").output == "Y"
    assert "(actions: fire, trigger)" in err(r.execute("event.nope"))


def test_an_undecorated_override_stays_an_action() -> None:
    class Child(Fire):
        def fire(self, type: str = "Child") -> str:  # noqa: A002
            return "child:" + type

    r = ActionRegistry()
    r.register(Child())
    assert r.execute("event.fire").output == "child:Child"
    assert r.execute("event.trigger").output == "child:Child"


# -------------------------------------------------------------------------- blocking flag


class Pins(Plugin):
    name = "pins"

    @action(aliases=["set_high"], blocking=False)
    def high(self, pin: int) -> int:
        """Set a pin (memory only here)."""
        return pin

    @action
    def sample(self) -> int:
        """Read something slow."""
        return 0


def test_actions_block_unless_declared_not_to() -> None:
    r = ActionRegistry()
    r.register(Pins())
    assert r.is_blocking("pins.high") is False
    assert r.is_blocking("pins.set_high") is False  # an alias shares the method's flag
    assert r.is_blocking("pins.sample") is True


@pytest.mark.parametrize("name", ["procedure.fast", "procedure.async.fast", "pins.nope", "nope.high",
                                  "high", "", "pins.", None, 3])
def test_procedures_and_names_that_do_not_resolve_count_as_blocking(name: Any) -> None:
    r = ActionRegistry()
    r.register(Pins())
    assert r.is_blocking(name) is True


def test_a_disabled_plugins_actions_count_as_blocking() -> None:
    r = ActionRegistry()
    r.register(Pins(), enabled=False)
    assert r.is_blocking("pins.high") is True


def test_an_undecorated_override_does_not_inherit_the_promise_not_to_block() -> None:
    class Slower(Pins):
        def high(self, pin: int) -> int:
            return pin

    class Redeclared(Pins):
        @action(blocking=False)
        def high(self, pin: int) -> int:
            """Still memory only."""
            return pin

    r = ActionRegistry()
    r.register(Slower())
    assert r.is_blocking("pins.high") is True
    assert r.is_blocking("pins.set_high") is True
    r2 = ActionRegistry()
    r2.register(Redeclared())
    assert r2.is_blocking("pins.high") is False


@pytest.mark.parametrize("bad", ["no", 0, None])
def test_blocking_must_be_a_bool(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"blocking=.*must be True or False, not " + re.escape(repr(bad))):
        action(blocking=bad)


def test_the_built_in_actions_that_never_block() -> None:
    """Outputs that touch memory or a pin, and event.fire (a ring push), are declared
    non-blocking; variables (a SQLite commit), the log and shell commands are not."""
    from pihub.backends.gpio import GpioBackend
    from pihub.backends.mock import MockBackend
    from pihub.plugin import MARK
    from pihub.plugins.event import EventPlugin
    from pihub.plugins.logger import LoggerPlugin
    from pihub.plugins.shell import ShellPlugin
    from pihub.plugins.variable import VariablePlugin

    def blocking(cls: type, attr: str) -> bool:
        return getattr(getattr(cls, attr), MARK).blocking

    non_blocking = [(GpioBackend, a) for a in ("on", "off", "toggle", "write", "pwm")]
    non_blocking += [(MockBackend, a) for a in ("emit", "set", "get", "history")]
    non_blocking += [(EventPlugin, "fire")]
    assert [(c.__name__, a) for c, a in non_blocking if blocking(c, a)] == []
    blocking_ones = [(VariablePlugin, a) for a in ("get", "set", "unset")]
    blocking_ones += [(LoggerPlugin, "info"), (ShellPlugin, "exec"), (GpioBackend, "read"), (GpioBackend, "blink")]
    assert [(c.__name__, a) for c, a in blocking_ones if not blocking(c, a)] == []


# -------------------------------------------------------------------------- argument forms


def test_dict_args_are_keywords(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.on", {"pin": 4, "mode": "in"}).output == {"pin": 4, "mode": "in", "pull": None}


def test_list_args_are_positional(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.on", [4, "in", True]).output == {"pin": 4, "mode": "in", "pull": True}


def test_scalar_arg_is_one_positional(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.on", 17).output == {"pin": 17, "mode": "out", "pull": None}


@pytest.mark.parametrize("args", [None, {}, []])
def test_no_args(reg: ActionRegistry, args: Any) -> None:
    assert reg.execute("gpio.nothing", args).output == "done"


def test_var_positional_from_a_list_and_by_name(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.many", ["a", 1, "2"]).output == ["a", [1, 2], ","]
    assert reg.execute("gpio.many", {"first": "a", "rest": [3, 4], "sep": ";"}).output == ["a", [3, 4], ";"]
    assert reg.execute("gpio.many", {"first": "a", "rest": 5}).output == ["a", [5], ","]
    assert err(reg.execute("gpio.many", ["a", 1, "x"])) == (
        "gpio.many: argument 'rest[1]' must be an int, not 'x'")


def test_var_keyword_collects_and_converts_the_rest(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.kw", {"a": 1, "b": "2"}).output == {"a": 1, "b": 2}
    assert err(reg.execute("gpio.kw", {"b": "two"})) == "gpio.kw: argument 'b' must be an int, not 'two'"


def test_positional_only_parameters(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.posonly", [1]).output == [1, 2, 3]
    assert reg.execute("gpio.posonly", {"a": 1, "c": 9}).output == [1, 2, 9]


def test_validation_happens_before_the_call(reg: ActionRegistry) -> None:
    plugin = reg.get("gpio")
    assert isinstance(plugin, Gpio)
    reg.execute("gpio.on", {"pin": "x"})
    reg.execute("gpio.on", {"pin": 1, "bogus": 2})
    reg.execute("gpio.on", {})
    assert plugin.calls == []
    reg.execute("gpio.on", {"pin": 1})
    assert plugin.calls == [("on", 1)]


# ---------------------------------------------------------------------------- argument errors


def test_wrong_type_message(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.on", {"pin": "x"})) == "gpio.on: argument 'pin' must be an int, not 'x'"


def test_missing_required_arguments(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.on", {"mode": "in"})) == "gpio.on: missing required argument 'pin'"
    assert err(reg.execute("gpio.pins")) == "gpio.pins: missing required argument 'pins'"


def test_several_missing_arguments_are_all_named() -> None:
    class Two(Plugin):
        name = "two"

        @action
        def go(self, a: int, b: int) -> None: ...

    r = ActionRegistry()
    r.register(Two())
    assert err(r.execute("two.go")) == "two.go: missing required arguments 'a', 'b'"


def test_unknown_argument_with_did_you_mean(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.on", {"pni": 4})) == "gpio.on: unknown argument 'pni' (did you mean 'pin'?)"


def test_unknown_argument_without_a_close_name_lists_them(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.on", {"pin": 1, "zzzz": 4})) == (
        "gpio.on: unknown argument 'zzzz' (arguments: pin, mode, pull)")
    assert err(reg.execute("gpio.nothing", {"x": 1})) == (
        "gpio.nothing: unknown argument 'x' (it takes no arguments)")


def test_non_string_argument_names(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.on", {1: 2})) == "gpio.on: argument names must be strings, not 1"


def test_too_many_positional_arguments(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.on", [1, "in", True, 4])) == (
        "gpio.on: takes at most 3 positional arguments (pin, mode, pull), got 4")
    assert err(reg.execute("gpio.level", [1.0, 2.0])) == (
        "gpio.level: takes at most 1 positional argument (volts), got 2")
    assert err(reg.execute("gpio.kw", [1, 2])) == "gpio.kw: takes at most 1 positional argument (a), got 2"


def test_scalar_for_an_action_without_positional_parameters() -> None:
    class Setter(Plugin):
        name = "setter"

        @action
        def set(self, **values: Any) -> dict[str, Any]:
            return values

    r = ActionRegistry()
    r.register(Setter())
    assert err(r.execute("setter.set", 5)) == (
        "setter.set: takes no positional arguments, got 1 (pass a dict of named arguments)")


def test_long_bad_values_are_shortened(reg: ActionRegistry) -> None:
    msg = err(reg.execute("gpio.on", {"pin": "x" * 500}))
    assert msg.startswith("gpio.on: argument 'pin' must be an int, not 'xxx") and msg.endswith("...")
    assert len(msg) < 120


# ------------------------------------------------------------------------- type conversion


@pytest.mark.parametrize(("raw", "want"), [(5, 5), ("5", 5), (" 12 ", 12), (5.0, 5), ("-3", -3)])
def test_int_conversion(reg: ActionRegistry, raw: Any, want: int) -> None:
    out = reg.execute("gpio.on", {"pin": raw}).output
    assert out["pin"] == want and type(out["pin"]) is int


@pytest.mark.parametrize("raw", [True, 5.5, "5.5", "five", None, [5], "0x10"])
def test_int_rejections(reg: ActionRegistry, raw: Any) -> None:
    assert err(reg.execute("gpio.on", {"pin": raw})) == f"gpio.on: argument 'pin' must be an int, not {raw!r}"


@pytest.mark.parametrize(("raw", "want"), [(3, 3.0), (2.5, 2.5), ("1e3", 1000.0), ("-0.5", -0.5)])
def test_float_accepts_ints_and_numeric_strings(reg: ActionRegistry, raw: Any, want: float) -> None:
    out = reg.execute("gpio.level", {"volts": raw}).output
    assert out == want and type(out) is float


@pytest.mark.parametrize("raw", [True, "high", None])
def test_float_rejections(reg: ActionRegistry, raw: Any) -> None:
    assert err(reg.execute("gpio.level", {"volts": raw})) == (
        f"gpio.level: argument 'volts' must be a float, not {raw!r}")


@pytest.mark.parametrize(("raw", "want"), [
    (True, True), (False, False), (1, True), (0, False), ("true", True), ("False", False),
    ("yes", True), ("off", False), ("1", True), ("0", False),
])
def test_bool_conversion(reg: ActionRegistry, raw: Any, want: bool) -> None:
    assert reg.execute("gpio.flag", {"value": raw}).output is want


@pytest.mark.parametrize("raw", [2, "maybe", None, 1.0])
def test_bool_rejections(reg: ActionRegistry, raw: Any) -> None:
    assert err(reg.execute("gpio.flag", {"value": raw})) == (
        f"gpio.flag: argument 'value' must be a bool (true or false), not {raw!r}")


def test_typed_list_and_dict(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.pins", {"pins": ["1", 2], "labels": {"a": "b"}}).output == [[1, 2], {"a": "b"}]
    assert reg.execute("gpio.pins", {"pins": (3, 4)}).output == [[3, 4], None]
    assert err(reg.execute("gpio.pins", {"pins": [1, "x"]})) == (
        "gpio.pins: argument 'pins[1]' must be an int, not 'x'")
    assert err(reg.execute("gpio.pins", {"pins": "1,2"})) == (
        "gpio.pins: argument 'pins' must be a list[int], not '1,2'")
    assert err(reg.execute("gpio.pins", {"pins": [], "labels": {"a": 1}})) == (
        "gpio.pins: argument \"labels['a']\" must be a str, not 1")


def test_literal_choices(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.on", {"pin": 1, "mode": "sideways"})) == (
        "gpio.on: argument 'mode' must be one of 'in', 'out', not 'sideways'")


def test_optional_accepts_null_and_converts_otherwise(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.on", {"pin": 1, "pull": None}).output["pull"] is None
    assert reg.execute("gpio.on", {"pin": 1, "pull": "on"}).output["pull"] is True
    assert err(reg.execute("gpio.on", {"pin": 1, "pull": "up"})) == (
        "gpio.on: argument 'pull' must be a bool (true or false) or null, not 'up'")


def test_union_prefers_an_exact_member(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.either", {"x": "5"}).output == "5"
    assert reg.execute("gpio.either", {"x": 5}).output == 5
    assert reg.execute("gpio.either", {"x": 5.0}).output == 5
    assert err(reg.execute("gpio.either", {"x": [1]})) == (
        "gpio.either: argument 'x' must be an int or a str, not [1]")


def test_annotated_hint_is_appended_to_type_errors(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.hinted", {"cmd": "ls -l"})) == (
        "gpio.hinted: argument 'cmd' must be a list[str], not 'ls -l' (an argv list)")
    assert reg.execute("gpio.hinted", {"cmd": ["ls", "-l"]}).output == ["ls", "-l"]


def test_any_and_unannotated_pass_values_unchanged(reg: ActionRegistry) -> None:
    value = {"nested": [1, "2", None]}
    assert reg.execute("gpio.anything", {"value": value, "raw": "x"}).output == [value, "x"]


# ------------------------------------------------------------------------------ results


def test_plain_value_is_the_output(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.nothing") == Response(output="done")


def test_string_output_is_never_json_decoded(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.text").output == "123"


def test_pair_with_none_error_is_output_only(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.pair") == Response(output={"partial": True})
    assert reg.execute("gpio.pair", {"error": ""}) == Response(output={"partial": True})


def test_pair_with_an_error_keeps_the_output(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.pair", {"error": "half done"}) == Response(output={"partial": True},
                                                                       errors=["half done"])
    assert reg.execute("gpio.pair", {"error": ["a", "b"]}).errors == ["a", "b"]


def test_other_tuples_are_plain_outputs(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.triple") == Response(output=(1, 2, 3))


def test_a_returned_response_is_kept(reg: ActionRegistry) -> None:
    assert reg.execute("gpio.response") == Response(output="direct", errors=["from the plugin"])


def test_exceptions_become_errors_and_are_logged(
        reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pihub.actions"):
        resp = reg.execute("gpio.boom")
    assert err(resp) == "ValueError: the device caught fire"
    rec = [r for r in caplog.records if r.name == "pihub.actions"]
    assert len(rec) == 1 and rec[0].levelno == logging.WARNING
    assert "gpio.boom" in rec[0].getMessage()
    assert rec[0].exc_info is not None and rec[0].exc_info[0] is ValueError


def test_exception_without_message(reg: ActionRegistry) -> None:
    assert err(reg.execute("gpio.bare_boom")) == "TimeoutError"


def test_action_error_is_a_user_error_prefixed_with_the_action(
        reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pihub.actions"):
        resp = reg.execute("gpio.refuse")
    assert err(resp) == "gpio.refuse: pin 99 does not exist (pins: 0..27)"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_base_exceptions_are_not_swallowed() -> None:
    class Quit(Plugin):
        name = "quit"

        @action
        def now(self) -> None:
            raise KeyboardInterrupt

    r = ActionRegistry()
    r.register(Quit())
    with pytest.raises(KeyboardInterrupt):
        r.execute("quit.now")


# --------------------------------------------------------------------------- procedures


class FakeProcedures:
    def __init__(self, result: Any = None, fail: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.contexts: list[Any] = []
        self.result = result if result is not None else Response(output="ran")
        self.fail = fail

    def __call__(self, name: str, kwargs: dict[str, Any], context: Any) -> Any:
        self.calls.append((name, kwargs))
        self.contexts.append(context)
        if self.fail:
            raise RuntimeError("engine broke")
        return self.result


@pytest.mark.parametrize(("action_name", "proc"), [
    ("procedure.lights", "lights"),
    ("procedure.sync.lights", "lights"),
    ("procedure.async.lights", "lights"),
    ("procedure.scripts.lights", "scripts.lights"),
    ("procedure.sync", "sync"),
])
def test_procedure_routing(action_name: str, proc: str) -> None:
    r = ActionRegistry()
    fake = FakeProcedures()
    r.set_procedure_caller(fake)
    assert r.execute(action_name, {"level": 3}) == Response(output="ran")
    assert fake.calls == [(proc, {"level": 3})]


def test_procedure_caller_gets_the_hook_context_and_plugins_never_do() -> None:
    r = ActionRegistry()
    fake = FakeProcedures()
    r.set_procedure_caller(fake)
    r.execute("procedure.p", {}, {"pin": 17})
    r.execute("procedure.p")
    assert fake.contexts == [{"pin": 17}, None]


def test_procedure_args_none_is_empty_and_others_are_refused() -> None:
    r = ActionRegistry()
    fake = FakeProcedures()
    r.set_procedure_caller(fake)
    r.execute("procedure.p")
    assert fake.calls == [("p", {})]
    assert err(r.execute("procedure.p", [1, 2])) == (
        "procedure.p: procedure arguments must be a dict of names to values, not [1, 2]")
    assert len(fake.calls) == 1


def test_procedure_without_engine_or_name() -> None:
    r = ActionRegistry()
    assert err(r.execute("procedure.p")) == "no procedure engine is set up, cannot run 'procedure.p'"
    r.set_procedure_caller(FakeProcedures())
    assert err(r.execute("procedure.")) == "procedure name missing in 'procedure.' (use 'procedure.NAME')"


def test_procedure_caller_failures_and_plain_results() -> None:
    r = ActionRegistry()
    r.set_procedure_caller(FakeProcedures(fail=True))
    assert err(r.execute("procedure.p")) == "RuntimeError: engine broke"
    r.set_procedure_caller(FakeProcedures(result=42))
    assert r.execute("procedure.p") == Response(output=42)


def test_procedure_is_suggested_when_there_is_an_engine() -> None:
    r = ActionRegistry()
    assert err(r.execute("procedur.x")) == "no such plugin 'procedur'"
    r.set_procedure_caller(FakeProcedures())
    assert err(r.execute("procedur.x")) == "no such plugin 'procedur' (did you mean 'procedure'?)"


# ----------------------------------------------------------------------------- registry


def test_name_clash_names_both_plugins() -> None:
    class OtherGpio(Plugin):
        name = "gpio"

    r = ActionRegistry()
    r.register(Gpio())
    msg = "plugin name 'gpio' is taken by Gpio; cannot also register OtherGpio under it"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        r.register(OtherGpio())
    assert isinstance(r.get("gpio"), Gpio)


@pytest.mark.parametrize("bad", ["", "Gpio", "gpio-2", "a..b", ".a", "2pi"])
def test_invalid_plugin_names(bad: str) -> None:
    class Bad(Plugin):
        name = bad

    with pytest.raises(ValueError, match="plugin name must be lower-case dotted identifiers"):
        ActionRegistry().register(Bad())


def test_procedure_is_a_reserved_name() -> None:
    class Proc(Plugin):
        name = "procedure"

    with pytest.raises(ValueError, match="plugin name 'procedure' is reserved"):
        ActionRegistry().register(Proc())


def test_unsupported_annotations_are_refused_at_registration() -> None:
    class Weird(Plugin):
        name = "weird"

        @action
        def go(self, when: complex) -> None: ...

    with pytest.raises(TypeError, match=r"weird\.go: argument 'when': unsupported annotation"):
        ActionRegistry().register(Weird())


def test_dict_with_non_str_keys_is_refused_at_registration() -> None:
    class Weird(Plugin):
        name = "weird"

        @action
        def go(self, table: dict[int, str]) -> None: ...

    with pytest.raises(TypeError, match="dict keys must be str"):
        ActionRegistry().register(Weird())


def test_alias_clash_is_refused() -> None:
    class Clash(Plugin):
        name = "clash"

        @action(aliases=["b"])
        def a(self) -> None: ...

        @action
        def b(self) -> None: ...

    with pytest.raises(TypeError, match="clash"):
        ActionRegistry().register(Clash())


def test_unregister_get_names_contains(reg: ActionRegistry) -> None:
    reg.register(Camera())
    assert reg.names() == ["camera.pi", "gpio"]
    assert "gpio" in reg and "nope" not in reg
    with pytest.raises(ActionError, match=r"no such plugin 'gpoi' \(did you mean 'gpio'\?\)"):
        reg.get("gpoi")
    plugin = reg.unregister("gpio")
    assert isinstance(plugin, Gpio)
    assert reg.unregister("gpio") is None
    assert reg.names() == ["camera.pi"]
    assert err(reg.execute("gpio.on", 1)) == "no such plugin 'gpio'"


def test_execute_does_not_inspect_signatures_per_call(
        reg: ActionRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*a: Any, **k: Any) -> Any:
        raise AssertionError("signature inspected at call time")

    monkeypatch.setattr(inspect, "signature", forbidden)
    monkeypatch.setattr(actions_mod.typing, "get_type_hints", forbidden)
    assert reg.execute("gpio.on", {"pin": "3"}).output["pin"] == 3


def test_concurrent_execute_and_register() -> None:
    r = ActionRegistry()
    r.register(Gpio())
    errors: list[str] = []

    def call(n: int) -> None:
        for i in range(200):
            resp = r.execute("gpio.on", {"pin": str(i)})
            if resp.output != {"pin": i, "mode": "out", "pull": None}:
                errors.append(repr(resp))

    def churn() -> None:
        for i in range(50):
            class P(Plugin):
                name = f"p{i}"

                @action
                def go(self) -> int:
                    return 1

            r.register(P())

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)] + [threading.Thread(target=churn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(r.names()) == 51


# ----------------------------------------------------------------------------- describe


def test_describe_lists_every_action_sorted_and_json_serialisable(reg: ActionRegistry) -> None:
    reg.register(Fire())
    desc = reg.describe()
    json.dumps(desc)
    names = [d["action"] for d in desc]
    assert names == sorted(names)
    assert "gpio.on" in names and "event.fire" in names
    assert "gpio.not_an_action" not in names and "event.trigger" not in names


def test_describe_entry_shape(reg: ActionRegistry) -> None:
    on = next(d for d in reg.describe() if d["action"] == "gpio.on")
    assert on["doc"].startswith("Drive a pin high.")
    assert on["aliases"] == []
    assert on["args"] == {
        "pin": {"type": "int", "required": True, "default": None, "doc": "BCM pin number."},
        "mode": {"type": "'in' | 'out'", "required": False, "default": "out", "choices": ["in", "out"],
                 "doc": "pin direction; the second line continues the description."},
        "pull": {"type": "bool | None", "required": False, "default": None, "doc": "enable the pull-up."},
    }


def test_describe_variadics_and_types(reg: ActionRegistry) -> None:
    by = {d["action"]: d for d in reg.describe()}
    many = by["gpio.many"]["args"]
    assert many["rest"]["variadic"] == "positional" and many["rest"]["type"] == "int"
    assert many["rest"]["required"] is False
    assert by["gpio.kw"]["args"]["extra"]["variadic"] == "keyword"
    assert by["gpio.pins"]["args"]["pins"]["type"] == "list[int]"
    assert by["gpio.pins"]["args"]["labels"]["type"] == "dict[str, str] | None"
    assert by["gpio.anything"]["args"]["raw"]["type"] == "any"


def test_describe_aliases_and_odd_defaults() -> None:
    marker = object()

    class Odd(Plugin):
        name = "odd"

        @action
        def go(self, x: Any = marker, y: Any = (1, 2)) -> None: ...

    r = ActionRegistry()
    r.register(Odd())
    r.register(Fire())
    by = {d["action"]: d for d in r.describe()}
    assert by["event.fire"]["aliases"] == ["event.trigger"]
    assert by["odd.go"]["args"]["x"]["default"] == repr(marker)
    assert by["odd.go"]["args"]["y"]["default"] == [1, 2]
    json.dumps(by)


def test_describe_returns_a_copy(reg: ActionRegistry) -> None:
    reg.describe()[0]["args"].clear()
    assert reg.describe()[0]["args"]


def test_side_effects_follow_the_plugin_flag() -> None:
    class Pure(Plugin):
        name = "pure"
        side_effects = False

        @action
        def go(self) -> None: ...

    r = ActionRegistry()
    r.register(Gpio())
    r.register(Pure())
    r.register(Camera(), enabled=False)
    assert r.has_side_effects("gpio.on") is True  # the default: hardware, processes, network
    assert r.has_side_effects("pure.go") is False
    assert r.has_side_effects("camera.pi.take_picture") is False  # disabled: running it only errs
    assert r.has_side_effects("nope.go") is False
    assert r.has_side_effects("procedure.x") is False
