"""Helpers shared by test modules (imported by name; conftest.py files are not importable
reliably once several folders have one)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

IN_CI = os.environ.get("CI") == "true"


def need_tool(ok: bool, reason: str) -> None:
    """Skip when a system tool is missing, but fail in CI: .ci/run must install it."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI must install it: see .ci/run)")
    pytest.skip(reason)


def wait_for(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.001) -> bool:
    """Poll ``pred`` every ``interval`` s until true or ``timeout`` s pass; its last truth value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())
