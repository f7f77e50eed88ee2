"""pihub.bus: publishing, popping, encoding, interning, stats, drops, the blocking pop."""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from enum import IntEnum
from fractions import Fraction
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pihub_testing import finishes, wait_for

from pihub import bus as B
from pihub.bus import UNKNOWN_KEY, Bus, intern, lookup, value_of
from pihub.devtools import loadgen
from pihub.events import CATALOGUE, Catalogue, Event, EventType

GPIO = CATALOGUE.get("GPIOEvent")        # pin: key0, value: num0, name: key1
MIDI = CATALOGUE.get("MidiMessageEvent")  # device: key0, port: num0, delay: num1; message: no field
WATCHDOG = 10.0  # seconds a helper thread may take before the test counts it as hung


@pytest.fixture
def bus() -> Iterator[Bus]:
    b = Bus(capacity=8, max_producers=8)
    yield b
    b.close()


def gpio(pin: object = 17, value: object = 1, **extra: object) -> Event:
    return Event(GPIO, {"pin": pin, "value": value, **extra}, ts_ns=123, source="test")


def unique(tag: str = "v") -> str:
    return f"{tag}-{uuid.uuid4().hex}"


# ------------------------------------------------------------------ interning


def test_intern_follows_python_equality() -> None:
    assert intern(1) == intern(1.0) == intern(True)
    assert intern("1") != intern(1)
    assert intern(("a", 2)) == intern(("a", 2.0))
    assert intern(0.0) == intern(-0.0) == intern(False)
    s = unique()
    assert intern(s) == intern(s) == lookup(s)
    assert value_of(intern(s)) == s


def test_lookup_never_inserts() -> None:
    s = unique()
    assert lookup(s) == UNKNOWN_KEY
    assert lookup(s) == UNKNOWN_KEY  # still unknown: the first lookup did not add it
    kid = intern(s)
    assert kid != UNKNOWN_KEY
    assert lookup(s) == kid


def test_unhashable_and_nan_are_not_internable() -> None:
    with pytest.raises(TypeError):
        intern([1, 2])
    with pytest.raises(TypeError):
        lookup({"a": 1})
    for nan in (math.nan, complex(0, math.nan), Decimal("NaN")):
        with pytest.raises(ValueError, match="not equal to itself"):
            intern(nan)
    assert lookup(math.nan) == UNKNOWN_KEY


def test_value_of_unknown_id_raises() -> None:
    with pytest.raises(KeyError):
        value_of(UNKNOWN_KEY)
    with pytest.raises(KeyError):
        value_of(-1)


# ------------------------------------------------------------------- encoding


def unpack(slot: object) -> tuple:
    return B.SLOT.unpack_from(B.ffi.buffer(slot, 64), 0)


def test_encode_fields_presence_and_ref() -> None:
    pin_id = intern(17)
    slot = B.new_slots(1)
    B.encode(gpio(17, 1, name=unique()), slot, ref=99)
    ts, tid, source, present, k0, k1, ref, _code, n0, _n1, _n2, _ = unpack(slot)
    assert (ts, tid, source, ref) == (123, GPIO.id, 0, 99)
    assert (k0, n0) == (pin_id, 1.0)
    assert k1 == UNKNOWN_KEY  # a name never interned: lookup, not intern
    assert present == 0b1011  # key0, key1, num0 natively; code, num1, num2 absent


@pytest.mark.parametrize(("value", "native", "stored"), [
    (3, True, 3.0), (2.5, True, 2.5), (True, True, 1.0), (-(2**53), True, -(2.0**53)),
    (2**60, True, 2.0**60),            # a power of two: exact
    (2**53 + 1, False, None),         # not exactly representable
    (10**400, False, None),           # overflows a double
    (math.inf, True, math.inf), ("3", False, None), (None, False, None), ([1], False, None),
])
def test_encode_num_field(value: object, native: bool, stored: float | None) -> None:
    slot = B.new_slots(1)
    B.encode(gpio(17, value), slot, ref=1)
    present, n0 = unpack(slot)[3], unpack(slot)[8]
    assert bool(present & 1 << 3) is native
    assert bool(present & 1 << 11) is not native  # the opaque bit of num0
    if native:
        assert n0 == stored


def test_encode_nan_is_native_and_unhashable_key_is_opaque() -> None:
    slot = B.new_slots(1)
    B.encode(gpio([1, 2], math.nan), slot, ref=1)
    present, n0 = unpack(slot)[3], unpack(slot)[8]
    assert present == (1 << 8) | (1 << 3)  # key0 opaque, num0 native
    assert math.isnan(n0)


def test_encode_absent_attribute_sets_no_bit() -> None:
    slot = B.new_slots(1)
    B.encode(Event(GPIO, {"value": 0}), slot, ref=1)
    assert unpack(slot)[3] == 1 << 3


def test_encode_into_a_bytearray_at_an_index() -> None:
    buf = bytearray(3 * 64)
    B.encode(gpio(17, 4), buf, 2, ref=5)
    assert buf[:128] == bytes(128)
    assert B.SLOT.unpack_from(buf, 128)[6] == 5
    with pytest.raises(ValueError, match="holds 3 slots"):
        B.encode(gpio(), buf, 3, ref=5)


def test_encode_without_ref_must_be_lossless() -> None:
    intern(17)
    slot = B.new_slots(1)
    B.encode(gpio(17, 1), slot)  # fine: every attribute has a native home
    with pytest.raises(ValueError, match="no native field"):
        B.encode(Event(MIDI, {"device": 17, "message": [144, 60, 100]}), slot)
    with pytest.raises(ValueError, match="does not fit"):
        B.encode(gpio(17, "high"), slot)
    with pytest.raises(ValueError, match="never interned"):
        B.encode(gpio(unique(), 1), slot)


def test_decode_rebuilds_the_event() -> None:
    name = unique()
    intern(name)
    intern(4)
    slot = B.new_slots(1)
    B.encode(Event(GPIO, {"pin": 4, "value": 2.5, "name": name}, ts_ns=77), slot)
    ev = B.decode(slot, source="me")
    assert ev.type is GPIO
    assert ev.args == {"pin": 4, "value": 2.5, "name": name}
    assert (ev.ts_ns, ev.source) == (77, "me")
    B.encode(gpio(4, 1.0), slot)
    assert B.decode(slot).args["value"] == 1 and isinstance(B.decode(slot).args["value"], int)
    slot[0].type = 0
    with pytest.raises(ValueError, match="type id 0"):
        B.decode(slot)


# ------------------------------------------------------------ publish / pop


def test_publish_pop_returns_the_same_object(bus: Bus) -> None:
    p = bus.producer("gpio")
    events = [gpio(17, i, extra=object()) for i in range(3)]
    for ev in events:
        assert p.publish(ev)
    assert bus.pending_refs == 3
    batch = bus.pop(timeout=0)
    assert batch.n == len(batch) == 3
    assert [batch.event(i) for i in range(3)] == events
    assert all(batch.event(i) is ev for i, ev in enumerate(events))
    assert bus.pending_refs == 0


@pytest.mark.parametrize("timeout", [1e10, 2**63 / 1e9, 1e300])
def test_a_timeout_beyond_int64_nanoseconds_waits_like_none(bus: Bus, timeout: float) -> None:
    bus.producer("a").publish(gpio(17, 1))
    assert bus.pop(timeout=timeout).n == 1  # no OverflowError converting to nanoseconds
    waker = threading.Timer(0.05, bus.wake)
    waker.start()
    assert finishes(lambda: bus.pop(timeout=timeout), 5, "pop(huge timeout) woken by wake()").n == 0
    waker.join()


def test_batch_slots_are_the_popped_slots(bus: Bus) -> None:
    intern(17)
    bus.producer("a").publish(gpio(17, 5))
    batch = bus.pop(timeout=0)
    assert batch.slots[0].type == GPIO.id
    assert batch.slots[0].key[0] == lookup(17)
    assert batch.slots[0].num[0] == 5.0
    assert batch.slots[0].source == bus.producer("a").id
    assert batch.source(0) == "a"
    with pytest.raises(IndexError):
        batch.event(1)


def test_refs_are_released_even_if_never_decoded(bus: Bus) -> None:
    p = bus.producer("p", shared=True)
    assert p.publish_batch([gpio(1, i) for i in range(6)]) == 6
    assert bus.pending_refs == 6
    assert bus.pop(max_events=4, timeout=0).n == 4
    assert bus.pending_refs == 2
    assert bus.pop(timeout=0).n == 2
    assert bus.pending_refs == 0


def test_publish_batch_takes_a_prefix_and_releases_the_rest(bus: Bus) -> None:
    p = bus.producer("p")
    events = [gpio(1, i) for i in range(11)]
    assert p.publish_batch(events) == 8
    assert bus.pending_refs == 8
    assert bus.stats()["p"] == B.ProducerStats(published=8, dropped=3, depth=8, capacity=8)
    batch = bus.pop(timeout=0)
    assert [batch.event(i) for i in range(batch.n)] == events[:8]
    assert bus.pending_refs == 0
    assert p.publish_batch([]) == 0


def test_drops_are_counted_per_producer_without_leaking_refs(bus: Bus) -> None:
    a, b = bus.producer("a"), bus.producer("b", shared=True)
    results_a = [a.publish(gpio(1, i)) for i in range(10)]
    results_b = [b.publish(gpio(2, i)) for i in range(9)]
    assert results_a == [True] * 8 + [False] * 2
    assert results_b == [True] * 8 + [False]
    stats = bus.stats()
    assert stats["a"] == B.ProducerStats(8, 2, 8, 8)
    assert stats["b"] == B.ProducerStats(8, 1, 8, 8)
    assert bus.pending_refs == 16  # the refused events' entries are gone already
    while bus.pop(timeout=0).n:
        pass
    assert bus.pending_refs == 0
    assert bus.stats()["a"].depth == 0


def test_pop_is_fair_and_keeps_each_producers_order(bus: Bus) -> None:
    a, b = bus.producer("a"), bus.producer("b")
    ea = [gpio(1, i) for i in range(8)]
    eb = [gpio(2, i) for i in range(2)]
    a.publish_batch(ea)
    b.publish_batch(eb)
    first = list(bus.pop(max_events=6, timeout=0))
    assert first == ea[:3] + eb[:2] + ea[3:4]  # share 3 each, then the leftover from a
    assert list(bus.pop(timeout=0)) == ea[4:]


def test_publish_raw_decodes_with_producer_name_and_checks_refs(bus: Bus) -> None:
    intern(22)
    slots = B.new_slots(3)
    for i in range(3):
        B.encode(Event(GPIO, {"pin": 22, "value": i}, ts_ns=1000 + i), slots, i)
    raw = bus.producer("raw")
    assert raw.publish_raw(slots, 3) == 3
    batch = bus.pop(timeout=0)
    events = list(batch)
    assert [e.args for e in events] == [{"pin": 22, "value": i} for i in range(3)]
    assert [e.ts_ns for e in events] == [1000, 1001, 1002]
    assert {e.source for e in events} == {"raw"}
    assert bus.pending_refs == 0
    buf = bytearray(B.ffi.buffer(slots))
    assert raw.publish_raw(buf, 2) == 2  # any buffer works
    assert bus.pop(timeout=0).n == 2
    B.encode(gpio(22, 0), slots, 1, ref=7)
    with pytest.raises(ValueError, match="ref == 0"):
        raw.publish_raw(slots, 3)
    with pytest.raises(ValueError, match="holds 2 slots"):
        raw.publish_raw(bytearray(128), 3)
    with pytest.raises(ValueError, match="holds 3 slots"):
        raw.publish_raw(slots, 4)


def test_producer_identity_and_limits() -> None:
    b = Bus(capacity=4, max_producers=2)
    p = b.producer("x", shared=True)
    assert b.producer("x", shared=True) is p
    with pytest.raises(ValueError, match="shared=True"):
        b.producer("x")
    b.producer("y")
    with pytest.raises(RuntimeError, match="all 2 producers"):
        b.producer("z")
    assert set(b.stats()) == {"x", "y"}
    assert b.capacity == 4
    b.close()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"capacity": 0}, "capacity"), ({"capacity": 2**24 + 1}, "capacity"),
    ({"max_producers": 0}, "max_producers"), ({"max_producers": 4097}, "max_producers"),
])
def test_bus_arguments_are_checked(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bus(**kwargs)


def test_capacity_rounds_up_to_a_power_of_two() -> None:
    b = Bus(capacity=5)
    assert b.capacity == 8
    assert b.producer("p").publish_batch([gpio() for _ in range(9)]) == 8
    b.close()


def test_close(bus: Bus) -> None:
    p = bus.producer("p")
    p.publish(gpio())
    bus.close()
    bus.close()
    assert bus.closed
    assert bus.pending_refs == 0
    assert p.publish(gpio()) is False
    assert p.publish_batch([gpio()]) == 0
    with pytest.raises(RuntimeError, match="closed"):
        bus.pop(timeout=0)
    with pytest.raises(RuntimeError, match="closed"):
        bus.producer("new")


def test_pop_grows_its_buffer_for_larger_batches() -> None:
    b = Bus(capacity=1024)
    p = b.producer("p")
    events = [gpio(1, i) for i in range(600)]
    assert p.publish_batch(events) == 600
    batch = b.pop(max_events=600, timeout=0)
    assert batch.n == 600 and list(batch) == events
    with pytest.raises(ValueError, match="at least 1"):
        b.pop(max_events=0)
    b.close()


# ------------------------------------------- publish_batch's column encoder vs publish


def _every_field_type() -> EventType:
    """A type with an attribute in each native field (the catalogue has no ``code`` one)."""
    cat = Catalogue()
    cat.add("Event", None, None, {})
    fields = {"k0": "key0", "k1": "key1", "c": "code", "n0": "num0", "n1": "num1", "n2": "num2"}
    return cat.add("EveryField", "Event", None, {a: a for a in fields}, fields)  # type: ignore[arg-type]


EVERY = _every_field_type()
ABSENT = object()  # "leave the attribute out"
intern(unique("first"))  # so that 0, below, does not get key id 0 in a fresh process
for _v in (*range(64), "on", "off", None, ("a", 1)):
    intern(_v)


class Level(IntEnum):
    LOW = 0
    HIGH = 1


#: Any value an attribute may hold: every kind the encoder tells apart, and absence.
ANY_VALUE = st.one_of(
    st.just(ABSENT), st.none(), st.booleans(), st.integers(-3, 70),
    st.sampled_from([2**32 - 1, 2**32, -(2**53), 2**53, 2**53 + 1, 2**60, -(2**60) - 1, 10**400]),
    st.floats(), st.sampled_from(["on", "off", "never interned", ("a", 1)]),
    st.sampled_from([Level.HIGH, Decimal("1.5"), Fraction(1, 3), frozenset()]),
    st.lists(st.integers(), max_size=2),  # unhashable
)
#: How one attribute's values look over a run: a column of one kind (the fast paths),
#: mostly one kind with outliers, absent everywhere or here and there, or anything.
COLUMN = st.sampled_from([
    st.integers(0, 63), st.integers(0, 2**32 - 1), st.floats(), st.floats(allow_nan=False), st.booleans(),
    st.sampled_from(["on", "off"]), st.text(max_size=2), st.just(ABSENT), st.sampled_from([ABSENT, 1, 2.5]),
    st.sampled_from([ABSENT, 1, 2]),
    st.one_of(st.integers(-3, 70), st.sampled_from([2**53 + 1, 2**60, 10**400])),
    st.one_of(st.integers(0, 63), ANY_VALUE), st.one_of(st.floats(), ANY_VALUE), ANY_VALUE,
])


@st.composite
def event_runs(draw: st.DrawFn) -> list[Event]:
    """Runs of events of one type (some shorter than the column encoder takes), with extras."""
    events: list[Event] = []
    for _ in range(draw(st.integers(1, 4))):
        et = draw(st.sampled_from([EVERY, GPIO, MIDI]))
        columns = {attr: draw(COLUMN) for attr in et.native}
        extra = draw(st.booleans())
        for _ in range(draw(st.integers(1, 24))):
            args = {attr: v for attr, col in columns.items() if (v := draw(col)) is not ABSENT}
            if extra:
                args["extra"] = [len(events)]  # no native field: travels in the side table only
            events.append(Event(et, args, ts_ns=draw(st.integers(0, 2**64 - 1))))
    return events


def _popped(bus: Bus, n: int) -> tuple[list[bytes], list[Event]]:
    """The next n popped slots with source and ref zeroed (they differ by design), and their events."""
    batch = bus.pop(max_events=n, timeout=0)
    assert batch.n == n
    raw = bytes(B.ffi.buffer(batch.slots, n * B.SLOT_SIZE))
    slots = []
    for i in range(n):
        s = bytearray(raw[i * B.SLOT_SIZE:(i + 1) * B.SLOT_SIZE])
        source, ref = B.SLOT_OFFSETS["source"], B.SLOT_OFFSETS["ref"]
        s[source:source + 2] = bytes(2)
        s[ref:ref + 4] = bytes(4)
        slots.append(bytes(s))
    return slots, [batch.event(i) for i in range(n)]


def _dirty(producer: B.Producer, bus: Bus) -> None:
    """Leave every field of the producer's scratch slots non-zero (a stale slot must not leak)."""
    full = {"k0": "on", "k1": 7, "c": 0xFFFF, "n0": 1.5, "n1": -2.0, "n2": 3.0}
    assert producer.publish_batch([Event(EVERY, full, ts_ns=2**63) for _ in range(96)]) == 96
    assert bus.pop(max_events=96, timeout=0).n == 96


@settings(max_examples=300, deadline=None)
@given(event_runs())
def test_publish_batch_writes_the_slots_publish_writes(events: list[Event]) -> None:
    b = Bus(capacity=128)
    single, batched = b.producer("single"), b.producer("batched")
    _dirty(batched, b)
    assert all(single.publish(ev) for ev in events)
    want, _ = _popped(b, len(events))
    assert batched.publish_batch(events) == len(events)
    got, objs = _popped(b, len(events))
    for i, ev in enumerate(events):
        assert got[i] == want[i], (i, ev)
        assert objs[i] is ev  # extras and all: the very object, from the side table
    assert b.pending_refs == 0
    b.close()


def test_publish_batch_reads_any_mapping_and_never_writes_it() -> None:
    b = Bus(capacity=64)
    single, batched = b.producer("single"), b.producer("batched")
    proxies = [Event(GPIO, MappingProxyType({"pin": 3, "value": i}), ts_ns=i)  # type: ignore[arg-type]
               for i in range(10)]
    defaults = [Event(GPIO, defaultdict(int, pin=4), ts_ns=i) for i in range(10)]
    for events in (proxies, defaults):
        assert all(single.publish(ev) for ev in events)
        want, _ = _popped(b, len(events))
        assert batched.publish_batch(events) == len(events)
        assert _popped(b, len(events)) == (want, events)
    assert all(dict(ev.args) == {"pin": 4} for ev in defaults)  # no "value" or "name" made up
    b.close()


@pytest.mark.parametrize("ts_ns", [-1, 2**64, 1.5])
def test_publish_batch_refuses_a_bad_timestamp_as_publish_does(bus: Bus, ts_ns: object) -> None:
    p = bus.producer("p")
    events = [gpio(1, i) for i in range(8)]
    events[5] = Event(GPIO, {"pin": 1, "value": 5}, ts_ns=ts_ns)  # type: ignore[arg-type]
    with pytest.raises(B.struct.error) as single:
        p.publish(events[5])
    with pytest.raises(B.struct.error) as batched:
        p.publish_batch(events)
    assert str(batched.value) == str(single.value)
    assert bus.pending_refs == 0  # nothing published, no entry left behind
    assert bus.stats()["p"].published == 0


def test_publish_batch_refs_skip_zero_and_held_handles_when_the_counter_wraps(bus: Bus) -> None:
    p = bus.producer("p", shared=True)
    held = [gpio(1, 0), gpio(1, 1)]
    assert p.publish_batch(held) == 2  # refs 1 and 2, still in the ring
    bus._core.counter = itertools.count(2**32 - 3)  # the next refs would be ..., 0, 1, 2, 3
    events = [gpio(2, i) for i in range(6)]
    assert p.publish_batch(events) == 6
    batch = bus.pop(timeout=0)
    assert [batch.event(i) for i in range(batch.n)] == held + events
    assert all(batch.event(i) is ev for i, ev in enumerate(held + events))
    assert bus.pending_refs == 0


# ------------------------------------------------------------ concurrency


@pytest.mark.parametrize("shared", [False, True])
def test_flood_from_two_threads_loses_or_duplicates_nothing(shared: bool) -> None:
    capacity = 64
    per_thread = 10 * capacity
    b = Bus(capacity=capacity)
    producers = [b.producer("shared", shared=True)] * 2 if shared else [b.producer(f"t{i}") for i in range(2)]
    injected: list[list[Event]] = [[Event(GPIO, {"pin": t, "value": i}) for i in range(per_thread)]
                                   for t in range(2)]
    accepted = [0, 0]

    def flood(t: int) -> None:
        # chunks of 3 events: even chunks in one publish_batch, odd ones one by one
        for c, j in enumerate(range(0, per_thread, 3)):
            chunk = injected[t][j:j + 3]
            if c % 2 == 0:
                accepted[t] += producers[t].publish_batch(chunk)
            else:
                accepted[t] += sum(producers[t].publish(ev) for ev in chunk)

    threads = [threading.Thread(target=flood, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    popped: list[Event] = []
    while any(th.is_alive() for th in threads):
        popped.extend(b.pop(timeout=0.001))
    for th in threads:
        th.join(WATCHDOG)
    while batch := b.pop(timeout=0):
        popped.extend(batch)

    stats = b.stats()
    dropped = sum(s.dropped for s in stats.values())
    published = sum(s.published for s in stats.values())
    assert dropped + len(popped) == 2 * per_thread
    assert published == len(popped) == sum(accepted)
    assert b.pending_refs == 0
    ids = {id(ev) for evs in injected for ev in evs}
    assert len({id(ev) for ev in popped}) == len(popped)  # no duplicates
    assert all(id(ev) in ids for ev in popped)             # only the very objects published
    for t in range(2):  # each thread's events keep their order
        values = [ev.args["value"] for ev in popped if ev.args["pin"] == t]
        assert values == sorted(values)
    b.close()


def _pop_in_thread(b: Bus, timeout: float | None) -> tuple[threading.Thread, list[B.Batch], threading.Event]:
    result: list[B.Batch] = []
    entered = threading.Event()

    def consume() -> None:
        entered.set()
        batch = b.pop(timeout=timeout)
        result.append(batch)
        result.append(list(batch))  # type: ignore[arg-type]

    th = threading.Thread(target=consume)
    th.start()
    entered.wait(WATCHDOG)
    return th, result, entered


def test_blocking_pop_wakes_on_publish(bus: Bus) -> None:
    p = bus.producer("p", shared=True)
    th, result, _ = _pop_in_thread(bus, None)
    th.join(0.05)  # give it a chance to go to sleep; correctness does not depend on it
    assert not result  # nothing published yet, so it cannot have returned
    ev = gpio()
    assert p.publish(ev)
    th.join(WATCHDOG)
    assert not th.is_alive()
    assert result[1] == [ev] and result[1][0] is ev


def test_blocking_pop_wakes_on_wake(bus: Bus) -> None:
    bus.producer("p")
    th, result, _ = _pop_in_thread(bus, None)
    th.join(0.05)
    assert not result
    bus.wake()
    th.join(WATCHDOG)
    assert not th.is_alive()
    assert result[0].n == 0


def test_wake_before_pop_ends_the_next_pop(bus: Bus) -> None:
    bus.wake()
    assert bus.pop(timeout=None).n == 0  # would block forever without the pending wake


def test_pop_with_timeout_returns_an_empty_batch(bus: Bus) -> None:
    bus.producer("p")
    assert bus.pop(timeout=0.01).n == 0
    assert list(bus.pop(timeout=0)) == []


def test_close_wakes_a_blocked_consumer(bus: Bus) -> None:
    th, result, _ = _pop_in_thread(bus, None)
    th.join(0.05)
    bus.close()
    th.join(WATCHDOG)
    assert not th.is_alive()
    assert result[0].n == 0


# ------------------------------------------------------------ load generator (pihub.devtools)


@pytest.mark.parametrize("shared", [False, True])
def test_loadgen_threads_feed_the_bus(shared: bool) -> None:
    b = Bus(capacity=256)
    intern(5)
    lg = loadgen.start(b, gpio(5, 0), events_per_thread=5000, threads=2, batch=16, shared=shared, retry=True)
    assert lg.running
    got: list[Event] = []
    while len(got) < 10000:
        got.extend(b.pop(timeout=WATCHDOG))
    assert lg.join() == 10000
    assert lg.join() == 10000  # a second join only repeats the count
    assert not lg.running
    assert b.pending_refs == 0
    names = {p.name for p in lg.producers}
    assert names == ({"loadgen"} if shared else {"loadgen-0", "loadgen-1"})
    assert all(p.shared is shared for p in lg.producers)
    assert {e.source for e in got} == names
    assert sorted(e.args["value"] for e in got) == sorted(list(range(5000)) * 2)
    assert all(e.args["pin"] == 5 and e.type is GPIO for e in got)
    if not shared:
        for name in names:
            values = [e.args["value"] for e in got if e.source == name]
            assert values == list(range(5000))
    b.close()


def test_loadgen_without_retry_drops_and_counts() -> None:
    b = Bus(capacity=16)
    intern(5)
    lg = loadgen.start(b, gpio(5, 0), events_per_thread=1000, batch=4)
    accepted = lg.join()
    assert accepted == 16  # nobody popped: exactly one ring's worth
    assert b.stats()["loadgen-0"] == B.ProducerStats(16, 1000 - 16, 16, 16)
    with pytest.raises(ValueError, match="never interned"):
        loadgen.start(b, gpio(unique(), 0), events_per_thread=1)
    b.close()


def test_loadgen_producers_cannot_be_shared_by_two_runs_and_close_stops_them() -> None:
    b = Bus(capacity=16)
    intern(5)
    lg = loadgen.start(b, gpio(5, 0), events_per_thread=10**12, retry=True)
    with pytest.raises(ValueError, match="in use"):
        loadgen.start(b, gpio(5, 0), events_per_thread=1)
    assert wait_for(lambda: b.stats()["loadgen-0"].depth == 16, WATCHDOG)  # full: it only retries now
    b.close()  # stops and joins it; without that this test would never end
    assert not lg.running
    assert lg.join() == 16
    with pytest.raises(RuntimeError, match="closed"):
        loadgen.start(b, gpio(5, 0), events_per_thread=1)


def test_loadgen_producers_are_lent_again_once_joined() -> None:
    b = Bus(capacity=16)
    intern(5)
    assert loadgen.start(b, gpio(5, 0), events_per_thread=3).join() == 3
    assert loadgen.start(b, gpio(5, 0), events_per_thread=3).join() == 3  # the same producer, given back
    assert b.stats()["loadgen-0"].published == 6
    b.close()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threads": 0}, "threads must be in range 1..1024, not 0"),
    ({"threads": 1025}, "threads must be in range 1..1024, not 1025"),
    ({"batch": 0}, "batch must be in range 1..4096, not 0"),
    ({"batch": 4097}, "batch must be in range 1..4096, not 4097"),
    ({"events_per_thread": -1}, "events_per_thread must be >= 0, not -1"),
])
def test_loadgen_arguments_are_checked(bus: Bus, kwargs: dict[str, int], message: str) -> None:
    args = {"events_per_thread": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        loadgen.start(bus, gpio(), **args)
    assert bus.stats() == {}  # nothing was lent


def test_loadgen_refuses_a_producer_of_the_other_kind(bus: Bus) -> None:
    intern(5)
    bus.producer("loadgen-0", shared=True)
    with pytest.raises(ValueError, match="shared=True"):
        loadgen.start(bus, gpio(5, 0), events_per_thread=1)  # wants an _sp producer loadgen-0
    lg = loadgen.start(bus, gpio(5, 0), events_per_thread=1, shared=True, name="loadgen-0")
    assert lg.join() == 1
