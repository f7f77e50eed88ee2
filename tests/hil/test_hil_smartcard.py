"""Smart card end to end: a key card put on the reader switches the room on, taking it off switches
it off (a hook on SmartCardDetectedEvent / SmartCardRemovedEvent, filtered by ATR and UID).

Mock rig: real pcscd + vpcd + the virtual card (hw-mocks/virtual_card.py). Pi rig: a USB
PC/SC reader and a card the operator puts on and takes off when told (run with ``-s``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hil_support import RIG, percentile, wait_for
from pihub_testing import load_hw_mock, need_pcsc_stack

ATR = os.environ.get("PIHUB_RIG_CARD_ATR", "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A")
UID = os.environ.get("PIHUB_RIG_CARD_UID", "04 A1 B2 C3 D4 E5 F6")
ROUNDS = 5 if RIG == "mock" else 1


class _Operator:
    """The Pi rig's card: the person at the reader."""

    def insert(self) -> None:
        print(f"\nhil: put the card (ATR {ATR}) on the reader now")

    def remove(self) -> None:
        print("\nhil: take the card off the reader now")


@pytest.fixture
def card(tmp_path) -> Iterator[Any]:
    if RIG == "pi":
        yield _Operator()
        return
    need_pcsc_stack()
    with load_hw_mock("virtual_card").VirtualCardProcess(atr=ATR, uid=UID, pcscd_log=tmp_path / "pcscd.log") as p:
        yield p


def test_a_key_card_switches_the_room_on_and_off(make_hub, card):
    hub = make_hub(f"""
mock: {{outputs: {{room: null}}}}
smartcard:
  atr: ["{ATR}"]
event.hook.card_in:
  if: {{type: SmartCardDetectedEvent, uid: "{UID}"}}
  then: [{{action: mock.set, args: {{name: room, value: true}}}}]
event.hook.card_out:
  if: {{type: SmartCardRemovedEvent, uid: "{UID}"}}
  then: [{{action: mock.set, args: {{name: room, value: false}}}}]
""")
    room = hub.backends["mock"].outputs
    assert wait_for(lambda: hub.execute("smartcard.status").output["readers"], 30), \
        hub.execute("smartcard.status").output["error"]
    timeout = 10 if RIG == "mock" else 60
    on, off = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        card.insert()
        assert wait_for(lambda: room.get("room") is True, timeout), "no Detected event reached the hook"
        on.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        card.remove()
        assert wait_for(lambda: room.get("room") is False, timeout), "no Removed event reached the hook"
        off.append(time.perf_counter() - t0)
    if RIG == "mock":  # on the Pi the operator's hand is in the measurement
        print(f"\nhil: card insert -> hook p50 {percentile(on, 0.5) * 1e3:.0f} ms p99 {percentile(on, 0.99) * 1e3:.0f}"
              f" ms; remove -> hook p50 {percentile(off, 0.5) * 1e3:.0f} ms (vpcd is polled every ~0.4 s)")
