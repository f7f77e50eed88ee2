"""``/camera/<name>/photo.jpg`` and ``/camera/<name>/video.mjpeg`` over the real HTTP server,
with the camera.pi backend on its mock driver (ffmpeg as the camera)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_support import Rig, assert_error, assert_security_headers, build_rig, serving
from pihub_testing import need_tool, wait_for

from pihub.backends.camera import jpeg_size
from pihub.web.server import WebServer

CAMERA_YAML = """
camera.pi:
  driver: mock
  listen_port: 0
  resolution: [640, 480]
  mjpeg_fps: 4
  max_mjpeg_viewers: 1
  idle_timeout: 0.5
"""


@pytest.fixture
def served(make_hub: Any, tmp_path: Path) -> Iterator[tuple[Rig, WebServer]]:
    for tool in ("ffmpeg", "ffprobe"):
        need_tool(shutil.which(tool) is not None, f"{tool} is not installed (apt-get install ffmpeg)")
    rig = build_rig(make_hub, tmp_path, yaml=CAMERA_YAML)
    with serving(rig.app) as server:
        yield rig, server


def _parts(resp: http.client.HTTPResponse, n: int) -> list[tuple[float, dict[str, str], bytes]]:
    """Read ``n`` multipart parts: ``(arrival time, headers, body)`` each."""
    out = []
    for _ in range(n):
        assert resp.readline() == b"--frame\r\n"
        headers = {}
        while (line := resp.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = resp.read(int(headers["content-length"]))
        assert resp.read(2) == b"\r\n"
        out.append((time.monotonic(), headers, body))
    return out


def test_photo_is_a_fresh_jpeg_of_the_configured_size_for_the_read_scope(served: tuple[Rig, WebServer]) -> None:
    rig, _ = served
    assert_error(rig.call("GET", "/camera/pi/photo.jpg"), 401, "INVALID_CREDENTIALS")
    reply = rig.call("GET", "/camera/pi/photo.jpg", headers=rig.as_("read"))
    assert reply.status == 200, reply.body[:200]
    assert reply.headers["content-type"] == "image/jpeg" and reply.headers["cache-control"] == "no-store"
    assert jpeg_size(reply.body) == (640, 480)
    assert_security_headers(reply)
    path = rig.tmp / "photo.jpg"
    path.write_bytes(reply.body)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=30)
    assert probe.stdout.strip() == "mjpeg,640,480" and probe.stderr == ""
    assert_error(rig.call("GET", "/camera/nope/photo.jpg", headers=rig.as_("read")), 404, "NOT_FOUND")


def test_mjpeg_sends_valid_jpeg_parts_no_faster_than_the_cap(served: tuple[Rig, WebServer]) -> None:
    rig, server = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/camera/pi/video.mjpeg", headers=rig.as_("read"))
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        parts = _parts(resp, 9)
        for _, headers, body in parts:
            assert headers["content-type"] == "image/jpeg"
            assert jpeg_size(body) == (640, 480) and body.endswith(b"\xff\xd9")
        # a cap is a bound: 9 parts at <= 4 per second span at least 8 intervals of 0.25 s
        assert parts[-1][0] - parts[0][0] >= 8 / 4 * 0.9
        cam = rig.hub.backends["camera.pi"]
        assert cam.get_status()["mjpeg_viewers"] == 1
        # the second client is over max_mjpeg_viewers: refused with the reason, the first goes on
        other = rig.call("GET", "/camera/pi/video.mjpeg", headers=rig.as_("read"))
        body = assert_error(other, 503, "CAMERA_UNAVAILABLE")
        assert "1 MJPEG viewers already (max_mjpeg_viewers)" in body["message"]
        _parts(resp, 1)
    finally:
        conn.close()
    cam = rig.hub.backends["camera.pi"]
    assert wait_for(lambda: cam.get_status()["mjpeg_viewers"] == 0, 15)  # closing released the camera
    assert wait_for(lambda: not cam.get_status()["capturing"], 15)  # and it stopped after idle_timeout


def test_mjpeg_needs_credentials(served: tuple[Rig, WebServer]) -> None:
    rig, _ = served
    assert_error(rig.call("GET", "/camera/pi/video.mjpeg"), 401, "INVALID_CREDENTIALS")
    assert rig.hub.backends["camera.pi"].get_status()["capturing"] is False
