"""The music.mpd backend (pihub.backends.mpd) against a real mpd (hw-mocks/mpd_server.py:
a null audio output, three generated 30 s tones)."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import EventRecorder, RecordingClock, finishes, load_hw_mock, need_tool, wait_for

from pihub.backends import mpd as mpd_backend
from pihub.backends.mpd import MpdBackend
from pihub.errors import ActionError
from pihub.events import Event

mock = load_hw_mock("mpd_server")


def need_mpd() -> None:
    for tool in ("mpd", "mpc", "ffmpeg"):
        need_tool(shutil.which(tool) is not None, f"{tool} is not installed (apt-get install mpd mpc ffmpeg)")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    need_mpd()
    with mock.MpdServer(tmp_path / "mpd") as s:
        yield s


@pytest.fixture
def opened(server: Any) -> Iterator[Callable[..., tuple[MpdBackend, EventRecorder]]]:
    backends: list[MpdBackend] = []

    def make(**config: Any) -> tuple[MpdBackend, EventRecorder]:
        b = MpdBackend({"host": "127.0.0.1", "port": server.port, "retry_interval": 0.05,
                        "max_retry_interval": 0.2, **config})
        rec = EventRecorder()
        b.open(rec)
        backends.append(b)
        return b, rec

    yield make
    for b in backends:
        b.close()


def kinds(rec: EventRecorder, since: int = 0) -> list[str]:
    return [name for name, _ in rec.summary()[since:]]


def test_the_state_at_connect_then_play_next_pause_resume_stop(opened, server):
    b, rec = opened()
    assert rec.wait(lambda: kinds(rec) == ["MusicStopEvent"])  # announced at connect, as Platypush
    first = rec.events[0]
    assert first.source == "music.mpd" and first.args["plugin_name"] == "music.mpd"
    assert first.args["status"]["state"] == "stop" and first.args["track"] == {}
    for name in server.tracks:
        b.add(name)
    b.play()
    assert rec.wait(lambda: kinds(rec, 1) == ["MusicPlayEvent", "NewPlayingTrackEvent"]), rec.summary()
    assert rec.of("NewPlayingTrackEvent")[0].args["track"]["title"] == "Tone 1"
    server.mpc("next")  # a change made by another client: the reader sees it through idle
    assert rec.wait(lambda: len(rec.of("NewPlayingTrackEvent")) == 2), rec.summary()
    assert rec.of("NewPlayingTrackEvent")[1].args["track"]["title"] == "Tone 2"
    assert b.pause()["state"] == "pause"
    assert rec.wait(lambda: kinds(rec)[-1] == "MusicPauseEvent"), rec.summary()
    assert b.pause()["state"] == "play"  # the toggle resumes; the same track is not new
    # seen before the stop: mpd's idle reports "player changed", not each change, so a stop
    # sent at once can reach the reader's status query first (a play it never saw)
    assert rec.wait(lambda: kinds(rec)[-1] == "MusicPlayEvent"), rec.summary()
    assert b.stop()["state"] == "stop"
    assert rec.wait(lambda: kinds(rec)[-1] == "MusicStopEvent"), rec.summary()
    assert kinds(rec, 1) == ["MusicPlayEvent", "NewPlayingTrackEvent", "NewPlayingTrackEvent", "MusicPauseEvent",
                             "MusicPlayEvent", "MusicStopEvent"]


def test_volume_fires_volume_change_event(opened, server):
    b, rec = opened()
    assert rec.wait(lambda: kinds(rec) == ["MusicStopEvent"])  # no volume event at connect
    assert b.volume(35)["volume"] == "35"
    assert rec.wait(lambda: rec.of("VolumeChangeEvent")), rec.summary()
    assert rec.of("VolumeChangeEvent")[0].args["volume"] == 35
    server.mpc("volume", "60")
    assert rec.wait(lambda: [e.args["volume"] for e in rec.of("VolumeChangeEvent")] == [35, 60]), rec.summary()


@pytest.mark.parametrize("level", [101, -1, 50.5, True, "50"])
def test_a_volume_out_of_range_is_refused_naming_it(opened, level):
    b, _ = opened()
    with pytest.raises(ActionError, match="level must be a whole number from 0 to 100"):
        b.volume(level)


def test_search_matches_tags_in_part_and_any_case(opened):
    b, _ = opened()
    assert [t["file"] for t in b.search({"artist": "artist 2", "title": "TONE"})] == ["tone2.ogg"]
    assert [t["file"] for t in b.search(["album", "tones"])] == ["tone1.ogg", "tone2.ogg", "tone3.ogg"]
    assert b.search({"title": "no such song"}) == []
    with pytest.raises(ActionError, match="filter must name at least one tag"):
        b.search({})
    with pytest.raises(ActionError, match="filter must be a mapping"):
        b.search("tone")


@pytest.mark.parametrize("call", [
    lambda b: b.search({"title": 'x"\nclear'}),
    lambda b: b.search({"title\nclear": "x"}),
    lambda b: b.add("tone1.ogg\nclear"),
    lambda b: b.play("tone1.ogg\r\nclear"),
    lambda b: b.add("tone1.ogg\0"),
])
def test_a_line_break_cannot_smuggle_a_second_command(opened, server, call):
    b, _ = opened()
    b.add("tone3.ogg")
    with pytest.raises(ActionError, match="must not contain a line break or NUL"):
        call(b)
    assert server.mpc("playlist", "-f", "%file%").split() == ["tone3.ogg"]  # not cleared


def test_an_mpd_error_is_an_action_error_naming_the_command(opened):
    b, _ = opened()
    with pytest.raises(ActionError, match="mpd refused add"):
        b.add("no/such/file.ogg")
    assert b.player_status()["state"] == "stop"  # the action connection goes on


def test_mpd_restart_degrades_then_recovers_and_actions_work_again(opened, server):
    b, rec = opened()
    assert rec.wait(lambda: rec.events)
    server.stop()
    assert rec.wait(lambda: b.status == "degraded", 10), b.describe_status()
    assert b.error.startswith(f"mpd at 127.0.0.1:{server.port} unreachable")
    with pytest.raises(ActionError, match=f"mpd at 127.0.0.1:{server.port} unreachable"):
        b.add("tone1.ogg")
    server.start()
    assert rec.wait(lambda: b.status == "running", 10), b.describe_status()
    n = len(rec.events)
    b.add("tone1.ogg")
    b.play()
    assert rec.wait(lambda: kinds(rec, n) == ["MusicPlayEvent", "NewPlayingTrackEvent"]), rec.summary()


def test_a_wrong_password_degrades_with_the_reason_and_never_the_secret(tmp_path, monkeypatch, caplog,
                                                                          make_hub):
    need_mpd()
    with mock.MpdServer(tmp_path / "mpd", password="right-pw-123") as server:
        monkeypatch.setenv("MPD_PW", "wrong-pw-456")
        with caplog.at_level(logging.DEBUG):
            hub = make_hub(f"music.mpd: {{host: 127.0.0.1, port: {server.port}, password: !env MPD_PW, "
                           "retry_interval: 0.05}\n")
            backend = hub.backends["music.mpd"]
            assert wait_for(lambda: backend.status == "degraded", 10), backend.describe_status()
            assert backend.error == f"mpd at 127.0.0.1:{server.port} refused the password; retrying"
            resp = hub.execute("music.mpd.status")
            assert resp.errors == [f"music.mpd.status: mpd at 127.0.0.1:{server.port} refused the password"]
            statuses = json.dumps(hub.status(), default=str)
        assert "wrong-pw-456" not in statuses + caplog.text + json.dumps(resp.errors)
        monkeypatch.setenv("MPD_PW", "right-pw-123")
        ok = MpdBackend({"host": "127.0.0.1", "port": server.port, "password": "right-pw-123"})
        try:
            assert ok.add("tone1.ogg")["playlistlength"] == "1"
        finally:
            ok.close()


def test_reconnect_backs_off_on_the_clock_doubling_to_the_maximum():
    clock = RecordingClock()
    b = MpdBackend({"host": "127.0.0.1", "port": mock.free_port(), "retry_interval": 1,
                    "max_retry_interval": 4}, clock=clock)
    b.open(EventRecorder())
    try:
        for n in range(1, 5):
            assert wait_for(lambda n=n: clock.waiters == 1 and len(clock.waits) == n, 5)
            clock.advance(clock.waits[-1])
        assert wait_for(lambda: clock.waiters == 1 and len(clock.waits) == 5, 5)
        assert clock.waits[:5] == [1, 2, 4, 4, 4]
        assert b.status == "degraded" and "unreachable" in (b.error or "")
    finally:
        finishes(b.close, 5, "close while backing off")


def test_close_is_prompt_while_the_reader_waits_in_idle(opened):
    b, rec = opened()
    assert rec.wait(lambda: rec.events)
    finishes(b.close, 2, "close with the reader in mpd's idle")
    assert b.status == "stopped"


SEARCH_AND_PLAY = """
music.mpd: {{host: 127.0.0.1, port: {port}, retry_interval: 0.05}}
event.hook.SearchSongVoiceCommand:
    if:
        type: platypush.message.event.assistant.SpeechRecognizedEvent
        phrase: "play ${{title}} by ${{artist}}"
    then:
        - action: procedure.search_and_play_song

procedure.sync.search_and_play_song:
    - action: music.mpd.clear
    - action: music.mpd.search
      args:
          filter:
              artist: ${{artist}}
              title: ${{title}}
    - if ${{len(output) > 0}}:
        - action: music.mpd.play
          args:
              resource: ${{output[0]['file']}}

event.hook.NowPlaying:
    if:
        type: platypush.message.event.music.NewPlayingTrackEvent
    then:
        - action: variable.set
          args:
              now_playing: ${{track['title']}}
"""


def test_the_seeds_search_and_play_procedure_runs_through_a_hub(make_hub, server):
    hub = make_hub(SEARCH_AND_PLAY.format(port=server.port))
    assert wait_for(lambda: hub.backends["music.mpd"].status == "running", 5)
    server.mpc("add", "tone1.ogg")  # cleared by the procedure
    hub.publish(Event.of("SpeechRecognizedEvent", phrase="play tone 2 by artist 2"))
    assert wait_for(lambda: hub.execute("variable.get", {"name": "now_playing"}).output == {"now_playing": "Tone 2"},
                    10), hub.execute("music.mpd.status").output
    assert hub.execute("music.mpd.current_track").output["file"] == "tone2.ogg"
    assert server.mpc("playlist", "-f", "%file%").split() == ["tone2.ogg"]
    hub.publish(Event.of("SpeechRecognizedEvent", phrase="play nothing by nobody"))
    # the procedure clears the queue first; no match: nothing is added or played
    assert wait_for(lambda: hub.execute("music.mpd.status").output["playlistlength"] == "0", 10)
    assert hub.flush()
    assert hub.execute("music.mpd.status").output["state"] == "stop"


def test_platypush_backend_music_mpd_is_read_as_music_mpd(write_config, load_config):
    cfg = load_config(write_config("backend.music.mpd:\n  server: mpd.lan\n  port: 6601\n  poll_seconds: 3\n"))
    section = cfg.sections["music.mpd"]
    assert (section["host"], section["port"], section["poll_seconds"]) == ("mpd.lan", 6601, 3)
    assert any("backend.music.mpd" in str(w) for w in cfg.warnings)


def test_platypush_plugin_and_backend_sections_merge_into_one(write_config, load_config):
    cfg = load_config(write_config("music.mpd: {host: mpd.lan, port: 6601}\n"
                                   "backend.music.mpd: {server: mpd.lan, port: 6601, poll_seconds: 3}\n"))
    section = cfg.sections["music.mpd"]
    assert (section["host"], section["port"], section["poll_seconds"]) == ("mpd.lan", 6601, 3)


# ---------------------------------------------------------------------- a hostile mpd
Answer = bytes | Callable[[socket.socket, threading.Event], None]


class HostileMpd:
    """A tiny mpd on the loopback: it greets, answers ``status`` with a stopped player,
    never answers ``idle`` (nothing changes) and ``OK`` to anything else, except the
    commands in :attr:`answers`: those get that answer (bytes, or a function that writes to
    the connection until it closes). Tests change :attr:`answers` to heal it."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.connections = 0
        self.hostile_sent: list[str] = []  # the commands that got a hostile answer
        self.stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name="fake-mpd", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), name="fake-mpd-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            try:
                conn.sendall(b"OK MPD 0.23.0\n")
                for line in lines:
                    command = line.split(b" ", 1)[0].strip().decode()
                    answer = self.answers.get(command)
                    if answer is not None:
                        self.hostile_sent.append(command)
                        if callable(answer):
                            answer(conn, self.stop)
                            return
                        conn.sendall(answer)
                    elif command == "status":
                        conn.sendall(b"volume: 50\nstate: stop\nOK\n")
                    elif command != "idle":
                        conn.sendall(b"OK\n")
            except OSError:
                pass  # the backend dropped the connection

    def close(self) -> None:
        self.stop.set()
        self._server.close()


def endless(chunk: bytes) -> Answer:
    """An answer that never ends: ``chunk`` again and again, as fast as the client reads."""
    def send(conn: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            conn.sendall(chunk)
    return send


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    """An answer that never ends, one byte every 50 ms: each read gets something in time."""
    while not stop.wait(0.05):
        conn.sendall(b"x")


@pytest.fixture
def hostile() -> Iterator[Callable[..., HostileMpd]]:
    servers: list[HostileMpd] = []
    backends: list[MpdBackend] = []

    def make(answers: dict[str, Answer], *, open_with: EventRecorder | None = None,
             **config: Any) -> tuple[HostileMpd, MpdBackend]:
        clock = config.pop("clock", None)
        server = HostileMpd(answers)
        servers.append(server)
        b = MpdBackend({"host": "127.0.0.1", "port": server.port, "retry_interval": 0.05,
                        "max_retry_interval": 0.2, "connect_timeout": 1, **config}, clock=clock)
        backends.append(b)
        if open_with is not None:
            b.open(open_with)
        return server, b

    yield make
    for b in backends:
        finishes(b.close, 10, "close")
    for server in servers:
        server.close()


BAD_ANSWERS = {
    "undecodable": ("status", b"volume: \xff\xfe\x80\nOK\n", "sent a bad answer to status (UnicodeDecodeError: "),
    "not key: value": ("currentsong", b"no colon here\nOK\n", "sent a bad answer to currentsong (ProtocolError: "),
    "endless line": ("status", endless(b"A" * 65536),
                     f"the answer to status passed the limit of {mpd_backend.MAX_LINE_BYTES} bytes per line "
                     "(MAX_LINE_BYTES)"),
    "endless lines": ("status", endless(b"file: x\n" * 8192),
                      f"passed the limit of {mpd_backend.MAX_ANSWER_LINES} lines per answer (MAX_ANSWER_LINES)"),
    "endless bytes": ("status", endless(b"file: " + b"x" * 60000 + b"\n"),
                      f"passed the limit of {mpd_backend.MAX_ANSWER_BYTES} bytes per answer (MAX_ANSWER_BYTES)"),
    "trickle": ("status", trickle, "the answer to status passed its deadline of 1 s (connect_timeout)"),
}


@pytest.mark.parametrize("case", [*BAD_ANSWERS, "trickled idle"])
def test_a_bad_answer_degrades_the_reader_which_reconnects_and_recovers(hostile, case):
    command, answer, reason = (("idle", trickle, "the answer to idle passed its deadline of 1 s")
                               if case == "trickled idle" else BAD_ANSWERS[case])
    rec = EventRecorder()
    server, b = hostile({command: answer}, open_with=rec)
    assert rec.wait(lambda: b.status == "degraded", 10), b.describe_status()
    assert b.error.startswith(f"mpd at 127.0.0.1:{server.port}") and reason in b.error, b.error
    assert b.error.endswith("; retrying") and len(b.error) < 300
    assert b.describe_status()["protocol_errors"] >= 1
    assert rec.wait(lambda: server.connections >= 2, 10)  # the reader lives on: it reconnects
    server.answers = {}
    assert rec.wait(lambda: b.status == "running", 10), b.describe_status()
    assert b.error is None


@pytest.mark.parametrize("case", BAD_ANSWERS)
def test_a_bad_answer_to_an_action_is_an_action_error_and_the_next_command_starts_clean(hostile, case):
    command, answer, reason = BAD_ANSWERS[case]
    server, b = hostile({command: answer})
    action = b.current_track if command == "currentsong" else b.player_status
    with pytest.raises(ActionError) as error:
        finishes(action, 1 + 5, case)  # the deadline (connect_timeout) plus a margin
    assert reason in str(error.value)
    server.answers = {}
    assert b.player_status() == {"volume": "50", "state": "stop"}  # not the rest of the bad answer
    assert server.connections == 2  # the bad connection was dropped


def test_close_is_prompt_while_an_action_is_stuck_on_a_trickling_server(hostile):
    server, b = hostile({"status": trickle}, connect_timeout=60)
    outcome: list[BaseException] = []

    def act() -> None:
        try:
            b.player_status()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome.append(e)

    stuck = threading.Thread(target=act, name="pihub-test-action", daemon=True)
    stuck.start()
    assert wait_for(lambda: server.hostile_sent == ["status"], 5)
    finishes(b.close, 5, "close with an action stuck on a trickling server")
    stuck.join(5)
    assert not stuck.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ActionError)
    assert b.status == "stopped"


def test_an_answer_quoting_the_password_never_shows_it(hostile, caplog):
    with caplog.at_level(logging.DEBUG):
        server, b = hostile({"status": b"oops right-pw-123 leaked\nOK\n"}, open_with=EventRecorder(),
                            password="right-pw-123")
        assert wait_for(lambda: b.status == "degraded", 10), b.describe_status()
        with pytest.raises(ActionError) as error:
            b.player_status()
    assert "oops *** leaked" in b.error and "oops *** leaked" in str(error.value)
    assert "right-pw-123" not in b.error + str(error.value) + caplog.text


def test_bad_answers_are_counted_and_their_warnings_rate_limited(hostile, caplog):
    clock = RecordingClock()  # never moves by itself: every warning falls in one window
    n = 3 * mpd_backend.WARN_LOG_BURST

    def numbered(conn: socket.socket, stop: threading.Event) -> None:  # a new reason each time
        conn.sendall(b"bad line %d\nOK\n" % len(clock.waits))

    with caplog.at_level(logging.WARNING, logger="pihub.backends.music.mpd"):
        server, b = hostile({"status": numbered}, open_with=EventRecorder(), clock=clock)
        for i in range(1, n + 1):
            assert wait_for(lambda i=i: clock.waiters == 1 and len(clock.waits) == i, 5)
            clock.advance(clock.waits[-1])
        assert wait_for(lambda: clock.waiters == 1 and len(clock.waits) == n + 1, 5)
    assert b.describe_status()["protocol_errors"] == n + 1
    warnings = [r for r in caplog.records if "sent a bad answer to status" in r.getMessage()]
    assert len(warnings) == mpd_backend.WARN_LOG_BURST
