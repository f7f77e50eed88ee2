"""Camera end to end: picture, H.264 stream to a real decoder, recording, connect -> first frame.

Mock rig: ``driver: mock`` (ffmpeg's test picture). Pi rig: ``driver: picamera2`` with any
Pi camera module on the camera connector (``PIHUB_RIG_CAMERA``: its number, default 0);
ffmpeg (``apt install ffmpeg``) is the client on both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hil_support import RIG, wait_for

from pihub.backends.camera import jpeg_size

DEVICE = int(os.environ.get("PIHUB_RIG_CAMERA", "0"))


@pytest.fixture
def hub(make_hub: Any) -> Any:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is not installed: apt-get install ffmpeg (the test's H.264 client)")
    driver = "picamera2" if RIG == "pi" else "mock"
    hub = make_hub(f"camera.pi:\n  driver: {driver}\n  device: {DEVICE}\n  listen_port: 0\n"
                   "  resolution: [640, 480]\n  framerate: 30\n  idle_timeout: 0\n")
    cam = hub.backends["camera.pi"]
    assert cam.status.value == "running", cam.error
    return hub


def test_picture_and_stream_and_recording(hub: Any, tmp_path: Path) -> None:
    cam = hub.backends["camera.pi"]
    out = hub.execute("camera.pi.take_picture", {"image_file": str(tmp_path / "p.jpg")})
    assert out.ok, out.errors
    assert jpeg_size((tmp_path / "p.jpg").read_bytes()) == (640, 480)

    start = time.monotonic()
    # low-delay input flags: without them ffmpeg probes the live stream for 5 s before decoding
    proc = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-probesize", "32", "-analyzeduration", "0",
                             "-fflags", "nobuffer", "-flags", "low_delay", "-f", "h264", "-i",
                             f"tcp://127.0.0.1:{cam.port}", "-frames:v", "90", "-flush_packets", "1",
                             "-f", "framemd5", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = None
    frames = 0
    for line in proc.stdout:
        if line.startswith("#"):
            continue
        frames += 1
        if first is None:
            first = time.monotonic() - start
    err = proc.stderr.read() if proc.stderr is not None else ""
    proc.wait(60)
    assert (frames, err.strip()) == (90, "")
    print(f"hil: camera connect -> first decoded frame {first * 1000:.0f} ms (driver {cam.driver_name})")

    video = tmp_path / "v.h264"
    assert hub.execute("camera.pi.start_recording", {"video_file": str(video), "duration": 2}).ok
    assert wait_for(lambda: hub.execute("camera.pi.status").output["recording"] is None, 30)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", str(video)],
                           capture_output=True, text=True, timeout=60)
    codec, width, height, count = probe.stdout.strip().split(",")
    assert (codec, width, height) == ("h264", "640", "480") and 50 <= int(count) <= 70
