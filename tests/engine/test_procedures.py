"""Procedure compilation and execution (pihub/engine/procedures.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

from pihub.clock import ManualClock
from pihub.engine.conditions import compile_condition
from pihub.engine.hooks import Hook
from pihub.engine.procedures import (
    BACKGROUND_LOG_BURST,
    BACKGROUND_LOG_INTERVAL_S,
    ActionStep,
    IfStep,
    LoopStep,
    Procedure,
    Runner,
    Steps,
    compile_procedure,
    compile_steps,
    parse_procedure_key,
    procedure_name,
)
from pihub.errors import ConfigProblem, ConfigProblems
from pihub.events import Event
from pihub.messages import Response


class FakeExecutor:
    """Records every call; ``handlers`` map an action to ``fn(args, context) -> Response``.

    Unknown actions echo: ``{"value": v}`` args give output ``v``, other args are the output.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.contexts: list[dict[str, Any]] = []
        self.targets: list[str] = []
        self.handlers: dict[str, Callable[[Any, Mapping[str, Any]], Response]] = {}
        self._lock = threading.Lock()

    def __call__(self, action: str, args: Any, context: Mapping[str, Any], target: str = "") -> Response:
        with self._lock:
            self.calls.append((action, args))
            self.contexts.append(dict(context))
            self.targets.append(target)
        if action in self.handlers:
            return self.handlers[action](args, context)
        if isinstance(args, dict) and set(args) == {"value"}:
            return Response(output=args["value"])
        return Response(output=args)

    def args_of(self, action: str) -> list[Any]:
        return [a for name, a in self.calls if name == action]


class DeferredSpawn:
    """A spawn that queues tasks; ``run_all`` runs them later, after the submitting step."""

    def __init__(self) -> None:
        self.tasks: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        self.tasks.append(fn)

    def run_all(self) -> None:
        while self.tasks:
            self.tasks.pop(0)()


def inline_spawn(fn: Callable[[], None]) -> None:
    fn()


@pytest.fixture
def ex() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
def runner(ex: FakeExecutor) -> Runner:
    return Runner(ex, inline_spawn)


def run(runner: Runner, raw: list[Any], **context: Any) -> Response:
    return runner.run(compile_steps(raw), context)


def echo(value: Any) -> dict[str, Any]:
    return {"action": "shell.echo", "args": {"value": value}}


# ---------------------------------------------------------------- PLATYPUSH.md §5.1 verified table


def test_action_output_then_return_expression(runner: Runner, ex: FakeExecutor) -> None:
    ex.handlers["shell.exec"] = lambda args, ctx: Response(output=5)
    resp = run(runner, [{"action": "shell.exec", "args": {"cmd": "echo 5"}}, "return ${output * 2}"])
    assert resp.output == 10
    assert resp.errors == []
    assert ex.calls == [("shell.exec", {"cmd": "echo 5"})]


def test_dict_output_keys_are_merged_into_the_scope(runner: Runner, ex: FakeExecutor) -> None:
    ex.handlers["shell.exec"] = lambda args, ctx: Response(output={"temp": 21.5, "ok": True})
    resp = run(runner, [{"action": "shell.exec"}, {"return": "${temp} ${ok} ${output['temp']}"}])
    assert resp.output == "21.5 True 21.5"


def test_loop_set_accumulates(runner: Runner) -> None:
    resp = run(runner, [{"set": {"acc": 0}}, {"for i in ${range(4)}": [{"set": {"acc": "${acc + i}"}}]},
                        "return ${acc}"])
    assert resp.output == 6


def test_while_loop(runner: Runner) -> None:
    resp = run(runner, [{"set": {"k": 0}}, {"while ${k < 3}": [{"set": {"k": "${k + 1}"}}]}, "return ${k}"])
    assert resp.output == 3


# ---------------------------------------------------------------- PLATYPUSH.md §5.5 bugs, fixed


def test_every_step_of_a_loop_body_sees_the_current_loop_value(runner: Runner) -> None:
    resp = run(runner, [
        {"set": {"tr": []}},
        {"for i in ${[1, 2, 3]}": [
            {"action": "shell.true"},
            echo("${i}"),
            {"set": {"tr": "${tr + [output]}"}},
        ]},
        "return ${tr}",
    ])
    assert resp.output == [1, 2, 3]


def test_loop_value_survives_an_if_at_the_start_of_the_body(runner: Runner) -> None:
    resp = run(runner, [
        {"set": {"tr": []}},
        {"for i in ${range(1, 6)}": [
            {"if ${i == 2}": [echo("two")]},
            {"set": {"tr": "${tr + [i]}"}},
        ]},
        "return ${tr}",
    ])
    assert resp.output == [1, 2, 3, 4, 5]


def test_continue_inside_if_skips_only_that_iteration(runner: Runner) -> None:
    resp = run(runner, [
        {"set": {"acc": 0}},
        {"for i in ${range(1, 5)}": [
            {"if ${i == 2}": ["continue"]},
            {"set": {"acc": "${acc + i}"}},
        ]},
        "return ${acc}",
    ])
    assert resp.output == 8


def test_break_inside_if_ends_the_loop_after_the_previous_iteration(runner: Runner) -> None:
    resp = run(runner, [
        {"for i in ${range(1, 6)}": [
            {"if ${i == 3}": ["break"]},
            {"set": {"last": "${i}"}},
        ]},
        "return ${last}",
    ])
    assert resp.output == 2


def test_break_deep_inside_nested_ifs_acts_on_the_loop(runner: Runner, ex: FakeExecutor) -> None:
    resp = run(runner, [
        {"for i in ${range(10)}": [
            {"if ${i >= 0}": [{"if ${i > 1}": [{"if ${True}": ["break"]}]}]},
            echo("${i}"),
        ]},
        "return ${i}",
    ])
    assert ex.args_of("shell.echo") == [{"value": 0}, {"value": 1}]
    assert resp.output == 2


def test_break_in_an_inner_loop_leaves_the_outer_loop_running(runner: Runner) -> None:
    resp = run(runner, [
        {"set": {"pairs": [], "after": []}},
        {"for i in ${range(3)}": [
            {"for j in ${range(3)}": [
                {"if ${j == 1}": ["break"]},
                {"set": {"pairs": "${pairs + [[i, j]]}"}},
            ]},
            {"set": {"after": "${after + [i]}"}},
        ]},
        {"return": {"pairs": "${pairs}", "after": "${after}"}},
    ])
    assert resp.output == {"pairs": [[0, 0], [1, 0], [2, 0]], "after": [0, 1, 2]}


def test_continue_in_an_inner_loop_does_not_skip_the_outer_body(runner: Runner) -> None:
    resp = run(runner, [
        {"set": {"n": 0, "m": 0}},
        {"for i in ${range(2)}": [
            {"for j in ${range(3)}": [{"if ${j != 1}": ["continue"]}, {"set": {"n": "${n + 1}"}}]},
            {"set": {"m": "${m + 1}"}},
        ]},
        "return ${[n, m]}",
    ])
    assert resp.output == [2, 2]


def test_return_from_inside_a_loop_ends_the_procedure(runner: Runner, ex: FakeExecutor) -> None:
    resp = run(runner, [
        {"for i in ${range(10)}": [
            {"while ${True}": [{"if ${i == 3}": ["return ${i * 10}"]}, "break"]},
            echo("${i}"),
        ]},
        echo("after"),
    ])
    assert resp.output == 30
    assert ex.args_of("shell.echo") == [{"value": 0}, {"value": 1}, {"value": 2}]


def test_set_inside_if_and_loop_is_seen_after_it(runner: Runner) -> None:
    resp = run(runner, [
        {"if ${True}": [{"set": {"a": 1}}]},
        {"for x in ${[5]}": [{"set": {"b": "${x}"}}]},
        "return ${[a, b, x]}",
    ])
    assert resp.output == [1, 5, 5]


# ---------------------------------------------------------------- steps and scope


def test_if_elif_else_as_separate_items(runner: Runner) -> None:
    steps = compile_steps([
        {"if ${t < 10}": ["return cold"]},
        {"elif ${t < 20}": ["return mild"]},
        {"else": ["return hot"]},
    ])
    assert [runner.run(steps, {"t": t}).output for t in (5, 15, 25)] == ["cold", "mild", "hot"]


def test_if_elif_else_as_keys_of_one_mapping(runner: Runner) -> None:
    steps = compile_steps([{"if ${t < 10}": ["return cold"], "elif ${t < 20}": ["return mild"],
                            "else": ["return hot"]}])
    assert len(steps) == 1
    assert [runner.run(steps, {"t": t}).output for t in (5, 15, 25)] == ["cold", "mild", "hot"]


def test_if_without_else_runs_nothing_when_false(runner: Runner, ex: FakeExecutor) -> None:
    resp = run(runner, [{"if x > 1": [echo(1)]}], x=0)
    assert ex.calls == []
    assert resp.output is None


def test_set_assigns_in_order(runner: Runner) -> None:
    assert run(runner, [{"set": {"a": 2, "b": "${a * 3}"}}, "return ${b}"]).output == 6


def test_for_unpacks_several_names(runner: Runner) -> None:
    resp = run(runner, [{"set": {"out": []}},
                        {"for k, v in ${sorted(d.items())}": [{"set": {"out": "${out + [k + str(v)]}"}}]},
                        "return ${out}"], d={"b": 2, "a": 1})
    assert resp.output == ["a1", "b2"]


def test_for_accepts_a_bare_expression(runner: Runner) -> None:
    assert run(runner, [{"set": {"n": 0}}, {"for x in xs": [{"set": {"n": "${n + x}"}}]}, "return ${n}"],
               xs=[1, 2]).output == 3


def test_output_is_the_last_action_output_without_return(runner: Runner) -> None:
    assert run(runner, [echo(1), {"set": {"z": 9}}, echo(2)]).output == 2


def test_bare_return_gives_a_null_output(runner: Runner, ex: FakeExecutor) -> None:
    resp = run(runner, [echo(1), "return", echo(2)])
    assert resp.output is None
    assert len(ex.calls) == 1


def test_return_mapping_is_a_template(runner: Runner) -> None:
    assert run(runner, [{"return": {"v": "${x}", "s": "x=${x}", "n": [1]}}], x=4).output == \
        {"v": 4, "s": "x=4", "n": [1]}


def test_action_args_render_typed_values_and_plain_strings_stay_strings(runner: Runner,
                                                                        ex: FakeExecutor) -> None:
    run(runner, [{"action": "mqtt.publish", "args": {"topic": "a/${room}", "msg": "${payload}", "qos": "1"}}],
        room="k", payload={"on": True})
    assert ex.calls == [("mqtt.publish", {"topic": "a/k", "msg": {"on": True}, "qos": "1"})]


def test_list_and_scalar_args_pass_through(runner: Runner, ex: FakeExecutor) -> None:
    run(runner, [{"action": "a.b", "args": ["${x}", 2]}, {"action": "a.c", "args": "${x}"},
                 {"action": "a.d"}], x=1)
    assert ex.calls == [("a.b", [1, 2]), ("a.c", 1), ("a.d", {})]


def test_templated_action_name(runner: Runner, ex: FakeExecutor) -> None:
    run(runner, [{"action": "light.${room}.on"}], room="kitchen")
    assert ex.calls == [("light.kitchen.on", {})]


def test_executor_gets_the_inherited_context_not_the_locals(runner: Runner, ex: FakeExecutor) -> None:
    ex.handlers["a.b"] = lambda args, ctx: Response(output={"k": 1}, errors=[])
    run(runner, [{"set": {"local": 2}}, {"for i in ${[7]}": [{"action": "a.b"}, {"action": "c.d"}]}], base=1)
    assert ex.contexts[0] == {"base": 1}
    assert ex.contexts[1] == {"base": 1, "output": {"k": 1}, "errors": []}


def test_if_and_else_bodies_may_be_one_step(runner: Runner, ex: FakeExecutor) -> None:
    steps = compile_steps([{"if ${x}": {"action": "a.yes"}}, {"else": {"action": "a.no"}},
                           {"for i in ${[1, 2]}": {"action": "a.loop", "args": {"i": "${i}"}}}])
    runner.run(steps, {"x": False})
    assert ex.calls == [("a.no", {}), ("a.loop", {"i": 1}), ("a.loop", {"i": 2})]


def test_output_and_errors_win_over_merged_dict_keys(runner: Runner, ex: FakeExecutor) -> None:
    ex.handlers["a.b"] = lambda args, ctx: Response(output={"output": "inner", "errors": "x", "t": 1})
    resp = run(runner, [{"action": "a.b"}, "return ${[output['output'], errors, t]}"])
    assert resp.output == ["inner", [], 1]


def test_hook_context_gives_event_and_its_attributes(runner: Runner) -> None:
    event = Event.of("GPIOEvent", pin=17, value=1)
    resp = runner.run(compile_steps([{"return": "${pin}:${value}:${event['args']['pin']}:${event.type}"}]),
                      event.context())
    assert resp.output == "17:1:17:GPIOEvent"


def test_run_does_not_change_the_callers_context(runner: Runner) -> None:
    context = {"a": 1}
    run_steps = compile_steps([{"set": {"a": 2, "b": 3}}, echo(1)])
    runner.run(run_steps, context)
    assert context == {"a": 1}


def test_a_single_mapping_is_a_one_step_list(runner: Runner, ex: FakeExecutor) -> None:
    steps = compile_steps({"action": "a.b", "args": {"x": 1}})
    runner.run(steps, {})
    assert ex.calls == [("a.b", {"x": 1})]


def test_steps_are_precompiled_objects() -> None:
    steps = compile_steps([{"action": "a.b", "args": {"x": "${y}"}}, {"if ${x}": [echo(1)]},
                           {"fork v in ${xs}": [echo(1)]}])
    assert isinstance(steps, Steps)
    assert [type(s) for s in steps.items] == [ActionStep, IfStep, LoopStep]
    assert steps.items[2].fork is True  # type: ignore[union-attr]


# ---------------------------------------------------------------- errors at run time


def test_action_errors_are_visible_and_the_run_goes_on(runner: Runner, ex: FakeExecutor) -> None:
    ex.handlers["a.fail"] = lambda args, ctx: Response(errors=["boom"])
    resp = run(runner, [{"action": "a.fail"}, {"return": "${errors}"}])
    assert resp.output == ["boom"]
    assert resp.errors == ["boom"]


def test_a_raising_executor_counts_as_an_action_error(runner: Runner, ex: FakeExecutor) -> None:
    def explode(args: Any, ctx: Mapping[str, Any]) -> Response:
        raise RuntimeError("device gone")

    ex.handlers["a.fail"] = explode
    resp = run(runner, [{"action": "a.fail"}, echo(1), {"action": "a.fail"}])
    assert resp.output is None
    assert resp.errors == ["a.fail: RuntimeError: device gone"] * 2
    assert len(ex.calls) == 3


def test_an_expression_error_ends_the_run_naming_the_step(runner: Runner, ex: FakeExecutor) -> None:
    resp = run(runner, [echo(1), {"if ${tempp > 1}": [echo(2)]}, echo(3)], temp=5)
    assert ex.args_of("shell.echo") == [{"value": 1}]
    assert resp.output == 1
    assert len(resp.errors) == 1
    assert "[1].if ${tempp > 1}" in resp.errors[0]
    assert "name 'tempp' is not defined (did you mean 'temp'?)" in resp.errors[0]


def test_fatal_errors_are_prefixed_with_the_label(runner: Runner) -> None:
    resp = runner.run(compile_steps(["return ${nope}"]), {}, label="hook 'door'")
    assert resp.errors[0].startswith("hook 'door': [0]: expression 'nope'")
    proc = Procedure("p", (), compile_steps(["return ${nope}"]))
    assert runner.run(proc, {}).errors[0].startswith("procedure 'p': [0]: ")


def test_for_over_a_non_iterable_ends_the_run(runner: Runner) -> None:
    resp = run(runner, [{"for x in ${5}": [echo(1)]}])
    assert resp.errors and "value 5 of type int is not iterable" in resp.errors[0]


def test_while_is_capped_and_ends_with_an_error(ex: FakeExecutor) -> None:
    runner = Runner(ex, inline_spawn, max_while_iterations=50)
    resp = runner.run(compile_steps([{"while ${True}": [echo(1)]}, echo(2)]), {})
    assert len(ex.calls) == 50
    assert len(resp.errors) == 1
    assert "ran 50 iterations" in resp.errors[0]


def test_while_cap_default_is_documented_value(ex: FakeExecutor) -> None:
    assert Runner(ex, inline_spawn).max_while_iterations == 10_000
    with pytest.raises(ValueError, match="max_while_iterations"):
        Runner(ex, inline_spawn, max_while_iterations=0)


# ---------------------------------------------------------------- fork and async


def test_fork_iterations_run_via_spawn_with_their_own_snapshot(ex: FakeExecutor) -> None:
    spawn = DeferredSpawn()
    runner = Runner(ex, spawn)
    resp = runner.run(compile_steps([
        {"set": {"mark": "parent"}},
        {"fork x in ${[1, 2, 3]}": [{"set": {"mark": "${x}"}}, echo("${x}"), echo("${output * 10}")]},
        {"set": {"x": "changed"}},
        "return ${mark}",
    ]), {})
    assert resp.output == "parent"
    assert ex.calls == []  # nothing ran in the procedure itself: the bodies wait in the pool
    assert len(spawn.tasks) == 3
    spawn.run_all()
    assert ex.args_of("shell.echo") == [{"value": v} for v in (1, 10, 2, 20, 3, 30)]


def test_fork_with_a_thread_pool(ex: FakeExecutor) -> None:
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        runner = Runner(ex, lambda fn: futures.append(pool.submit(fn)) or None)
        run(runner, [{"fork x in ${range(6)}": [echo("${x}"),
                                                {"action": "rec.pair", "args": ["${x}", "${output}"]}]}])
        wait(futures)
    for f in futures:
        assert f.exception() is None
    pairs = ex.args_of("rec.pair")
    assert sorted(p[0] for p in pairs) == list(range(6))
    assert all(x == out for x, out in pairs)


def test_break_in_a_fork_body_ends_only_that_iteration(ex: FakeExecutor) -> None:
    runner = Runner(ex, inline_spawn)
    run(runner, [{"fork x in ${[1, 2, 3]}": [{"if ${x == 2}": ["break"]}, echo("${x}")]}])
    assert ex.args_of("shell.echo") == [{"value": 1}, {"value": 3}]


def test_fork_iteration_errors_are_logged(ex: FakeExecutor, caplog: pytest.LogCaptureFixture) -> None:
    runner = Runner(ex, inline_spawn)
    with caplog.at_level(logging.WARNING, logger="pihub.engine.procedures"):
        resp = run(runner, [{"fork x in ${[0]}": [echo("${1 / x}")]}])
    assert resp.errors == []
    assert "division by zero" in caplog.text


def test_a_failing_spawn_is_reported(ex: FakeExecutor) -> None:
    def full(fn: Callable[[], None]) -> None:
        raise RuntimeError("pool full")

    resp = Runner(ex, full).run(compile_steps([{"fork x in ${[1]}": [echo(1)]}]), {})
    assert resp.errors == ["[0].fork x in ${[1]}: could not start iteration 1: pool full"]


def test_async_procedure_answers_at_once_and_runs_in_the_pool(ex: FakeExecutor) -> None:
    spawn = DeferredSpawn()
    runner = Runner(ex, spawn)
    proc = Procedure("bg", (), compile_steps([echo("${x}")]), is_async=True)
    resp = runner.call(proc, {"x": 4})
    assert resp.output is None and resp.errors == []
    assert resp.to_dict()["response"]["output"] == {"success": True}
    assert ex.calls == []
    spawn.run_all()
    assert ex.calls == [("shell.echo", {"value": 4})]


def test_running_an_async_procedure_also_goes_through_spawn(ex: FakeExecutor) -> None:
    spawn = DeferredSpawn()
    proc = Procedure("bg", ("a",), compile_steps([echo("${a}")]), is_async=True)
    assert Runner(ex, spawn).run(proc, {}).output is None
    spawn.run_all()
    assert ex.calls == [("shell.echo", {"value": None})]


# ---------------------------------------------------------------- calls


def test_call_fills_missing_params_with_none_and_passes_extra_args(runner: Runner) -> None:
    proc = Procedure("p", ("a", "b"), compile_steps(["return ${[a, b, c]}"]))
    assert runner.call(proc, {"a": 1, "c": 3}).output == [1, None, 3]


def test_call_with_positional_args(runner: Runner) -> None:
    proc = Procedure("p", ("a", "b"), compile_steps(["return ${[a, b]}"]))
    assert runner.call(proc, [1, 2]).output == [1, 2]
    resp = runner.call(proc, [1, 2, 3])
    assert resp.errors == ["procedure 'p' takes 2 positional args (a, b), not 3"]


def test_call_with_bad_args_type(runner: Runner) -> None:
    proc = Procedure("p", (), compile_steps(["return 1"]))
    assert runner.call(proc, None).output == "1"
    assert runner.call(proc, 5).errors == ["procedure 'p' args must be a mapping or a list, not int"]


def test_return_in_a_called_procedure_ends_only_the_callee(ex: FakeExecutor) -> None:
    procs: dict[str, Procedure] = {}
    runner = Runner(ex, inline_spawn)
    ex.handlers["procedure.inner"] = lambda args, ctx: runner.call(procs["inner"], args)
    procs["inner"] = Procedure("inner", ("x",),
                               compile_steps([{"for i in ${range(5)}": ["return ${x * 10}"]}]))
    resp = run(runner, [{"action": "procedure.inner", "args": {"x": "${y}"}}, "return ${output + 1}"], y=2)
    assert resp.output == 21


def test_callee_scope_does_not_leak_into_the_caller(ex: FakeExecutor) -> None:
    runner = Runner(ex, inline_spawn)
    inner = Procedure("inner", (), compile_steps([{"set": {"secret": 1}}, "return 2"]))
    ex.handlers["procedure.inner"] = lambda args, ctx: runner.call(inner, args)
    resp = run(runner, [{"action": "procedure.inner"}, "return ${secret}"])
    assert "name 'secret' is not defined" in resp.errors[0]


def test_runaway_recursion_fails_instead_of_crashing(ex: FakeExecutor) -> None:
    runner = Runner(ex, inline_spawn, max_call_depth=10)
    loop = Procedure("loop", (), compile_steps([{"action": "procedure.loop"}]))
    ex.handlers["procedure.loop"] = lambda args, ctx: runner.call(loop, args)
    resp = runner.call(loop, {})
    assert "nested procedure calls exceed the limit of 10" in resp.errors[0]
    assert len(ex.calls) == 10


# ---------------------------------------------------------------- procedure keys


@pytest.mark.parametrize(("key", "expected"), [
    ("procedure.lights_on", ("lights_on", (), False)),
    ("procedure.sync.lights_on", ("lights_on", (), False)),
    ("procedure.async.lights_on", ("lights_on", (), True)),
    ("procedure.dim(level, room)", ("dim", ("level", "room"), False)),
    ("procedure.async.dim( level ,room )", ("dim", ("level", "room"), True)),
    ("procedure.dim()", ("dim", (), False)),
    ("procedure.house.lights", ("house.lights", (), False)),
])
def test_parse_procedure_key(key: str, expected: tuple[str, tuple[str, ...], bool]) -> None:
    assert parse_procedure_key(key) == expected


@pytest.mark.parametrize(("key", "problem"), [
    ("proc.x", "must be 'procedure[.sync|.async].NAME[(a, b)]'"),
    ("procedure.", "must be"),
    ("procedure.async", "has no name after 'async'"),
    ("procedure.p(a, 1b)", "param '1b' must be an identifier"),
    ("procedure.p(a, a)", "declares a param twice"),
    ("procedure.p(__x)", "param '__x' must be an identifier"),
])
def test_parse_procedure_key_errors(key: str, problem: str) -> None:
    with pytest.raises(ConfigProblem, match=problem.replace("[", r"\[").replace("(", r"\(").replace(
            ")", r"\)").replace("|", r"\|").replace(".", r"\.")):
        parse_procedure_key(key)


def test_compile_procedure_collects_key_and_step_problems() -> None:
    with pytest.raises(ConfigProblems) as info:
        compile_procedure("procedure.p(a, a)", [{"acton": "x.y"}])
    assert [p.path for p in info.value.problems] == [(), (0, "acton")]
    proc = compile_procedure("procedure.async.p(a)", [echo(1)])
    assert (proc.name, proc.params, proc.is_async, len(proc.steps)) == ("p", ("a",), True, 1)


# ---------------------------------------------------------------- syntax errors


def problems_of(raw: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ConfigProblems) as info:
        compile_steps(raw)
    return [(p.path, p.message) for p in info.value.problems]


def test_all_syntax_problems_are_collected_with_paths_and_suggestions() -> None:
    found = problems_of([
        {"fi ${x}": [echo(1)]},
        {"esle": []},
        {"acton": "a.b"},
        {"if ${x >}": []},
        "brake",
        {"for i in ${xs}": [echo(1), {"action": "a.b", "argz": {}}]},
    ])
    assert found == [
        ((0, "fi ${x}"), "unknown step 'fi ${x}' (did you mean 'if'?)"),
        ((1, "esle"), "unknown step 'esle' (did you mean 'else'?)"),
        ((2, "acton"), "unknown step 'acton' (did you mean 'action'?)"),
        ((3, "if ${x >}"), "expression 'x >': invalid syntax"),
        ((4,), "unknown step 'brake': a string step is 'break', 'continue' or 'return ...'"
               " (did you mean 'break'?)"),
        ((5, "for i in ${xs}", 1, "argz"),
         "unknown action step key 'argz' (did you mean 'args'?) (allowed: action, args, target)"),
    ]


@pytest.mark.parametrize(("raw", "path", "problem"), [
    ([{"else": []}], (0, "else"), "'else' without a preceding 'if'"),
    ([{"elif ${x}": []}], (0, "elif ${x}"), "'elif' without a preceding 'if'"),
    ([{"if ${x}": []}, echo(1), {"else": []}], (2, "else"), "'else' without a preceding 'if'"),
    ([{"if ${x}": []}, {"else": []}, {"elif ${y}": []}], (2, "elif ${y}"), "'elif' after 'else'"),
    ([{"if ${x}": []}, {"else": []}, {"else": []}], (2, "else"), "second 'else' for one 'if'"),
    (["break"], (0,), "'break' outside a loop"),
    ([{"if ${x}": ["continue"]}], (0, "if ${x}", 0), "'continue' outside a loop"),
    ([{"if ${x}": None}], (0, "if ${x}"), "body of 'if ${x}' must be a list of steps (or one step), not nothing"),
    ([{"for x ${y}": []}], (0, "for x ${y}"), "malformed 'for': expected 'for NAME in ${expr}'"),
    ([{"while": []}], (0, "while"), "malformed 'while': expected 'while ${expr}'"),
    ([{"if": []}], (0, "if"), "malformed 'if': expected 'if ${expr}'"),
    ([{"set": {"1x": 1}}], (0, "set", "1x"), "'set' name '1x' must be an identifier not starting with '__'"),
    ([{"set": []}], (0, "set"), "'set' needs a mapping of names to values, not []"),
    ([{"action": "nodot"}], (0, "action"), "action must be 'plugin.method', not 'nodot'"),
    ([{"action": 5}], (0, "action"), "action must be a 'plugin.method' string, not 5"),
    ([{"action": "a.b", "args": {"x": "${y +}"}}], (0, "args", "x"), "expression 'y +': invalid syntax"),
    ([{"args": {}, "target": "x"}], (0,), "step has 'args' and 'target' but no 'action'"),
    ([{"args": {}}], (0, "args"), "'args' without 'action'"),
    ([{"set": {"a": "${lambda: 1}"}}], (0, "set", "a"), "expression 'lambda: 1': lambda is not allowed"),
    (["return ${__import__('os')}"], (0,), "name '__import__' is not allowed"),
    ([5], (0,), "step must be a mapping or one of 'break', 'continue', 'return ...', not int"),
    ([{}], (0,), "empty step"),
    ([{"if ${x}": [], "for y in z": []}], (0, "for y in z"), "'for y in z' cannot share a step with an 'if'"),
    ([{"for __x in ${y}": []}], (0, "for __x in ${y}"), "loop variable '__x' is not allowed"),
])
def test_each_syntax_problem(raw: list[Any], path: tuple[str | int, ...], problem: str) -> None:
    found = problems_of(raw)
    assert len(found) == 1, found
    assert found[0][0] == path
    assert problem in found[0][1]


def test_problem_paths_are_prefixed_with_the_given_path() -> None:
    with pytest.raises(ConfigProblems) as info:
        compile_steps([{"esle": []}], ("then",))
    assert info.value.problems[0].path == ("then", 0, "esle")


def test_steps_must_be_a_list() -> None:
    assert problems_of("echo") == [((), "steps must be a list, not str")]


# --------------------------------------------------------------------------------------------
# the hook context in called procedures (DESIGN §6, PLATYPUSH.md §4.9)


class ProcedureTable:
    """An executor that runs ``procedure.X`` through one runner, as the hub does."""

    def __init__(self, raw: dict[str, tuple[tuple[str, ...], list[Any], bool]], **options: Any) -> None:
        self.procs = {name: Procedure(name, params, compile_steps(body), is_async)
                      for name, (params, body, is_async) in raw.items()}
        self.recorded: list[tuple[str, Any]] = []
        self.spawned = DeferredSpawn()
        self.runner = Runner(self, self.spawned, **options)

    def __call__(self, action: str, args: Any, context: Mapping[str, Any], target: str = "") -> Response:
        if action.startswith("procedure."):
            return self.runner.call(self.procs[procedure_name(action)], args, context=context)
        self.recorded.append((action, args))
        return Response(output={"done": action})

    def fire(self, then: list[Any] | dict[str, Any], event: Event, **captures: Any) -> Response:
        hook = Hook("h", compile_condition({"type": "Event"}, ("if",)), compile_steps(then))
        return self.runner.run_hook(hook, event, captures)


MIDI = Event.of("MidiMessageEvent", message=[0xB0, 0x07, 50], port="slider", delay=0.0)


def test_a_procedure_called_from_a_hook_sees_the_event_as_the_seeds_write_it() -> None:
    table = ProcedureTable({"on_midi": ((), [
        {"if ${context['event'].args['message'][0] == 0xb0 and message[1] == 7}": [
            {"action": "var.set", "args": {"bri": "${message[2] * 2}", "port": "${event.args['port']}",
                                           "kind": "${event.type}", "ev": "${event['args']['delay']}"}}]},
    ], False)})
    resp = table.fire({"action": "procedure.on_midi"}, MIDI)
    assert resp.errors == []
    assert table.recorded == [("var.set", {"bri": 100, "port": "slider", "kind": "MidiMessageEvent", "ev": 0.0})]


def test_captures_reach_the_procedure_and_nested_ones() -> None:
    table = ProcedureTable({
        "outer": ((), [{"action": "procedure.inner", "args": {"extra": 1}}], False),
        "inner": ((), [{"action": "var.set", "args": {"song": "${title} by ${artist}", "x": "${extra}"}}], False),
    })
    event = Event.of("SpeechRecognizedEvent", phrase="play one by u2")
    table.fire([{"action": "procedure.sync.outer"}], event, title="one", artist="u2")
    assert table.recorded == [("var.set", {"song": "one by u2", "x": 1})]


def test_arguments_shadow_the_event_and_unpassed_params_take_it() -> None:
    table = ProcedureTable({"p": (("pin", "value", "other"), ["return ${[pin, value, other, event.args['pin']]}"],
                                  False)})
    resp = table.fire([{"action": "procedure.p", "args": {"value": "given"}}], Event.of("GPIOEvent", pin=17, value=1))
    assert resp.output == [17, "given", None, 17]


def test_the_callers_locals_do_not_leak_into_the_callee() -> None:
    table = ProcedureTable({"p": ((), ["return ${secret_local}"], False)})
    resp = table.fire([{"set": {"secret_local": 1}}, {"action": "procedure.p"}], Event.of("GPIOEvent", pin=1, value=1))
    assert resp.errors and "secret_local" in resp.errors[0]


def test_the_callee_sees_the_callers_running_output_and_errors() -> None:
    table = ProcedureTable({"p": ((), ["return ${[output, errors]}"], False)})
    resp = table.fire([{"action": "a.first"}, {"action": "procedure.p"}], Event.of("GPIOEvent", pin=1, value=1))
    assert resp.output == [{"done": "a.first"}, []]


def test_async_procedures_and_fork_bodies_keep_the_hook_context() -> None:
    table = ProcedureTable({
        "bg": ((), [{"action": "var.bg", "args": {"pin": "${pin}", "msg": "${context['event'].args['pin']}"}}], True),
        "fan": ((), [{"fork i in ${[1, 2]}": [{"action": "procedure.deep", "args": {"i": "${i}"}}]}], False),
        "deep": ((), [{"for j in ${[pin]}": [{"action": "var.deep", "args": {"ij": "${[i, j]}"}}]}], False),
    })
    event = Event.of("GPIOEvent", pin=5, value=1)
    assert table.fire([{"action": "procedure.async.bg"}, {"action": "procedure.fan"}], event).errors == []
    assert table.recorded == []  # both went to the pool
    table.spawned.run_all()
    assert sorted(table.recorded, key=repr) == sorted(
        [("var.bg", {"pin": 5, "msg": 5}), ("var.deep", {"ij": [1, 5]}), ("var.deep", {"ij": [2, 5]})], key=repr)


def test_outside_a_hook_a_procedure_sees_only_its_arguments() -> None:
    table = ProcedureTable({"p": (("a",), ["return ${[a, event]}"], False)})
    resp = table.runner.call(table.procs["p"], {"a": 1})
    assert resp.output is None and "'event'" in resp.errors[0]


def test_run_hook_logs_the_error_that_ended_the_hook(caplog: pytest.LogCaptureFixture) -> None:
    table = ProcedureTable({})
    with caplog.at_level(logging.WARNING, "pihub.engine.procedures"):
        resp = table.fire([{"action": "a.b", "args": {"x": "${nosuchname}"}}], Event.of("GPIOEvent", pin=1, value=1))
    assert resp.errors == ["hook 'h': [0]: expression 'nosuchname': name 'nosuchname' is not defined"]
    assert any("hook h on GPIOEvent" in r.getMessage() and "nosuchname" in r.getMessage() for r in caplog.records)
    assert table.recorded == []


@pytest.mark.parametrize(("action", "name"), [
    ("procedure.x", "x"), ("procedure.sync.x", "x"), ("procedure.async.a.b", "a.b"), ("procedure.a.b", "a.b"),
    ("procedure.sync", "sync"), ("procedure.", ""), ("procedure", ""),
])
def test_procedure_name(action: str, name: str) -> None:
    assert procedure_name(action) == name


def test_a_steps_target_reaches_the_executor(ex: FakeExecutor, runner: Runner) -> None:
    steps = compile_steps([{"action": "gpio.on", "args": {"pin": 4}, "target": "kitchen-pi"},
                           {"action": "gpio.off", "args": {"pin": 4}}])
    assert runner.run(steps, {}).errors == []
    assert ex.targets == ["kitchen-pi", ""]


# --------------------------------------------------------------------------------------------
# call depth across pool hand-offs, and the rate limit of background error logs


def run_pool(spawn: DeferredSpawn, limit: int = 10_000) -> int:
    """Run queued tasks (FIFO, like the worker pool) until none is left; the number run.
    Fails if more than ``limit`` would run: the tasks keep submitting themselves."""
    ran = 0
    while spawn.tasks:
        assert ran < limit, f"still {len(spawn.tasks)} tasks queued after {limit}: unbounded"
        spawn.tasks.pop(0)()
        ran += 1
    return ran


def test_an_async_procedure_starting_itself_twice_stops_at_the_call_depth_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    table = ProcedureTable({"q": ((), [{"action": "var.q"}, {"action": "procedure.q"}, {"action": "procedure.q"}],
                                  True)}, max_call_depth=5, clock=ManualClock())
    with caplog.at_level(logging.WARNING, "pihub.engine.procedures"):
        assert table.fire([{"action": "procedure.async.q"}], Event.of("CustomEvent", go=2)).errors == []
        ran = run_pool(table.spawned)
    # the hook's steps are level 1, as for a sync call; q runs at levels 2..5 (1 + 2 + 4 + 8),
    # then the 16 runs it starts from level 5 are refused
    assert len(table.recorded) == 15 and ran == 15 + 16
    [record] = caplog.records  # one warning for 16 failures: the rest are counted, not logged
    assert "procedure 'q': nested procedure calls exceed the limit of 5" in record.getMessage()


@pytest.mark.parametrize("body", [
    [{"action": "procedure.f"}],
    [{"fork i in ${[1]}": [{"action": "procedure.f"}]}],
], ids=["async", "fork"])
def test_every_pool_hand_off_counts_one_level(body: list[Any]) -> None:
    table = ProcedureTable({"f": ((), [{"action": "var.f"}, *body], True)}, max_call_depth=7)
    table.runner.call(table.procs["f"])
    run_pool(table.spawned)
    assert 1 <= len(table.recorded) <= 7  # before: endless


def test_a_pool_task_run_inline_restores_its_submitters_depth(ex: FakeExecutor) -> None:
    runner = Runner(ex, inline_spawn, max_call_depth=3)
    bg = Procedure("bg", (), compile_steps([echo(1)]), is_async=True)
    ex.handlers["procedure.bg"] = lambda args, ctx: runner.call(bg, args)
    resp = run(runner, [{"action": "procedure.bg"}] * 5 + [{"fork x in ${range(3)}": [echo(2)]}])
    assert resp.errors == [] and len(ex.args_of("shell.echo")) == 8


def test_background_errors_are_logged_at_most_once_per_interval_per_procedure(
        ex: FakeExecutor, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    spawn = DeferredSpawn()
    runner = Runner(ex, spawn, clock=clock)
    bad = Procedure("bad", (), compile_steps(["return ${1 / 0}"]), is_async=True)
    other = Procedure("other", (), compile_steps(["return ${nope}"]), is_async=True)
    with caplog.at_level(logging.WARNING, "pihub.engine.procedures"):
        for _ in range(1000):
            runner.call(bad)
        runner.call(other)
        run_pool(spawn)
        first, second = (r.getMessage() for r in caplog.records)
        assert first.startswith("procedure 'bad': ") and "division by zero" in first
        assert second.startswith("procedure 'other': ")  # its own budget
        clock.advance(BACKGROUND_LOG_INTERVAL_S - 0.5)
        runner.call(bad)
        run_pool(spawn)
        assert len(caplog.records) == 2
        clock.advance(0.5)
        runner.call(bad)
        run_pool(spawn)
    assert len(caplog.records) == 3
    assert caplog.records[2].getMessage() == (
        f"{first} (1000 more failed runs of procedure 'bad' were not logged in its previous 10 s window)")


def test_different_failures_of_one_procedure_are_logged_up_to_a_burst_per_interval(
        ex: FakeExecutor, caplog: pytest.LogCaptureFixture) -> None:
    spawn = DeferredSpawn()
    runner = Runner(ex, spawn, clock=ManualClock())
    p = Procedure("p", ("x",), compile_steps([{"for i in ${x}": []}]), is_async=True)
    with caplog.at_level(logging.WARNING, "pihub.engine.procedures"):
        for x in (1, 1, 2, 1, 3, 4, 5):  # each x gives a different error text
            runner.call(p, {"x": x})
        run_pool(spawn)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == BACKGROUND_LOG_BURST == 3
    assert ["value 1 " in logged[0], "value 2 " in logged[1], "value 3 " in logged[2]] == [True] * 3
