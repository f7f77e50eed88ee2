"""Procedures: compiling Platypush step lists, and running them with a correct scope.

Step syntax (PLATYPUSH.md §5.1), each item of a list:

=====================================  ======================================================
``{action: plugin.method, args: ..}``  run an action; ``args`` (dict, list, scalar or absent)
                                       is a template; ``action`` may hold ``${}`` too.
                                       ``target`` is accepted and kept on the step (see below).
                                       Other keys are errors: like Platypush's
                                       ``Request.build``, args live under ``args`` only.
``{'if ${expr}': [steps]}``            then optional ``{'elif ${expr}': [..]}`` items and one
                                       ``{'else': [..]}``, each directly after the previous
                                       branch. The branches may also be keys of the *same*
                                       mapping, in that order (the layout of Platypush's own
                                       docstring, whose ``else`` Platypush silently dropped).
                                       ``elif`` is a pihub addition.
``{'for x in ${expr}': [steps]}``      sequential loop; ``for k, v in ...`` unpacks (pihub).
``{'fork x in ${expr}': [steps]}``     each iteration's body is submitted to the worker pool
                                       with a snapshot copy of the scope; the step does not
                                       wait, and nothing flows back to the procedure.
``{'while ${expr}': [steps]}``         at most ``max_while_iterations`` (default 10000) rounds;
                                       past that the run ends with an error.
``{'set': {name: value}}``             assigns in order (a later value sees an earlier one).
``'return ${expr}'``, ``'return'``,    ends the procedure; the value (a template, None for a
``{'return': value}``                  bare ``return``) is its output.
``'break'``, ``'continue'``            act on the nearest enclosing loop, from any depth of
                                       ``if``. In a ``fork`` body they end that iteration.
=====================================  ======================================================

Conditions and iterables accept ``${expr}`` or a bare expression. Every syntax problem of
a list is collected and raised together as :class:`ConfigProblems`, with paths relative to
the list (``(3, 'if ${x >}')``) and suggestions for misspelt keywords (``fi`` -> ``if``).
A mapping where a step list is expected (a hook's ``then:``, an ``if``/``else``/loop body
holding one step) counts as a one-step list.

Scope rules (fixing PLATYPUSH.md §5.5): a run has one scope, like a Python function's
locals. It starts as a copy of the given context (a hook's: see :func:`hook_context`).
``set``, loop variables and action results live in it, so every step of a loop body sees
the current loop value, and ``set`` inside an ``if`` or a loop is seen after it. After
each action step ``output`` and ``errors`` hold its result and a dict output's keys are
merged in first (Platypush §5.2; ``output``/``errors`` win).

Hook context in called procedures (PLATYPUSH.md §4.9, DESIGN §6): a procedure called
from a hook's ``then:`` -- directly or through other procedures, at any depth, sync,
async or from a ``fork`` -- starts with the hook's context: ``event``, ``context``
(``context['event'].args``...), every event attribute and phrase capture by name, and the
caller's current ``output``/``errors``. Its declared params that the call does not pass
take the context's value of that name (else None), and the arguments it is called with
override all of these. The caller's own locals (its ``set`` names, loop variables) are
not passed down: a procedure sees its arguments and the hook's context, like a function
sees its arguments and the globals. A procedure called from outside a hook (``POST
/execute``, ``pihub exec``) sees only its arguments.

Errors: an action whose Response has errors does not stop the run (Platypush behaviour);
its errors are in ``errors`` for the next steps and in the final Response. An executor
that raises counts as an action error. A failing expression, a non-iterable ``for``
value or an exhausted ``while`` ends the run, like an exception in Python, with an error
naming the step. The final Response carries every error collected; its output is the
``return`` value when a ``return`` ran, else the last action's output (None if none ran).

Calls: ``Runner.call`` checks args against the declared params: a missing param is set to
None (Platypush records params but does not enforce them), an extra arg is passed as a
name too, positional (list) args fill the params in order and may not outnumber them. A
``return`` ends only the procedure it is in; the caller continues with the callee's
value as ``output``. Nested calls deeper than ``max_call_depth`` (default 32) fail
instead of exhausting the stack. The depth follows the call chain, not the thread: an
async procedure or a ``fork`` iteration runs one level below the run that started it, so
a procedure that starts itself asynchronously stops at the same limit, with the same
error, instead of filling the worker pool forever. Async procedures are submitted to the
worker pool and answer at once with a null output (``{"success": true}`` on the wire);
their errors, and those of fork iterations, are logged as warnings, rate-limited per
procedure or fork step: in each :data:`BACKGROUND_LOG_INTERVAL_S` window, only runs whose
first error differs from those already logged, at most :data:`BACKGROUND_LOG_BURST` of
them (so the depth limit still shows after "could not start: worker queue full"); the
first line of the next window says how many failed runs were not logged.

Errors of a hook's own steps (a failing ``${...}``, a bad loop value) end the hook's run
and are in its Response; :meth:`Runner.run_hook` logs them with the hook's name.

``target``: a step whose ``target`` names another device is handed to the executor with
it; the hub sends it to that device over MQTT when an ``mqtt`` section is configured (see
:meth:`pihub.hub.Hub.execute`), and runs it here otherwise, as Platypush's own bus does
with every request whatever its target (PLATYPUSH.md §7.2).
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pihub.clock import SYSTEM, Clock
from pihub.engine.expr import Expr, Template, compile_expr, compile_template
from pihub.engine.hooks import Hook
from pihub.errors import ConfigProblem, ConfigProblems, ExpressionError, did_you_mean, format_path
from pihub.events import Event
from pihub.messages import Response

__all__ = [
    "BACKGROUND_LOG_BURST", "BACKGROUND_LOG_INTERVAL_S", "DEFAULT_MAX_CALL_DEPTH",
    "DEFAULT_MAX_WHILE_ITERATIONS", "ActionStep", "Executor", "IfStep", "Jump", "LoopStep", "Procedure",
    "ReturnStep", "Runner", "SetStep", "Spawn", "Steps", "WhileStep",
    "compile_procedure", "compile_steps", "hook_context", "parse_procedure_key", "procedure_name",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_WHILE_ITERATIONS = 10_000
DEFAULT_MAX_CALL_DEPTH = 32
#: The window, in seconds, of the rate limit on logged failures of background runs (async
#: procedures, fork iterations): per procedure or fork step, at most
#: :data:`BACKGROUND_LOG_BURST` runs, each with a different first error, are logged per window.
BACKGROUND_LOG_INTERVAL_S = 10.0
BACKGROUND_LOG_BURST = 3

# Module-wide rather than per Runner: a nested call may go through another Runner instance.
# A pool task sets it from the depth of the run that submitted it (see Runner._background).
_DEPTH = threading.local()

class Executor(Protocol):
    """``execute(action, args, context, target="") -> Response``: runs ``plugin.method`` or
    ``procedure.X``; ``context`` is what a procedure started by the action inherits (the
    hook context with the caller's current ``output``/``errors``), to hand to
    :meth:`Runner.call`, read-only; ``target`` is the step's ``target`` (another device's
    ``device_id``, or ``""`` for this one)."""

    def __call__(self, action: str, args: Any, context: Mapping[str, Any], target: str = "") -> Response: ...
#: Submits a task to the hub's bounded worker pool.
Spawn = Callable[[Callable[[], None]], None]

Path = tuple[str | int, ...]

# --------------------------------------------------------------------------------------------
# compiled steps


@dataclass(frozen=True, slots=True)
class Steps:
    """A compiled step list."""

    items: tuple[Step, ...]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class ActionStep:
    """Run ``action`` with ``args`` rendered over the scope.

    Attributes:
        action: ``plugin.method``, or the source of a templated action name.
        action_template: set when the action name holds ``${}``.
        args: the args template (``{}`` when absent).
        target: the ``target`` key, or ``""``.
        where: ``[2]``-style location, for error messages.
        path: the same location as a path tuple, for locating it in the config.
    """

    action: str
    action_template: Template | None
    args: Template
    target: str
    where: str
    path: tuple[str | int, ...] = ()


@dataclass(frozen=True, slots=True)
class IfStep:
    """``if``/``elif`` branches tried in order, then the optional ``else`` body."""

    branches: tuple[tuple[Expr, Steps], ...]
    orelse: Steps | None
    where: str


@dataclass(frozen=True, slots=True)
class LoopStep:
    """``for`` (sequential) or ``fork`` (one pool task per iteration) over ``iterable``."""

    names: tuple[str, ...]
    iterable: Expr
    body: Steps
    fork: bool
    where: str


@dataclass(frozen=True, slots=True)
class WhileStep:
    """Run ``body`` while ``condition`` is true (capped; see :class:`Runner`)."""

    condition: Expr
    body: Steps
    where: str


@dataclass(frozen=True, slots=True)
class SetStep:
    """Assign each rendered value to its name, in order."""

    assignments: tuple[tuple[str, Template], ...]
    where: str


@dataclass(frozen=True, slots=True)
class ReturnStep:
    """End the procedure with ``value`` rendered (None when absent)."""

    value: Template | None
    where: str


class Jump(enum.Enum):
    """``break`` and ``continue`` steps."""

    BREAK = "break"
    CONTINUE = "continue"


Step = ActionStep | IfStep | LoopStep | WhileStep | SetStep | ReturnStep | Jump


@dataclass(frozen=True, slots=True)
class Procedure:
    """A named, compiled procedure.

    Attributes:
        name: ``NAME`` of ``procedure.NAME`` (may contain dots).
        params: declared parameter names, in order.
        steps: the compiled body.
        is_async: True for ``procedure.async.NAME``: calls return at once.
    """

    name: str
    params: tuple[str, ...]
    steps: Steps
    is_async: bool = False


# --------------------------------------------------------------------------------------------
# compilation

_KEYWORDS = ("if", "elif", "else", "for", "fork", "while", "set", "return", "break", "continue", "action")
_ACTION_KEYS = ("action", "args", "target")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_IF_RE = re.compile(r"(if|elif)\s+(.+)", re.S)
_LOOP_RE = re.compile(rf"(for|fork)\s+({_NAME}(?:\s*,\s*{_NAME})*)\s+in\s+(.+)", re.S)
_WHILE_RE = re.compile(r"while\s+(.+)", re.S)
_RETURN_RE = re.compile(r"return(?:\s+(.*))?", re.S)
_IDENT_RE = re.compile(_NAME)
_KEY_RE = re.compile(r"procedure\.(?:(sync|async)\.)?([^()\s]+?)\s*(?:\((.*)\))?")


def _first_word(key: str) -> str:
    """The keyword part of a step key: ``'if ${x}'`` -> ``'if'``."""
    words = key.split(None, 1)
    return words[0] if words else ""


def iter_action_steps(steps: Steps) -> Iterator[ActionStep]:
    """Every action step in ``steps``, nested bodies included, in source order."""
    for step in steps.items:
        if isinstance(step, ActionStep):
            yield step
        elif isinstance(step, IfStep):
            for _, body in step.branches:
                yield from iter_action_steps(body)
            if step.orelse is not None:
                yield from iter_action_steps(step.orelse)
        elif isinstance(step, (LoopStep, WhileStep)):
            yield from iter_action_steps(step.body)


class _IfBuilder:
    """An ``if`` being assembled while its ``elif``/``else`` items are read."""

    __slots__ = ("branches", "orelse", "where")

    def __init__(self, where: str) -> None:
        self.branches: list[tuple[Expr, Steps]] = []
        self.orelse: Steps | None = None
        self.where = where

    def build(self) -> IfStep:
        """The finished step."""
        return IfStep(tuple(self.branches), self.orelse, self.where)


class _StepCompiler:
    """Compiles nested step lists, collecting every problem."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def problem(self, path: Path, message: str) -> None:
        """Record one problem at ``path``."""
        self.problems.append(ConfigProblem(path, message))

    def expr(self, text: str, path: Path) -> Expr | None:
        """Compile a condition or iterable; None (and a problem) when it is invalid."""
        try:
            return compile_expr(text)
        except ExpressionError as e:
            self.problem(path, str(e))
            return None

    def template(self, value: Any, path: Path) -> Template:
        """Compile a template, recording each bad string at its own path."""
        errors: list[tuple[Path, ExpressionError]] = []
        tpl = compile_template(value, errors=errors)
        for sub, err in errors:
            self.problem((*path, *sub), str(err))
        return tpl

    def body(self, raw: Any, path: Path, loops: int, what: str) -> Steps:
        """Compile the step list under a control key; ``what`` names that key in messages.

        A single mapping is a one-step list, as for a hook's ``then:``.
        """
        if isinstance(raw, list):
            return self.steps(raw, path, loops)
        if isinstance(raw, dict):
            return self.steps([raw], path, loops)
        kind = "nothing" if raw is None else type(raw).__name__
        self.problem(path, f"body of {what!r} must be a list of steps (or one step), not {kind}")
        return Steps(())

    def steps(self, raw: list[Any], path: Path, loops: int) -> Steps:
        """Compile a list; ``loops`` counts the enclosing loops (for break/continue)."""
        out: list[Step | _IfBuilder] = []
        last: _IfBuilder | None = None  # the if that an elif/else item may extend: the previous item's
        for i, item in enumerate(raw):
            here = (*path, i)
            if isinstance(item, str):
                last = None
                step = self.string_step(item, here, loops)
                if step is not None:
                    out.append(step)
            elif isinstance(item, dict):
                last = self.dict_step(item, here, loops, last, out)
            else:
                last = None
                self.problem(here, f"step must be a mapping or one of 'break', 'continue', 'return ...',"
                                   f" not {type(item).__name__}")
        return Steps(tuple(s.build() if isinstance(s, _IfBuilder) else s for s in out))

    def string_step(self, item: str, path: Path, loops: int) -> Step | None:
        """Compile ``'break'``, ``'continue'`` or ``'return ...'``; None after a problem."""
        text = item.strip()
        if text in ("break", "continue"):
            if not loops:
                self.problem(path, f"{text!r} outside a loop")
                return None
            return Jump(text)
        m = _RETURN_RE.fullmatch(text)
        if m:
            return ReturnStep(None if m.group(1) is None else self.template(m.group(1), path),
                              format_path(path))
        hint = did_you_mean(_first_word(text), ("break", "continue", "return"))
        self.problem(path, f"unknown step {item!r}: a string step is 'break', 'continue'"
                           f" or 'return ...'{hint}")
        return None

    def dict_step(self, item: dict[Any, Any], path: Path, loops: int, last: _IfBuilder | None,
                  out: list[Step | _IfBuilder]) -> _IfBuilder | None:
        """Compile a mapping step; returns the if-builder that a next elif/else item extends."""
        if not item:
            self.problem(path, "empty step")
            return None
        keys = list(item)
        bad = [k for k in keys if not isinstance(k, str)]
        if bad:
            self.problem(path, f"step key {bad[0]!r} must be a string")
            return None
        if "action" in item:
            out.append(self.action_step(item, path))
            return None
        first = _first_word(keys[0])
        if first == "if" and len(keys) > 1:
            # if/elif/else written as keys of one mapping: the same chain, read in order.
            builder: _IfBuilder | None = None
            for n, key in enumerate(keys):
                kw = _first_word(key)
                if n and kw not in ("elif", "else"):
                    self.problem((*path, key), f"{key!r} cannot share a step with an 'if': only 'elif' and"
                                               f" 'else' can{did_you_mean(kw, ('elif', 'else'))}")
                    continue
                builder = self.keyed_step(key, item[key], path, loops, builder, out)
            return builder
        if len(keys) > 1:
            unknown = [k for k in keys if k not in _ACTION_KEYS]
            for key in unknown:
                hint = did_you_mean(_first_word(key), _KEYWORDS)
                self.problem((*path, key), f"unknown step key {key!r}{hint}"
                                           " (an action step has action, args, target; a control step"
                                           " has exactly one key)")
            if not unknown:
                self.problem(path, f"step has {' and '.join(map(repr, keys))} but no 'action'")
            return None
        return self.keyed_step(keys[0], item[keys[0]], path, loops, last, out)

    def keyed_step(self, key: str, value: Any, path: Path, loops: int, last: _IfBuilder | None,
                   out: list[Step | _IfBuilder]) -> _IfBuilder | None:
        """Compile a one-key control step; returns the if-builder that a next elif/else extends."""
        here = (*path, key)
        text = key.strip()
        kw = _first_word(text)
        where = format_path(here)
        if kw in ("if", "elif"):
            m = _IF_RE.fullmatch(text)
            if not m:
                self.problem(here, f"malformed {kw!r}: expected '{kw} ${{expr}}'")
                return last
            cond = self.expr(m.group(2), here)
            body = self.body(value, here, loops, text)
            if kw == "if":
                builder = _IfBuilder(where)
                out.append(builder)
            elif last is None:
                self.problem(here, "'elif' without a preceding 'if'")
                return None
            elif last.orelse is not None:
                self.problem(here, "'elif' after 'else'")
                return last
            else:
                builder = last
            if cond is not None:
                builder.branches.append((cond, body))
            return builder
        if text == "else":
            body = self.body(value, here, loops, "else")
            if last is None:
                self.problem(here, "'else' without a preceding 'if'")
            elif last.orelse is not None:
                self.problem(here, "second 'else' for one 'if'")
            else:
                last.orelse = body
            return last
        if kw in ("for", "fork"):
            m = _LOOP_RE.fullmatch(text)
            if not m:
                self.problem(here, f"malformed {kw!r}: expected '{kw} NAME in ${{expr}}'")
                return None
            names = tuple(n.strip() for n in m.group(2).split(","))
            for n in names:
                if n.startswith("__"):
                    self.problem(here, f"loop variable {n!r} is not allowed"
                                       " (names starting with '__' are reserved)")
            iterable = self.expr(m.group(3), here)
            body = self.body(value, here, loops + 1, text)
            if iterable is not None:
                out.append(LoopStep(names, iterable, body, kw == "fork", where))
            return None
        if kw == "while":
            m = _WHILE_RE.fullmatch(text)
            if not m:
                self.problem(here, "malformed 'while': expected 'while ${expr}'")
                return None
            cond = self.expr(m.group(1), here)
            body = self.body(value, here, loops + 1, text)
            if cond is not None:
                out.append(WhileStep(cond, body, where))
            return None
        if text == "set":
            out.append(self.set_step(value, here))
            return None
        if text == "return":
            out.append(ReturnStep(self.template(value, here), where))
            return None
        if text in ("args", "target"):
            self.problem(here, f"{text!r} without 'action'")
            return None
        self.problem(here, f"unknown step {key!r}{did_you_mean(kw, _KEYWORDS)}")
        return None

    def set_step(self, value: Any, path: Path) -> SetStep:
        """Compile ``{set: {name: value}}``."""
        if not isinstance(value, dict) or not value:
            self.problem(path, f"'set' needs a mapping of names to values, not {value!r}")
            return SetStep((), format_path(path))
        assignments = []
        for name, v in value.items():
            if not isinstance(name, str) or not _IDENT_RE.fullmatch(name) or name.startswith("__"):
                self.problem((*path, str(name)),
                             f"'set' name {name!r} must be an identifier not starting with '__'")
                continue
            assignments.append((name, self.template(v, (*path, name))))
        return SetStep(tuple(assignments), format_path(path))

    def action_step(self, item: dict[str, Any], path: Path) -> ActionStep:
        """Compile ``{action, args, target}``."""
        for key in item:
            if key not in _ACTION_KEYS:
                self.problem((*path, key), f"unknown action step key {key!r}{did_you_mean(key, _ACTION_KEYS)}"
                                           " (allowed: action, args, target)")
        action = item["action"]
        action_template = None
        if not isinstance(action, str) or not action.strip():
            self.problem((*path, "action"), f"action must be a 'plugin.method' string, not {action!r}")
            action = ""
        elif "${" in action:
            action_template = self.template(action, (*path, "action"))
        else:
            action = action.strip()
            plugin, dot, method = action.rpartition(".")
            if not (dot and plugin and method):
                self.problem((*path, "action"), f"action must be 'plugin.method', not {action!r}")
        target = item.get("target", "")
        if not isinstance(target, str):
            self.problem((*path, "target"), f"target must be a device id string, not {target!r}")
            target = ""
        args = item.get("args")
        args_template = self.template({} if args is None else args, (*path, "args"))
        return ActionStep(action, action_template, args_template, target, format_path(path), tuple(path))


def compile_steps(raw: list[Any] | dict[str, Any], path: Path = ()) -> Steps:
    """Compile a Platypush step list (see the module docstring).

    Args:
        raw: the list from the config; a mapping is taken as a one-step list.
        path: prefix for problem paths (``()`` gives paths relative to the list).

    Raises:
        ConfigProblems: every problem found, each with its path and a suggestion where
            a keyword looks misspelt.
    """
    compiler = _StepCompiler()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigProblems([ConfigProblem(path, f"steps must be a list, not {type(raw).__name__}")])
    steps = compiler.steps(raw, path, 0)
    if compiler.problems:
        raise ConfigProblems(compiler.problems)
    return steps


def procedure_name(action: str) -> str:
    """The procedure an action runs: ``procedure[.sync|.async].NAME`` -> ``NAME``.

    ``sync``/``async`` in a call are accepted and ignored: whether a procedure runs in the
    background is a property of its definition. Returns ``""`` when no name follows.
    """
    name = action.split(".", 1)[1] if "." in action else ""
    for prefix in ("sync.", "async."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def hook_context(event: Event, captures: Mapping[str, Any]) -> dict[str, Any]:
    """The names a hook's steps start with, and that the procedures it calls inherit.

    As Platypush gives them (PLATYPUSH.md §4.9): ``event`` (a dict with ``type``, ``args``,
    ``origin``/``source``, ``id`` and ``_timestamp``, readable as ``event.args`` too), every
    event attribute by name, the phrase ``captures`` (which win over an attribute of the
    same name), and ``context``: a dict of all of these, for configs that write
    ``${context['event'].args['message']}``.
    """
    names = event.context()
    names.update(captures)
    names["context"] = dict(names)
    return names


def parse_procedure_key(key: str) -> tuple[str, tuple[str, ...], bool]:
    """Split a config key into ``(name, params, is_async)``.

    Accepts ``procedure.NAME``, ``procedure.sync.NAME``, ``procedure.async.NAME`` and any of
    them with ``(a, b)`` params. ``NAME`` may contain dots.

    Raises:
        ConfigProblem: with path ``()``, for a malformed key or params.
    """
    m = _KEY_RE.fullmatch(key.strip())
    if not m:
        raise ConfigProblem((), f"procedure key {key!r} must be 'procedure[.sync|.async].NAME[(a, b)]'")
    mode, name, params_text = m.groups()
    if name in ("sync", "async"):
        raise ConfigProblem((), f"procedure key {key!r} has no name after {name!r}")
    params: tuple[str, ...] = ()
    if params_text is not None and params_text.strip():
        params = tuple(p.strip() for p in params_text.split(","))
        for p in params:
            if not _IDENT_RE.fullmatch(p) or p.startswith("__"):
                raise ConfigProblem((), f"procedure {name!r} param {p!r} must be an identifier"
                                        " not starting with '__'")
        if len(set(params)) != len(params):
            raise ConfigProblem((), f"procedure {name!r} declares a param twice: {', '.join(params)}")
    return name, params, mode == "async"


def compile_procedure(key: str, raw: Any) -> Procedure:
    """Compile a ``procedure...`` config entry.

    Raises:
        ConfigProblems: key and step problems together; step paths are relative to the list.
    """
    problems: list[ConfigProblem] = []
    name, is_async = "", False
    params: tuple[str, ...] = ()
    try:
        name, params, is_async = parse_procedure_key(key)
    except ConfigProblem as e:
        problems.append(e)
    steps = Steps(())
    try:
        steps = compile_steps(raw)
    except ConfigProblems as e:
        problems.extend(e.problems)
    if problems:
        raise ConfigProblems(problems)
    return Procedure(name, params, steps, is_async)


# --------------------------------------------------------------------------------------------
# execution


class _Abort(Exception):
    """Ends a run: an expression failed, a loop value is bad, a while ran too long."""


class _Signal(enum.Enum):
    """How a step list ended, when not by running off its end."""

    BREAK = 1
    CONTINUE = 2
    RETURN = 3


class _Frame:
    """The state of one procedure run: its single scope, the hook context it passes on to
    the procedures it calls, and what it has collected."""

    __slots__ = ("errors", "inherited", "last_output", "returned", "result", "scope")

    def __init__(self, scope: dict[str, Any], inherited: Mapping[str, Any]) -> None:
        self.scope = scope
        self.inherited = inherited
        self.errors: list[str] = []
        self.last_output: Any = None
        self.returned = False
        self.result: Any = None


class _LogWindow:
    """One rate-limit window of :meth:`Runner._log_background`: when it started (clock
    seconds), the first errors logged in it, and the failed runs it did not log."""

    __slots__ = ("logged", "start", "unlogged")

    def __init__(self, start: float) -> None:
        self.start = start
        self.logged: set[str] = set()
        self.unlogged = 0


class Runner:
    """Runs compiled steps and procedures. Holds no per-run state: share one per hub.

    Args:
        executor: ``execute(action, args, context, target) -> Response``; it resolves plugins and
            ``procedure.X`` (typically by calling :meth:`call` back). ``context`` is the
            caller's scope, read-only by contract.
        spawn: submits a task to the hub's bounded worker pool; used for ``fork``
            iterations and async procedures (the runner never starts a thread).
        max_while_iterations: rounds one ``while`` step may run before the run ends with an
            error (a guard against loops that never end).
        max_call_depth: nested runs allowed in one call chain (counted across all runners and
            across async and ``fork`` hand-offs to the pool).
        clock: the time the rate limit of background error logs runs on (the system clock
            when None).
    """

    def __init__(self, executor: Executor, spawn: Spawn, *,
                 max_while_iterations: int = DEFAULT_MAX_WHILE_ITERATIONS,
                 max_call_depth: int = DEFAULT_MAX_CALL_DEPTH, clock: Clock | None = None) -> None:
        if max_while_iterations < 1:
            raise ValueError(f"max_while_iterations must be >= 1, not {max_while_iterations}")
        self._execute = executor
        self._spawn = spawn
        self.max_while_iterations = max_while_iterations
        self.max_call_depth = max_call_depth
        self._clock = SYSTEM if clock is None else clock
        self._log_lock = threading.Lock()
        self._log_windows: dict[str, _LogWindow] = {}  # label -> its rate-limit window
        self._handlers: dict[type, Callable[[Any, _Frame], _Signal | None]] = {
            ActionStep: self._action, IfStep: self._if, LoopStep: self._loop, WhileStep: self._while,
            SetStep: self._set, ReturnStep: self._return, Jump: self._jump,
        }

    # ---- public

    def run(self, steps: Steps | Procedure, context: Mapping[str, Any], *, label: str = "steps") -> Response:
        """Run steps (a hook's ``then``) or a procedure over a copy of ``context``.

        Args:
            steps: compiled steps, or a procedure (its missing params take the context's
                value of that name, else None; an async one is submitted to the pool and
                answered at once with a null output).
            context: the initial names (a hook's: :func:`hook_context`); procedures that
                the steps call inherit it (see the module docstring).
            label: prefixes a fatal error of plain steps (``"hook 'door'"``); a procedure
                is named by itself.

        Returns:
            The ``return`` value, else the last action's output, and every error collected.
        """
        if isinstance(steps, Procedure):
            return self._invoke(steps, {}, context)
        return self._run_sync(steps, dict(context), label, context)

    def run_hook(self, hook: Hook, event: Event, captures: Mapping[str, Any]) -> Response:
        """Run ``hook``'s ``then`` for ``event`` on this thread, and log its errors.

        Args:
            hook: the hook (its ``then`` compiled by :func:`compile_steps`).
            event: the event it matched.
            captures: the phrase captures of the match (``{}`` when none).

        Returns:
            The steps' Response; its errors (an action's, or the expression that ended the
            run) are also logged as a warning naming the hook and the event type.
        """
        resp = self.run(hook.then, hook_context(event, captures), label=f"hook {hook.name!r}")
        if resp.errors:
            log.warning("hook %s on %s: %s", hook.name, event.type.name, "; ".join(map(str, resp.errors)))
        else:
            log.debug("hook %s on %s: output %r", hook.name, event.type.name, resp.output)
        return resp

    def call(self, procedure: Procedure, args: Any = None, *,
             context: Mapping[str, Any] | None = None) -> Response:
        """Call a procedure with caller args (``procedure.NAME`` actions, the HTTP API...).

        Args:
            procedure: the procedure.
            args: a dict of names, a list filling the params in order, or None.
            context: the hook context the call inherits (what an :data:`Executor` is
                handed), or None outside a hook. ``args`` override it.

        Returns:
            As :meth:`run`; an immediate null-output Response for an async procedure; a
            Response with an error for positional args beyond the params or args of the
            wrong type.
        """
        if args is None:
            args = {}
        if isinstance(args, (list, tuple)):
            if len(args) > len(procedure.params):
                params = ", ".join(procedure.params) or "none"
                return Response(errors=[f"procedure {procedure.name!r} takes {len(procedure.params)}"
                                        f" positional args ({params}), not {len(args)}"])
            args = dict(zip(procedure.params, args, strict=True))
        if not isinstance(args, Mapping):
            return Response(errors=[f"procedure {procedure.name!r} args must be a mapping or a list,"
                                    f" not {type(args).__name__}"])
        return self._invoke(procedure, args, context or {})

    # ---- runs

    def _invoke(self, procedure: Procedure, args: Mapping[str, Any], context: Mapping[str, Any]) -> Response:
        """Start ``procedure``: params, then the inherited context, then ``args``, in the scope."""
        scope = dict.fromkeys(procedure.params)
        scope.update(context)
        scope.update(args)
        label = f"procedure {procedure.name!r}"
        if procedure.is_async:
            depth = getattr(_DEPTH, "depth", 0)
            task = functools.partial(self._background, procedure.steps, scope, label, context, depth)
            try:
                self._spawn(task)
            except Exception as e:  # a full or stopped pool is reported to the caller
                return Response(errors=[f"{label}: could not start: {e}"])
            return Response()
        return self._run_sync(procedure.steps, scope, label, context)

    def _run_sync(self, steps: Steps, scope: dict[str, Any], label: str,
                  inherited: Mapping[str, Any]) -> Response:
        """Run on this thread over ``scope`` (owned by this run); ``label`` prefixes a fatal
        error; ``inherited`` is the hook context handed on to called procedures."""
        depth = getattr(_DEPTH, "depth", 0)
        if depth >= self.max_call_depth:
            return Response(errors=[f"{label}: nested procedure calls exceed the limit of"
                                    f" {self.max_call_depth} (a procedure calling itself?)"])
        _DEPTH.depth = depth + 1
        frame = _Frame(scope, inherited)
        try:
            self._steps(steps, frame)
        except _Abort as e:
            frame.errors.append(f"{label}: {e}")
        finally:
            _DEPTH.depth = depth
        return Response(output=frame.result if frame.returned else frame.last_output, errors=frame.errors)

    def _background(self, steps: Steps, scope: dict[str, Any], label: str,
                    inherited: Mapping[str, Any], depth: int) -> None:
        """A pool task: run at call depth ``depth`` (the submitting run's), and log the errors
        nobody is waiting for (rate-limited per ``label``)."""
        saved = getattr(_DEPTH, "depth", 0)  # an inline spawn runs inside its submitter
        _DEPTH.depth = depth
        try:
            response = self._run_sync(steps, scope, label, inherited)
        finally:
            _DEPTH.depth = saved
        if response.errors:
            self._log_background(label, response.errors)

    def _log_background(self, label: str, errors: list[str]) -> None:
        """Log the errors of one background run of ``label``, rate-limited (see the module
        docstring): a self-starting procedure fails thousands of times a second."""
        now = self._clock.now()
        with self._log_lock:
            window = self._log_windows.get(label)
            missed = 0
            if window is None or now - window.start >= BACKGROUND_LOG_INTERVAL_S:
                missed = window.unlogged if window is not None else 0
                window = self._log_windows[label] = _LogWindow(now)
            first = errors[0]
            if first in window.logged or len(window.logged) >= BACKGROUND_LOG_BURST:
                window.unlogged += 1
                return
            window.logged.add(first)
        more = (f" ({missed} more failed runs of {label} were not logged in its previous"
                f" {BACKGROUND_LOG_INTERVAL_S:.0f} s window)") if missed else ""
        log.warning("%s%s", "; ".join(errors), more)

    # ---- steps

    def _steps(self, steps: Steps, frame: _Frame) -> _Signal | None:
        """Run a step list; returns the signal that ended it early, if any."""
        handlers = self._handlers
        for step in steps.items:
            signal = handlers[type(step)](step, frame)
            if signal is not None:
                return signal
        return None

    def _value(self, expr: Expr, frame: _Frame, where: str) -> Any:
        """Evaluate over the scope; an error ends the run."""
        try:
            return expr.value(frame.scope)
        except ExpressionError as e:
            raise _Abort(f"{where}: {e}") from None

    def _render(self, template: Template, frame: _Frame, where: str) -> Any:
        """Render over the scope; an error ends the run."""
        try:
            return template.render(frame.scope)
        except ExpressionError as e:
            raise _Abort(f"{where}: {e}") from None

    def _truth(self, expr: Expr, frame: _Frame, where: str) -> bool:
        """Evaluate a condition to a bool; an error ends the run."""
        value = self._value(expr, frame, where)
        try:
            return bool(value)
        except Exception as e:  # a value whose truth cannot be told ends the run
            raise _Abort(f"{where}: cannot tell whether {type(value).__name__} is true: {e}") from None

    def _action(self, step: ActionStep, frame: _Frame) -> None:
        """Run one action and record ``output``/``errors`` (and a dict output's keys) in the scope."""
        action = step.action
        if step.action_template is not None:
            action = self._render(step.action_template, frame, step.where)
            if not isinstance(action, str) or "." not in action:
                raise _Abort(f"{step.where}: action must render to 'plugin.method', not {action!r}")
        args = self._render(step.args, frame, step.where)
        scope = frame.scope
        inherited = frame.inherited
        if "output" in scope:  # a called procedure also sees the caller's latest result
            inherited = {**inherited, "output": scope["output"], "errors": scope.get("errors", [])}
        try:
            response = self._execute(action, args, inherited, step.target)
        except Exception as e:  # an executor failure is an action error, as in Platypush
            response = Response(errors=[f"{action}: {type(e).__name__}: {e}"])
        errors = [e if isinstance(e, str) else str(e) for e in response.errors]
        output = response.output
        if isinstance(output, dict):
            scope.update(output)
        scope["output"] = output
        scope["errors"] = errors
        frame.last_output = output
        frame.errors.extend(errors)
        return None

    def _if(self, step: IfStep, frame: _Frame) -> _Signal | None:
        """Run the first branch whose condition is true, else the ``else`` body."""
        for cond, body in step.branches:
            if self._truth(cond, frame, step.where):
                return self._steps(body, frame)
        if step.orelse is not None:
            return self._steps(step.orelse, frame)
        return None

    def _assign(self, names: tuple[str, ...], item: Any, scope: dict[str, Any], where: str) -> None:
        """Bind the loop variable(s) to ``item`` in ``scope``."""
        if len(names) == 1:
            scope[names[0]] = item
            return
        try:
            values = tuple(item)
        except TypeError:
            raise _Abort(f"{where}: cannot unpack {type(item).__name__} into {', '.join(names)}") from None
        if len(values) != len(names):
            raise _Abort(f"{where}: cannot unpack {len(values)} values into {len(names)} names")
        scope.update(zip(names, values, strict=True))

    def _iterable(self, step: LoopStep, frame: _Frame) -> Any:
        """The loop's iterable; a non-iterable value ends the run."""
        value = self._value(step.iterable, frame, step.where)
        try:
            iter(value)
        except TypeError:
            kind = type(value).__name__
            raise _Abort(f"{step.where}: value {value!r} of type {kind} is not iterable") from None
        return value

    def _loop(self, step: LoopStep, frame: _Frame) -> _Signal | None:
        """Run a ``for`` loop in this scope, or hand a ``fork`` to :meth:`_fork`."""
        iterable = self._iterable(step, frame)
        if step.fork:
            self._fork(step, list(iterable), frame)
            return None
        for item in iterable:
            self._assign(step.names, item, frame.scope, step.where)
            signal = self._steps(step.body, frame)
            if signal is _Signal.BREAK:
                break
            if signal is _Signal.RETURN:
                return signal
        return None

    def _fork(self, step: LoopStep, items: list[Any], frame: _Frame) -> None:
        """Submit one pool task per item, each over its own snapshot of the scope."""
        depth = getattr(_DEPTH, "depth", 0)
        for item in items:
            snapshot = dict(frame.scope)
            self._assign(step.names, item, snapshot, step.where)
            task = functools.partial(self._background, step.body, snapshot, step.where, frame.inherited, depth)
            try:
                self._spawn(task)
            except Exception as e:  # a full pool loses this iteration, and says so
                frame.errors.append(f"{step.where}: could not start iteration {item!r}: {e}")

    def _while(self, step: WhileStep, frame: _Frame) -> _Signal | None:
        """Run a ``while`` loop, at most ``max_while_iterations`` rounds."""
        rounds = 0
        while self._truth(step.condition, frame, step.where):
            rounds += 1
            if rounds > self.max_while_iterations:
                raise _Abort(f"{step.where}: ran {self.max_while_iterations} iterations and its condition"
                             " is still true; stopped (the limit is Runner.max_while_iterations)")
            signal = self._steps(step.body, frame)
            if signal is _Signal.BREAK:
                break
            if signal is _Signal.RETURN:
                return signal
        return None

    def _set(self, step: SetStep, frame: _Frame) -> None:
        """Assign each value in order."""
        for name, template in step.assignments:
            frame.scope[name] = self._render(template, frame, f"{step.where}.{name}")
        return None

    def _return(self, step: ReturnStep, frame: _Frame) -> _Signal:
        """Record the return value and end the procedure."""
        frame.result = None if step.value is None else self._render(step.value, frame, step.where)
        frame.returned = True
        return _Signal.RETURN

    def _jump(self, step: Jump, frame: _Frame) -> _Signal:
        """``break`` or ``continue``: end the body with that signal."""
        return _Signal.BREAK if step is Jump.BREAK else _Signal.CONTINUE
