"""The retained-size estimate of events (pihub/events.py) that bounds the event rings' memory."""

from __future__ import annotations

from typing import Any

import pytest

from pihub import events
from pihub.events import APPROX_SAMPLE, APPROX_VISITS, Event, approx_size

#: the most _approx calls one estimate may make: each container looked into calls it for at
#: most APPROX_SAMPLE items (a dict: keys and values), and is itself one call
MAX_CALLS = APPROX_VISITS * (2 * APPROX_SAMPLE + 1) + 1


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of the estimate's walk (the recursion goes through the module name)."""
    counted: list[int] = []
    real = events._approx

    def counting(value: Any, depth: int, left: list[int]) -> int:
        counted.append(1)
        return real(value, depth, left)

    monkeypatch.setattr(events, "_approx", counting)
    return counted


def test_strings_count_by_length_and_small_events_stay_small() -> None:
    big = 256 << 10  # an MQTT payload at the default max_payload
    mqtt = Event.of("MQTTMessageEvent", "mqtt", topic="home/x", msg="x" * big, qos=0, retain=False)
    assert big <= mqtt.approx_size() <= big + 2048
    assert approx_size(b"y" * big) >= big
    assert Event.of("GPIOEvent", "gpio", pin=17, value=1).approx_size() < 1024


def test_sysex_int_lists_count_their_slots() -> None:
    n = 8192  # the largest sysex: two lists of small ints, 8 bytes a slot (the ints are shared)
    sysex = Event.of("MidiMessageEvent", "midi", message=[0x7F] * n, data=list(range(128)) * (n // 128))
    assert 2 * 8 * n <= sysex.approx_size() <= 2 * 8 * n + 4096


def test_the_event_estimate_is_worked_out_once(calls: list[int]) -> None:
    event = Event.of("CustomEvent", "t", blob="z" * 1000)
    first = event.approx_size()
    made = len(calls)
    assert made > 0 and event.approx_size() == first and len(calls) == made


def test_a_million_lists_are_sampled_not_walked(calls: list[int]) -> None:
    hostile = [[1000, 2000]] * 1_000_000  # one shared inner list: 8 MB of slots
    size = approx_size(hostile)
    assert 0 < len(calls) <= MAX_CALLS
    assert size >= 1_000_000 * 8  # extrapolated from the sample, not dropped


def test_wide_and_deep_nesting_is_bounded_in_work(calls: list[int]) -> None:
    wide: Any = [0] * 1000
    for _ in range(40):  # 1000 ** 40 items reachable, in 40 lists
        wide = [wide] * 1000
    approx_size({"payload": wide, "more": {str(i): [i] for i in range(100_000)}})
    assert 0 < len(calls) <= MAX_CALLS
    calls.clear()
    deep: Any = []
    for _ in range(100_000):  # deeper than any recursion limit
        deep = [deep]
    assert approx_size(deep) > 0
    assert 0 < len(calls) <= MAX_CALLS


def _hidden_bulk(n: int = 1000, big: int = 50_000) -> list[Any]:
    """A list whose large items sit where an even sample of APPROX_SAMPLE never looks."""
    sampled = {i * n // APPROX_SAMPLE for i in range(APPROX_SAMPLE)}
    return [0 if i in sampled else "z" * big for i in range(n)]


def test_bulk_hidden_from_the_sample_is_still_charged_by_its_wire_size() -> None:
    # Attack: an MQTT payload (or request body) shaped so the sample sees only small items
    from pihub.messages import dumps, parse

    hidden = _hidden_bulk(20)  # 12 of 20 items are 50 kB strings, none of them sampled
    assert approx_size(hidden) < 10_000  # what sampling alone would charge
    text = dumps({"type": "event", "args": {"type": "CustomEvent", "subtype": "x", "blob": hidden}})
    event = parse(text, default_origin="mqtt")
    assert isinstance(event, Event) and event.wire_size == len(text)
    assert event.approx_size() >= len(text) >= 12 * 50_000
    decoded = parse({"type": "event", "args": {"type": "CustomEvent", "blob": hidden}}, wire_size=len(text))
    assert isinstance(decoded, Event) and decoded.approx_size() >= len(text)
