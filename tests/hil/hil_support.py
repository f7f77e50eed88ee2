"""Helpers of the hardware-in-the-loop tests."""

from __future__ import annotations

import functools
import os

from pihub_testing import wait_for as _wait_for

#: the rig the suite runs against: "mock" (default, CI) or "pi" (see README.md)
RIG = os.environ.get("PIHUB_RIG", "mock")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


#: polls every 0.1 ms: the HIL tests report latencies, so the poll must not dominate them
wait_for = functools.partial(_wait_for, interval=0.0001)
