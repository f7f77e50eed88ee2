"""Helpers of the hardware-in-the-loop tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

#: the rig the suite runs against: "mock" (default, CI) or "pi" (see README.md)
RIG = os.environ.get("PIHUB_RIG", "mock")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def wait_for(pred: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; its last truth value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.0001)
    return bool(pred())
