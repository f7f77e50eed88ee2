"""Dashboards: the config section, the JSON view, and the page in Chromium at 360 and 1280 px.

Layout is checked by element boxes (never pixels): at 1280 px a row's widgets sit side by
side with widths in proportion to their columns; at 360 px each takes the row's width,
one under the other. Screenshots of both go to the artifacts folder.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from panel_support import USER, Panel, Rig
from pihub_testing import wait_for
from test_panel_http import request

from pihub.web.dashboards import DASHBOARDS_SCHEMA

GAP_PX = 12  # .dash-row's gap in style.css


# ------------------------------------------------------------------------ the section
def test_section_problems_name_the_dashboard_row_and_widget() -> None:
    raw = {
        "hall": {"rows": [[{"widget": "clock", "columns": 5}, {"widget": "sensor", "columns": 8, "source": "mock"}]]},
        "bad name": {"rows": []},
        "tv": {"rows": [[{"widget": "radio"}]], "colour": "red"},
    }
    values, problems = DASHBOARDS_SCHEMA.validate(raw, ("dashboards",))
    assert values == {}
    assert [str(p) for p in problems] == [
        "dashboards.hall.rows[0]: the widgets take 13 columns; a row has 12",
        "dashboards.hall.rows[0][1]: a sensor widget needs 'key'",
        "dashboards.bad name: dashboard name 'bad name' must be 1 to 64 letters, digits, '_' or '-'",
        "dashboards.tv.rows[0][0].widget: must be one of 'sensor', 'switch', 'camera', 'clock', 'events', "
        "'action', 'carousel', not 'radio'",
        "dashboards.tv: unknown key 'colour' (allowed: 'rows', 'title')",
    ]


@pytest.mark.parametrize("raw", [["hall"], "hall", 3])
def test_section_must_be_a_mapping(raw: Any) -> None:
    _, problems = DASHBOARDS_SCHEMA.validate(raw, ("dashboards",))
    assert len(problems) == 1 and str(problems[0]).startswith("dashboards: must be a mapping of dashboard names")


def test_a_valid_section_gets_its_defaults() -> None:
    values, problems = DASHBOARDS_SCHEMA.validate({"tv": {"rows": [[{"widget": "clock"}]]}}, ("dashboards",))
    assert problems == []
    widget = values["tv"]["rows"][0][0]
    assert values["tv"]["title"] is None and widget["columns"] == 12 and widget["widget"] == "clock"


# ------------------------------------------------------------------------- HTTP side
def test_dashboard_view_lists_the_carousel_images(rig: Rig) -> None:
    token, _ = rig.hub.auth.create_token(USER, name="dash-view", scopes=("read",))
    status, _, body = request(rig, "/panel/dashboards/hall", {"Authorization": f"Bearer {token}"})
    assert status == 200
    board = json.loads(body)
    assert board["title"] == "Hall" and [len(r) for r in board["rows"]] == [2, 2, 1, 2]
    assert board["images"] == {"photos": {"files": ["/resources/photos/a.png", "/resources/photos/b.png"],
                                          "error": None}}


@pytest.mark.parametrize(("path", "status"), [
    ("/panel/dashboards/nosuch", 404),
    ("/dashboard/..%2f..%2fetc", 404),
    ("/dashboard/a%20b", 404),
    ("/dashboard/" + "x" * 65, 404),
    ("/dashboard/nosuch", 200),  # the page holds no data; its view answers 404
])
def test_dashboard_routes_refuse_unknown_and_bad_names(rig: Rig, path: str, status: int) -> None:
    token, _ = rig.hub.auth.create_token(USER, name=f"dash-{abs(hash(path))}", scopes=("read",))
    got, _, body = request(rig, path, {"Authorization": f"Bearer {token}"})
    assert got == status
    if path == "/panel/dashboards/nosuch":
        assert json.loads(body)["message"] == "no dashboard named 'nosuch' (dashboards: hall)"


# ------------------------------------------------------------------------ the browser
def _boxes(panel: Panel) -> list[list[dict[str, float]]]:
    """Each row's widgets' boxes, with the row's own as the first item."""
    return panel.page.evaluate("""() => [...document.querySelectorAll('.dash-row')].map(row =>
        [row, ...row.querySelectorAll(':scope > .widget')].map(e => {
          const r = e.getBoundingClientRect();
          return {x: r.x, y: r.y, w: r.width, h: r.height, columns: Number(e.dataset.columns || 12)};
        }))""")


def _open(panel: Panel, rig: Rig) -> None:
    panel.page.goto(rig.url + "/dashboard/hall")
    panel.page.wait_for_selector("body[data-ready='1']")
    panel.page.wait_for_selector("#conn[data-state=live]")


def test_rows_of_12_columns_at_1280_px(make_panel: Any, rig: Rig) -> None:
    panel = make_panel(width=1280, height=900)
    panel.login()
    _open(panel, rig)
    rows = _boxes(panel)
    assert [len(r) - 1 for r in rows] == [2, 2, 1, 2]
    column = (rows[0][0]["w"] - 11 * GAP_PX) / 12
    previous_bottom = 0.0
    for row, *widgets in rows:
        assert row["y"] >= previous_bottom - 0.5, "rows are stacked"
        previous_bottom = row["y"] + row["h"]
        x = row["x"]
        for w in widgets:
            assert w["y"] == pytest.approx(row["y"], abs=0.5), "a row's widgets share a top"
            assert w["x"] == pytest.approx(x, abs=1), "widgets sit side by side, left to right"
            expected = column * w["columns"] + GAP_PX * (w["columns"] - 1)
            assert w["w"] == pytest.approx(expected, abs=1.5), f"{w['columns']} columns wide"
            x += w["w"] + GAP_PX
    panel.shot("dashboard-1280")


def test_one_column_at_360_px(make_panel: Any, rig: Rig) -> None:
    panel = make_panel(width=360, height=740)
    panel.login()
    _open(panel, rig)
    rows = _boxes(panel)
    assert panel.page.evaluate("document.documentElement.scrollWidth") <= 360
    for row, *widgets in rows:
        bottom = row["y"]
        for w in widgets:
            assert w["x"] == pytest.approx(row["x"], abs=0.5) and w["w"] == pytest.approx(row["w"], abs=0.5)
            assert w["y"] >= bottom - 0.5, "widgets are one under the other"
            bottom = w["y"] + w["h"]
    panel.shot("dashboard-360")


def test_a_read_token_in_the_fragment_shows_the_dashboard_read_only(make_panel: Any, rig: Rig) -> None:
    token, _ = rig.hub.auth.create_token(USER, name="wall-tablet", scopes=("read",))
    panel = make_panel(width=1280, height=900)
    sent: list[str] = []
    panel.page.on("request", lambda r: sent.append(r.url))
    panel.page.goto(f"{rig.url}/dashboard/hall#token={token}")
    panel.page.wait_for_selector("body[data-ready='1']")
    panel.page.wait_for_selector("#conn[data-state=live]")
    page = panel.page
    assert page.inner_text("#dash-title") == "Hall"

    assert rig.hub.execute("mock.emit", {"type": "SensorDataChangeEvent", "data": {"temperature": 19.25}}).ok
    page.wait_for_selector(".widget[data-widget=sensor] .big:has-text('19.25 °C')")
    page.wait_for_selector(".widget[data-widget=events] li:has-text('SensorDataChangeEvent')")
    switch = page.locator(".widget[data-widget=switch] [role=switch]")
    switch.wait_for()
    page.wait_for_function("document.querySelector('.widget[data-widget=switch] [role=switch]').textContent !== '…'")
    assert switch.is_disabled(), "a read token cannot switch"
    assert page.locator(".widget[data-widget=action] button").is_disabled()
    page.wait_for_function("document.querySelector('.carousel-img').naturalWidth === 1")
    assert page.get_attribute(".carousel-img", "src").startswith("blob:")
    # polled from here: wait_for_function's in-page polling is an eval, which the page's CSP forbids
    assert wait_for(lambda: page.evaluate("document.querySelector('.camera-img').naturalWidth") == 320, 15, 0.1)
    assert page.get_attribute(".camera-img", "src").startswith("blob:")  # fetched with the token
    assert not [u for u in sent if token in u], "the token never travels in a URL"
    assert not [c for c in panel.context.cookies() if c["name"] == "session_token"]


def test_the_switch_widget_drives_the_pin_with_a_session(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    _open(panel, rig)
    pin = rig.hub.backends["gpio"].mock_pin("relay")
    before = pin.state
    switch = panel.page.locator(".widget[data-widget=switch] [role=switch]")
    panel.page.wait_for_function("!document.querySelector('.widget[data-widget=switch] [role=switch]').disabled")
    switch.click()
    want = "false" if before else "true"
    panel.page.wait_for_selector(f".widget[data-widget=switch] [role=switch][aria-checked={want}]")
    assert pin.state == (0 if before else 1)
    panel.page.click(".widget[data-widget=action] button")
    panel.page.wait_for_selector(".widget[data-widget=action] p:has-text('done')")
    assert rig.hub.backends["mock"].outputs["lamp"] is False


def test_without_a_credential_the_dashboard_goes_to_login(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.expect_console(r"status of 401")
    panel.page.goto(rig.url + "/dashboard/hall")
    panel.page.wait_for_url(re.compile(r"/ui/login\.html"))
    assert urlsplit(panel.page.url).query == "redirect=%2Fdashboard%2Fhall"
