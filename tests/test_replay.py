"""``pihub replay`` on the seeds' own examples: hooks that call procedures reading the event.

Each config is written as the Platypush wiki writes it; only the actions that reach
outside pihub's scope (``light.hue.*``, ``music.mpd.*``) are swapped for ``variable.set``.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
from pihub_testing import wait_for

from pihub.events import Event
from pihub.messages import Response
from pihub.replay import LiveTraces, replay

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
