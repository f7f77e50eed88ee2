"""``ph_match_batch`` against the reference model (tests/native/model.py).

Random rule tables x random event slots: the native hits must be the model's, in the same
order, including opaque and absent fields, NaN and signed zeros, on both matcher paths:
tables where a type has many equality rules on one field (the hash index: at least
PH_MATCH_INDEX_MIN = 4 of them) and tables where none has enough (the linear scan). Also
the early stop at max_hits, and table validation.
"""

from __future__ import annotations

import math

import model
from hypothesis import given, settings
from hypothesis import strategies as st
from model import Cond, Rule, Slot

from pihub.bus import ffi, lib

INDEX_MIN = 4
KEYS = st.integers(0, 5)
NUMBERS = st.sampled_from([0.0, -0.0, 1.0, 2.0, 2.5, -3.0, 7.0, math.nan, math.inf, -math.inf])
CODES = st.integers(0, 9) | st.just(0xFFFFFFFF)


def test_model_constants_are_the_compiled_ones() -> None:
    for name in ("EQ", "NE", "LT", "LE", "GT", "GE", "RANGE", "BITS_ALL", "BITS_ANY", "KEY_EQ", "KEY_NE",
                 "PRESENT"):
        assert getattr(lib, f"PH_OP_{name}") == getattr(model, f"OP_{name}")
    for name in ("KEY0", "KEY1", "CODE", "NUM0", "NUM1", "NUM2"):
        assert getattr(lib, f"PH_F_{name}") == getattr(model, f"F_{name}")


@st.composite
def conds(draw: st.DrawFn, field: int | None = None) -> Cond:
    f = draw(st.integers(0, 5)) if field is None else field
    op = draw(st.sampled_from(sorted(model.VALID_OPS[f])))
    key = draw(st.integers(0, 15)) if op in (model.OP_BITS_ALL, model.OP_BITS_ANY) else draw(KEYS)
    return Cond(f, op, key, draw(NUMBERS), draw(NUMBERS))


@st.composite
def equality(draw: st.DrawFn, field: int) -> Cond:
    if field in (model.F_KEY0, model.F_KEY1):
        return Cond(field, model.OP_KEY_EQ, draw(KEYS))
    if field == model.F_CODE:
        return Cond(field, model.OP_EQ, a=float(draw(st.integers(0, 5))))
    return Cond(field, model.OP_EQ, a=draw(NUMBERS))


@st.composite
def tables(draw: st.DrawFn, mode: str) -> list[Rule]:
    """Rules of types 1..3 with unique ids per type.

    mode "index": each type gets >= INDEX_MIN rules with an equality on one chosen field
    (that field then has the most equality rules: the others get fewer than INDEX_MIN);
    mode "linear": fewer than INDEX_MIN equality rules on every field of a type;
    mode "any": anything.
    """
    rules: list[Rule] = []
    for t in (1, 2, 3):
        if mode == "index":
            field = draw(st.integers(0, 5))
            n_eq = draw(st.integers(INDEX_MIN, 24))
            bodies = [(draw(equality(field)), *draw(st.lists(conds(), max_size=2))) for _ in range(n_eq)]
            others = [f for f in range(6) if f != field]
            bodies += [tuple(draw(st.lists(conds(draw(st.sampled_from(others))), max_size=2)))
                       for _ in range(draw(st.integers(0, INDEX_MIN - 1)))]
            bodies += [(Cond(field, draw(st.sampled_from([model.OP_PRESENT, model.OP_NE if field > 1 else
                                                          model.OP_KEY_NE])), draw(KEYS), draw(NUMBERS)),)
                       for _ in range(draw(st.integers(0, 6)))]
        elif mode == "linear":
            bodies = []
            for _ in range(draw(st.integers(0, 12))):
                body = tuple(draw(st.lists(conds(), max_size=3)))
                trial = bodies + [body]
                if all(sum(any(_indexable(c, f) for c in b) for b in trial) < INDEX_MIN for f in range(6)):
                    bodies = trial
        else:
            bodies = [tuple(draw(st.lists(conds(), max_size=3))) for _ in range(draw(st.integers(0, 30)))]
        ids = draw(st.lists(st.integers(0, 2**32 - 1), min_size=len(bodies), max_size=len(bodies),
                            unique=True))
        rules += [Rule(i, t, tuple(b)) for i, b in zip(ids, bodies, strict=True)]
    return draw(st.permutations(rules))


def _indexable(c: Cond, field: int) -> bool:
    if c.field != field:
        return False
    if field <= model.F_KEY1:
        return c.op == model.OP_KEY_EQ
    return c.op == model.OP_EQ and not math.isnan(c.a)


@st.composite
def slots(draw: st.DrawFn) -> Slot:
    present = 0
    for f in range(6):
        state = draw(st.sampled_from(["native", "native", "native", "opaque", "both", "absent"]))
        if state in ("native", "both"):
            present |= 1 << f
        if state in ("opaque", "both"):
            present |= model.opaque_bit(f)
    return Slot(draw(st.integers(0, 4)), present, [draw(KEYS), draw(KEYS)], draw(CODES),
                [draw(NUMBERS), draw(NUMBERS), draw(NUMBERS)])


def native_matcher(rules: list[Rule]) -> object:
    """The rules as a ph_matcher (ffi.gc-managed), or ffi.NULL."""
    crules = ffi.new("struct ph_rule[]", max(1, len(rules)))
    all_conds = [c for r in rules for c in r.conds]
    cconds = ffi.new("struct ph_cond[]", max(1, len(all_conds)))
    k = 0
    for i, r in enumerate(rules):
        crules[i].id, crules[i].type, crules[i].first_cond, crules[i].ncond = r.id, r.type, k, len(r.conds)
        for c in r.conds:
            cc = cconds[k]
            cc.field, cc.op, cc.key, cc.a, cc.b = c.field, c.op, c.key, c.a, c.b
            k += 1
    m = lib.ph_matcher_new(crules, len(rules), cconds, len(all_conds))
    return m if m == ffi.NULL else ffi.gc(m, lib.ph_matcher_free)


def native_match(m: object, events: list[Slot], max_hits: int) -> tuple[list[tuple[int, int]], int]:
    cev = ffi.new("struct ph_event[]", max(1, len(events)))
    for i, s in enumerate(events):
        e = cev[i]
        e.type, e.present, e.code = s.type, s.present, s.code
        e.key[0], e.key[1] = s.key
        e.num[0], e.num[1], e.num[2] = s.num
    hits = ffi.new("struct ph_hit[]", max(1, max_hits))
    consumed = ffi.new("uint32_t *")
    n = lib.ph_match_batch(m, cev, len(events), hits, max_hits, consumed)
    return [(hits[i].event, hits[i].rule) for i in range(n)], consumed[0]


def check_all(rules: list[Rule], events: list[Slot]) -> list[tuple[int, int]]:
    m = native_matcher(rules)
    assert m != ffi.NULL
    want, consumed = model.match(rules, events)
    assert native_match(m, events, len(want) + 1) == (want, len(events)) == (want, consumed)
    return want


@settings(max_examples=200, deadline=None)
@given(rules=tables("index"), events=st.lists(slots(), max_size=40))
def test_index_path_matches_model(rules: list[Rule], events: list[Slot]) -> None:
    check_all(rules, events)


@settings(max_examples=300, deadline=None)
@given(rules=tables("linear"), events=st.lists(slots(), max_size=40))
def test_linear_path_matches_model(rules: list[Rule], events: list[Slot]) -> None:
    check_all(rules, events)


@settings(max_examples=300, deadline=None)
@given(rules=tables("any"), events=st.lists(slots(), max_size=40))
def test_any_table_matches_model(rules: list[Rule], events: list[Slot]) -> None:
    check_all(rules, events)


@settings(max_examples=150, deadline=None)
@given(rules=tables("any"), events=st.lists(slots(), max_size=30), data=st.data())
def test_max_hits_stops_at_an_event_boundary(rules: list[Rule], events: list[Slot],
                                             data: st.DataObject) -> None:
    m = native_matcher(rules)
    total, _ = model.match(rules, events)
    max_hits = data.draw(st.integers(0, len(total) + 1))
    assert native_match(m, events, max_hits) == model.match(rules, events, max_hits)


def test_index_and_linear_paths_agree_on_the_same_events() -> None:
    # the same 6 equality rules, once indexed (6 >= INDEX_MIN) and once split so that no
    # field has INDEX_MIN equalities (3 on key0 + 3 on num0): the hits must not differ
    eq_key = [Rule(10 + i, 1, (Cond(model.F_KEY0, model.OP_KEY_EQ, i % 3),)) for i in range(6)]
    split = eq_key[:3] + [Rule(13 + i, 1, (Cond(model.F_NUM0, model.OP_EQ, a=float(i % 3)),))
                          for i in range(3)]
    both = 1 << model.F_KEY0 | 1 << model.F_NUM0
    events = [Slot(1, both, [k, 0], 0, [float(k), 0.0, 0.0]) for k in range(4)]
    events += [Slot(1, model.opaque_bit(model.F_KEY0) | 1 << model.F_NUM0, [0, 0], 0, [1.0, 0, 0]),
               Slot(1, 1 << model.F_NUM0, [0, 0], 0, [math.nan, 0, 0])]
    indexed = check_all(eq_key, events)
    linear = check_all(split, events)
    assert indexed and linear
    assert [e for e, _ in indexed] == [0, 0, 1, 1, 2, 2, 4, 4, 4, 4, 4, 4]


@st.composite
def any_conds(draw: st.DrawFn) -> Cond:
    return Cond(draw(st.integers(0, 7)), draw(st.integers(0, 14)), draw(KEYS), draw(NUMBERS), draw(NUMBERS))


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(st.builds(Rule, st.integers(0, 5), st.integers(0, 4) | st.just(65536),
                                st.lists(any_conds(), max_size=3).map(tuple)), max_size=8))
def test_validation_matches_model(rules: list[Rule]) -> None:
    valid = model.table_valid(rules)
    m = native_matcher(rules)
    assert (m != ffi.NULL) == valid
    if not valid:
        assert ffi.errno == 22  # EINVAL
