"""The bus: pihub's only Python face of the native event ring (``pihub._native``).

Producers (backend threads, the hub, HTTP workers, C threads) publish events into
per-producer rings; the dispatcher thread pops them in batches. Everything that crosses
the ring is a 64-byte ``struct ph_event`` slot (``native/ph_event.h``); a Python
:class:`~pihub.events.Event` travels as a slot whose ``ref`` field is a handle into this
bus's *side table*, so the consumer gets the very same object back, while the slot's
native fields let the C matcher test it without touching Python.

Import-time check: the extension's compiled ABI version, the ``PH_ABI_VERSION`` of the
headers it was built from and :data:`ABI_VERSION` here must agree, and the slot layout must
be the one this module packs; otherwise importing this module raises
:class:`~pihub.errors.NativeMismatch` saying how to rebuild.

Slot encoding (:func:`encode`), per attribute of ``event.type.native``:

* ``key0``/``key1``: :func:`lookup` of the value (never :func:`intern`, so event data
  cannot grow the intern table; a value never interned gets :data:`UNKNOWN_KEY`, which
  equals no rule constant); an unhashable value is *opaque*.
* ``num0..num2``: the value as a double when it is an int, float or bool that a double
  represents exactly (NaN and infinities included); anything else is opaque.
* ``code``: an int in 0..2**32-1; anything else is opaque.
* an attribute missing from ``event.args`` sets neither presence bit (absent).

Decoding a slot with ``ref == 0`` (C producers, :meth:`Producer.publish_raw`) rebuilds an
Event from the catalogue type and the native fields: keys through :func:`value_of`, numbers
that are integral (and within 2**53) as ``int``, others as ``float``; the producer's name
becomes ``Event.source``. A key id that was never interned leaves its attribute out.

Thread contract (as the native names say): a producer made with ``shared=False`` is used
by one thread at a time; ``shared=True`` by any number of threads; :meth:`Bus.pop` by one
consumer thread. Publishing never blocks: a full ring refuses the event, counts it in the
producer's ``dropped`` stat, and releases its side-table entry at once.
"""

from __future__ import annotations

import cmath
import itertools
import math
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from pihub.errors import NativeMismatch
from pihub.events import CATALOGUE, FIELD_INDEX, Event, EventType

#: The native ABI this module is written for (``PH_ABI_VERSION`` in native/ph_event.h).
ABI_VERSION = 1
#: How to fix a missing or stale extension.
REBUILD_HINT = "rebuild it with `make build` (that is, `.venv/bin/pip install -e .` from the repository root)"
#: The key id of a value that was never interned: equal to no rule constant.
UNKNOWN_KEY = 0xFFFFFFFF
#: Bytes per slot.
SLOT_SIZE = 64
#: ``struct ph_event`` as the struct module sees it (native byte order, no padding).
SLOT = struct.Struct("=QIHHIIIIddd8s")
#: Offsets of the slot fields this module reads or writes, checked against the build.
SLOT_OFFSETS = {"ts_ns": 0, "type": 8, "source": 12, "present": 14, "key": 16, "ref": 24, "code": 28,
                "num": 32, "payload": 56}

_F_CODE = FIELD_INDEX["code"]
_F_NUM0 = FIELD_INDEX["num0"]
_OPAQUE_SHIFT = 8
_REF_WORD = SLOT_OFFSETS["ref"] // 4  # index of ref among a slot's 32-bit words
_WORDS = SLOT_SIZE // 4
_MAX_EXACT = 2**53
_CODE_MAX = 0xFFFFFFFF


def check_abi(native: int, cdef: int, expected: int = ABI_VERSION) -> None:
    """Check that the extension and this module were built for the same ABI.

    Args:
        native: ``lib.ph_abi_version()``, the version compiled into the C code.
        cdef: ``lib.PH_ABI_VERSION``, the version in the headers cffi read at build time.
        expected: the version this module is written for.

    Raises:
        NativeMismatch: naming the versions and the rebuild command.
    """
    if native == cdef == expected:
        return
    raise NativeMismatch(
        f"pihub._native is a stale build: its C code has ABI version {native} and its headers "
        f"version {cdef}, but pihub.bus needs version {expected}; {REBUILD_HINT}")


def check_layout(sizeof: int, offsets: dict[str, int]) -> None:
    """Check that ``struct ph_event`` has the layout :data:`SLOT` packs.

    Args:
        sizeof: the compiled ``sizeof(struct ph_event)``, in bytes.
        offsets: compiled field offsets in bytes, by field name.

    Raises:
        NativeMismatch: naming the first difference and the rebuild command.
    """
    if sizeof != SLOT.size:
        raise NativeMismatch(f"struct ph_event is {sizeof} bytes in pihub._native, not {SLOT.size}; "
                             f"{REBUILD_HINT}")
    for name, want in SLOT_OFFSETS.items():
        if offsets.get(name) != want:
            raise NativeMismatch(f"struct ph_event.{name} is at offset {offsets.get(name)} in "
                                 f"pihub._native, not {want}; {REBUILD_HINT}")


try:
    from pihub._native import ffi, lib
except ImportError as exc:
    raise NativeMismatch(f"pihub._native cannot be imported ({exc}); {REBUILD_HINT}") from exc

check_abi(lib.ph_abi_version(), lib.PH_ABI_VERSION)
check_layout(ffi.sizeof("struct ph_event"),
             {name: ffi.offsetof("struct ph_event", name) for name in SLOT_OFFSETS})

__all__ = [
    "ABI_VERSION", "UNKNOWN_KEY", "Batch", "Bus", "LoadGen", "Producer", "ProducerStats", "check_abi",
    "check_layout",
    "decode", "encode", "ffi", "intern", "lib", "lookup", "new_slots", "value_of",
]

# ---------------------------------------------------------------------- interning

_key_ids: dict[Any, int] = {}
_key_get = _key_ids.get
_key_values: list[Any] = []
_intern_lock = threading.Lock()


def _is_nan(value: Any) -> bool:
    """True for the NaN numbers (the values not equal to themselves)."""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, complex):
        return cmath.isnan(value)
    if isinstance(value, Decimal):
        return value.is_nan()
    return False


def intern(value: Any) -> int:
    """The key id of ``value``, adding it to the intern table if new.

    Ids follow Python equality: values that are ``==`` with equal hashes (``1``, ``1.0``,
    ``True``) share an id; ``"1"`` gets another. Use it for rule constants and for the
    names C producers put in key fields; event data goes through :func:`lookup`. The table
    is process-wide and never shrinks.

    Args:
        value: a hashable value other than NaN.

    Returns:
        Its id, 0..2**32-2.

    Raises:
        TypeError: ``value`` is unhashable.
        ValueError: ``value`` is NaN (not equal to itself, so no event could match it).
    """
    kid = _key_ids.get(value)
    if kid is not None:
        return kid
    if _is_nan(value):
        raise ValueError(f"{value!r} is not internable: it is not equal to itself")
    with _intern_lock:
        kid = _key_ids.get(value)
        if kid is None:
            kid = len(_key_values)
            if kid >= UNKNOWN_KEY:
                raise OverflowError("the intern table is full (2**32 - 1 values)")
            _key_values.append(value)  # first, so value_of(kid) works once kid is visible
            _key_ids[value] = kid
    return kid


def lookup(value: Any) -> int:
    """The key id of ``value`` if it was interned, else :data:`UNKNOWN_KEY`; never inserts.

    Raises:
        TypeError: ``value`` is unhashable.
    """
    return _key_ids.get(value, UNKNOWN_KEY)


def value_of(key_id: int) -> Any:
    """The value interned first under ``key_id`` (``value_of(intern(True))`` may be ``1``).

    Raises:
        KeyError: no value has that id.
    """
    if 0 <= key_id < len(_key_values):
        return _key_values[key_id]
    raise KeyError(f"no interned value has key id {key_id}")


# ----------------------------------------------------------------- slot encoding

_Plan = tuple[tuple[str, int, int], ...]
_plans: dict[int, tuple[EventType, _Plan]] = {}
_MISSING = object()
_pack_into = SLOT.pack_into


def _plan(et: EventType) -> _Plan:
    """``(attribute, field index, presence bit)`` of a type's native layout, cached per type object."""
    entry = _plans.get(id(et))
    if entry is None or entry[0] is not et:
        entry = (et, tuple((attr, FIELD_INDEX[f], 1 << FIELD_INDEX[f]) for attr, f in et.native.items()))
        _plans[id(et)] = entry
    return entry[1]


def _as_double(value: Any) -> float | None:
    """``value`` as a double when it is an int/float/bool a double holds exactly, else None."""
    t = type(value)
    if t is float:
        return value
    if t is int or t is bool:
        if -_MAX_EXACT <= value <= _MAX_EXACT:
            return float(value)
    elif isinstance(value, float):
        return float(value)
    elif not isinstance(value, int):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if x == value else None


def _native_values(args: dict[str, Any], plan: _Plan) -> tuple[int, list[Any]]:
    """``(present bits, [key0, key1, code, num0, num1, num2])`` of an event's ``args``."""
    get = args.get
    vals: list[Any] = [0, 0, 0, 0.0, 0.0, 0.0]
    present = 0
    for attr, f, bit in plan:
        v = get(attr, _MISSING)
        if v is _MISSING:
            continue
        if f < _F_CODE:
            try:
                vals[f] = _key_get(v, UNKNOWN_KEY)
            except TypeError:
                present |= bit << _OPAQUE_SHIFT
                continue
        elif f == _F_CODE:
            if isinstance(v, int) and 0 <= v <= _CODE_MAX:
                vals[f] = int(v)
            else:
                present |= bit << _OPAQUE_SHIFT
                continue
        else:
            t = type(v)
            if t is float or (t is int or t is bool) and -_MAX_EXACT <= v <= _MAX_EXACT:
                vals[f] = v  # the struct module converts int and bool to double itself
            else:
                x = _as_double(v)
                if x is None:
                    present |= bit << _OPAQUE_SHIFT
                    continue
                vals[f] = x
        present |= bit
    return present, vals


def _pack_event(buf: Any, offset: int, event: Event, ref: int) -> None:
    """Write ``event`` as a slot with ``ref`` at byte ``offset`` of ``buf`` (source 0)."""
    present, v = _native_values(event.args, _plan(event.type))
    _pack_into(buf, offset, event.ts_ns, event.type.id, 0, present, v[0], v[1], ref, v[2], v[3], v[4], v[5],
               b"")


def _fields(event: Event, ref: int) -> tuple[Any, ...]:
    """The :data:`SLOT` values of ``event`` (source 0, empty payload)."""
    present, v = _native_values(event.args, _plan(event.type))
    return (event.ts_ns, event.type.id, 0, present, v[0], v[1], ref, v[2], v[3], v[4], v[5], b"")


def _check_lossless(event: Event, fields: tuple[Any, ...]) -> None:
    """Raise ValueError unless a ref-less slot carries every attribute of ``event``."""
    et = event.type
    native = et.native
    for attr in event.args:
        if attr not in native:
            raise ValueError(f"{et.name}.{attr} has no native field, so a slot without a ref would lose "
                             f"it; publish the Event instead")
    present = fields[3]
    for attr, f, _bit in _plan(et):
        if present >> (_OPAQUE_SHIFT + f) & 1:
            raise ValueError(f"{et.name}.{attr} = {event.args[attr]!r} does not fit field {native[attr]}; "
                             f"publish the Event instead")
        if f < _F_CODE and present >> f & 1 and fields[4 + f] == UNKNOWN_KEY:
            raise ValueError(f"{et.name}.{attr} = {event.args[attr]!r} was never interned; intern() it "
                             f"before encoding a slot without a ref")


def _slot_buffer(slot: Any, nslots: int) -> Any:
    """A writable buffer over the first ``nslots`` slots of ``slot`` (cdata or buffer)."""
    if isinstance(slot, ffi.CData):
        return ffi.buffer(slot, nslots * SLOT_SIZE)
    view = memoryview(slot)
    if view.nbytes < nslots * SLOT_SIZE:
        raise ValueError(f"buffer holds {view.nbytes // SLOT_SIZE} slots, need {nslots}")
    return view


def encode(event: Event, slot: Any, index: int = 0, *, ref: int = 0) -> None:
    """Write ``event`` into slot ``index`` of ``slot`` (see the module docstring).

    With ``ref == 0`` the slot is the event's only carrier (a pre-encoded slot for
    :meth:`Producer.publish_raw`, a load-generator template), so it must be lossless.

    Args:
        event: the event; ``event.ts_ns`` becomes the slot's ``ts_ns``.
        slot: a ``struct ph_event *`` / ``struct ph_event[]`` cdata (:func:`new_slots`) or any
            writable buffer of at least ``64 * (index + 1)`` bytes.
        index: which slot of ``slot`` to write, 0-based.
        ref: the side-table handle to store, 0 for none.

    Raises:
        ValueError: ``ref == 0`` and an attribute has no native field, is opaque, or is a
            key value never interned; or the buffer is too small.
    """
    fields = _fields(event, ref)
    if ref == 0:
        _check_lossless(event, fields)
    SLOT.pack_into(_slot_buffer(slot, index + 1), index * SLOT_SIZE, *fields)


def _decode(buf: Any, offset: int, names: Sequence[str]) -> Event:
    """The Event of the slot at byte ``offset`` of ``buf``; ``names`` maps producer ids to names."""
    (ts_ns, type_id, source_id, present, k0, k1, _ref, code, n0, n1, n2,
     _payload) = SLOT.unpack_from(buf, offset)
    if not 1 <= type_id <= len(CATALOGUE):
        raise ValueError(f"slot has unknown event type id {type_id}")
    et = CATALOGUE.by_id(type_id)
    args: dict[str, Any] = {}
    for attr, f, _bit in _plan(et):
        if not present >> f & 1 or present >> (_OPAQUE_SHIFT + f) & 1:
            continue
        if f < _F_CODE:
            kid = k1 if f else k0
            if kid < len(_key_values):
                args[attr] = _key_values[kid]
        elif f == _F_CODE:
            args[attr] = code
        else:
            x = n0 if f == _F_NUM0 else n1 if f == _F_NUM0 + 1 else n2
            args[attr] = int(x) if x.is_integer() and -_MAX_EXACT <= x <= _MAX_EXACT else x
    return Event(et, args, ts_ns, names[source_id] if source_id < len(names) else f"producer {source_id}")


def decode(slot: Any, index: int = 0, *, source: str | None = None) -> Event:
    """A new Event rebuilt from the native fields of slot ``index`` (its ref is ignored).

    Args:
        slot: cdata or buffer, as for :func:`encode`.
        index: which slot, 0-based.
        source: ``Event.source`` to give it; ``"producer <id>"`` when None.

    Raises:
        ValueError: the slot's type id is not in the catalogue.
    """
    buf = ffi.buffer(slot, (index + 1) * SLOT_SIZE) if isinstance(slot, ffi.CData) else slot
    event = _decode(buf, index * SLOT_SIZE, ())
    if source is not None:
        event.source = source
    return event


def new_slots(n: int) -> Any:
    """A zeroed ``struct ph_event[n]`` cdata, for :func:`encode` and :meth:`Producer.publish_raw`."""
    return ffi.new("struct ph_event[]", n)


# -------------------------------------------------------------------------- bus


class ProducerStats(NamedTuple):
    """Counters of one producer's ring (a snapshot).

    Attributes:
        published: events accepted since the producer was added.
        dropped: events refused because its ring was full.
        depth: events waiting in its ring now.
        capacity: events its ring holds at most.
    """

    published: int
    dropped: int
    depth: int
    capacity: int


class _Core:
    """What a bus, its producers and its batches share: the native handle and the side table.

    Kept apart from :class:`Bus` so that producers do not reference the bus (no cycle: the
    native bus is freed as soon as the bus and its producers are unreachable, and never
    while a native call on it is running, since the call holds a reference).
    """

    __slots__ = ("closed", "counter", "names", "ptr", "table")

    def __init__(self, ptr: Any) -> None:
        self.ptr = ptr
        self.table: dict[int, Event] = {}
        self.counter = itertools.count(1)
        self.names: list[str] = []
        self.closed = False

    def new_ref(self, event: Event) -> int:
        """Put ``event`` in the side table; returns its handle, 1..2**32-1."""
        table = self.table
        while True:
            ref = next(self.counter) & 0xFFFFFFFF
            if ref and ref not in table:
                table[ref] = event
                return ref


class Producer:
    """One producer's ring on the bus; made by :meth:`Bus.producer`.

    Attributes:
        name: the producer's name (its key in :meth:`Bus.stats`, ``Event.source`` of its
            decoded slots).
        id: its native producer id (the ``source`` field of its slots).
        shared: True when any number of threads may publish through it at once (the
            native ``_mp`` pushes); False when one thread at a time does (``_sp``).
    """

    __slots__ = ("_buf", "_cbuf", "_core", "_local", "_push1", "_pushn", "id", "name", "shared")

    def __init__(self, core: _Core, name: str, pid: int, shared: bool) -> None:
        self.name = name
        self.id = pid
        self.shared = shared
        self._core = core
        self._push1 = lib.ph_push_mp if shared else lib.ph_push_sp
        self._pushn = lib.ph_push_batch_mp if shared else lib.ph_push_batch_sp
        self._buf: Any = None
        self._cbuf: Any = None
        self._local = threading.local() if shared else None

    def __repr__(self) -> str:
        return f"<Producer {self.name!r} id={self.id}{' shared' if self.shared else ''}>"

    def _scratch(self, n: int) -> tuple[Any, Any]:
        """(writable buffer, cdata) of at least n slots, private to this producer/thread."""
        owner = self._local if self.shared else self
        cbuf = getattr(owner, "_cbuf", None)
        if cbuf is None or len(cbuf) < n:
            cbuf = ffi.new("struct ph_event[]", max(n, 1))
            owner._cbuf = cbuf
            owner._buf = ffi.buffer(cbuf)
        return owner._buf, cbuf

    def publish(self, event: Event) -> bool:
        """Publish one event; never blocks.

        Returns:
            True when the ring took it; False when it was full (counted as dropped) or the
            bus is closed.
        """
        core = self._core
        if core.closed:
            return False
        buf, cbuf = self._scratch(1)
        ref = core.new_ref(event)
        try:
            _pack_event(buf, 0, event, ref)
            if self._push1(core.ptr, self.id, cbuf):
                return True
        except BaseException:
            core.table.pop(ref, None)
            raise
        core.table.pop(ref, None)
        return False

    def publish_batch(self, events: Sequence[Event]) -> int:
        """Publish several events with one native call; never blocks.

        Returns:
            How many were taken: always the first ones, ``events[:k]``; the rest were
            dropped (counted) or the bus is closed (0).
        """
        core = self._core
        n = len(events)
        if n == 0 or core.closed:
            return 0
        buf, cbuf = self._scratch(n)
        table = core.table
        counter = core.counter
        refs: list[int] = []
        last_type: EventType | None = None
        plan: _Plan = ()
        offset = 0
        try:
            for event in events:
                ref = next(counter) & 0xFFFFFFFF
                if ref and ref not in table:
                    table[ref] = event
                else:
                    ref = core.new_ref(event)
                refs.append(ref)
                et = event.type
                if et is not last_type:
                    plan, last_type = _plan(et), et
                present, v = _native_values(event.args, plan)
                _pack_into(buf, offset, event.ts_ns, et.id, 0, present, v[0], v[1], ref, v[2], v[3], v[4],
                           v[5], b"")
                offset += SLOT_SIZE
            k = self._pushn(core.ptr, self.id, cbuf, n)
        except BaseException:
            for ref in refs:
                core.table.pop(ref, None)
            raise
        if k < n:
            for ref in refs[k:]:
                core.table.pop(ref, None)
        return k

    def publish_raw(self, slots: Any, n: int) -> int:
        """Publish ``n`` pre-encoded slots (:func:`encode` with ``ref=0``) in one native call.

        For high-rate producers that encode once and publish many times. Their ``source``
        field is stamped by the bus; the caller's buffer is not modified.

        Args:
            slots: a cdata from :func:`new_slots`, or any buffer of at least ``64 * n`` bytes.
            n: how many slots, from the first.

        Returns:
            How many were taken (the first ones); the rest were dropped and counted.

        Raises:
            ValueError: a slot carries a ref (refs belong to the bus's own side table), or
                the buffer is too small.
        """
        core = self._core
        if n <= 0 or core.closed:
            return 0
        if isinstance(slots, ffi.CData):
            if ffi.typeof(slots).kind == "array" and len(slots) < n:
                raise ValueError(f"buffer holds {len(slots)} slots, need {n}")
            cdata = slots
            words = memoryview(ffi.buffer(slots, n * SLOT_SIZE)).cast("I")
        else:
            view = memoryview(slots).cast("B")
            if view.nbytes < n * SLOT_SIZE:
                raise ValueError(f"buffer holds {view.nbytes // SLOT_SIZE} slots, need {n}")
            cdata = ffi.from_buffer("struct ph_event[]", view)
            words = view[: n * SLOT_SIZE].cast("I")
        if any(words[_REF_WORD::_WORDS].tolist()):
            raise ValueError("pre-encoded slots must have ref == 0 (encode them with ref=0)")
        return self._pushn(core.ptr, self.id, cdata, n)


class Batch:
    """The events of one :meth:`Bus.pop`, valid until the next pop on the same bus.

    The slots stay in a reusable native buffer: ``slots`` is a ``struct ph_event *`` to hand
    to ``lib.ph_match_batch`` without copying, ``n`` how many are valid. The side-table
    entries of the batch were released by the pop (the events are held here instead), so
    nothing leaks when events are never decoded.

    Attributes:
        slots: cdata pointer to the first popped slot.
        n: number of popped events.
    """

    __slots__ = ("_buf", "_names", "_objs", "_words", "n", "slots")

    def __init__(self, capacity: int, names: list[str]) -> None:
        self.slots = ffi.new("struct ph_event[]", capacity)
        self.n = 0
        self._buf = ffi.buffer(self.slots)
        self._words = memoryview(self._buf).cast("I")
        self._objs: dict[int, Event] | None = None
        self._names = names

    @property
    def capacity(self) -> int:
        """Slots the buffer holds."""
        return len(self.slots)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Event]:
        return (self.event(i) for i in range(self.n))

    def __repr__(self) -> str:
        return f"<Batch n={self.n}>"

    def event(self, i: int) -> Event:
        """Event ``i``: the published object when the slot has a ref, else decoded from the slot.

        Raises:
            IndexError: ``i`` is not in ``0..n-1``.
        """
        if not 0 <= i < self.n:
            raise IndexError(f"batch index {i} out of range 0..{self.n - 1}")
        objs = self._objs
        if objs is not None:
            ev = objs.get(i)
            if ev is not None:
                return ev
        return _decode(self._buf, i * SLOT_SIZE, self._names)

    def source(self, i: int) -> str:
        """Name of the producer that published event ``i``."""
        source_id = SLOT.unpack_from(self._buf, i * SLOT_SIZE)[2]
        names = self._names
        return names[source_id] if source_id < len(names) else f"producer {source_id}"

    def _take_refs(self, table: dict[int, Event]) -> None:
        """Move this batch's events out of the side table (once per pop)."""
        n = self.n
        refs = self._words[_REF_WORD : n * _WORDS : _WORDS].tolist()
        if refs.count(0) == n:
            self._objs = None
            return
        pop = table.pop
        self._objs = {i: ev for i, r in enumerate(refs) if r and (ev := pop(r, None)) is not None}



class LoadGen:
    """C producer threads started by :meth:`Bus.loadgen` (no Python runs in them).

    Attributes:
        producers: the producers they push through (one per thread, or one shared).
        events_per_thread: events each thread pushes.
    """

    __slots__ = ("_accepted", "_bus", "_handle", "events_per_thread", "producers")

    def __init__(self, bus: Bus, handle: Any, producers: list[Producer], events_per_thread: int) -> None:
        self.producers = producers
        self.events_per_thread = events_per_thread
        self._handle = handle
        self._bus = bus
        self._accepted: int | None = None

    @property
    def running(self) -> bool:
        """True until :meth:`join` has returned."""
        return self._accepted is None

    def stop(self) -> None:
        """Ask the threads to stop after their current batch; returns at once."""
        if self._accepted is None:
            lib.ph_loadgen_stop(self._handle)

    def join(self) -> int:
        """Wait for the threads (GIL released); returns how many events the bus accepted."""
        if self._accepted is None:
            self._accepted = int(lib.ph_loadgen_join(self._handle))
            self._handle = None
            self._bus._loadgen_done(self)
        return self._accepted


class Bus:
    """The event bus: one bounded native ring per producer, one consumer.

    Args:
        capacity: events per producer ring, rounded up to a power of two (1..2**24).
        max_producers: producers the bus can hold (1..4096).

    Raises:
        ValueError: an argument out of range.
        MemoryError: the native bus could not be allocated.
    """

    def __init__(self, capacity: int = 4096, max_producers: int = 64) -> None:
        if not 1 <= capacity <= 1 << 24:
            raise ValueError(f"capacity must be in range 1..{1 << 24}, not {capacity}")
        if not 1 <= max_producers <= 4096:
            raise ValueError(f"max_producers must be in range 1..4096, not {max_producers}")
        ptr = lib.ph_bus_new(capacity, max_producers)
        if ptr == ffi.NULL:
            raise MemoryError(f"cannot allocate a bus of {max_producers} rings of {capacity} events")
        self.capacity = max(2, 1 << (capacity - 1).bit_length())
        self.max_producers = max_producers
        self._core = _Core(ffi.gc(ptr, lib.ph_bus_free))
        self._producers: dict[str, Producer] = {}
        self._lock = threading.Lock()
        self._batch = Batch(256, self._core.names)
        self._loadgens: list[LoadGen] = []
        self._busy: set[int] = set()

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        return f"<Bus {state} capacity={self.capacity} producers={len(self._producers)}>"

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._core.closed

    @property
    def pending_refs(self) -> int:
        """Side-table entries held now: published Python events not yet popped."""
        return len(self._core.table)

    def producer(self, name: str, *, shared: bool = False) -> Producer:
        """The producer called ``name``, added on first use.

        Asking again for an existing name returns the same producer (a backend reopened
        after a failure keeps its ring and counters).

        Args:
            name: unique producer name.
            shared: True for a producer several threads publish through at once (HTTP
                workers, the hub); False for one owned by a single thread.

        Raises:
            ValueError: ``name`` exists with the other ``shared`` setting.
            RuntimeError: the bus is closed, or all ``max_producers`` are in use.
        """
        with self._lock:
            p = self._producers.get(name)
            if p is not None:
                if p.shared != shared:
                    raise ValueError(f"producer {name!r} already exists with shared={p.shared}")
                return p
            core = self._core
            if core.closed:
                raise RuntimeError(f"cannot add producer {name!r}: the bus is closed")
            pid = lib.ph_bus_add_producer(core.ptr)
            if pid < 0:
                raise RuntimeError(f"cannot add producer {name!r}: all {self.max_producers} producers of "
                                   f"the bus are in use")
            core.names.append(name)  # before any of its events can be popped
            intern(name)
            p = self._producers[name] = Producer(core, name, pid, shared)
            return p

    def pop(self, max_events: int = 256, timeout: float | None = None) -> Batch:
        """Pop up to ``max_events`` events, fairly across producers (consumer thread only).

        Sleeps in C with the GIL released (no spinning) until an event arrives,
        :meth:`wake` is called, or ``timeout`` passes. The returned :class:`Batch` is reused
        by the next pop.

        Args:
            max_events: most events to return (>= 1).
            timeout: seconds to wait at most; None waits until an event or a wake; 0 does
                not wait.

        Raises:
            ValueError: ``max_events`` < 1.
            RuntimeError: the bus is closed.
        """
        core = self._core
        if core.closed:
            raise RuntimeError("pop() on a closed bus")
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        batch = self._batch
        if max_events > len(batch.slots):
            batch = self._batch = Batch(max_events, core.names)
        if timeout is None or math.isinf(timeout):
            n = lib.ph_wait_pop_sc(core.ptr, batch.slots, max_events, -1)
        elif timeout <= 0:
            n = lib.ph_pop_sc(core.ptr, batch.slots, max_events)
        else:
            n = lib.ph_wait_pop_sc(core.ptr, batch.slots, max_events, max(1, int(timeout * 1e9)))
        batch.n = n
        # a popped ref was put in the table before its push, so an empty table means no refs
        if n and core.table:
            batch._take_refs(core.table)
        else:
            batch._objs = None
        return batch

    def wake(self) -> None:
        """End the consumer's current (or, if none, its next) blocking :meth:`pop`."""
        lib.ph_bus_wake(self._core.ptr)

    def stats(self) -> dict[str, ProducerStats]:
        """Counters of every producer, by name."""
        core = self._core
        out: dict[str, ProducerStats] = {}
        st = ffi.new("struct ph_producer_stats *")
        for pid, name in enumerate(list(core.names)):
            if lib.ph_bus_producer_stats(core.ptr, pid, st) == 0:
                out[name] = ProducerStats(int(st.published), int(st.dropped), int(st.depth),
                                          int(st.capacity))
        return out

    def loadgen(self, template: Event, *, events_per_thread: int, threads: int = 1, batch: int = 64,
                shared: bool = False, retry: bool = False, name: str = "loadgen") -> LoadGen:
        """Start C threads that push copies of ``template`` (benchmarks and tests).

        Thread i pushes ``events_per_thread`` copies in batches of ``batch`` through
        producer ``f"{name}-{i}"`` (or all through one shared producer ``name``), each copy
        with ``ts_ns`` = now and ``num0`` = its sequence number in the thread (so a type
        with an attribute in ``num0`` decodes it as 0, 1, 2, ...).

        Args:
            template: an event a slot carries losslessly (see :func:`encode` with ref 0).
            events_per_thread: events each thread pushes.
            threads: 1..1024.
            batch: events per native push, 1..4096.
            shared: one ``_mp`` producer for all threads instead of one ``_sp`` each.
            retry: retry a refused event (after yielding) instead of dropping it; refusals
                still count as drops.
            name: producer name (prefix).

        Raises:
            ValueError: bad arguments, or the producers are in use by a running load generator.
            OSError: the threads could not be started.
        """
        if not 1 <= threads <= 1024 or not 1 <= batch <= 4096 or events_per_thread < 0:
            raise ValueError("threads must be 1..1024, batch 1..4096 and events_per_thread >= 0")
        slot = ffi.new("struct ph_event *")
        encode(template, slot)
        names = [name] * threads if shared else [f"{name}-{i}" for i in range(threads)]
        producers = [self.producer(n, shared=shared) for n in dict.fromkeys(names)]
        ids = [self.producer(n, shared=shared).id for n in names]
        with self._lock:
            if self._busy.intersection(ids):
                raise ValueError(f"producers {sorted(set(names))} are in use by a running load generator")
            flags = (lib.PH_LOADGEN_MP if shared else 0) | (lib.PH_LOADGEN_RETRY if retry else 0)
            handle = lib.ph_loadgen_start(self._core.ptr, ffi.new("uint32_t[]", ids), threads, slot,
                                          events_per_thread, batch, flags)
            if handle == ffi.NULL:
                err = ffi.errno
                raise OSError(err, f"cannot start the load generator: {os.strerror(err)}")
            lg = LoadGen(self, handle, producers, events_per_thread)
            self._busy.update(ids)
            self._loadgens.append(lg)
        return lg

    def _loadgen_done(self, lg: LoadGen) -> None:
        with self._lock:
            self._busy.difference_update(p.id for p in lg.producers)
            if lg in self._loadgens:
                self._loadgens.remove(lg)

    def close(self) -> None:
        """Close the bus: stop load generators, wake the consumer, drop unpopped events.

        Afterwards :meth:`Producer.publish` returns False and :meth:`pop` raises. Stop the
        producers and the consumer first (the hub does); a publish racing with close is
        safe, its event is simply never delivered. Idempotent. The native memory goes when
        the bus and its producers are unreachable.
        """
        core = self._core
        with self._lock:
            if core.closed:
                return
            core.closed = True
            loadgens = list(self._loadgens)
        for lg in loadgens:
            lg.stop()
        for lg in loadgens:
            lg.join()
        lib.ph_bus_wake(core.ptr)
        core.table.clear()
