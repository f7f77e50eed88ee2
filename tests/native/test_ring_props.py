"""The native bus rings against the reference model (tests/native/model.py).

Random interleavings of pushes (``_sp`` and ``_mp`` batches of random sizes, several
producers, some added mid-way) and pops of random sizes on small rings, so the rings fill,
drop, empty and wrap around constantly. After every operation the native result must be
the model's: the same accepted counts, the same popped events in the same order (which
covers: nothing lost or duplicated below capacity, exact drops above it, per-producer
order, and the documented fair pop order), the same stats.

Volume: test_bus_matches_model_bulk runs 400 examples x 2,500 operations = 10^6 operations,
generated from a hypothesis-drawn seed (hypothesis then reports the failing seed);
test_bus_matches_model_shrinkable draws short operation lists directly so a failure
shrinks to a minimal sequence.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass

import model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pihub.bus import ffi, lib

MAX_BATCH = 24


@dataclass
class Harness:
    """One native bus and its model, driven in lockstep."""

    capacity: int
    max_producers: int

    def __post_init__(self) -> None:
        self.bus = ffi.gc(lib.ph_bus_new(self.capacity, self.max_producers), lib.ph_bus_free)
        self.model = model.BusModel(self.capacity, self.max_producers)
        self.shared: list[bool] = []
        self.next_seq: list[int] = []
        self.inbuf = ffi.new("struct ph_event[]", MAX_BATCH)
        for j in range(MAX_BATCH):
            self.inbuf[j].type = 1
        inview = memoryview(ffi.buffer(self.inbuf))
        self.in_u32, self.in_f64 = inview.cast("I"), inview.cast("d")
        self.outbuf = ffi.new("struct ph_event[]", 4 * MAX_BATCH)
        outview = memoryview(ffi.buffer(self.outbuf))
        self.out_u16, self.out_u32, self.out_f64 = outview.cast("H"), outview.cast("I"), outview.cast("d")
        self.stats = ffi.new("struct ph_producer_stats *")
        self.ops = 0

    def add_producer(self, shared: bool) -> None:
        pid = lib.ph_bus_add_producer(self.bus)
        assert pid == self.model.add_producer()
        self.ops += 1
        if pid >= 0:
            self.shared.append(shared)
            self.next_seq.append(0)

    def push(self, producer: int, n: int) -> None:
        seq0 = self.next_seq[producer]
        # key[0] = producer, num[0] = per-producer sequence: the event's identity
        self.in_u32[4 : 16 * n : 16] = array("I", [producer] * n)
        self.in_f64[4 : 8 * n : 8] = array("d", range(seq0, seq0 + n))
        push = lib.ph_push_batch_mp if self.shared[producer] else lib.ph_push_batch_sp
        k = push(self.bus, producer, self.inbuf, n)
        want = self.model.push(producer, [(producer, seq0 + j) for j in range(n)])
        assert k == want
        # refused events are gone for good: the next push continues the sequence after them
        self.next_seq[producer] = seq0 + n
        self.ops += 1

    def pop(self, max_events: int) -> None:
        n = lib.ph_pop_sc(self.bus, self.outbuf, max_events)
        sources = self.out_u16[6 : 32 * n : 32].tolist()
        keys = self.out_u32[4 : 16 * n : 16].tolist()
        seqs = [int(x) for x in self.out_f64[4 : 8 * n : 8].tolist()]
        assert sources == keys  # the bus stamped the producer id
        assert list(zip(sources, zip(keys, seqs, strict=True), strict=True)) == self.model.pop(max_events)
        self.ops += 1

    def check_stats(self) -> None:
        for pid in range(len(self.shared)):
            assert lib.ph_bus_producer_stats(self.bus, pid, self.stats) == 0
            s = self.stats
            assert (s.published, s.dropped, s.depth, s.capacity) == self.model.stats(pid)
        assert lib.ph_bus_producer_stats(self.bus, len(self.shared), self.stats) == -1

    def drain(self) -> None:
        while sum(len(r.items) for r in self.model.rings):
            self.pop(4 * MAX_BATCH)
        assert lib.ph_pop_sc(self.bus, self.outbuf, 4 * MAX_BATCH) == 0


def run_random(seed: int, capacity: int, max_producers: int, steps: int) -> int:
    """Drive a harness with ``steps`` seeded random operations; returns operations done."""
    rnd = random.Random(seed)
    h = Harness(capacity, max_producers)
    for _ in range(rnd.randint(1, max_producers)):
        h.add_producer(rnd.random() < 0.5)
    push_bias = rnd.uniform(0.3, 0.7)  # some runs mostly full, some mostly empty
    for _ in range(steps):
        r = rnd.random()
        if r < 0.005:
            h.add_producer(rnd.random() < 0.5)
        elif r < push_bias:
            h.push(rnd.randrange(len(h.shared)), rnd.randint(0, MAX_BATCH))
        else:
            h.pop(rnd.randint(0, 4 * MAX_BATCH))
        if r > 0.99:
            h.check_stats()
    h.check_stats()
    h.drain()
    h.check_stats()
    return h.ops


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**64 - 1), capacity=st.sampled_from([1, 2, 3, 4, 8, 16, 64]),
       max_producers=st.integers(1, 5))
def test_bus_matches_model_bulk(seed: int, capacity: int, max_producers: int) -> None:
    assert run_random(seed, capacity, max_producers, 2500) >= 2500


op = st.one_of(
    st.tuples(st.just("push"), st.integers(0, 7), st.integers(0, MAX_BATCH)),
    st.tuples(st.just("pop"), st.integers(0, 4 * MAX_BATCH), st.just(0)),
    st.tuples(st.just("add"), st.booleans(), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.sampled_from([1, 2, 4, 8]), flavours=st.lists(st.booleans(), min_size=1, max_size=4),
       ops=st.lists(op, max_size=120))
def test_bus_matches_model_shrinkable(capacity: int, flavours: list[bool],
                                      ops: list[tuple[str, int, int]]) -> None:
    h = Harness(capacity, 6)
    for shared in flavours:
        h.add_producer(shared)
    for kind, a, b in ops:
        if kind == "push":
            h.push(a % len(h.shared), b)
        elif kind == "pop":
            h.pop(a)
        else:
            h.add_producer(bool(a))
    h.check_stats()
    h.drain()


def test_unknown_producer_accepts_and_counts_nothing() -> None:
    h = Harness(4, 2)
    h.add_producer(False)
    ev = ffi.new("struct ph_event *")
    assert lib.ph_push_sp(h.bus, 1, ev) == 0
    assert lib.ph_push_batch_mp(h.bus, 7, ev, 1) == 0
    h.check_stats()
    assert h.model.stats(0) == (0, 0, 0, 4)


def test_full_ring_drops_exactly_and_refills_after_a_pop() -> None:
    h = Harness(8, 1)
    h.add_producer(False)
    h.push(0, 5)
    h.push(0, 7)  # 3 fit
    h.push(0, 1)  # full
    h.check_stats()
    assert h.model.stats(0) == (8, 5, 8, 8)
    h.pop(3)
    h.push(0, 4)  # 3 fit again
    h.check_stats()
    assert h.model.stats(0) == (11, 6, 8, 8)
    h.drain()
