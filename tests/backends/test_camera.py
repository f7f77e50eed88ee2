"""The camera.pi backend on the mock driver (ffmpeg as the camera), watched by real clients.

Clients are the real decoders a user runs: ffprobe, ffmpeg (``-f framemd5``: every decoded
frame, and any decoder error on stderr) and VLC (as an unprivileged user: Debian's VLC
refuses root), plus raw sockets for the hostile viewers. The picamera2 driver runs in the
HIL suite on a Pi (tests/hil/test_hil_camera.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import EventRecorder, finishes, need_absent, need_tool, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.camera import RESOLUTIONS, CameraBackend, jpeg_size
from pihub.backends.camera_ffmpeg import jpeg_end
from pihub.backends.camera_stream import MAX_VIEWER_INPUT, KeyframeScanner, StreamServer
from pihub.clock import ManualClock
from pihub.errors import ActionError, BackendUnavailable, ConfigError, ConfigProblems
from pihub.limits import REFUSED_LOG_BURST, REFUSED_LOG_WINDOW_S


@pytest.fixture
def ffmpeg() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        need_tool(shutil.which(tool) is not None, f"{tool} is not installed (apt-get install ffmpeg)")


@pytest.fixture
def camera(ffmpeg: None) -> Iterator[Callable[..., tuple[CameraBackend, EventRecorder]]]:
    """Open mock cameras on a free port; each is closed at teardown."""
    made: list[CameraBackend] = []

    def make(clock: Any = None, **config: Any) -> tuple[CameraBackend, EventRecorder]:
        cfg = {"driver": "mock", "listen_port": 0, "resolution": [320, 240], **config}
        cam = CameraBackend(cfg, clock=clock)
        cam.validate_environment()
        events = EventRecorder()
        cam.open(events)
        made.append(cam)
        return cam, events

    yield make
    for cam in made:
        cam.close()


def framemd5(port: int, frames: int, timeout: float = 60.0) -> subprocess.Popen[str]:
    """An ffmpeg viewer decoding ``frames`` frames of the stream to framemd5 lines."""
    return subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-f", "h264", "-i", f"tcp://127.0.0.1:{port}",
                             "-frames:v", str(frames), "-f", "framemd5", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def decoded(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str]:
    """``(frames decoded, decoder errors)`` of a finished :func:`framemd5` viewer."""
    out, err = proc.communicate(timeout=timeout)
    return len([line for line in out.splitlines() if line and not line.startswith("#")]), err.strip()


def ffprobe(target: str, *extra: str) -> dict[str, str]:
    """ffprobe's ``codec_name``, ``width``, ``height`` (and ``extra`` entries) of the first stream."""
    entries = ",".join(("codec_name", "width", "height", *extra))
    args = ["ffprobe", "-v", "error", "-show_entries", f"stream={entries}", "-of", "default=nw=1"]
    if target.startswith("tcp://"):
        args += ["-f", "h264", "-analyzeduration", "1000000"]
    if "nb_read_frames" in extra:
        args.append("-count_frames")
    out = subprocess.run([*args, "-i", target], capture_output=True, text=True, timeout=60, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def connect(port: int, rcvbuf: int | None = None, source: str = "127.0.0.1") -> socket.socket:
    """A raw viewer of the stream on 127.0.0.1:``port``, from the loopback address ``source``."""
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def first_bytes(s: socket.socket, n: int) -> bytes:
    """The first ``n`` bytes ``s`` receives (fewer when it is closed first)."""
    s.settimeout(10)
    head = b""
    while len(head) < n:
        more = s.recv(n - len(head))
        if not more:
            break
        head += more
    return head


# ---------------------------------------------------------------------- pure parts
def _stream() -> tuple[bytes, list[int]]:
    """A fake Annex-B stream: SPS (type 7) with 3- and 4-byte start codes, and its SPS offsets."""
    parts = [b"\x00\x00\x00\x01\x09\xf0", b"\x00\x00\x01\x67abc", b"\x00\x00\x01\x68de", b"\x00\x00\x01\x65" + b"x" * 40,
             b"\x00\x00\x01\x41" + b"y" * 30, b"\x00\x00\x00\x01\x67fgh", b"\x00\x00\x01\x65" + b"z" * 20]
    data = b"".join(parts)
    sps = [i + 3 for i in range(len(data) - 3) if data[i:i + 3] == b"\x00\x00\x01" and data[i + 3] & 0x1F == 7]
    return data, sps


def test_keyframe_scanner_finds_each_sps_once_whatever_the_chunking() -> None:
    data, sps = _stream()
    assert len(sps) == 2
    for a in range(1, len(data)):
        for b in range(a + 1, len(data), 7):
            scanner = KeyframeScanner()
            found = []
            base = 0
            for chunk in (data[:a], data[a:b], data[b:]):
                at = scanner.feed(chunk)
                if at >= 0:
                    found.append(base + at)
                base += len(chunk)
            # at most one per chunk (the first): both SPS in one chunk report the first
            assert found and found[0] == sps[0], (a, b, found)
            assert set(found) <= set(sps)


def test_jpeg_end_walks_segments_so_table_bytes_are_not_an_end_of_image() -> None:
    dqt = b"\xff\xdb\x00\x06\x00\xff\xd9\x01"  # a table whose bytes hold FF D9
    sof = b"\xff\xc0\x00\x0b\x08\x00\xf0\x01\x40\x01\x01\x11\x00"  # 320x240
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    jpeg = b"\xff\xd8" + dqt + sof + sos + b"\x12\xff\x00\x34" + b"\xff\xd9"
    assert jpeg_end(jpeg + b"\xff\xd8next") == len(jpeg)
    assert jpeg_end(jpeg[:20]) == 0  # incomplete
    assert jpeg_end(b"garbage" + jpeg) == -1
    assert jpeg_size(jpeg) == (320, 240)
    assert jpeg_size(b"not a jpeg") is None


def test_keyframes_come_twice_as_often_where_a_viewer_cannot_ask_for_one() -> None:
    assert CameraBackend({"driver": "mock", "framerate": 30}).settings.gop == 15
    assert CameraBackend({"driver": "picamera2", "framerate": 30}).settings.gop == 30
    assert CameraBackend({"driver": "mock", "framerate": 30, "keyframe_interval": 2}).settings.gop == 60


def test_unsupported_resolution_names_every_allowed_one() -> None:
    with pytest.raises(ConfigProblems) as e:
        CameraBackend({"driver": "mock", "resolution": [1000, 1000]})
    text = str(e.value.problems[0])
    assert "1000x1000 is not a supported resolution" in text
    for w, h in RESOLUTIONS:
        assert f"{w}x{h}" in text
    with pytest.raises(ConfigProblems, match="must be \\[width, height\\] or 'WxH', not '640 by 480'"):
        CameraBackend({"driver": "mock", "resolution": "640 by 480"})


def test_the_panels_entity_is_the_camera_with_its_http_paths() -> None:
    assert CameraBackend({"driver": "mock", "resolution": "320x240"}).describe_entities() == [
        {"name": "camera.pi", "kind": "camera", "resolution": [320, 240], "capturing": False,
         "video": "/camera/pi/video.mjpeg", "photo": "/camera/pi/photo.jpg"}]


def test_rotation_90_is_refused_with_the_allowed_values() -> None:
    _, problems = CameraBackend.config_schema.validate({"rotation": 90}, ("camera.pi",))
    assert [p.message for p in problems] == ["must be one of 0, 180, not 90"]


def test_platypush_section_and_keys_load_with_warnings_naming_the_new_keys(write_config: Any,
                                                                           load_config: Any) -> None:
    cfg = load_config(write_config("""
        backend.camera.pi:
          driver: mock
          listen_port: 2223
          start_recording_on_startup: true
          x_resolution: 1280
          y_resolution: 720
          fps: 24
          rotate: 180
          horizontal_flip: true
          bitrate: 4000000
          awb_mode: auto
        """))
    section = cfg.sections["camera.pi"]
    cam = CameraBackend(section)
    s = cam.settings
    assert (s.width, s.height, s.framerate, s.bitrate) == (1280, 720, 24.0, 4_000_000)
    assert cam.config["listen_port"] == 2223 and cam.config["stream_on_start"] is True
    assert (s.hflip, s.vflip) == (False, True)  # rotation 180 flips both; hflip flips back
    warnings = " | ".join(str(w) for w in cfg.warnings)
    for old, new in (("start_recording_on_startup", "stream_on_start"), ("fps", "framerate"),
                     ("rotate", "rotation"), ("horizontal_flip", "hflip")):
        assert f"'{old}' is renamed to '{new}'" in warnings
    assert "use resolution: [width, height]" in warnings and "'awb_mode' is deprecated" in warnings
    assert "backend.camera.pi" in warnings


def test_unsupported_resolution_is_a_located_config_error(write_config: Any, make_hub: Any) -> None:
    with pytest.raises(ConfigError, match="1000x1000 is not a supported resolution \\(allowed: 320x240"):
        make_hub("camera.pi: {driver: mock, listen_port: 0, resolution: 1000x1000}\n", start=False)


# ---------------------------------------------------------------------- the stream, real clients
def test_ffprobe_sees_h264_of_the_configured_size(camera: Any) -> None:
    cam, _ = camera(resolution="800x600")
    info = ffprobe(f"tcp://127.0.0.1:{cam.port}")
    assert (info["codec_name"], info["width"], info["height"]) == ("h264", "800", "600")


def test_eight_viewers_decode_from_one_encoder_and_a_late_one_from_its_first_frame(camera: Any) -> None:
    cam, events = camera(max_viewers=18)  # all from 127.0.0.1: half of max_viewers per address
    viewers = [framemd5(cam.port, 90) for _ in range(8)]
    assert wait_for(lambda: cam.keyframes >= 2 and len(events.args_of("CameraStreamClientConnectedEvent")) == 8, 20)
    late = framemd5(cam.port, 30)  # joins mid-GOP: it must start at the next keyframe
    results = [decoded(v) for v in viewers]
    assert results == [(90, "")] * 8
    assert decoded(late) == (30, "")
    assert cam.captures == 1  # one encoder for all of them
    assert wait_for(lambda: len(events.args_of("CameraStreamClientDisconnectedEvent")) == 9, 10)
    clients = {e["client"] for e in events.args_of("CameraStreamClientConnectedEvent")}
    assert {e["client"] for e in events.args_of("CameraStreamClientDisconnectedEvent")} == clients
    # a viewer that quits with unread data in its buffer resets the connection
    assert all(e["reason"] in ("closed", "reset") and e["device"] == 0
               for e in events.args_of("CameraStreamClientDisconnectedEvent"))


def test_a_viewer_that_stops_reading_is_dropped_and_the_others_keep_decoding(camera: Any) -> None:
    cam, events = camera(resolution=[640, 480], bitrate=8_000_000, viewer_buffer=64 * 1024)
    stuck = connect(cam.port, rcvbuf=4096)  # never reads
    try:
        reader = framemd5(cam.port, 150)
        assert wait_for(lambda: [e["reason"] for e in events.args_of("CameraStreamClientDisconnectedEvent")] == ["too slow"],
                        30), events.args_of("CameraStreamClientDisconnectedEvent")
        assert cam.get_status()["dropped_slow"] == 1
        assert reader.poll() is None, "the reader finished before the slow viewer was dropped"
        assert decoded(reader) == (150, "")
    finally:
        stuck.close()


def test_vlc_as_an_unprivileged_user_plays_the_stream(camera: Any) -> None:
    need_tool(shutil.which("cvlc") is not None, "VLC is not installed (apt-get install vlc-bin vlc-plugin-base)")
    cam, _ = camera()
    out = tempfile.mkdtemp(prefix="pihub-vlc-", dir="/tmp")
    os.chmod(out, 0o777)
    cmd = ["cvlc", "-q", "--no-audio", "--vout=dummy", "--video-filter=scene", "--scene-format=png",
           "--scene-ratio=10", "--scene-prefix=f", f"--scene-path={out}", f"tcp/h264://127.0.0.1:{cam.port}"]
    if os.geteuid() == 0:  # Debian's VLC refuses root
        need_tool(shutil.which("setpriv") is not None, "setpriv is not installed (apt-get install util-linux)")
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", f"HOME={out}", *cmd]
    vlc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: len([f for f in os.listdir(out) if f.endswith(".png")]) >= 3, 30), os.listdir(out)
        png = sorted(Path(out).glob("*.png"))[0]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert ffprobe(str(png))["width"] == "320"
    finally:
        os.killpg(vlc.pid, 9)  # VLC never exits by itself on a live stream
        vlc.wait(10)
        shutil.rmtree(out, ignore_errors=True)


def test_viewers_beyond_max_viewers_are_closed_before_any_data(camera: Any) -> None:
    cam, events = camera(max_viewers=2)
    a, b = connect(cam.port), connect(cam.port, source="127.0.0.2")  # one per address: half of max_viewers
    try:
        assert wait_for(lambda: len(events.args_of("CameraStreamClientConnectedEvent")) == 2)
        third = connect(cam.port, source="127.0.0.3")
        third.settimeout(10)
        assert third.recv(100) == b""  # closed, nothing sent
        third.close()
        assert cam.get_status()["refused"] == 1
        a.settimeout(10)
        assert a.recv(4)[:3] in (b"\x00\x00\x00", b"\x00\x00\x01")  # the served ones get the stream
    finally:
        a.close()
        b.close()


def test_one_address_cannot_take_every_viewer_slot(camera: Any) -> None:
    cam, events = camera(max_viewers=4, viewer_buffer=64 << 20)  # 2 per address; never dropped as slow here
    hogs = [connect(cam.port) for _ in range(2)]  # they never read
    try:
        assert wait_for(lambda: len(events.args_of("CameraStreamClientConnectedEvent")) == 2, 10)
        third = connect(cam.port)
        assert first_bytes(third, 5) == b""  # refused: closed before any data
        third.close()
        other = connect(cam.port, source="127.0.0.2")
        try:
            assert first_bytes(other, 5) == b"\x00\x00\x00\x01\x67"  # the stream, from an SPS
        finally:
            other.close()
        assert cam.get_status()["refused"] == 1
        # a viewer that leaves gives its address's place back
        gone = hogs.pop()
        gone_client = f"127.0.0.1:{gone.getsockname()[1]}"
        gone.close()
        assert wait_for(lambda: gone_client not in {v["client"] for v in cam.get_status()["viewers"]}, 10)
        again = connect(cam.port)
        try:
            assert first_bytes(again, 5) == b"\x00\x00\x00\x01\x67"
        finally:
            again.close()
        assert cam.get_status()["refused"] == 1
    finally:
        for s in hogs:
            s.close()


def test_refused_viewers_are_each_counted_but_warned_about_a_burst_per_window(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]  # the limiter's clock stands still: the whole flood falls in one window
    joined: list[str] = []
    server = StreamServer("127.0.0.1", 0, max_viewers=1, backlog_limit=1 << 20, on_join=joined.append,
                          on_leave=lambda client, reason: None, name="cam", clock=lambda: now[0])
    server.open()
    holder = connect(server.port)
    flood = 4 * REFUSED_LOG_BURST

    def refuse_one(i: int) -> None:
        s = connect(server.port, source=f"127.0.0.{2 + i % 200}")
        try:
            assert first_bytes(s, 1) == b""  # closed before any data
        finally:
            s.close()

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "pihub.backends.camera"]

    try:
        assert wait_for(lambda: joined, 10)
        with caplog.at_level(logging.WARNING, logger="pihub.backends.camera"):
            for i in range(flood):
                refuse_one(i)
            assert server.refused == flood
            assert len(warnings()) == REFUSED_LOG_BURST
            assert warnings()[0].startswith("cam: viewer from 127.0.0.2 refused: 1 watching, 0 from it "
                                            "(limits: 1 in all (max_viewers), 1 per address)")
            now[0] += REFUSED_LOG_WINDOW_S  # the next window: one line, with the count held back
            refuse_one(flood)
            assert server.refused == flood + 1
            assert len(warnings()) == REFUSED_LOG_BURST + 1
            assert warnings()[-1].endswith(f"; {flood - REFUSED_LOG_BURST} more refused since the last warning")
    finally:
        holder.close()
        server.close()


def test_a_viewer_sending_garbage_or_resetting_is_dropped_and_the_stream_goes_on(camera: Any) -> None:
    cam, events = camera()
    chatty = connect(cam.port)
    chatty.sendall(b"GET / HTTP/1.1\r\n\r\n")  # a little garbage is read and ignored
    flood = connect(cam.port)
    reset = connect(cam.port)
    try:
        chatty.settimeout(10)
        head = b""
        while len(head) < 5:
            head += chatty.recv(5 - len(head))
        assert head == b"\x00\x00\x00\x01\x67"  # starts at an SPS: a decoder can begin here
        with contextlib.suppress(OSError):
            flood.sendall(os.urandom(MAX_VIEWER_INPUT + 4096))
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()  # an RST
        reasons = lambda: sorted(e["reason"] for e in events.args_of("CameraStreamClientDisconnectedEvent"))  # noqa: E731
        assert wait_for(lambda: len(reasons()) == 2, 10), reasons()
        assert reasons()[1] == "sent data" and reasons()[0] in ("reset", "closed")
        assert decoded(framemd5(cam.port, 30)) == (30, "")  # the server still serves
        assert cam.status == BackendStatus.RUNNING
    finally:
        for s in (chatty, flood):
            s.close()


def test_the_camera_captures_only_while_watched_and_stops_after_idle_timeout(camera: Any) -> None:
    clock = ManualClock()
    cam, events = camera(clock=clock, idle_timeout=5.0)
    assert cam.get_status()["capturing"] is False
    v = connect(cam.port)
    assert wait_for(lambda: cam.get_status()["capturing"] and cam.h264_bytes > 0, 10)
    v.close()
    assert wait_for(lambda: clock.pending(), 10)  # the idle stop is armed once the viewer is gone
    clock.advance(4.9)
    assert cam.get_status()["capturing"] is True
    clock.advance(0.2)
    assert wait_for(lambda: events.args_of("CameraRecordingStoppedEvent"), 10)
    assert not cam.get_status()["capturing"]
    assert [e["filename"] for e in events.args_of("CameraRecordingStartedEvent")] == [None]
    assert [e["filename"] for e in events.args_of("CameraRecordingStoppedEvent")] == [None]


def test_stream_on_start_captures_with_nobody_watching(camera: Any) -> None:
    cam, events = camera(stream_on_start=True)
    assert cam.get_status()["capturing"] is True
    assert wait_for(lambda: cam.keyframes >= 1, 10)
    assert events.args_of("CameraRecordingStartedEvent") == [{"device": 0, "filename": None}]


def test_stop_and_start_streaming(camera: Any) -> None:
    cam, events = camera()
    port = cam.port
    v = connect(port)
    try:
        assert wait_for(lambda: cam.get_status()["viewers"], 10)
        assert cam.stop_streaming() == {"listening": False, "disconnected": 1}
        assert events.args_of("CameraStreamClientDisconnectedEvent")[0]["reason"] == "stream stopped"
        with pytest.raises(ConnectionRefusedError):
            connect(port)
        out = cam.start_streaming()
        assert out["listening"] is True
        assert decoded(framemd5(cam.port, 10)) == (10, "")
    finally:
        v.close()


def test_a_camera_that_dies_degrades_and_is_restarted_with_back_off(camera: Any) -> None:
    clock = ManualClock()
    cam, _ = camera(clock=clock)
    statuses: list[str] = []
    cam.bind_status_listener(lambda b: statuses.append(str(b.status)))
    v = connect(cam.port)
    try:
        assert wait_for(lambda: cam._driver is not None and cam._driver.pid is not None, 10)  # type: ignore[attr-defined]
        os.kill(cam._driver.pid, 9)  # type: ignore[attr-defined]
        assert wait_for(lambda: cam.status == BackendStatus.DEGRADED, 10)
        assert "ffmpeg exited with code -9" in (cam.error or "")
        clock.advance(1.0)  # the first back-off
        assert wait_for(lambda: cam.status == BackendStatus.RUNNING, 10), cam.error
        assert statuses == ["running", "degraded", "running"]
        assert cam.captures == 2
    finally:
        v.close()


# ---------------------------------------------------------------------- pictures and recordings
def test_take_picture_writes_a_jpeg_of_the_configured_size(camera: Any, tmp_path: Path) -> None:
    cam, events = camera(resolution=[640, 480])
    out = cam.take_picture(str(tmp_path / "shot.jpg"))
    assert out["filename"] == str(tmp_path / "shot.jpg") and (out["width"], out["height"]) == (640, 480)
    info = ffprobe(out["filename"])
    assert (info["codec_name"], info["width"], info["height"]) == ("mjpeg", "640", "480")
    assert events.args_of("CameraPictureTakenEvent") == [{"device": 0, "filename": out["filename"]}]
    with pytest.raises(ActionError, match="the directory '/nonexistent' does not exist"):
        cam.take_picture("/nonexistent/x.jpg")


def test_a_recording_is_a_file_ffprobe_accepts_with_the_expected_duration(camera: Any, tmp_path: Path) -> None:
    cam, events = camera(framerate=30)
    path = str(tmp_path / "clip.h264")
    assert cam.start_recording(path, 2.0) == {"filename": path, "duration": 2.0}
    assert wait_for(lambda: [e for e in events.args_of("CameraRecordingStoppedEvent") if e["filename"] == path], 30)
    info = ffprobe(path, "nb_read_frames")
    assert info["codec_name"] == "h264" and (info["width"], info["height"]) == ("320", "240")
    assert 2.0 * 30 - 6 <= int(info["nb_read_frames"]) <= 2.0 * 30 + 6  # 2 s at 30 frames/s
    started = [e for e in events.args_of("CameraRecordingStartedEvent") if e["filename"] == path]
    assert started == [{"device": 0, "filename": path}]
    with pytest.raises(ActionError, match="is not recording"):
        cam.stop_recording()


def test_an_unwritable_recording_path_is_an_error_and_the_stream_goes_on(make_hub: Any, ffmpeg: None,
                                                                          tmp_path: Path) -> None:
    hub = make_hub("camera.pi: {driver: mock, listen_port: 0, resolution: [320, 240]}\n")
    cam = hub.backends["camera.pi"]
    viewer = framemd5(cam.port, 60)
    assert wait_for(lambda: cam.keyframes >= 1, 20)
    for bad, why in (("/nonexistent/dir/clip.h264", "No such file or directory"),
                     (str(tmp_path), "must end with one of .h264, .264"),
                     (str(tmp_path / "clip.mp4"), "must end with one of .h264, .264")):
        resp = hub.execute("camera.pi.start_recording", {"video_file": bad})
        assert not resp.ok and why in resp.errors[0], resp.errors
    (tmp_path / "dir.h264").mkdir()
    resp = hub.execute("camera.pi.start_recording", {"video_file": str(tmp_path / "dir.h264")})
    assert "cannot record to" in resp.errors[0] and "Is a directory" in resp.errors[0]
    # a FIFO would block the action (no reader) or send the stream elsewhere (a reader): refused
    fifo = tmp_path / "pipe.h264"
    os.mkfifo(fifo)
    resp = finishes(lambda: hub.execute("camera.pi.start_recording", {"video_file": str(fifo)}))
    assert not resp.ok and str(fifo) in resp.errors[0], resp.errors
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        resp = finishes(lambda: hub.execute("camera.pi.start_recording", {"video_file": str(fifo)}))
        assert resp.errors == [f"camera.pi.start_recording: cannot record to {str(fifo)!r}: not a regular file "
                               "(a recording is a file)"]
    finally:
        os.close(reader)
    assert decoded(viewer) == (60, "")  # the stream went on
    assert hub.execute("camera.pi.status").output["recording"] is None


def test_port_in_use_fails_the_backend_with_the_reason_and_the_daemon_runs_on(make_hub: Any, ffmpeg: None) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        hub = make_hub(f"camera.pi: {{driver: mock, listen_port: {port}}}\nmock: {{}}\n")
        cam = hub.backends["camera.pi"]
        assert cam.status == BackendStatus.FAILED_RUNTIME
        assert f"cannot listen on 127.0.0.1:{port}" in cam.error and "another program listens there" in cam.error
        assert hub.ready and hub.execute("mock.emit", {"type": "CustomEvent", "subtype": "x"}).ok
        assert hub.camera("camera.pi") is None  # the web layer sees no running camera
    finally:
        holder.close()


def test_the_picamera2_driver_without_picamera2_says_what_to_install() -> None:
    need_absent(importlib.util.find_spec("picamera2") is not None,
                "picamera2 is installed here: the HIL test covers this driver")
    cam = CameraBackend({"driver": "picamera2"})
    with pytest.raises(BackendUnavailable, match="sudo apt install python3-picamera2"):
        cam.validate_environment()
