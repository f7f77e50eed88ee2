"""The C load generator: producer threads with no Python in them, for benchmarks and tests.

:func:`start` runs ``native/ph_loadgen.c`` (the development-only extension
``pihub.devtools._loadgen``, built by ``make build``) against a :class:`~pihub.bus.Bus`.
The threads push through the bus's own native entry points (``ph_push_batch_sp`` /
``ph_push_batch_mp`` of ``pihub._native``, handed over as function pointers), into
producers the bus lends them (:meth:`~pihub.bus.Bus.lend_producers`): the events take
exactly the product's push path, and :meth:`Bus.close <pihub.bus.Bus.close>` stops and
joins the threads before the bus goes.

Import-time check: the extension's compiled ``PH_ABI_VERSION`` and slot size must be those
of ``pihub._native``; otherwise importing this module raises
:class:`~pihub.errors.NativeMismatch` saying how to rebuild.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from pihub import bus as _bus
from pihub.bus import Bus, Producer
from pihub.errors import NativeMismatch
from pihub.events import Event

#: How to build a missing or stale extension.
REBUILD_HINT = "build it with `make build` (the development install: PIHUB_DEV_EXTENSIONS=1 pip install -e .)"
#: Most threads of one load generator.
MAX_THREADS = 1024
#: Most events per native push.
MAX_BATCH = 4096

try:
    from pihub.devtools._loadgen import ffi, lib
except ImportError as exc:
    raise NativeMismatch(f"pihub.devtools._loadgen cannot be imported ({exc}); {REBUILD_HINT}") from exc

if (lib.ph_loadgen_abi_version() != _bus.lib.ph_abi_version()
        or ffi.sizeof("struct ph_event") != _bus.SLOT_SIZE):
    raise NativeMismatch(
        f"pihub.devtools._loadgen has ABI version {lib.ph_loadgen_abi_version()} and "
        f"{ffi.sizeof('struct ph_event')}-byte slots, pihub._native version {_bus.lib.ph_abi_version()} and "
        f"{_bus.SLOT_SIZE}-byte slots; {REBUILD_HINT}")

_PUSH = "uint32_t(*)(struct ph_bus *, uint32_t, const struct ph_event *, uint32_t)"


def _entry(name: str, ctype: str) -> Any:
    """Function ``name`` of ``pihub._native`` as a function pointer of this extension's ffi."""
    return ffi.cast(ctype, _bus.ffi.cast("uintptr_t", _bus.ffi.addressof(_bus.lib, name)))


class LoadGen:
    """Running load-generator threads (made by :func:`start`).

    Attributes:
        producers: the producers they push through (one per thread, or one shared).
        events_per_thread: events each thread pushes.
    """

    def __init__(self, handle: Any, producers: list[Producer], events_per_thread: int,
                 keep: tuple[Any, ...]) -> None:
        self.producers = producers
        self.events_per_thread = events_per_thread
        self._handle = handle
        self._keep = keep  # the native bus and the ring struct the threads use, alive until joined
        self._give_back: Any = None
        self._accepted: int | None = None
        self._lock = threading.Lock()       # _handle against a concurrent free
        self._join_lock = threading.Lock()  # one native join at a time

    @property
    def running(self) -> bool:
        """True until :meth:`join` has returned."""
        return self._accepted is None

    def stop(self) -> None:
        """Ask the threads to stop after their current batch; returns at once."""
        with self._lock:
            if self._handle is not None:
                lib.ph_loadgen_stop(self._handle)

    def join(self) -> int:
        """Wait for the threads (GIL released); returns how many events the bus accepted."""
        with self._join_lock:
            if self._accepted is None:
                accepted = int(lib.ph_loadgen_join(self._handle))
                with self._lock:
                    lib.ph_loadgen_free(self._handle)
                    self._handle = None
                    self._keep = ()
                    self._accepted = accepted
                if self._give_back is not None:
                    self._give_back()
            return self._accepted

    def _halt(self) -> None:
        """Stop and join: what :meth:`Bus.close` calls while the threads may still run."""
        self.stop()
        self.join()


def start(bus: Bus, template: Event, *, events_per_thread: int, threads: int = 1, batch: int = 64,
          shared: bool = False, retry: bool = False, name: str = "loadgen") -> LoadGen:
    """Start C threads that push copies of ``template`` into ``bus``.

    Thread i pushes ``events_per_thread`` copies in batches of ``batch`` through producer
    ``f"{name}-{i}"`` (or all through one shared producer ``name``), each copy with
    ``ts_ns`` = now and ``num0`` = its sequence number in the thread (so a type with an
    attribute in ``num0`` decodes it as 0, 1, 2, ...).

    Args:
        bus: the bus to feed.
        template: an event a slot carries losslessly (see :func:`pihub.bus.encode` with ref 0).
        events_per_thread: events each thread pushes (>= 0).
        threads: 1..1024.
        batch: events per native push, 1..4096.
        shared: one ``_mp`` producer for all threads instead of one ``_sp`` producer each.
        retry: retry a refused event (after yielding) instead of dropping it; refusals
            still count as drops.
        name: producer name (prefix).

    Raises:
        ValueError: an argument out of range, a template a slot cannot carry, or producers
            lent to a load generator that is still running.
        RuntimeError: the bus is closed or has no room for the producers.
        OSError: the threads could not be started.
    """
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be in range 1..{MAX_THREADS}, not {threads}")
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be in range 1..{MAX_BATCH}, not {batch}")
    if events_per_thread < 0:
        raise ValueError(f"events_per_thread must be >= 0, not {events_per_thread}")
    slot = ffi.new("struct ph_event *")
    _bus.encode(template, ffi.buffer(slot))
    names = [name] * threads if shared else [f"{name}-{i}" for i in range(threads)]
    lg: LoadGen | None = None

    def halt() -> None:
        if lg is not None:
            lg._halt()

    bus_ptr, producers, give_back = bus.lend_producers(names, shared=shared, stop=halt)
    try:
        ring = ffi.new("struct ph_loadgen_ring *")
        ring.bus = ffi.cast("struct ph_bus *", _bus.ffi.cast("uintptr_t", bus_ptr))
        ring.push_batch_sp = _entry("ph_push_batch_sp", _PUSH)
        ring.push_batch_mp = _entry("ph_push_batch_mp", _PUSH)
        ring.producer_count = _entry("ph_bus_producer_count", "uint32_t(*)(const struct ph_bus *)")
        ring.now_ns = _entry("ph_now_ns", "uint64_t(*)(void)")
        flags = (lib.PH_LOADGEN_MP if shared else 0) | (lib.PH_LOADGEN_RETRY if retry else 0)
        ids = ffi.new("uint32_t[]", [p.id for p in producers])
        handle = lib.ph_loadgen_start(ring, ids, threads, slot, events_per_thread, batch, flags)
        if handle == ffi.NULL:
            err = ffi.errno
            raise OSError(err, f"cannot start the load generator: {os.strerror(err)}")
    except BaseException:
        give_back()
        raise
    lg = LoadGen(handle, list(dict.fromkeys(producers)), events_per_thread, (bus_ptr, ring))
    lg._give_back = give_back
    return lg
