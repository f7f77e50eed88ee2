"""The Flic backend: button release -> FlicButtonEvent, beyond the sequence window.

``flic.release_to_event``: the fake flicd (hw-mocks/fake_flicd.py, in process, real TCP
on loopback) sends a short press (Down, Up); the backend, on the system clock, ends the
sequence ``btn_timeout`` (0.5 s) after the release and emits ``FlicButtonEvent``. The
figure is (event emitted - ButtonUp sent) - btn_timeout: the protocol decode, the
``call_later`` timer's lateness and the emit, i.e. what pihub adds to the window users
configure. p50 and p99 over the presses of all runs. Also the decode cost of one button
packet (frame split + field check), the part of it that is per packet.
"""

from __future__ import annotations

import importlib.util
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import Context, median, percentile, repeat, result, rounded

_HW_MOCKS = Path(__file__).resolve().parents[1] / "hw-mocks"
_BUTTON = "80:e4:da:70:a1:c0"


def _fake() -> Any:
    spec = importlib.util.spec_from_file_location("bench_fake_flicd", _HW_MOCKS / "fake_flicd.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_release_to_event(ctx: Context) -> Iterator[dict[str, Any]]:
    """ms from ButtonUp sent to FlicButtonEvent emitted, minus the 0.5 s window."""
    from pihub.backends.flic import FlicBackend

    presses = ctx.scale(40, 5)
    window = 0.5
    lat_ms: list[float] = []
    with _fake().FakeFlicd([_BUTTON]) as flicd:
        backend = FlicBackend({"port": flicd.port, "buttons": [_BUTTON], "btn_timeout": window})
        got = threading.Event()
        emitted: list[int] = []

        def emit(event: Any) -> bool:
            if event.type.name == "FlicButtonEvent":
                emitted.append(time.monotonic_ns())
                got.set()
            return True

        backend.open(emit)
        try:
            deadline = time.monotonic() + 10
            while backend.describe_status()["buttons"].get(_BUTTON) != "connected":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"flic backend never connected: {backend.describe_status()}")
                time.sleep(0.01)
            for _ in range(ctx.runs * presses):
                got.clear()
                flicd.down(_BUTTON)
                time.sleep(0.02)
                t_up = time.monotonic_ns()
                flicd.up(_BUTTON)
                if not got.wait(5):
                    raise RuntimeError("no FlicButtonEvent within 5 s of a release")
                lat_ms.append((emitted[-1] - t_up) / 1e6 - window * 1000)
        finally:
            backend.close()
    note = ("fake flicd on loopback -> own client -> PressSequence on the system clock; "
            f"(emit - ButtonUp sent) - btn_timeout {window} s, {len(lat_ms)} short presses")
    yield result("flic.release_to_event", "after_window_p50_ms", percentile(sorted(lat_ms), 50), "ms", better="lower",
                 n=len(lat_ms), note=note)
    yield result("flic.release_to_event", "after_window_p99_ms", percentile(sorted(lat_ms), 99), "ms", better="lower",
                 n=len(lat_ms), note=note)


def bench_decode(ctx: Context) -> Iterator[dict[str, Any]]:
    """us to split and check one EvtButtonUpOrDown packet."""
    from pihub.backends.flic import FrameReader, decode

    body = bytes([4]) + struct.pack("<IBBI", 1, 0, 0, 0)
    frame = struct.pack("<H", len(body)) + body
    n = ctx.scale(200_000, 5000)
    reader = FrameReader()

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            for op, b in reader.feed(frame):
                decode(op, b)
        return (time.perf_counter() - t0) / n * 1e6

    runs = repeat(run, ctx.runs)
    yield result("flic.decode", "us_per_button_packet", median(runs), "us", better="lower", runs=rounded(runs),
                 n=n, note="FrameReader.feed + decode of one EvtButtonUpOrDown (pyflic's _dispatch_event: 1.92 us)")


BENCHES = [bench_release_to_event, bench_decode]
