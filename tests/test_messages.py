"""pihub.messages: the JSON every channel sends and reads."""

from __future__ import annotations

import json
import math

import pytest

from pihub.errors import MessageError
from pihub.events import CATALOGUE, Event
from pihub.messages import FINITE_JSON, Request, Response, dumps, loads, parse


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


# -------------------------------------------------- reading what comes from outside
def test_loads_ignores_a_byte_order_mark_as_rfc_8259_allows():
    assert loads(b'\xef\xbb\xbf{"v": 1}') == loads('\ufeff{"v": 1}') == {"v": 1}


def test_loads_reads_every_number_finite_from_text_and_bytes():
    for doc in ('{"a": NaN, "b": 1e999, "c": -Infinity, "d": 1.5}', b'{"a": NaN, "b": 1e999, "c": -Infinity, "d": 1.5}'):
        assert loads(doc) == {"a": None, "b": None, "c": None, "d": 1.5}


@pytest.mark.parametrize(("doc", "said"), [
    (b'{"a": "\xff"}', "not UTF-8 text"),
    ('{"a": 1}'.encode("utf-16"), "not UTF-8 text (it is UTF-16: send JSON as UTF-8)"),
    (b'\xef\xbb\xbf{"a": "\xff"}', "not UTF-8 text"),  # a BOM, then a bad byte: UTF-8 all the same
    ('{"secret-token-abc": ', "not valid JSON: Expecting value at line 1 column 22"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply to decode (at most about"),
    ('{"n": ' + "9" * 5000 + "}", "not valid JSON: a number has more than"),
])
def test_loads_refuses_bad_documents_naming_why_without_echoing_them(doc, said):
    with pytest.raises(MessageError) as e:
        loads(doc)
    assert said in str(e.value) and "SIG" not in str(e.value)
    assert "secret" not in str(e.value) and len(str(e.value)) < 120


@pytest.mark.parametrize(("message", "said"), [
    ('"x"', "message must be a JSON object, not a string ('x')"),
    ("[1, 2]", "message must be a JSON object, not an array of 2 items"),
    ({"type": {"token": "S3CRET-never-echoed"}}, "message type must be 'request' or 'event', not an object of 1 key"),
    ("null", "message must be a JSON object, not null"),
    ({"type": "event"}, "event has no 'args' (a JSON object)"),
    ({"type": "event", "args": "B" * 10_000}, "event 'args' must be a JSON object, not a string ('BBB"),
    ({"type": "event", "args": {"pin": 1}}, "event args have no 'type'"),
    ({"type": "event", "args": {"type": 17}}, "event 'type' must be a string (an event type name such as "
                                              "'GPIOEvent'), not a number (17)"),
    ({"type": "event", "args": {"type": "A" * 10_000}}, "unknown event type 'AAA"),
    ({"type": "C" * 10_000}, "message type must be 'request' or 'event', not a string ('CCC"),
])
def test_parse_names_the_bad_value_and_its_json_type_shortly(message, said):
    with pytest.raises(MessageError) as e:
        parse(message)
    assert said in str(e.value)
    assert len(str(e.value)) < 200  # a 10 000-character value is not echoed


def test_parse_reads_text_as_loads_does():
    req = parse('{"type": "request", "action": "variable.set", "args": {"t": NaN}}', default_origin="http")
    assert isinstance(req, Request) and req.args == {"t": None} and req.origin == "http"
