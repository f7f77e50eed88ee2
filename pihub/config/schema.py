"""A small typed schema for config sections: :class:`Field` and :class:`Schema`.

Every plugin and backend declares its section as a :class:`Schema`; the loader validates
the section with :meth:`Schema.validate`, which collects *every* problem (mopidy's
``ConfigSchema.deserialize`` style) rather than stopping at the first one.

Field types (``Field.type``):

======================  ==============================================================
``bool``                ``true``/``false`` only (not 0/1, not "yes")
``int``                 an int, not a bool
``float``               an int or a float, returned as float
``str``                 a string (a number is *not* turned into a string)
``list`` / ``dict``     any list / any mapping
``list[X]``             a list whose items are each ``X`` (``list[str]``...)
``dict[str, X]``        a mapping of string keys to ``X``; :func:`dict_of` builds it
                        where ``X`` is a Schema or a tuple (no type to a type checker)
``(A, B, ...)``         any one of the alternatives; ``None`` in it accepts null
``Schema(...)``         a nested mapping, validated recursively
``object``              any value
======================  ==============================================================

``X``, ``A`` and ``B`` are themselves any of these types.

Values from ``!env``/``!file`` are :class:`~pihub.config.yamlsrc.Secret` strings, and an
environment variable is always text: a Secret is therefore *parsed* where the field
asks for a bool (``true/false/yes/no/on/off/1/0``), an int or a float. Plain YAML strings
are never coerced (``port: "80"`` is an error). Parsing drops the Secret wrapper, since
ints cannot carry it.

A null value (``key:`` with nothing after it) means "not set" when the field's default
is None, and is an error otherwise.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pihub.config.yamlsrc import Secret
from pihub.errors import ConfigProblem, SchemaProblem, close_matches

__all__ = ["REQUIRED", "Field", "Schema", "SchemaProblem", "coerce", "dict_of", "show", "suggest"]


class _Required:
    """The type of :data:`REQUIRED`."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a field that must be given.
REQUIRED: Final = _Required()

_INVALID: Final = object()  # a value that failed validation

_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def show(value: object, secret: bool = False) -> str:
    """Render a bad value for an error message, never revealing secrets.

    Args:
        value: the value given in the config.
        secret: True if the value must not be shown (it is rendered ``'***'``).

    Returns:
        ``'***'`` for secrets, YAML spellings for null and booleans, a short repr for
        other scalars, and only the kind ("a list", "a mapping") for collections.
    """
    if secret or isinstance(value, Secret):
        return "'***'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def suggest(word: object, candidates: Iterable[str], *, allowed: bool = False) -> str:
    """Return a ``" (did you mean 'x'?)"`` hint, or ``""``.

    Args:
        word: the misspelled name.
        candidates: the valid names.
        allowed: when nothing is close, list up to ten valid names instead
            (``" (allowed: 'a', 'b')"``), or say that there are none.

    Returns:
        The hint, starting with a space, or an empty string.
    """
    names = sorted({c for c in candidates if isinstance(c, str)})
    close = close_matches(str(word), names)
    if close:
        return f" (did you mean {' or '.join(repr(c) for c in close)}?)"
    if not allowed:
        return ""
    if not names:
        return " (no keys are allowed here)"
    more = ", ..." if len(names) > 10 else ""
    return f" (allowed: {', '.join(repr(n) for n in names[:10])}{more})"


_NAMES: Final[dict[object, tuple[str, str]]] = {
    bool: ("true or false", "booleans"),
    int: ("an int", "ints"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    list: ("a list", "lists"),
    dict: ("a mapping", "mappings"),
    object: ("any value", "values"),
    None: ("null", "nulls"),
    type(None): ("null", "nulls"),
}


def _describe(spec: Any, plural: bool = False) -> str:
    """How a type spec reads in messages: ``an int``, ``a list of strings``..."""
    if spec in _NAMES:
        return _NAMES[spec][plural]
    if isinstance(spec, Schema):
        return "mappings" if plural else "a mapping"
    if isinstance(spec, tuple):
        return " or ".join(_describe(s, plural) for s in spec)
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin is list:
        return "lists" if plural else f"a list of {_describe(args[0], True)}"
    if origin is dict:
        return "mappings" if plural else f"a mapping of names to {_describe(args[1], True)}"
    return repr(spec)


def dict_of(item: Any) -> Any:
    """The field type ``dict[str, item]``: the same object, built by a call.

    For an ``item`` that is a :class:`Schema` or a tuple of alternatives, which a type
    checker refuses inside ``dict[...]`` (it reads that as a type, and they are values).
    """
    return types.GenericAlias(dict, (str, item))


def _check_spec(spec: Any) -> None:
    """Raise TypeError for a type spec this module does not support (a programming error)."""
    if spec in _NAMES or isinstance(spec, Schema):
        return
    if isinstance(spec, tuple) and spec:
        for s in spec:
            _check_spec(s)
        return
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin is list and len(args) == 1:
        _check_spec(args[0])
        return
    if origin is dict and len(args) == 2 and args[0] is str:
        _check_spec(args[1])
        return
    raise TypeError(f"unsupported field type {spec!r} (allowed: bool, int, float, str, list, dict, "
                    f"list[X], dict[str, X], a tuple of types, a Schema, object)")


def coerce(spec: Any, value: Any, path: tuple[Hashable, ...] = (), *,
           secret: bool = False) -> tuple[Any, list[ConfigProblem]]:
    """Check ``value`` against a type spec and convert it.

    Args:
        spec: a field type (see the module docstring).
        value: the raw config value.
        path: where ``value`` is, for the problems.
        secret: never show the value in messages.

    Returns:
        ``(converted, problems)``; when ``problems`` is not empty, ``converted`` is
        meaningless.
    """
    if isinstance(spec, Schema):
        return spec.validate(value, path)
    if isinstance(spec, tuple):
        for alt in spec:
            out, problems = coerce(alt, value, path, secret=secret)
            if not problems:
                return out, []
        # one alternative of the value's own kind explains the failure best
        same_kind = [alt for alt in spec if _kind_matches(alt, value)]
        if len(same_kind) == 1:
            return coerce(same_kind[0], value, path, secret=secret)
        return _INVALID, [_type_problem(spec, value, path, secret)]
    if spec is object:
        return value, []
    if spec is None or spec is type(None):
        return (None, []) if value is None else (_INVALID, [_type_problem(spec, value, path, secret)])
    origin = typing.get_origin(spec)
    if origin is list:
        if not isinstance(value, list):
            return _INVALID, [_type_problem(spec, value, path, secret)]
        (item,) = typing.get_args(spec)
        items: list[Any] = []
        problems = []
        for i, v in enumerate(value):
            out, ps = coerce(item, v, (*path, i), secret=secret)
            items.append(out)
            problems += ps
        return items, problems
    if origin is dict:
        if not isinstance(value, dict):
            return _INVALID, [_type_problem(spec, value, path, secret)]
        _, item = typing.get_args(spec)
        result: dict[Any, Any] = {}
        problems = []
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(SchemaProblem(path, f"keys must be strings, not {show(k)}", key=k))
                continue
            out, ps = coerce(item, v, (*path, k), secret=secret)
            result[k] = out
            problems += ps
        return result, problems
    if isinstance(value, Secret) and spec in (bool, int, float):
        return _parse_secret(spec, value, path)
    if spec is bool:
        ok = isinstance(value, bool)
    elif spec is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, spec)
    return (value, []) if ok else (_INVALID, [_type_problem(spec, value, path, secret)])


def _kind_matches(spec: Any, value: object) -> bool:
    """True if ``value`` is the container kind ``spec`` expects."""
    if isinstance(spec, Schema) or typing.get_origin(spec) is dict or spec is dict:
        return isinstance(value, dict)
    if typing.get_origin(spec) is list or spec is list:
        return isinstance(value, list)
    return False


def _parse_secret(spec: type, value: Secret, path: tuple[Hashable, ...]) -> tuple[Any, list[ConfigProblem]]:
    """Parse a Secret's text as a bool, int or float; never shows it."""
    text = value.reveal().strip()
    try:
        if spec is bool:
            if text.lower() in _TRUE:
                return True, []
            if text.lower() in _FALSE:
                return False, []
            raise ValueError
        return spec(text), []
    except ValueError:
        extra = " (true/false, yes/no, on/off, 1/0)" if spec is bool else ""
        return _INVALID, [ConfigProblem(path, f"must be {_describe(spec)}{extra}, not '***'")]


def _type_problem(spec: Any, value: object, path: tuple[Hashable, ...], secret: bool) -> ConfigProblem:
    """The ``must be <type>, not <value>`` problem."""
    return ConfigProblem(path, f"must be {_describe(spec)}, not {show(value, secret)}")


@dataclass(frozen=True)
class Field:
    """One option of a section.

    Attributes:
        type: the value's type (see the module docstring).
        default: the value when the key is absent; :data:`REQUIRED` makes the key
            mandatory. Mutable defaults are deep-copied for each validation.
        doc: one line saying what the option does, with its unit.
        min: the smallest allowed number (numbers only; inclusive).
        max: the largest allowed number (numbers only; inclusive).
        choices: the allowed values, compared with ``==`` after type conversion.
        secret: the value is never shown in messages, and a string value is wrapped in
            :class:`~pihub.config.yamlsrc.Secret`.
        aliases: old names of this key; they are accepted with a warning naming the new
            key.
        deprecated: when set, using the key gives a warning with this text (say what to
            use instead).
    """

    type: Any
    default: Any = REQUIRED
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | None = None
    secret: bool = False
    aliases: Sequence[str] = ()  # stored as a tuple; a str is refused (a common slip)
    deprecated: str | None = None

    def __post_init__(self) -> None:
        """Check the declaration itself; a bad one is a programming error (TypeError)."""
        _check_spec(self.type)
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if isinstance(self.aliases, str):
            raise TypeError("Field.aliases must be a tuple of names, not a string")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise TypeError(f"Field.min {self.min} is larger than Field.max {self.max}")

    @property
    def required(self) -> bool:
        """True when the key must be given."""
        return self.default is REQUIRED

    def check(self, value: Any, path: tuple[Hashable, ...]) -> tuple[Any, list[ConfigProblem]]:
        """Validate one value of this field: type, then range, then choices.

        Args:
            value: the raw value.
            path: where the value is.

        Returns:
            ``(converted, problems)``; the converted value is meaningless when there are
            problems.
        """
        if value is None and self.default is None:
            return None, []
        # a value from !env/!file stays unshown after conversion (an int parsed from it,
        # a string changed by a caller): range and choice messages show ``out``
        secret = self.secret or isinstance(value, Secret)
        out, problems = coerce(self.type, value, path, secret=secret)
        if problems:
            return out, problems
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            low_ok = self.min is None or out >= self.min
            high_ok = self.max is None or out <= self.max
            if not (low_ok and high_ok):
                shown = show(out, secret)
                if self.min is not None and self.max is not None:
                    message = f"must be in range {self.min}..{self.max}, not {shown}"
                elif self.min is not None:
                    message = f"must be at least {self.min}, not {shown}"
                else:
                    message = f"must be at most {self.max}, not {shown}"
                return out, [ConfigProblem(path, message)]
        if self.choices is not None and out not in self.choices:
            allowed = ", ".join(show(c) for c in self.choices)
            return out, [ConfigProblem(path, f"must be one of {allowed}, not {show(out, secret)}")]
        if self.secret and isinstance(out, str) and not isinstance(out, Secret):
            out = Secret(out)
        return out, []

    def describe(self) -> dict[str, Any]:
        """Describe this field as a JSON-schema-like dict (see :meth:`Schema.describe`)."""
        out = _spec_schema(self.type)
        if self.doc:
            out["description"] = self.doc
        if not self.required and not self.secret:
            out["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        if self.min is not None:
            out["minimum"] = self.min
        if self.max is not None:
            out["maximum"] = self.max
        if self.choices is not None:
            out["enum"] = list(self.choices)
        if self.secret:
            out["writeOnly"] = True
        if self.aliases:
            out["x-aliases"] = list(self.aliases)
        if self.deprecated:
            out["deprecated"] = True
            out["x-deprecated"] = self.deprecated
        return out


_JSON_TYPES: Final[dict[object, str]] = {
    bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
    None: "null", type(None): "null",
}


def _spec_schema(spec: Any) -> dict[str, Any]:
    """The JSON-schema fragment of a type spec."""
    if isinstance(spec, Schema):
        return spec.describe()
    if spec is object:
        return {}
    if spec in _JSON_TYPES:
        return {"type": _JSON_TYPES[spec]}
    if isinstance(spec, tuple):
        return {"anyOf": [_spec_schema(s) for s in spec]}
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin is list:
        return {"type": "array", "items": _spec_schema(args[0])}
    return {"type": "object", "additionalProperties": _spec_schema(args[1])}


class Schema:
    """The options of one section (or of one nested mapping).

    Example::

        Schema({
            "port": Field(int, 8008, doc="TCP port to listen on", min=1, max=65535),
            "bind": Field(str, "127.0.0.1", aliases=("bind_address",)),
            "token": Field(str, None, secret=True),
        }, doc="the HTTP API")
    """

    def __init__(self, fields: Mapping[str, Field], *, extra: bool = False, doc: str = "") -> None:
        """Declare the schema.

        Args:
            fields: option name -> :class:`Field`.
            extra: keep unknown keys as they are instead of reporting them.
            doc: what the section configures.

        Raises:
            TypeError: a field is not a Field, or an alias clashes with a name.
        """
        self.fields: dict[str, Field] = dict(fields)
        self.extra = extra
        self.doc = doc
        self._aliases: dict[str, str] = {}
        for name, f in self.fields.items():
            if not isinstance(f, Field):
                raise TypeError(f"schema field {name!r} must be a Field, not {type(f).__name__}")
            for alias in f.aliases:
                if alias in self.fields or alias in self._aliases:
                    raise TypeError(f"alias {alias!r} of field {name!r} is already a field or an alias")
                self._aliases[alias] = name

    def __repr__(self) -> str:
        return f"<Schema {', '.join(self.fields)}>"

    def validate(self, raw: Any, path: tuple[Hashable, ...] = ()) -> tuple[dict[str, Any], list[ConfigProblem]]:
        """Validate a mapping, collecting every problem.

        Null is an empty mapping. Optional fields that are absent get their (copied)
        default; required ones are reported. A value given under an alias is stored under
        the field's name, with a warning.

        Args:
            raw: the mapping from the config.
            path: where ``raw`` is; every problem path starts with it.

        Returns:
            ``(values, problems)``: the converted values by field name (plus unknown keys
            when ``extra``), and every problem found (warnings are
            :class:`SchemaProblem` with ``warning=True``). The values are meaningful only
            when no problem is an error.
        """
        path = tuple(path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            return {}, [ConfigProblem(path, f"must be a mapping, not {show(raw)}")]
        out: dict[str, Any] = {}
        problems: list[ConfigProblem] = []
        given: set[str] = set()
        for key, value in raw.items():
            if key in self.fields:
                name = key
            elif isinstance(key, str) and key in self._aliases:
                name = self._aliases[key]
                if name in raw:
                    problems.append(SchemaProblem(
                        path, f"both {key!r} and its new name {name!r} are set; keep only {name!r}", key=key))
                    given.add(name)
                    continue
                problems.append(SchemaProblem(path, f"{key!r} is renamed to {name!r}; use {name!r}",
                                              key=key, warning=True))
            elif self.extra:
                out[key] = value
                continue
            else:
                hint = suggest(key, self.fields, allowed=True)
                problems.append(SchemaProblem(path, f"unknown key {show(key)}{hint}", key=key))
                continue
            field = self.fields[name]
            given.add(name)
            if field.deprecated:
                problems.append(SchemaProblem(path, f"{key!r} is deprecated: {field.deprecated}",
                                              key=key, warning=True))
            converted, ps = field.check(value, (*path, key))
            problems += ps
            if not ps:
                out[name] = converted
        for name, field in self.fields.items():
            if name in given:
                continue
            if field.required:
                problems.append(SchemaProblem(path, f"missing required key {name!r}", key=name))
            else:
                out[name] = copy.deepcopy(field.default)
        return out, problems

    def describe(self) -> dict[str, Any]:
        """Describe the schema as a JSON-schema-like dict, for docs and ``GET /actions``.

        Returns:
            ``{"type": "object", "properties": {...}, "required": [...],
            "additionalProperties": extra}`` plus ``"description"`` when documented.
            Properties carry ``type``/``items``/``anyOf``, ``description``, ``default``
            (omitted for secrets), ``minimum``, ``maximum``, ``enum``, ``writeOnly`` (for
            secrets), ``deprecated`` with ``x-deprecated``, and ``x-aliases``. It is
            JSON-serialisable when the field defaults are.
        """
        out: dict[str, Any] = {"type": "object"}
        if self.doc:
            out["description"] = self.doc
        out["properties"] = {name: f.describe() for name, f in self.fields.items()}
        out["required"] = [name for name, f in self.fields.items() if f.required]
        out["additionalProperties"] = self.extra
        return out
