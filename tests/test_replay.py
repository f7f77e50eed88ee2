"""``pihub replay`` on the seeds' own examples: hooks that call procedures reading the event.

Each config is written as the Platypush wiki writes it; only the actions that reach
outside pihub's scope (``light.hue.*``, ``music.mpd.*``) are swapped for ``variable.set``.
"""

from __future__ import annotations

import io
import json
import sys
import threading
from typing import Any

import pytest
from pihub_testing import wait_for

from pihub.events import Event
from pihub.messages import Response
from pihub.replay import MAX_CAUSED, MAX_LINE_BYTES, LiveTraces, LongLine, read_lines, replay

MIDI_SLIDER = """
event.hook.OnMidiSlider:
    if:
        type: platypush.message.event.midi.MidiMessageEvent
    then:
        action: procedure.OnMidiSlider

procedure.sync.OnMidiSlider:
    - if ${context['event'].args['message'][0] == 0xb0 and context['event'].args['message'][1] == 0x07}:
        - action: variable.set
          args:
              bri: ${message[2] * 2}
"""

VOICE_SEARCH = """
event.hook.SearchSongVoiceCommand:
    if:
        type: platypush.message.event.assistant.SpeechRecognizedEvent
        phrase: "play ${title} by ${artist}"
    then:
        - action: procedure.search_and_play_song

procedure.sync.search_and_play_song:
    - action: variable.set
      args:
          search_artist: ${artist}
          search_title: ${title}
    - if ${len(output) > 0}:
        - action: variable.set
          args:
              playing: "${title} by ${artist}"
"""

PUSHBULLET = """
event.hook.OnPushbulletNote:
    if:
        type: platypush.message.event.pushbullet.PushbulletEvent
        push_type: note
    then:
        action: procedure.async.OnPushbulletNote

procedure.async.OnPushbulletNote:
    - if ${body.lower().startswith('say ')}:
        - action: variable.set
          args:
              said: ${body[4:]}
      else:
        - action: variable.set
          args:
              note: ${event['args']['body']}
              note_title: ${title}
"""


def trace(write_config: Any, load_config: Any, text: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
    out = io.StringIO()
    bad = replay(load_config(write_config(text)), [json.dumps(e) for e in events], out)
    assert bad == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [line for line in lines if "caused_by" not in line]  # not the VariableChangedEvents


def variables_set(line: dict[str, Any]) -> dict[str, Any]:
    """The variables the line's actions set, checking that every action succeeded."""
    out: dict[str, Any] = {}
    for rec in line["actions"]:
        assert rec["errors"] == [], rec
        if rec["action"] == "variable.set":
            out.update(rec["output"])
    assert "hook_errors" not in line, line["hook_errors"]
    return out


def test_the_midi_slider_example_sets_the_brightness(write_config, load_config) -> None:
    lines = trace(write_config, load_config, MIDI_SLIDER,
                  {"type": "MidiMessageEvent", "message": [0xB0, 0x07, 60], "port": "nanoKONTROL2"},
                  {"type": "MidiMessageEvent", "message": [0x90, 0x3C, 100], "port": "nanoKONTROL2"})
    assert lines[0]["fired"] == ["OnMidiSlider"]
    assert variables_set(lines[0]) == {"bri": 120}
    assert lines[1]["fired"] == ["OnMidiSlider"]
    assert variables_set(lines[1]) == {}  # a note, not the slider: the procedure's if is false


def test_the_voice_search_example_sees_the_phrase_captures(write_config, load_config) -> None:
    lines = trace(write_config, load_config, VOICE_SEARCH,
                  {"type": "SpeechRecognizedEvent", "phrase": "play the final countdown by europe"})
    assert variables_set(lines[0]) == {"search_artist": "europe", "search_title": "the final countdown",
                                       "playing": "the final countdown by europe"}


@pytest.mark.parametrize(("body", "expected"), [
    ("Say hello there", {"said": "hello there"}),
    ("buy milk", {"note": "buy milk", "note_title": "shopping"}),
])
def test_the_pushbullet_example_reads_the_push_in_an_async_procedure(write_config, load_config, body: str,
                                                                    expected: dict[str, Any]) -> None:
    lines = trace(write_config, load_config, PUSHBULLET,
                  {"type": "platypush.message.event.pushbullet.PushbulletEvent", "push_type": "note",
                   "title": "shopping", "body": body})
    assert variables_set(lines[0]) == expected


def test_an_error_in_a_hooks_own_steps_is_in_the_trace_and_the_log(write_config, load_config, caplog) -> None:
    text = """
    event.hook.door:
        if: {type: GPIOEvent, pin: 17}
        then:
            - action: variable.set
              args: {seen: "${nosuchname}"}
    """
    lines = trace(write_config, load_config, text, {"type": "GPIOEvent", "pin": 17, "value": 1})
    assert lines[0]["fired"] == ["door"]
    assert lines[0]["actions"] == []
    assert lines[0]["hook_errors"] == {
        "door": ["hook 'door': then[0]: expression 'nosuchname': name 'nosuchname' is not defined"]}
    assert any("hook door on GPIOEvent" in r.getMessage() and "nosuchname" in r.getMessage()
               for r in caplog.records)


def test_a_failing_action_is_not_repeated_as_a_hook_error(write_config, load_config) -> None:
    text = """
    event.hook.door:
        if: {type: GPIOEvent}
        then:
            - action: variable.set
    """
    lines = trace(write_config, load_config, text, {"type": "GPIOEvent", "pin": 17, "value": 1})
    assert lines[0]["actions"][0]["errors"]
    assert "hook_errors" not in lines[0]


def test_the_daemon_runs_the_seed_example_the_same_way(make_hub) -> None:
    hub = make_hub(MIDI_SLIDER)
    assert hub.publish(Event.of("MidiMessageEvent", message=[0xB0, 0x07, 33], port="p"))
    assert hub.flush()
    assert hub.execute("variable.get", {"name": "bri"}).output == {"bri": 66}


# ------------------------------------------------------------------ the daemon's live traces

FAN_OUT = """
http: {bind_address: 127.0.0.1, port: 0, disable_websocket: true}   # traces are kept for the panel
event.hook.fan_out:
  if: {type: CustomEvent, subtype: fan}
  then:
    - action: variable.set
      args: {fan_start: yes}
    - fork x in ${[1, 2]}:
        - action: variable.set
          args: {fan_x: "${x}"}
    - action: procedure.later
procedure.async.later:
  - action: variable.set
    args: {later: done}
"""


def test_a_hooks_fork_and_async_parts_are_in_its_live_trace(make_hub) -> None:
    hub = make_hub(FAN_OUT)
    seen: list[Event] = []
    # after the trace listener: the event has its id
    hub.dispatcher.add_listener(lambda e: seen.append(e) if e.args.get("subtype") == "fan" else None)
    assert hub.publish(Event.of("CustomEvent", subtype="fan"))
    assert hub.flush()
    assert wait_for(lambda: hub.trace(seen[0].id)["complete"])
    trace = hub.trace(seen[0].id)
    assert trace["fired"] == ["fan_out"]
    records = [(a["hook"], a["action"], a["args"]) for a in trace["actions"]]
    assert records[0] == ("fan_out", "variable.set", {"fan_start": True})
    assert sorted(r[2]["fan_x"] for r in records if "fan_x" in r[2]) == [1, 2]  # the fork's iterations
    assert {r[:2] for r in records} == {("fan_out", "variable.set"), ("fan_out", "procedure.later")}
    assert ("fan_out", "variable.set", {"later": "done"}) in records
    assert all(not a["errors"] for a in trace["actions"])


def _explain_fired(hook: str) -> Any:
    class _Hook:
        name = hook

    return lambda event: ([_Hook()], {})


def test_a_live_trace_is_incomplete_until_its_carried_parts_ran_or_were_dropped() -> None:
    traces = LiveTraces(capacity=4)
    event = Event.of("CustomEvent", subtype="x")
    traces.listener(event)
    explain = _explain_fired("h")
    previous = traces.begin("h", event)
    ran_in: list[object] = []

    def part() -> None:
        ran_in.append(traces.action_started("variable.set", {"k": 1}))

    first, second = traces.carry(part), traces.carry(part)
    traces.end(previous, Response())
    assert traces.trace(event.id, explain, "dev")["complete"] is False  # two parts wait
    runner = threading.Thread(target=first)
    runner.start()
    runner.join(5)
    assert ran_in and ran_in[0] is not None  # on another thread, inside the hook's trace
    assert traces.trace(event.id, explain, "dev")["complete"] is False
    second.drop()  # the pool refused it
    second.drop()  # (once only)
    line = traces.trace(event.id, explain, "dev")
    assert line["complete"] is True
    assert [(a["hook"], a["action"]) for a in line["actions"]] == [("h", "variable.set")]


def test_a_part_carried_outside_any_hook_just_runs() -> None:
    traces = LiveTraces(capacity=4)
    calls: list[object] = []
    task = traces.carry(lambda: calls.append(traces.action_started("variable.set", {})))
    task()
    assert calls == [None]  # no trace to join


# ------------------------------------------------------------------ hostile input
DOOR = """
event.hook.door:
    if: {type: GPIOEvent, pin: 17}
    then:
        - action: logger.info
          args: {msg: "door"}
"""
GOOD_LINE = json.dumps({"type": "GPIOEvent", "pin": 17})


def run_lines(write_config: Any, load_config: Any, text: str, lines: list[Any]) -> tuple[int, list[dict[str, Any]]]:
    """Replay ``lines``: the number of bad lines and every output line, decoded."""
    out = io.StringIO()
    bad = replay(load_config(write_config(text)), lines, out)
    return bad, [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_nested_too_deeply_is_an_error_on_that_line_and_the_next_lines_run(write_config,
                                                                                  load_config) -> None:
    bad, out = run_lines(write_config, load_config, DOOR, ["[" * 100_000, '{"a":' * 100_000, GOOD_LINE])
    assert bad == 2
    for n, rec in enumerate(out[:2], 1):
        assert rec["line"] == n
        assert "nested too deeply" in rec["error"]
        assert str(sys.getrecursionlimit()) in rec["error"]  # the limit
    assert out[2]["fired"] == ["door"]


def test_a_line_that_is_not_utf8_is_an_error_on_that_line_and_the_others_run(write_config,
                                                                              load_config) -> None:
    lines = read_lines(io.BytesIO(b'{"type":"GPIOEvent","pin":17}\n{"type":"GPIOEvent","pin":\xff}\n'
                                  + GOOD_LINE.encode() + b"\n"))
    bad, out = run_lines(write_config, load_config, DOOR, list(lines))
    assert bad == 1
    assert out[0]["fired"] == ["door"]
    assert out[1]["line"] == 2
    assert "not UTF-8" in out[1]["error"] and "0xff" in out[1]["error"] and "offset 26" in out[1]["error"]
    assert out[2]["fired"] == ["door"]


class _EndlessLine:
    """A binary stream: ``first``, then a line of ``size`` bytes made up as it is read, then
    ``last``. It refuses a read of more than ``most`` bytes, so a reader that holds a whole
    line fails instead of passing unseen."""

    def __init__(self, first: bytes, size: int, last: bytes, most: int) -> None:
        self.parts = [first, b"a" * 4096, last]
        self.left = size  # of the long line, "\n" included
        self.most = most

    def readline(self, size: int = -1) -> bytes:
        assert 0 < size <= self.most, f"read of {size} bytes"
        if self.parts[0]:
            first = self.parts[0]
            self.parts[0] = b""
            return first
        if self.left:
            n = min(size, self.left, 4096)
            self.left -= n
            return self.parts[1][: n - 1] + (b"\n" if not self.left else b"a")
        last, self.parts[2] = self.parts[2], b""
        return last


def test_a_line_longer_than_the_cap_is_read_in_bounded_chunks_and_skipped() -> None:
    cap = 1000
    stream = _EndlessLine(b"before\n", 50_000_000, b"after\n", most=cap + 2)
    assert list(read_lines(stream, cap)) == [b"before\n", LongLine(cap), b"after\n"]  # type: ignore[arg-type]


@pytest.mark.parametrize(("data", "expected"), [
    (b"a" * 10 + b"\n" + b"b" * 10, [b"a" * 10 + b"\n", b"b" * 10]),  # the cap itself, with and without "\n"
    (b"a" * 11 + b"\n" + b"b" * 11, [LongLine(10), LongLine(10)]),  # one byte over
    (b"a" * 25 + b"\r\n\n", [LongLine(10), b"\n"]),
    (b"a" * 10 + b"\r\n" + b"b" * 10 + b"\n", [b"a" * 10 + b"\r\n", b"b" * 10 + b"\n"]),  # "\r\n" is not counted
    (b"a" * 11 + b"\r\n" + b"c\n", [LongLine(10), b"c\n"]),
])
def test_the_line_cap_counts_the_bytes_before_the_newline(data: bytes, expected: list[Any]) -> None:
    assert list(read_lines(io.BytesIO(data), 10)) == expected


def test_an_overlong_line_is_an_error_naming_the_cap(write_config, load_config) -> None:
    bad, out = run_lines(write_config, load_config, DOOR, [GOOD_LINE, LongLine(MAX_LINE_BYTES), GOOD_LINE])
    assert bad == 1
    assert out[1] == {"line": 2, "error": out[1]["error"]}
    assert str(MAX_LINE_BYTES) in out[1]["error"] and "longer" in out[1]["error"]
    assert out[2]["fired"] == ["door"]


@pytest.mark.parametrize(("line", "said"), [
    ('"x"', ["must be a JSON object, not a string ('x')"]),
    ("[1, 2]", ["must be a JSON object, not an array of 2 items"]),
    ("null", ["must be a JSON object, not null"]),
    ('{"type": "event"}', ["event has no 'args'"]),
    ('{"type": "event", "args": "' + "B" * 10_000 + '"}', ["'args' must be a JSON object, not a string ('BBB"]),
    ('{"type": 17, "pin": 1}', ["'type' must be a string", "not a number (17)"]),
    ('{"type": "event", "args": {"type": [1]}}', ["'type' must be a string", "not an array of 1 item"]),
    ('{"type": {"a": 1}}', ["'type' must be a string", "not an object of 1 key"]),
    ('{"type": "event", "args": {"pin": 1}}', ["event args have no 'type'"]),
    ('{"type": "' + "A" * 10_000 + '"}', ["unknown event type 'AAA"]),
])
def test_a_bad_event_line_is_reported_naming_the_bad_value_shortly(write_config, load_config, line: str,
                                                                   said: list[str]) -> None:
    bad, out = run_lines(write_config, load_config, DOOR, [line, GOOD_LINE])
    assert bad == 1
    assert out[0] == {"line": 1, "error": out[0]["error"]}
    assert all(s in out[0]["error"] for s in said), out[0]["error"]
    assert len(out[0]["error"]) < 200  # 10 000 characters are not echoed
    assert out[1]["fired"] == ["door"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_number_that_json_has_not_reads_as_null_for_the_hooks_too(write_config, load_config,
                                                                     number: str) -> None:
    bad, out = run_lines(write_config, load_config, DOOR, ['{"type": "GPIOEvent", "pin": ' + number + "}"])
    assert bad == 0
    assert out[0]["event"]["args"]["pin"] is None
    assert out[0]["not_fired"] == {"door": "pin: None != 17"}  # what the trace shows is what the hook saw


class _Bounded(io.StringIO):
    """Output that fails the test, rather than hanging it, past ``most`` lines."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    def write(self, s: str) -> int:
        assert self.getvalue().count("\n") < self.most, "replay does not stop"
        return super().write(s)


def test_a_hook_that_fires_its_own_event_stops_at_the_cap_of_caused_events(write_config, load_config) -> None:
    text = DOOR + """
event.hook.loop:
    if: {type: CustomEvent}
    then: {action: event.fire, args: {type: CustomEvent, args: {n: 1}}}
"""
    out = _Bounded(most=MAX_CAUSED + 10)
    bad = replay(load_config(write_config(text)), ['{"type": "CustomEvent"}', GOOD_LINE], out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert bad == 1
    assert lines[0]["fired"] == ["loop"]
    caused = lines[1:MAX_CAUSED + 1]
    assert all(line["caused_by"] == 1 for line in caused)
    error = lines[MAX_CAUSED + 1]
    assert error == {"line": 1, "error": error["error"]}
    assert f"more than {MAX_CAUSED} events" in error["error"] and "1 more dropped" in error["error"]
    assert lines[MAX_CAUSED + 2]["fired"] == ["door"]  # the next line runs, with its own count
    assert len(lines) == MAX_CAUSED + 3
