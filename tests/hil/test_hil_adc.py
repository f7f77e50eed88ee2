"""ADC end to end: an MCP3008 channel (the bit-level fake on the mock rig, a divider on a Pi)."""

from __future__ import annotations

import os

import pytest
from hil_support import RIG, wait_for

EXPECTED_V = float(os.environ.get("PIHUB_RIG_ADC_VOLTS", "1.65"))


def _adc_section(thresholds: str = "[1.0, 2.0]") -> str:
    driver = "spidev" if RIG == "pi" else "mock"
    mock = f"  mock: {{voltages: {{0: {EXPECTED_V}}}}}\n" if RIG == "mock" else ""
    return (f"adc:\n  driver: {driver}\n  poll_interval: 0.05\n  tolerance: 0.05\n"
            f"  channels: {{0: {{name: divider, thresholds: {thresholds}}}}}\n" + mock)


def test_channel_reads_the_divider_voltage(make_hub):
    hub = make_hub(_adc_section())
    out = hub.execute("adc.read", {"channel": 0})
    assert out.ok, out.errors
    assert out.output["volts"] == pytest.approx(EXPECTED_V, abs=0.1)
    assert out.output["raw"] == pytest.approx(EXPECTED_V / 3.3 * 1024, abs=0.1 * 1024 / 3.3)


def test_threshold_crossing_reaches_a_hook(make_hub):
    if RIG == "pi":
        pytest.skip("needs a driven voltage (a potentiometer) on the Pi rig; the divider is fixed")
    hub = make_hub(_adc_section() + """
mock: {outputs: {lamp: null}}
event.hook.bright:
  if: {type: SensorDataAboveThresholdEvent, source: adc}
  then:
    - action: mock.set
      args: {name: lamp, value: false}
event.hook.dark:
  if: {type: SensorDataBelowThresholdEvent, source: adc}
  then:
    - action: mock.set
      args: {name: lamp, value: true}
""")
    lamp = hub.backends["mock"].outputs
    assert hub.execute("adc.set_voltage", {"channel": 0, "volts": 0.4}).ok
    assert wait_for(lambda: lamp.get("lamp") is True, 5), "no Below event reached the hook"
    assert hub.execute("adc.set_voltage", {"channel": 0, "volts": 2.6}).ok
    assert wait_for(lambda: lamp.get("lamp") is False, 5), "no Above event reached the hook"
