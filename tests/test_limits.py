"""pihub.limits: connection slots in all and per address."""

from __future__ import annotations

import pytest

from pihub.limits import ConnectionSlots


def test_slots_refuse_past_the_per_address_and_the_total_limit_and_count_it():
    slots = ConnectionSlots(total=3, per_address=2)
    assert slots.take("a") and slots.take("a")
    assert not slots.take("a")  # a third from one address
    assert slots.take("b")
    assert not slots.take("c")  # a fourth in all
    assert (slots.open, slots.of("a"), slots.of("b"), slots.refused) == (3, 2, 1, 2)
    slots.give_back("a")
    assert slots.take("c") and (slots.open, slots.of("a"), slots.of("c")) == (3, 1, 1)
    for address in ("a", "b", "c"):
        slots.give_back(address)
    assert slots.open == 0 and slots._by_address == {}  # no address kept once it has none


@pytest.mark.parametrize(("total", "per_address"), [(0, 1), (1, 0)])
def test_limits_below_one_are_refused(total, per_address):
    with pytest.raises(ValueError, match="at least 1 connection"):
        ConnectionSlots(total, per_address)
