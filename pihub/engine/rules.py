"""Compiles hooks to the native matcher and runs the two matching stages.

Stage 1 (C, ``ph_match_batch``): for every event of a popped batch, the rules of its type
are tested against the slot fields (``native/ph_api.h``). Stage 2 (Python): for each
(event, hook) hit, the conditions C could not decide are checked with the reference
semantics of :mod:`pihub.engine.conditions`. The combined answer is exactly
``hook.condition.match(event).ok``; selection among the hooks that matched one event is
:func:`pihub.engine.hooks.select`, applied by the caller.

**The split.** A hook whose condition names type ``T`` becomes one ``ph_rule`` per type in
``CATALOGUE.subtypes(T)``, all with the hook's index as rule id. For each such type, each
attribute condition is

* *native* when the attribute has a native field in that type and the condition is
  exactly expressible there:

  - key field (``key0``/``key1``, interned ids): equality with a str, int, bool, None or
    non-NaN float (``KEY_EQ``), ``$eq``/``$ne`` with such an operand (``KEY_EQ``/``KEY_NE``);
  - num field (doubles): equality with a bool, a float or an int that a double holds
    exactly (``EQ``), ``$eq``/``$ne`` with such an operand (``EQ``/``NE``), and
    ``$gt $gte $lt $lte`` with any operand (``GT``/``GE``/``LT``/``LE``; ``$gte`` with
    ``$lte`` becomes one ``RANGE``), since Python compares ``float()`` of both sides too;

* *partial* when some ``$operators`` of a relational condition are native and others
  are not: the native ones prefilter in C, the whole condition is checked again in Python;
* *residual* otherwise (phrase words, Flic sequences, ``$regex``, nested dicts, lists,
  None on num fields, NaN on key fields, string operands on num fields, relational
  operators on key fields, the ``code`` field, ints a double cannot hold on num
  fields...). When the attribute has a native field, a ``PRESENT`` condition still
  rejects events that lack it; otherwise C cannot help.

**Opaque fields.** A slot marks a field opaque when the event's value cannot be carried
natively (a string in a num field, a list in a key field, an int a double cannot hold).
C lets any condition on it pass, so when an opaque bit of the hit's slot covers a native
condition, that attribute condition is checked again in Python. A key value no rule mentions is
encoded as ``UNKNOWN_KEY``, which equals no rule constant: exactly Python's answer, since
equal values share an interned id.

A :class:`Matcher` is used by one thread at a time (the dispatcher): it reuses one hit
buffer. Values are interned when the matcher is built, so build it before the events it
will match are encoded.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from pihub import bus as _bus
from pihub.engine.conditions import AttrCondition, Condition, EqualTest, RelationalTest
from pihub.engine.hooks import Hook, outranked_by, select
from pihub.events import CATALOGUE, FIELD_INDEX, Event, EventType

# The condition operators of native/ph_api.h, read from the compiled extension (cffi exposes
# the header's integer #defines), so they cannot drift from the matcher's.
PH_OP_EQ, PH_OP_NE, PH_OP_LT, PH_OP_LE, PH_OP_GT, PH_OP_GE, PH_OP_RANGE = (
    _bus.lib.PH_OP_EQ, _bus.lib.PH_OP_NE, _bus.lib.PH_OP_LT, _bus.lib.PH_OP_LE, _bus.lib.PH_OP_GT,
    _bus.lib.PH_OP_GE, _bus.lib.PH_OP_RANGE)
PH_OP_KEY_EQ, PH_OP_KEY_NE, PH_OP_PRESENT = (_bus.lib.PH_OP_KEY_EQ, _bus.lib.PH_OP_KEY_NE,
                                             _bus.lib.PH_OP_PRESENT)


def opaque_bit(field: int) -> int:
    """The presence-word bit saying that slot field ``field`` (``PH_F_*``) is opaque."""
    return 1 << (8 + field)


#: The largest magnitude up to which every int is exactly a double.
EXACT_INT = 2**53
_NUM_OPS = {"$gt": PH_OP_GT, "$gte": PH_OP_GE, "$lt": PH_OP_LT, "$lte": PH_OP_LE}
_KEY_FIELDS = frozenset({"key0", "key1"})
_NUM_FIELDS = frozenset({"num0", "num1", "num2"})


@dataclass(frozen=True, slots=True)
class NativeCond:
    """One ``struct ph_cond``: field ``field`` (``PH_F_*``) satisfies ``op`` with key/a/b."""

    field: int
    op: int
    key: int = 0
    a: float = 0.0
    b: float = 0.0


@dataclass(frozen=True, slots=True)
class RulePlan:
    """How one hook is matched on one event type.

    Attributes:
        hook: index of the hook (the native rule id).
        type: the event type of this rule.
        conds: the native conditions (ANDed; may be empty: type only).
        residual: attribute conditions checked in Python on every hit, in config order.
        rechecks: ``(opaque bit, condition)`` for native attribute conditions, checked in
            Python on hits whose slot has that opaque bit.
        opaque_mask: OR of the opaque bits of ``rechecks``.
        kinds: ``"native"``, ``"partial"`` or ``"residual"`` per attribute condition.
    """

    hook: int
    type: EventType
    conds: tuple[NativeCond, ...]
    residual: tuple[AttrCondition, ...]
    rechecks: tuple[tuple[int, AttrCondition], ...]
    opaque_mask: int
    kinds: tuple[str, ...]

    def check(self, event: Event, present: int) -> dict[str, str] | None:
        """Stage 2 for a native hit of ``event`` whose slot presence word is ``present``.

        Returns:
            The phrase captures (possibly empty) when the hook matches, else None.
        """
        etype, args = event.type, event.args
        caps: dict[str, str] = {}
        for ac in self.residual:
            failed, got = ac.check(etype, args)
            if failed is not None:
                return None
            if got:
                caps.update(got)
        if present & self.opaque_mask:
            for bit, ac in self.rechecks:
                if present & bit and ac.check(etype, args)[0] is not None:
                    return None
        return caps


def _internable(value: Any) -> bool:
    """True if ``value`` is safe to compare by interned id (equal ids <=> Python ``==``)."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    return t is float and not math.isnan(value)


def _exact_number(value: Any) -> bool:
    """True if ``value == x`` in Python equals ``float(value) == x`` in C for every double x.

    That holds for bools, floats and ints a double represents exactly (all of them up to
    2**53 in magnitude, and larger ones like 2**60), the same values the bus encodes
    natively in num fields.
    """
    t = type(value)
    if t is bool or t is float:
        return True
    if t is not int:
        return False
    number: int = value
    if -EXACT_INT <= number <= EXACT_INT:
        return True
    try:
        return float(number) == number
    except OverflowError:
        return False


def split_attr(ac: AttrCondition, etype: EventType,
               intern: Callable[[Any], int]) -> tuple[list[NativeCond], str]:
    """Split one attribute condition for events of type ``etype``.

    Args:
        ac: the attribute condition.
        etype: the event type the rule is for.
        intern: maps a key value to its interned id (``pihub.bus.intern``).

    Returns:
        ``(native conditions, kind)``; kind is ``"native"`` (C decides, except on opaque
        fields), ``"partial"`` (C prefilters, Python decides) or ``"residual"`` (Python
        decides; the native list is then at most a ``PRESENT`` prefilter).
    """
    fname = etype.native.get(ac.name)
    if fname is None:
        return [], "residual"
    f = FIELD_INDEX[fname]
    presence = [NativeCond(f, PH_OP_PRESENT)]
    if ac.mode(etype) != "generic":
        return presence, "residual"
    test = ac.test
    conds: list[NativeCond] = []
    exact = True
    if fname in _KEY_FIELDS:
        if isinstance(test, EqualTest):
            if _internable(test.expected):
                return [NativeCond(f, PH_OP_KEY_EQ, intern(test.expected))], "native"
            return presence, "residual"
        if isinstance(test, RelationalTest):
            for op in test.ops:
                if op.op in ("$eq", "$ne") and _internable(op.operand):
                    kop = PH_OP_KEY_EQ if op.op == "$eq" else PH_OP_KEY_NE
                    conds.append(NativeCond(f, kop, intern(op.operand)))
                else:
                    exact = False
    elif fname in _NUM_FIELDS:
        if isinstance(test, EqualTest):
            if _exact_number(test.expected):
                return [NativeCond(f, PH_OP_EQ, a=float(test.expected))], "native"
            return presence, "residual"
        if isinstance(test, RelationalTest):
            bounds: dict[str, float] = {}
            for op in test.ops:
                if op.op in _NUM_OPS:
                    assert op.number is not None
                    bounds[op.op] = op.number
                elif op.op in ("$eq", "$ne") and _exact_number(op.operand):
                    conds.append(NativeCond(f, PH_OP_EQ if op.op == "$eq" else PH_OP_NE, a=float(op.operand)))
                else:
                    exact = False
            if "$gte" in bounds and "$lte" in bounds:
                conds.append(NativeCond(f, PH_OP_RANGE, a=bounds.pop("$gte"), b=bounds.pop("$lte")))
            conds.extend(NativeCond(f, _NUM_OPS[op], a=x) for op, x in bounds.items())
    if not conds:
        return presence, "residual"
    return conds, "native" if exact else "partial"


def split(cond: Condition, etype: EventType, hook: int, intern: Callable[[Any], int]) -> RulePlan:
    """Split a hook's condition for events of ``etype`` (one of the condition type's subtypes).

    Args:
        cond: the hook's condition.
        etype: the event type of the rule.
        hook: the hook index (rule id).
        intern: maps a key value to its interned id.

    Returns:
        The :class:`RulePlan`.
    """
    conds: list[NativeCond] = []
    residual: list[AttrCondition] = []
    rechecks: list[tuple[int, AttrCondition]] = []
    kinds: list[str] = []
    mask = 0
    for ac in cond.attrs:
        native, kind = split_attr(ac, etype, intern)
        conds.extend(native)
        kinds.append(kind)
        if kind == "native":
            bit = opaque_bit(native[0].field)
            rechecks.append((bit, ac))
            mask |= bit
        else:
            residual.append(ac)
    return RulePlan(hook, etype, tuple(conds), tuple(residual), tuple(rechecks), mask, tuple(kinds))


class Matcher:
    """The compiled hooks: a native rule table plus the Python residue.

    Args:
        hooks: the hooks in config order; hook ``i`` is native rule id ``i``.

    Raises:
        ValueError: when the native library rejects the rule table (a pihub bug).
    """

    #: Hits buffered per ``ph_match_batch`` call (at least one event's worth is ensured).
    HIT_BUFFER = 4096

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks: tuple[Hook, ...] = tuple(hooks)
        self._plans: list[dict[int, RulePlan]] = []
        self.kinds: dict[str, int] = {"native": 0, "partial": 0, "residual": 0}
        plans: list[RulePlan] = []
        for idx, hook in enumerate(self.hooks):
            per_type: dict[int, RulePlan] = {}
            for t in CATALOGUE.subtypes(hook.condition.type):
                plan = split(hook.condition, t, idx, _bus.intern)
                per_type[t.id] = plan
                plans.append(plan)
                for kind in plan.kinds:
                    self.kinds[kind] += 1
            self._plans.append(per_type)
        self.nrules = len(plans)
        self.nconds = sum(len(p.conds) for p in plans)
        ffi, lib = _bus.ffi, _bus.lib
        self._m: Any = None
        if plans:
            rules = ffi.new("struct ph_rule[]", len(plans))
            conds = ffi.new("struct ph_cond[]", max(self.nconds, 1))
            k = 0
            for r, plan in enumerate(plans):
                rules[r].id = plan.hook
                rules[r].type = plan.type.id
                rules[r].first_cond = k
                rules[r].ncond = len(plan.conds)
                for c in plan.conds:
                    conds[k].field = c.field
                    conds[k].op = c.op
                    conds[k].key = c.key
                    conds[k].a = c.a
                    conds[k].b = c.b
                    k += 1
            m = lib.ph_matcher_new(rules, len(plans), conds, self.nconds)
            if m == ffi.NULL:
                raise ValueError(f"native matcher rejected the rule table ({len(plans)} rules, "
                                 f"{self.nconds} conditions); this is a pihub bug")
            self._m = ffi.gc(m, lib.ph_matcher_free)
        self._cap = max(self.HIT_BUFFER, len(self.hooks))
        self._hits = ffi.new("struct ph_hit[]", self._cap)
        self._consumed = ffi.new("uint32_t *")
        self._slot_size = ffi.sizeof("struct ph_event")
        self._off_type = ffi.offsetof("struct ph_event", "type")
        self._off_present = ffi.offsetof("struct ph_event", "present")

    @property
    def native_fraction(self) -> float:
        """Fraction (0..1) of attribute conditions, over all rules, that C decides alone."""
        total = sum(self.kinds.values())
        return self.kinds["native"] / total if total else 1.0

    def match_batch(self, batch: Any) -> list[tuple[int, Hook, dict[str, str]]]:
        """Match a popped batch (both stages; no selection).

        Args:
            batch: a :class:`pihub.bus.Batch` (``slots``, ``n``, ``event(i)``).

        Returns:
            ``(event index, hook, captures)`` for every hook whose condition matches, events
            in batch order and, for one event, hooks in config order.
        """
        n = batch.n
        if not n or self._m is None:
            return []
        ffi, lib = _bus.ffi, _bus.lib
        slots = batch.slots
        out: list[tuple[int, Hook, dict[str, str]]] = []
        header: Any = None
        events: dict[int, Event] = {}
        u32, u16 = _U32.unpack_from, _U16.unpack_from
        size, off_type, off_present = self._slot_size, self._off_type, self._off_present
        hooks, plans = self.hooks, self._plans
        start = 0
        while start < n:
            nh = lib.ph_match_batch(self._m, slots + start, n - start, self._hits, self._cap, self._consumed)
            consumed = self._consumed[0]
            if nh:
                if header is None:
                    header = ffi.buffer(slots, n * size)
                pairs = memoryview(ffi.buffer(self._hits, nh * 8)).cast("I")
                last_ev, etype_id, present = -1, 0, 0
                for k in range(0, 2 * nh, 2):
                    ev = pairs[k] + start
                    if ev != last_ev:
                        base = ev * size
                        etype_id = u32(header, base + off_type)[0]
                        present = u16(header, base + off_present)[0]
                        last_ev = ev
                    rid = pairs[k + 1]
                    plan = plans[rid][etype_id]
                    if not plan.residual and not present & plan.opaque_mask:
                        out.append((ev, hooks[rid], {}))
                        continue
                    event = events.get(ev)
                    if event is None:
                        event = events[ev] = batch.event(ev)
                    caps = plan.check(event, present)
                    if caps is not None:
                        out.append((ev, hooks[rid], caps))
            if consumed == 0:
                raise RuntimeError(f"ph_match_batch made no progress at event {start} of {n} "
                                   f"(hit buffer {self._cap})")
            start += consumed
        return out

    def explain(self, event: Event) -> tuple[list[Hook], dict[str, str]]:
        """Which hooks ``event`` fires and why the others do not (pure Python, for replay).

        Returns:
            ``(fired, not_fired)``: the hooks selected to run, in config order; and for
            every other hook, its name -> the first failed condition (``pin: 18 != 17``),
            or for a hook that matched but lost on priority, ``outranked by 'NAME'
            (priority P > p)``.
        """
        matches: list[tuple[Hook, dict[str, Any]]] = []
        not_fired: dict[str, str] = {}
        for hook in self.hooks:
            m = hook.condition.match(event)
            if m.ok:
                matches.append((hook, m.captures))
            else:
                not_fired[hook.name] = m.failed or "no match"
        chosen = select(matches)
        fired = [h for h, _ in chosen]
        for hook, _ in matches:
            better = outranked_by(hook, matches)
            if better is not None:
                not_fired[hook.name] = (f"outranked by {better.name!r} "
                                        f"(priority {better.priority} > {hook.priority})")
        return fired, not_fired

    def close(self) -> None:
        """Free the native matcher; idempotent. ``match_batch`` then returns no hits."""
        if self._m is not None:
            _bus.ffi.release(self._m)
            self._m = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")

__all__ = ["Matcher", "NativeCond", "RulePlan", "opaque_bit", "split", "split_attr"]
