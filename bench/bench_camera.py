"""The camera.pi backend's H.264 fan-out: CPU per viewer, join latency, 8 viewers, memory.

A real ``pihub run`` with ``camera.pi`` on the mock driver (ffmpeg's testsrc2 -> libx264 at
1280x720, 30 frames/s, 2 Mbit/s, a keyframe per second) and the HTTP API off. Viewers are
raw TCP readers in one separate process (this file run with ``--reader``): they read and
count frames (slice NAL units with ``first_mb_in_slice == 0``) but do not decode, so the
box's two cores are not spent on decoders while the daemon's share is measured.

* ``camera.viewers``: the daemon process's own CPU (utime + stime from /proc; the ffmpeg
  child, i.e. the source, is reported apart) with 0 and 8 viewers, over a window;
  ``cpu_per_viewer_pct`` = (8 viewers - 0 viewers) / 8, in % of one core. Goal <= 2 %.
* ``camera.join``: ``connect_to_keyframe``: connect -> the first bytes (the SPS of the next
  keyframe) at the viewer, with the camera already capturing; ``vlc_start_to_decoded_frame``:
  cvlc started -> its first decoded frame written as a PNG (VLC's own start included;
  ffmpeg's CLI is not used: it holds its first frame back about one GOP). Goal <= 0.5 s. The mock cannot be
  asked for a keyframe, so a viewer waits for the next one (up to ``keyframe_interval``, the
  mock's default 0.5 s); picamera2 can, and is asked on every join.
* ``camera.eight``: 8 viewers for 60 s (10 s with --quick), all joined at the same
  keyframe: frames each received per second, and ``frames_lost`` = the most frames any
  viewer misses before the last frame it got, against the viewer that got most (frames told
  apart by a CRC of their first slice bytes, so a frame still in flight when the run is cut
  is not counted lost), and viewers dropped. Platypush serves one viewer at a time
  (``listen(1)``).
* ``camera.memory``: RSS of the pihub process (not its ffmpeg child) idle and while 8
  viewers watch; the child's RSS apart.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import Context, median, proc_memory, result

READY_TIMEOUT_S = 20.0
_CONFIG = """\
device_id: pihub-bench
workdir: {workdir}
logging:
  level: WARNING
http:
  enabled: false
camera.pi:
  driver: mock
  listen_port: {port}
  resolution: [1280, 720]
  framerate: 30
  bitrate: 2000000
  stream_on_start: {always}
  max_viewers: 16
  idle_timeout: 0
"""


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(pid: int) -> int | None:
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="ascii") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        return int(d)
            except (OSError, ValueError):
                continue
    return None


class _Daemon:
    """``pihub run`` with the camera config, on a free port."""

    def __init__(self, always: bool) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pihub-bench-camera-"))
        self.port = _free_port()
        cfg = self.tmp / "camera.yaml"
        cfg.write_text(_CONFIG.format(workdir=self.tmp / "work", port=self.port, always=str(always).lower()))
        ready = self.tmp / "ready"
        script = Path(sys.executable).parent / "pihub"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "pihub"]
        self.log = open(self.tmp / "pihub.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*cmd, "--config", str(cfg), "run", "--ready-file", str(ready)],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"pihub run did not get ready: {(self.tmp / 'pihub.log').read_text()[-1500:]}")
            time.sleep(0.05)

    def ffmpeg_pid(self) -> int | None:
        return _child(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _readers(port: int, n: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--reader", str(port), str(n), str(seconds)],
                            stdout=subprocess.PIPE, text=True)


def _reader_results(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=600)
    return list(json.loads(out))


def _window(d: _Daemon, n: int, seconds: float) -> tuple[float, float, list[dict[str, Any]], dict[str, float]]:
    """``n`` viewers for ``seconds`` after 2 s of warm-up: daemon and ffmpeg CPU % of one core."""
    readers = _readers(d.port, n, seconds + 2.0) if n else None
    time.sleep(2.0)
    ff = d.ffmpeg_pid()
    c0, f0, t0 = _cpu_s(d.proc.pid), _cpu_s(ff) if ff else 0.0, time.monotonic()
    time.sleep(seconds)
    mem = proc_memory(d.proc.pid)
    ffmem = proc_memory(ff) if ff else {}
    c1, f1, t1 = _cpu_s(d.proc.pid), _cpu_s(ff) if ff else 0.0, time.monotonic()
    stats = _reader_results(readers) if readers is not None else []
    mem["ffmpeg_rss_mib"] = ffmem.get("rss_mib", 0.0)
    return (c1 - c0) / (t1 - t0) * 100, (f1 - f0) / (t1 - t0) * 100, stats, mem


def viewers(ctx: Context) -> Iterator[dict[str, Any]]:
    seconds = 3.0 if ctx.quick else 10.0
    d = _Daemon(always=True)
    try:
        idle_mem = proc_memory(d.proc.pid)
        base, src, _, _ = _window(d, 0, seconds)
        eight, src8, stats, mem = _window(d, 8, seconds)
    finally:
        d.stop()
    per = (eight - base) / 8
    note = (f"pihub run, camera.pi mock 1280x720@30 2 Mbit/s; daemon CPU {base:.2f} % with 0 viewers, "
            f"{eight:.2f} % with 8 raw TCP readers, over {seconds:g} s; the source (ffmpeg child) "
            f"{src:.1f} % / {src8:.1f} %")
    yield result("camera.viewers", "cpu_per_viewer_pct", per, "% of one core", goal=2.0, better="lower",
                 note=note, peer_note="Platypush serves one TCP client at a time")
    yield result("camera.viewers", "daemon_cpu_0_viewers_pct", base, "% of one core", note=note)
    yield result("camera.viewers", "source_cpu_pct", src, "% of one core",
                 note="the ffmpeg child encoding 1280x720@30 (the camera stand-in; on a Pi the hardware encoder)")
    yield result("camera.memory", "daemon_rss_streaming_8_viewers", mem["rss_mib"], "MiB",
                 note=f"pihub process only, 8 viewers; idle (before any viewer) {idle_mem['rss_mib']:.1f} MiB; "
                      f"its ffmpeg child {mem['ffmpeg_rss_mib']:.1f} MiB apart")
    yield result("camera.memory", "ffmpeg_child_rss", mem["ffmpeg_rss_mib"], "MiB",
                 note="the mock driver's ffmpeg process (not in the daemon's RSS)")


def join(ctx: Context) -> Iterator[dict[str, Any]]:
    runs = 4 if ctx.quick else 12
    d = _Daemon(always=True)
    first_bytes: list[float] = []
    first_frames: list[float] = []
    try:
        time.sleep(1.5)
        for i in range(runs):
            time.sleep(0.173 * (i % 6))  # join at different phases of the GOP
            t = time.monotonic()
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            s.recv(5)
            first_bytes.append(time.monotonic() - t)
            s.close()
            first_frames.append(_vlc_first_frame(d.port))
    finally:
        d.stop()
    note = (f"{runs} joins at spread phases of a 1 s GOP (the mock cannot be asked for a keyframe; "
            "picamera2 is asked on each join)")
    yield result("camera.join", "connect_to_keyframe_p50", median(first_bytes), "s", goal=0.5, better="lower",
                 runs=[round(x, 3) for x in first_bytes], note="connect -> the SPS of the next keyframe at the "
                 "viewer's socket; " + note)
    yield result("camera.join", "vlc_start_to_decoded_frame_p50", median(first_frames), "s", goal=0.5,
                 better="lower", runs=[round(x, 3) for x in first_frames],
                 note="cvlc started (as nobody) -> its first decoded frame written as a PNG; VLC's own start "
                      "included; " + note)


def _vlc_first_frame(port: int) -> float:
    """Seconds from starting cvlc on the stream to its first decoded frame (a PNG written)."""
    out = tempfile.mkdtemp(prefix="pihub-bench-vlc-", dir="/tmp")
    os.chmod(out, 0o777)
    cmd = ["cvlc", "-q", "--no-audio", "--vout=dummy", "--video-filter=scene", "--scene-format=png",
           "--scene-ratio=1", "--scene-prefix=f", f"--scene-path={out}", f"tcp/h264://127.0.0.1:{port}"]
    if os.geteuid() == 0:  # Debian's VLC refuses root
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", f"HOME={out}", *cmd]
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = t + 20
        while not any(f.endswith(".png") for f in os.listdir(out)):
            if time.monotonic() > deadline:
                raise RuntimeError("VLC wrote no frame within 20 s")
            time.sleep(0.002)
        return time.monotonic() - t
    finally:
        os.killpg(p.pid, 9)
        p.wait(10)
        shutil.rmtree(out, ignore_errors=True)


def eight(ctx: Context) -> Iterator[dict[str, Any]]:
    seconds = 10.0 if ctx.quick else 60.0
    d = _Daemon(always=False)  # the 8 join before the first keyframe: they start together
    try:
        readers = _readers(d.port, 8, seconds)
        stats = _reader_results(readers)
    finally:
        d.stop()
    frames = [s["frames"] for s in stats]
    dropped = sum(1 for s in stats if s["closed"])
    ref = max((s["ids"] for s in stats), key=len)
    lost = max(_missing(s["ids"], ref) for s in stats)
    note = (f"8 raw TCP viewers for {seconds:g} s at 1280x720@30: frames each "
            f"{min(frames)}..{max(frames)} (the difference: frames in flight when the run was cut); frames "
            f"lost: the most frames any viewer misses before its last one, against the viewer that got most "
            f"(frames told apart by a CRC of their first {_ID_BYTES} slice bytes); viewers dropped {dropped}")
    yield result("camera.eight", "frames_lost", lost, "frames", goal=0.0, better="lower", note=note,
                 peer_note="Platypush serves one viewer (listen(1)); the others wait")
    yield result("camera.eight", "frames_per_s_min", min(frames) / seconds, "frames/s", note=note)
    yield result("camera.eight", "viewers_dropped", dropped, "viewers", goal=0.0, better="lower", note=note)


BENCHES = [viewers, join, eight]

#: Bytes of a frame's first slice (from its NAL header) that identify it across viewers.
_ID_BYTES = 32


def _missing(ids: list[int], ref: list[int]) -> int:
    """Frames of ``ref`` (the viewer that got most) missing from ``ids`` up to the last frame
    ``ids`` got: a frame in flight when the run was cut is not missing."""
    if not ids:
        return 0
    last = ids[-1]
    for m in range(len(ids) - 1, len(ref)):  # ids is ref with gaps: its last frame is at or past its length
        if ref[m] == last:
            return m + 1 - len(ids)
    return len(ref)  # its last frame is not ref's at all: count it all as lost


def _read(port: int, n: int, seconds: float) -> None:
    """The reader process: ``n`` viewers for ``seconds``; prints JSON stats per viewer."""
    sel = selectors.DefaultSelector()
    stats = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        st = {"bytes": 0, "frames": 0, "keyframes": 0, "closed": False, "tail": b"", "ids": []}
        sel.register(s, selectors.EVENT_READ, st)
        stats.append(st)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(min(0.5, max(0.0, end - time.monotonic()))):
            st = key.data
            try:
                data = key.fileobj.recv(262144)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if not data:
                st["closed"] = True
                sel.unregister(key.fileobj)
                continue
            st["bytes"] += len(data)
            buf = st["tail"] + data
            i = buf.find(b"\x00\x00\x01")
            while 0 <= i and i + 3 + _ID_BYTES < len(buf):
                kind = buf[i + 3] & 0x1F
                if kind in (1, 5) and buf[i + 4] & 0x80:  # a slice with first_mb_in_slice == 0
                    st["frames"] += 1
                    # the frame's identity: its slice header and first coded bytes
                    st["ids"].append(zlib.crc32(buf[i + 3 : i + 3 + _ID_BYTES]))
                elif kind == 7:
                    st["keyframes"] += 1
                i = buf.find(b"\x00\x00\x01", i + 3)
            st["tail"] = buf[i:] if i >= 0 else buf[-3:]
    print(json.dumps([{k: v for k, v in st.items() if k != "tail"} for st in stats]))


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--reader":
    _read(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
