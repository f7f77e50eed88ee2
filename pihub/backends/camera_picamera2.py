"""``driver: picamera2`` of the ``camera.pi`` backend: a Raspberry Pi camera module.

Imported only when the config chooses this driver. picamera2 comes from Raspberry Pi OS
(``apt install python3-picamera2``; the venv needs ``--system-site-packages``): on PyPI it
needs libcamera's Python bindings, which only the Pi's packages provide.

One capture run:

* ``Picamera2(device)`` configured with ``create_video_configuration(main={"size": (w, h)},
  transform=Transform(hflip, vflip), controls={"FrameRate": fps})``;
* an ``H264Encoder(bitrate, repeat=True, iperiod=gop)`` (the VideoCore hardware encoder on
  a Pi 4 and earlier; picamera2 picks its libav encoder on a Pi 5, which has none) started
  with :meth:`Picamera2.start_encoder` into an ``Output`` subclass whose ``outputframe``
  hands each encoded frame to the backend; ``repeat=True`` puts SPS/PPS before every
  I-frame, so a viewer can join at any keyframe, and :meth:`request_keyframe` calls the
  encoder's ``force_key_frame()``;
* a ``pihub-camera-jpeg`` thread that calls ``capture_file(BytesIO, format="jpeg")`` on
  the main stream at ``jpeg_fps`` (JPEG quality from ``Picamera2.options["quality"]``).

picamera2 cannot run on the x86 CI machine (no libcamera): this driver is exercised by the
hardware-in-the-loop test ``tests/hil/test_hil_camera.py`` on a Pi rig (``PIHUB_RIG=pi``).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import threading
from typing import TYPE_CHECKING, Any

from pihub.clock import Clock
from pihub.errors import BackendUnavailable

if TYPE_CHECKING:
    from pihub.backends.camera import CameraSettings, DriverSinks

log = logging.getLogger("pihub.backends.camera")

__all__ = ["Picamera2Camera"]


class Picamera2Camera:
    """A Pi camera module through picamera2 (see the module docstring).

    Args:
        settings: the camera's settings.
        clock: paces the JPEG captures.
    """

    def __init__(self, settings: CameraSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._cam: Any = None
        self._encoder: Any = None
        self._jpeg_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @staticmethod
    def check(device: int) -> None:
        """Raise :class:`BackendUnavailable` when picamera2 or the camera is missing."""
        if importlib.util.find_spec("picamera2") is None:
            raise BackendUnavailable(
                "driver: picamera2 needs the picamera2 module: sudo apt install python3-picamera2 (Raspberry "
                "Pi OS), and a venv made with --system-site-packages; use driver: mock elsewhere")
        from picamera2 import Picamera2

        cameras = Picamera2.global_camera_info()
        if device >= len(cameras):
            found = ", ".join(str(c.get("Model", "?")) for c in cameras) or "none"
            raise BackendUnavailable(
                f"no camera number {device} (cameras found: {found}): check the ribbon cable and "
                f"'rpicam-hello --list-cameras'")

    def start(self, sinks: DriverSinks) -> None:
        """Open and configure the camera, start the H.264 encoder and the JPEG thread.

        Raises:
            RuntimeError: picamera2 could not open or configure the camera (busy, absent).
        """
        import libcamera
        from picamera2 import Picamera2
        from picamera2.encoders import H264Encoder
        from picamera2.outputs import Output

        s = self.settings
        with self._lock:
            if self._cam is not None:
                return

            class _Sink(Output):  # type: ignore[misc]  # picamera2 is untyped
                """Hands each encoded frame to the backend (a copy: picamera2 reuses its buffers)."""

                def outputframe(self, frame: Any, keyframe: bool = True, timestamp: Any = None,
                                packet: Any = None, audio: bool = False) -> None:
                    if not audio and frame is not None:
                        sinks.on_h264(bytes(frame))

            cam = Picamera2(s.device)
            try:
                config = cam.create_video_configuration(
                    main={"size": (s.width, s.height)},
                    transform=libcamera.Transform(hflip=int(s.hflip), vflip=int(s.vflip)),
                    controls={"FrameRate": float(s.framerate)})
                cam.configure(config)
                cam.options["quality"] = s.jpeg_quality
                encoder = H264Encoder(bitrate=s.bitrate, repeat=True, iperiod=s.gop)
                cam.start_encoder(encoder, _Sink())
                cam.start()
            except Exception:
                cam.close()
                raise
            self._cam, self._encoder = cam, encoder
            self._stopping.clear()
            self._jpeg_thread = threading.Thread(target=self._jpeg_loop, args=(cam, sinks),
                                                 name="pihub-camera-jpeg", daemon=True)
            self._jpeg_thread.start()

    def stop(self) -> None:
        """Stop the encoder and the JPEG thread, close the camera; idempotent."""
        with self._lock:
            cam, self._cam = self._cam, None
            thread, self._jpeg_thread = self._jpeg_thread, None
            self._encoder = None
            self._stopping.set()
        if thread is not None:
            thread.join(5.0)
        if cam is not None:
            try:
                cam.stop_recording()  # picamera2's order: the camera, then the encoder
            finally:
                cam.close()

    def request_keyframe(self) -> bool:
        """Ask the encoder for an I-frame (with SPS/PPS) as soon as possible."""
        encoder = self._encoder
        force = getattr(encoder, "force_key_frame", None)
        if force is None:
            return False
        force()
        return True

    def _jpeg_loop(self, cam: Any, sinks: DriverSinks) -> None:
        interval = 1.0 / self.settings.jpeg_fps
        while not self._stopping.is_set():
            buf = io.BytesIO()
            try:
                cam.capture_file(buf, format="jpeg")
            except Exception as e:  # the camera went away: the H.264 side reports it too
                if not self._stopping.is_set():
                    sinks.on_exit(f"picamera2 JPEG capture failed: {type(e).__name__}: {e}")
                return
            sinks.on_jpeg(buf.getvalue())
            self.clock.wait(self._stopping, interval)
