"""The safe ``${...}`` evaluator and the templates built on it.

Platypush runs every ``${...}`` through Python's ``eval``. pihub parses the expression
with :func:`ast.parse` once, at config load, checks every node against a whitelist and
turns the tree into a chain of small closures; evaluating it later is a walk of those
closures over a names mapping. Nothing is ever handed to ``eval``/``exec``/``compile``.

What an expression may use:

- constants, names, list/tuple/set/dict displays (with ``*``/``**`` unpacking),
  comprehensions and generator expressions, subscripts and slices;
- unary, binary (not ``@``), boolean and comparison operators (``in``, ``is`` too),
  conditional expressions, f-strings (with ``!s``/``!r``/``!a`` and format specs);
- attributes whose name does not start with ``_``, and only on plain data: whitelisted
  methods and properties of str, bytes, list, tuple, set, dict, numbers, date/time
  values; the fields of a dataclass instance; and, on a dict, a key that is not a dict
  method name (``event.args`` reads ``event["args"]``, as Platypush's Event objects
  allowed in conditions);
- calls to the whitelisted builtins (:data:`BUILTINS`) and to the whitelisted methods
  above. Methods that mutate (``dict.update``, ``list.append``...) are not callable:
  an expression never changes the names it reads. ``str.format``/``format_map`` are not
  callable either (their ``{0.__class__}`` syntax reaches attributes).

Not allowed: imports, lambdas, ``:=``, ``await``/``yield``, names starting with ``__``,
any other attribute, calls to anything else.

Resource limits (per evaluation; exceeding one raises :class:`ExpressionError` naming the
operation and the limit): ``range()`` length :data:`MAX_RANGE`; the size of one value
built :data:`MAX_SEQUENCE` items or characters, and the total of items and characters
built :data:`MAX_ALLOC`; comprehension iterations :data:`MAX_ITERATIONS`; integer results
of ``*``, ``**`` and ``<<`` :data:`MAX_INT_BITS` bits; format widths and precisions
:data:`MAX_FORMAT_WIDTH`. Every operation that builds a value is charged: ``*``, ``+``,
slices, unpacking, displays' ``*``/``**``, the text methods (``upper``, ``split``,
``encode``... charged the owner's length, ``join``/``replace``/padding their result),
``copy`` and the set operations, ``list()``/``tuple()``/``set()``/``dict()``/``sorted()``,
lazy results, and the text of ``str()``, f-strings, ``%`` and template embedding. The
charge is taken *before* the value is built wherever its size is known from the operands;
an iterator is copied one item at a time and refused once past the limit. Text written
from a container (``str([...])``, ``f'{x}'``, ``'%s' % x``, JSON in a template) repeats a
shared item at each place (``[[[0] * 1000] * 1000] * 300`` is 3,300 items in memory but
900 M characters as text), so its size is estimated first by a walk that visits each
container once and stops at the limit, and the text actually written is charged after.
CPU is bounded by :data:`MAX_OPERATIONS` touched items: each comprehension iteration,
and every item a scan, comparison or hash visits (``min``/``max``/``sum``/``sorted``...,
``in``, ``==`` and ordering of text and containers, ``count``/``find``/``index``, ``get``
with a tuple key, the set operations), charged before it runs; a comparison walks shared
containers like the text estimate does. A ``key=`` of ``sorted``/``min``/``max`` is called
through the same charges. The set/dict operators ``|`` ``^`` (both operands' lengths) and
``&`` ``-`` (the left one's) are charged as ``union``/``difference`` are. A template is
rendered with **one** budget for all its expressions (a string, list or dict of them, at any
depth), its lists and dicts charged their items, and a template string's length is checked
after each part, so a template is bounded as one expression is.
The source is at most :data:`MAX_SOURCE_CHARS` characters and :data:`MAX_DEPTH` nodes
deep, which also bounds the evaluator's recursion (there are no user functions). The
text of a template string (all its parts) is at most :data:`MAX_SEQUENCE` characters.

Templates (:func:`compile_template`), the type-preserving rule:

- a string that is exactly ``${expr}`` (whitespace allowed inside the braces only)
  renders to the expression's value, with its type;
- any other string with ``${...}`` parts renders to a string: each value goes through
  ``str()``, except lists, tuples and dicts, which are JSON-dumped as Platypush does
  (``a ${x} b`` -> ``a {"k": 1} b``);
- a string without ``${`` is returned unchanged. Unlike Platypush, no string is ever
  JSON-decoded: ``"123"`` stays ``"123"``;
- ``\\${`` renders a literal ``${`` for that occurrence only; the rest of the string is
  still expanded. There is no escape for the backslash itself;
- lists and dicts are rendered recursively; dict keys are not templated;
- the scanner finds the ``}`` that closes ``${`` by skipping nested brackets and string
  literals, so ``${ {"a": 1}["a"] }`` and ``${ "}" + x }`` work;
- an undefined name is an error (Platypush kept the literal text).

Results that are lazy iterables (``range``, ``zip``, ``enumerate``, ``reversed``, dict
views, generator expressions) are turned into lists, as Platypush turned ranges into lists.

A Secret (:class:`~pihub.config.yamlsrc.Secret`, from ``!env``/``!file``) where a template
or an expression is expected is literal text: it is never parsed for ``${...}``, so its
value can neither be expanded nor shown in a syntax error.

Secrets inside expressions, one rule: inside
an expression or template a Secret is its **real text**, on every path, because the value
goes to an action that needs it (a token in a URL or a header). ``${s}``, ``"a ${s} b"``,
``${f'{s}'}`` (any ``!s``/``!r``/``!a`` conversion and format spec), ``${str(s)}``,
``${'%s' % s}``, ``${s + 'x'}``, slices, string methods, ``join``, iterating it, and a
Secret inside a list/dict that is formatted or embedded: all compute with the real text,
never with ``***``. And text built from a Secret **is a Secret**: the result of each of
those is a :class:`Secret` holding the real text, so an action gets the real value while
``repr``/``str``/logs/error messages show ``***``; an :class:`~pihub.errors.ExpressionError`
names values by ``repr`` and so never shows it. What is not text is not redacted: a number
parsed from a Secret (``int(s)``), ``len(s)``, comparisons, and ``s.encode()`` (bytes) are
plain values.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import functools
import itertools
import json
import operator
import re
import types
from collections import ChainMap
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    Sized,
    ValuesView,
)
from collections.abc import Set as AbstractSet
from typing import Any

from pihub.config.yamlsrc import Secret
from pihub.errors import ExpressionError, did_you_mean
from pihub.messages import Encoder

__all__ = [
    "BUILTINS", "MAX_ALLOC", "MAX_DEPTH", "MAX_FORMAT_WIDTH", "MAX_INT_BITS", "MAX_ITERATIONS",
    "MAX_OPERATIONS", "MAX_RANGE", "MAX_SEQUENCE", "MAX_SOURCE_CHARS", "Expr", "Template", "compile_expr",
    "compile_template", "has_templates",
]

MAX_SOURCE_CHARS = 10_000
MAX_DEPTH = 100
MAX_RANGE = 100_000
MAX_SEQUENCE = 1_000_000
MAX_ALLOC = 2_000_000
MAX_ITERATIONS = 100_000
#: Items one evaluation (or one render of a template) may touch: each item a scan, a
#: comparison or a hash visits, and each comprehension iteration. The C loops behind these
#: take 5-40 ns an item on a 2020s x86 core (``max`` of a str ~12, ``sum`` ~5, ``max`` of
#: zipped pairs ~40) and a Pi 4 core is about 5 times slower, so 10 M items is ~0.1-0.4 s
#: here and ~0.5-2 s on a Pi at the very worst; a hook scanning a 1 MB text ten times, or
#: a thousand-item list a thousand times, stays under it.
MAX_OPERATIONS = 10_000_000
MAX_INT_BITS = 10_000
MAX_FORMAT_WIDTH = 1_000

Names = Mapping[str, Any]


class _Fail(Exception):
    """An evaluation problem; :meth:`Expr.value` prefixes it with the expression."""


class _Budget:
    """What one evaluation, or one render of a whole template, may still spend.

    Comprehension iterations, built items (:data:`MAX_ALLOC`) and touched items
    (:data:`MAX_OPERATIONS`). A template's renders share one budget across all their
    expressions, so a template has the same total limits as one expression.
    """

    __slots__ = ("alloc", "iterations", "ops", "whole")

    def __init__(self, whole: str = "expression") -> None:
        self.iterations = MAX_ITERATIONS
        self.alloc = MAX_ALLOC
        self.ops = MAX_OPERATIONS
        self.whole = whole  # "expression" or "template": who the totals are for, in messages

    def iterate(self) -> None:
        """Count one comprehension iteration (also one touched item).

        Raises:
            _Fail: past :data:`MAX_ITERATIONS` or :data:`MAX_OPERATIONS`.
        """
        self.iterations -= 1
        self.ops -= 1
        if self.iterations < 0:
            raise _Fail(f"comprehensions ran more than {MAX_ITERATIONS} iterations")
        if self.ops < 0:
            self.scan(0, "comprehension")

    def scan(self, size: int, what: str) -> None:
        """Count ``size`` items that ``what`` is about to touch (compare, hash, sum...), before it does.

        Raises:
            _Fail: when the total touched exceeds :data:`MAX_OPERATIONS`.
        """
        self.ops -= size
        if self.ops < 0:
            raise _Fail(f"{what}: {self.whole} touched more than {MAX_OPERATIONS} items in total"
                        " (scans, comparisons and iterations)")

    def check(self, size: int, what: str = "", *, estimate: bool = False) -> None:
        """Refuse, before it is built, a value of ``size`` items or characters that could not be charged.

        Args:
            size: the value's size, or an estimate of it.
            what: the operation building it (``"str()"``, ``"list.copy()"``), for the message.
            estimate: ``size`` is a lower bound (the message says "at least").

        Raises:
            _Fail: when ``size`` exceeds :data:`MAX_SEQUENCE` or what is left of :data:`MAX_ALLOC`.
        """
        doing = f"{what}: " if what else ""
        if size > MAX_SEQUENCE:
            raise _Fail(f"{doing}result of {'at least ' if estimate else ''}{size} items or characters exceeds the limit of {MAX_SEQUENCE}")
        if size > self.alloc:
            raise _Fail(f"{doing}{self.whole} built more than {MAX_ALLOC} items or characters in total")

    def charge(self, size: int, what: str = "") -> None:
        """Count ``size`` items or characters about to be built (see :meth:`check`).

        Raises:
            _Fail: when one sequence exceeds :data:`MAX_SEQUENCE` or the evaluation's total
                exceeds :data:`MAX_ALLOC`.
        """
        self.check(size, what)
        self.alloc -= size

    @property
    def room(self) -> int:
        """The most items or characters one value may still have."""
        return min(MAX_SEQUENCE, self.alloc)


# --------------------------------------------------------------------------------------------
# whitelisted builtins


def _range(*args: int) -> range:
    """``range`` limited to :data:`MAX_RANGE` items."""
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise _Fail(f"range of {len(r)} items exceeds the limit of {MAX_RANGE}")
    return r


def _sum(iterable: Iterable[Any], start: Any = 0) -> Any:
    """``sum`` whose start must be a number (summing lists would sidestep the size limits)."""
    if isinstance(start, bool) or not isinstance(start, (int, float, complex)):
        raise _Fail(f"sum() start must be a number, not {type(start).__name__}")
    return sum(iterable, start)


def _round(number: Any, ndigits: int | None = None) -> Any:
    """``round`` with ``ndigits`` limited to +-:data:`MAX_FORMAT_WIDTH`."""
    if ndigits is None:
        return round(number)
    if isinstance(ndigits, int) and abs(ndigits) > MAX_FORMAT_WIDTH:
        raise _Fail(f"round() ndigits must be within +-{MAX_FORMAT_WIDTH}, not {ndigits}")
    return round(number, ndigits)


_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})


def _has_secret(value: Any) -> bool:
    """True when ``value`` is a Secret or a list/tuple/set/dict holding one (at any depth).

    Each container is looked at once, however often it is shared (``[[x] * 1000] * 1000``).
    """
    seen: set[int] = set()
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, Secret):
            return True
        kind = type(v)
        if kind not in _CONTAINERS or id(v) in seen:
            continue
        seen.add(id(v))
        if kind is dict:
            todo.extend(v.keys())
            todo.extend(v.values())
        else:
            todo.extend(v)
    return False


def _unsecret(value: Any, done: dict[int, Any] | None = None) -> Any:
    """``value`` with each Secret in it (at any depth of lists/tuples/sets/dicts) as a plain str.

    A container shared inside ``value`` is converted once and stays shared in the result.
    """
    if isinstance(value, Secret):
        return value.reveal()
    kind = type(value)
    if kind not in _CONTAINERS:
        return value
    if done is None:
        done = {}
    out = done.get(id(value))
    if out is None:
        if kind is dict:
            out = {_unsecret(k, done): _unsecret(v, done) for k, v in value.items()}
        else:
            out = kind(_unsecret(v, done) for v in value)
        done[id(value)] = out
    return out


_SCALAR_TEXT = {bool: 4, type(None): 4, float: 3, complex: 2}  # fewest characters each type prints


def _text_size(value: Any, limit: int) -> int:
    """A lower bound of the characters ``str()``, ``repr()`` or JSON write for ``value``.

    The text repeats a shared value at each place it appears, so it can be far larger than
    the memory ``value`` takes (``[[[0] * 1000] * 1000] * 300`` is 3,300 items that print
    as 900 M characters). Each container is walked once (its size is remembered), and a
    container's walk stops once its count passes ``limit``, so the cost stays near
    ``min(limit, distinct items)`` steps.

    Returns:
        The estimate; above ``limit`` when the text would be larger than ``limit``.
    """
    sizes: dict[int, int] = {}

    def size(v: Any) -> int:
        kind = type(v)
        if isinstance(v, str):
            return len(v) + 2
        if isinstance(v, int) and kind is not bool:
            return max(v.bit_length() - 1, 0) * 3 // 10 + 1  # v >= 2**(bit_length-1): its digits, at least
        fixed = _SCALAR_TEXT.get(kind)
        if fixed is not None:
            return fixed
        if isinstance(v, (bytes, bytearray)):
            return len(v) + 3
        known = sizes.get(id(v))
        if known is not None:
            return known
        sizes[id(v)] = 5  # while it is walked: a container inside itself prints as [...]
        total = 0  # brackets and separators: 2 a list item (", "), 4 a dict item (", " and ": ")
        if isinstance(v, Mapping):
            for k, item in v.items():
                total += size(k) + size(item) + 4
                if total > limit:
                    break
        elif isinstance(v, (list, tuple, set, frozenset)):
            for item in v:
                total += size(item) + 2
                if total > limit:
                    break
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            for f in dataclasses.fields(v):
                total += len(f.name) + size(getattr(v, f.name)) + 3
                if total > limit:
                    break
        else:  # a date, an Event...: values that print in bounded text
            total = len(repr(v))
        sizes[id(v)] = total
        return total

    return size(value)


def _collect(values: Any, budget: _Budget, what: str) -> Any:
    """``values`` charged as a new container of its items, before that container is built.

    Returns:
        ``values`` itself when it has a length (the caller builds from it), else a list of
        at most :attr:`_Budget.room` items, taken one by one, so an endless or huge iterator
        is refused after that many items rather than after all of them (at once when it
        knows its length: ``reversed()``). That is up to :data:`MAX_SEQUENCE` new items,
        e.g. ~90 MB of tuples for ``list(enumerate(xs))`` of a huge ``xs``.

    Raises:
        _Fail: naming ``what`` when the items exceed the limits.
    """
    if isinstance(values, Sized):
        budget.charge(len(values), what)
        return values
    budget.check(operator.length_hint(values), what)  # reversed(), iter(list) know their length
    out = list(itertools.islice(values, budget.room + 1))
    budget.charge(len(out), what)
    return out


#: Item types whose comparison or hash touches one item (str and bytes compare at memcmp speed).
_FLAT_ITEMS = frozenset({int, float, bool, type(None), complex, str, bytes, Secret})


def _work(value: Any, limit: int) -> int:
    """An upper bound of the items comparing, hashing or scanning ``value`` touches.

    A str or bytes is its length. A list/tuple/set/dict whose items (and keys) are all
    scalars is its length (counted at C speed); one holding containers is walked like
    :func:`_text_size`, a shared container counted at each place it appears (comparing
    ``[[0] * 1000] * 1000`` with an equal copy touches 1 M items), each container walked
    once and the walk stopped once past ``limit``.

    Returns:
        The bound; above ``limit`` when the work would be larger than ``limit``.
    """
    kind = type(value)
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if kind not in _CONTAINERS:
        return len(value) if isinstance(value, Sized) else 1
    if kind is dict:
        if _FLAT_ITEMS.issuperset(map(type, value.values())) and _FLAT_ITEMS.issuperset(map(type, value)):
            return 2 * len(value)
    elif _FLAT_ITEMS.issuperset(map(type, value)):
        return len(value)
    sizes: dict[int, int] = {}

    def size(v: Any) -> int:
        kind = type(v)
        if kind not in _CONTAINERS:
            return 1
        known = sizes.get(id(v))
        if known is not None:
            return known
        sizes[id(v)] = 1  # while it is walked: a container inside itself
        total = 1
        for item in itertools.chain(v.keys(), v.values()) if kind is dict else v:
            total += size(item)
            if total > limit:
                break
        sizes[id(v)] = total
        return total

    return size(value)


def _scan(value: Any, budget: _Budget, what: str) -> None:
    """Charge the items ``what`` touches in ``value`` (see :func:`_work`), before it touches them."""
    budget.scan(_work(value, max(budget.ops, 0) + 1), what)


def _check_text(value: Any, budget: _Budget, what: str) -> None:
    """Refuse to write ``value`` as text when its text would exceed the limits (see :func:`_text_size`)."""
    if type(value) not in _PLAIN_TEXT and not isinstance(value, str):
        budget.check(_text_size(value, budget.room), what, estimate=True)


_PLAIN_TEXT = frozenset({int, float, bool, type(None), complex})


def _taint(out: Any) -> Any:
    """A result built from a Secret: text becomes a Secret (so do the strings of a list/tuple)."""
    if isinstance(out, str):
        return out if isinstance(out, Secret) else Secret(out)
    if type(out) in (list, tuple):
        return type(out)(_taint(v) for v in out)
    return out


def _secret_chars(value: Any) -> Any:
    """What iterating ``value`` should see: a Secret's characters as Secrets, else ``value``."""
    return [Secret(c) for c in value.reveal()] if isinstance(value, Secret) else value


def _str(*args: Any, **kwargs: Any) -> str:
    """``str``, but a Secret (also inside a container) gives its real text, as a Secret."""
    if len(args) == 1 and not kwargs and _has_secret(args[0]):
        return Secret(str(_unsecret(args[0])))
    return str(*args, **kwargs)


#: The builtins an expression may call, by name. Names in the scope shadow them.
BUILTINS: Mapping[str, Any] = types.MappingProxyType({
    "len": len, "str": _str, "int": int, "float": float, "bool": bool, "abs": abs,
    "round": _round, "min": min, "max": max, "sum": _sum,
    "sorted": sorted, "reversed": reversed, "any": any, "all": all,
    "range": _range, "list": list, "dict": dict, "tuple": tuple, "set": set,
    "enumerate": enumerate, "zip": zip,
})
_BUILTIN_IDS = frozenset(id(f) for f in BUILTINS.values())
#: Builtins that iterate their arguments: a Secret among them is iterated as Secret characters.
_ITERATING = frozenset(id(BUILTINS[n]) for n in (
    "min", "max", "sorted", "reversed", "any", "all", "list", "dict", "tuple", "set", "enumerate", "zip"))
#: Builtins that copy the items of their first argument into a new container, by id: their name.
_COPYING = {id(BUILTINS[n]): n for n in ("list", "tuple", "set", "sorted", "dict")}
#: Builtins that touch each item of their arguments, by id: (name, compare or hash them).
#: A lazy argument (a generator, zip...) is not charged here: its items were charged as
#: iterations or when it was made (``zip``/``enumerate``/``reversed`` of a sized value).
_SCANNING = {id(BUILTINS[n]): (n, n in ("min", "max", "sorted", "set", "dict")) for n in (
    "min", "max", "sum", "any", "all", "sorted", "list", "tuple", "set", "dict", "enumerate", "zip",
    "reversed", "int", "float")}


def _precheck_builtin(fn: Any, args: list[Any], kwargs: dict[str, Any], budget: _Budget) -> list[Any]:
    """Charge what a copying builtin will build and the items a scanning one touches, before it runs.

    Returns the args to use.

    ``str()`` of a container is only checked here (its size is estimated by
    :func:`_text_size`); the call site charges the text it actually built.
    """
    scanning = _SCANNING.get(id(fn))
    if scanning is not None:
        what, deep = scanning
        for arg in args:
            if deep:
                _scan(arg, budget, f"{what}()")
            elif isinstance(arg, Sized):
                budget.scan(len(arg), f"{what}()")
    name = _COPYING.get(id(fn))
    if name is not None:
        if args:
            args = [_collect(args[0], budget, f"{name}()"), *args[1:]]
        if kwargs:
            budget.charge(len(kwargs), f"{name}()")
    elif fn is _str and len(args) == 1:
        _check_text(args[0], budget, "str()")
    return args


class _ChargedKey:
    """A ``key=`` of sorted/min/max, called for each item through :func:`_invoke` (so charged).

    Without it ``sorted(xs, key='x'.center)`` would build one uncharged string per item.
    """

    __slots__ = ("budget", "fn")

    def __init__(self, fn: Any, budget: _Budget) -> None:
        _check_callable(fn)
        self.fn = fn
        self.budget = budget

    def __call__(self, item: Any) -> Any:
        return _invoke(self.fn, [item], {}, self.budget)


def _invoke(fn: Any, args: list[Any], kwargs: dict[str, Any], budget: _Budget) -> Any:
    """Call an allowed ``fn``, charging what it builds and touches before it runs."""
    _check_callable(fn)
    secret = False
    # a builtin such as min or any is a builtin_function_or_method too: the id decides
    method = id(fn) not in _BUILTIN_IDS and isinstance(fn, _METHOD_TYPES)
    if method:
        args = _precheck_method(fn, args, budget)
        # a str method on a Secret, or given one (join, replace...), builds secret text
        secret = isinstance(fn.__self__, str) and (
            isinstance(fn.__self__, Secret) or any(_has_secret(a) for a in args))
    else:
        if id(fn) in _ITERATING and any(isinstance(a, Secret) for a in args):
            args = [_secret_chars(a) for a in args]
        if kwargs.get("key") is not None and id(fn) in _KEYED:
            kwargs = {**kwargs, "key": _ChargedKey(kwargs["key"], budget)}
        args = _precheck_builtin(fn, args, kwargs, budget)
    out = fn(*args, **kwargs)
    if method:
        _charge_method_result(fn, out, budget)
    elif fn is _str:
        budget.charge(len(out), "str()")
    return _taint(out) if secret else out


_KEYED = frozenset(id(BUILTINS[n]) for n in ("min", "max", "sorted"))

# --------------------------------------------------------------------------------------------
# whitelisted attributes

_STR_ATTRS = frozenset({
    "upper", "lower", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "join",
    "startswith", "endswith", "replace", "count", "index", "rindex", "find", "rfind", "title",
    "capitalize", "casefold", "swapcase", "partition", "rpartition", "removeprefix",
    "removesuffix", "isdigit", "isalpha", "isalnum", "isnumeric", "isdecimal", "isspace",
    "islower", "isupper", "istitle", "encode", "ljust", "rjust", "center", "zfill",
})
_BYTES_ATTRS = frozenset({
    "decode", "hex", "startswith", "endswith", "count", "index", "find", "split", "strip",
    "upper", "lower", "replace", "join",
})
_DICT_ATTRS = frozenset({"get", "keys", "values", "items", "copy"})
_LIST_ATTRS = frozenset({"index", "count", "copy"})
_TUPLE_ATTRS = frozenset({"index", "count"})
_SET_ATTRS = frozenset({
    "union", "intersection", "difference", "symmetric_difference", "issubset", "issuperset",
    "isdisjoint", "copy",
})
_INT_ATTRS = frozenset({"bit_length", "real", "imag", "numerator", "denominator"})
_FLOAT_ATTRS = frozenset({"is_integer", "real", "imag"})
_DATE_ATTRS = frozenset({"year", "month", "day", "weekday", "isoweekday", "isoformat"})
_TIME_ATTRS = frozenset({"hour", "minute", "second", "microsecond", "isoformat"})
_DATETIME_ATTRS = _DATE_ATTRS | _TIME_ATTRS | frozenset({"timestamp", "date", "time"})
_TIMEDELTA_ATTRS = frozenset({"days", "seconds", "microseconds", "total_seconds"})

#: (type, allowed attribute names), most specific first (datetime is a date, bool an int).
_ATTRS: tuple[tuple[type, frozenset[str]], ...] = (
    (str, _STR_ATTRS), (bytes, _BYTES_ATTRS), (dict, _DICT_ATTRS), (list, _LIST_ATTRS),
    (tuple, _TUPLE_ATTRS), (set, _SET_ATTRS), (frozenset, _SET_ATTRS), (int, _INT_ATTRS),
    (float, _FLOAT_ATTRS), (_dt.datetime, _DATETIME_ATTRS), (_dt.date, _DATE_ATTRS),
    (_dt.time, _TIME_ATTRS), (_dt.timedelta, _TIMEDELTA_ATTRS), (Mapping, _DICT_ATTRS),
)
_PADDING = frozenset({"ljust", "rjust", "center", "zfill"})


def _allowed_attrs(obj: Any) -> frozenset[str] | None:
    """The attribute names allowed on ``obj``, or None when ``obj`` is not plain data."""
    for kind, names in _ATTRS:
        if isinstance(obj, kind):
            return names
    return None


def _get_attr(obj: Any, name: str) -> Any:
    """``obj.name`` under the attribute rules of the module docstring."""
    allowed = _allowed_attrs(obj)
    if isinstance(obj, Mapping):
        if name in _DICT_ATTRS:
            return getattr(obj, name)
        try:
            return obj[name]
        except KeyError:
            raise _Fail(f"dict has no key {name!r} and no method {name!r}"
                        f"{did_you_mean(name, [*obj, *_DICT_ATTRS])}") from None
    if allowed is not None:
        if name in allowed:
            return getattr(obj, name)
        raise _Fail(f"attribute {name!r} of {type(obj).__name__} is not allowed{did_you_mean(name, allowed)}")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = [f.name for f in dataclasses.fields(obj) if not f.name.startswith("_")]
        if name in fields:
            return getattr(obj, name)
        raise _Fail(f"{type(obj).__name__} has no field {name!r}{did_you_mean(name, fields)}")
    raise _Fail(f"attribute access on {type(obj).__name__} is not allowed (only on plain data)")


_METHOD_TYPES = (types.BuiltinMethodType, types.MethodType)


def _check_callable(fn: Any) -> None:
    """Refuse to call anything but a whitelisted builtin or a whitelisted method.

    Raises:
        _Fail: naming what was about to be called.
    """
    if id(fn) in _BUILTIN_IDS:
        return
    if isinstance(fn, _METHOD_TYPES):
        owner = getattr(fn, "__self__", None)
        allowed = _allowed_attrs(owner)
        if allowed is not None and fn.__name__ in allowed:
            return
    raise _Fail(f"calling {type(fn).__name__} {getattr(fn, '__name__', '')!s} is not allowed"
                f" (only {', '.join(BUILTINS)} and methods of plain data)")


def _seq_len(value: Any) -> int | None:
    """Length of a str/bytes/list/tuple, else None."""
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


#: Methods of str/bytes that only look at the text (their result is a bool, int or index).
_TEXT_QUERIES = frozenset({
    "startswith", "endswith", "count", "index", "rindex", "find", "rfind", "isdigit", "isalpha",
    "isalnum", "isnumeric", "isdecimal", "isspace", "islower", "isupper", "istitle",
})
#: str/bytes methods whose result :func:`_precheck_method` charges in full before the call.
_TEXT_PRECHARGED = _PADDING | {"join", "replace"}
_SET_GROWING = frozenset({"union", "symmetric_difference"})


_METHOD_NAMES: dict[tuple[type, str], str] = {}


def _method_name(fn: Any) -> str:
    """``str.upper()``-style name of a bound method, for messages (made once per method:
    every method call is charged under it)."""
    key = (type(fn.__self__), fn.__name__)
    name = _METHOD_NAMES.get(key)
    if name is None:
        name = _METHOD_NAMES[key] = f"{key[0].__name__}.{key[1]}()"
    return name


def _charge_method_scan(name: str, owner: Any, args: list[Any], budget: _Budget, what: str) -> None:
    """Charge the items a method that only looks (``count``, ``find``, ``index``, ``get``...) touches.

    Methods that build a value are bounded by what :func:`_precheck_method` charges them.
    """
    if isinstance(owner, (str, bytes)):
        if name in ("startswith", "endswith"):  # they touch the prefixes, not the owner
            budget.scan(sum(_work(a, MAX_SEQUENCE) for a in args), what)
        elif name in _TEXT_QUERIES:
            budget.scan(len(owner), what)
    elif name in ("index", "count"):  # list/tuple: compare each item
        _scan(owner, budget, what)
    elif name in _SET_ATTRS and name != "copy":  # union, issubset...: both sides are walked
        budget.scan(len(owner) + sum(len(a) for a in args if isinstance(a, Sized)), what)
    elif name == "get" and args and type(args[0]) not in _FLAT_ITEMS:  # hashing a tuple key
        _scan(args[0], budget, what)


def _precheck_method(fn: Any, args: list[Any], budget: _Budget) -> list[Any]:
    """Charge, before the call, what a method that builds a value will build; returns the args to use.

    Text methods are charged the owner's length (their result is at most a small multiple
    of it; :func:`_charge_method_result` charges any excess), except ``join``, ``replace``
    and padding, charged their exact or largest result. ``copy`` and the set operations are
    charged the items they copy.
    """
    name = fn.__name__
    owner = fn.__self__
    what = _method_name(fn)
    _charge_method_scan(name, owner, args, budget, what)
    if not isinstance(owner, (str, bytes)):
        if name == "copy" and isinstance(owner, Sized):
            budget.charge(len(owner), what)
        elif name in _SET_GROWING:
            budget.charge(len(owner) + sum(len(a) for a in args if isinstance(a, Sized)), what)
        elif name in ("intersection", "difference"):
            budget.charge(len(owner), what)
        return args
    if name in _TEXT_QUERIES:
        return args
    if name == "join" and args:
        items = list(_collect(args[0], budget, what))
        total = sum(len(x) for x in items if isinstance(x, (str, bytes)))
        total += len(owner) * max(len(items) - 1, 0)
        budget.charge(total, what)
        return [items, *args[1:]]
    if name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)):
        old, new = args[0], args[1]
        grows = 0
        if isinstance(new, type(owner)) and len(new) > len(old):
            # old is of owner's type (checked above), a link mypy cannot follow through type(owner)
            n = owner.count(old) if old else len(owner) + 1  # type: ignore[arg-type]
            grows = n * (len(new) - len(old))
        budget.charge(len(owner) + grows, what)
    elif name in _PADDING and args and isinstance(args[0], int):
        budget.charge(max(args[0], len(owner)), what)
    else:
        budget.charge(len(owner), what)
    return args


def _charge_method_result(fn: Any, out: Any, budget: _Budget) -> None:
    """Charge what a text method built beyond its precharge (an encoding's wider bytes, split's items)."""
    owner = fn.__self__
    if not isinstance(owner, (str, bytes)) or fn.__name__ in _TEXT_QUERIES or fn.__name__ in _TEXT_PRECHARGED:
        return
    if isinstance(out, (str, bytes)):
        if len(out) > len(owner):
            budget.charge(len(out) - len(owner), _method_name(fn))
    elif isinstance(out, (list, tuple)):
        budget.charge(len(out), _method_name(fn))


# --------------------------------------------------------------------------------------------
# operators with limits


def _mul(a: Any, b: Any, budget: _Budget) -> Any:
    """``a * b`` with repetition and integer size limits."""
    if isinstance(a, int) and isinstance(b, int):
        if a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise _Fail(f"product exceeds the limit of {MAX_INT_BITS} bits")
        return a * b
    for seq, n in ((a, b), (b, a)):
        size = _seq_len(seq)
        if size is not None and isinstance(n, int):
            budget.charge(size * max(n, 0))
            break
    out = a * b
    return _taint(out) if isinstance(a, Secret) or isinstance(b, Secret) else out


def _pow(a: Any, b: Any, budget: _Budget) -> Any:
    """``a ** b`` with the integer result limited to :data:`MAX_INT_BITS` bits."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        if (abs(a).bit_length() - 1) * b > MAX_INT_BITS:
            raise _Fail(f"power {a} ** {b} exceeds the limit of {MAX_INT_BITS} bits")
    return a ** b


def _lshift(a: Any, b: Any, budget: _Budget) -> Any:
    """``a << b`` with the result limited to :data:`MAX_INT_BITS` bits."""
    if isinstance(a, int) and isinstance(b, int) and a and b > 0 and a.bit_length() + b > MAX_INT_BITS:
        raise _Fail(f"shift {a} << {b} exceeds the limit of {MAX_INT_BITS} bits")
    return a << b


def _add(a: Any, b: Any, budget: _Budget) -> Any:
    """``a + b`` with concatenations charged to the budget."""
    la, lb = _seq_len(a), _seq_len(b)
    if la is not None and lb is not None:
        budget.charge(la + lb)
    out = a + b
    return _taint(out) if isinstance(a, Secret) or isinstance(b, Secret) else out


_PERCENT_DIRECTIVE = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_SPEC_NUMBER = re.compile(r"\d+")


def _mod(a: Any, b: Any, budget: _Budget) -> Any:
    """``a % b``; for printf-style formatting, widths are limited and ``*`` refused."""
    if isinstance(a, (str, bytes)):
        text = a if isinstance(a, str) else a.decode("latin-1")
        # the text is at least the format plus its widths plus each value written (a mapping's
        # value once per '%(key)s' naming it), estimated before any of it is written
        room = budget.room
        size = len(a) + (0 if isinstance(b, Mapping) else _text_size(b, room))
        for m in _PERCENT_DIRECTIVE.finditer(text):
            key, *nums = m.groups()
            for num in nums:
                if num == "*":
                    raise _Fail("'*' widths are not allowed in %-formatting")
                if num and int(num) > MAX_FORMAT_WIDTH:
                    raise _Fail(f"%-format width {num} exceeds the limit of {MAX_FORMAT_WIDTH}")
                size += int(num) if num else 0
            if isinstance(b, Mapping):
                size += _text_size(b.get(key) if key is not None else b, room)
            if size > room:
                break
        budget.check(size, "%-formatting", estimate=True)
        secret = isinstance(a, str) and (_has_secret(a) or _has_secret(b))
        out = _unsecret(a) % _unsecret(b) if secret else a % b
        budget.charge(len(out))
        return Secret(out) if secret else out
    return a % b


def _plain(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any, _Budget], Any]:
    """Adapt a two-argument operator to the ``(a, b, budget)`` signature."""

    def apply(a: Any, b: Any, budget: _Budget) -> Any:
        return op(a, b)

    return apply


_NUMBERS = frozenset({int, float, bool, complex})
_SET_LIKE = (AbstractSet, Mapping)


def _set_operator(op: Callable[[Any, Any], Any], symbol: str, grows: bool) -> Callable[[Any, Any, _Budget], Any]:
    """``op`` whose set/dict results are charged before they are built (numbers pass untouched).

    Args:
        grows: the result may hold both operands' items (``|``, ``^``: charged the sum of
            their lengths), else at most the left operand's (``&``, ``-``: charged its length).
            Either way both operands are touched.
    """
    what = f"'{symbol}'"

    def apply(a: Any, b: Any, budget: _Budget) -> Any:
        kind = type(a)
        if kind in _NUMBERS:
            return op(a, b)
        if kind in _CONTAINERS or isinstance(a, _SET_LIKE) or isinstance(b, _SET_LIKE):
            la = len(a) if isinstance(a, Sized) else 0
            lb = len(b) if isinstance(b, Sized) else 0
            budget.scan(la + lb, what)
            budget.charge(la + lb if grows else la, what)
        return op(a, b)

    return apply


def _contains(a: Any, b: Any) -> bool:
    """``a in b``."""
    return a in b


def _not_contains(a: Any, b: Any) -> bool:
    """``a not in b``."""
    return a not in b


_BINOPS: dict[type[ast.operator], Callable[[Any, Any, _Budget], Any]] = {
    ast.Add: _add, ast.Sub: _set_operator(operator.sub, "-", grows=False), ast.Mult: _mul, ast.Div: _plain(operator.truediv),
    ast.FloorDiv: _plain(operator.floordiv), ast.Mod: _mod, ast.Pow: _pow, ast.LShift: _lshift,
    ast.RShift: _plain(operator.rshift), ast.BitOr: _set_operator(operator.or_, "|", grows=True),
    ast.BitXor: _set_operator(operator.xor, "^", grows=True),
    ast.BitAnd: _set_operator(operator.and_, "&", grows=False),
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: _contains, ast.NotIn: _not_contains,
}
#: Operand types whose comparison touches one item: :func:`_charge_compare` is skipped for them.
_CHEAP = frozenset({int, float, bool, type(None)})
_TEXT = (str, bytes, bytearray)


#: Text up to this many characters is compared without a charge: memcmp of it costs less than
#: the evaluator step that asked for it (and those steps are bounded by the iterations).
_FREE_TEXT = 64


def _charge_compare(op: Callable[[Any, Any], Any], a: Any, b: Any, budget: _Budget) -> None:
    """Charge what ``a op b`` touches, before it runs: a scan for ``in``, a walk for containers."""
    if type(a) is str and type(b) is str:  # the common case first: x == 'on', 'on' in text
        n = len(b) if op is _contains or op is _not_contains else min(len(a), len(b))
        if n > _FREE_TEXT:
            budget.scan(n, "'in'" if op is _contains or op is _not_contains else "comparison")
        return
    if op is _contains or op is _not_contains:
        if isinstance(b, _TEXT):
            budget.scan(len(b), "'in'")
        elif isinstance(b, _SET_LIKE):
            if type(a) not in _FLAT_ITEMS:  # hashing a tuple hashes its items
                _scan(a, budget, "'in'")
        elif type(b) is range:
            if type(a) is not int:  # only an int is found without a scan
                budget.scan(len(b), "'in'")
        elif isinstance(b, Sized):
            _scan(b, budget, "'in'")
    elif op is operator.is_ or op is operator.is_not:
        return
    elif isinstance(a, _TEXT) and isinstance(b, _TEXT):
        budget.scan(min(len(a), len(b)), "comparison")
    elif type(a) in _CONTAINERS and type(b) in _CONTAINERS:
        if (op is operator.eq or op is operator.ne) and len(a) != len(b):
            return  # unequal lengths: decided without looking at the items
        _scan(a if len(a) <= len(b) else b, budget, "comparison")


_SUBSCRIPTABLE = (dict, list, tuple, str, bytes, range, Mapping, Sequence)
_FAST_SUBSCRIPTABLE = frozenset({dict, list, tuple, str})

# --------------------------------------------------------------------------------------------
# the compiler: AST -> closures

Fn = Callable[[Names, _Budget], Any]


_EAGER_TYPES = frozenset({int, float, str, bool, type(None), dict, list, tuple, bytes, set})


def _materialize(value: Any, budget: _Budget) -> Any:
    """Turn lazy iterables (range, zip, views, generators...) into lists, charging their size."""
    if type(value) in _EAGER_TYPES:  # the common case, without the slower ABC checks
        return value
    if isinstance(value, (range, KeysView, ValuesView, ItemsView, Iterator)):
        return list(_collect(value, budget, "result"))
    return value


class _Compiler:
    """Turns a validated expression tree into closures ``fn(names, budget) -> value``."""

    def __init__(self) -> None:
        self.depth = 0
        self.handlers: dict[type[ast.AST], Callable[[Any], Fn]] = {
            ast.Constant: self.constant, ast.Name: self.name, ast.List: self.sequence,
            ast.Tuple: self.sequence, ast.Set: self.sequence, ast.Dict: self.dict_display,
            ast.BoolOp: self.boolop, ast.BinOp: self.binop, ast.UnaryOp: self.unaryop,
            ast.Compare: self.compare, ast.IfExp: self.ifexp, ast.Subscript: self.subscript,
            ast.Attribute: self.attribute, ast.Call: self.call, ast.JoinedStr: self.joinedstr,
            ast.FormattedValue: self.formatted, ast.ListComp: self.comprehension,
            ast.SetComp: self.comprehension, ast.DictComp: self.comprehension,
            ast.GeneratorExp: self.comprehension, ast.Slice: self.slice,
        }

    def c(self, node: ast.AST) -> Fn:
        """Compile one node.

        Raises:
            _Fail: for a node kind outside the whitelist, or nesting past :data:`MAX_DEPTH`.
        """
        handler = self.handlers.get(type(node))
        if handler is None:
            raise _Fail(f"{_describe_node(node)} is not allowed")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Fail(f"expression nests more than {MAX_DEPTH} levels deep")
        try:
            return handler(node)
        finally:
            self.depth -= 1

    def constant(self, node: ast.Constant) -> Fn:
        """A literal."""
        value = node.value
        if value is Ellipsis:
            raise _Fail("'...' is not allowed")

        def const(names: Names, budget: _Budget) -> Any:
            return value

        return const

    def name(self, node: ast.Name) -> Fn:
        """A name: the scope first, then :data:`BUILTINS`."""
        ident = node.id
        if ident.startswith("__"):
            raise _Fail(f"name {ident!r} is not allowed (names starting with '__' are reserved)")
        builtin = BUILTINS.get(ident, _MISSING)

        def load(names: Names, budget: _Budget) -> Any:
            try:
                return names[ident]
            except KeyError:
                if builtin is not _MISSING:
                    return builtin
            raise _Fail(f"name {ident!r} is not defined{did_you_mean(ident, [*names, *BUILTINS])}")

        return load

    def _elements(self, nodes: list[ast.expr]) -> Callable[[Names, _Budget], list[Any]]:
        """Compile display elements, ``*iterable`` included, to a function building a list."""
        parts: list[tuple[bool, Fn]] = []
        for el in nodes:
            if isinstance(el, ast.Starred):
                parts.append((True, self.c(el.value)))
            else:
                parts.append((False, self.c(el)))
        starred = any(s for s, _ in parts)
        fns = [f for _, f in parts]

        def build(names: Names, budget: _Budget) -> list[Any]:
            if not starred:
                return [f(names, budget) for f in fns]
            out: list[Any] = []
            for is_star, f in parts:
                if is_star:
                    more = list(_secret_chars(f(names, budget)))
                    budget.charge(len(out) + len(more))
                    out.extend(more)
                else:
                    out.append(f(names, budget))
            return out

        return build

    def sequence(self, node: ast.List | ast.Tuple | ast.Set) -> Fn:
        """A list, tuple or set display."""
        build = self._elements(node.elts)
        kind = {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)]
        if kind is list:
            return build

        def display(names: Names, budget: _Budget) -> Any:
            return kind(build(names, budget))

        return display

    def dict_display(self, node: ast.Dict) -> Fn:
        """A dict display, ``**`` included."""
        pairs = [(None if k is None else self.c(k), self.c(v)) for k, v in zip(node.keys, node.values, strict=True)]

        def display(names: Names, budget: _Budget) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for k, v in pairs:
                if k is None:
                    more = v(names, budget)
                    if not isinstance(more, Mapping):
                        raise _Fail(f"'**' needs a mapping, not {type(more).__name__}")
                    budget.charge(len(out) + len(more))
                    out.update(more)
                else:
                    out[k(names, budget)] = v(names, budget)
            return out

        return display

    def boolop(self, node: ast.BoolOp) -> Fn:
        """``and``/``or``, short-circuiting."""
        fns = [self.c(v) for v in node.values]
        is_and = isinstance(node.op, ast.And)

        def boolop(names: Names, budget: _Budget) -> Any:
            value: Any = None
            for f in fns:
                value = f(names, budget)
                if bool(value) is not is_and:
                    return value
            return value

        return boolop

    def binop(self, node: ast.BinOp) -> Fn:
        """A binary operator, with the limits of :data:`_BINOPS`."""
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise _Fail(f"operator {type(node.op).__name__} is not allowed")
        left, right = self.c(node.left), self.c(node.right)

        def binop(names: Names, budget: _Budget) -> Any:
            return op(left(names, budget), right(names, budget), budget)

        return binop

    def unaryop(self, node: ast.UnaryOp) -> Fn:
        """``not``, ``-``, ``+``, ``~``."""
        op = _UNARY[type(node.op)]
        operand = self.c(node.operand)

        def unaryop(names: Names, budget: _Budget) -> Any:
            return op(operand(names, budget))

        return unaryop

    def compare(self, node: ast.Compare) -> Fn:
        """A comparison chain."""
        left = self.c(node.left)
        rest = [(_COMPARE[type(op)], self.c(r)) for op, r in zip(node.ops, node.comparators, strict=True)]

        def compare(names: Names, budget: _Budget) -> Any:
            a = left(names, budget)
            for op, f in rest:
                b = f(names, budget)
                ta, tb = type(a), type(b)
                if ta is str and tb is str:
                    if len(a) > _FREE_TEXT or len(b) > _FREE_TEXT:
                        _charge_compare(op, a, b, budget)
                elif ta not in _CHEAP or tb not in _CHEAP:
                    _charge_compare(op, a, b, budget)
                if not op(a, b):
                    return False
                a = b
            return True

        return compare

    def ifexp(self, node: ast.IfExp) -> Fn:
        """``a if test else b``."""
        test, body, orelse = self.c(node.test), self.c(node.body), self.c(node.orelse)

        def ifexp(names: Names, budget: _Budget) -> Any:
            return body(names, budget) if test(names, budget) else orelse(names, budget)

        return ifexp

    def slice(self, node: ast.Slice) -> Fn:
        """``lower:upper:step`` inside a subscript."""
        parts = [None if p is None else self.c(p) for p in (node.lower, node.upper, node.step)]

        def make_slice(names: Names, budget: _Budget) -> slice:
            return slice(*(None if p is None else p(names, budget) for p in parts))

        return make_slice

    def subscript(self, node: ast.Subscript) -> Fn:
        """``obj[index]`` on plain data; slices are charged to the budget."""
        value, index = self.c(node.value), self.c(node.slice)
        is_slice = isinstance(node.slice, ast.Slice)

        def subscript(names: Names, budget: _Budget) -> Any:
            obj = value(names, budget)
            if type(obj) not in _FAST_SUBSCRIPTABLE and not isinstance(obj, _SUBSCRIPTABLE):
                raise _Fail(f"subscripting {type(obj).__name__} is not allowed (only plain data)")
            out = obj[index(names, budget)]
            if is_slice:
                budget.charge(len(out))
            return Secret(out) if isinstance(obj, Secret) else out

        return subscript

    def attribute(self, node: ast.Attribute) -> Fn:
        """``obj.attr`` under :func:`_get_attr`'s rules."""
        attr = node.attr
        if attr.startswith("_"):
            raise _Fail(f"attribute {attr!r} is not allowed (names starting with '_' are private)")
        value = self.c(node.value)

        def attribute(names: Names, budget: _Budget) -> Any:
            return _get_attr(value(names, budget), attr)

        return attribute

    def call(self, node: ast.Call) -> Fn:
        """A call to an allowed callable, ``*``/``**`` arguments included."""
        func = self.c(node.func)
        build_args = self._elements(node.args)
        keywords = [(k.arg, self.c(k.value)) for k in node.keywords]

        def call(names: Names, budget: _Budget) -> Any:
            fn = func(names, budget)
            args = build_args(names, budget)
            kwargs: dict[str, Any] = {}
            for key, f in keywords:
                v = f(names, budget)
                if key is None:
                    if not isinstance(v, Mapping):
                        raise _Fail(f"'**' needs a mapping, not {type(v).__name__}")
                    kwargs.update(v)
                else:
                    kwargs[key] = v
            return _invoke(fn, args, kwargs, budget)

        return call

    def formatted(self, node: ast.FormattedValue) -> Fn:
        """One ``{value!conv:spec}`` of an f-string, width-limited."""
        value = self.c(node.value)
        spec = None if node.format_spec is None else self.c(node.format_spec)
        convert: Callable[[Any], Any] | None = {-1: None, 115: str, 114: repr, 97: ascii}[node.conversion]

        def formatted(names: Names, budget: _Budget) -> str:
            v = value(names, budget)
            _check_text(v, budget, "f-string")
            secret = _has_secret(v)
            if secret:
                v = _unsecret(v)  # the real text, whatever the conversion and spec
            if convert is not None:
                v = convert(v)
            fmt = "" if spec is None else spec(names, budget)
            for num in _SPEC_NUMBER.findall(fmt):
                if int(num) > MAX_FORMAT_WIDTH:
                    raise _Fail(f"format width {num} exceeds the limit of {MAX_FORMAT_WIDTH}")
            out = format(v, fmt)
            budget.charge(len(out))
            return Secret(out) if secret or isinstance(fmt, Secret) else out

        return formatted

    def joinedstr(self, node: ast.JoinedStr) -> Fn:
        """An f-string."""
        parts = [self.c(v) for v in node.values]

        def joinedstr(names: Names, budget: _Budget) -> str:
            texts = [p(names, budget) for p in parts]  # every part is a str already
            out = "".join(texts)
            return Secret(out) if any(isinstance(t, Secret) for t in texts) else out

        return joinedstr

    def _target(self, node: ast.expr) -> Callable[[dict[str, Any], Any], None]:
        """Compile a comprehension target (a name, or nested tuples/lists of names)."""
        if isinstance(node, ast.Name):
            ident = node.id
            if ident.startswith("__"):
                raise _Fail(f"name {ident!r} is not allowed (names starting with '__' are reserved)")

            def store(local: dict[str, Any], value: Any) -> None:
                local[ident] = value

            return store
        if isinstance(node, (ast.Tuple, ast.List)):
            subs = [self._target(e) for e in node.elts]

            def unpack(local: dict[str, Any], value: Any) -> None:
                if isinstance(value, Sized) and len(value) != len(subs):  # before copying a huge value
                    raise _Fail(f"cannot unpack {len(value)} values into {len(subs)} names")
                values = list(value)
                if len(values) != len(subs):
                    raise _Fail(f"cannot unpack {len(values)} values into {len(subs)} names")
                for sub, v in zip(subs, values, strict=True):
                    sub(local, v)

            return unpack
        raise _Fail(f"comprehension target {_describe_node(node)} is not allowed (only names)")

    def comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> Fn:
        """A comprehension: its names live in a layer over the scope; iterations are budgeted."""
        gens: list[tuple[Callable[[dict[str, Any], Any], None], Fn, list[Fn]]] = []
        for gen in node.generators:
            if gen.is_async:
                raise _Fail("async comprehensions are not allowed")
            gens.append((self._target(gen.target), self.c(gen.iter), [self.c(i) for i in gen.ifs]))
        if isinstance(node, ast.DictComp):
            key, val = self.c(node.key), self.c(node.value)
        else:
            elt = self.c(node.elt)
        last = len(gens) - 1

        def loop(level: int, iterable: Any, local: dict[str, Any], scope: Names,
                 budget: _Budget) -> Iterator[None]:
            store, _, ifs = gens[level]
            for item in _secret_chars(iterable):
                budget.iterate()
                store(local, item)
                if all(cond(scope, budget) for cond in ifs):
                    if level == last:
                        yield None
                    else:
                        yield from loop(level + 1, gens[level + 1][1](scope, budget), local, scope, budget)

        def run(names: Names, budget: _Budget) -> Any:
            local: dict[str, Any] = {}
            # ChainMap writes only to maps[0] (local); typeshed wants every map mutable
            scope = ChainMap(local, names)  # type: ignore[arg-type]
            steps = loop(0, gens[0][1](names, budget), local, scope, budget)
            if isinstance(node, ast.DictComp):
                return {key(scope, budget): val(scope, budget) for _ in steps}
            values = (elt(scope, budget) for _ in steps)
            if isinstance(node, ast.GeneratorExp):
                return values
            return set(values) if isinstance(node, ast.SetComp) else list(values)

        return run


_MISSING = object()

_NODE_NAMES: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda", ast.NamedExpr: "':=' (assignment expression)", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield from", ast.Starred: "'*' here",
}


def _describe_node(node: ast.AST) -> str:
    """A short, user-facing name for a syntax node."""
    return _NODE_NAMES.get(type(node), f"{type(node).__name__.lower()} syntax")


def _describe_exc(e: BaseException) -> str:
    """A lower-case fragment describing an exception raised while evaluating."""
    if isinstance(e, KeyError):
        return f"key {e.args[0]!r} not found" if e.args else "key not found"
    if isinstance(e, RecursionError):
        return "evaluation nests too deeply"
    if isinstance(e, MemoryError):
        return "out of memory"
    if isinstance(e, OverflowError):
        return "number out of range"
    text = str(e)
    return text if text else type(e).__name__


# --------------------------------------------------------------------------------------------
# expressions


class Expr:
    """One compiled expression. Immutable and thread-safe; evaluate it as often as needed.

    Attributes:
        source: the expression text, without ``${`` and ``}``.
    """

    __slots__ = ("_fn", "source")

    def __init__(self, source: str, fn: Fn) -> None:
        self.source = source
        self._fn = fn

    def value(self, names: Names) -> Any:
        """Evaluate over ``names`` (names shadow :data:`BUILTINS`).

        Args:
            names: the visible names; never modified.

        Returns:
            The value, with lazy iterables turned into lists.

        Raises:
            ExpressionError: naming the expression and the problem (undefined name with a
                suggestion, limit exceeded, a failing operation...).
        """
        return self._evaluate(names, _Budget(), _materialize)

    def _evaluate(self, names: Names, budget: _Budget, finish: Callable[..., Any], *extra: Any) -> Any:
        """Evaluate charging ``budget``, return ``finish(value, budget, *extra)``; every failure an ExpressionError."""
        try:
            return finish(self._fn(names, budget), budget, *extra)
        except _Fail as e:
            raise ExpressionError(f"expression {self.source!r}: {e}") from None
        except ExpressionError:
            raise
        except Exception as e:  # every failure of user-written code is reported, never raised raw
            raise ExpressionError(f"expression {self.source!r}: {_describe_exc(e)}") from None

    def __repr__(self) -> str:
        return f"<Expr {self.source!r}>"


@functools.lru_cache(maxsize=4096)
def _compile_source(source: str) -> Expr:
    """Parse, validate and compile a bare expression (shared: identical sources compile once)."""
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression in ${}")
    if len(text) > MAX_SOURCE_CHARS:
        raise ExpressionError(f"expression of {len(text)} characters exceeds the limit of {MAX_SOURCE_CHARS}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        where = f" at column {e.offset}" if e.offset else ""
        detail = "" if e.msg == "invalid syntax" else f": {e.msg}"
        raise ExpressionError(f"expression {text!r}: invalid syntax{where}{detail}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ExpressionError(f"expression {text!r}: cannot be parsed: {_describe_exc(e)}") from None
    try:
        fn = _Compiler().c(tree.body)
    except _Fail as e:
        raise ExpressionError(f"expression {text!r}: {e}") from None
    return Expr(text, fn)


def _skip_string(s: str, i: int) -> int:
    """Index just after the string literal starting at ``s[i]``, or -1 when unterminated."""
    quote = s[i]
    triple = s.startswith(quote * 3, i)
    end_mark = quote * 3 if triple else quote
    j = i + len(end_mark)
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if s.startswith(end_mark, j):
            return j + len(end_mark)
        if c == "\n" and not triple:
            return -1
        j += 1
    return -1


def _find_close(s: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at ``start``, or -1.

    Brackets nest; string literals (quotes, triple quotes, backslash escapes) are skipped.
    """
    depth = 0
    i = start
    n = len(s)
    while i < n:
        c = s[i]
        if c in "'\"":
            i = _skip_string(s, i)
            if i < 0:
                return -1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if c == "}" and depth == 0:
                return i
            depth = max(depth - 1, 0)
        i += 1
    return -1


def compile_expr(text: str) -> Expr:
    """Compile a condition or iterable: ``${expr}`` or a bare ``expr``.

    Used for ``if``/``elif``/``while`` conditions and ``for x in`` iterables, where
    Platypush accepts both forms.

    Args:
        text: ``"${x > 1}"`` or ``"x > 1"``.

    Raises:
        ExpressionError: for invalid or disallowed syntax, or text outside the ``${...}``.
    """
    if isinstance(text, Secret):  # literal text, never parsed: a constant

        def secret(names: Names, budget: _Budget) -> Any:
            return text

        return Expr(text, secret)
    s = text.strip()
    if s.startswith("${"):
        end = _find_close(s, 2)
        if end < 0:
            raise ExpressionError(f"expression {text!r}: '${{' has no closing '}}'")
        if end != len(s) - 1:
            raise ExpressionError(f"expression {text!r}: text after the closing '}}'; write one ${{...}}"
                                  " or a bare expression")
        return _compile_source(s[2:end])
    return _compile_source(s)


# --------------------------------------------------------------------------------------------
# templates

Render = Callable[[Names, _Budget], Any]


def _embed(value: Any, budget: _Budget, room: int) -> str:
    """How a value is written into surrounding text: JSON for list/tuple/dict, else ``str``.

    A Secret, or a container holding one, gives its real text as a Secret. The text is
    checked against ``budget`` and ``room`` (the characters its template string has left)
    before it is written and charged after.

    Raises:
        _Fail: for text over the limits, or a value JSON cannot write.
    """
    value = _materialize(value, budget)
    if isinstance(value, str):
        return value
    what = "writing the value into the template"
    if type(value) not in _PLAIN_TEXT:  # (a str returned above)
        size = _text_size(value, budget.room)
        if room < size <= budget.room:  # past the string's room only (else the budget says which limit)
            raise _Fail(f"{what}: its text of at least {size} characters exceeds the {room} characters"
                        f" left of the template string's limit of {MAX_SEQUENCE}")
        budget.check(size, what, estimate=True)
    if isinstance(value, (list, tuple, dict)):
        try:
            text = json.dumps(value, cls=Encoder)  # a Secret is a str: JSON holds its real text
        except (TypeError, ValueError) as e:  # a dict with tuple keys, a circular list...
            raise _Fail(f"its {type(value).__name__} value cannot be written into text ({e})") from None
        out = Secret(text) if _has_secret(value) else text
    else:
        out = _str(value)
    budget.charge(len(out), what)
    return out


def _copy_plain(value: Any) -> Any:
    """Copy the dicts and lists of a constant so that a caller mutating args cannot alter it."""
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_plain(v) for v in value]
    return value


def _parse_string(s: str) -> list[str | Expr]:
    """Split a string into literal text and compiled ``${...}`` parts (adjacent text merged)."""
    parts: list[str | Expr] = []
    buf: list[str] = []
    i = 0
    while True:
        j = s.find("${", i)
        if j < 0:
            buf.append(s[i:])
            break
        if j > 0 and s[j - 1] == "\\":
            buf.append(s[i:j - 1])
            buf.append("${")
            i = j + 2
            continue
        buf.append(s[i:j])
        end = _find_close(s, j + 2)
        if end < 0:
            raise ExpressionError(f"template {s!r}: '${{' at position {j} has no closing '}}'")
        text = "".join(buf)
        if text:
            parts.append(text)
        buf = []
        parts.append(_compile_source(s[j + 2:end]))
        i = end + 1
    text = "".join(buf)
    if text:
        parts.append(text)
    return parts


class Template:
    """A compiled value whose strings may hold ``${...}``; see the module docstring.

    Attributes:
        source: the value it was compiled from.
        is_constant: True when it holds no expression (rendering ignores the names).
    """

    __slots__ = ("_render", "is_constant", "source")

    def __init__(self, source: Any, render: Render, is_constant: bool) -> None:
        self.source = source
        self._render = render
        self.is_constant = is_constant

    def render(self, names: Names) -> Any:
        """Render over ``names``.

        All its expressions share one budget (:data:`MAX_ALLOC`, :data:`MAX_OPERATIONS`,
        :data:`MAX_ITERATIONS`), however many strings, lists and dicts hold them, so a
        template is bounded as one expression is.

        Returns:
            A new value: strings with no ``${`` are returned as they are; dicts and lists are
            fresh copies that the caller may mutate.

        Raises:
            ExpressionError: from the first expression that fails.
        """
        return self._render(names, _Budget("template"))

    def __repr__(self) -> str:
        return f"<Template {self.source!r}>"


_NOT_CONSTANT = object()
Compiled = tuple[Render, Any]  # (renderer, the constant value or _NOT_CONSTANT)


def _compile_node(value: Any, path: tuple[str | int, ...],
                  errors: list[tuple[tuple[str | int, ...], ExpressionError]] | None) -> Compiled:
    """Compile one value; returns its renderer and, when it holds no expression, its value."""
    if isinstance(value, str):
        if "${" not in value or isinstance(value, Secret):  # a secret is literal text, never parsed
            return _const(value), value
        try:
            parts = _parse_string(value)
        except ExpressionError as e:
            if errors is None:
                e.path = path
                raise
            errors.append((path, e))
            return _const(value), value
        if not any(isinstance(p, Expr) for p in parts):
            text = "".join(p for p in parts if isinstance(p, str))
            return _const(text), text
        if len(parts) == 1:
            expr = parts[0]
            assert isinstance(expr, Expr)

            def render_value(names: Names, budget: _Budget) -> Any:
                return expr._evaluate(names, budget, _materialize)

            return render_value, _NOT_CONSTANT
        return _interpolation(parts), _NOT_CONSTANT
    if isinstance(value, dict):
        items = [(k, *_compile_node(v, (*path, k), errors)) for k, v in value.items()]
        if all(c is not _NOT_CONSTANT for _, _, c in items):
            return _const_container({k: c for k, _, c in items})
        pairs = [(k, r) for k, r, _ in items]

        def render_dict(names: Names, budget: _Budget) -> dict[Any, Any]:
            _charge_render(budget, len(pairs), path)
            return {k: r(names, budget) for k, r in pairs}

        return render_dict, _NOT_CONSTANT
    if isinstance(value, list):
        compiled = [_compile_node(v, (*path, i), errors) for i, v in enumerate(value)]
        if all(c is not _NOT_CONSTANT for _, c in compiled):
            return _const_container([c for _, c in compiled])
        renders = [r for r, _ in compiled]

        def render_list(names: Names, budget: _Budget) -> list[Any]:
            _charge_render(budget, len(renders), path)
            return [r(names, budget) for r in renders]

        return render_list, _NOT_CONSTANT
    return _const(value), value


def _charge_render(budget: _Budget, items: int, path: tuple[str | int, ...]) -> None:
    """Charge a list or dict of ``items`` that a template is about to build."""
    try:
        budget.charge(items)
    except _Fail as e:
        where = "".join(f"[{p!r}]" for p in path) or "the value"
        raise ExpressionError(f"template {where}: {e}") from None


def _const(value: Any) -> Render:
    """A renderer returning ``value`` itself (immutable values only)."""

    def const(names: Names, budget: _Budget) -> Any:
        return value

    return const


def _const_container(frozen: dict[Any, Any] | list[Any]) -> Compiled:
    """A renderer returning a fresh copy of a constant dict or list, and that constant."""

    def const(names: Names, budget: _Budget) -> Any:
        return _copy_plain(frozen)

    return const, frozen


def _interpolation(parts: list[str | Expr]) -> Render:
    """A renderer joining literal text and embedded values into one string.

    The string's length is checked after each part, so at most one part is built past
    :data:`MAX_SEQUENCE` (and every part was charged to the template's budget as it was built).
    """
    first = next(p for p in parts if isinstance(p, Expr))

    def interpolate(names: Names, budget: _Budget) -> str:
        texts: list[str] = []
        size = 0
        for p in parts:
            text = p if isinstance(p, str) else p._evaluate(names, budget, _embed, MAX_SEQUENCE - size)
            size += len(text)
            if size > MAX_SEQUENCE:
                raise ExpressionError(f"template with ${{{first.source}}}...: its text of {size} characters"
                                      f" exceeds the limit of {MAX_SEQUENCE}")
            texts.append(text)
        try:
            budget.charge(size)
        except _Fail as e:
            raise ExpressionError(f"template with ${{{first.source}}}...: {e}") from None
        out = "".join(texts)
        return Secret(out) if any(isinstance(t, Secret) for t in texts) else out

    return interpolate


def compile_template(value: Any, *,
                     errors: list[tuple[tuple[str | int, ...], ExpressionError]] | None = None) -> Template:
    """Compile a str/list/dict (recursively; dict keys are not templated) or scalar.

    Args:
        value: the raw config value.
        errors: when given, every bad string is recorded as ``(path, error)`` with its path
            inside ``value`` (``("args", "x")``, ``(2,)``), it renders as its literal text,
            and compilation goes on; when None, the first problem is raised.

    Raises:
        ExpressionError: for the first invalid or disallowed expression (only when
            ``errors`` is None); its ``path`` attribute holds its location inside ``value``.
    """
    render, constant = _compile_node(value, (), errors)
    return Template(value, render, constant is not _NOT_CONSTANT)


def has_templates(value: Any) -> bool:
    """True if any string inside ``value`` (dict values, list items) contains ``${``.

    Escaped ``\\${`` counts too: such a value still needs :func:`compile_template`. A
    Secret never counts: its text is literal.
    """
    if isinstance(value, str):
        return "${" in value and not isinstance(value, Secret)
    if isinstance(value, dict):
        return any(has_templates(v) for v in value.values())
    if isinstance(value, list):
        return any(has_templates(v) for v in value)
    return False
