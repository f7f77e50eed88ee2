"""The music.mpd backend against a real mpd (hw-mocks/mpd_server.py: null output, loopback).

``mpd.change_to_event``: another client sets the volume; the figure is the time from just
before its ``setvol`` is sent to the backend's ``VolumeChangeEvent`` (mpd's idle answer, a
``status`` + ``currentsong`` read, the emit). Platypush's backend polls ``status`` every
``poll_seconds`` (3 s by default), so its delay is up to that interval: no peer run here.
``mpd.action``: one ``music.mpd.status`` action called directly (a ``ping`` that checks the
kept connection, then ``status``), the cost of every ``music.mpd.*`` action.
"""

from __future__ import annotations

import importlib.util
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import Context, median, percentile, repeat, result, rounded

_HW_MOCKS = Path(__file__).resolve().parents[1] / "hw-mocks"


def _mock() -> Any:
    spec = importlib.util.spec_from_file_location("bench_mpd_server", _HW_MOCKS / "mpd_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_change_to_event(ctx: Context) -> Iterator[dict[str, Any]]:
    """ms from another client's setvol to VolumeChangeEvent emitted."""
    import mpd

    from pihub.backends.mpd import MpdBackend

    changes = ctx.scale(100, 10)
    lat_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pihub-bench-mpd-") as d, _mock().MpdServer(d, tracks=1) as server:
        got, connected = threading.Event(), threading.Event()
        emitted: list[int] = []

        def emit(event: Any) -> bool:
            connected.set()  # the state announced at the first connection
            if event.type.name == "VolumeChangeEvent":
                emitted.append(time.monotonic_ns())
                got.set()
            return True

        backend = MpdBackend({"host": "127.0.0.1", "port": server.port})
        other = mpd.MPDClient()
        other.connect("127.0.0.1", server.port)
        backend.open(emit)
        try:
            if not connected.wait(10):
                raise RuntimeError(f"mpd backend never connected: {backend.describe_status()}")
            for i in range(ctx.runs * changes):
                got.clear()
                t0 = time.monotonic_ns()
                other.setvol(10 + i % 80)
                if not got.wait(5):
                    raise RuntimeError("no VolumeChangeEvent within 5 s of a setvol")
                lat_ms.append((emitted[-1] - t0) / 1e6)
        finally:
            other.disconnect()
            backend.close()
    note = f"mpd on loopback (null output); another client's setvol -> idle -> event, {len(lat_ms)} changes"
    lat_ms.sort()
    yield result("mpd.change_to_event", "p50_ms", percentile(lat_ms, 50), "ms", better="lower", n=len(lat_ms), note=note)
    yield result("mpd.change_to_event", "p99_ms", percentile(lat_ms, 99), "ms", better="lower", n=len(lat_ms), note=note)


def bench_action(ctx: Context) -> Iterator[dict[str, Any]]:
    """us per music.mpd.status action (direct call, the kept action connection)."""
    from pihub.backends.mpd import MpdBackend

    n = ctx.scale(2000, 100)
    with tempfile.TemporaryDirectory(prefix="pihub-bench-mpd-") as d, _mock().MpdServer(d, tracks=1) as server:
        backend = MpdBackend({"host": "127.0.0.1", "port": server.port})
        try:
            def run() -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    backend.player_status()
                return (time.perf_counter() - t0) / n * 1e6

            runs = repeat(run, ctx.runs)
        finally:
            backend.close()
    yield result("mpd.action", "us_per_status_action", median(runs), "us", better="lower", runs=rounded(runs), n=n,
                 note="ping + status on the kept connection, mpd on loopback")


BENCHES = [bench_change_to_event, bench_action]
