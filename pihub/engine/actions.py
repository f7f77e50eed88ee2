"""Declared actions and the registry that runs them (Platypush's ``plugin.method`` calls).

A *plugin* is an object with a dotted ``name`` (``variable``, ``camera.pi``) whose methods
marked with :func:`action` can be called from outside as ``<name>.<method>``: by hooks,
procedures, ``POST /execute``, the websocket and MQTT. Nothing else on the object is
reachable. :class:`ActionRegistry` resolves an action string, checks and converts the
arguments against the method's annotations, calls it, and turns whatever happens into a
:class:`~pihub.messages.Response`. It never raises to its caller.

Resolution (``ActionRegistry.execute``):

* ``action`` splits on the **last** dot: ``camera.pi.take_picture`` -> plugin ``camera.pi``,
  action ``take_picture``.
* ``procedure.NAME`` runs a procedure through the caller given to
  :meth:`ActionRegistry.set_procedure_caller`; ``NAME`` is everything after the first dot
  (procedure names may contain dots). ``procedure.sync.NAME`` and ``procedure.async.NAME``
  are accepted as call forms and run ``NAME``: sync/async is a property of the procedure's
  declaration in the config, not of the call, so the prefix is only stripped.
* Arguments: a dict is passed as keywords, a list as positional arguments, ``None`` as no
  arguments, any other value as one positional argument. A ``*args`` parameter may also be
  given by name in a dict, with a list value (YAML-friendly: ``args: {names: [a, b]}``).
  Procedure arguments must be a dict (or ``None``).

Argument types come from the method's annotations and are checked *before* the call:

====================  =========================================================================
annotation            accepted (and converted)
====================  =========================================================================
``str``               a str
``int``               an int (not a bool), an integral float (``5.0``), a decimal string (``"5"``)
``float``             an int or float (not a bool), a numeric string; always converted to float
``bool``              a bool, 0/1, ``"true"/"false"/"yes"/"no"/"on"/"off"/"1"/"0"``
``list``/``list[T]``  a list or tuple (converted to a list), each item converted to ``T``
``dict``/``dict[str, T]``  a dict with str keys, each value converted to ``T``
``X | Y``/``X | None``  a value exactly of one member first, else the first member it converts to
``Literal[a, b]``     one of the listed values
``Any`` / none        anything, unchanged
``Annotated[T, "h"]`` as ``T``; the string ``h`` is appended to type errors as a hint
====================  =========================================================================

Strings are converted because HTTP query strings, forms and MQTT payloads carry text; a
value that does not convert is an error naming the action, the argument, the expected type
and the value: ``gpio.on: argument 'pin' must be an int, not 'x'``. Any other annotation is
refused when the plugin is registered.

Return mapping, as Platypush's ``@action``: a value becomes ``output``; a 2-tuple
``(output, error)`` becomes ``output`` plus ``errors=[error]`` (an error of ``None`` or ``""``
means none; a list of errors is kept as a list), so a genuine pair must be returned as a
list; a :class:`Response` is returned as is. The output is never JSON-coerced (Platypush
turns the string ``"123"`` into ``123``; pihub does not).

Errors: problems found by the registry (unknown plugin or action, bad arguments) and
:class:`~pihub.errors.ActionError` raised by an action body are user errors; they become
``"<plugin>.<action>: <message>"`` (or the bare resolution message) and are logged at DEBUG.
Any other exception is a plugin failure: it becomes ``"<ExceptionType>: <message>"`` and is
logged with its traceback at WARNING.

No retry: Platypush re-runs a failed action once after reloading its plugin; pihub does
not, because actions are not idempotent (a shell command, a GPIO pulse, a MIDI note).

Thread safety: :meth:`ActionRegistry.execute` runs concurrently on the dispatcher's workers
and the web threads. The plugin table is replaced, never mutated, under a lock, so lookups
take no lock. Plugins MUST make their own actions thread-safe.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import operator
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pihub.engine.procedures import procedure_name
from pihub.errors import ActionError, close_matches, did_you_mean, shorten
from pihub.messages import Response
from pihub.plugin import MARK, ActionInfo, Plugin

log = logging.getLogger("pihub.actions")

#: ``caller(name, kwargs, context) -> Response`` runs the procedure ``name`` with ``kwargs``;
#: ``context`` is the hook context it inherits, or None (see :mod:`pihub.engine.procedures`).
ProcedureCaller = Callable[[str, dict[str, Any], Mapping[str, Any] | None], Response]

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")
_ACTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RESERVED = frozenset({"procedure"})
_EMPTY = inspect.Parameter.empty


# --------------------------------------------------------------------------------------
# Argument converters: built once per parameter at registration.


class _Mismatch(Exception):
    """A value does not fit a converter; ``where`` locates it inside a container."""

    def __init__(self, expected: str, value: Any, where: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.where = where


Converter = Callable[[Any], Any]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _show(value: Any) -> str:
    """A short repr of a bad value for an error message (at most 60 characters, bounded in
    work: :func:`pihub.errors.shorten`)."""
    return shorten(value, 60)


def _conv_any(v: Any) -> Any:
    """Any value, unchanged."""
    return v


def _conv_str(v: Any) -> str:
    """A str only: numbers are not turned into text."""
    if isinstance(v, str):
        return v
    raise _Mismatch("a str", v)


def _conv_int(v: Any) -> int:
    """An int (not a bool), an integral float, or a base-10 integer string."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip(), 10)
        except ValueError:
            pass
    raise _Mismatch("an int", v)


def _conv_float(v: Any) -> float:
    """An int or float (not a bool) or a numeric string, as a float."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            pass
    raise _Mismatch("a float", v)


def _conv_bool(v: Any) -> bool:
    """A bool, 0/1, or true/false/yes/no/on/off/1/0 in any case."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        low = v.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise _Mismatch("a bool (true or false)", v)


def _conv_list(v: Any) -> list[Any]:
    """A list, or a tuple turned into a list."""
    if isinstance(v, list):
        return v
    if isinstance(v, tuple):
        return list(v)
    raise _Mismatch("a list", v)


def _conv_dict(v: Any) -> dict[str, Any]:
    """A dict whose keys are all str."""
    if isinstance(v, dict):
        for k in v:
            if not isinstance(k, str):
                raise _Mismatch("a dict with str keys", v)
        return v
    raise _Mismatch("a dict", v)


@dataclass(frozen=True, slots=True)
class _TypeSpec:
    """A compiled annotation: how to convert, how to test exactness, how to show it."""

    convert: Converter
    exact: Callable[[Any], bool]
    name: str
    expected: str
    choices: tuple[Any, ...] | None = None
    hint: str = ""


def _is_str(v: Any) -> bool:
    """True for a str."""
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    """True for a bool."""
    return isinstance(v, bool)


def _is_list(v: Any) -> bool:
    """True for a list."""
    return isinstance(v, list)


def _is_dict(v: Any) -> bool:
    """True for a dict."""
    return isinstance(v, dict)


def _is_anything(v: Any) -> bool:
    """Always True."""
    return True


def _is_none(v: Any) -> bool:
    """True for None."""
    return v is None


def _conv_none(v: Any) -> None:
    """None only."""
    if v is not None:
        raise _Mismatch("null", v)


_SIMPLE: dict[Any, _TypeSpec] = {
    str: _TypeSpec(_conv_str, _is_str, "str", "a str"),
    int: _TypeSpec(_conv_int, _is_int, "int", "an int"),
    float: _TypeSpec(_conv_float, _is_number, "float", "a float"),
    bool: _TypeSpec(_conv_bool, _is_bool, "bool", "a bool (true or false)"),
    list: _TypeSpec(_conv_list, _is_list, "list", "a list"),
    dict: _TypeSpec(_conv_dict, _is_dict, "dict", "a dict"),
    Any: _TypeSpec(_conv_any, _is_anything, "any", "any value"),
    object: _TypeSpec(_conv_any, _is_anything, "any", "any value"),
}
_NONE = _TypeSpec(_conv_none, _is_none, "None", "null")

_SUPPORTED = ("str, int, float, bool, list, dict, list[T], dict[str, T], X | Y, X | None, "
              "Literal[...], Any, Annotated[T, 'hint']")


def _article(name: str) -> str:
    """``name`` with its indefinite article: ``an int``, ``a list[str]``."""
    return ("an " if name[:1] in "aeiou" else "a ") + name


def _compile_type(ann: Any) -> _TypeSpec:
    """Compile one annotation into a :class:`_TypeSpec`.

    Raises:
        TypeError: for an annotation outside the supported set (message lists it).
    """
    if ann is _EMPTY:
        return _SIMPLE[Any]
    if ann is None or ann is type(None):
        return _NONE
    if ann in _SIMPLE:
        return _SIMPLE[ann]
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        inner = _compile_type(args[0])
        hint = " ".join(a for a in args[1:] if isinstance(a, str))
        return _TypeSpec(inner.convert, inner.exact, inner.name, inner.expected, inner.choices, hint)
    if origin is typing.Literal:
        choices = tuple(args)

        def conv_literal(v: Any) -> Any:
            """One of the literal values (same type and equal)."""
            for c in choices:
                if type(v) is type(c) and v == c:
                    return v
            raise _Mismatch("one of " + ", ".join(repr(c) for c in choices), v)

        def is_literal(v: Any) -> bool:
            """True for one of the literal values."""
            return any(type(v) is type(c) and v == c for c in choices)

        return _TypeSpec(conv_literal, is_literal, " | ".join(repr(c) for c in choices),
                         "one of " + ", ".join(repr(c) for c in choices), choices)
    if origin is list:
        item = _compile_type(args[0]) if args else _SIMPLE[Any]
        name = f"list[{item.name}]"

        def conv_list(v: Any) -> list[Any]:
            """A list or tuple, each item converted."""
            if not isinstance(v, (list, tuple)):
                raise _Mismatch(_article(name), v)
            items = v
            out = []
            for i, x in enumerate(items):
                try:
                    out.append(item.convert(x))
                except _Mismatch as e:
                    raise _Mismatch(e.expected, e.value, f"[{i}]{e.where}") from None
            return out

        def is_list_of(v: Any) -> bool:
            """True for a list whose items all fit exactly."""
            return isinstance(v, list) and all(item.exact(x) for x in v)

        return _TypeSpec(conv_list, is_list_of, name, _article(name))
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"unsupported annotation {ann!r}: dict keys must be str "
                            f"(supported: {_SUPPORTED})")
        value = _compile_type(args[1]) if args else _SIMPLE[Any]

        def conv_dict(v: Any) -> dict[str, Any]:
            """A dict with str keys, each value converted."""
            d = _conv_dict(v)
            out = {}
            for k, x in d.items():
                try:
                    out[k] = value.convert(x)
                except _Mismatch as e:
                    raise _Mismatch(e.expected, e.value, f"[{k!r}]{e.where}") from None
            return out

        def is_dict_of(v: Any) -> bool:
            """True for a str-keyed dict whose values all fit exactly."""
            return isinstance(v, dict) and all(isinstance(k, str) and value.exact(x) for k, x in v.items())

        return _TypeSpec(conv_dict, is_dict_of, f"dict[str, {value.name}]", "a dict")
    if origin is typing.Union or origin is types.UnionType:
        members = [_compile_type(a) for a in args]
        expected = " or ".join(m.expected for m in members)
        union_choices = next((m.choices for m in members if m.choices is not None), None)

        def conv_union(v: Any) -> Any:
            """The first exactly fitting member, else the first member that converts."""
            for m in members:
                if m.exact(v):
                    return m.convert(v)
            inner: _Mismatch | None = None
            for m in members:
                try:
                    return m.convert(v)
                except _Mismatch as e:
                    # A container member that fits but holds a bad item says more.
                    if e.where and inner is None:
                        inner = e
            raise inner or _Mismatch(expected, v)

        def is_member(v: Any) -> bool:
            """True when a member fits exactly."""
            return any(m.exact(v) for m in members)

        return _TypeSpec(conv_union, is_member, " | ".join(m.name for m in members), expected, union_choices)
    raise TypeError(f"unsupported annotation {ann!r} (supported: {_SUPPORTED})")


# --------------------------------------------------------------------------------------
# Compiled actions


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    type: _TypeSpec
    default: Any

    @property
    def required(self) -> bool:
        """True when the call must give this argument."""
        return self.default is _EMPTY and self.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                            inspect.Parameter.VAR_KEYWORD)


_ARGS_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:\s*(.*)$")


def _arg_docs(doc: str) -> dict[str, str]:
    """Per-argument descriptions from a Google-style ``Args:`` section."""
    out: dict[str, str] = {}
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        m = _ARGS_HEADER.match(lines[i])
        i += 1
        if not m:
            continue
        base = len(m.group(1))
        entry_indent = -1
        current = ""
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= base:
                break
            i += 1
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            am = _ARG_LINE.match(line.strip())
            if am and (entry_indent < 0 or indent == entry_indent):
                entry_indent = indent
                current = am.group(1)
                out[current] = am.group(3).strip()
            elif current:
                out[current] = (out[current] + " " + line.strip()).strip()
        break
    return out


def _json_safe(value: Any) -> Any:
    """``value`` if it is JSON-serialisable as is, else its repr (for ``describe()``)."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


class _BoundAction:
    """One action of one registered plugin, with its argument binder precompiled."""

    __slots__ = ("qualname", "method", "params", "by_name", "positional", "var_pos", "var_kw",
                 "required", "kw_call", "description", "blocking")

    def __init__(self, qualname: str, method: Callable[..., Any], params: list[_Param], doc: str,
                 aliases: list[str], *, blocking: bool = True) -> None:
        self.qualname = qualname
        self.method = method
        self.blocking = blocking
        self.params = params
        self.by_name = {p.name: p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD}
        self.positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                           inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        self.var_pos = next((p for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
        self.var_kw = next((p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        self.required = [p for p in params if p.required]
        # Everything can go by keyword unless a positional-only parameter or *args is involved.
        self.kw_call = not any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params)
        self.description = self._describe(doc, aliases)

    def _describe(self, doc: str, aliases: list[str]) -> dict[str, Any]:
        """The ``describe()`` entry of this action (see ActionRegistry.describe)."""
        arg_docs = _arg_docs(doc)
        args: dict[str, Any] = {}
        for p in self.params:
            entry: dict[str, Any] = {
                "type": p.type.name,
                "required": p.required,
                "default": None if p.default is _EMPTY else _json_safe(p.default),
                "doc": arg_docs.get(p.name, ""),
            }
            if p.type.choices is not None:
                entry["choices"] = [_json_safe(c) for c in p.type.choices]
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                entry["variadic"] = "positional"
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                entry["variadic"] = "keyword"
            args[p.name] = entry
        return {"action": self.qualname, "doc": doc, "args": args, "aliases": aliases}

    def _convert(self, p: _Param, value: Any, label: str | None = None) -> Any:
        """Convert one argument value; a mismatch becomes the user-facing ActionError."""
        try:
            return p.type.convert(value)
        except _Mismatch as e:
            hint = f" ({p.type.hint})" if p.type.hint else ""
            name = (label or p.name) + e.where
            raise ActionError(f"{self.qualname}: argument {name!r} must be {e.expected}, "
                              f"not {_show(e.value)}{hint}") from None

    def _var_items(self, values: Any) -> list[Any]:
        """Convert the items given to the ``*args`` parameter."""
        assert self.var_pos is not None
        return [self._convert(self.var_pos, v, f"{self.var_pos.name}[{i}]") for i, v in enumerate(values)]

    def bind(self, args: Any) -> tuple[list[Any], dict[str, Any]]:
        """Check and convert ``args``; return the positional and keyword call arguments.

        Raises:
            ActionError: for a missing, unknown, surplus or ill-typed argument.
        """
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        var_values: list[Any] = []
        if args is None:
            pass
        elif isinstance(args, dict):
            for key, raw in args.items():
                p = self.by_name.get(key) if isinstance(key, str) else None
                if p is None:
                    if not isinstance(key, str):
                        raise ActionError(f"{self.qualname}: argument names must be strings, "
                                          f"not {_show(key)}")
                    if self.var_kw is None:
                        raise ActionError(self._unknown(key))
                    extra[key] = self._convert(self.var_kw, raw, key)
                elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                    var_values = self._var_items(raw if isinstance(raw, (list, tuple)) else [raw])
                else:
                    values[key] = self._convert(p, raw)
        else:
            items = args if isinstance(args, (list, tuple)) else [args]
            n = len(self.positional)
            if len(items) > n and self.var_pos is None:
                raise ActionError(self._too_many(len(items)))
            for p, raw in zip(self.positional, items, strict=False):
                values[p.name] = self._convert(p, raw)
            if len(items) > n:
                var_values = self._var_items(items[n:])
        missing = [p.name for p in self.required if p.name not in values]
        if missing:
            s = "s" if len(missing) > 1 else ""
            raise ActionError(f"{self.qualname}: missing required argument{s} "
                              + ", ".join(repr(m) for m in missing))
        if self.kw_call and not var_values:
            values.update(extra)
            return [], values
        pos = [values.pop(p.name, p.default) for p in self.positional]
        pos.extend(var_values)
        values.update(extra)
        return pos, values

    def _unknown(self, key: str) -> str:
        """The message for an unknown argument name, with a did-you-mean or the list."""
        names = [p.name for p in self.params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        close = close_matches(key, names, n=1)
        if close:
            tail = f" (did you mean {close[0]!r}?)"
        elif names:
            tail = f" (arguments: {', '.join(names)})"
        else:
            tail = " (it takes no arguments)"
        return f"{self.qualname}: unknown argument {key!r}{tail}"

    def _too_many(self, given: int) -> str:
        """The message for more positional arguments than the action takes."""
        n = len(self.positional)
        if n == 0:
            return (f"{self.qualname}: takes no positional arguments, got {given} "
                    "(pass a dict of named arguments)")
        names = ", ".join(p.name for p in self.positional)
        s = "s" if n > 1 else ""
        return f"{self.qualname}: takes at most {n} positional argument{s} ({names}), got {given}"


def _compile_action(plugin: Plugin, plugin_name: str, attr: str, info: ActionInfo) -> _BoundAction:
    """Build the :class:`_BoundAction` of ``plugin.attr``.

    Raises:
        TypeError: for an unresolvable or unsupported annotation (naming the action).
    """
    qualname = f"{plugin_name}.{attr}"
    method = getattr(plugin, attr)
    func = getattr(method, "__func__", method)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as e:  # NameError for a forward reference, TypeError for bad syntax
        raise TypeError(f"{qualname}: cannot resolve the annotations: {e}") from None
    doc = inspect.cleandoc(func.__doc__) if func.__doc__ else info.doc
    # an undecorated override keeps the ancestor's aliases but not its promise not to block
    blocking = info.blocking or getattr(func, MARK, None) is not info
    params = []
    for p in inspect.signature(method).parameters.values():
        try:
            spec = _compile_type(hints.get(p.name, _EMPTY))
        except TypeError as e:
            raise TypeError(f"{qualname}: argument {p.name!r}: {e}") from None
        params.append(_Param(p.name, p.kind, spec, p.default))
    return _BoundAction(qualname, method, params, doc, [f"{plugin_name}.{a}" for a in info.aliases],
                        blocking=blocking)


def _find_actions(cls: type) -> dict[str, ActionInfo]:
    """``{attribute: info}`` for every action of ``cls``.

    A method overriding an action stays an action even without ``@action`` (as in
    Platypush, whose whitelist comes from the whole class hierarchy); the override's
    signature and docstring are used, the decorated ancestor's aliases kept.
    """
    found: dict[str, ActionInfo] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            info = getattr(value, MARK, None)
            if isinstance(info, ActionInfo):
                found[attr] = info
    return {attr: v for attr, v in found.items() if callable(getattr(cls, attr, None))}


@dataclass(frozen=True, slots=True)
class _Entry:
    plugin: Plugin
    actions: dict[str, _BoundAction]
    listing: str
    description: list[dict[str, Any]] = field(default_factory=list)
    enabled: bool = True


# --------------------------------------------------------------------------------------
# The registry


def _fail(message: str) -> Response:
    """A Response carrying one error and no output."""
    return Response(errors=[message])


def _exception_text(e: BaseException) -> str:
    """``Type: message``, or ``Type`` alone when the message is empty."""
    msg = str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _map_result(result: Any) -> Response:
    """Apply the Platypush ``@action`` return convention (see the module docstring)."""
    if isinstance(result, Response):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        output, error = result
        if error is None or (isinstance(error, (str, list, tuple)) and not error):
            return Response(output=output)
        if isinstance(error, (list, tuple)):
            return Response(output=output, errors=[str(e) for e in error])
        return Response(output=output, errors=[str(error)])
    return Response(output=result)


class ActionRegistry:
    """The plugins of the hub and the one entry point that runs their actions.

    Every per-action check is compiled by :meth:`register`, so :meth:`execute` does a split,
    two dict lookups, the argument conversion and the call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._procedure_caller: ProcedureCaller | None = None

    # -- table --------------------------------------------------------------------------

    def register(self, plugin: Plugin, *, enabled: bool = True) -> None:
        """Add a plugin under ``plugin.name`` and compile its actions.

        Args:
            plugin: the plugin instance.
            enabled: False when the config disables the plugin (``disabled: true`` or
                ``enabled: false`` in its section): it is kept, so :meth:`get` and
                :meth:`names` still see it and the hub closes it, but its actions answer
                that it is disabled and :meth:`describe` leaves them out.

        Raises:
            ValueError: the name is invalid, reserved, or taken (naming both plugins).
            TypeError: an action has an unsupported annotation or a clashing alias.
        """
        name = plugin.name
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValueError(f"plugin name must be lower-case dotted identifiers like 'camera.pi', "
                             f"not {name!r} ({type(plugin).__name__})")
        if name in _RESERVED:
            raise ValueError(f"plugin name {name!r} is reserved ({type(plugin).__name__})")
        actions: dict[str, _BoundAction] = {}
        canonical: list[_BoundAction] = []
        for attr, info in sorted(_find_actions(type(plugin)).items()):
            if not _ACTION_RE.fullmatch(attr):
                raise TypeError(f"{name}.{attr}: action names must be public identifiers")
            bound = _compile_action(plugin, name, attr, info)
            canonical.append(bound)
            for action_name in (attr, *info.aliases):
                if not _ACTION_RE.fullmatch(action_name):
                    raise TypeError(f"{name}.{attr}: alias {action_name!r} is not a public identifier")
                if action_name in actions:
                    raise TypeError(f"{name}.{action_name}: alias of {attr!r} clashes with "
                                    f"{actions[action_name].qualname!r}")
                actions[action_name] = bound
        entry = _Entry(plugin, actions, ", ".join(sorted(actions)),
                       [b.description for b in canonical], enabled)
        with self._lock:
            other = self._entries.get(name)
            if other is not None:
                raise ValueError(f"plugin name {name!r} is taken by {type(other.plugin).__name__}; "
                                 f"cannot also register {type(plugin).__name__} under it")
            entries = dict(self._entries)
            entries[name] = entry
            self._entries = entries

    def unregister(self, name: str) -> Plugin | None:
        """Remove a plugin; return it, or None when no plugin has that name.

        The plugin is not closed: its owner (the hub) closes it.
        """
        with self._lock:
            entries = dict(self._entries)
            entry = entries.pop(name, None)
            self._entries = entries
        return entry.plugin if entry else None

    def get(self, name: str) -> Plugin:
        """The plugin registered as ``name``, enabled or not.

        Raises:
            ActionError: no such plugin (with a did-you-mean).
        """
        entry = self._entries.get(name)
        if entry is None:
            raise ActionError(self._no_plugin(name))
        return entry.plugin

    def names(self) -> list[str]:
        """Registered plugin names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def has_side_effects(self, action: str) -> bool:
        """Whether ``action`` would act outside pihub (see :attr:`Plugin.side_effects`).

        Returns:
            The plugin's ``side_effects`` flag; False for ``procedure.*`` (their steps
            are judged one by one) and for actions that do not resolve (running them only
            reports the error).
        """
        if not isinstance(action, str) or action.startswith("procedure."):
            return False
        entry = self._entries.get(action.rpartition(".")[0])
        return bool(entry and entry.enabled and type(entry.plugin).side_effects)

    def is_blocking(self, action: str) -> bool:
        """Whether ``action`` may block (see ``blocking`` of :func:`pihub.plugin.action`).

        Returns:
            False only for a ``plugin.method`` that resolves to an action declared
            ``blocking=False``; True for every other action, for ``procedure.*`` (a
            procedure may loop or call anything) and for names that do not resolve.
        """
        if not isinstance(action, str) or action.startswith("procedure."):
            return True
        bound = self._resolve(action)[0]
        return bound is None or bound.blocking

    def set_procedure_caller(self, caller: ProcedureCaller | None) -> None:
        """Route ``procedure.NAME`` actions to ``caller(name, kwargs, context) -> Response``.

        The caller reports an unknown procedure itself (in the Response's errors).
        """
        self._procedure_caller = caller

    def describe(self) -> list[dict[str, Any]]:
        """Every action, sorted, for ``GET /actions`` and the panel (JSON-serialisable).

        Returns:
            ``[{"action": "variable.set", "doc": str, "aliases": ["plugin.alias", ...],
            "args": {name: {"type": str, "required": bool, "default": value or None,
            "doc": str, ["choices": [...]], ["variadic": "positional" | "keyword"]}}}]``.
            Defaults that are not JSON values are given as their repr.
        """
        out = [d for entry in self._entries.values() if entry.enabled for d in entry.description]
        out.sort(key=operator.itemgetter("action"))
        return copy.deepcopy(out)

    # -- running ------------------------------------------------------------------------

    def execute(self, action: object, args: Any = None, context: Mapping[str, Any] | None = None) -> Response:
        """Run ``action`` with ``args`` and report the outcome; never raises.

        Args:
            action: ``plugin.method`` or ``procedure.NAME`` (see the module docstring).
            args: a dict (keywords), a list (positional), None (nothing) or one value.
            context: for ``procedure.NAME`` run from a hook, the hook context the
                procedure inherits; plugins' actions never see it.

        Returns:
            The action's Response: output and errors as the module docstring describes.
        """
        if not isinstance(action, str):
            return _fail(f"action must be a 'plugin.method' string, not {_show(action)}")
        if action.startswith("procedure."):
            return self._run_procedure(action, args, context)
        bound, error = self._resolve(action)
        if bound is None:
            return _fail(error)
        try:
            pos, kw = bound.bind(args)
        except ActionError as e:
            log.debug("%s", e)
            return _fail(str(e))
        try:
            result = bound.method(*pos, **kw)
        except ActionError as e:
            log.debug("%s: %s", action, e)
            return _fail(f"{action}: {e}")
        except Exception as e:
            log.warning("%s failed", action, exc_info=True)
            return _fail(_exception_text(e))
        return _map_result(result)

    def check(self, action: str) -> str | None:
        """Why ``action`` (a non-procedure ``plugin.method``) cannot run, or None if it can.

        Used at config load to report misspelled actions before anything runs.
        """
        return self._resolve(action)[1]

    def _resolve(self, action: str) -> tuple[_BoundAction | None, str]:
        """The bound action for ``plugin.method``, or None and the reason."""
        plugin_name, dot, method = action.rpartition(".")
        if not dot or not plugin_name or not method:
            return None, f"action must be 'plugin.method', not {action!r}"
        entry = self._entries.get(plugin_name)
        if entry is None:
            return None, self._no_plugin(plugin_name)
        if not entry.enabled:
            return None, (f"plugin {plugin_name!r} is disabled in the config (remove 'disabled: true' "
                          f"or 'enabled: false' from its '{plugin_name}:' section to enable it)")
        bound = entry.actions.get(method)
        if bound is None:
            close = close_matches(method, entry.actions, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return None, (f"{method!r} is not an action of plugin {plugin_name!r} "
                          f"({hint}actions: {entry.listing or 'none'})")
        return bound, ""

    def _run_procedure(self, action: str, args: Any, context: Mapping[str, Any] | None) -> Response:
        """Route ``procedure[.sync|.async].NAME`` to the procedure caller (never raises)."""
        name = procedure_name(action)
        if not name:
            return _fail(f"procedure name missing in {action!r} (use 'procedure.NAME')")
        if args is None:
            kwargs: dict[str, Any] = {}
        elif isinstance(args, dict) and all(isinstance(k, str) for k in args):
            kwargs = dict(args)
        else:
            return _fail(f"{action}: procedure arguments must be a dict of names to values, "
                         f"not {_show(args)}")
        caller = self._procedure_caller
        if caller is None:
            return _fail(f"no procedure engine is set up, cannot run {action!r}")
        try:
            result = caller(name, kwargs, context)
        except Exception as e:
            log.warning("%s failed", action, exc_info=True)
            return _fail(_exception_text(e))
        return result if isinstance(result, Response) else Response(output=result)

    def _no_plugin(self, name: str) -> str:
        """The message for an unknown plugin name, with a did-you-mean."""
        candidates = list(self._entries)
        if self._procedure_caller is not None:
            candidates.append("procedure")
        return f"no such plugin {name!r}{did_you_mean(name, candidates, n=1)}"
