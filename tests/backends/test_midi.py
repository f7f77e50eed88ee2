"""The MIDI backend through a real JACK server (dummy driver, HARDWARE.md §3.3) and the
controller simulator of hw-mocks/midi_controller.py; the throttle on a ManualClock."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pihub_testing import finishes, load_hw_mock, need_tool, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.midi import MidiBackend, PortPattern, Throttle, _Input, decode
from pihub.clock import ManualClock
from pihub.engine.actions import ActionRegistry
from pihub.errors import ActionError, ConfigProblems
from pihub.events import Event

MOCK = load_hw_mock("midi_controller")
CC, NOTE_ON, NOTE_OFF = 0xB0, 0x90, 0x80


def _need_jack() -> None:
    need_tool(shutil.which("jackd") is not None and shutil.which("jack_lsp") is not None,
              "jackd is not installed (apt-get install --no-install-recommends jackd2)")
    for module in ("mido", "rtmidi"):
        need_tool(importlib.util.find_spec(module) is not None,
                  f"{module} is not installed (pip install mido python-rtmidi)")


@pytest.fixture(scope="module")
def jack() -> Iterator[Any]:
    """A private jackd (dummy driver) for this module; the process's JACK env points at it."""
    _need_jack()
    with MOCK.private_jack(f"pihubtest{os.getpid()}") as server:
        yield server


@pytest.fixture
def controller(jack: Any) -> Iterator[Any]:
    """The simulated controller, plugged in: JACK port ``controller:slider``."""
    with MOCK.MidiController("controller", "slider") as ctl:
        yield ctl


class Recorder:
    """An ``emit`` that records events and can wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> bool:
        self.events.append(event)
        return True

    def of(self, name: str) -> list[Event]:
        return [e for e in self.events if e.type.name == name]

    def messages(self) -> list[list[int]]:
        return [e.args["message"] for e in self.of("MidiMessageEvent")]


@pytest.fixture
def open_backend(jack: Any) -> Iterator[Callable[..., tuple[MidiBackend, Recorder]]]:
    """``make(config, clock=None)``: an open JACK backend and its recorder; closed at teardown."""
    made: list[MidiBackend] = []

    def make(config: dict[str, Any], clock: Any = None) -> tuple[MidiBackend, Recorder]:
        backend = MidiBackend({"api": "jack", "poll_interval": 0.02, **config}, clock=clock)
        backend.validate_environment()
        rec = Recorder()
        backend.open(rec)
        made.append(backend)
        return backend, rec

    yield make
    for b in made:
        b.close()


def _listening(backend: MidiBackend, port: str = "controller:slider") -> bool:
    return port in backend.list_ports()["listening"]


SYNC, MARK = [CC, 119, 0], [CC, 119, 1]  # a control no test uses


def _synced(backend: MidiBackend, controller: Any, rec: Recorder) -> None:
    """Wait until ``backend`` listens to ``controller`` and messages go through, then
    forget what arrived: JACK applies a new connection at a cycle boundary, so what is sent
    right after the port opened may not be delivered."""
    assert wait_for(lambda: _listening(backend, f"{controller.client}:{controller.port}"), 10), \
        backend.list_ports()
    deadline = time.monotonic() + 10
    while SYNC not in rec.messages():
        assert time.monotonic() < deadline, "no message reached the backend"
        controller.send(SYNC)
        wait_for(lambda: SYNC in rec.messages(), 0.05)
    controller.send(MARK)  # JACK keeps a port's order: the SYNCs still in flight come first
    assert wait_for(lambda: MARK in rec.messages(), 10)
    rec.events.clear()


# ----------------------------------------------------------------------------- hooks
HOOKS = """
mock: {outputs: {brightness: null, volume: null, pan: null}}
midi:
  api: jack
  inputs: [slider]
  poll_interval: 0.02
event.hook.slider:
  if: {type: MidiMessageEvent}
  then: {action: procedure.on_midi}
procedure.on_midi:
  - if ${context['event'].args['message'][0] == 0xb0 and context['event'].args['message'][1] == 7}:
      - action: mock.set
        args: {name: brightness, value: "${message[2] * 2}"}
event.hook.volume:
  if: {type: MidiMessageEvent, kind: control_change, control: 7}
  then:
    - action: mock.set
      args: {name: volume, value: "${value}"}
event.hook.pan:
  if: {type: MidiMessageEvent, control: 10, channel: 1}
  then:
    - action: mock.set
      args: {name: pan, value: "${value}"}
"""


def test_a_message_fires_hooks_written_as_the_seeds_write_them_and_on_decoded_fields(make_hub, controller):
    hub = make_hub(HOOKS)
    outputs = hub.backends["mock"].outputs
    assert wait_for(lambda: _listening(hub.backends["midi"]), 10), hub.backends["midi"].list_ports()
    deadline = time.monotonic() + 10
    while outputs["volume"] != 1:  # JACK applies the new connection at a cycle boundary
        assert time.monotonic() < deadline, "no message reached the hooks"
        controller.cc(7, 1)
        wait_for(lambda: outputs["volume"] == 1, 0.05)
    controller.note(60, 100)  # a note: the procedure's test is false, no control hook matches
    controller.cc(10, 33)  # control 10 on channel 0: the pan hook wants channel 1
    controller.cc(7, 50)
    assert wait_for(lambda: outputs["brightness"] == 100 and outputs["volume"] == 50, 10), outputs
    controller.cc(10, 20, channel=1)
    assert wait_for(lambda: outputs["pan"] == 20, 10), outputs
    assert outputs == {"brightness": 100, "volume": 50, "pan": 20}


# ----------------------------------------------------------------------------- events
def test_messages_carry_platypushs_fields_and_the_decoded_ones(controller, open_backend):
    backend, rec = open_backend({"inputs": ["slider"]})
    assert wait_for(lambda: rec.of("MidiDeviceConnectedEvent"), 10)
    assert rec.of("MidiDeviceConnectedEvent")[0].args == {"device": "controller:slider", "port": 0}
    _synced(backend, controller, rec)
    controller.cc(7, 64, channel=2)
    controller.note(60, 90)
    controller.send([0xE0, 0x00, 0x40])  # pitch wheel centred
    controller.send([0xF0, 0x7E, 0x01, 0xF7])  # sysex
    assert wait_for(lambda: len(rec.of("MidiMessageEvent")) == 4, 10), rec.events
    cc, note, wheel, sysex = (e.args for e in rec.of("MidiMessageEvent"))
    delay = cc.pop("delay")
    assert isinstance(delay, float) and delay >= 0
    assert cc == {"message": [0xB2, 7, 64], "device": "controller:slider", "port": 0,
                  "kind": "control_change", "channel": 2, "control": 7, "value": 64}
    assert {k: note[k] for k in ("message", "kind", "channel", "note", "velocity")} == {
        "message": [0x90, 60, 90], "kind": "note_on", "channel": 0, "note": 60, "velocity": 90}
    assert (wheel["kind"], wheel["pitch"]) == ("pitchwheel", 0)
    assert (sysex["kind"], sysex["data"], sysex["message"]) == ("sysex", [0x7E, 0x01], [0xF0, 0x7E, 0x01, 0xF7])
    assert all(e.source == "midi" for e in rec.events)


def test_several_inputs_by_name_and_regex_and_every_input_by_default(jack, open_backend):
    with MOCK.MidiController("keys", "keyboard") as keys, MOCK.MidiController("pads", "drum pads") as pads, \
            MOCK.MidiController("other", "knobs"):
        named, rec = open_backend({"inputs": ["keyboard", "/^pads:/"], "virtual_output": None})
        everything, rec_all = open_backend({"client_name": "pihub2"})
        assert wait_for(lambda: everything.list_ports()["virtual_output"] == "pihub MIDI out", 10)
        assert wait_for(lambda: named.list_ports()["listening"] == ["keys:keyboard", "pads:drum pads"], 10), \
            named.list_ports()
        # every input but its own virtual output (pihub2:pihub MIDI out)
        assert wait_for(lambda: everything.list_ports()["listening"] == ["keys:keyboard", "other:knobs",
                                                                         "pads:drum pads"], 10), \
            everything.list_ports()
        assert named.describe_status()["inputs"] == {"keyboard": "connected", "/^pads:/": "connected"}
        assert everything.describe_status()["inputs"] == {
            "keys:keyboard": "connected", "other:knobs": "connected", "pads:drum pads": "connected"}
        keys.note(64)
        pads.note(36)
        assert wait_for(lambda: sorted(e.args["device"] for e in rec.of("MidiMessageEvent"))
                        == ["keys:keyboard", "pads:drum pads"], 10)
        assert named.status == BackendStatus.RUNNING


def test_the_input_vanishing_and_coming_back(controller, open_backend):
    backend, rec = open_backend({"inputs": ["slider"]})
    _synced(backend, controller, rec)
    controller.cc(7, 1)
    assert wait_for(lambda: rec.messages() == [[CC, 7, 1]], 10)
    controller.vanish()
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED, 10)
    assert "midi input 'slider' not found" in backend.error and "waiting" in backend.error
    assert rec.of("MidiDeviceDisconnectedEvent")[0].args == {"device": "controller:slider", "port": 0}
    assert backend.list_ports()["missing"] == ["'slider'"]
    controller.appear()
    assert wait_for(lambda: backend.status == BackendStatus.RUNNING and _listening(backend), 10), backend.error
    assert backend.error is None
    assert len(rec.of("MidiDeviceConnectedEvent")) == 1 and backend.list_ports()["connects"] == 2
    _synced(backend, controller, rec)
    controller.cc(7, 2)
    assert wait_for(lambda: rec.messages() == [[CC, 7, 2]], 10), rec.messages()


def test_a_flood_from_a_sender_in_the_same_process_never_stalls_jack(controller, open_backend):
    # A send blocks (in rtmidi, holding the GIL) until JACK drains its buffer; were pihub's
    # input read by Python on JACK's process thread, that thread would wait for the GIL
    # and JACK would never drain it: a deadlock. The reader thread must keep JACK free.
    backend, rec = open_backend({"inputs": ["slider"]})
    _synced(backend, controller, rec)
    before = backend.list_ports()["messages"]
    finishes(lambda: [controller.cc(7, i % 128) for i in range(40_000)], timeout=60, what="the flood")
    # after the flood a marker arrives once everything before it did; JACK may drop a marker
    # sent while its port buffer still overflows, so it is sent again until one arrives
    def marker_arrived() -> bool:
        controller.cc(9, 1)
        return wait_for(lambda: bool(rec.messages()) and rec.messages()[-1] == [CC, 9, 1], 0.5)

    assert wait_for(marker_arrived, 30)
    # JACK drops what overflows a cycle's port buffer; pihub loses none of what it read
    assert backend.list_ports()["messages"] - before == len(rec.messages())


def _marker_arrived(controller: Any, rec: Recorder) -> bool:
    """Send a marker (again) and say whether it arrived last: then everything before it did."""
    controller.cc(9, 1)
    return wait_for(lambda: bool(rec.messages()) and rec.messages()[-1] == [CC, 9, 1], 0.5)


def test_a_burst_faster_than_pihub_decodes_arrives_whole(controller, open_backend):
    # ~250,000 messages/s: rtmidi's queue once held 1024 of them and dropped the rest with a
    # line on stderr, which pihub could not count; less than INPUT_QUEUE, so even a reader
    # that did not run at all during the burst loses none now
    backend, rec = open_backend({"inputs": ["slider"]})
    _synced(backend, controller, rec)
    for i in range(4000):
        controller.cc(7, i % 128)
    assert wait_for(lambda: _marker_arrived(controller, rec), 30)
    burst = [m for m in rec.messages() if m[:2] == [CC, 7]]
    assert burst == [[CC, 7, i % 128] for i in range(4000)]
    assert backend.list_ports()["dropped_input"] == 0


class _Queued:
    """rtmidi.MidiIn's reading side: ``get_message`` pops ``(message, delay)`` or None."""

    def __init__(self, messages: list[list[int]]) -> None:
        self.messages = messages

    def get_message(self) -> tuple[list[int], float] | None:
        return (self.messages.pop(0), 0.0) if self.messages else None


def _warnings(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "pihub.backends.midi" and r.levelno == logging.WARNING and word in r.getMessage()]


def test_a_backlog_beyond_input_buffer_is_dropped_counted_and_warned_about_once(caplog):
    # the JACK reader takes everything rtmidi queued before decoding (rtmidi's own overflow
    # cannot be counted); what exceeds input_buffer is pihub's to drop, and it counts it
    backend = MidiBackend({"input_buffer": 64, "max_sysex": 16}, clock=ManualClock())
    inp = _Input("ctl:slider", 0, _Queued([[CC, 7, i % 128] for i in range(100)] + [[0xF0] + [1] * 20 + [0xF7]]))
    with caplog.at_level(logging.WARNING, logger="pihub.backends.midi"):
        backend._take(inp)
        inp.midi_in.messages = [[CC, 8, 0]] * 50
        backend._take(inp)
    assert [m for m, _ in inp.backlog] == [[CC, 7, i] for i in range(64)]
    counts = backend.list_ports()
    assert (counts["dropped_input"], counts["oversize"]) == (36 + 50, 1)
    assert len(_warnings(caplog, "behind")) == 1, caplog.text  # not one per drop
    backend._forget(inp)  # the input closed with 64 waiting: they are lost, and counted
    assert backend.list_ports()["dropped_input"] == 64 + 36 + 50


def test_an_input_not_plugged_in_yet_is_waited_for_and_the_error_lists_the_ports(controller, open_backend):
    backend, rec = open_backend({"inputs": ["nanoKONTROL2", "slider"]})
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED and _listening(backend), 10)
    assert backend.error.startswith("midi input 'nanoKONTROL2' not found (input ports: 'controller:slider')")
    status = backend.describe_status()
    assert (status["api"], status["inputs"]) == ("jack", {"nanoKONTROL2": "waiting", "slider": "connected"})
    with MOCK.MidiController("nanoKONTROL2", "nanoKONTROL2 MIDI 1"):
        assert wait_for(lambda: backend.status == BackendStatus.RUNNING, 10), backend.error
        assert backend.list_ports()["listening"] == ["controller:slider", "nanoKONTROL2:nanoKONTROL2 MIDI 1"]


def test_the_panels_entities_are_the_inputs_connected_or_waiting(controller, open_backend):
    assert MidiBackend({"inputs": ["slider"]}).describe_entities() == []  # not open: nothing known
    backend, _ = open_backend({"inputs": ["nanoKONTROL2", "slider"]})
    assert wait_for(lambda: _listening(backend), 10)
    assert backend.describe_entities() == [{"name": "nanoKONTROL2", "kind": "midi_input", "state": "waiting"},
                                           {"name": "slider", "kind": "midi_input", "state": "connected"}]


def test_a_jack_server_started_later_is_waited_for(tmp_path, open_backend, jack):
    name = f"pihublate{os.getpid()}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        backend, _ = open_backend({"poll_interval": 0.05})
        assert wait_for(lambda: backend.status == BackendStatus.DEGRADED, 10)
        assert backend.error.startswith("no MIDI system answers (jack: ") and "jackd running" in backend.error
        with pytest.raises(ActionError, match="midi is not ready: no MIDI system answers"):
            backend.play_note(60)
        with MOCK.JackServer(name):
            assert wait_for(lambda: backend.status == BackendStatus.RUNNING, 10), backend.error
            assert backend.list_ports()["api"] == "jack"
            backend.close()
    finally:
        os.environ["JACK_DEFAULT_SERVER"] = jack.name


def test_a_jack_server_that_stops_and_restarts_is_reconnected_to(jack, open_backend):
    # The controller runs in its own process: libjack frees a dead server's clients when
    # the process's next client opens, so a controller living in this process would be
    # freed under its feet by pihub's reconnection (pihub closes its own ones first).
    name = f"pihubrestart{os.getpid()}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    server = MOCK.JackServer(name)
    try:
        with server, MOCK.MidiControllerProcess("controller", "slider", env=server.env) as controller:
            backend, rec = open_backend({"inputs": ["slider"]})
            statuses: list[tuple[BackendStatus, str | None]] = []
            backend.bind_status_listener(lambda b: statuses.append((b.status, b.error)))
            _synced(backend, controller, rec)
            assert backend.describe_status()["inputs"] == {"slider": "connected"}
            controller.cc(7, 1)
            assert wait_for(lambda: rec.messages() == [[CC, 7, 1]], 10)

            server.stop()
            assert wait_for(lambda: backend.status == BackendStatus.DEGRADED, 20), backend.describe_status()
            assert backend.error.startswith("the JACK server stopped answering (")
            assert wait_for(lambda: backend.list_ports()["api"] is None, 20)  # its ports closed
            assert rec.of("MidiDeviceDisconnectedEvent")[-1].args == {"device": "controller:slider", "port": 0}
            status = backend.describe_status()
            assert (status["api"], status["inputs"]) == (None, {"slider": "waiting"})
            with pytest.raises(ActionError, match="midi is not ready: the JACK server stopped answering"):
                backend.play_note(60)
            # while it is down the back-off keeps the reason and adds the retry's
            assert wait_for(lambda: "no MIDI system answers (jack: " in (backend.error or ""), 10), backend.error
            assert backend.error.startswith("the JACK server stopped answering (")

            server.start()  # the same name, a new server: nothing of the old graph is left
            assert wait_for(lambda: backend.list_ports()["api"] == "jack", 20), backend.error
            assert "pihub:pihub MIDI out" in server.ports()  # the virtual output is back
            controller.vanish()  # the controller's driver rejoins the new server
            controller.appear()
            assert wait_for(lambda: backend.status == BackendStatus.RUNNING, 20), backend.error
            assert backend.describe_status()["inputs"] == {"slider": "connected"}
            assert [e.args["device"] for e in rec.events if e.type.name.startswith("MidiDevice")] == [
                "controller:slider", "controller:slider"]  # disconnected with the server, connected again
            assert rec.of("MidiDeviceConnectedEvent")
            _synced(backend, controller, rec)
            controller.cc(7, 2)
            assert wait_for(lambda: rec.messages() == [[CC, 7, 2]], 10), rec.messages()
            with MOCK.MidiMonitor("pihub MIDI out") as monitor:  # and the virtual output works
                backend.control_change(1, 5)
                assert monitor.wait_count(1, 10) and [m for _, m in monitor.received] == [[CC, 1, 5]]
            backend.close()  # before the server goes (its clients are closed while it answers)
        degraded = [e for s, e in statuses if s == BackendStatus.DEGRADED]
        # running -> degraded (server gone; then the retries; then the input not back yet) -> running
        assert statuses[0] == statuses[-1] == (BackendStatus.RUNNING, None), statuses
        assert degraded and degraded[0].startswith("the JACK server stopped answering ("), statuses
        assert all(s == BackendStatus.DEGRADED for s, _ in statuses[1:-1]), statuses
    finally:
        os.environ["JACK_DEFAULT_SERVER"] = jack.name


class _Loopback:
    """Stands in for the two probes' private JACK connection: a ping sent comes back,
    unless the server is ``answering=False``; ``queue`` may hold what others sent."""

    def __init__(self) -> None:
        self.answering = True
        self.queue: list[tuple[list[int], float]] = []

    def send_message(self, message: list[int]) -> None:
        if self.answering:
            self.queue.append((list(message), 0.0))

    def get_message(self) -> tuple[list[int], float] | None:
        return self.queue.pop(0) if self.queue else None


def test_the_server_is_given_up_only_after_several_pings_went_unanswered_over_the_timeout():
    clock = ManualClock()
    backend = MidiBackend({"api": "jack"}, clock=clock)
    link = _Loopback()
    backend._probe_in = backend._probe_out = link  # the liveness rule alone: no scanner, no JACK
    backend._pinging, backend._answered_at = True, clock.now()
    assert backend._server_answers()  # ping 1
    assert backend._server_answers()  # takes ping 1's answer, sends ping 2
    link.queue.clear()  # ping 2's answer is late (a slow cycle) ...
    link.answering = False
    clock.advance(60)  # ... and the scanner was paused for a minute (a suspended Pi, a busy box)
    assert backend._server_answers()  # one unanswered ping is not a lost server
    assert backend._server_answers()  # nor two
    assert not backend._server_answers()  # three, over LIVENESS_TIMEOUT or more: gone

    link.answering = True
    link.queue.append(([0xFE], 0.0))  # an answer resets the rule
    assert backend._server_answers()
    link.answering = False
    link.queue.clear()
    for _ in range(5):  # many unanswered pings, within LIVENESS_TIMEOUT of the last answer
        assert backend._server_answers()
    link.queue.append(([CC, 7, 1], 0.0))  # something else connected to the port is no answer
    clock.advance(1.5)
    assert backend._server_answers()
    clock.advance(0.5)
    assert not backend._server_answers()


def test_alsa_is_reported_missing_on_a_machine_without_a_sequencer(jack, open_backend):
    backend, _ = open_backend({"api": "alsa"})
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED, 10)
    assert backend.error.startswith("no MIDI system answers (alsa: ")
    auto, _ = open_backend({"api": "auto", "client_name": "pihub-auto"})
    assert wait_for(lambda: auto.list_ports()["api"] == "jack", 10)  # ALSA first, then JACK


# ----------------------------------------------------------------------------- outputs
def test_the_virtual_output_is_seen_by_other_jack_clients_and_play_note_ends_after_duration(jack, open_backend):
    backend, _ = open_backend({"virtual_output": "pihub synth out"})
    assert wait_for(lambda: backend.list_ports()["virtual_output"] == "pihub synth out", 10)
    assert "pihub:pihub synth out" in jack.ports()  # jack_lsp, another program
    with MOCK.MidiMonitor("pihub synth out") as monitor:
        duration = 0.3
        out = backend.play_note(62, 80, duration)
        assert out == {"device": "pihub synth out", "note": 62, "velocity": 80, "channel": 0, "duration": duration}
        assert monitor.wait_count(2, 10), monitor.received
        (t_on, on), (t_off, off) = monitor.received
        assert (on, off) == ([NOTE_ON, 62, 80], [NOTE_OFF, 62, 0])
        assert t_off - t_on >= duration - 0.011  # JACK delivers once per 5.3 ms period: both may move by one


def test_play_note_schedules_its_note_off_on_the_clock_and_never_blocks(jack, open_backend):
    clock = ManualClock()
    backend, _ = open_backend({}, clock=clock)
    assert wait_for(lambda: backend.list_ports()["virtual_output"] is not None, 10)
    with MOCK.MidiMonitor("pihub MIDI out") as monitor:
        backend.play_note(60, 100, duration=2.0)
        assert clock.pending() == [2.0]
        clock.advance(1.9)
        backend.control_change(1, 5)  # a marker: had the note-off been sent, it would come first
        assert monitor.wait_count(2, 10)
        clock.advance(0.1)
        assert monitor.wait_count(3, 10)
        backend.play_note(61, 100, duration=1.0)  # released early: its timer must not send again
        backend.release_note(61)
        clock.advance(5)
        backend.control_change(1, 6)
        assert monitor.wait_count(6, 10)
        assert [m for _, m in monitor.received] == [
            [NOTE_ON, 60, 100], [CC, 1, 5], [NOTE_OFF, 60, 0], [NOTE_ON, 61, 100], [NOTE_OFF, 61, 0], [CC, 1, 6]]


def test_release_all_and_close_send_the_pending_note_offs(jack, open_backend):
    backend, _ = open_backend({}, clock=ManualClock())
    assert wait_for(lambda: backend.list_ports()["virtual_output"] is not None, 10)
    registry = ActionRegistry()
    registry.register(backend)
    with MOCK.MidiMonitor("pihub MIDI out") as monitor:
        # Platypush's action names; no duration: the note sounds until released
        assert registry.execute("midi.play", {"note": 60, "velocity": 100}).errors == []
        backend.play_note(64, 100, 10.0, channel=3)
        released = registry.execute("midi.release_all")
        assert released.output == [{"device": "pihub MIDI out", "channel": 0, "note": 60},
                                   {"device": "pihub MIDI out", "channel": 3, "note": 64}]
        backend.play_note(67, 100, 10.0)
        backend.close()  # the note still sounding is released
        assert monitor.wait_count(6, 10), monitor.received
        assert [m for _, m in monitor.received] == [
            [NOTE_ON, 60, 100], [NOTE_ON | 3, 64, 100], [NOTE_OFF, 60, 0], [NOTE_OFF | 3, 64, 0],
            [NOTE_ON, 67, 100], [NOTE_OFF, 67, 0]]
    names = {d["action"] for d in registry.describe()} | {a for d in registry.describe() for a in d["aliases"]}
    assert names == {
        "midi.send_message", "midi.play_note", "midi.play", "midi.release_note", "midi.release",
        "midi.release_all_notes", "midi.release_all", "midi.control_change", "midi.list_ports",
        "midi.query_ports", "midi.query"}


def test_sending_to_a_named_output_port(jack, open_backend):
    backend, _ = open_backend({"output": "synth"})
    assert wait_for(lambda: backend.list_ports()["api"] == "jack", 10)
    with pytest.raises(ActionError, match="midi output 'synth' not found; output ports: 'pihub MIDI out'"):
        backend.control_change(7, 1)
    import rtmidi

    synth = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="synth")  # a synth: a client with an input port
    got: list[list[int]] = []
    synth.set_callback(lambda ev, _d: got.append(ev[0]))
    synth.open_virtual_port("midi in")
    try:
        assert backend.control_change(7, 99, channel=1) == {"device": "synth:midi in", "control": 7, "value": 99,
                                                            "channel": 1}
        assert backend.send_message([0xC0, 5], device="/^synth:/")["device"] == "synth:midi in"
        assert wait_for(lambda: got == [[0xB1, 7, 99], [0xC0, 5]], 10), got
    finally:
        synth.close_port()
        synth.delete()


def test_an_unknown_port_name_is_an_error_listing_the_ports_that_exist(jack, open_backend):
    backend, _ = open_backend({})
    assert wait_for(lambda: backend.list_ports()["api"] == "jack", 10)
    with MOCK.MidiMonitor("pihub MIDI out", client="fluidsynth"):
        with pytest.raises(ActionError) as err:
            backend.send_message([0x90, 60, 100], device="nanoSYNTH")
    assert str(err.value) == "midi output 'nanoSYNTH' not found; output ports: 'fluidsynth:in', 'pihub MIDI out'"


@pytest.mark.parametrize(("call", "message"), [
    (lambda b: b.send_message([0x90, 60]), "values [144, 60] are not one MIDI message"),
    (lambda b: b.send_message([0x90, 60, 300]), "values [144, 60, 300] are not one MIDI message"),
    (lambda b: b.send_message([]), "values [] are not one MIDI message"),
    (lambda b: b.send_message([0xF0, 1, 2]), "values [240, 1, 2] are not one MIDI message"),  # unterminated sysex
    (lambda b: b.play_note(128), "note must be 0-127, not 128"),
    (lambda b: b.play_note(60, 0), "velocity must be 1-127, not 0"),
    (lambda b: b.play_note(60, 100, -1.0), "duration must be 0 or more seconds, not -1"),
    (lambda b: b.play_note(60, 100, float("nan")), "duration must be 0 or more seconds, not nan"),
    (lambda b: b.control_change(7, 64, channel=16), "channel must be 0-15, not 16"),
    (lambda b: b.control_change(7, 64, device="/[unclosed/"), "device '/[unclosed/' is not a valid regular"),
    (lambda b: b.control_change(7, 64, device=""), "device must be a port name, a /regex/ or a port index"),
    (lambda b: b.control_change(7, 64, device=-1), "device must be a port index of 0 or more, not -1"),
])
def test_hostile_action_arguments_are_refused_with_their_value(jack, open_backend, call, message):
    backend, _ = open_backend({})
    assert wait_for(lambda: backend.list_ports()["api"] == "jack", 10)
    with MOCK.MidiMonitor("pihub MIDI out") as monitor:
        with pytest.raises(ActionError) as err:
            call(backend)
        assert str(err.value).startswith(message)
        backend.control_change(1, 1)  # nothing was sent before this
        assert monitor.wait_count(1, 10) and [m for _, m in monitor.received] == [[CC, 1, 1]]


# ----------------------------------------------------------------------------- throttle
def test_throttle_coalesces_a_sweep_to_its_first_and_last_values_per_control():
    clock = ManualClock()
    backend = MidiBackend({"throttle": 0.1}, clock=clock)
    rec = Recorder()
    backend._emit = rec  # the message path only: no ports are opened
    for v in range(128):
        backend.message([CC, 7, v], "ctl:slider", 0, 0.001)
    backend.message([CC, 8, 5], "ctl:slider", 0, 0.001)  # another control: its own window
    backend.message([NOTE_ON, 60, 100], "ctl:slider", 0, 0.001)  # notes are never throttled
    assert rec.messages() == [[CC, 7, 0], [CC, 8, 5], [NOTE_ON, 60, 100]]
    clock.advance(0.0999)
    assert len(rec.messages()) == 3
    clock.advance(0.0001)  # the window ends: the last value held is delivered
    assert rec.messages()[3:] == [[CC, 7, 127]]
    assert backend.list_ports()["coalesced"] == 126
    backend.message([CC, 7, 126], "ctl:slider", 0, 0.001)  # within the new window: held
    assert len(rec.messages()) == 4
    clock.advance(0.1)
    assert rec.messages()[4:] == [[CC, 7, 126]]
    clock.advance(0.1)  # a quiet window closes; the next message passes at once
    backend.message([CC, 7, 1], "ctl:slider", 0, 0.001)
    assert rec.messages()[5:] == [[CC, 7, 1]]


def test_throttle_keys_are_per_port_channel_and_control():
    clock = ManualClock()
    got: list[str] = []
    throttle = Throttle(1.0, clock, got.append)
    assert throttle.offer(("a", 0xB0, 7), "a7-first")
    assert throttle.offer(("b", 0xB0, 7), "b7-first")
    assert throttle.offer(("a", 0xB1, 7), "a7ch2-first")
    assert not throttle.offer(("a", 0xB0, 7), "a7-1")
    assert not throttle.offer(("a", 0xB0, 7), "a7-2")
    clock.advance(1.0)
    assert got == ["a7-2"]
    throttle.cancel()
    clock.advance(10)
    assert got == ["a7-2"]  # nothing after cancel
    assert throttle.offer(("a", 0xB0, 7), "again")


def test_a_slider_sweep_through_jack_ends_at_its_last_value(controller, open_backend):
    backend, rec = open_backend({"inputs": ["slider"], "throttle": 0.05})
    _synced(backend, controller, rec)
    sent = controller.sweep(7, 0, 127, interval=0.001)

    def values() -> list[int]:  # (a sync message held by the throttle may still come: another key)
        return [m[2] for m in rec.messages() if m[:2] == [CC, 7]]

    assert wait_for(lambda: values() and values()[-1] == sent[-1], 10), rec.messages()
    got = values()
    assert got[0] == 0 and got == sorted(got) and len(got) < len(sent)


def test_a_sysex_beyond_max_sysex_is_dropped_on_its_length_counted_and_warned_about_once(monkeypatch, caplog):
    import mido

    def no_mido(raw: Any) -> Any:
        raise AssertionError(f"mido decoded a sysex of {len(raw)} bytes")

    monkeypatch.setattr(mido.Message, "from_bytes", no_mido)  # sysex never goes through mido
    backend = MidiBackend({"max_sysex": 16}, clock=ManualClock())
    rec = Recorder()
    backend._emit = rec
    with caplog.at_level(logging.WARNING, logger="pihub.backends.midi"):
        for _ in range(100):
            backend.message([0xF0] + [0x11] * 100_000 + [0xF7], "ctl:slider", 0, 0.0)
        backend.message([0xF0] + [0x22] * 14 + [0xF7], "ctl:slider", 0, 0.0)  # 16 bytes: kept
        backend.message([0xF0, 0x80, 0xF7], "ctl:slider", 0, 0.0)  # a data byte above 127
    assert (backend.list_ports()["oversize"], backend.list_ports()["malformed"]) == (100, 1)
    assert len(_warnings(caplog, "max_sysex")) == 1, caplog.text
    kept, bad = (e.args for e in rec.events)
    assert (kept["kind"], kept["data"], kept["message"]) == ("sysex", [0x22] * 14, [0xF0] + [0x22] * 14 + [0xF7])
    assert (bad["kind"], bad["message"]) == ("unknown", [0xF0, 0x80, 0xF7])


def test_a_sysex_beyond_max_sysex_through_jack_is_counted_and_the_next_one_delivered(controller, open_backend):
    backend, rec = open_backend({"inputs": ["slider"], "max_sysex": 64})
    _synced(backend, controller, rec)
    controller.send([0xF0] + [0x01] * 63 + [0xF7])  # 65 bytes
    controller.send([0xF0] + [0x02] * 62 + [0xF7])  # 64 bytes
    assert wait_for(lambda: _marker_arrived(controller, rec), 30)
    assert [e.args["data"] for e in rec.of("MidiMessageEvent") if e.args["kind"] == "sysex"] == [[0x02] * 62]
    assert backend.list_ports()["oversize"] == 1


def test_malformed_messages_are_counted_and_still_delivered_raw():
    backend = MidiBackend({})
    rec = Recorder()
    backend._emit = rec
    for raw in ([0xB0, 7], [0x07, 0x40], [0xF0, 1, 2], []):
        backend.message(raw, "ctl:slider", 0, 0.0)
    assert [(e.args["message"], e.args["kind"]) for e in rec.events] == [
        ([0xB0, 7], "unknown"), ([7, 64], "unknown"), ([0xF0, 1, 2], "unknown"), ([], "unknown")]
    assert backend.list_ports()["malformed"] == 4


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(("config", "path", "message"), [
    ({"inputs": ["/[0-9/"]}, "inputs[0]", "'/[0-9/' is not a valid regular expression"),
    ({"inputs": ["slider", True]}, "inputs[1]", "must be a port name, a /regex/ or a port index, not true"),
    ({"inputs": [" "]}, "inputs[0]", "must be a port name, a /regex/ or a port index, not an empty string"),
    ({"inputs": [-2]}, "inputs[0]", "must be a port index of 0 or more, not -2"),
    ({"output": "/(/"}, "output", "'/(/' is not a valid regular expression"),
    ({"virtual_output": ""}, "virtual_output", "must not be an empty string (null: no virtual output)"),
    ({"max_sysex": 1}, "max_sysex", "must be in range 2..1048576, not 1"),
    ({"input_buffer": 10}, "input_buffer", "must be in range 64..65536, not 10"),
])
def test_bad_config_names_the_key_and_the_value(config, path, message):
    with pytest.raises(ConfigProblems) as err:
        MidiBackend(config)
    assert f"{path}: {message}" in str(err.value)


def test_schema_errors_list_what_is_allowed():
    _, problems = MidiBackend.config_schema.validate({"api": "coremidi", "throttle": -1}, ("midi",))
    text = " ".join(str(p) for p in problems)
    assert "'coremidi'" in text and "alsa" in text and "jack" in text and "auto" in text
    assert "throttle" in text


def test_platypush_sections_and_keys_are_read(write_config, load_config):
    config = load_config(write_config(
        "backend.midi:\n  midi_throttle_time: 0.2\n  port_number: 1\n  device_name: Platypush MIDI\n"))
    backend = MidiBackend(config.sections["midi"])
    assert (backend.throttle, backend.virtual_output) == (0.2, "Platypush MIDI")
    assert [p.index for p in backend.inputs] == [1]
    config = load_config(write_config("midi:\n  midi_devices: [nanoKONTROL2, 3]\n  event_resolution: 0.05\n"))
    backend = MidiBackend(config.sections["midi"])
    assert [(p.name, p.index) for p in backend.inputs] == [("nanoKONTROL2", None), (None, 3)]
    assert backend.throttle == 0.05


@pytest.mark.parametrize(("pattern", "port", "index", "matches"), [
    ("slider", "controller:slider", 0, True),
    ("slider", "controller-01:slider", 4, True),  # JACK renamed the client
    ("controller", "controller:slider", 0, True),
    ("nanoKONTROL2", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", 1, True),  # ALSA
    ("nanoKONTROL2 MIDI 1", "nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0", 1, True),  # replugged: new numbers
    ("nano", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", 1, False),  # names are whole, not prefixes
    ("/^nano/", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", 1, True),
    ("/MIDI 2/", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", 1, False),
    (2, "anything", 2, True),
    (2, "anything", 1, False),
])
def test_port_patterns(pattern, port, index, matches):
    assert PortPattern.parse(pattern).matches(index, port) is matches


def test_decode_gives_midos_fields_under_kind():
    assert decode([0x91, 60, 0]) == {"kind": "note_on", "channel": 1, "note": 60, "velocity": 0}
    assert decode([0xC3, 9]) == {"kind": "program_change", "channel": 3, "program": 9}
    with pytest.raises(ValueError):
        decode([0x91, 60])
