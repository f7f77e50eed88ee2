"""The ADC poll loop's cost per sample, on the mock rig (``driver: mock``).

Three figures, each the median of ``ctx.runs`` runs:

* ``adc.read``: one channel conversion through :meth:`AdcBackend.read_raw`: the request
  copy, the lock, ``FakeSpiDev.xfer2`` and the bit-by-bit fake chip (24 clocks), the
  null-bit check and the mask. On a Pi the fake's share is replaced by the spidev ioctl.
* ``adc.sensor_state``: one :meth:`SensorState.update` of an 8-key reading, both when
  nothing changed beyond tolerance (the common case) and when every key changed (a Change
  event plus its copy).
* ``adc.poll``: one whole :meth:`AdcBackend.poll_once` of 8 channels (reads + conversion
  + state + emit), and that divided by 8: the cost per sample.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from common import Context, median, repeat, result, rounded


def _per_call_us(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def bench_adc_poll(ctx: Context) -> Iterator[dict[str, Any]]:
    """us per channel read, per SensorState.update and per poll sample (8 channels)."""
    from pihub.backends.adc import AdcBackend
    from pihub.backends.sensor import SensorState

    n = ctx.scale(20_000, 1000)
    adc = AdcBackend({"driver": "mock", "poll_interval": 3600, "tolerance": 0.01,
                      "thresholds": [1.0, 2.0]})
    adc.chip.voltages[:] = [0.3 * i for i in range(8)]
    adc.open(lambda e: True)
    try:
        adc._thread.stop()  # measure the poll body by hand, not the sleeping thread

        runs = repeat(lambda: _per_call_us(lambda: adc.read_raw(3), n), ctx.runs)
        yield result("adc.read", "us_per_channel_read", median(runs), "us", better="lower",
                     runs=rounded(runs), n=n, note="read_raw through FakeSpiDev + bit-level fake MCP3008")

        runs = repeat(lambda: _per_call_us(adc.poll_once, n // 8), ctx.runs)
        yield result("adc.poll", "us_per_poll_8_channels", median(runs), "us", better="lower",
                     runs=rounded(runs), n=n // 8, note="poll_once: 8 reads + conversion + SensorState + emit")
        yield result("adc.poll", "us_per_sample", median(runs) / 8, "us", better="lower",
                     runs=rounded([r / 8 for r in runs]), n=n // 8, note="poll_once / 8 channels")
    finally:
        adc.close()

    keys = [f"ch{i}" for i in range(8)]
    steady = dict.fromkeys(keys, 1.0)
    state = SensorState("bench", tolerance=0.01, thresholds=[1.0, 2.0])
    state.update(steady)
    runs = repeat(lambda: _per_call_us(lambda: state.update(steady), n), ctx.runs)
    yield result("adc.sensor_state", "us_per_update_unchanged_8_keys", median(runs), "us", better="lower",
                 runs=rounded(runs), n=n, note="SensorState.update, nothing beyond tolerance")

    readings = [dict.fromkeys(keys, 1.0 + 0.1 * (i % 2)) for i in range(2)]
    i = [0]

    def changing() -> None:
        i[0] ^= 1
        state.update(readings[i[0]])

    runs = repeat(lambda: _per_call_us(changing, n), ctx.runs)
    yield result("adc.sensor_state", "us_per_update_changed_8_keys", median(runs), "us", better="lower",
                 runs=rounded(runs), n=n, note="SensorState.update, every key changed: one Change event")


BENCHES = [bench_adc_poll]
