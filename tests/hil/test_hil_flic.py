"""Flic end to end: a button's double press and a short-long sequence -> hooks -> actions.

Mock rig: the fake flicd (hw-mocks/fake_flicd.py) plays the presses. Pi rig: the real
flicd (``PIHUB_RIG_FLICD``, default ``127.0.0.1:5551``) with a verified button
(``PIHUB_RIG_FLIC_BUTTON``), pressed by the person running the test when it says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hil_support import RIG, wait_for
from pihub_testing import load_hw_mock

MOCK_BUTTON = "80:e4:da:70:a1:c0"


@pytest.fixture
def flic_rig() -> Iterator[tuple[str, int, str, Any]]:
    """``(host, port, button, fake flicd or None)``."""
    if RIG == "pi":
        host, _, port = os.environ.get("PIHUB_RIG_FLICD", "127.0.0.1:5551").rpartition(":")
        button = os.environ.get("PIHUB_RIG_FLIC_BUTTON")
        assert button, "PIHUB_RIG_FLIC_BUTTON must name the rig's verified button (aa:bb:cc:dd:ee:ff)"
        yield host, int(port), button.lower(), None
        return
    with load_hw_mock("fake_flicd").FakeFlicd([MOCK_BUTTON]) as flicd:
        yield "127.0.0.1", flicd.port, MOCK_BUTTON, flicd


def test_double_press_and_sequence_fire_hooks(make_hub, flic_rig):
    host, port, button, flicd = flic_rig
    hub = make_hub(f"""
mock: {{outputs: {{music: null, lamp: null}}}}
flic:
  server: {host}
  port: {port}
  buttons: ["{button}"]
event.hook.pause:
  if: {{type: FlicButtonDoubleClickEvent, btn_addr: "{button}"}}
  then:
    - action: mock.set
      args: {{name: music, value: paused}}
event.hook.lamp:
  if: {{type: FlicButtonEvent, btn_addr: "{button}", sequence: [ShortPressEvent, LongPressEvent]}}
  then:
    - action: mock.set
      args: {{name: lamp, value: "${{sequence}}"}}
""")
    outputs = hub.backends["mock"].outputs
    sequences: list[list[str]] = []
    hub.dispatcher.add_listener(lambda e: sequences.append(e.args["sequence"])
                                if e.type.name == "FlicButtonEvent" else None)
    assert wait_for(lambda: hub.backends["flic"].describe_status()["buttons"].get(button) == "connected", 20), (
        hub.backends["flic"].describe_status())
    if flicd is None:
        print(f"\nhil: double-press the Flic button {button}", flush=True)
    else:
        flicd.press(button, "double")
    assert wait_for(lambda: outputs.get("music") == "paused", 30), "no double click reached the hook"
    if flicd is None:
        print(f"hil: now press {button} short, then hold it about half a second", flush=True)
    else:
        assert wait_for(lambda: len(sequences) == 1, 10)  # the double press's sequence ended first
        flicd.sequence(button, ["short", "long"])
    assert wait_for(lambda: outputs.get("lamp") is not None, 30), "no short-long sequence reached the hook"
    assert "ShortPressEvent" in str(outputs["lamp"]) and "LongPressEvent" in str(outputs["lamp"])
