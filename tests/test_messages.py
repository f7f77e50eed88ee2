"""pihub.messages: the JSON every channel sends and reads."""

from __future__ import annotations

import json
import math

import pytest

from pihub.events import CATALOGUE, Event
from pihub.messages import FINITE_JSON, Response, dumps


def _strict(text: str) -> object:
    """Parse as a browser's JSON.parse would: NaN and Infinity are errors."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_dumps_is_compact_json():
    assert dumps({"a": [1, 2.5, "x"], "b": None}) == '{"a":[1,2.5,"x"],"b":null}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_anywhere_are_written_as_null(bad):
    event = Event(CATALOGUE.get("SensorDataChangeEvent"), {"data": {"t": bad}}, 1, "serial")
    obj = {"top": bad, "nested": [{"deep": (bad, 1.5)}], "set": {bad}, "event": event,
           "response": Response(output={"v": bad}).to_dict()}
    out = _strict(dumps(obj))
    assert out["top"] is None and out["nested"] == [{"deep": [None, 1.5]}] and out["set"] == [None]
    assert out["event"]["args"]["data"] == {"t": None}
    assert out["response"]["response"]["output"] == {"v": None}


def test_a_message_that_contains_itself_is_refused():
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="[Cc]ircular"):
        dumps(loop)


def test_finite_json_reads_the_constants_python_accepts_as_none():
    assert FINITE_JSON.decode('{"a": NaN, "b": [Infinity, -Infinity], "c": 1e999, "d": 2.5}') == {
        "a": None, "b": [None, None], "c": None, "d": 2.5}
