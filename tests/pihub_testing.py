"""Helpers shared by test modules (imported by name; conftest.py files are not importable
reliably once several folders have one)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI") == "true"


def need_tool(ok: bool, reason: str) -> None:
    """Skip when a system tool is missing, but fail in CI: .ci/run must install it."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI must install it: see .ci/run)")
    pytest.skip(reason)
