"""Smart card insert -> event latency through the real stack (HARDWARE.md §3.4).

The stack: ``hw-mocks/virtual_card.py --pcscd`` (pcscd with vsmartcard's vpcd in a private
network namespace, and the virtual card), pyscard, and :class:`SmartCardBackend` with its
own ``emit``. Needs root, ``pcscd``, ``vsmartcard-vpcd`` and pyscard; without them the
family fails naming what is missing.

Figures (one run of ``n`` insert/remove cycles; p50/p99 over the cycles):

* ``smartcard.insert`` ``insert_to_event_ms_p50/p99``: from the moment the card is told
  to go in (before the virtual card connects to vpcd) to ``SmartCardDetectedEvent`` in
  ``emit``, UID read (``FF CA 00 00 00``) included. pcscd polls vpcd's slot about every
  0.4 s, so most of this is pcscd's poll, not pihub.
* ``smartcard.remove`` ``remove_to_event_ms_p50``: the same for removal.
* ``smartcard.uid`` ``uid_read_ms_p50``: the UID read alone (SCardConnect + SCardTransmit
  + SCardDisconnect through pcscd to the card), the part of the latency that is pihub's
  choice (``read_uid: false`` saves it).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import Context, result, rounded

HW_MOCKS = Path(__file__).resolve().parents[1] / "hw-mocks"


def _virtual_card() -> Any:
    spec = importlib.util.spec_from_file_location("pihub_bench_virtual_card", HW_MOCKS / "virtual_card.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_card_latency(ctx: Context) -> Iterator[dict[str, Any]]:
    """ms from a card insertion (removal) to its event, and the UID read's share."""
    from pihub.backends.smartcard import SmartCardBackend

    vc = _virtual_card()
    n = ctx.scale(30, 5)
    seen: list[tuple[str, int]] = []
    cond = threading.Condition()

    def emit(event: Any) -> bool:
        with cond:
            seen.append((event.type.name, time.monotonic_ns()))
            cond.notify_all()
        return True

    def wait_event(k: int) -> int:
        with cond:
            if not cond.wait_for(lambda: len(seen) >= k, 10):
                raise RuntimeError(f"no smart card event {k} within 10 s")
            return seen[k - 1][1]

    inserts: list[float] = []
    removes: list[float] = []
    uids: list[float] = []
    with vc.VirtualCardProcess() as card:
        backend = SmartCardBackend({"atr": [vc.DEFAULT_ATR]})
        backend.validate_environment()
        read_uid = backend._read_uid

        def timed_uid(reader: str) -> bytes | None:
            t0 = time.perf_counter()
            try:
                return read_uid(reader)
            finally:
                uids.append((time.perf_counter() - t0) * 1e3)

        backend._read_uid = timed_uid  # type: ignore[method-assign]
        backend.open(emit)
        try:
            deadline = time.monotonic() + 10
            while not backend.device_status()["readers"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the backend sees no reader: {backend.error}")
                time.sleep(0.01)
            for i in range(n):
                t0 = time.monotonic_ns()
                card.insert()
                inserts.append((wait_event(2 * i + 1) - t0) / 1e6)
                t0 = time.monotonic_ns()
                card.remove()
                removes.append((wait_event(2 * i + 2) - t0) / 1e6)
        finally:
            backend.close()
    note = ("virtual card -> vpcd -> real pcscd (polls the slot ~every 0.4 s) -> pyscard -> "
            "SmartCardBackend -> emit, UID read included")
    yield result("smartcard.insert", "insert_to_event_ms_p50", _pct(inserts, 0.5), "ms", better="lower",
                 n=n, runs=rounded(sorted(inserts)), note=note)
    yield result("smartcard.insert", "insert_to_event_ms_p99", _pct(inserts, 0.99), "ms", better="lower",
                 n=n, note=note)
    yield result("smartcard.remove", "remove_to_event_ms_p50", _pct(removes, 0.5), "ms", better="lower",
                 n=n, runs=rounded(sorted(removes)), note=note.replace(", UID read included", ""))
    yield result("smartcard.uid", "uid_read_ms_p50", _pct(uids, 0.5), "ms", better="lower", n=len(uids),
                 note="SCardConnect + SCardTransmit(FF CA 00 00 00) + SCardDisconnect through pcscd and vpcd")


BENCHES = [bench_card_latency]
