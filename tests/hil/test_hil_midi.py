"""MIDI end to end: a controller's slider -> MidiMessageEvent -> a hook on ``control: 7``
-> an action; and ``play_note`` out of pihub's virtual output.

Mock rig: a private jackd (dummy driver) and the controller simulator of
hw-mocks/midi_controller.py. Pi rig: the ALSA sequencer (``/dev/snd/seq``); the
"controller" is this test's own ALSA port (a USB controller's port looks the same to
pihub), so no one has to move a slider; ``PIHUB_RIG_MIDI_INPUT`` names a real
controller's port instead, whose control 7 the person running the test moves when told.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hil_support import RIG, percentile, wait_for
from pihub_testing import load_hw_mock

MOCK = load_hw_mock("midi_controller")


class _AlsaController:
    """The test's own ALSA sequencer port, playing a controller on the Pi rig."""

    def __init__(self) -> None:
        import rtmidi

        self._out = rtmidi.MidiOut(rtmidi.API_LINUX_ALSA, name="hilcontroller")
        self._out.open_virtual_port("slider")

    def cc(self, control: int, value: int, channel: int = 0) -> None:
        self._out.send_message([0xB0 | channel, control, value])

    def close(self) -> None:
        self._out.close_port()
        self._out.delete()


@pytest.fixture
def midi_rig() -> Iterator[tuple[str, str, Any]]:
    """``(api, input port name, controller or None when a person moves the slider)``."""
    if RIG == "pi":
        assert os.path.exists("/dev/snd/seq"), "no ALSA sequencer: /dev/snd/seq is missing"
        real = os.environ.get("PIHUB_RIG_MIDI_INPUT")
        if real:
            yield "alsa", real, None
            return
        ctl = _AlsaController()
        try:
            yield "alsa", "hilcontroller", ctl
        finally:
            ctl.close()
        return
    with MOCK.private_jack(f"pihubhil{os.getpid()}"), MOCK.MidiController("hilcontroller", "slider") as ctl:
        yield "jack", "hilcontroller", ctl


def test_slider_fires_a_hook_and_play_note_goes_out(midi_rig, make_hub):
    api, port, ctl = midi_rig
    hub = make_hub(f"""
mock: {{outputs: {{volume: null}}}}
midi:
  api: {api}
  inputs: ["{port}"]
  virtual_output: pihub hil out
  poll_interval: 0.05
event.hook.volume:
  if: {{type: MidiMessageEvent, control: 7}}
  then:
    - action: mock.set
      args: {{name: volume, value: "${{value}}"}}
""")
    midi = hub.backends["midi"]
    outputs = hub.backends["mock"].outputs
    assert wait_for(lambda: midi.list_ports()["listening"], 20), midi.list_ports()
    if ctl is None:
        print(f"\nhil: move control 7 (the volume slider) of {port} all the way up", flush=True)
        assert wait_for(lambda: outputs.get("volume") == 127, 60), outputs
    else:
        deadline = time.monotonic() + 10
        while outputs.get("volume") != 127:  # a new connection works from the next cycle on
            assert time.monotonic() < deadline, "no message from the controller reached the hook"
            ctl.cc(7, 127)
            wait_for(lambda: outputs.get("volume") == 127, 0.05)
        lat_ms = []
        for i in range(60):
            value = i % 2 * 100 + i % 20  # every value differs from the one before
            t0 = time.perf_counter()
            ctl.cc(7, value)
            assert wait_for(lambda v=value: outputs.get("volume") == v, 10), (value, outputs)
            lat_ms.append((time.perf_counter() - t0) * 1000)
        print(f"\nhil: midi {api} cc -> hook action p50 {percentile(lat_ms, 0.5):.2f} ms "
              f"p99 {percentile(lat_ms, 0.99):.2f} ms", flush=True)
    received: list[list[int]] = []
    if api == "jack":
        with MOCK.MidiMonitor("pihub hil out", on_message=received.append) as monitor:
            hub.execute("midi.play_note", {"note": 60, "velocity": 90, "duration": 0.2})
            assert monitor.wait_count(2, 10), monitor.received
    else:
        import rtmidi

        listener = rtmidi.MidiIn(rtmidi.API_LINUX_ALSA, name="hilmonitor")
        ports = listener.get_ports()
        index = next(i for i, p in enumerate(ports) if "pihub hil out" in p)
        listener.set_callback(lambda ev, _d: received.append(ev[0]))
        listener.open_port(index)
        try:
            hub.execute("midi.play_note", {"note": 60, "velocity": 90, "duration": 0.2})
            assert wait_for(lambda: len(received) == 2, 10), received
        finally:
            listener.close_port()
            listener.delete()
    assert received == [[0x90, 60, 90], [0x80, 60, 0]]
