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

import itertools
import math
import struct
import sys
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from itertools import islice, pairwise, repeat
from operator import is_
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
_REF_MAX = 0xFFFFFFFF
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
    "ABI_VERSION", "UNKNOWN_KEY", "Batch", "Bus", "Producer", "ProducerStats", "check_abi",
    "check_layout",
    "decode", "encode", "ffi", "intern", "lib", "lookup", "new_slots", "value_of",
]

# ---------------------------------------------------------------------- interning

_key_ids: dict[Any, int] = {}
_key_get = _key_ids.get
_key_values: list[Any] = []
_intern_lock = threading.Lock()


#: Timeouts from this many seconds up (~292 years: int64 nanoseconds' range) wait as None does.
_FOREVER_S = 2**63 / 1e9


def _is_nan(value: Any) -> bool:
    """True for the NaN numbers (the values not equal to themselves)."""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, complex):
        return math.isnan(value.real) or math.isnan(value.imag)
    # decimal is looked up, not imported: a Decimal value means someone imported it already
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        return bool(value.is_nan())
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
_pack_into = SLOT.pack_into


class _Absent:
    """The type of :data:`_MISSING` alone, so that the set of a column's value types says
    whether some event lacks the attribute."""

    __slots__ = ()


#: The value of an attribute an event does not have.
_MISSING = _Absent()


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
        exact: float = value
        return exact
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


# ------------------------------------------------------ batch encoding, column by column
#
# Producer.publish_batch encodes a run of events of one type a column at a time: each
# attribute of the type's native layout is read from every event with one comprehension,
# checked once for the whole column (the set of its value types, and for ints their range),
# and stored with one strided copy into the slots. A column that fails the check (opaque
# values, ints a double does not hold, int/float subclasses, Decimal...) is encoded value
# by value by the reference, _native_values. The slots are byte for byte those _pack_event
# writes (tests/test_bus.py checks it with hypothesis).

#: Views a producer's scratch buffer is written through: bytes, uint64, uint32, uint16, double.
_Views = tuple[memoryview, memoryview, memoryview, memoryview, memoryview]
#: Below this many events of one type in a row, encoding them one by one is cheaper.
_COLUMN_MIN = 8
_Q_TS = SLOT_OFFSETS["ts_ns"] // 8
_I_TYPE = SLOT_OFFSETS["type"] // 4
_I_REF = SLOT_OFFSETS["ref"] // 4
_H_PRESENT = SLOT_OFFSETS["present"] // 2
_Q_STRIDE, _I_STRIDE, _H_STRIDE, _D_STRIDE = SLOT_SIZE // 8, SLOT_SIZE // 4, SLOT_SIZE // 2, SLOT_SIZE // 8
_CODE_TYPES = frozenset({int, bool})
_NUM_TYPES = frozenset({float, int, bool})
#: Per attribute: (name, field index, presence bit, True for a double field, index of the field
#: in its view's items of slot 0).
_ColumnPlan = tuple[tuple[str, int, int, bool, int], ...]
_column_plans: dict[int, tuple[EventType, _ColumnPlan]] = {}


def _column_plan(et: EventType) -> _ColumnPlan:
    """The column layout of a type (from :func:`_plan`), cached per type object."""
    entry = _column_plans.get(id(et))
    if entry is None or entry[0] is not et:
        cols = []
        for attr, f, bit in _plan(et):
            if f < _F_CODE:
                cols.append((attr, f, bit, False, SLOT_OFFSETS["key"] // 4 + f))
            elif f == _F_CODE:
                cols.append((attr, f, bit, False, SLOT_OFFSETS["code"] // 4))
            else:
                cols.append((attr, f, bit, True, SLOT_OFFSETS["num"] // 8 + f - _F_NUM0))
        entry = _column_plans[id(et)] = (et, tuple(cols))
    return entry[1]


def _column(attr: str, f: int, bit: int, vals: list[Any]) -> tuple[array[Any] | None, int | list[int]]:
    """Field ``f`` of a run of events whose attribute ``attr`` has the values ``vals``.

    Args:
        attr: the attribute.
        f: its field index (``PH_F_*``).
        bit: its presence bit, ``1 << f``.
        vals: its value in each event, :data:`_MISSING` where an event lacks it.

    Returns:
        ``(None, 0)`` when no event has it; else the field's values (an ``array`` of
        uint32 or double, 0 where absent or opaque) and the presence bits it adds: one int
        for every event alike, or one int per event.
    """
    if vals[0] is _MISSING and all(map(is_, vals, repeat(_MISSING))):  # (identity: no __eq__ runs)
        return None, 0
    keys: array[Any] | None = None
    if f < _F_CODE:
        try:
            keys = array("I", map(_key_get, vals, repeat(UNKNOWN_KEY)))
        except TypeError:  # an unhashable value: opaque (below, value by value)
            pass
        else:
            if UNKNOWN_KEY not in keys:  # the common case: every value interned
                return keys, bit
    kinds = set(map(type, vals))
    absent = _Absent in kinds
    if absent:
        kinds.discard(_Absent)
        vals0 = [0 if v is _MISSING else v for v in vals]
    else:
        vals0 = vals
    col: array[Any] | None = None
    if f < _F_CODE:
        if keys is not None:  # values never interned read UNKNOWN_KEY, as lookup() has it
            # 0 is an interned value's id: absent values (which read UNKNOWN_KEY) must read 0
            col = array("I", [0 if v is _MISSING else k for v, k in zip(vals, keys, strict=True)]) if absent else keys
    elif f == _F_CODE:
        if kinds <= _CODE_TYPES:
            try:
                col = array("I", vals0)
            except OverflowError:  # outside 0..2**32-1: opaque
                pass
    elif kinds <= _NUM_TYPES and (int not in kinds or -_MAX_EXACT <= min(vals0) and max(vals0) <= _MAX_EXACT):
        # (min/max return NaN when the column starts with one: NaN compares false, so such
        # a column goes value by value, as one with an int a double does not hold)
        col = array("d", vals0)
    if col is not None:
        return col, [0 if v is _MISSING else bit for v in vals] if absent else bit
    one = ((attr, f, bit),)
    rows = [_native_values({} if v is _MISSING else {attr: v}, one) for v in vals]
    return array("d" if f > _F_CODE else "I", [r[1][f] for r in rows]), [r[0] for r in rows]


def _encode_run(views: _Views, start: int, run: Sequence[Event], et: EventType, refs: Sequence[int]) -> bool:
    """Write ``run``, events all of type ``et``, as slots ``start, start+1, ...`` with ``refs``.

    Returns:
        True; False, having written nothing, when a ``ts_ns`` is not a uint64 (the caller
        then encodes the run event by event, which raises the reference's error).
    """
    b8, q64, i32, h16, d64 = views
    m = len(run)
    end = start + m
    try:
        ts = array("Q", [e.ts_ns for e in run])
    except (TypeError, OverflowError):
        return False
    b8[start * SLOT_SIZE : end * SLOT_SIZE] = bytes(m * SLOT_SIZE)
    q64[start * _Q_STRIDE + _Q_TS : end * _Q_STRIDE : _Q_STRIDE] = ts
    i32[start * _I_STRIDE + _I_TYPE : end * _I_STRIDE : _I_STRIDE] = array("I", (et.id,)) * m
    i32[start * _I_STRIDE + _I_REF : end * _I_STRIDE : _I_STRIDE] = array("I", refs)
    present = 0
    varying: list[list[int]] = []
    argss = [e.args for e in run]
    for attr, f, bit, double, index in _column_plan(et):
        try:
            vals = list(map(dict.get, argss, repeat(attr), repeat(_MISSING)))
        except TypeError:  # args that are a Mapping but not a dict
            vals = [a.get(attr, _MISSING) for a in argss]
        col, bits = _column(attr, f, bit, vals)
        if col is None:
            continue
        if double:
            d64[start * _D_STRIDE + index : end * _D_STRIDE : _D_STRIDE] = col
        else:
            i32[start * _I_STRIDE + index : end * _I_STRIDE : _I_STRIDE] = col
        if isinstance(bits, int):
            present |= bits
        else:
            varying.append(bits)
    if varying:  # the fields' bits are disjoint: their sum is their union
        pres = array("H", [present | sum(b) for b in zip(*varying, strict=True)])
    else:
        pres = array("H", (present,)) * m
    h16[start * _H_STRIDE + _H_PRESENT : end * _H_STRIDE : _H_STRIDE] = pres
    return True


def _pack_range(buf: Any, events: Sequence[Event], refs: Sequence[int], a: int, b: int) -> None:
    """Write ``events[a:b]`` as slots ``a..b-1`` with their refs, one by one (the reference)."""
    last: EventType | None = None
    plan: _Plan = ()
    for i in range(a, b):
        event = events[i]
        et = event.type
        if et is not last:
            plan, last = _plan(et), et
        present, v = _native_values(event.args, plan)
        _pack_into(buf, i * SLOT_SIZE, event.ts_ns, et.id, 0, present, v[0], v[1], refs[i], v[2], v[3], v[4],
                   v[5], b"")


def _encode_batch(buf: Any, views: _Views, events: Sequence[Event], refs: Sequence[int]) -> None:
    """Write ``events`` as slots ``0..n-1`` with ``refs``: runs of one type column by column."""
    n = len(events)
    if n < _COLUMN_MIN:
        _pack_range(buf, events, refs, 0, n)
        return
    types = [e.type for e in events]
    t0 = types[0]
    # count() compares by identity first, so it is cheap when every type is t0; equal types
    # have equal layouts, so == is right too. The sample keeps most mixed batches away from
    # EventType.__eq__.
    if types[-1] is t0 and types.count(t0) == n:
        if not _encode_run(views, 0, events, t0, refs):
            _pack_range(buf, events, refs, 0, n)
        return
    bounds = [0, *[i for i in range(1, n) if types[i] is not types[i - 1]], n]
    for a, b in pairwise(bounds):
        if b - a < _COLUMN_MIN or not _encode_run(views, a, events[a:b], types[a], refs[a:b]):
            _pack_range(buf, events, refs, a, b)


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
            ref = next(self.counter) & _REF_MAX
            if ref and ref not in table:
                table[ref] = event
                return ref

    def new_refs(self, events: Sequence[Event]) -> list[int]:
        """Put ``events`` in the side table; returns their handles, in order."""
        refs = list(islice(self.counter, len(events)))  # one C loop: other threads' refs do not interleave
        if refs[-1] > _REF_MAX:  # the counter has wrapped: a handle may be 0 or still held
            refs = [r & _REF_MAX for r in refs]
            if 0 in refs or not self.table.keys().isdisjoint(refs):
                return [self.new_ref(event) for event in events]
        self.table.update(zip(refs, events, strict=True))
        return refs


class Producer:
    """One producer's ring on the bus; made by :meth:`Bus.producer`.

    Attributes:
        name: the producer's name (its key in :meth:`Bus.stats`, ``Event.source`` of its
            decoded slots).
        id: its native producer id (the ``source`` field of its slots).
        shared: True when any number of threads may publish through it at once (the
            native ``_mp`` pushes); False when one thread at a time does (``_sp``).
    """

    __slots__ = ("_buf", "_cbuf", "_core", "_local", "_push1", "_pushn", "_views", "id", "name", "shared")

    def __init__(self, core: _Core, name: str, pid: int, shared: bool) -> None:
        self.name = name
        self.id = pid
        self.shared = shared
        self._core = core
        self._push1: Callable[[Any, int, Any], int] = lib.ph_push_mp if shared else lib.ph_push_sp
        self._pushn: Callable[[Any, int, Any, int], int] = (lib.ph_push_batch_mp if shared
                                                            else lib.ph_push_batch_sp)
        self._buf: Any = None
        self._cbuf: Any = None
        self._views: _Views | None = None
        self._local = threading.local() if shared else None

    def __repr__(self) -> str:
        return f"<Producer {self.name!r} id={self.id}{' shared' if self.shared else ''}>"

    def _scratch(self, n: int) -> tuple[Any, Any, _Views]:
        """(writable buffer, cdata, views) of at least n slots, private to this producer/thread."""
        owner: Any = self._local if self.shared else self
        cbuf = getattr(owner, "_cbuf", None)
        if cbuf is None or len(cbuf) < n:
            cbuf = ffi.new("struct ph_event[]", max(n, 1))
            owner._cbuf = cbuf
            owner._buf = ffi.buffer(cbuf)
            mv = memoryview(owner._buf)
            owner._views = (mv, mv.cast("Q"), mv.cast("I"), mv.cast("H"), mv.cast("d"))
        return owner._buf, cbuf, owner._views

    def publish(self, event: Event) -> bool:
        """Publish one event; never blocks.

        Returns:
            True when the ring took it; False when it was full (counted as dropped) or the
            bus is closed.
        """
        core = self._core
        if core.closed:
            return False
        buf, cbuf, _views = self._scratch(1)
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

        The slots are what :meth:`publish` would write for each event; runs of events of
        one type are encoded a column at a time (one pass per native attribute over the
        run), so a batch of one type costs far less per event than :meth:`publish`.

        Returns:
            How many were taken: always the first ones, ``events[:k]``; the rest were
            dropped (counted) or the bus is closed (0).
        """
        core = self._core
        n = len(events)
        if n == 0 or core.closed:
            return 0
        if not isinstance(events, list | tuple):
            events = list(events)
        buf, cbuf, views = self._scratch(n)
        table = core.table
        refs = core.new_refs(events)
        try:
            _encode_batch(buf, views, events, refs)
            k = self._pushn(core.ptr, self.id, cbuf, n)
        except BaseException:
            for ref in refs:
                table.pop(ref, None)
            raise
        if k < n:
            for ref in refs[k:]:
                table.pop(ref, None)
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
        self._objs: list[Event | None] | None = None  # by batch index; None: decode the slot
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
            ev = objs[i]
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
        self._objs = list(map(table.pop, refs, repeat(None)))  # ref 0 is never a key: None



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
        # producer ids lent to native threads (lend_producers), and how to stop those threads
        self._loans: dict[object, frozenset[int]] = {}
        self._loan_stops: dict[object, Callable[[], object]] = {}

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
        if timeout is None or math.isinf(timeout) or timeout >= _FOREVER_S:
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

    def lend_producers(self, names: Sequence[str], *, shared: bool,
                       stop: Callable[[], object]) -> tuple[Any, list[Producer], Callable[[], None]]:
        """Lend producers to native threads that push from outside this module.

        The one hook for C producers started elsewhere: :mod:`pihub.devtools.loadgen` (the
        benchmarks' and tests' load generator) uses it; the product does not. The threads
        push into the returned ``struct ph_bus *`` under the producers' ids, with the native
        ``_sp`` pushes (``shared=False``: at most one thread per producer) or the ``_mp``
        ones (``shared=True``). Until ``give_back()`` is called, the producers cannot be
        lent again, and :meth:`close` calls ``stop()`` before it lets the bus go; ``stop``
        must return only once the threads have stopped pushing (calling ``give_back`` on
        the way is fine). Hold the returned pointer while the threads run: it keeps the
        native bus alive.

        Args:
            names: one producer name per thread (made on first use, as :meth:`producer`);
                a name repeats only when ``shared``.
            shared: as for :meth:`producer`.
            stop: how :meth:`close` stops the threads.

        Returns:
            ``(bus, producers, give_back)``: the native bus (a cdata of this module's
            ``ffi``), the producers in ``names`` order, and the call that ends the loan.

        Raises:
            ValueError: a producer is lent already, or exists with the other ``shared``.
            RuntimeError: as :meth:`producer`.
        """
        producers = [self.producer(n, shared=shared) for n in names]
        ids = frozenset(p.id for p in producers)
        with self._lock:
            if self._core.closed:
                raise RuntimeError("cannot lend producers: the bus is closed")
            if any(ids & lent for lent in self._loans.values()):
                raise ValueError(f"producers {sorted(set(names))} are in use: lent to native threads "
                                 f"that have not been stopped")
            key = object()
            self._loans[key] = ids
            self._loan_stops[key] = stop

        def give_back() -> None:
            with self._lock:
                self._loans.pop(key, None)
                self._loan_stops.pop(key, None)

        return self._core.ptr, producers, give_back

    def close(self) -> None:
        """Close the bus: stop the threads of lent producers, wake the consumer, drop unpopped events.

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
            stops = list(self._loan_stops.values())
        for stop in stops:
            stop()
        lib.ph_bus_wake(core.ptr)
        core.table.clear()
