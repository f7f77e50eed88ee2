"""``make demo`` (hw-mocks/demo.py) end to end: every simulator starts, pihub reaches each
device, the demo's hooks fire from each, and the printed login and token work.

The demo runs from a copy of hw-mocks/ in a temporary directory (its run/ files land
there, not in the checkout). Its fixed ports (flicd 5551/5552, the camera's 2222, the MQTT
broker's 18830, mpd's 6600, the JACK server name, vpcd's namespace) are the demo's own; the HTTP port
is a free one (--http-port).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import HW_MOCKS, need_pcsc_stack, need_tool, wait_for

DEVICES = ("serial", "flic", "midi", "smartcard", "camera", "mqtt", "mpd", "file_watch")


def _free_port_pair() -> int:
    """A port P on the loopback with P + 1 free too (the demo's websocket)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair on the loopback")


class Demo:
    """hw-mocks/demo.py running from a copy in ``root``; its output lines in a queue."""

    def __init__(self, root: Path, port: int) -> None:
        shutil.copytree(HW_MOCKS, root / "hw-mocks", ignore=shutil.ignore_patterns("__pycache__"))
        self.root, self.port = root, port
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(root / "hw-mocks" / "demo.py"), "--duration", "120", "--http-port", str(port)],
            cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (reads on from the last call)."""
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def look() -> bool:
            while True:
                try:
                    line = self.lines.get_nowait()
                except queue.Empty:
                    return False
                self.seen.append(line)
                if m := rx.search(line):
                    found.append(m)
                    return True

        assert wait_for(look, timeout, 0.05), f"no line matching {pattern!r}; output:\n" + "\n".join(self.seen[-40:])
        return found[0]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, None if body is None else json.dumps(body),
                      {"Content-Type": "application/json", **(headers or {})})
            r = c.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        finally:
            c.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole group
        return self.proc.wait(30)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    need_tool(shutil.which("jackd") is not None, "jackd is not installed (apt-get install jackd2)")
    need_tool(shutil.which("ffmpeg") is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
    need_tool(shutil.which("mpd") is not None, "mpd is not installed (apt-get install mpd)")
    need_tool(shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists(),
              "mosquitto is not installed (apt-get install mosquitto)")
    need_pcsc_stack()
    d = Demo(tmp_path, _free_port_pair())
    try:
        yield d
    finally:
        if d.proc.poll() is None:  # SIGTERM: the demo stops its simulators (own sessions) first
            os.killpg(d.proc.pid, signal.SIGTERM)
            try:
                d.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(d.proc.pid, signal.SIGKILL)
                d.proc.wait(10)


def test_the_demo_starts_every_simulator_and_every_device_drives_a_hook(demo: Demo) -> None:
    for name in DEVICES:
        line = demo.until(rf"^  {name} ")
        assert " off: " not in line.string, line.string
    login = demo.until(r"login: demo / (\S+)")
    token = (demo.root / "run" / "demo-token").read_text(encoding="utf-8").strip()
    assert token in demo.until(r"Authorization: Bearer").string
    bearer = {"Authorization": f"Bearer {token}"}

    def backends() -> dict[str, str]:
        try:
            status, body = demo.call("GET", "/status", headers=bearer)
        except OSError:  # not listening yet
            return {}
        return {b["name"]: b["status"] for b in body["backends"]} if status == 200 else {}

    want = {"serial", "flic", "midi", "smartcard", "mock", "gpio", "camera.pi", "mqtt", "music.mpd", "file_watch"}
    assert wait_for(lambda: {n for n, s in backends().items() if s == "running"} >= want, 30, 0.2), backends()

    # each simulator's cycle reaches pihub, and the demo's hook for it sets a mock output
    outputs = {"fan", "porch_light", "music_paused", "desk_lamp_level", "room_power"}  # serial, mock, flic, midi, card

    seen_outputs: set[str] = set()

    def all_set() -> bool:  # accumulated: the history is bounded and the MIDI sweeps are many
        status, body = demo.call("POST", "/execute", {"type": "request", "action": "mock.history"}, bearer)
        assert status == 200, body
        seen_outputs.update(e["name"] for e in body["response"]["output"] if e["kind"] == "output")
        return seen_outputs >= outputs

    assert wait_for(all_set, 40, 0.5), f"outputs set so far: {sorted(seen_outputs)}, want {sorted(outputs)}"

    # music.mpd.play through the API: mpd plays a tone, its NewPlayingTrackEvent's hook runs
    status, body = demo.call("POST", "/execute", {"type": "request", "action": "music.mpd.play",
                                                  "args": {"resource": "tone1.ogg"}}, bearer)
    assert status == 200 and body["response"]["errors"] == [], body
    demo.until(r"mpd: now playing Tone \d by Artist \d")

    # a file dropped into run/inbox reaches the file_watch hook (its log line)
    (demo.root / "run" / "inbox" / "hello.txt").write_text("hi", encoding="utf-8")
    demo.until(r"inbox: .*hello\.txt arrived")

    # the printed login works
    status, body = demo.call("POST", "/login", {"username": "demo", "password": login.group(1)})
    assert status == 200, body

    assert demo.stop() == 0
    assert "pihub stopped" in "\n".join(demo.seen + list(demo.lines.queue))
