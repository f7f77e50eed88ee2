"""The devices page's ADC and camera cards in real headless Chromium on the mock rig.

The ADC is the rig's bit-level fake MCP3008 (``driver: mock``), the camera ffmpeg's test
picture (``driver: mock``). The MIDI, Flic and smart-card cards need their external
stacks (JACK, flicd, pcscd): their ``describe_entities()`` is tested with each backend
in ``tests/backends/``. The conftest fails a test on any console error, failed request,
request to another host or CSP violation.
"""

from __future__ import annotations

from typing import Any

from panel_support import Rig
from pihub_testing import wait_for

ADC = "[data-backend=adc]"
CAMERA = "[data-backend='camera.pi'] [data-entity='camera.pi']"


def test_adc_channels_show_value_volts_and_a_sparkline_of_their_changes(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    page = panel.page
    # 1.65 V is code 512 of 1024 at 3.3 V: exact; 0.75 V is code 232: 0.747656 V, 24.7656 °C
    page.wait_for_selector(f"{ADC} [data-entity=light] .value:text-is('1.65')")
    assert page.inner_text(f"{ADC} [data-entity=light]").split() == ["light", "CH0", "1.65"]
    assert page.inner_text(f"{ADC} [data-entity=temp] .value") == "24.77"
    assert page.inner_text(f"{ADC} [data-entity=temp] .volts") == "0.75 V"
    for volts in (2.0, 2.5):
        assert rig.hub.execute("adc.set_voltage", {"channel": 0, "volts": volts}).ok
        # 2.5 V is code 775: 2.497559 V, shown to 2 decimals
        page.wait_for_selector(f"{ADC} [data-entity=light] .value:text-is('{volts:g}')")
    points = page.get_attribute(f"{ADC} [data-entity=light] svg polyline", "points")
    assert points is not None and len(points.split()) == 3, "the sparkline plots 1.65, 2 and 2.5"
    assert page.locator(f"{ADC} .sensors [data-sensor]").count() == 0, "a channel is not also a sensor row"
    panel.shot("devices-adc")


def test_a_smart_card_event_shows_its_numbers_masked_on_the_devices_page(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    atr, uid = "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A", "04 A1 B2 C3"
    assert rig.hub.execute("mock.emit", {"type": "SmartCardDetectedEvent", "atr": atr, "reader": "R", "uid": uid}).ok
    last = "[data-backend=mock] .last"
    panel.page.wait_for_selector(f"{last}:has-text('SmartCardDetectedEvent')")
    text = panel.page.inner_text(last)
    assert '"atr":"…00 6A"' in text and '"uid":"…B2 C3"' in text
    assert "A1" not in text and "4F" not in text


def _mjpeg_viewers(rig: Rig) -> int:
    return int(rig.hub.backends["camera.pi"].get_status()["mjpeg_viewers"])


def _frame_width(panel: Any) -> int:
    return int(panel.page.evaluate(f"document.querySelector(\"{CAMERA} img\").naturalWidth"))


def test_camera_card_shows_live_mjpeg_on_demand_and_links_a_snapshot(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    page = panel.page
    live = page.locator(f"{CAMERA} button[aria-pressed]")
    assert live.get_attribute("aria-pressed") == "false"
    assert page.is_hidden(f"{CAMERA} .camera"), "nothing streams before the user asks"
    assert _mjpeg_viewers(rig) == 0
    live.click()
    assert wait_for(lambda: _frame_width(panel) == 320, 15, 0.1), "no MJPEG frame reached the <img>"
    assert page.get_attribute(f"{CAMERA} img", "src") == "/camera/pi/video.mjpeg"
    assert _mjpeg_viewers(rig) == 1
    panel.shot("devices-camera")
    live.click()  # stop: the daemon's HTTP worker is freed
    assert live.get_attribute("aria-pressed") == "false"
    assert wait_for(lambda: _mjpeg_viewers(rig) == 0, 10), "the stopped stream still holds a viewer"
    live.click()
    assert wait_for(lambda: _mjpeg_viewers(rig) == 1, 10)
    panel.goto("events")  # leaving the page stops the live view too
    assert wait_for(lambda: _mjpeg_viewers(rig) == 0, 10), "the hidden page still streams"
    panel.goto("devices")
    assert live.get_attribute("aria-pressed") == "false"

    href = page.get_attribute(f"{CAMERA} a:text-is('Snapshot')", "href")
    assert href == "/camera/pi/photo.jpg"
    reply = panel.context.request.get(rig.url + href)  # the session cookie, as the link opens it
    assert reply.status == 200 and reply.headers["content-type"] == "image/jpeg"
    assert reply.body()[:2] == b"\xff\xd8"
