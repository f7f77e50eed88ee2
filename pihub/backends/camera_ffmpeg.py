"""``driver: mock`` of the ``camera.pi`` backend: ffmpeg's test picture as the camera.

One ``ffmpeg`` child process per capture run turns ``testsrc2`` (a moving test pattern
with a clock) of the configured size and rate into two outputs:

* the H.264 stream on its stdout: libx264 ``ultrafast`` / ``zerolatency``, constrained
  baseline, a keyframe every ``gop`` frames, SPS/PPS before each (``repeat-headers=1``:
  what ``rpicam-vid --inline`` and picamera2's ``repeat=True`` give on a Pi), at the
  configured bitrate;
* JPEG frames (MJPEG, ``image2pipe``) on a pipe, at ``jpeg_fps``.

Why a child process and not PyAV in-process (HARDWARE.md §3.6 measured both): no pip
dependency (Debian's ffmpeg is what CI installs anyway), and libav's codec memory stays
out of the daemon's RSS (the daemon only relays bytes). ``-re`` paces the source in real
time, as a sensor would.

libx264 cannot be asked for a keyframe while it runs, so :meth:`FfmpegCamera.request_keyframe`
returns False and a new viewer joins at the next GOP (``keyframe_interval`` seconds at most).
The backend's tables and limits are never imported from here: this module imports them
from :mod:`pihub.backends.camera`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from typing import IO, TYPE_CHECKING, Final

from pihub.clock import Clock
from pihub.errors import BackendUnavailable

if TYPE_CHECKING:
    from pihub.backends.camera import CameraSettings, DriverSinks

log = logging.getLogger("pihub.backends.camera")

__all__ = ["FfmpegCamera", "ffmpeg_command", "jpeg_end"]

_READ: Final = 65536
#: Bytes of one JPEG frame at most; a longer one means the pipe is out of step.
_MAX_JPEG: Final = 16 << 20


def ffmpeg_command(s: CameraSettings, jpeg_fd: int) -> list[str]:
    """The ffmpeg command line of one capture run (see the module docstring).

    Args:
        s: the camera settings.
        jpeg_fd: the child's file descriptor the JPEG frames go to.
    """
    rate = f"{s.framerate:g}"
    source = f"testsrc2=size={s.width}x{s.height}:rate={rate}"
    flips = [f for f, on in (("hflip", s.hflip), ("vflip", s.vflip)) if on]
    if flips:
        source += "," + ",".join(flips)
    # mjpeg's -q:v runs 2 (best) .. 31; quality runs 1 .. 100 (best)
    qscale = max(2, min(31, round(31 - (s.jpeg_quality - 1) * 29 / 99)))
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", source,
        "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", str(s.gop), "-keyint_min", str(s.gop),
        "-b:v", str(s.bitrate), "-maxrate", str(s.bitrate), "-bufsize", str(s.bitrate),
        "-x264-params", "repeat-headers=1:scenecut=0", "-flush_packets", "1", "-f", "h264", "pipe:1",
        "-map", "0:v", "-vf", f"fps={s.jpeg_fps:g}", "-c:v", "mjpeg", "-pix_fmt", "yuvj420p",
        "-q:v", str(qscale), "-f", "image2pipe", f"pipe:{jpeg_fd}",
    ]


def jpeg_end(buf: bytes | bytearray) -> int:
    """Where the JPEG at the start of ``buf`` ends (the index after its EOI marker).

    Walks the marker segments up to the start of scan (a table may hold ``FF D9`` bytes),
    then looks for EOI in the entropy-coded data, where ``FF`` is always stuffed.

    Returns:
        The end index; 0 when ``buf`` holds only part of the image so far; -1 when
        ``buf`` does not start with a JPEG (no SOI, or a malformed segment).
    """
    if len(buf) < 2:
        return 0
    if buf[0] != 0xFF or buf[1] != 0xD8:
        return -1
    i = 2
    while True:
        if i + 4 > len(buf):
            return 0
        if buf[i] != 0xFF:
            return -1
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (buf[i + 2] << 8) | buf[i + 3]
        if length < 2:
            return -1
        i += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data up to EOI
            end = buf.find(b"\xff\xd9", i)
            return 0 if end < 0 else end + 2


class FfmpegCamera:
    """The ffmpeg stand-in camera (see the module docstring); one capture run at a time.

    Args:
        settings: the camera's settings (size, rate, bitrate, GOP, flips, JPEG rate).
        clock: unused (ffmpeg paces itself with ``-re``); the drivers' common signature.
    """

    def __init__(self, settings: CameraSettings, clock: Clock) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._stderr: IO[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @staticmethod
    def check() -> None:
        """Raise :class:`BackendUnavailable` when ffmpeg is not installed."""
        if shutil.which("ffmpeg") is None:
            raise BackendUnavailable("driver: mock needs ffmpeg, which is not installed: apt-get install ffmpeg")

    def start(self, sinks: DriverSinks) -> None:
        """Start ffmpeg and the two reader threads (``pihub-camera-h264``, ``pihub-camera-jpeg``).

        Raises:
            OSError: ffmpeg could not be started.
        """
        with self._lock:
            if self._proc is not None:
                return
            self._stopping.clear()
            jpeg_r, jpeg_w = os.pipe()
            self._stderr = tempfile.TemporaryFile()
            try:
                proc = subprocess.Popen(ffmpeg_command(self.settings, jpeg_w), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=self._stderr, pass_fds=(jpeg_w,),
                                        start_new_session=True)
            except OSError:
                os.close(jpeg_r)
                self._stderr.close()
                raise
            finally:
                os.close(jpeg_w)
            self._proc = proc
            assert proc.stdout is not None
            h264 = threading.Thread(target=self._read_h264, args=(proc, proc.stdout.fileno(), sinks),
                                    name="pihub-camera-h264", daemon=True)
            jpeg = threading.Thread(target=self._read_jpeg, args=(jpeg_r, sinks), name="pihub-camera-jpeg",
                                    daemon=True)
            self._threads = [h264, jpeg]
            h264.start()
            jpeg.start()

    def stop(self) -> None:
        """Stop ffmpeg and join the readers; idempotent. Never called from a reader thread."""
        with self._lock:
            proc, self._proc = self._proc, None
            threads, self._threads = self._threads, []
            self._stopping.set()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(3.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for t in threads:
            if t is not threading.current_thread():
                t.join(5.0)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def request_keyframe(self) -> bool:
        """False: libx264 in a running ffmpeg cannot be asked for one."""
        return False

    @property
    def pid(self) -> int | None:
        """The ffmpeg process id while capturing (benchmarks read its CPU time)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def _read_h264(self, proc: subprocess.Popen[bytes], fd: int, sinks: DriverSinks) -> None:
        while True:
            try:
                chunk = os.read(fd, _READ)
            except OSError:
                chunk = b""
            if not chunk:
                break
            sinks.on_h264(chunk)
        if self._stopping.is_set():
            return
        code = proc.wait()
        sinks.on_exit(f"ffmpeg exited with code {code}: {self._stderr_tail()}")

    def _read_jpeg(self, fd: int, sinks: DriverSinks) -> None:
        buf = bytearray()
        try:
            while True:
                try:
                    chunk = os.read(fd, _READ)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while True:
                    end = jpeg_end(buf)
                    if end == 0:
                        if len(buf) > _MAX_JPEG:
                            buf.clear()
                        break
                    if end < 0:  # out of step: resynchronise at the next start of image
                        start = buf.find(b"\xff\xd8", 1)
                        del buf[:start if start > 0 else len(buf)]
                        continue
                    sinks.on_jpeg(bytes(buf[:end]))
                    del buf[:end]
        finally:
            os.close(fd)

    def _stderr_tail(self) -> str:
        f = self._stderr
        if f is None:
            return "(no output)"
        try:
            f.seek(0)
            text = f.read()[-400:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return "(no output)"
        return text.replace("\n", " | ") or "(no output)"
