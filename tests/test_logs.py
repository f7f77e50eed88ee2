"""pihub.logs: journal vs plain format, levels, idempotence, level validation.

Journal mode is detected the way systemd defines it: ``JOURNAL_STREAM`` holds the
``device:inode`` of the stream. The tests log to a real file and set the variable to that
file's identity (or to another file's, to show the comparison matters).
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from pihub.logs import LEVELS, LogLimiter, escape_controls, get_logger, setup_logging, syslog_priority

PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<msg>.*)$")


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo setup_logging's global changes after each test."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    pihub_logger = logging.getLogger("pihub")
    saved = (list(root.handlers), root.level, pihub_logger.level)
    yield
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])
    pihub_logger.setLevel(saved[2])
    logging.captureWarnings(False)


def _our_handlers() -> list[logging.Handler]:
    """The handlers setup_logging installed on the root logger."""
    return [h for h in logging.getLogger().handlers if getattr(h, "_pihub_handler", False)]


def _journal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TextIO:
    """A real file stream announced as the journal stream."""
    stream = open(tmp_path / "journal.txt", "w+", encoding="utf-8")
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    return stream


def _read(stream: TextIO) -> list[str]:
    """Everything written to a file stream so far, as lines."""
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def test_plain_format_has_timestamp_level_and_component() -> None:
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    get_logger("hub").info("web panel on %s", "http://127.0.0.1:8008/")
    (line,) = out.getvalue().splitlines()
    m = PLAIN_LINE.match(line)
    assert m, line
    assert m["level"] == "INFO"
    assert m["name"] == "pihub.hub"
    assert m["msg"] == "web panel on http://127.0.0.1:8008/"
    assert not line.startswith("<")


def test_journal_stream_gets_priority_prefixes_and_no_timestamps(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _journal_file(tmp_path, monkeypatch)
    with stream:
        setup_logging("debug", stream=stream)
        log = get_logger("pihub.backends.gpio")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        lines = _read(stream)
    assert lines == [
        "<7>DEBUG pihub.backends.gpio: d",
        "<6>INFO pihub.backends.gpio: i",
        "<4>WARNING pihub.backends.gpio: w",
        "<3>ERROR pihub.backends.gpio: e",
        "<2>CRITICAL pihub.backends.gpio: c",
    ]


def test_journal_stream_naming_another_file_means_plain(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other.txt"
    other.write_text("")
    st = os.stat(other)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    with open(tmp_path / "stderr.txt", "w+", encoding="utf-8") as stream:
        setup_logging("INFO", stream=stream)
        get_logger("hub").info("hello")
        (line,) = _read(stream)
    assert PLAIN_LINE.match(line), line


@pytest.mark.parametrize("value", ["", "garbage", "12", "1:x"])
def test_malformed_journal_stream_means_plain(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", value)
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    get_logger("hub").info("hello")
    assert PLAIN_LINE.match(out.getvalue().rstrip("\n"))


def test_every_traceback_line_keeps_the_error_priority(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _journal_file(tmp_path, monkeypatch)
    with stream:
        setup_logging("INFO", stream=stream)
        try:
            raise ValueError("boom")
        except ValueError:
            get_logger("engine.dispatcher").exception("hook failed")
        lines = _read(stream)
    assert lines[0] == "<3>ERROR pihub.engine.dispatcher: hook failed"
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_journal_can_be_forced_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    setup_logging("INFO", stream=out, journal=True)
    get_logger("hub").warning("forced")
    assert out.getvalue() == "<4>WARNING pihub.hub: forced\n"


def test_custom_format_keeps_the_journal_prefix() -> None:
    plain, journal = io.StringIO(), io.StringIO()
    setup_logging("INFO", stream=plain, fmt="%(levelname)s|%(message)s", journal=False)
    get_logger("hub").info("a")
    setup_logging("INFO", stream=journal, fmt="%(levelname)s|%(message)s", journal=True)
    get_logger("hub").info("b")
    assert plain.getvalue() == "INFO|a\n"
    assert journal.getvalue() == "<6>INFO|b\n"


def test_calling_twice_does_not_double_lines() -> None:
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    setup_logging("INFO", stream=out)
    get_logger("hub").info("once")
    assert len(_our_handlers()) == 1
    assert len(out.getvalue().splitlines()) == 1


def test_calling_again_applies_the_new_arguments() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", stream=first)
    setup_logging("ERROR", stream=second)
    get_logger("hub").warning("dropped")
    get_logger("hub").error("kept")
    assert first.getvalue() == ""
    lines = second.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("ERROR pihub.hub: kept")


def test_level_filters_pihub_and_libraries_stay_at_warning() -> None:
    out = io.StringIO()
    setup_logging("DEBUG", stream=out)
    get_logger("hub").debug("ours")
    logging.getLogger("gpiozero").info("library chatter")
    logging.getLogger("gpiozero").warning("library warning")
    names = [(m["name"], m["msg"]) for m in map(PLAIN_LINE.match, out.getvalue().splitlines()) if m]
    assert names == [("pihub.hub", "ours"), ("gpiozero", "library warning")]


def test_info_level_hides_debug() -> None:
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    get_logger("hub").debug("hidden")
    get_logger("hub").info("shown")
    (line,) = out.getvalue().splitlines()
    assert line.endswith("INFO pihub.hub: shown")


@pytest.mark.parametrize("level", ["verbose", "", "WARN", "trace", "10"])
def test_unknown_level_is_refused_with_the_allowed_names(level: str) -> None:
    with pytest.raises(ValueError) as info:
        setup_logging(level, stream=io.StringIO())
    message = str(info.value)
    assert repr(level) in message
    for name in LEVELS:
        assert name.lower() in message
    assert _our_handlers() == []


@pytest.mark.parametrize("level", ["debug", "Info", " WARNING ", "error", "CRITICAL"])
def test_level_names_are_case_insensitive(level: str) -> None:
    setup_logging(level, stream=io.StringIO())
    assert logging.getLogger("pihub").level == logging.getLevelName(level.strip().upper())


def test_filename_logs_plain_lines_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    path = tmp_path / "pihub.log"
    setup_logging("INFO", filename=path)
    get_logger("hub").info("to file")
    for handler in _our_handlers():
        handler.flush()
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert PLAIN_LINE.match(line), line


def test_stream_and_filename_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either stream or filename"):
        setup_logging("INFO", stream=io.StringIO(), filename=tmp_path / "x.log")


def test_component_loggers_live_under_pihub() -> None:
    assert get_logger("backends.gpio").name == "pihub.backends.gpio"
    assert get_logger("pihub.backends.gpio") is logging.getLogger("pihub.backends.gpio")
    assert get_logger("pihub").name == "pihub"


@pytest.mark.parametrize("levelno, priority", [
    (logging.DEBUG, 7), (logging.INFO, 6), (25, 6), (logging.WARNING, 4),
    (logging.ERROR, 3), (logging.CRITICAL, 2), (60, 2), (5, 7)])
def test_syslog_priority_bands(levelno: int, priority: int) -> None:
    assert syslog_priority(levelno) == priority


def test_log_limiter_window():
    now = [0.0]
    limiter = LogLimiter(2, 10.0, lambda: now[0])
    assert [limiter.allow() for _ in range(4)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    now[0] = 9.9
    assert limiter.allow() == (False, 0)
    now[0] = 10.0
    assert limiter.allow() == (True, 3)
    assert limiter.allow() == (True, 0)


def test_log_limiter_takes_the_time_from_the_caller_when_given():
    limiter = LogLimiter(1, 60.0, lambda: pytest.fail("the clock is not read when the time is given"))
    assert [limiter.allow(t) for t in (0.0, 59.9, 60.0)] == [(True, 0), (False, 0), (True, 1)]


@pytest.mark.parametrize(("text", "escaped"), [
    ("line\nforged", "line\\nforged"),
    ("a\r\tb", "a\\r\\tb"),
    ("\x1b[2J\x00\x7f\x85\x9b", "\\x1b[2J\\x00\\x7f\\x85\\x9b"),
    ("para\u2028graph\u2029", "para\\u2028graph\\u2029"),
    ("bad\udcff\udcfe", "bad\\udcff\\udcfe"),  # a non-UTF-8 file name's bytes
    ("C:\\dir é 😀 %s", "C:\\dir é 😀 %s"),  # printable text, backslashes included, unchanged
])
def test_escape_controls_leaves_no_control_character(text: str, escaped: str) -> None:
    assert escape_controls(text) == escaped
    assert escape_controls(text).isprintable()


def test_escape_controls_cuts_the_escaped_text_to_its_limit() -> None:
    assert escape_controls("ab\ncd", 10) == "ab\\ncd"
    assert escape_controls("a\n" * 1_000_000, 8) == "a\\na\\na\\n"[:8] + "..."
    assert escape_controls("x" * 9, 8) == "x" * 8 + "..."
    assert escape_controls("x" * 8, 8) == "x" * 8
