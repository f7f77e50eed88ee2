"""Hook conditions: the reference semantics of ``if:`` blocks, in pure Python.

A condition is the ``if:`` mapping of a hook. ``type`` names the event type (catalogue
short name, Platypush path or alias; default the root ``Event``, which matches
everything); every other key is an *attribute condition*. An event matches when its type
is the condition's type or a subtype of it, and every attribute condition holds:

* The attribute must be present in ``event.args`` (a missing attribute never matches).
* A **scalar or list** condition value is compared with strict Python ``==``: ``'5' != 5``,
  ``1 == 1.0 == True``, and lists must be equal element by element, in order.
* A **dict** condition value is *relational* when any key starts with ``$``. The operators
  are ANDed:

  ====================  =====================================================================
  ``$gt $gte $lt $lte``  numeric: ``float()`` of both sides, so ``{"$gt": "4"}`` works as in
                         Platypush; an event value that ``float()`` rejects (None, ``'abc'``,
                         a list) does not match. The operand is checked when the hook compiles.
  ``$eq $ne``            plain ``==`` / ``!=``
  ``$regex``             a search (Python ``re`` syntax) on str event values only, over at
                         most their first :data:`MAX_SUBJECT` characters, for at most
                         :data:`MATCH_TIMEOUT` seconds; compiled when the hook compiles
  ====================  =====================================================================

  Otherwise the dict is a *nested partial match*: the event value must be a dict holding
  every condition key, each matched by these same rules (extra event keys are fine).
* **Phrases.** For events that are ``SpeechRecognizedEvent`` (or a subtype), a top-level str
  condition on a str attribute (``phrase``, ``assistant``) matches on exact equality, else
  word by word as in Platypush, with pihub's whole-word rule (see :class:`PhraseTest`):
  condition ``on`` does not match "ton" (Platypush's ``re.search`` does).
* **Flic.** For ``FlicButtonEvent`` (or a subtype), a list condition on ``sequence`` must be
  an in-order subsequence of the event's list (gaps allowed). ``btn_addr`` is an ordinary,
  optional attribute condition: without it the hook matches any button (Platypush raises
  KeyError).

What pihub does differently from Platypush, on purpose: phrase words match whole words
only; a malformed regular expression (``$regex`` or a phrase word) is a config problem
found when the hook compiles, never an error while matching; unknown ``$operators`` and
non-numeric operands of ``$gt``-style operators are config problems too (Platypush logs
"Invalid filter" on every event); a relational dict cannot mix ``$operators`` with plain
keys; an empty phrase condition only matches an empty phrase; phrase matching and Flic
subsequences apply to top-level attributes only; there are no scores (selection is
:func:`pihub.engine.hooks.select`); and ``${name}`` captures keep the case of ``name``.

**Regular expressions run on the dispatcher thread**, so they are bounded:

* patterns are written in Python's ``re`` syntax (checked by ``re`` when the hook compiles)
  and run by the `regex <https://pypi.org/project/regex/>`_ module (its ``V0`` mode, ``re``'s
  semantics), imported only when a config has a regular expression: unlike ``re`` it gives
  up on a match after a time bound and lets go of the GIL while it runs. A ``$regex`` search,
  or all the regex words of one phrase match together, that has not finished after
  :data:`MATCH_TIMEOUT` seconds does not match; it is counted (:data:`REGEX_TIMEOUTS`) and
  logged, rate-limited, with the hook, the condition path and the pattern (never the event
  text). No static check can find every slow pattern: overlapping alternatives
  (``(a|aa)+$``), repeated wildcards (``(.*a){7}$``) and the like take exponential or high
  polynomial time on some subjects, and the subject cap alone does not bound them (``re``
  took 82 s on a 62-character value for ``(.*a){7}$``);
* as an early, explanatory error, a pattern (``$regex`` or phrase word) that nests an
  unbounded repeat (``*``, ``+``, ``{n,}``) inside another unbounded repeat -- ``(a+)+``,
  ``(a*b?)*`` -- is refused when the hook compiles: on a near miss (``'a' * 30 + 'b'``) it
  backtracks in exponential time. The same pattern with a possessive outer repeat
  (``(a+)++``) or an atomic body (``((?>a+))+``) never backtracks into the body and is
  accepted;
* a ``$regex`` sees at most the first :data:`MAX_SUBJECT` characters of the event value
  (so ``$`` also matches at that cut), and a phrase condition splits at most the first
  :data:`MAX_SUBJECT` characters of the phrase into words (the exact-equality check still
  compares the whole phrase).

Matching never raises for any event value: a value whose ``==``, ``float()`` or hashing
raises does not match. Failure texts (:attr:`Match.failed`) are built only when
:meth:`Condition.match` reports one, never on the dispatcher's batch path
(:meth:`AttrCondition.check` returns a :class:`Why` to call), and show values through a
bounded repr that cannot raise.
"""

from __future__ import annotations

import logging
import re

# Python 3.11+ (formerly sre_constants/sre_parse, now deprecated): the parser behind
# re.compile and its opcodes. Private modules without typeshed stubs, hence the ignores.
import re._constants as _rc  # type: ignore[import-not-found]
import re._parser as _re_parser  # type: ignore[import-not-found]
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pihub.errors import ConfigProblem, ConfigProblems, UnknownEventType, did_you_mean, shorten
from pihub.events import CATALOGUE, Event, EventType
from pihub.logs import LogLimiter

if TYPE_CHECKING:
    # imported at run time only by _regex(), when a config has a regular expression
    from regex import Pattern as RegexPattern

log = logging.getLogger(__name__)

ROOT: EventType = CATALOGUE.get("Event")
SPEECH: EventType = CATALOGUE.get("SpeechRecognizedEvent")
FLIC: EventType = CATALOGUE.get("FlicButtonEvent")

#: Relational operators and the symbol each one is shown with in failure texts.
OPERATORS: dict[str, str] = {
    "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$eq": "==", "$ne": "!=", "$regex": "=~",
}
NUMERIC_OPERATORS = frozenset({"$gt", "$gte", "$lt", "$lte"})

_CAPTURE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Characters that make a phrase word a regular expression rather than a literal word.
_REGEX_CHARS = frozenset("\\.^$*+?{}[]|()")

#: Characters of an event str that a ``$regex`` searches, and of a phrase that is split into
#: words: regular expressions run on the dispatcher thread, so the subject is bounded.
MAX_SUBJECT = 4096

#: Seconds one ``$regex`` search, or the regex words of one phrase match, may run before it
#: is given up as no match. Ordinary patterns searched MAX_SUBJECT characters in 6-40 us on
#: x86 (measured), so even a loaded Pi tens of times slower stays well under 10 ms, while a
#: hostile pattern costs the dispatcher at most 10 ms per condition per event instead of
#: minutes (with re, every thread waited behind its GIL-holding search).
MATCH_TIMEOUT = 0.01


class RegexTimeouts:
    """Counts the regular-expression matches given up after :data:`MATCH_TIMEOUT` and logs
    them, at most one warning per 5 s (with how many were held back). Thread-safe: the
    dispatcher, replays and the API's traces all match conditions.

    Attributes:
        count: matches given up since start (monotonic).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._log = LogLimiter(1, 5.0, clock)

    def gave_up(self, where: str, pattern: str, length: int) -> None:
        """Count one match of ``pattern`` (at ``where``: hook and condition path) on a
        ``length``-character subject given up, and log it unless rate-limited. The subject
        itself is never logged: it is event data."""
        with self._lock:
            self.count += 1
            count = self.count
            allowed, held = self._log.allow()
        if allowed:
            log.warning("%s: regular expression %s gave up after %.0f ms on a %d-character value and did "
                        "not match: it backtracks too much (rewrite it with possessive repeats or atomic "
                        "groups); %d given up so far, %d warnings held back",
                        where, _show(pattern, 200), MATCH_TIMEOUT * 1e3, length, count, held)


#: The process's count of regular-expression matches given up (see :class:`RegexTimeouts`).
REGEX_TIMEOUTS = RegexTimeouts()


def _regex() -> Any:
    """The ``regex`` module, imported on first use: the idle daemon's RSS is measured, and
    most configs have no regular expression."""
    import regex

    return regex


def _show(value: Any, limit: int = 48) -> str:
    """A short repr for failure texts (:func:`pihub.errors.shorten`, 48 characters)."""
    return shorten(value, limit)


class Why:
    """Why a condition failed, as text built only when called: ``where: template`` with each
    value shown by :func:`_show` in the template's ``{}`` slots.

    Matching on the dispatcher only asks *whether* a condition failed; showing event values
    costs time (and for hostile values, used to raise), so nothing is rendered until someone
    asks (:meth:`Condition.match`, replay and traces).
    """

    __slots__ = ("template", "values", "where")

    def __init__(self, where: str, template: str, *values: Any) -> None:
        self.where = where
        self.template = template
        self.values = values

    def __call__(self) -> str:
        return f"{self.where}: " + self.template.format(*map(_show, self.values))

    def __repr__(self) -> str:
        return f"Why({self()!r})"


def _join(where: str, key: Any) -> str:
    """The failure-text path of ``key`` inside ``where``: ``data.temperature``."""
    return f"{where}.{key}"


# ------------------------------------------------------------------------------- tests
@dataclass(frozen=True, slots=True)
class EqualTest:
    """Strict Python equality with ``expected`` (scalars, None and lists)."""

    expected: Any

    def fail(self, value: Any, where: str) -> Why | None:
        """Check ``value``; None when it matches, else why not (naming ``where``)."""
        if value == self.expected:
            return None
        return Why(where, "{} != {}", value, self.expected)


@dataclass(frozen=True, slots=True)
class Operator:
    """One ``$operator: operand`` of a relational condition.

    Attributes:
        op: the operator, a key of :data:`OPERATORS`.
        operand: the operand as written in the config.
        number: ``float(operand)`` for the numeric operators, else None.
        regex: the compiled pattern for ``$regex`` (a :mod:`regex` pattern), else None.
        where: for ``$regex``, the hook and condition path the time-out warning names
            (``hook 'h': if.text.$regex``); not part of equality.
    """

    op: str
    operand: Any
    number: float | None = None
    regex: RegexPattern[str] | None = None
    where: str = field(default="", compare=False)

    def holds(self, value: Any) -> bool:
        """True if ``value`` satisfies this operator. Never raises."""
        op = self.op
        if op == "$eq":
            return bool(value == self.operand)
        if op == "$ne":
            return bool(value != self.operand)
        if op == "$regex":
            if not isinstance(value, str) or self.regex is None:
                return False
            try:
                # concurrent: the GIL is let go during the search (value is an immutable str)
                return self.regex.search(value, 0, MAX_SUBJECT, concurrent=True,
                                         timeout=MATCH_TIMEOUT) is not None
            except TimeoutError:
                REGEX_TIMEOUTS.gave_up(self.where, self.operand, min(len(value), MAX_SUBJECT))
                return False
        try:
            x = float(value)
        except (TypeError, ValueError, OverflowError):
            return False
        n = self.number
        assert n is not None
        if op == "$gt":
            return x > n
        if op == "$gte":
            return x >= n
        if op == "$lt":
            return x < n
        return x <= n

    def describe_failure(self, value: Any, where: str) -> Why:
        """Why ``value`` at ``where`` fails (assumes :meth:`holds` was False)."""
        if self.op == "$eq":
            return Why(where, "{} != {}", value, self.operand)
        if self.op == "$ne":
            return Why(where, "{} == {} ($ne)", value, self.operand)
        if self.op == "$regex":
            if not isinstance(value, str):
                return Why(where, "{} is not a string ($regex {})", value, self.operand)
            if len(value) > MAX_SUBJECT:
                return Why(where, f"{{}} does not match $regex {{}} in its first {MAX_SUBJECT} characters",
                           value, self.operand)
            return Why(where, "{} does not match $regex {}", value, self.operand)
        sym = OPERATORS[self.op]
        try:
            float(value)
        except OverflowError:
            return Why(where, f"{{}} is beyond the float range, so not comparable ({sym} {{}})", value, self.operand)
        except (TypeError, ValueError):
            return Why(where, f"{{}} is not a number ({sym} {{}})", value, self.operand)
        return Why(where, f"{{}} is not {sym} {{}}", value, self.operand)


@dataclass(frozen=True, slots=True)
class RelationalTest:
    """A dict of ``$operators``, ANDed in config order."""

    ops: tuple[Operator, ...]

    def fail(self, value: Any, where: str) -> Why | None:
        """Check ``value``; None when every operator holds, else why the first one fails."""
        for op in self.ops:
            if not op.holds(value):
                return op.describe_failure(value, where)
        return None


@dataclass(frozen=True, slots=True)
class NestedTest:
    """A partial match of a dict value: each key present and matched, extra keys allowed."""

    items: tuple[tuple[Any, Test], ...]

    def fail(self, value: Any, where: str) -> Why | None:
        """Check ``value``; None when it matches, else why the first failed key fails."""
        if not isinstance(value, dict):
            return Why(where, "{} is not a dict", value)
        for key, test in self.items:
            sub = _join(where, key)
            if key not in value:
                return Why(sub, "missing")
            failed = test.fail(value[key], sub)
            if failed is not None:
                return failed
        return None


Test = EqualTest | RelationalTest | NestedTest


@dataclass(frozen=True, slots=True)
class PhraseWord:
    """One word of a phrase condition.

    Attributes:
        text: the word, lower-cased (for a capture: the ``${name}`` token as written).
        capture: the capture name for a ``${name}`` word, else None.
        regex: the compiled pattern (a :mod:`regex` pattern) when the word uses
            regular-expression syntax, else None (a literal word, matched by equality only).
        optional: the pattern also matches the empty string (``(the)?``): the word may be
            absent from the phrase.
    """

    text: str
    capture: str | None = None
    regex: RegexPattern[str] | None = None
    optional: bool = False

    def hits(self, word: str, budget: _Budget) -> bool:
        """True if this (non-capture) word matches the whole event word ``word``.

        Raises:
            _GaveUp: the regular expression ran past what is left of ``budget`` (seconds,
                reduced by the time this call took).
        """
        if word == self.text:
            return True
        if self.regex is None:
            return False
        if budget.left <= 0:
            raise _GaveUp(self.text)
        t0 = time.perf_counter()
        try:
            # concurrent: the GIL is let go during the match (word is an immutable str)
            return self.regex.fullmatch(word, concurrent=True, timeout=budget.left) is not None
        except TimeoutError:
            raise _GaveUp(self.text) from None
        finally:
            budget.left -= time.perf_counter() - t0


class _Budget:
    """Seconds of regular-expression matching left to one phrase match."""

    __slots__ = ("left",)

    def __init__(self, seconds: float) -> None:
        self.left = seconds


class _GaveUp(Exception):
    """A phrase match's regex words used up :data:`MATCH_TIMEOUT`; ``args[0]`` is the word
    whose match was cut."""


@dataclass(frozen=True, slots=True)
class PhraseTest:
    """A phrase condition, matched word by word.

    The rule (Platypush §4.4 with whole words): an exact string match wins at once, with no
    captures. Otherwise both strings are lower-cased and split on whitespace, and the
    condition words are walked against the event words:

    1. a ``${name}`` word captures one event word, then keeps appending words until the
       next event word matches the next condition word (or, when it is the last condition
       word, takes every remaining event word); two captures in a row take one word each
       except the last; a capture needs at least one word;
    2. a word equal to the event word, or whose regular expression ``re.fullmatch``-es the
       whole event word, consumes both;
    3. else an optional word (its pattern matches the empty string, like ``(the)?``) is
       skipped;
    4. else the event word is skipped (leading and inner garbage is tolerated).

    The phrase matches when every condition word is consumed (optional words left over at
    the end of the phrase are fine); trailing event words are ignored. Captured text is
    lower-case, words joined by single spaces. Only the first :data:`MAX_SUBJECT` characters
    of a longer phrase are split into words (the last of them may be cut).

    The regex words of one match share :data:`MATCH_TIMEOUT` seconds of matching; past
    that the phrase does not match (counted and logged by :data:`REGEX_TIMEOUTS`).

    Attributes:
        text: the condition string as written.
        words: the compiled condition words.
        where: the hook and condition path the time-out warning names
            (``hook 'h': if.phrase``); not part of equality.
    """

    text: str
    words: tuple[PhraseWord, ...]
    where: str = field(default="", compare=False)

    def match(self, phrase: str) -> dict[str, str] | None:
        """The captures if ``phrase`` matches (possibly empty), else None. Never raises."""
        if phrase == self.text:
            return {}
        if not self.words:
            return None
        try:
            return self._walk(phrase[:MAX_SUBJECT].lower().split(), _Budget(MATCH_TIMEOUT))
        except _GaveUp as e:
            REGEX_TIMEOUTS.gave_up(self.where, e.args[0], min(len(phrase), MAX_SUBJECT))
            return None

    def _walk(self, ev: list[str], budget: _Budget) -> dict[str, str] | None:
        """:meth:`match` on the event words ``ev``.

        Raises:
            _GaveUp: the regex words used up ``budget``.
        """
        cw = self.words
        nev, ncw = len(ev), len(cw)
        caps: dict[str, str] = {}
        i = j = 0
        while j < ncw:
            w = cw[j]
            if w.capture is not None:
                if i >= nev:
                    return None
                start = i
                i += 1
                if j + 1 == ncw:
                    i = nev
                else:
                    nxt = cw[j + 1]
                    if nxt.capture is None:
                        while i < nev and not nxt.hits(ev[i], budget):
                            i += 1
                caps[w.capture] = " ".join(ev[start:i])
                j += 1
            elif i >= nev:
                if not w.optional:
                    return None
                j += 1
            elif w.hits(ev[i], budget):
                i += 1
                j += 1
            elif w.optional:
                j += 1
            else:
                i += 1
        return caps


@dataclass(frozen=True, slots=True)
class AttrCondition:
    """One attribute condition of a hook (``pin: 17``, ``data: {temperature: {$gte: 25}}``).

    Attributes:
        name: the event attribute.
        value: the condition value as written in the config.
        test: the generic test (equality, relational or nested).
        phrase: the word-by-word test, set for str values when the hook's type can be a
            ``SpeechRecognizedEvent``; used instead of ``test`` for str values of such events.
        sequence: for ``sequence: [...]`` when the hook's type can be a ``FlicButtonEvent``:
            the presses that must appear in order; used instead of ``test`` for Flic events.
    """

    name: str
    value: Any
    test: Test
    phrase: PhraseTest | None = None
    sequence: tuple[Any, ...] | None = None

    def mode(self, etype: EventType) -> str:
        """How this condition is checked on events of ``etype``.

        Returns:
            ``"phrase"`` (word by word for str event values, generic otherwise),
            ``"sequence"`` (Flic subsequence; a non-list event value fails) or ``"generic"``.
        """
        if self.phrase is not None and etype.is_a(SPEECH):
            return "phrase"
        if self.sequence is not None and etype.is_a(FLIC):
            return "sequence"
        return "generic"

    def check(self, etype: EventType, args: Mapping[str, Any]) -> tuple[Why | None, dict[str, str] | None]:
        """Check this condition against the args of an event of type ``etype``. Never raises.

        Returns:
            ``(failed, captures)``: ``failed`` is None when the condition holds, else a
            :class:`Why` (call it for the text); ``captures`` are the phrase captures (None
            when there are none). A value whose comparison raises fails.
        """
        name = self.name
        try:
            return self._check(etype, args)
        except Exception as e:  # a hostile value (raising __eq__/__float__/__hash__, nesting too deep)
            kind = type(e).__name__.replace("{", "{{").replace("}", "}}")
            return Why(name, f"{{}} cannot be tested: comparing it raised {kind}", args.get(name)), None

    def _check(self, etype: EventType, args: Mapping[str, Any]) -> tuple[Why | None, dict[str, str] | None]:
        """:meth:`check` without the guard against values whose comparisons raise."""
        name = self.name
        if name not in args:
            return Why(name, "missing"), None
        value = args[name]
        if self.phrase is not None and isinstance(value, str) and etype.is_a(SPEECH):
            caps = self.phrase.match(value)
            if caps is None:
                return Why(name, "{} does not match {} word by word", value, self.phrase.text), None
            return None, caps or None
        if self.sequence is not None and etype.is_a(FLIC):
            if not isinstance(value, list):
                return Why(name, "{} is not a list", value), None
            it = iter(value)
            # A greedy scan of one shared iterator is exactly the in-order subsequence test.
            if all(any(press == got for got in it) for press in self.sequence):
                return None, None
            return Why(name, "{} does not contain {} in order", value, list(self.sequence)), None
        return self.test.fail(value, name), None


@dataclass(frozen=True, slots=True)
class Match:
    """The outcome of :meth:`Condition.match`.

    Attributes:
        ok: the event matches.
        captures: ``${name}`` phrase captures (empty when none). The hook context is the
            event's :meth:`~pihub.events.Event.context` updated with these, so unlike
            Platypush the attributes (``phrase``) stay visible next to the captures.
        failed: when not ok, the first failed condition in words, e.g. ``pin: 18 != 17``,
            ``value: missing``, ``type: GPIOEvent is not a SensorDataEvent``.
    """

    ok: bool
    captures: dict[str, str] = field(default_factory=dict)
    failed: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled ``if:`` block: an event type and attribute conditions, all ANDed.

    Attributes:
        type: the event type; subtypes match too.
        attrs: the attribute conditions, in config order.
    """

    type: EventType
    attrs: tuple[AttrCondition, ...] = ()

    def match(self, event: Event) -> Match:
        """Match ``event``. Never raises.

        Returns:
            A :class:`Match`; conditions are checked in config order and the first failure
            is reported.
        """
        etype = event.type
        if not etype.is_a(self.type):
            return Match(False, {}, f"type: {etype.name} is not a {self.type.name}")
        captures: dict[str, str] = {}
        for ac in self.attrs:
            failed, caps = ac.check(etype, event.args)
            if failed is not None:
                return Match(False, {}, failed())
            if caps:
                captures.update(caps)
        return Match(True, captures)


# ---------------------------------------------------------------------------- compile
def compile_condition(if_block: object, path: tuple[str | int, ...], hook: str | None = None) -> Condition:
    """Compile a hook's ``if:`` mapping.

    Args:
        if_block: ``{"type": "GPIOEvent", "pin": 17, ...}``; ``type`` is optional.
        path: where the block is in the config (``("if",)``); problem paths extend it.
        hook: the hook's name, for the warning about a regular expression given up while
            matching (which also names the condition's path).

    Returns:
        The compiled :class:`Condition`.

    Raises:
        ConfigProblems: every problem found (unknown type with did-you-mean, unknown or
            misspelt ``$operator``, non-numeric operand of ``$gt``-style operators, a
            ``$regex`` or phrase word that does not compile, ...).
    """
    problems: list[ConfigProblem] = []
    if not isinstance(if_block, Mapping):
        raise ConfigProblems([ConfigProblem(
            path, f"must be a mapping of conditions like {{type: GPIOEvent, pin: 17}}, "
                  f"not {_show(if_block)}")])
    etype = ROOT
    type_ok = True
    if "type" in if_block:
        tname = if_block["type"]
        if not isinstance(tname, str):
            type_ok = False
            problems.append(ConfigProblem(path + ("type",),
                                          f"must be an event type name like 'GPIOEvent', not {_show(tname)}"))
        else:
            try:
                etype = CATALOGUE.get(tname)
            except UnknownEventType as e:
                type_ok = False
                problems.append(ConfigProblem(path + ("type",), str(e)))
    # With an unknown type, phrase words are not compiled: they would add spurious problems.
    subtypes = CATALOGUE.subtypes(etype) if type_ok else []
    may_be_speech = any(t.is_a(SPEECH) for t in subtypes)
    may_be_flic = any(t.is_a(FLIC) for t in subtypes)

    attrs: list[AttrCondition] = []
    for name, value in if_block.items():
        if name == "type":
            continue
        where = path + (name,) if isinstance(name, str | int) else path
        if not isinstance(name, str):
            problems.append(ConfigProblem(where, f"attribute names must be strings, not {_show(name)}"))
            continue
        test = _compile_test(value, where, problems, hook)
        phrase = None
        if may_be_speech and isinstance(value, str):
            phrase = _compile_phrase(value, where, problems, hook)
        sequence = None
        if may_be_flic and name == "sequence":
            if isinstance(value, list):
                sequence = tuple(value)
            elif etype.is_a(FLIC):
                problems.append(ConfigProblem(
                    where, f"must be a list of presses like ['ShortPressEvent', 'LongPressEvent'], "
                           f"not {_show(value)}"))
        if test is not None:
            attrs.append(AttrCondition(name, value, test, phrase, sequence))
    if problems:
        raise ConfigProblems(problems)
    return Condition(etype, tuple(attrs))


def _compile_test(value: Any, where: tuple[str | int, ...], problems: list[ConfigProblem],
                  hook: str | None) -> Test | None:
    """Compile the generic test of one condition value.

    Args:
        value: the condition value (scalar, list, relational or nested mapping).
        where: its config path, for problems.
        problems: where problems are appended.
        hook: the hook's name, or None (see :func:`compile_condition`).

    Returns:
        The test, or None when a problem was found.
    """
    if not isinstance(value, dict):
        return EqualTest(value)
    if any(isinstance(k, str) and k.startswith("$") for k in value):
        return _compile_relational(value, where, problems, hook)
    items: list[tuple[Any, Test]] = []
    ok = True
    for key, sub in value.items():
        test = _compile_test(sub, where + (key,) if isinstance(key, str | int) else where, problems, hook)
        if test is None:
            ok = False
        else:
            items.append((key, test))
    return NestedTest(tuple(items)) if ok else None


def _compile_relational(value: dict[Any, Any], where: tuple[str | int, ...],
                        problems: list[ConfigProblem], hook: str | None) -> RelationalTest | None:
    """Compile a ``{$operator: operand}`` mapping.

    Args:
        value: the mapping; at least one key starts with ``$``.
        where: its config path, for problems.
        problems: where problems are appended (unknown operator with did-you-mean, plain
            key mixed in, non-numeric operand, bad regex).

    Returns:
        The test, or None when a problem was found.
    """
    ops: list[Operator] = []
    n_before = len(problems)
    for op, operand in value.items():
        if not (isinstance(op, str) and op.startswith("$")):
            problems.append(ConfigProblem(
                where, f"cannot mix operators and attribute keys in one condition: {_show(op)} "
                       f"(use {{$gt: ..}}-style operators only, or a nested mapping without them)"))
            continue
        at = where + (op,)
        if op not in OPERATORS:
            problems.append(ConfigProblem(
                at, f"unknown operator {op!r}, allowed: {', '.join(OPERATORS)}{did_you_mean(op, OPERATORS, n=1)}"))
            continue
        if op in NUMERIC_OPERATORS:
            try:
                number = float(operand)  # as Platypush casts operands: {$gt: "4"} works
            except OverflowError:  # an int with more than ~308 digits
                problems.append(ConfigProblem(
                    at, f"operand {_show(operand)} is out of range: {op} compares as a float, "
                        f"so the operand must lie within ±{sys.float_info.max:.6g}"))
                continue
            except (TypeError, ValueError):
                problems.append(ConfigProblem(at, f"operand must be a number, not {_show(operand)}"))
                continue
            ops.append(Operator(op, operand, number=number))
        elif op == "$regex":
            if not isinstance(operand, str):
                problems.append(ConfigProblem(at, f"pattern must be a string, not {_show(operand)}"))
                continue
            pattern = _compile_regex(operand)
            if isinstance(pattern, str):
                problems.append(ConfigProblem(at, f"$regex {_show(operand, 200)} {pattern}"))
                continue
            ops.append(Operator(op, operand, regex=pattern, where=_label(hook, at)))
        else:
            ops.append(Operator(op, operand))
    if len(problems) != n_before:
        return None
    return RelationalTest(tuple(ops))


def _compile_regex(pattern: str) -> RegexPattern[str] | str:
    """Compile ``pattern`` for matching (``$regex`` or phrase word).

    The syntax accepted is Python's ``re`` (Platypush's), checked by ``re`` itself; the
    pattern is then compiled by :mod:`regex` in its ``re``-compatible ``V0`` mode, which can
    bound a match in time (see :data:`MATCH_TIMEOUT`).

    Returns:
        The compiled pattern, or why it is refused (the end of a problem text): not valid
        in ``re``'s syntax, or :data:`_BACKTRACKS`.
    """
    try:
        re.compile(pattern)
    except re.error as e:
        return f"is not a valid regular expression ({e})"
    if _nests_unbounded_repeats(pattern):
        return _BACKTRACKS
    rx = _regex()
    try:
        compiled: RegexPattern[str] = rx.compile(pattern, rx.V0)
    except rx.error as e:  # re accepts it but regex does not: refuse rather than match differently
        return f"is not supported by the regular-expression engine ({e})"
    return compiled


#: The end of the problem for a pattern refused by :func:`_nests_unbounded_repeats`.
_BACKTRACKS = (
    "nests an unbounded repeat (*, +, {n,}) inside another, like (a+)+: on a near miss such as "
    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaab' it backtracks in exponential time, and regular expressions "
    "run on the dispatcher thread; make the outer repeat possessive ((a+)++, (a+)*+, (a+){1,}+) "
    "or its body an atomic group (((?>a+))+), which never backtrack")

_REPEATS = frozenset({_rc.MAX_REPEAT, _rc.MIN_REPEAT})
#: Constructs that never backtrack into their body once it matched: an outer repeat does
#: not multiply the ways their body can split its text.
_NO_BACKTRACK = frozenset({_rc.POSSESSIVE_REPEAT, _rc.ATOMIC_GROUP, _rc.ASSERT, _rc.ASSERT_NOT})


def _nests_unbounded_repeats(pattern: str) -> bool:
    """True if ``pattern`` (a valid regular expression) repeats, without bound, something that
    holds an unbounded repeat itself: ``(a+)+``, ``(x|y*)*``, ``(?:a*b?){2,}``.

    That is the classic shape of catastrophic backtracking. Possessive repeats, atomic
    groups and lookarounds reset the nesting (they do not backtrack into their body), but
    their body is checked on its own. The walk is over :mod:`re._parser`'s parse tree
    (Python 3.11+), the same parse ``re.compile`` makes, rather than over the pattern text.
    """
    def walk(items: Any, inside: bool) -> bool:
        for op, av in items:
            if op in _REPEATS:
                unbounded = av[1] == _rc.MAXREPEAT
                if (unbounded and inside) or walk(av[2], inside or unbounded):
                    return True
            elif op in _NO_BACKTRACK:
                # ATOMIC_GROUP: p; POSSESSIVE_REPEAT: (min, max, p); ASSERT(_NOT): (dir, p)
                body = av if op is _rc.ATOMIC_GROUP else av[-1]
                if walk(body, False):
                    return True
            elif op is _rc.SUBPATTERN:
                if walk(av[3], inside):  # (group, add_flags, del_flags, p)
                    return True
            elif op is _rc.BRANCH:
                if any(walk(alt, inside) for alt in av[1]):
                    return True
            elif op is _rc.GROUPREF_EXISTS:  # (group, yes, no or None)
                if walk(av[1], inside) or (av[2] is not None and walk(av[2], inside)):
                    return True
        return False

    return walk(_re_parser.parse(pattern), False)


def _compile_phrase(text: str, where: tuple[str | int, ...],
                    problems: list[ConfigProblem], hook: str | None) -> PhraseTest | None:
    """Compile a phrase condition word by word (see :class:`PhraseTest`).

    Args:
        text: the condition string.
        where: its config path, for problems.
        problems: where problems are appended (malformed regex word, partial or repeated capture).
        hook: the hook's name, or None (see :func:`compile_condition`).

    Returns:
        The test, or None when a problem was found.
    """
    words: list[PhraseWord] = []
    seen: set[str] = set()
    n_before = len(problems)
    for raw in text.split():
        m = _CAPTURE.fullmatch(raw)
        if m:
            name = m.group(1)
            if name in seen:
                problems.append(ConfigProblem(where, f"capture ${{{name}}} appears twice in {text!r}"))
            seen.add(name)
            words.append(PhraseWord(raw, capture=name))
            continue
        if "${" in raw:
            problems.append(ConfigProblem(
                where, f"a ${{name}} capture must be a whole word, not {raw!r} in {text!r}"))
            continue
        word = raw.lower()
        if _REGEX_CHARS.isdisjoint(word):
            words.append(PhraseWord(word))
            continue
        pattern = _compile_regex(word)
        if isinstance(pattern, str):
            hint = "" if pattern is _BACKTRACKS else "; escape it with backslashes to match it literally"
            problems.append(ConfigProblem(where, f"phrase word {raw!r} {pattern}{hint}"))
            continue
        # matching the empty string is instant, whatever the pattern: no time bound needed
        words.append(PhraseWord(word, regex=pattern, optional=pattern.fullmatch("") is not None))
    if len(problems) != n_before:
        return None
    return PhraseTest(text, tuple(words), _label(hook, where))


def _label(hook: str | None, path: tuple[str | int, ...]) -> str:
    """How the time-out warning names a condition: ``hook 'h': if.text.$regex``."""
    at = ".".join(map(str, path))
    return at if hook is None else f"hook {hook!r}: {at}"


__all__ = [
    "MATCH_TIMEOUT", "MAX_SUBJECT", "REGEX_TIMEOUTS", "AttrCondition", "Condition", "EqualTest", "Match",
    "NestedTest", "Operator", "PhraseTest", "PhraseWord", "RegexTimeouts", "RelationalTest", "Test", "Why",
    "compile_condition",
]
