"""The web panel in real headless Chromium against the daemon on the mock rig.

Each test drives the panel as a user does (clicks, keys, forms) and checks pihub's side:
the mock pin a switch drives, the variable an action form sets, the hook trace the hub
recorded. The rig's conftest fails a test on any console error, failed request, request
to another host or CSP violation it did not declare.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from panel_support import USER, Panel, Rig
from pihub_testing import free_port, wait_for

from pihub.events import Event

WRONG = "not the password"


def _emit(rig: Rig, type_name: str, **args: Any) -> None:
    """Publish an event from the mock backend, as its hardware would, and let it through."""
    assert rig.hub.execute("mock.emit", {"type": type_name, **args}).ok
    assert rig.hub.flush()


def _event_row(panel: Panel, type_name: str, text: str) -> Any:
    """The newest log row of ``type_name`` whose summary contains ``text``."""
    return panel.page.locator(f"#ev-log li.event[data-type={type_name}]", has_text=text).first


# ----------------------------------------------------------------------------- login
def test_wrong_then_right_password_then_logout(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.expect_console(r"status of 401")  # the wrong password's answer
    page = panel.page
    page.goto(rig.url + "/")
    assert urlsplit(page.url).path == "/ui/login.html"
    page.fill("#username", USER)
    page.fill("#password", WRONG)
    page.click("#submit")
    page.wait_for_selector("#error:has-text('Wrong user name or password')")
    assert page.context.cookies() == []

    page.fill("#password", "correct horse battery")
    page.click("#submit")
    page.wait_for_selector("body[data-ready='1']")
    assert urlsplit(page.url).path == "/"
    session = [c for c in page.context.cookies() if c["name"] == "session_token"]
    assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    assert rig.hub.auth.check_session(session[0]["value"]) is not None
    panel.shot("login-done")

    page.click("#logout")
    page.wait_for_url(re.compile(r"/ui/login\.html"))
    assert rig.hub.auth.check_session(session[0]["value"]) is None, "logout must end the session on the server"
    page.goto(rig.url + "/")
    assert urlsplit(page.url).path == "/ui/login.html"


def test_protected_page_without_a_session_goes_to_login(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    page = panel.page
    page.goto(rig.url + "/#/actions")
    parts = urlsplit(page.url)
    assert parts.path == "/ui/login.html"
    assert parse_qs(parts.query) == {"redirect": ["/"]}
    page.wait_for_selector("#login")


def test_an_ended_session_sends_the_open_panel_to_login(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.expect_console(r"status of 401")  # the panel's check of its ended session
    panel.login()
    cookie = next(c["value"] for c in panel.context.cookies() if c["name"] == "session_token")
    rig.hub.auth.end_session(cookie)  # the server closes the session's websocket at once
    panel.page.wait_for_url(re.compile(r"/ui/login\.html\?redirect="))


def test_first_user_is_created_with_the_setup_code(browser: Any, tmp_path: Any) -> None:
    import pihub.config as cfg
    from pihub.hub import Hub, known_sections

    port, ws_port = free_port(), free_port()
    path = tmp_path / "config.yaml"
    path.write_text(f"workdir: {tmp_path / 'work'}\nhttp: {{port: {port}, websocket_port: {ws_port}}}\nmock: {{}}\n")
    hub = Hub(cfg.load(str(path), sections=known_sections()))
    hub.start()
    context = browser.new_context()
    errors: list[str] = []
    try:
        code = hub.auth.ensure_setup_code()
        assert code
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#username", "owner")
        page.fill("#password", "a long new password")
        page.click("#submit")
        page.wait_for_selector("#setup-row:not([hidden])")  # no user yet: the form asks for the code
        page.fill("#setup_code", "wrong-code")
        page.click("#submit")
        page.wait_for_selector("#error:has-text('Not created')")
        assert hub.auth.user_count() == 0
        page.fill("#setup_code", code)
        page.click("#submit")
        page.wait_for_selector("body[data-ready='1']")
        assert hub.auth.has_user("owner")
        assert page.inner_text("#brand").startswith("pihub")
    finally:
        context.close()
        hub.stop()
    # the 412 (no user yet) and the 401 (wrong code) are the test's own
    assert [e for e in errors if not re.search(r"status of 4(01|12)", e)] == []


# ---------------------------------------------------------------------------- devices
def test_gpio_switch_drives_the_mock_pin(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    pin = rig.hub.backends["gpio"].mock_pin("relay")
    switch = panel.page.locator("[data-backend=gpio] [data-entity=relay] [role=switch]")
    assert switch.get_attribute("aria-checked") == "false"
    switch.click()
    panel.page.wait_for_selector("[data-backend=gpio] [data-entity=relay] [role=switch][aria-checked=true]")
    assert wait_for(lambda: pin.state == 1), f"the relay pin is {pin.state} after switching it on"
    panel.shot("devices-relay-on")
    switch.press("Enter")  # the switch is a button: the keyboard works it too
    panel.page.wait_for_selector("[data-backend=gpio] [data-entity=relay] [role=switch][aria-checked=false]")
    assert wait_for(lambda: pin.state == 0), f"the relay pin is {pin.state} after switching it off"


def test_input_edge_shows_on_its_card_and_in_the_log(make_panel: Any, rig: Rig, record_property: Any) -> None:
    panel = make_panel()
    panel.login()
    page = panel.page
    button = rig.hub.backends["gpio"].mock_pin("button")
    indicator = "[data-backend=gpio] [data-entity=button] .indicator"
    assert page.get_attribute(indicator, "data-on") == "0"
    t0 = time.monotonic()
    button.drive_high()
    try:
        page.wait_for_selector(f"{indicator}[data-on='1']", timeout=5000)
        card_s = time.monotonic() - t0
        page.wait_for_selector('#ev-log li.event[data-type=GPIOEvent]:has-text(\'"value":1\')', state="attached",
                               timeout=5000)
        log_s = time.monotonic() - t0
    finally:
        button.drive_low()
    page.wait_for_selector(f"{indicator}[data-on='0']")
    # reported, not asserted (timing goals live in bench/): the goal is 1 s
    record_property("edge_to_card_s", round(card_s, 3))
    record_property("edge_to_log_s", round(log_s, 3))
    print(f"\npanel: input edge -> card {card_s * 1000:.0f} ms, -> event log {log_s * 1000:.0f} ms")


def test_sensor_change_updates_its_card(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    value = "[data-backend=mock] [data-sensor=temperature] .value"
    for t in (21.5, 22.75, 23.25):
        _emit(rig, "SensorDataChangeEvent", data={"temperature": t})
    panel.page.wait_for_selector(f"{value}:has-text('23.25 °C')")
    points = panel.page.get_attribute("[data-backend=mock] [data-sensor=temperature] svg polyline", "points")
    assert points is not None and len(points.split()) >= 3, "the sparkline plots the recent values"
    panel.shot("devices-sensor")


def test_backend_status_change_shows_on_its_card(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    # the backend's own report (the hub publishes the event, and /panel/devices agrees with it: a
    # made-up event was overwritten by the page's next refresh from the real status)
    assert rig.hub.backends["mock"].report_degraded("lost the device; retrying")
    panel.page.wait_for_selector("[data-backend=mock] .badge[data-status=degraded]")
    assert panel.page.inner_text("[data-backend=mock] .why") == "why: lost the device; retrying"
    assert rig.hub.backends["mock"].report_recovered()
    panel.page.wait_for_selector("[data-backend=mock] .badge[data-status=running]")
    assert panel.page.is_hidden("[data-backend=mock] .why")


# ----------------------------------------------------------------------------- events
def test_event_trace_lists_fired_and_not_fired_hooks(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    panel.goto("events")
    button = rig.hub.backends["gpio"].mock_pin("button")
    mark = len(rig.events)
    button.drive_high()
    button.drive_low()
    high = rig.event_after(mark, lambda e: e.type.name == "GPIOEvent" and e.args["value"] == 1)
    low_event = rig.event_after(mark, lambda e: e.type.name == "GPIOEvent" and e.args["value"] == 0)
    row = panel.page.locator(f"#ev-log li.event[data-id='{high.id}']")
    row.locator("summary").click()
    trace = row.locator(".trace")
    trace.locator("ul.fired").wait_for()
    assert trace.locator("ul.fired > li").all_inner_texts() == ["button_pressed"]
    action = trace.locator("ol.actions > li")
    assert action.count() == 1
    assert action.locator("code").inner_text() == "mock.set"
    output = json.loads(action.locator("pre.output").inner_text())
    assert output["name"] == "lamp" and output["value"] is True
    not_fired = trace.locator("ul.not-fired > li[data-hook=too_warm]")
    assert not_fired.inner_text() == "too_warm: type: GPIOEvent is not a SensorDataChangeEvent"
    panel.shot("events-trace")

    # the falling edge fired nothing: its trace names the condition that failed
    low = panel.page.locator(f"#ev-log li.event[data-id='{low_event.id}']")
    low.locator("summary").click()
    low.locator(".trace ul.not-fired").wait_for()
    assert low.locator(".trace").inner_text().count("no hook fired") == 1
    reason = low.locator(".trace ul.not-fired > li[data-hook=button_pressed] code").inner_text()
    _, expected = rig.hub.matcher.explain(Event.of("GPIOEvent", "gpio", pin=17, value=0, name="button"))
    assert reason == expected["button_pressed"] and "value" in reason


def test_event_log_filters_and_pauses_while_scrolled(make_panel: Any, rig: Rig) -> None:
    panel = make_panel(width=360, height=640)
    panel.login()
    panel.goto("events")
    page = panel.page
    for i in range(40):
        _emit(rig, "CustomEvent", subtype="filler", n=i)
    page.wait_for_selector('#ev-log li.event:has-text(\'"n":39\')', state="attached")
    page.fill("#ev-filter", '"n":7')
    visible = page.locator("#ev-log li.event:visible")
    assert visible.count() == 1 and '"n":7' in visible.inner_text()
    page.fill("#ev-filter", "")
    page.select_option("#ev-type", "CustomEvent")
    assert page.locator("#ev-log li.event:visible").count() == page.locator(
        "#ev-log li.event[data-type=CustomEvent]").count()
    page.select_option("#ev-type", "")

    page.eval_on_selector("#ev-log", "el => { el.scrollTop = 300; }")
    page.wait_for_function("document.getElementById('ev-log').scrollTop > 4")
    first = page.get_attribute("#ev-log li.event", "data-id")
    _emit(rig, "CustomEvent", subtype="while-paused")
    page.wait_for_selector("#ev-resume:has-text('Resume (1 new)')")
    assert page.get_attribute("#ev-log li.event", "data-id") == first, "a paused log must not move"
    page.click("#ev-resume")
    page.wait_for_selector('#ev-log li.event:first-child:has-text("while-paused")')
    assert page.is_hidden("#ev-resume")


def test_websocket_drop_and_return_catches_up_with_no_gap(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    page = panel.page
    routes: list[Any] = []

    opened_at: list[float] = []

    def through(ws: Any) -> None:
        routes.append(ws)
        opened_at.append(time.monotonic())
        ws.connect_to_server()

    page.route_web_socket(re.compile(r"/ws/events"), through)
    panel.login()
    panel.goto("events")
    _emit(rig, "CustomEvent", subtype="before-drop")
    page.wait_for_selector('#ev-log li.event:has-text("before-drop")')
    seq_before = int(page.get_attribute("#ev-log li.event", "data-seq") or 0)

    routes[-1].close(code=1001, reason="dropped by the test")
    page.wait_for_selector("#conn[data-state=reconnecting]")
    for i in range(10):
        _emit(rig, "CustomEvent", subtype="during-drop", n=i)
    emitted_at = time.monotonic()
    page.wait_for_selector("#conn[data-state=live]")
    page.wait_for_selector('#ev-log li.event:has-text(\'"n":9\')', state="attached")
    _emit(rig, "CustomEvent", subtype="after-return")
    page.wait_for_selector('#ev-log li.event:has-text("after-return")')

    assert len(routes) == 2
    # the backoff's first wait (>= 0.25 s) outlasted the emits: they reached the page by replay
    assert opened_at[1] > emitted_at, "the panel reconnected before the test's events: nothing was replayed"
    since = parse_qs(urlsplit(routes[1].url).query)["since"]
    assert since == [str(seq_before)], "the reconnect asks for what came after the last event it had"
    seqs = [int(s) for s in page.eval_on_selector_all("#ev-log li.event", "els => els.map(e => e.dataset.seq)")]
    newest_first = sorted(seqs, reverse=True)
    assert seqs == newest_first, "the log is newest first"
    run = [s for s in seqs if s >= seq_before]
    assert run == list(range(max(run), seq_before - 1, -1)), f"a gap or a duplicate in {run}"
    during = page.locator("#ev-log li.event", has_text="during-drop")
    assert during.count() == 10
    assert page.locator("#ev-log li.gap").count() == 0


# ---------------------------------------------------------------------------- actions
def test_action_form_runs_variable_set_and_shows_the_result(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    panel.goto("actions")
    page = panel.page
    page.wait_for_selector("#act-name option[value='variable.set']", state="attached")
    page.select_option("#act-name", "variable.set")
    page.fill("#arg-values", '{"panel_answer": 42}')
    page.click("#act-run")
    page.wait_for_selector("#act-result .ok pre")
    assert json.loads(page.inner_text("#act-result .ok pre")) == {"panel_answer": 42}
    assert rig.hub.execute("variable.get", {"name": "panel_answer"}).output == {"panel_answer": 42}
    panel.shot("actions-result")


def test_action_form_shows_a_bad_argument_error(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    panel.goto("actions")
    page = panel.page
    page.wait_for_selector("#act-name option[value='gpio.write']", state="attached")
    page.select_option("#act-name", "gpio.write")
    page.fill("#arg-pin", "nosuch")
    page.fill("#arg-value", "1")
    page.click("#act-run")
    page.wait_for_selector("#act-result .errors")
    shown = page.inner_text("#act-result .errors li")
    expected = rig.hub.execute("gpio.write", {"pin": "nosuch", "value": 1}).errors
    assert expected and shown == str(expected[0]) and "nosuch" in shown

    page.select_option("#act-name", "mock.history")  # a typed int argument, checked before sending
    page.fill("#arg-limit", "ten")
    page.click("#act-run")
    assert page.inner_text("#act-result [role=alert]") == 'limit must be an integer, not "ten"'


# ------------------------------------------------------------------ status and hooks
def test_status_and_hooks_pages_show_the_daemon_state(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    button = rig.hub.backends["gpio"].mock_pin("button")
    button.drive_high()
    button.drive_low()
    assert rig.hub.flush()
    panel.goto("status")
    page = panel.page
    page.wait_for_selector("[data-stat=published] dd")
    published = int(page.inner_text("[data-stat=published] dd"))
    assert 0 < published <= rig.hub.status()["bus"]["published"]
    assert page.inner_text("[data-stat=version] dd") == rig.hub.status()["version"]
    assert page.locator(".backends li[data-backend=gpio] .badge").inner_text() == "running"
    panel.shot("status")

    panel.goto("hooks")
    row = page.locator("tr[data-hook=button_pressed]")
    row.wait_for()
    fired = rig.hub.describe_hooks()["hooks"][0]["fired"]
    assert fired >= 1 and int(row.locator("td.fired").inner_text()) >= 1
    assert "lights_off(reason)" in page.inner_text("#procedures")
    panel.shot("hooks")


# ----------------------------------------------------------- phone, keyboard, dark
def test_phone_width_has_no_horizontal_scroll_on_any_page(make_panel: Any, rig: Rig) -> None:
    panel = make_panel(width=360, height=740)
    panel.login()
    for name in ("devices", "events", "actions", "hooks", "status"):
        panel.goto(name)
        if name == "actions":
            panel.page.wait_for_selector("#act-fields .field, #act-doc:not(:empty)", state="attached")
        width = panel.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the {name} page is {width} px wide on a 360 px screen"
        panel.shot(f"phone-{name}")


def test_keyboard_reaches_every_page_and_opens_a_trace(make_panel: Any, rig: Rig) -> None:
    panel = make_panel()
    panel.login()
    page = panel.page
    _emit(rig, "CustomEvent", subtype="keyboard")
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.page") == "events":
            break
    else:
        raise AssertionError("Tab never reached the Events link")
    page.keyboard.press("Enter")
    page.wait_for_selector("#page-events:not([hidden])")
    summary = _event_row(panel, "CustomEvent", "keyboard").locator("summary")
    summary.focus()
    page.keyboard.press("Enter")
    _event_row(panel, "CustomEvent", "keyboard").locator(".trace h3").first.wait_for()


def test_dark_and_light_follow_the_system_setting(browser: Any, rig: Rig) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme)
        try:
            page = context.new_page()
            page.goto(rig.url + "/")
            colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        finally:
            context.close()
    assert colours["light"] != colours["dark"]
