"""Serial sensor end to end: device reading -> threshold event -> hook -> command to the device."""

from __future__ import annotations

from hil_support import wait_for


def test_threshold_crossing_drives_an_output_and_the_device(make_hub, serial_device):
    device, sim = serial_device
    hub = make_hub(f"""
mock: {{outputs: {{fan: null}}}}
serial:
  device: {device}
  read_timeout: 0.1
  thresholds: {{temperature: [25, 28]}}
event.hook.hot:
  if: {{type: SensorDataAboveThresholdEvent, source: serial}}
  then:
    - action: mock.set
      args: {{name: fan, value: true}}
    - action: serial.write
      args: {{data: {{cmd: set, temperature: 20}}}}
event.hook.cool:
  if: {{type: SensorDataBelowThresholdEvent, source: serial}}
  then:
    - action: mock.set
      args: {{name: fan, value: false}}
""")
    fan = hub.backends["mock"].outputs
    assert wait_for(lambda: hub.execute("serial.status").output.get("state") == "connected", 10)
    # the room heats up: the device reports 30 degrees, above the 28 threshold
    assert hub.execute("serial.write", {"data": {"cmd": "set", "temperature": 30}}).ok
    assert wait_for(lambda: fan.get("fan") is True, 10), "no Above event reached the hook"
    # the hook told the device to cool to 20: below 25, the fan goes off again
    assert wait_for(lambda: fan.get("fan") is False, 10), "the device did not obey the hook's command"
    if sim is not None:
        assert {"cmd": "set", "temperature": 20} in sim.commands
