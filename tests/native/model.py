"""Pure-Python reference model of the native bus rings and of ``ph_match_batch``.

Test-only: the differential tests run the same operations on the native code and on this
model and compare. It follows the contracts written in ``native/ph_api.h`` (the pop order,
drop counting, opaque/absent semantics), not the C code, and nothing in pihub imports it:
there is no pure-Python fallback for the native core.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

# Field indices and operators, as in native/ph_event.h and native/ph_api.h (the tests check
# these against the compiled constants).
F_KEY0, F_KEY1, F_CODE, F_NUM0, F_NUM1, F_NUM2 = range(6)
NFIELDS = 6
OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_RANGE = range(1, 8)
OP_BITS_ALL, OP_BITS_ANY, OP_KEY_EQ, OP_KEY_NE, OP_PRESENT = range(8, 13)
NUMERIC_OPS = (OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_RANGE)
#: Operators each field accepts.
VALID_OPS: dict[int, frozenset[int]] = {
    F_KEY0: frozenset({OP_KEY_EQ, OP_KEY_NE, OP_PRESENT}),
    F_KEY1: frozenset({OP_KEY_EQ, OP_KEY_NE, OP_PRESENT}),
    F_CODE: frozenset({*NUMERIC_OPS, OP_BITS_ALL, OP_BITS_ANY, OP_PRESENT}),
    F_NUM0: frozenset({*NUMERIC_OPS, OP_PRESENT}),
    F_NUM1: frozenset({*NUMERIC_OPS, OP_PRESENT}),
    F_NUM2: frozenset({*NUMERIC_OPS, OP_PRESENT}),
}
MAX_TYPE = 65535


def opaque_bit(f: int) -> int:
    """The presence bit meaning "field ``f`` exists but is opaque" (``PH_OPAQUE``)."""
    return 1 << (8 + f)


# ------------------------------------------------------------------------- bus


class RingModel:
    """One producer's bounded FIFO ring: accepts the prefix that fits, counts the rest."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[object] = deque()
        self.published = 0
        self.dropped = 0

    def push(self, events: list[object]) -> int:
        """Accept ``events[:k]``, k = free slots; return k."""
        k = min(len(events), self.capacity - len(self.items))
        self.items.extend(events[:k])
        self.published += k
        self.dropped += len(events) - k
        return k

    def pop(self, max_events: int) -> list[object]:
        """The oldest ``max_events`` events at most."""
        k = min(max_events, len(self.items))
        return [self.items.popleft() for _ in range(k)]


class BusModel:
    """Rings per producer and the documented fair pop order of ``ph_pop_sc``.

    Args:
        capacity: events per ring before rounding (rounded up to a power of two, >= 2).
        max_producers: producers the bus holds.
    """

    def __init__(self, capacity: int, max_producers: int) -> None:
        cap = 2
        while cap < capacity:
            cap *= 2
        self.capacity = cap
        self.max_producers = max_producers
        self.rings: list[RingModel] = []
        self.rr = 0

    def add_producer(self) -> int:
        """The new producer's id, or -1 when full."""
        if len(self.rings) >= self.max_producers:
            return -1
        self.rings.append(RingModel(self.capacity))
        return len(self.rings) - 1

    def push(self, producer: int, events: list[object]) -> int:
        """Events accepted from ``events`` by ``producer``'s ring (0 for an unknown id)."""
        if not 0 <= producer < len(self.rings):
            return 0
        return self.rings[producer].push(events)

    def pop(self, max_events: int) -> list[tuple[int, object]]:
        """``(producer, event)`` pairs in the order ``ph_pop_sc`` writes them."""
        n = len(self.rings)
        if n == 0 or max_events == 0:
            return []
        start = self.rr if self.rr < n else 0
        share = max(1, max_events // n)
        out: list[tuple[int, object]] = []
        for first_pass in (True, False):
            for j in range(n):
                room = max_events - len(out)
                if room == 0:
                    break
                i = (start + j) % n
                want = min(room, share) if first_pass else room
                out.extend((i, e) for e in self.rings[i].pop(want))
        if out:
            self.rr = start + 1 if start + 1 < n else 0
        return out

    def stats(self, producer: int) -> tuple[int, int, int, int]:
        """``(published, dropped, depth, capacity)`` of one producer."""
        r = self.rings[producer]
        return (r.published, r.dropped, len(r.items), r.capacity)


# --------------------------------------------------------------------- matcher


@dataclass(frozen=True)
class Cond:
    """One condition (``struct ph_cond``)."""

    field: int
    op: int
    key: int = 0
    a: float = 0.0
    b: float = 0.0


@dataclass(frozen=True)
class Rule:
    """One rule (``struct ph_rule`` with its conditions inline)."""

    id: int
    type: int
    conds: tuple[Cond, ...] = ()


@dataclass
class Slot:
    """The matcher-visible fields of one ``struct ph_event``."""

    type: int
    present: int = 0
    key: list[int] = field(default_factory=lambda: [0, 0])
    code: int = 0
    num: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


def table_valid(rules: list[Rule]) -> bool:
    """Whether ``ph_matcher_new`` must accept this table (else NULL with EINVAL)."""
    seen: set[tuple[int, int]] = set()
    for r in rules:
        if not 1 <= r.type <= MAX_TYPE or (r.type, r.id) in seen:
            return False
        seen.add((r.type, r.id))
        for c in r.conds:
            if c.op not in VALID_OPS.get(c.field, ()):
                return False
    return True


def cond_holds(c: Cond, s: Slot) -> bool:
    """One condition on one slot: opaque passes, absent fails, else compare like C."""
    if s.present & opaque_bit(c.field):
        return True
    if not s.present & (1 << c.field):
        return False
    if c.op == OP_PRESENT:
        return True
    if c.field in (F_KEY0, F_KEY1):
        v = s.key[c.field]
        return v == c.key if c.op == OP_KEY_EQ else v != c.key
    if c.op == OP_BITS_ALL:
        return s.code & c.key == c.key
    if c.op == OP_BITS_ANY:
        return s.code & c.key != 0
    x = float(s.code) if c.field == F_CODE else s.num[c.field - F_NUM0]
    if c.op == OP_EQ:
        return x == c.a
    if c.op == OP_NE:
        return x != c.a
    if c.op == OP_LT:
        return x < c.a
    if c.op == OP_LE:
        return x <= c.a
    if c.op == OP_GT:
        return x > c.a
    if c.op == OP_GE:
        return x >= c.a
    if c.op == OP_RANGE:
        return c.a <= x <= c.b
    raise ValueError(f"unknown op {c.op}")


def event_hits(rules: list[Rule], s: Slot) -> list[int]:
    """Ids of the rules of ``s.type`` whose every condition holds, ascending."""
    return sorted(r.id for r in rules if r.type == s.type and all(cond_holds(c, s) for c in r.conds))


def match(rules: list[Rule], slots: list[Slot],
          max_hits: int | None = None) -> tuple[list[tuple[int, int]], int]:
    """``ph_match_batch``: ``((event index, rule id) hits, events consumed)``.

    Stops before the first event whose hits would not all fit in ``max_hits``.
    """
    hits: list[tuple[int, int]] = []
    for i, s in enumerate(slots):
        mine = event_hits(rules, s)
        if max_hits is not None and len(hits) + len(mine) > max_hits:
            return hits, i
        hits.extend((i, rid) for rid in mine)
    return hits, len(slots)


def is_nan(x: float) -> bool:
    """True for a NaN double."""
    return math.isnan(x)
