"""The ``camera.pi`` backend: one camera, watched by many: H.264 over TCP, JPEG, MJPEG, recordings.

Config (Platypush's ``backend.camera.pi`` section is read under this name; its keys and the
``camera.pi`` plugin's are accepted, each old name with a warning naming the new one)::

    camera.pi:
      driver: picamera2          # picamera2 (a Pi camera module) | mock (ffmpeg's test picture)
      device: 0                  # camera number (picamera2's camera_num)
      listen_port: 2222          # the H.264 TCP stream (0: any free port)
      bind_address: 127.0.0.1    # loopback unless you say so (0.0.0.0: every interface)
      resolution: [640, 480]     # or "640x480"; one of RESOLUTIONS (x_resolution/y_resolution: old)
      framerate: 30              # frames/s, 1..60 (fps: old name)
      rotation: 0                # 0 or 180 (rotate: old name); see below for 90/270
      hflip: false               # mirror (horizontal_flip: old name)
      vflip: false               # upside down (vertical_flip: old name)
      bitrate: 2000000           # H.264 bits/s
      keyframe_interval: 1.0     # s between keyframes; default 1.0 with picamera2 (a joining viewer
                                 # asks for one), 0.5 with the mock (ffmpeg cannot be asked: a viewer waits)
      stream_on_start: false     # capture from start-up on (start_recording_on_startup: old name)
      max_viewers: 8             # TCP viewers at once, half of them from one address at most; more are refused
      viewer_buffer: 1048576     # bytes queued for one viewer before it is dropped as too slow
      mjpeg_fps: 5               # frames/s of the JPEG path: /video.mjpeg's cap, photo freshness
      max_mjpeg_viewers: 2       # /video.mjpeg clients at once (each holds an HTTP worker thread)
      jpeg_quality: 85           # 1..100
      idle_timeout: 2.0          # s the camera keeps capturing after its last user left
      snapshot_timeout: 5.0      # s a picture may take before the request fails

**Drivers** (one interface, :class:`CameraDriver`): ``picamera2`` (the default;
:mod:`pihub.backends.camera_picamera2`, imported only when chosen: the Pi's hardware H.264
encoder with SPS/PPS inline, JPEG captures of the main stream) and ``mock``
(:mod:`pihub.backends.camera_ffmpeg`: an ffmpeg child process encodes a test picture of the
configured size and rate with libx264, so every test runs against a real H.264 stream and
real JPEGs on any machine).

**Who makes the camera capture.** The camera captures only while someone needs it: a TCP
viewer, an MJPEG viewer, a recording, a picture being taken, or ``stream_on_start``. When
the last one goes, it stops ``idle_timeout`` seconds later (on the backend's clock), so a
panel that polls ``photo.jpg`` does not restart it for each picture.
``CameraRecordingStartedEvent`` / ``CameraRecordingStoppedEvent`` say when the camera starts
and stops capturing (``filename`` null), as Platypush's capture thread does for a stream,
and when a recording to a file starts and stops (``filename`` set).

**The TCP stream** (:mod:`pihub.backends.camera_stream`): ``vlc tcp/h264://HOST:2222``,
``ffplay -f h264 tcp://HOST:2222``, ``mplayer -fps 200 -demuxer h264es ffmpeg://tcp://HOST:2222``.
The server listens from start-up (``stop_streaming`` / ``start_streaming`` close and reopen
it); many viewers share one encoder; each starts at the next keyframe with SPS/PPS, asked
for when the driver can (picamera2); a viewer that stops reading is dropped once
``viewer_buffer`` bytes wait for it, and the others never wait. Platypush serves one
client at a time. ``CameraStreamClientConnectedEvent`` / ``...DisconnectedEvent`` carry
``device``, ``client`` (``host:port``) and, on disconnect, ``reason``. The stream has no
authentication (a raw H.264 socket cannot carry any, and players send nothing): it listens
on loopback unless ``bind_address`` says otherwise, and a warning is logged when it does.

**Pictures and MJPEG.** The JPEG path delivers ``mjpeg_fps`` frames per second while the
camera captures. ``take_picture`` and ``GET /camera/pi/photo.jpg`` return the first frame
finished after the request (within ``snapshot_timeout``), so a picture is never older
than the request. ``GET /camera/pi/video.mjpeg`` sends each new frame, at most
``mjpeg_fps`` per second, and only the latest one: a slow client skips frames, nothing
queues for it.

**Recordings** (``start_recording(video_file, duration)``): the raw H.264 stream from the
next keyframe, written to ``video_file`` (``.h264`` or ``.264``: the Pi's encoder and
Platypush's ``capture_video`` produce raw H.264; ``ffmpeg -i x.h264 -c copy x.mp4`` wraps
it) by a ``pihub-camera-rec`` thread through a bounded queue, so a slow SD card stops the
recording with an error instead of stalling viewers. ``duration`` (seconds) counts from the
first keyframe written, on the backend's clock.

**Rotation**: 0 or 180 only. The Pi's ISP can flip but not transpose, so picamera2 cannot
rotate by 90 or 270 degrees; the mock refuses them too, so a config that works on the mock
rig works on the Pi.

**Resolutions** (:data:`RESOLUTIONS`): the sizes the Pi's H.264 encoder takes that the
camera modules' modes scale to cleanly; another size is refused, listing these.

Actions: ``take_picture(image_file)`` (alias ``capture_image``), ``start_streaming()``,
``stop_streaming()``, ``start_recording(video_file, duration)`` (alias ``capture_video``),
``stop_recording()`` and ``get_status()`` (alias ``status``: ``status`` itself is the
backend's lifecycle attribute).

Failures: a missing ffmpeg (mock) or picamera2/camera (picamera2) raises
:class:`~pihub.errors.BackendUnavailable` (the hub marks the backend failed and runs on); a
port that cannot be bound fails :meth:`CameraBackend.open` with a message naming the address
and what to do. A camera that stops while capturing (ffmpeg exits, picamera2 errors) makes
the backend ``degraded`` and is restarted with a back-off of 1, 2, 4 ... 30 s while it is
still needed; the first data after a restart makes it ``running`` again.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import queue
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Final, Protocol

from pihub.backends.base import Backend, BackendStatus, Emit
from pihub.backends.camera_stream import START_CODE, KeyframeScanner, StreamServer
from pihub.clock import Clock, Timer
from pihub.config.schema import Field, Schema
from pihub.errors import ActionError, ConfigProblem, ConfigProblems
from pihub.events import CATALOGUE, Event, EventType
from pihub.plugin import action

__all__ = ["RESOLUTIONS", "CameraBackend", "CameraDriver", "CameraSettings", "DriverSinks", "jpeg_size"]

#: The sizes a camera may be configured with, (width, height) in pixels.
RESOLUTIONS: Final[tuple[tuple[int, int], ...]] = (
    (320, 240), (640, 480), (800, 600), (1024, 768), (1280, 720), (1280, 960), (1640, 1232), (1920, 1080))
#: What a recording's file name may end with.
VIDEO_SUFFIXES: Final = (".h264", ".264")
#: Encoded chunks queued for the recording thread before the recording fails as too slow.
_REC_QUEUE: Final = 256
_MAX_BACKOFF_S: Final = 30.0
_DEFAULT_RESOLUTION: Final = [640, 480]

_STARTED: Final = CATALOGUE.get("CameraRecordingStartedEvent")
_STOPPED: Final = CATALOGUE.get("CameraRecordingStoppedEvent")
_PICTURE: Final = CATALOGUE.get("CameraPictureTakenEvent")
_JOINED: Final = CATALOGUE.get("CameraStreamClientConnectedEvent")
_LEFT: Final = CATALOGUE.get("CameraStreamClientDisconnectedEvent")

_IGNORED: Final = "ignored by pihub's camera.pi (it has no effect); remove it"
#: Platypush camera options pihub does not implement: accepted with a warning.
_PLATYPUSH_IGNORED: Final = (
    "sharpness", "contrast", "brightness", "iso", "exposure_compensation", "exposure_mode", "meter_mode",
    "awb_mode", "image_effect", "color_effects", "crop", "zoom", "video_stabilization", "warmup_seconds",
    "warmup_frames", "capture_timeout", "frames_dir", "stream_format", "scale_x", "scale_y", "grayscale",
    "color_transform", "led_pin", "redis_queue", "poll_seconds")


@dataclasses.dataclass(frozen=True, slots=True)
class CameraSettings:
    """What a driver is asked to produce.

    Attributes:
        device: the camera number.
        width: frame width, pixels.
        height: frame height, pixels.
        framerate: frames per second.
        bitrate: H.264 bits per second.
        gop: frames from one keyframe to the next.
        hflip: mirror the picture.
        vflip: turn it upside down.
        jpeg_fps: JPEG frames per second on the JPEG path.
        jpeg_quality: 1..100.
    """

    device: int
    width: int
    height: int
    framerate: float
    bitrate: int
    gop: int
    hflip: bool
    vflip: bool
    jpeg_fps: float
    jpeg_quality: int


@dataclasses.dataclass(frozen=True, slots=True)
class DriverSinks:
    """Where a driver delivers its output (any of its threads may call these).

    Attributes:
        on_h264: the H.264 Annex-B stream, in order, in chunks of any size.
        on_jpeg: one whole JPEG image per call.
        on_exit: the capture stopped by itself; the argument says why.
    """

    on_h264: Callable[[bytes], None]
    on_jpeg: Callable[[bytes], None]
    on_exit: Callable[[str], None]


class CameraDriver(Protocol):
    """What the backend asks of a camera driver.

    A driver MUST put SPS and PPS before every keyframe (viewers join there), deliver
    JPEGs of the configured size at about ``jpeg_fps`` while started, and never call the
    sinks after :meth:`stop` returned. :meth:`stop` is never called from a sink.
    """

    def start(self, sinks: DriverSinks) -> None:
        """Start capturing; return once the first data is on its way. Raises on failure."""
        ...

    def stop(self) -> None:
        """Stop capturing and join the driver's threads; idempotent."""
        ...

    def request_keyframe(self) -> bool:
        """Ask for a keyframe soon; False when the driver cannot."""
        ...


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's start-of-frame segment, or None if there is none."""
    i = 2
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return None
    while i + 9 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6]
        i += 2 + length
    return None


class _Recording:
    """One recording to a file: a bounded queue and the ``pihub-camera-rec`` writer thread."""

    def __init__(self, path: str, file: Any, duration: float | None,
                 on_keyframe: Callable[[_Recording], None], on_error: Callable[[_Recording], None]) -> None:
        self.path = path
        self.duration = duration
        self.bytes = 0
        self.error: str | None = None
        self.live = False
        self.started_ns = 0
        self.timer: Timer | None = None
        self._file = file
        self._queue: queue.Queue[bytes | None] = queue.Queue(_REC_QUEUE)
        self._on_keyframe = on_keyframe
        self._on_error = on_error
        self._thread = threading.Thread(target=self._write, name="pihub-camera-rec", daemon=True)
        self._thread.start()

    def feed(self, chunk: bytes, sps: int) -> None:
        """Queue a chunk (from the first keyframe on); called on the driver's thread."""
        if self.error is not None:
            return
        if not self.live:
            if sps < 0:
                return
            self.live = True
            self.started_ns = time.monotonic_ns()
            chunk = START_CODE + chunk[sps:]
            self._on_keyframe(self)
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self.error = f"writing {self.path!r} did not keep up with the camera (slow disk?)"
            self._on_error(self)

    def _write(self) -> None:
        try:
            while True:
                chunk = self._queue.get()
                if chunk is None:
                    return
                if self.error is not None:
                    continue
                try:
                    self._file.write(chunk)
                    self.bytes += len(chunk)
                except OSError as e:
                    self.error = f"writing {self.path!r} failed: {e.strerror or e}"
                    self._on_error(self)
        finally:
            try:
                self._file.close()
            except OSError as e:
                if self.error is None:
                    self.error = f"closing {self.path!r} failed: {e.strerror or e}"

    def finish(self) -> None:
        """Write what is queued, close the file, join the thread (not from the driver's thread)."""
        try:
            self._queue.put(None, timeout=10.0)
        except queue.Full:
            self.error = self.error or f"writing {self.path!r} stalled; the file may be incomplete"
        self._thread.join(10.0)

    def describe(self) -> dict[str, Any]:
        """``{filename, bytes, seconds, error}``; ``seconds`` since the first keyframe."""
        seconds = (time.monotonic_ns() - self.started_ns) / 1e9 if self.live else 0.0
        return {"filename": self.path, "bytes": self.bytes, "seconds": round(seconds, 3), "error": self.error}


class _MjpegFeed:
    """One ``/video.mjpeg`` client: an iterator of JPEG frames, at most ``fps`` per second.

    Holds only the sequence number of the last frame it gave; each ``next`` waits for a
    newer frame (skipping any it missed), so nothing ever queues for a slow client.
    :meth:`close` (the WSGI server calls it when the client goes) releases the camera.
    """

    def __init__(self, backend: CameraBackend) -> None:
        self._backend = backend
        self._seq = backend._jpeg_seq
        self._last: float | None = None
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        b = self._backend
        if self._closed:
            raise StopIteration
        if self._last is not None:
            gap = self._last + 1.0 / b.mjpeg_fps - b.clock.now()
            if gap > 0 and b.clock.wait(b._closing, gap):
                self.close()
                raise StopIteration
        try:
            self._seq, data = b._wait_jpeg(self._seq, b.snapshot_timeout)
        except ActionError:
            self.close()
            raise StopIteration from None
        self._last = b.clock.now()
        return data

    def close(self) -> None:
        """Stop and release the camera; idempotent."""
        if not self._closed:
            self._closed = True
            self._backend._mjpeg_left()


def _keyframe_interval(values: Mapping[str, Any]) -> float:
    """Seconds between keyframes: the configured ones, else the driver's default (a driver
    that cannot make a keyframe on demand gets shorter GOPs, so that a viewer joins soon)."""
    given: float | None = values["keyframe_interval"]
    if given is not None:
        return given
    return 1.0 if values["driver"] == "picamera2" else 0.5


class CameraBackend(Backend):
    """A camera shared by TCP viewers, HTTP clients and recordings (see the module docstring)."""

    name: ClassVar[str] = "camera.pi"
    config_schema: ClassVar[Schema] = Schema(
        {
            "driver": Field(str, "picamera2", choices=("picamera2", "mock"),
                            doc="picamera2 (a Pi camera module) or mock (ffmpeg's test picture)"),
            "device": Field(int, 0, min=0, max=15, doc="camera number (picamera2's camera_num)"),
            "listen_port": Field(int, 2222, min=0, max=65535, aliases=("port",),
                                 doc="TCP port of the H.264 stream (0: any free port)"),
            "bind_address": Field(str, "127.0.0.1",
                                  doc="address the stream listens on; loopback unless you choose otherwise "
                                      "(0.0.0.0: every interface)"),
            "resolution": Field((list[int], str), _DEFAULT_RESOLUTION,
                                doc="frame size: [width, height] or 'WxH', one of "
                                    + ", ".join(f"{w}x{h}" for w, h in RESOLUTIONS)),
            "x_resolution": Field(int, None, doc="old width key", deprecated="use resolution: [width, height]"),
            "y_resolution": Field(int, None, doc="old height key", deprecated="use resolution: [width, height]"),
            "framerate": Field(float, 30.0, min=1.0, max=60.0, aliases=("fps",), doc="frames per second"),
            "rotation": Field(int, 0, choices=(0, 180), aliases=("rotate",),
                              doc="degrees: 0 or 180 (the Pi's ISP cannot transpose for 90/270)"),
            "hflip": Field(bool, False, aliases=("horizontal_flip",), doc="mirror the picture"),
            "vflip": Field(bool, False, aliases=("vertical_flip",), doc="turn the picture upside down"),
            "bitrate": Field(int, 2_000_000, min=100_000, max=25_000_000, doc="H.264 bits per second"),
            "keyframe_interval": Field(float, None, min=0.1, max=10.0,
                                       doc="seconds between keyframes (where viewers and recordings start); "
                                           "default 1.0 with picamera2, which makes one when a viewer joins, "
                                           "0.5 with the mock, whose viewers wait for the next"),
            "stream_on_start": Field(bool, False, aliases=("start_recording_on_startup",),
                                     doc="capture from start-up on, whether or not anyone watches"),
            "max_viewers": Field(int, 8, min=1, max=64, doc="TCP viewers at once, at most half of them from one address; more are refused"),
            "viewer_buffer": Field(int, 1 << 20, min=64 << 10, max=64 << 20,
                                   doc="bytes queued for one TCP viewer before it is dropped as too slow"),
            "mjpeg_fps": Field(float, 5.0, min=0.1, max=30.0,
                               doc="JPEG frames per second: the cap of /video.mjpeg, and a picture's age at most"),
            "max_mjpeg_viewers": Field(int, 2, min=0, max=16,
                                       doc="/video.mjpeg clients at once (each holds an HTTP worker thread)"),
            "jpeg_quality": Field(int, 85, min=1, max=100, doc="JPEG quality, 1..100"),
            "idle_timeout": Field(float, 2.0, min=0.0, max=3600.0,
                                  doc="seconds the camera keeps capturing after its last user left"),
            "snapshot_timeout": Field(float, 5.0, min=0.1, max=60.0,
                                      doc="seconds a picture may take before the request fails"),
            **{k: Field(object, None, doc="Platypush camera option; ignored", deprecated=_IGNORED)
               for k in _PLATYPUSH_IGNORED},
        },
        doc="A camera: H.264 over TCP to many viewers, JPEG pictures, MJPEG over HTTP, recordings",
    )

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config, clock=clock)
        v = self.config
        errors: list[ConfigProblem] = []
        width, height = _resolution(v, errors)
        if errors:
            raise ConfigProblems(errors)
        flip = v["rotation"] == 180
        framerate: float = v["framerate"]
        self.mjpeg_fps: float = v["mjpeg_fps"]
        self.snapshot_timeout: float = v["snapshot_timeout"]
        self.settings = CameraSettings(
            device=v["device"], width=width, height=height, framerate=framerate, bitrate=v["bitrate"],
            gop=max(1, round(framerate * _keyframe_interval(v))), hflip=v["hflip"] != flip,
            vflip=v["vflip"] != flip, jpeg_fps=self.mjpeg_fps, jpeg_quality=v["jpeg_quality"])
        self.driver_name: str = v["driver"]
        self._driver: CameraDriver | None = None
        self._server: StreamServer | None = None
        self._emit: Emit | None = None
        # _run_lock: starting/stopping the driver (may block: a process, a camera).
        # _users_lock: the user counts; never held while the driver starts or stops, so a
        # driver thread (a viewer dropped inside feed) can release without waiting.
        self._run_lock = threading.RLock()
        self._users_lock = threading.Lock()
        self._users: dict[str, int] = {"viewer": 0, "mjpeg": 0, "recording": 0, "picture": 0, "start": 0}
        self._capturing = False
        self._closed = False
        self._closing = threading.Event()
        self._idle_timer: Timer | None = None
        self._restart_timer: Timer | None = None
        self._failures = 0
        self._ctl: list[threading.Thread] = []
        self._scanner = KeyframeScanner()
        self._jpeg_lock = threading.Lock()
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._jpeg_waiters: set[threading.Event] = set()
        self._rec_lock = threading.Lock()
        self._rec: _Recording | None = None
        #: H.264 bytes and keyframes received from the driver, JPEGs, capture runs.
        self.h264_bytes = 0
        self.keyframes = 0
        self.jpegs = 0
        self.captures = 0

    # ------------------------------------------------------------------ lifecycle
    def _make_driver(self) -> CameraDriver:
        if self.driver_name == "mock":
            from pihub.backends.camera_ffmpeg import FfmpegCamera

            return FfmpegCamera(self.settings, self.clock)
        from pihub.backends.camera_picamera2 import Picamera2Camera

        return Picamera2Camera(self.settings, self.clock)

    def validate_environment(self) -> None:
        """Check that ffmpeg (mock) or picamera2 and the camera (picamera2) are there."""
        if self.driver_name == "mock":
            from pihub.backends.camera_ffmpeg import FfmpegCamera

            FfmpegCamera.check()
        else:
            from pihub.backends.camera_picamera2 import Picamera2Camera

            Picamera2Camera.check(self.settings.device)

    def open(self, emit: Emit) -> None:
        """Listen for viewers; capture at once with ``stream_on_start``.

        Raises:
            OSError: the stream's address cannot be bound (the message says which and why).
        """
        self._emit = emit
        self._driver = self._make_driver()
        server = self._open_server()
        if not _is_loopback(server.host):
            self.log.warning("%s: the H.264 stream on %s:%d has no authentication (raw H.264 over TCP cannot "
                             "carry any): anyone who can reach the port can watch", self.name, server.host,
                             server.port)
        self.status = BackendStatus.RUNNING
        self.error = None
        if self.config["stream_on_start"]:
            try:
                self._acquire("start", keep=True)  # kept: the back-off restart serves it
            except ActionError as e:
                self.log.error("%s", e)

    def _open_server(self) -> StreamServer:
        server = StreamServer(self.config["bind_address"], self.config["listen_port"],
                              max_viewers=self.config["max_viewers"], backlog_limit=self.config["viewer_buffer"],
                              on_join=self._viewer_joined, on_leave=self._viewer_left, name=self.name)
        server.open()
        self._server = server
        self.log.info("%s: H.264 stream on tcp://%s:%d", self.name, server.host, server.port)
        return server

    def close(self) -> None:
        """Drop every viewer, end the recording, stop capturing; idempotent."""
        self._closing.set()
        with self._run_lock, self._users_lock:
            self._closed = True
            for timer in (self._idle_timer, self._restart_timer):
                if timer is not None:
                    timer.cancel()
            self._idle_timer = self._restart_timer = None
            ctl, self._ctl = self._ctl, []
        for t in ctl:
            if t is not threading.current_thread():
                t.join(10.0)
        server, self._server = self._server, None
        if server is not None:
            server.close("shutdown")
        with self._rec_lock:
            rec, self._rec = self._rec, None
        if rec is not None:
            self._finish_recording(rec, "shutdown")
        self._wake_jpeg_waiters()
        with self._run_lock:
            if self._capturing:
                self._stop_capture()
        self._emit = None
        if self.status in (BackendStatus.RUNNING, BackendStatus.DEGRADED):
            self.status = BackendStatus.STOPPED

    @property
    def port(self) -> int:
        """The TCP port the stream listens on (0 when it does not)."""
        server = self._server
        return server.port if server is not None and server.is_open else 0

    # ------------------------------------------------------------------ who needs the camera
    def _acquire(self, kind: str, keep: bool = False) -> None:
        """Count one user of ``kind``; start capturing if the camera is idle.

        Args:
            kind: which count.
            keep: keep the count even when the camera does not start (a viewer waits for
                the back-off restart); otherwise a failure leaves the count unchanged.

        Raises:
            ActionError: the backend is closed (nothing counted), or the camera could not
                start.
        """
        with self._run_lock:
            if self._closed:
                raise ActionError(f"{self.name} is stopped")
            with self._users_lock:
                self._users[kind] += 1
                if self._idle_timer is not None:
                    self._idle_timer.cancel()
                    self._idle_timer = None
            if not self._capturing:
                try:
                    self._start_capture()
                except ActionError:
                    if not keep:
                        self._release(kind)
                    raise

    def _release(self, kind: str) -> None:
        """Uncount one user; the last one arms the idle stop. Never blocks on the driver."""
        with self._users_lock:
            self._users[kind] = max(0, self._users[kind] - 1)
            if sum(self._users.values()) == 0 and self._idle_timer is None and not self._closed:
                self._idle_timer = self.clock.call_later(self.config["idle_timeout"], self._spawn, self._idle_stop)

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on a short-lived ``pihub-camera-ctl`` thread (joined by close).

        Timer callbacks must not block; stopping a driver (a process, a camera) or
        closing a recording file may, so the timers hand that work to such a thread.
        """
        with self._users_lock:
            if self._closed:
                return
            self._ctl = [t for t in self._ctl if t.is_alive()]
            t = threading.Thread(target=fn, args=args, name="pihub-camera-ctl", daemon=True)
            self._ctl.append(t)
        t.start()

    def _idle_stop(self) -> None:
        with self._run_lock:
            with self._users_lock:
                self._idle_timer = None
                idle = sum(self._users.values()) == 0
            if idle and self._capturing and not self._closed:
                self._stop_capture()

    def _start_capture(self) -> None:
        """Start the driver (under the run lock)."""
        driver = self._driver
        assert driver is not None
        self._scanner = KeyframeScanner()
        try:
            driver.start(DriverSinks(self._on_h264, self._on_jpeg, self._on_exit))
        except Exception as e:
            reason = f"the camera did not start: {type(e).__name__}: {e}"
            self._failed(reason)
            raise ActionError(reason) from None
        self._capturing = True
        self.captures += 1
        self._publish(_STARTED, {"device": self.settings.device, "filename": None})

    def _stop_capture(self) -> None:
        """Stop the driver (under the run lock)."""
        driver = self._driver
        self._capturing = False
        if driver is not None:
            driver.stop()
        self._publish(_STOPPED, {"device": self.settings.device, "filename": None})

    def _failed(self, reason: str) -> None:
        """The camera stopped or did not start: degrade, retry with back-off while needed.

        Called on a driver thread too, so it takes only the users lock."""
        self._failures += 1
        self.log.error("%s: %s", self.name, reason)
        self.report_degraded(reason)
        with self._users_lock:
            if self._restart_timer is None and not self._closed:
                delay = min(_MAX_BACKOFF_S, 2.0 ** (self._failures - 1))
                self._restart_timer = self.clock.call_later(delay, self._spawn, self._restart)

    def _restart(self) -> None:
        with self._run_lock:
            with self._users_lock:
                self._restart_timer = None
            if self._closed:
                return
            if self._capturing:
                self._stop_capture()
            with self._users_lock:
                needed = sum(self._users.values()) > 0
            if needed:
                try:
                    self._start_capture()
                except ActionError:
                    pass  # _failed armed the next attempt

    def _on_exit(self, reason: str) -> None:
        """Driver thread: the capture ended by itself."""
        if not self._closing.is_set():
            self._failed(reason)

    # ------------------------------------------------------------------ the driver's output
    def _on_h264(self, chunk: bytes) -> None:
        sps = self._scanner.feed(chunk)
        self.h264_bytes += len(chunk)
        if sps >= 0:
            self.keyframes += 1
            if self._failures and self.status == BackendStatus.DEGRADED:
                self._failures = 0
                self.report_recovered()
        server = self._server
        if server is not None:
            server.feed(chunk, sps)
        rec = self._rec
        if rec is not None:
            rec.feed(chunk, sps)

    def _on_jpeg(self, data: bytes) -> None:
        with self._jpeg_lock:
            self._jpeg = data
            self._jpeg_seq += 1
            self.jpegs += 1
            waiters = list(self._jpeg_waiters)
        for ev in waiters:
            ev.set()

    def _wake_jpeg_waiters(self) -> None:
        with self._jpeg_lock:
            waiters = list(self._jpeg_waiters)
        for ev in waiters:
            ev.set()

    def _wait_jpeg(self, after: int, timeout: float) -> tuple[int, bytes]:
        """The first JPEG newer than sequence number ``after``: ``(seq, bytes)``.

        Raises:
            ActionError: none came within ``timeout`` seconds (of the backend's clock),
                or the backend closed.
        """
        ev = threading.Event()
        deadline = self.clock.now() + timeout
        try:
            while True:
                with self._jpeg_lock:
                    if self._jpeg_seq > after and self._jpeg is not None:
                        return self._jpeg_seq, self._jpeg
                    if self._closing.is_set():
                        raise ActionError(f"{self.name} is stopped")
                    ev.clear()
                    self._jpeg_waiters.add(ev)
                remaining = deadline - self.clock.now()
                if remaining <= 0:
                    state = "" if self.error is None else f" ({self.error})"
                    raise ActionError(f"no picture from the camera within {timeout:g} s{state}")
                self.clock.wait(ev, remaining)
        finally:
            with self._jpeg_lock:
                self._jpeg_waiters.discard(ev)

    # ------------------------------------------------------------------ the web layer's view
    def snapshot(self) -> bytes:
        """A JPEG finished after this call, of the configured size (``GET .../photo.jpg``).

        Raises:
            ActionError: the camera did not start, or gave no picture in ``snapshot_timeout``.
        """
        with self._jpeg_lock:
            seq = self._jpeg_seq
        self._acquire("picture")
        try:
            return self._wait_jpeg(seq, self.snapshot_timeout)[1]
        finally:
            self._release("picture")

    def jpeg_frames(self) -> Iterator[bytes]:
        """The JPEG frames for ``GET .../video.mjpeg``: at most ``mjpeg_fps`` per second.

        The iterator ends when the backend stops or no frame comes in
        ``snapshot_timeout``; its ``close()`` (called by the WSGI server) releases the camera.

        Raises:
            ActionError: ``max_mjpeg_viewers`` clients are watching already, or the camera
                did not start.
        """
        with self._users_lock:
            limit = self.config["max_mjpeg_viewers"]
            if self._users["mjpeg"] >= limit:
                raise ActionError(f"{self.name}: {limit} MJPEG viewers already (max_mjpeg_viewers); "
                                  f"try again later or use the H.264 stream on port {self.port}")
        self._acquire("mjpeg")
        return _MjpegFeed(self)

    def _mjpeg_left(self) -> None:
        self._release("mjpeg")

    # ------------------------------------------------------------------ viewers
    def _viewer_joined(self, client: str) -> None:
        self._publish(_JOINED, {"device": self.settings.device, "client": client, "connected": True})
        try:
            self._acquire("viewer", keep=True)
        except ActionError as e:
            self.log.error("%s: viewer %s waits: %s", self.name, client, e)
            return
        driver = self._driver
        if driver is not None:
            driver.request_keyframe()

    def _viewer_left(self, client: str, reason: str) -> None:
        self._publish(_LEFT, {"device": self.settings.device, "client": client, "connected": False,
                              "reason": reason})
        self._release("viewer")

    # ------------------------------------------------------------------ recordings
    def _recording_keyframe(self, rec: _Recording) -> None:
        if rec.duration is not None:
            rec.timer = self.clock.call_later(rec.duration, self._spawn, self._end_recording, rec, None)

    def _recording_failed(self, rec: _Recording) -> None:
        self.log.error("%s: recording stopped: %s", self.name, rec.error)
        self._spawn(self._end_recording, rec, rec.error)

    def _end_recording(self, rec: _Recording, reason: str | None) -> dict[str, Any] | None:
        with self._rec_lock:
            if self._rec is not rec:
                return None
            self._rec = None
        return self._finish_recording(rec, reason)

    def _finish_recording(self, rec: _Recording, reason: str | None) -> dict[str, Any]:
        if rec.timer is not None:
            rec.timer.cancel()
        rec.finish()
        self._release("recording")
        out = rec.describe()
        self._publish(_STOPPED, {"device": self.settings.device, "filename": rec.path, "error": out["error"]})
        return out

    # ------------------------------------------------------------------ actions
    @action(aliases=["capture_image"])
    def take_picture(self, image_file: str) -> dict[str, Any]:
        """Take a picture (JPEG, the configured size) and write it to a file.

        Args:
            image_file: where to write it (``~`` is expanded); its directory must exist.
                The file is replaced whole (written beside it, then renamed).

        Returns:
            ``{"filename": absolute path, "size": bytes, "width": px, "height": px}``.
        """
        path = os.path.abspath(os.path.expanduser(image_file))
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise ActionError(f"cannot write the picture to {path!r}: the directory {directory!r} does not exist")
        data = self.snapshot()
        try:
            fd, tmp = tempfile.mkstemp(prefix=".pihub-", suffix=".jpg", dir=directory)
        except OSError as e:
            raise ActionError(f"cannot write the picture to {path!r}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            os.unlink(tmp)
            raise ActionError(f"cannot write the picture to {path!r}: {e.strerror}") from None
        self._publish(_PICTURE, {"device": self.settings.device, "filename": path})
        size = jpeg_size(data) or (0, 0)
        return {"filename": path, "size": len(data), "width": size[0], "height": size[1]}

    @action
    def start_streaming(self) -> dict[str, Any]:
        """Listen for TCP viewers again (after ``stop_streaming``); nothing to do if listening.

        Returns:
            ``{"listening": true, "bind_address", "port"}``.
        """
        with self._run_lock:
            if self._closed:
                raise ActionError(f"{self.name} is stopped")
            server = self._server
            if server is None or not server.is_open:
                try:
                    server = self._open_server()
                except OSError as e:
                    raise ActionError(str(e)) from None
        return {"listening": True, "bind_address": server.host, "port": server.port}

    @action
    def stop_streaming(self) -> dict[str, Any]:
        """Stop listening and disconnect every TCP viewer (recordings go on).

        Returns:
            ``{"listening": false, "disconnected": viewers dropped}``.
        """
        with self._run_lock:
            server, self._server = self._server, None
        n = 0
        if server is not None:
            n = server.viewer_count()
            server.close("stream stopped")
        return {"listening": False, "disconnected": n}

    @action(aliases=["capture_video"])
    def start_recording(self, video_file: str, duration: float | None = None) -> dict[str, Any]:
        """Record the H.264 stream to a file, from the next keyframe.

        Args:
            video_file: the file (``.h264`` or ``.264``: raw H.264, as the Pi's encoder
                makes it); ``~`` is expanded; an existing file is replaced.
            duration: seconds to record, counted from the first keyframe; none: until
                ``stop_recording``.

        Returns:
            ``{"filename": absolute path, "duration": seconds or null}``.
        """
        path = os.path.abspath(os.path.expanduser(video_file))
        if not path.lower().endswith(VIDEO_SUFFIXES):
            raise ActionError(f"video_file {video_file!r} must end with one of {', '.join(VIDEO_SUFFIXES)} "
                              f"(raw H.264; wrap it with: ffmpeg -i x.h264 -c copy x.mp4)")
        if duration is not None and not 0 < duration <= 86400:
            raise ActionError(f"duration must be in range 0..86400 seconds (exclusive of 0), not {duration!r}")
        with self._rec_lock:
            if self._rec is not None:
                raise ActionError(f"already recording to {self._rec.path!r}: stop_recording first")
            file = _open_recording(path)
            try:
                self._acquire("recording")
            except ActionError:
                file.close()
                os.unlink(path)
                raise
            self._rec = _Recording(path, file, duration, self._recording_keyframe, self._recording_failed)
        driver = self._driver
        if driver is not None:
            driver.request_keyframe()
        self._publish(_STARTED, {"device": self.settings.device, "filename": path})
        return {"filename": path, "duration": duration}

    @action
    def stop_recording(self) -> dict[str, Any]:
        """Stop the recording and close its file.

        Returns:
            ``{"filename", "bytes": written, "seconds": since the first keyframe, "error"}``.
        """
        with self._rec_lock:
            rec = self._rec
        if rec is None:
            raise ActionError(f"{self.name} is not recording")
        out = self._end_recording(rec, None)
        return out if out is not None else rec.describe()

    @action(aliases=["status"])
    def get_status(self) -> dict[str, Any]:
        """The camera's state.

        Returns:
            ``{"status", "error", "driver", "device", "resolution": [w, h], "framerate",
            "bitrate", "capturing", "listening", "bind_address", "port", "viewers":
            [{client, seconds, live, sent, backlog}], "max_viewers", "refused",
            "dropped_slow", "mjpeg_viewers", "recording": {filename, bytes, seconds, error} or
            null, "h264_bytes", "keyframes", "jpegs", "captures"}``.
        """
        server = self._server
        with self._rec_lock:
            rec = self._rec
        with self._users_lock:
            mjpeg = self._users["mjpeg"]
        s = self.settings
        return {
            "status": str(self.status), "error": self.error, "driver": self.driver_name, "device": s.device,
            "resolution": [s.width, s.height], "framerate": s.framerate, "bitrate": s.bitrate,
            "capturing": self._capturing, "listening": server is not None and server.is_open,
            "bind_address": self.config["bind_address"], "port": self.port,
            "viewers": [dataclasses.asdict(v) for v in server.viewers()] if server is not None else [],
            "max_viewers": self.config["max_viewers"],
            "refused": server.refused if server is not None else 0,
            "dropped_slow": server.dropped_slow if server is not None else 0,
            "mjpeg_viewers": mjpeg, "recording": rec.describe() if rec is not None else None,
            "h264_bytes": self.h264_bytes, "keyframes": self.keyframes, "jpegs": self.jpegs,
            "captures": self.captures,
        }

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus ``port``, ``viewers`` (a count) and ``capturing``."""
        out = super().describe_status()
        server = self._server
        if server is not None:
            out["port"] = self.port
            out["viewers"] = server.viewer_count()
            out["capturing"] = self._capturing
        return out

    def describe_entities(self) -> list[dict[str, Any]]:
        """The camera, for the web panel: one ``{"name", "kind": "camera", "resolution":
        [w, h], "capturing", "video", "photo"}``, ``video`` and ``photo`` being its HTTP
        paths (:mod:`pihub.web.camera`: ``/camera/pi/video.mjpeg`` and ``/camera/pi/photo.jpg``
        for section ``camera.pi``; a dotted section name is a path, ``camera.a.b`` ->
        ``/camera/a/b/...``)."""
        path = "/camera/" + self.name.removeprefix("camera.").replace(".", "/")
        s = self.settings
        return [{"name": self.name, "kind": "camera", "resolution": [s.width, s.height],
                 "capturing": self._capturing, "video": f"{path}/video.mjpeg", "photo": f"{path}/photo.jpg"}]

    def _publish(self, kind: EventType, args: dict[str, Any]) -> None:
        emit = self._emit
        if emit is not None:
            emit(Event(kind, args, time.monotonic_ns(), self.name))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _open_recording(path: str) -> Any:
    """Open ``path`` for a recording: a regular file, created or truncated, never blocking.

    A FIFO or a device would block the action or take the stream somewhere else: the open
    is non-blocking and anything but a regular file is refused.

    Raises:
        ActionError: naming the path and the reason.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ActionError(f"cannot record to {path!r}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ActionError(f"cannot record to {path!r}: not a regular file (a recording is a file)")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        return os.fdopen(fd, "wb")
    except OSError as e:
        os.close(fd)
        raise ActionError(f"cannot record to {path!r}: {e.strerror}") from None
    except ActionError:
        os.close(fd)
        raise


def _resolution(values: Mapping[str, Any], errors: list[ConfigProblem]) -> tuple[int, int]:
    """``(width, height)`` from ``resolution`` or the old ``x_resolution``/``y_resolution``."""
    allowed = ", ".join(f"{w}x{h}" for w, h in RESOLUTIONS)
    x, y = values.get("x_resolution"), values.get("y_resolution")
    if x is not None or y is not None:
        if values["resolution"] != _DEFAULT_RESOLUTION:  # a loaded section has the default filled in
            errors.append(ConfigProblem(("x_resolution",), "set either resolution or x_resolution/y_resolution, "
                                                           "not both"))
            return 0, 0
        if x is None or y is None:
            missing = "y_resolution" if y is None else "x_resolution"
            errors.append(ConfigProblem((missing,), "x_resolution and y_resolution go together: set both "
                                                    "(or resolution: [width, height])"))
            return 0, 0
        size: Any = [x, y]
        key = "x_resolution"
    else:
        size = values["resolution"]
        key = "resolution"
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").split("x")
        size = [int(p) for p in parts] if len(parts) == 2 and all(p.isdigit() for p in parts) else None
    if not isinstance(size, list) or len(size) != 2:
        errors.append(ConfigProblem((key,), f"must be [width, height] or 'WxH', not {values[key]!r} "
                                            f"(allowed: {allowed})"))
        return 0, 0
    width, height = size
    if (width, height) not in RESOLUTIONS:
        errors.append(ConfigProblem((key,), f"{width}x{height} is not a supported resolution (allowed: {allowed})"))
        return 0, 0
    return width, height
