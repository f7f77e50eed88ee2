"""Helpers of the panel's browser tests: the rig's config, the hub handle, the watched page."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pihub_testing import wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "correct horse battery"
USER = "alice"

#: The mock rig: gpiozero MockFactory pins (an input 'button' on GPIO17, an output 'relay'
#: on GPIO27), the mock backend's output 'lamp' and its sensor events, and hooks whose
#: traces the tests read; a mock camera; a mock ADC; a dashboard of every widget kind, its carousel on a
#: resource folder.
RIG_YAML = """
device_id: panel-rig
workdir: {workdir}
http:
  port: {http_port}
  websocket_port: {ws_port}
  resource_dirs: {{photos: {photos}}}
mock:
  outputs: {{lamp: false}}
camera.pi:  # ffmpeg's test picture: the dashboard's camera widget shows its snapshots
  driver: mock
  listen_port: 0
  resolution: [320, 240]
  framerate: 10
adc:  # the bit-level fake MCP3008: 'light' in volts, 'temp' converted (°C = V * 100 - 50)
  driver: mock
  poll_interval: 0.2
  channels: {{0: light, 1: {{name: temp, conversion: {{scale: 100.0, offset: -50.0}}}}}}
  mock: {{voltages: {{0: 1.65, 1: 0.75}}}}
gpio:
  pin_factory: mock
  bounce_time: 0
  inputs: {{button: {{pin: 17}}}}
  outputs: {{relay: {{pin: 27}}}}
event.hook.button_pressed:
  if: {{type: GPIOEvent, name: button, value: 1}}
  then:
    - action: mock.set
      args: {{name: lamp, value: true}}
event.hook.too_warm:
  if:
    type: SensorDataChangeEvent
    data: {{temperature: {{$gte: 25}}}}
  then:
    - action: logger.info
      args: {{msg: "too warm"}}
dashboards:
  hall:
    title: Hall
    rows:
      - - {{widget: clock, columns: 4}}
        - {{widget: sensor, columns: 8, source: mock, key: temperature, label: Inside}}
      - - {{widget: switch, columns: 6, backend: gpio, entity: relay}}
        - {{widget: action, columns: 6, label: Lamp off, action: mock.set, args: {{name: lamp, value: false}}}}
      - - {{widget: events, columns: 12, limit: 5}}
      - - {{widget: carousel, columns: 6, dir: photos, interval: 1}}
        - {{widget: camera, columns: 6, camera: pi}}
procedure.lights_off(reason):
  - action: mock.set
    args: {{name: lamp, value: false}}
"""


@dataclass
class Rig:
    """The running hub and where it serves."""

    hub: Any
    http_port: int
    ws_port: int
    #: every event the dispatcher handled, in order (a listener the rig fixture adds)
    events: list[Any] = field(default_factory=list)

    def event_after(self, mark: int, pred: Callable[[Any], bool]) -> Any:
        """The first event after ``events[:mark]`` that ``pred`` accepts (waits up to 5 s)."""
        found: list[Any] = []
        assert wait_for(lambda: found.extend(e for e in self.events[mark:] if pred(e)) or found), \
            "the expected event never reached the dispatcher"
        return found[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class Panel:
    """One browser context and page on the rig, with everything it did recorded."""

    page: Any
    context: Any
    rig: Rig
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect_console(self, pattern: str) -> None:
        """A console error matching ``pattern`` (a regex) is part of the test (a 401...)."""
        self.expected.append(re.compile(pattern))

    def login(self, password: str = PASSWORD) -> None:
        """Open ``/`` (which sends to the login page), log in, wait for the live stream."""
        self.page.goto(self.rig.url + "/")
        self.page.fill("#username", USER)
        self.page.fill("#password", password)
        self.page.click("#submit")
        self.page.wait_for_selector("body[data-ready='1']")
        self.page.wait_for_selector("#conn[data-state=live]")

    def goto(self, name: str) -> None:
        """Open a page of the panel by its nav link (as a user would)."""
        self.page.click(f"nav a[data-page={name}]")
        self.page.wait_for_selector(f"#page-{name}:not([hidden])")

    def shot(self, name: str) -> None:
        """Save a screenshot to the artifacts folder."""
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def problems(self) -> list[str]:
        """Everything that went wrong and was not expected."""
        errors = [e for e in self.console_errors if not any(p.search(e) for p in self.expected)]
        return ([f"console: {e}" for e in errors] + [f"failed request: {f}" for f in self.failed]
                + [f"request to another host: {u}" for u in self.foreign]
                + [f"CSP violation: {c}" for c in self.csp])


def _png(rgba: tuple[int, int, int, int]) -> bytes:
    """A valid 1x1 PNG of one colour (the carousel's images)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes([0, *rgba])))
            + chunk(b"IEND", b""))


PNG_1X1 = _png((197, 26, 74, 255))
