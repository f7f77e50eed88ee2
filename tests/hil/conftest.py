"""The rig the hardware-in-the-loop tests run against (see tests/hil/README.md)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hil_support import RIG

if RIG not in ("mock", "pi"):
    raise pytest.UsageError(f"PIHUB_RIG must be 'mock' or 'pi', not {RIG!r}")

HW_MOCKS = Path(__file__).resolve().parents[2] / "hw-mocks"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/hil/" in str(item.fspath):
            item.add_marker(pytest.mark.hil)


@pytest.fixture
def gpio_section() -> str:
    """The gpio config of the rig: output 'drive' on GPIO27 wired to input 'sense' on GPIO17."""
    if RIG == "pi":
        factory = os.environ.get("PIHUB_RIG_PIN_FACTORY", "lgpio")
        wiring = ""
    else:
        factory, wiring = "mock", "  mock_wiring: {27: 17}\n"
    return (f"gpio:\n  pin_factory: {factory}\n  bounce_time: 0\n"
            "  inputs: {sense: {pin: 17, pull: down}}\n"
            "  outputs: {drive: {pin: 27, initial: false}}\n" + wiring)


@pytest.fixture
def serial_device(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """``(device path, simulator or None)``: the pty simulator on the mock rig, the Arduino on a Pi."""
    if RIG == "pi":
        yield os.environ.get("PIHUB_RIG_SERIAL", "/dev/ttyACM0"), None
        return
    spec = importlib.util.spec_from_file_location("pihub_hil_serial_sim", HW_MOCKS / "serial_sensor.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    link = tmp_path / "ttySENSOR"
    sim = module.SerialSensorSimulator(link, interval=0.05, seed=3).start()
    try:
        yield str(link), sim
    finally:
        sim.stop()



def _board() -> str:
    """The Pi's model (device tree), else the CPU architecture's name."""
    try:
        return Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode()
    except OSError:
        return "no Raspberry Pi"


def _os_name() -> str:
    try:
        info = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        return f"{info.get('NAME', '?').strip(chr(34))} {info.get('VERSION_ID', '').strip(chr(34))}".strip()
    except OSError:
        return "unknown OS"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line a user can paste into an issue: rig, pihub, board, OS, counts of the HIL tests."""
    import platform
    import subprocess

    from pihub import __version__

    counts = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        counts[outcome] = sum(1 for r in terminalreporter.stats.get(outcome, [])
                              if "tests/hil/" in getattr(r, "nodeid", "").replace("\\", "/")
                              and getattr(r, "when", "call") in ("call", "setup"))
    if not any(counts.values()):
        return
    rev = subprocess.run(["git", "-C", str(HW_MOCKS.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False, timeout=10).stdout.strip() or "no git"
    terminalreporter.write_line(
        f"pihub hil: rig={RIG} pihub {__version__} ({rev}) on {_board()}, {platform.machine()}, {_os_name()}, "
        f"Python {platform.python_version()}: {counts['passed']} passed, {counts['failed'] + counts['error']} failed, "
        f"{counts['skipped']} skipped")
