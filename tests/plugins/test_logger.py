"""logger.*: messages reach the pihub.user logger at the right level."""

from __future__ import annotations

import logging

import pytest

from pihub.engine.actions import ActionRegistry
from pihub.plugins.logger import LoggerPlugin


@pytest.fixture
def reg() -> ActionRegistry:
    r = ActionRegistry()
    r.register(LoggerPlugin())
    return r


def user_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pihub.user"]


@pytest.mark.parametrize(("action", "level"), [
    ("logger.trace", logging.DEBUG),
    ("logger.debug", logging.DEBUG),
    ("logger.info", logging.INFO),
    ("logger.warning", logging.WARNING),
    ("logger.warn", logging.WARNING),
    ("logger.error", logging.ERROR),
    ("logger.exception", logging.ERROR),
])
def test_levels(reg: ActionRegistry, caplog: pytest.LogCaptureFixture, action: str, level: int) -> None:
    with caplog.at_level(logging.DEBUG, logger="pihub.user"):
        resp = reg.execute(action, {"msg": "door opened"})
    assert resp.errors == [] and resp.output is None
    assert user_records(caplog) == [(level, "door opened")]


def test_scalar_and_non_string_messages(reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pihub.user"):
        reg.execute("logger.info", "plain")
        reg.execute("logger.info", {"msg": 21.5})
        reg.execute("logger.info", {"msg": {"t": 1}})
    assert user_records(caplog) == [
        (logging.INFO, "plain"), (logging.INFO, "21.5"), (logging.INFO, "{'t': 1}")]


def test_percent_signs_without_args_are_literal(
        reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pihub.user"):
        assert reg.execute("logger.info", {"msg": "100% %s done"}).errors == []
    assert user_records(caplog) == [(logging.INFO, "100% %s done")]


def test_platypush_style_format_args(reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pihub.user"):
        reg.execute("logger.info", ["t=%s h=%d", 21.5, 40])
        reg.execute("logger.info", {"msg": "%s!", "args": ["hi"]})
    assert user_records(caplog) == [(logging.INFO, "t=21.5 h=40"), (logging.INFO, "hi!")]


def test_bad_format_is_reported_not_logged(reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pihub.user"):
        resp = reg.execute("logger.info", ["n=%d", "x"])
    assert resp.errors == ["logger.info: cannot format msg 'n=%d' with args ['x']: "
                           "%d format: a real number is required, not str"]
    assert user_records(caplog) == []


def test_msg_is_required(reg: ActionRegistry) -> None:
    assert reg.execute("logger.info").errors == ["logger.info: missing required argument 'msg'"]


def test_level_filtering_applies(reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pihub.user"):
        reg.execute("logger.debug", {"msg": "hidden"})
        reg.execute("logger.error", {"msg": "shown"})
    assert user_records(caplog) == [(logging.ERROR, "shown")]


def test_the_section_takes_no_options() -> None:
    schema = LoggerPlugin.config_schema
    assert schema is not None
    assert schema.validate({}, ("logger",)) == ({}, [])
    _, problems = schema.validate({"level": "debug"}, ("logger",))
    assert len(problems) == 1 and "unknown key 'level'" in str(problems[0])


def test_replay_may_run_logger_actions(reg: ActionRegistry) -> None:
    assert not reg.has_side_effects("logger.info")


def test_a_message_cannot_forge_log_lines_or_send_terminal_escapes(
        reg: ActionRegistry, caplog: pytest.LogCaptureFixture) -> None:
    name = "/inbox/evil\n2026-01-01 00:00:00.000 CRITICAL pihub.hub: forged\r\x1b[31mRED\x9b2J\u2028\udcff"
    with caplog.at_level(logging.INFO, logger="pihub.user"):
        assert reg.execute("logger.info", {"msg": f"created {name}"}).errors == []
        assert reg.execute("logger.warning", ["moved %s", name]).errors == []  # formatted in, then escaped
    escaped = ("/inbox/evil\\n2026-01-01 00:00:00.000 CRITICAL pihub.hub: forged\\r\\x1b[31mRED\\x9b2J"
               "\\u2028\\udcff")
    assert user_records(caplog) == [(logging.INFO, f"created {escaped}"), (logging.WARNING, f"moved {escaped}")]
