"""The Flic backend against the fake flicd (hw-mocks/fake_flicd.py), plus its sequence rule
on a ManualClock.

The fake speaks flicd's wire protocol (checked here with the SDK's own client, pyflic) and
plays presses in real time; the backend runs on the system clock there. The timing rule
itself (0.3 s long press, 0.5 s sequence end, per button) is tested on a ManualClock.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pihub_testing import HW_MOCKS, EventRecorder, load_hw_mock, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.flic import (
    _IGNORED_LOG_BURST,
    LONG,
    MAX_BUTTONS,
    SHORT,
    FlicBackend,
    FrameReader,
    PressSequence,
    decode,
)
from pihub.clock import ManualClock
from pihub.errors import ConfigProblems, ProtocolError

A, B, C = "80:e4:da:70:a1:c0", "80:e4:da:70:a1:c1", "80:e4:da:70:a1:c2"
fake = load_hw_mock("fake_flicd")


class Events(EventRecorder):
    """The backend's ``emit`` (:class:`EventRecorder`), read per button."""

    def button(self, type_name: str, addr: str | None = None) -> list[dict[str, Any]]:
        """The args of the ``type_name`` events of button ``addr`` (None: of every button)."""
        return self.args_of(type_name, **({} if addr is None else {"btn_addr": addr}))

    def wait_button(self, type_name: str, addr: str | None = None, count: int = 1,
                    timeout: float = 10.0) -> list[dict[str, Any]]:
        assert self.wait(lambda: len(self.button(type_name, addr)) >= count, timeout), (
            f"expected {count} {type_name} for {addr}, got {self.button(type_name, addr)}; all: {self.summary()}")
        return self.button(type_name, addr)

    def sequences(self, addr: str) -> list[list[str]]:
        return [a["sequence"] for a in self.button("FlicButtonEvent", addr)]


@pytest.fixture
def flicd() -> Iterator[Any]:
    with fake.FakeFlicd([A, B], unverified=[C]) as d:
        yield d


@pytest.fixture
def open_backend(request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[FlicBackend, Events]]]:
    """``make(config)``: an open backend (on the ``flicd`` fixture's port unless the config
    has one) and its events, once the ``wait_connected`` buttons are connected."""
    made: list[FlicBackend] = []

    def make(config: dict[str, Any], *, wait_connected: tuple[str, ...] = (A, B), **kw: Any):
        if "port" not in config:
            config = {"port": request.getfixturevalue("flicd").port, **config}
        backend = FlicBackend({"reconnect_interval": 0.05, "max_reconnect_interval": 0.2, **config}, **kw)
        events = Events()
        backend.open(events)
        made.append(backend)
        for addr in wait_connected:
            assert wait_for(lambda a=addr: backend.describe_status()["buttons"].get(a) == "connected", 10), (
                backend.describe_status())
        return backend, events

    yield make
    for b in made:
        b.close()


# ---------------------------------------------------------------------------- the fake itself
def test_the_fake_speaks_flicds_protocol_to_the_sdks_own_client():
    import pyflic  # the test extra installs it: a missing client is a failure, not a skip
    with fake.FakeFlicd([A], hold_time=0.3, double_window=0.2) as d:
        client = pyflic.FlicClient("127.0.0.1", d.port)
        seen: list[Any] = []
        client.get_info(lambda items: seen.append(("info", items["bd_addr_of_verified_buttons"])))
        channel = pyflic.ButtonConnectionChannel(A)
        channel.on_connection_status_changed = lambda ch, status, reason: seen.append(status.name)
        channel.on_button_up_or_down = lambda ch, click, queued, diff: seen.append(click.name)
        channel.on_button_single_or_double_click_or_hold = lambda ch, click, queued, diff: seen.append(click.name)
        client.add_connection_channel(channel)
        thread = threading.Thread(target=client.handle_events, daemon=True)
        thread.start()
        try:
            assert wait_for(lambda: "Ready" in seen)
            d.press(A, "short")
            assert wait_for(lambda: "ButtonSingleClick" in seen)
            d.press(A, "double")
            assert wait_for(lambda: "ButtonDoubleClick" in seen)
            d.press(A, "hold")
            assert wait_for(lambda: "ButtonHold" in seen)
        finally:
            client.close()
            thread.join(5)
        assert seen == [("info", [A]), "Connected", "Ready",
                        "ButtonDown", "ButtonUp", "ButtonSingleClick",
                        "ButtonDown", "ButtonUp", "ButtonDown", "ButtonUp", "ButtonDoubleClick",
                        "ButtonDown", "ButtonHold", "ButtonUp"]
        # the client's channel command, as the SDK encodes it: bd_addr reversed, 511 = never
        assert (3, bytes.fromhex("00000000c0a170dae48000ff01")) in d.commands


# ---------------------------------------------------------------------------- gestures per button
GESTURES = [
    (["short"], [SHORT], "FlicButtonClickEvent"),
    (["long"], [LONG], "FlicButtonClickEvent"),  # 0.6 s: long for Platypush, still a click for flicd
    (["double"], [SHORT, SHORT], "FlicButtonDoubleClickEvent"),
    (["hold"], [LONG], "FlicButtonHoldEvent"),
    (["short", "long", "short"], [SHORT, LONG, SHORT], None),
]


@pytest.mark.parametrize("addr", [A, B])
@pytest.mark.parametrize(("gestures", "sequence", "click"), GESTURES, ids=["short", "long", "double", "hold", "3-press"])
def test_each_gesture_on_each_button(flicd, open_backend, addr, gestures, sequence, click):
    backend, events = open_backend({"buttons": [A, B]})
    flicd.sequence(addr, gestures)
    assert events.wait_button("FlicButtonEvent", addr)[0] == {"btn_addr": addr, "sequence": sequence}
    if click is not None:
        got = events.wait_button(click, addr)
        assert got == [{"btn_addr": addr, "was_queued": False, "time_diff": 0}]
        assert wait_for(lambda: backend.flicd_status()["clicks"] == 1)
        others = {"FlicButtonClickEvent", "FlicButtonDoubleClickEvent", "FlicButtonHoldEvent"} - {click}
        assert not any(events.button(t) for t in others)  # a double is not also a click
    other = B if addr == A else A
    assert events.button("FlicButtonEvent", other) == []
    assert len(events.button("FlicButtonEvent", addr)) == 1


def test_two_buttons_pressed_interleaved_keep_separate_sequences(flicd, open_backend):
    backend, events = open_backend({})  # every verified button: A and B
    # A: short, short; B: one long press held across both of A's presses
    flicd.play([(0.0, "down", B), (0.05, "down", A), (0.10, "up", A), (0.20, "down", A), (0.25, "up", A),
                (0.70, "up", B)])
    assert events.wait_button("FlicButtonEvent", B)[0]["sequence"] == [LONG]
    assert events.wait_button("FlicButtonEvent", A)[0]["sequence"] == [SHORT, SHORT]
    assert wait_for(lambda: backend.flicd_status()["sequences"] == 2)
    assert len(events.button("FlicButtonEvent")) == 2


# ---------------------------------------------------------------------------- connection status
def test_button_status_connected_disconnected_and_not_verified(flicd, open_backend):
    backend, events = open_backend({"buttons": [A, C]}, wait_connected=(A,))
    assert wait_for(lambda: backend.describe_status()["buttons"] == {A: "connected", C: "not verified"})
    assert backend.describe_status()["status"] == "running"
    flicd.set_in_range(A, False)
    assert wait_for(lambda: backend.describe_status()["buttons"][A] == "disconnected")
    flicd.set_in_range(A, True)
    flicd.verify(C)
    assert wait_for(lambda: backend.describe_status()["buttons"] == {A: "connected", C: "connected"})
    assert [e["status"] for e in events.button("FlicButtonConnectionEvent", A)] == [
        "connected", "disconnected", "connected"]
    assert [e["status"] for e in events.button("FlicButtonConnectionEvent", C)] == ["not verified", "connected"]
    flicd.press(C, "short")
    assert events.wait_button("FlicButtonEvent", C)[0]["sequence"] == [SHORT]


def test_all_verified_mode_opens_a_channel_to_a_newly_verified_button(flicd, open_backend):
    backend, _ = open_backend({})
    assert set(backend.describe_status()["buttons"]) == {A, B}  # C is not verified: no channel
    flicd.verify(C)
    assert wait_for(lambda: backend.describe_status()["buttons"].get(C) == "connected")
    assert flicd.channels_of(C) == 1


def test_flicd_not_running_degrades_and_names_the_server(open_backend):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    backend, _ = open_backend({"port": port, "buttons": [A]}, wait_connected=())
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
    assert f"127.0.0.1:{port}" in backend.error and "connection refused" in backend.error
    assert backend.describe_status()["buttons"] == {A: "disconnected"}
    assert backend.flicd_status()["flicd"] == "unreachable"


def test_flicd_killed_and_restarted_reconnects_and_events_flow_again(tmp_path, open_backend):
    def start(port: int) -> tuple[subprocess.Popen, int, int]:
        proc = subprocess.Popen([sys.executable, str(HW_MOCKS / "fake_flicd.py"), "--port", str(port),
                                 "--control-port", "0", "--button", A], stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()
        m = re.search(r"on 127\.0\.0\.1:(\d+) control 127\.0\.0\.1:(\d+)", line)
        assert m, f"fake flicd did not start: {line!r}"
        return proc, int(m[1]), int(m[2])

    def control(port: int, line: str) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rw") as f:
            f.write(line + "\n")
            f.flush()
            return f.readline().strip()

    proc, port, ctl = start(0)
    try:
        backend, events = open_backend({"port": port, "buttons": [A]}, wait_connected=(A,))
        assert control(ctl, f"press {A} double") == "ok"
        assert events.wait_button("FlicButtonDoubleClickEvent", A)
        assert events.wait_button("FlicButtonEvent", A)[0]["sequence"] == [SHORT, SHORT]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
        assert backend.describe_status()["buttons"] == {A: "disconnected"}
        proc, _, ctl = start(port)
        assert wait_for(lambda: backend.describe_status()["buttons"] == {A: "connected"}, 10)
        assert backend.status == BackendStatus.RUNNING and backend.error is None
        assert control(ctl, f"sequence {A} short short") == "ok"
        assert events.wait_button("FlicButtonEvent", A, count=2)[-1]["sequence"] == [SHORT, SHORT]
        assert control(ctl, "press nowhere short").startswith("error ")
    finally:
        proc.kill()
        proc.wait(10)
        proc.stderr.close()


# ---------------------------------------------------------------------------- hostile flicd
def _frame(body: bytes) -> bytes:
    return struct.pack("<H", len(body)) + body


MALFORMED = {
    "zero length": b"\x00\x00",
    "short button event": _frame(bytes([4, 1, 0])),
    "click type out of range": _frame(bytes([4]) + struct.pack("<IBBI", 1, 9, 0, 0)),
    "click type of another event kind": _frame(bytes([4]) + struct.pack("<IBBI", 1, 4, 0, 0)),
    "unknown channel": _frame(bytes([7]) + struct.pack("<IBBI", 77, 3, 0, 0)),
    "bad connection status": _frame(bytes([2]) + struct.pack("<IBB", 1, 7, 0)),
    "bad removed reason": _frame(bytes([3]) + struct.pack("<IB", 1, 200)),
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_packet_resets_the_connection_and_the_backend_recovers(flicd, open_backend, data, caplog):
    backend, events = open_backend({"buttons": [A]}, wait_connected=(A,))
    flicd.send_raw(data)
    assert wait_for(lambda: backend.flicd_status()["protocol_errors"] == 1)
    assert wait_for(lambda: backend.flicd_status()["connects"] == 2 and
                    backend.describe_status()["buttons"] == {A: "connected"})
    assert "malformed packet from flicd" in caplog.text
    flicd.press(A, "short")
    assert events.wait_button("FlicButtonEvent", A)[0]["sequence"] == [SHORT]
    assert backend.status == BackendStatus.RUNNING and backend._thread.is_alive()


def test_unknown_opcodes_and_longer_packets_are_accepted(flicd, open_backend):
    backend, events = open_backend({"buttons": [A]}, wait_connected=(A,))
    flicd.send_raw(_frame(bytes([200]) + b"future event"))
    # a later protocol version may append fields: they are ignored
    flicd.send_raw(_frame(bytes([4]) + struct.pack("<IBBI", 1, 0, 0, 0) + b"extra"))
    flicd.send_raw(_frame(bytes([4]) + struct.pack("<IBBI", 1, 1, 0, 0) + b"extra"))
    assert events.wait_button("FlicButtonEvent", A)[0]["sequence"] == [SHORT]
    status = backend.flicd_status()
    assert status["ignored_packets"] == 1 and status["protocol_errors"] == 0 and status["connects"] == 1


def test_random_garbage_never_kills_the_reader(flicd, open_backend):
    backend, events = open_backend({"buttons": [A]}, wait_connected=(A,))
    rnd = random.Random(7)
    for i in range(20):
        before = backend.flicd_status()["connects"]
        flicd.send_raw(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64))) + b"\x00\x00")
        # a zero-length frame at the end is a protocol error whatever came before it, unless
        # the garbage's own length field swallows it: then the fake's close (drop) ends it
        flicd.drop_clients()
        assert wait_for(lambda b=before: backend.flicd_status()["connects"] > b), f"round {i}"
        assert wait_for(lambda: backend.describe_status()["buttons"] == {A: "connected"})
    assert backend._thread.is_alive()
    flicd.press(A, "short")
    assert events.wait_button("FlicButtonEvent", A)[0]["sequence"] == [SHORT]


class Chatterer:
    """A peer that accepts connections, never answers GetInfo, and sends an unknown opcode
    every 10 ms on each: it is not flicd, but it never falls silent either."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._chatter, args=(conn,), daemon=True).start()

    def _chatter(self, conn: socket.socket) -> None:
        with conn:
            while not self._stop.wait(0.01):  # the peer's pace, not a synchronisation
                try:
                    conn.sendall(_frame(bytes([200])))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.server.close()


def test_a_peer_chattering_without_answering_get_info_degrades_at_the_deadline_and_reconnects():
    clock = ManualClock()
    peer = Chatterer()
    backend = FlicBackend({"port": peer.port, "connect_timeout": 5.0, "reconnect_interval": 1.0}, clock=clock)
    backend.open(lambda e: True)
    try:
        ignored = lambda: backend.flicd_status()["ignored_packets"]  # noqa: E731
        assert wait_for(lambda: ignored() >= 3)
        clock.advance(4.75)  # binary fractions: the deadline is met exactly below
        n = ignored()
        assert wait_for(lambda: ignored() >= n + 3)  # packets keep coming; none extends the deadline
        assert backend.status == BackendStatus.RUNNING and backend.flicd_status()["flicd"] == "connecting"
        clock.advance(0.25)
        assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
        assert f"127.0.0.1:{peer.port}" in backend.error
        assert "did not answer GetInfo within 5 s" in backend.error
        assert backend.flicd_status()["flicd"] == "unreachable" and peer.accepted == 1
        assert wait_for(lambda: clock.waiters == 1)  # the back-off, as after any failure
        clock.advance(1.0)
        assert wait_for(lambda: peer.accepted == 2)
    finally:
        backend.close()
        peer.close()


def test_a_packet_begun_and_never_finished_after_the_handshake_is_a_lost_connection(flicd, open_backend, caplog):
    backend, events = open_backend({"connect_timeout": 0.3})
    before = backend.flicd_status()["connects"]
    flicd.send_raw(b"\xff\xff\x0c")  # announces 65535 bytes, sends one, then nothing
    assert wait_for(lambda: backend.flicd_status()["connects"] > before)  # lost, then connected again
    assert any(f"127.0.0.1:{flicd.port} sent 3 bytes of a packet, then nothing for 0.3 s" in r.getMessage()
               for r in caplog.records)
    assert wait_for(lambda: backend.describe_status()["buttons"].get(A) == "connected")
    flicd.press(A, "short")
    assert events.wait_button("FlicButtonEvent", A)[0]["sequence"] == [SHORT]


def test_new_verified_buttons_beyond_max_buttons_are_ignored_counted_and_logged_rate_limited(
        flicd, open_backend, caplog):
    backend, _ = open_backend({})  # every verified button: A and B
    extra = 2 * MAX_BUTTONS
    flicd.send_raw(b"".join(_frame(bytes([8]) + i.to_bytes(6, "little")) for i in range(1, extra + 1)))
    ignored = extra - (MAX_BUTTONS - 2)
    assert wait_for(lambda: backend.flicd_status()["ignored_buttons"] == ignored)
    status = backend.describe_status()
    assert len(status["buttons"]) == MAX_BUTTONS and status["ignored_buttons"] == ignored
    assert status["buttons"][A] == "connected" and status["buttons"][B] == "connected"
    assert len(backend.describe_entities()) == MAX_BUTTONS
    # a channel to each kept button, none to the ignored ones
    assert wait_for(lambda: sum(op == 3 for op, _ in flicd.commands) == MAX_BUTTONS)
    logged = [r for r in caplog.records if "beyond the" in r.getMessage()]
    assert len(logged) == _IGNORED_LOG_BURST
    assert f"{MAX_BUTTONS} buttons pihub keeps: ignored (1 ignored so far)" in logged[0].getMessage()
    assert backend.status == BackendStatus.RUNNING


def test_a_get_info_listing_more_than_max_buttons_keeps_the_first_max_buttons():
    addrs = [f"80:e4:da:70:{i // 256:02x}:{i % 256:02x}" for i in range(MAX_BUTTONS + 5)]
    with fake.FakeFlicd(addrs) as d:
        backend = FlicBackend({"port": d.port})
        backend.open(lambda e: True)
        try:
            assert wait_for(lambda: backend.flicd_status()["ignored_buttons"] == 5)
            assert sorted(backend.describe_status()["buttons"]) == addrs[:MAX_BUTTONS]
            d.drop_clients()  # on reconnect the kept buttons stay, the others are counted again
            assert wait_for(lambda: backend.flicd_status()["ignored_buttons"] == 10)
            assert sorted(backend.describe_status()["buttons"]) == addrs[:MAX_BUTTONS]
        finally:
            backend.close()


def test_queued_presses_skip_sequences_and_old_queued_clicks_are_dropped(flicd, open_backend):
    backend, events = open_backend({"buttons": [A], "max_queued_age": 5}, wait_connected=(A,))
    for click_type, queued, age in [(0, 1, 3), (1, 1, 3), (3, 1, 3), (4, 1, 60)]:
        op = 4 if click_type in (0, 1) else 7
        flicd.send_raw(_frame(bytes([op]) + struct.pack("<IBBI", 1, click_type, queued, age)))
    assert events.wait_button("FlicButtonClickEvent", A) == [{"btn_addr": A, "was_queued": True, "time_diff": 3}]
    assert wait_for(lambda: backend.flicd_status()["dropped_queued"] == 1)
    assert events.button("FlicButtonDoubleClickEvent") == []
    assert backend.flicd_status()["in_progress"] == {}  # queued down/up made no press


def test_the_panels_entities_give_each_buttons_status_and_last_press(flicd, open_backend):
    backend, events = open_backend({"buttons": [A, C]}, wait_connected=(A,))
    assert wait_for(lambda: backend.describe_status()["buttons"][C] == "not verified")
    assert backend.describe_entities() == [
        {"name": A, "kind": "flic_button", "status": "connected", "last_press": None},
        {"name": C, "kind": "flic_button", "status": "not verified", "last_press": None}]
    before = time.time()
    flicd.press(A, "double")
    events.wait_button("FlicButtonDoubleClickEvent", A)
    press = backend.describe_entities()[0]["last_press"]
    assert press is not None and before <= press.pop("time") <= time.time()
    assert press == {"kind": "double_click", "was_queued": False}
    flicd.send_raw(_frame(bytes([7]) + struct.pack("<IBBI", 1, 5, 1, 3)))  # a hold made 3 s ago, queued
    events.wait_button("FlicButtonHoldEvent", A)
    press = backend.describe_entities()[0]["last_press"]
    assert press is not None and before - 3 <= press.pop("time") <= time.time() - 3
    assert press == {"kind": "hold", "was_queued": True}


def test_close_drops_a_pending_sequence(flicd, open_backend):
    backend, events = open_backend({"buttons": [A], "btn_timeout": 5.0}, wait_connected=(A,))
    flicd.press(A, "short")
    assert wait_for(lambda: backend.flicd_status()["in_progress"] == {A: [SHORT]})
    backend.close()
    assert backend.status == BackendStatus.STOPPED
    assert events.button("FlicButtonEvent") == []
    assert flicd.clients == 0 or wait_for(lambda: flicd.clients == 0)


# ---------------------------------------------------------------------------- back-off on the clock
def test_reconnect_back_off_doubles_on_the_clock_up_to_its_maximum():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = ManualClock()
    backend = FlicBackend({"port": port, "reconnect_interval": 1.0, "max_reconnect_interval": 4.0}, clock=clock)
    backend.open(lambda e: True)
    try:
        failures = lambda: backend.flicd_status()["connect_failures"]  # noqa: E731
        expected = 1
        for gap in (1.0, 2.0, 4.0, 4.0):
            assert wait_for(lambda n=expected: failures() == n and clock.waiters == 1)
            clock.advance(gap - 0.01)
            assert failures() == expected  # still waiting
            clock.advance(0.01)
            expected += 1
        assert wait_for(lambda: failures() == expected)
    finally:
        backend.close()


# ---------------------------------------------------------------------------- the sequence rule
class TestPressSequence:
    def make(self) -> tuple[ManualClock, PressSequence, list[list[str]]]:
        clock = ManualClock()
        ended: list[list[str]] = []
        return clock, PressSequence(clock, 0.3, 0.5, ended.append), ended

    def test_short_below_and_long_from_the_long_press_timeout(self):
        clock, seq, ended = self.make()
        seq.down()
        clock.advance(0.299)
        seq.up()
        clock.advance(0.1)
        seq.down()
        clock.advance(0.3)
        seq.up()
        clock.advance(0.5)
        assert ended == [[SHORT, LONG]]

    def test_the_sequence_ends_exactly_btn_timeout_after_the_last_release(self):
        clock, seq, ended = self.make()
        seq.down()
        clock.advance(0.1)
        seq.up()
        clock.advance(0.499)
        assert ended == []
        clock.advance(0.001)
        assert ended == [[SHORT]]
        clock.advance(10)
        assert ended == [[SHORT]]  # once

    def test_a_press_within_the_window_continues_the_sequence(self):
        clock, seq, ended = self.make()
        for _ in range(3):
            seq.down()
            clock.advance(0.05)
            seq.up()
            clock.advance(0.45)
        assert ended == []
        clock.advance(0.05)
        assert ended == [[SHORT, SHORT, SHORT]]

    def test_no_end_while_held_however_long(self):
        clock, seq, ended = self.make()
        seq.down()
        clock.advance(0.05)
        seq.up()
        clock.advance(0.4)
        seq.down()
        clock.advance(30)
        assert ended == [] and clock.pending() == []
        seq.up()
        clock.advance(0.5)
        assert ended == [[SHORT, LONG]]

    def test_an_up_without_a_down_is_ignored(self):
        clock, seq, ended = self.make()
        seq.up()
        clock.advance(5)
        assert ended == [] and seq.presses == []

    def test_two_buttons_keep_their_own_windows(self):
        clock = ManualClock()
        ended: list[tuple[str, list[str]]] = []
        a = PressSequence(clock, 0.3, 0.5, lambda s: ended.append(("a", s)))
        b = PressSequence(clock, 0.3, 0.5, lambda s: ended.append(("b", s)))
        a.down()
        clock.advance(0.1)
        b.down()
        a.up()  # a: short
        clock.advance(0.4)
        b.up()  # b: long (0.4 s)
        clock.advance(0.1)  # a's window (0.5 s after its release) ends; b's has 0.4 s left
        assert ended == [("a", [SHORT])]
        a.down()  # a press on a never cancels b's window
        clock.advance(0.4)
        assert ended == [("a", [SHORT]), ("b", [LONG])]
        a.up()
        clock.advance(0.5)
        assert ended == [("a", [SHORT]), ("b", [LONG]), ("a", [LONG])]

    def test_cancel_forgets_the_presses_and_the_timer(self):
        clock, seq, ended = self.make()
        seq.down()
        seq.up()
        seq.cancel()
        clock.advance(5)
        assert ended == [] and clock.pending() == []


def test_backend_sequences_run_on_its_clock_per_button(flicd):
    """Through flicd and the backend, press durations and the window are the ManualClock's."""
    clock = ManualClock()
    backend = FlicBackend({"port": flicd.port, "buttons": [A, B]}, clock=clock)
    events = Events()
    backend.open(events)
    marks = [0]

    def sync() -> None:  # an unknown opcode: once counted, everything before it was handled
        marks[0] += 1
        flicd.send_raw(_frame(bytes([250])))
        assert wait_for(lambda: backend.flicd_status()["ignored_packets"] == marks[0])

    try:
        assert wait_for(lambda: backend.describe_status()["buttons"] == {A: "connected", B: "connected"})
        flicd.down(A)
        flicd.down(B)
        sync()
        clock.advance(0.25)  # binary fractions: the sums below are exact
        flicd.up(A)  # A: 0.25 s, short
        sync()
        clock.advance(0.25)
        flicd.up(B)  # B: 0.5 s, long
        sync()
        clock.advance(0.25)  # A's window ends at 0.75 (its release + 0.5); B's at 1.0
        assert [(e["btn_addr"], e["sequence"]) for e in events.button("FlicButtonEvent")] == [(A, [SHORT])]
        clock.advance(0.125)
        assert len(events.button("FlicButtonEvent")) == 1
        clock.advance(0.125)
        assert [(e["btn_addr"], e["sequence"]) for e in events.button("FlicButtonEvent")] == [(A, [SHORT]),
                                                                                        (B, [LONG])]
    finally:
        backend.close()


# ---------------------------------------------------------------------------- framing and config
def test_frames_split_anywhere_in_the_stream_are_reassembled():
    stream = b"".join(_frame(bytes([4]) + struct.pack("<IBBI", 1, i % 2, 0, 0)) for i in range(10))
    reader = FrameReader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
    assert [op for op, _ in got] == [4] * 10 and reader.pending == 0
    assert [decode(op, body)[1] for op, body in got] == [0, 1] * 5


def test_a_zero_length_frame_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="length 0"):
        FrameReader().feed(b"\x00\x00")


def test_a_get_info_listing_more_buttons_than_it_carries_is_a_protocol_error(flicd):
    backend = FlicBackend({"port": flicd.port})
    info = struct.pack("<B6sBBhBBH", 2, bytes(6), 0, 128, -1, 0, 0, 3) + bytes(6)  # says 3, carries 1
    with pytest.raises(ProtocolError, match="3 verified buttons"):
        backend._packet(None, 9, info)


@pytest.mark.parametrize(("config", "path", "message"), [
    ({"buttons": ["80:e4:da:70:a1"]}, "buttons[0]", "must be a Bluetooth address like 80:e4:da:70:a1:c0, "
                                                    "not '80:e4:da:70:a1'"),
    ({"buttons": [A, A.upper()]}, "buttons[1]", f"button {A} is listed twice"),
    ({"reconnect_interval": 5, "max_reconnect_interval": 2}, "max_reconnect_interval",
     "must be at least reconnect_interval (5 s), not 2"),
    ({"server": " "}, "server", "must be a host name or address, not an empty string"),
    ({"buttons": [f"80:e4:da:70:{i // 256:02x}:{i % 256:02x}" for i in range(MAX_BUTTONS + 1)]}, "buttons",
     f"at most {MAX_BUTTONS} buttons, not {MAX_BUTTONS + 1}"),
])
def test_bad_config_names_the_key_and_the_value(config, path, message):
    with pytest.raises(ConfigProblems) as e:
        FlicBackend(config)
    assert f"{path}: {message}" in str(e.value)


def test_schema_errors_list_what_is_allowed():
    _, problems = FlicBackend.config_schema.validate({"latency_mode": "fast", "port": 70000}, ("flic",))
    text = "\n".join(str(p) for p in problems)
    assert "'normal', 'low', 'high', not 'fast'" in text
    assert "must be in range 1..65535, not 70000" in text


def test_platypush_section_and_keys_are_read(write_config, load_config):
    config = load_config(write_config(
        "backend.button.flic:\n  server: localhost\n  long_press_timeout: 0.4\n  btn_timeout: 0.6\n"))
    backend = FlicBackend(config.sections["flic"])
    assert (backend.server, backend.long_press_timeout, backend.btn_timeout) == ("localhost", 0.4, 0.6)


def test_a_press_cut_by_a_connection_loss_is_forgotten():
    clock = ManualClock()
    ended: list[list[str]] = []
    seq = PressSequence(clock, 0.3, 0.5, ended.append)
    seq.down()
    clock.advance(0.1)
    seq.up()
    seq.down()
    seq.interrupt()  # the connection to flicd dropped while the button was down
    clock.advance(2)
    seq.up()  # a release after reconnecting is no press
    clock.advance(1)
    assert ended == [[SHORT]]
