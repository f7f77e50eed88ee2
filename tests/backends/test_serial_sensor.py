"""The serial sensor backend through real ptys, with the hw-mocks simulator as the device."""

from __future__ import annotations

import errno
import logging
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import HW_MOCKS, EventRecorder, load_hw_mock, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.serial_sensor import SerialSensorBackend, _encode_command, _open_error
from pihub.clock import Clock, ManualClock
from pihub.errors import ActionError, BackendUnavailable
from pihub.events import Event

SerialSensorSimulator = load_hw_mock("serial_sensor").SerialSensorSimulator


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Any]:
    with SerialSensorSimulator(tmp_path / "ttySENSOR", interval=0.02, seed=7) as s:
        yield s


@pytest.fixture
def open_backend() -> Iterator[Callable[..., tuple[SerialSensorBackend, EventRecorder]]]:
    """Open a backend on a config (fast reconnects by default); every one is closed after."""
    opened: list[SerialSensorBackend] = []

    def open_(clock: Clock | None = None, **config: Any) -> tuple[SerialSensorBackend, EventRecorder]:
        config.setdefault("reconnect_interval", 0.02)
        config.setdefault("read_timeout", 0.5)
        backend = SerialSensorBackend(config, clock=clock)
        backend.validate_environment()
        rec = EventRecorder()
        backend.open(rec)
        opened.append(backend)
        return backend, rec

    yield open_
    for backend in opened:
        backend.close()


def connected(rec: EventRecorder, n: int = 1) -> bool:
    return rec.wait(lambda: len(rec.of("SerialDeviceEvent", connected=True)) >= n)


@pytest.fixture
def serial_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure the hub knows the ``serial`` backend, entry point installed or not."""
    import pihub.hub as hub_module

    original = hub_module.backend_classes
    if "serial" not in original():
        monkeypatch.setattr(hub_module, "backend_classes", lambda: {**original(), "serial": SerialSensorBackend})


# ---------------------------------------------------------------------------- readings


def test_json_lines_become_change_events(sim, open_backend):
    backend, rec = open_backend(device=sim.path)
    assert connected(rec)
    assert rec.events[0].args == {"device": sim.path, "connected": True}
    assert rec.events[0].source == "serial"
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
    event = rec.of("SensorDataChangeEvent")[0]
    assert event.source == "serial" and event.args["source"] == "serial"
    assert set(event.args["data"]) == {"temperature", "humidity", "light"}
    assert set(backend.get_measurement()) == {"temperature", "humidity", "light"}
    status = backend.device_status()
    assert status["connected"] is True and status["state"] == "connected" and status["error"] is None
    assert status["readings"] >= 1 and status["malformed"] == 0


def test_threshold_crossings_give_one_event_per_crossing(sim, open_backend):
    sim.set(temperature=20.0)
    backend, rec = open_backend(device=sim.path, thresholds={"temperature": [24, 26]})
    assert rec.wait(lambda: rec.of("SensorDataBelowThresholdEvent"))
    sim.set(temperature=30.0)
    assert rec.wait(lambda: rec.of("SensorDataAboveThresholdEvent"))
    seen = backend.device_status()["readings"]
    assert rec.wait(lambda: backend.device_status()["readings"] >= seen + 5)  # more readings at 30 °C
    assert [e.args["data"] for e in rec.of("SensorDataAboveThresholdEvent")] == [{"temperature": 30.0}]
    assert len(rec.of("SensorDataBelowThresholdEvent")) == 1


def test_repeated_readings_give_one_change_event(sim, open_backend):
    sim.set(temperature=21.0, humidity=50.0, light=100)
    assert sim.wait_for(lambda s: s.values() == {"temperature": 21.0, "humidity": 50.0, "light": 100}, 5)
    backend, rec = open_backend(device=sim.path)
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent", data={"temperature": 21.0, "humidity": 50.0,
                                                                   "light": 100}))
    seen = backend.device_status()["readings"]
    assert rec.wait(lambda: backend.device_status()["readings"] >= seen + 5)
    assert len(rec.of("SensorDataChangeEvent")) == 1


def test_key_value_lines_through_a_pty(tmp_path, open_backend):
    with SerialSensorSimulator(tmp_path / "ttyKV", interval=0.02, fmt="keyvalue", pinned={"light": 7}) as sim:
        backend, rec = open_backend(device=sim.path, format="keyvalue")
        assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
        data = rec.of("SensorDataChangeEvent")[0].args["data"]
        assert data["light"] == 7 and isinstance(data["temperature"], float)
        out = backend.write({"cmd": "set", "light": 8}, reply_timeout=5)
        assert out["reply"] == {"ok": "true", "cmd": "set"}  # key=value replies are text


def test_on_connect_lines_are_written_and_come_back_on_a_loopback(open_backend):
    backend, rec = open_backend(device="loop://", on_connect=[{"temperature": 21.5}, "humidity=40"])
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
    assert rec.of("SensorDataChangeEvent")[0].args["data"] == {"temperature": 21.5}
    assert backend.device_status()["malformed"] == 1  # "humidity=40" is not json
    out = backend.write({"cmd": "ping"}, reply_timeout=5)
    assert out == {"device": "loop://", "bytes": 15, "reply": {"cmd": "ping"}}


def test_reply_key_null_makes_replies_readings(open_backend):
    backend, rec = open_backend(device="loop://", reply_key=None)
    assert connected(rec)
    backend.write({"cmd": "set", "t": 1})
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent", data={"cmd": "set", "t": 1}))


# ---------------------------------------------------------------------------- timeouts


def test_close_wakes_a_reader_blocked_on_a_silent_device(tmp_path, open_backend):
    with SerialSensorSimulator(tmp_path / "ttyQUIET", interval=0) as sim:
        backend, rec = open_backend(device=sim.path, read_timeout=60.0)
        assert connected(rec)
        closer = threading.Thread(target=backend.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "close() waited for the 60 s read"
        assert backend.status == BackendStatus.STOPPED
        assert backend.device_status()["state"] == "stopped"


def test_reads_time_out_even_when_they_cannot_be_cancelled(tmp_path, open_backend, monkeypatch):
    # Without cancel_read, only the read timeout gets the reader back to its stop check;
    # a read with no timeout (Platypush's) would block close() forever.
    monkeypatch.setattr(SerialSensorBackend, "_cancel_read", staticmethod(lambda port: None))
    with SerialSensorSimulator(tmp_path / "ttyQUIET", interval=0) as sim:
        backend, rec = open_backend(device=sim.path, read_timeout=0.05)
        assert connected(rec)
        closer = threading.Thread(target=backend.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive()
        assert backend.status == BackendStatus.STOPPED


def test_no_events_after_close(sim, open_backend):
    backend, rec = open_backend(device=sim.path)
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
    backend.close()
    n = len(rec.events)
    assert sim.wait_for(lambda s: s.readings >= 10, 5)  # the device goes on printing
    assert len(rec.events) == n
    backend.close()  # idempotent


# ---------------------------------------------------------------------------- unplug / replug


def test_unplug_and_replug(sim, open_backend):
    backend, rec = open_backend(device=sim.path)
    assert connected(rec)
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
    sim.unplug()
    assert rec.wait(lambda: rec.of("SerialDeviceEvent", connected=False))
    status = backend.device_status()
    assert status["connected"] is False and status["state"] == "disconnected"
    assert repr(sim.path) in status["error"] and "retrying every 0.02 s" in status["error"]
    assert backend.status == BackendStatus.DEGRADED  # the backend retries; the device is gone
    assert rec.wait(lambda: backend.device_status()["open_failures"] >= 2)  # it keeps trying
    assert backend.error.startswith(f"serial device {sim.path!r} not found")
    with pytest.raises(ActionError, match="is not connected"):
        backend.write("hello")
    mark = len(rec.events)
    sim.replug()
    assert rec.wait(lambda: rec.of("SerialDeviceEvent", since=mark, connected=True))
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent", since=mark))  # readings resume
    assert [e.args["connected"] for e in rec.of("SerialDeviceEvent")] == [True, False, True]
    status = backend.device_status()
    assert (status["connects"], status["disconnects"], status["error"]) == (2, 1, None)
    assert (backend.status, backend.error) == (BackendStatus.RUNNING, None)


def test_the_unplug_command_replies_then_the_device_comes_back(sim, open_backend):
    backend, rec = open_backend(device=sim.path)
    assert connected(rec)
    out = backend.write({"cmd": "unplug", "seconds": 0.3}, reply_timeout=5)
    assert out["reply"] == {"ok": True, "cmd": "unplug"}
    assert rec.wait(lambda: rec.of("SerialDeviceEvent", connected=False))
    assert connected(rec, 2)
    assert sim.plugs == 2


def test_a_missing_device_is_retried_until_it_appears(tmp_path, open_backend, caplog):
    caplog.set_level(logging.DEBUG, logger="pihub.backends.serial")
    link = tmp_path / "ttyLATER"
    backend, rec = open_backend(device=str(link))
    assert rec.wait(lambda: rec.of("SerialDeviceEvent", connected=False))
    assert backend.status == BackendStatus.DEGRADED
    assert backend.error == (f"serial device {str(link)!r} not found (check the path, e.g. ls /dev/serial/by-id/, "
                             f"and the cable); retrying every 0.02 s")
    assert rec.wait(lambda: backend.device_status()["open_failures"] >= 3)
    assert len(rec.of("SerialDeviceEvent")) == 1  # one event per change, not per attempt
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(link) in errors[0].getMessage()
    with SerialSensorSimulator(link, interval=0.02):
        assert connected(rec)
        assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
        assert backend.error is None


class StatusRecorder:
    """A status listener (as the hub binds one): records ``(status, error)`` per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[BackendStatus, str | None]] = []
        self._cond = threading.Condition()

    def __call__(self, backend: SerialSensorBackend) -> None:
        with self._cond:
            self.calls.append((backend.status, backend.error))
            self._cond.notify_all()

    def statuses(self) -> list[BackendStatus]:
        with self._cond:
            return [status for status, _ in self.calls]

    def wait(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)


def test_status_is_degraded_while_the_device_is_missing_and_running_while_it_works(tmp_path, open_backend):
    link = tmp_path / "ttyLATE"
    backend, rec = open_backend(device=str(link))
    listener = StatusRecorder()
    assert rec.wait(lambda: rec.of("SerialDeviceEvent", connected=False))
    backend.bind_status_listener(listener)  # what the hub does once open() returned
    assert listener.calls[0][0] == BackendStatus.DEGRADED
    assert repr(str(link)) in listener.calls[0][1] and "not found" in listener.calls[0][1]
    assert rec.wait(lambda: backend.device_status()["open_failures"] >= 3)
    assert len(listener.calls) == 1  # one report per change, not per attempt
    with SerialSensorSimulator(link, interval=0.02) as sim:
        assert listener.wait(lambda: len(listener.calls) >= 2)
        assert listener.calls[1] == (BackendStatus.RUNNING, None)
        assert backend.describe_status() == {"name": "serial", "status": "running", "error": None}
        sim.unplug()
        assert listener.wait(lambda: len(listener.calls) >= 3)
        status, error = listener.calls[2]
        assert status == BackendStatus.DEGRADED and repr(sim.path) in error
        assert backend.describe_status()["status"] == "degraded"
        sim.replug()
        assert listener.wait(lambda: len(listener.calls) >= 4)
    assert listener.statuses()[:4] == [BackendStatus.DEGRADED, BackendStatus.RUNNING,
                                      BackendStatus.DEGRADED, BackendStatus.RUNNING]
    backend.close()
    assert backend.status == BackendStatus.STOPPED
    assert not backend.report_degraded("late report from a reader racing close")
    assert backend.status == BackendStatus.STOPPED


def test_the_hub_publishes_each_degraded_and_running_change(make_hub, tmp_path, serial_registered):
    link = tmp_path / "ttyHUB"
    hub = make_hub(f"""
        serial:
          device: {link}
          reconnect_interval: 0.02
    """, start=False)
    seen: list[tuple[str, str | None]] = []
    cond = threading.Condition()

    def on_event(event: Event) -> None:
        if event.type.name == "BackendStatusEvent" and event.args["backend"] == "serial":
            with cond:
                seen.append((event.args["status"], event.args["error"]))
                cond.notify_all()

    def statuses_end_with(*wanted: str) -> bool:
        with cond:
            return cond.wait_for(lambda: tuple(s for s, _ in seen[-len(wanted):]) == wanted, 5.0)

    hub.dispatcher.add_listener(on_event)
    hub.start()
    assert statuses_end_with("degraded")
    with cond:
        # the reader may fail its first open before or after the hub binds its listener
        assert [s for s, _ in seen] in (["degraded"], ["running", "degraded"])
        assert seen[-1][1].startswith(f"serial device {str(link)!r} not found")
    with SerialSensorSimulator(link, interval=0.02) as sim:
        assert statuses_end_with("degraded", "running")
        assert seen[-1] == ("running", None)
        sim.unplug()
        assert statuses_end_with("degraded", "running", "degraded")
        assert repr(sim.path) in seen[-1][1]
        sim.replug()
        assert statuses_end_with("degraded", "running", "degraded", "running")


def test_a_device_open_elsewhere_is_reported_in_use(sim, open_backend):
    first, rec1 = open_backend(device=sim.path)
    assert connected(rec1)
    second, rec2 = open_backend(device=sim.path)
    assert rec2.wait(lambda: rec2.of("SerialDeviceEvent", connected=False))
    assert second.error.startswith(f"serial device {sim.path!r} is in use by another program")
    assert first.device_status()["connected"] is True


def test_a_file_that_is_not_a_tty_is_reported(tmp_path, open_backend):
    path = tmp_path / "not-a-tty"
    path.write_text("")
    backend, rec = open_backend(device=str(path))
    assert rec.wait(lambda: rec.of("SerialDeviceEvent", connected=False))
    assert backend.error.startswith(f"{str(path)!r} is not a serial device")


@pytest.mark.parametrize(("code", "text"), [
    (errno.ENOENT, "serial device '/dev/ttyX' not found"),
    (errno.ENXIO, "serial device '/dev/ttyX' not found"),
    (errno.EACCES, "permission denied opening serial device '/dev/ttyX' (add the user to the 'dialout' group)"),
    (errno.EBUSY, "serial device '/dev/ttyX' is in use by another program"),
    (errno.EIO, "cannot open serial device '/dev/ttyX': [Errno 5] boom"),
])
def test_open_errors_name_the_device_and_the_fix(code, text):
    assert _open_error("/dev/ttyX", OSError(code, "boom")).startswith(text)


# ---------------------------------------------------------------------------- bad lines


def test_malformed_lines_are_counted_logged_and_the_reader_goes_on(sim, open_backend, caplog):
    caplog.set_level(logging.WARNING, logger="pihub.backends.serial")
    backend, rec = open_backend(device=sim.path)
    assert connected(rec)
    sim.send_line(b"not json at all\n")
    assert backend.write({"cmd": "garbage"}, reply_timeout=5)["reply"] == {"ok": True, "cmd": "garbage"}
    assert rec.wait(lambda: backend.device_status()["malformed"] >= 2)
    seen = backend.device_status()["readings"]
    assert rec.wait(lambda: backend.device_status()["readings"] >= seen + 3)  # still reading
    logged = [r.getMessage() for r in caplog.records if "bad line from serial device" in r.getMessage()]
    assert any("'not json at all'" in m for m in logged)
    assert any("invalid utf-8" in m for m in logged)  # the simulator's garbage line
    assert backend.device_status()["connected"] is True


def test_bad_lines_are_logged_at_most_five_per_minute(sim, open_backend, caplog):
    caplog.set_level(logging.WARNING, logger="pihub.backends.serial")
    clock = ManualClock()
    backend, rec = open_backend(device=sim.path, clock=clock)
    assert connected(rec)
    sim.send_line(b"bad\n" * 20)
    assert rec.wait(lambda: backend.device_status()["malformed"] >= 20)

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "bad line" in r.getMessage()]

    assert len(logged()) == 5
    clock.advance(61.0)
    sim.send_line(b"worse\n")
    assert rec.wait(lambda: backend.device_status()["malformed"] >= 21)
    assert len(logged()) == 6
    assert logged()[-1].endswith("'worse' (15 more bad lines not logged)")


def test_a_bug_in_handling_a_reading_does_not_end_the_reader(sim, open_backend, caplog):
    caplog.set_level(logging.ERROR, logger="pihub.backends.serial")
    backend, rec = open_backend(device=sim.path)
    real_update = backend.sensor.update
    calls = []

    def flaky_update(reading, ts_ns=0):
        calls.append(reading)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_update(reading, ts_ns)

    backend.sensor.update = flaky_update
    assert rec.wait(lambda: rec.of("SerialDeviceEvent", connected=False))
    assert connected(rec, 2)  # it started over
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
    assert any("serial reader failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert backend.status == BackendStatus.RUNNING


def test_an_overlong_line_is_dropped_and_counted(sim, open_backend):
    backend, rec = open_backend(device=sim.path, max_line=64)
    assert connected(rec)
    sim.send_line(b'{"temperature": "' + b"9" * 200 + b'"}\n')
    assert rec.wait(lambda: backend.device_status()["overflows"] == 1)
    seen = backend.device_status()["readings"]
    assert rec.wait(lambda: backend.device_status()["readings"] > seen)


def test_an_int_beyond_the_float_range_does_not_reset_the_connection(sim, open_backend):
    backend, rec = open_backend(device=sim.path, thresholds={"count": 5})
    assert connected(rec)
    big = 10 ** 400
    sim.send_line(b'{"count": ' + str(big).encode() + b"}\n")
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent", data={"count": big}))
    seen = backend.device_status()["readings"]
    assert rec.wait(lambda: backend.device_status()["readings"] >= seen + 3)  # later readings still come
    status = backend.device_status()
    assert status["connected"] is True and status["connects"] == 1 and status["disconnects"] == 0
    assert rec.of("SerialDeviceEvent", connected=False) == []
    assert rec.of("SensorDataAboveThresholdEvent") == []  # no float holds it: it never crosses
    assert backend.status == BackendStatus.RUNNING


def test_line_noise_of_new_keys_is_bounded_in_the_status(sim, open_backend):
    backend, rec = open_backend(device=sim.path)
    assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))  # the simulator's 3 keys are known
    sim.send_line(b"".join(b'{"k%d": 1}\n' % i for i in range(400)))
    assert rec.wait(lambda: backend.device_status()["sensor"]["dropped_keys"] == 400 + 3 - 256)
    sim.set(temperature=-40.0)
    assert rec.wait(lambda: backend.device_status()["sensor"]["last"]["temperature"] == -40.0)  # known keys update
    status = backend.device_status()
    assert len(status["sensor"]["last"]) == 256
    assert status["sensor"]["dropped_keys"] == 400 + 3 - 256 and status["connected"] is True


# ---------------------------------------------------------------------------- write


def test_write_is_not_starved_by_a_reader_blocked_in_a_read(tmp_path, open_backend):
    with SerialSensorSimulator(tmp_path / "ttyQUIET", interval=0) as sim:  # silent: the reader sits in read()
        backend, rec = open_backend(device=sim.path, read_timeout=60.0)
        assert connected(rec)
        result: dict[str, Any] = {}
        writer = threading.Thread(target=lambda: result.update(
            backend.write({"cmd": "set", "temperature": 31.5}, reply_timeout=5)))
        writer.start()
        writer.join(10)
        assert not writer.is_alive()
        assert result["reply"] == {"ok": True, "cmd": "set"}
        assert sim.wait_for(lambda s: {"cmd": "set", "temperature": 31.5} in s.commands, 5)
        backend.write({"cmd": "read"})
        assert rec.wait(lambda: rec.of("SensorDataChangeEvent"))
        assert rec.of("SensorDataChangeEvent")[0].args["data"]["temperature"] == 31.5


def test_a_write_without_reply_within_the_timeout_is_an_error(tmp_path, open_backend):
    backend, rec = open_backend(device="loop://", reply_key="answer")
    assert connected(rec)
    with pytest.raises(ActionError, match=r"wrote 12 bytes to serial device 'loop://', but no reply came "
                                          r"within 0.1 s"):
        backend.write({"cmd": "x"}, reply_timeout=0.1)


@pytest.mark.parametrize(("data", "kwargs", "raw"), [
    ({"cmd": "set", "t": 1}, {}, b'{"cmd":"set","t":1}\n'),
    ([1, "a"], {}, b'[1,"a"]\n'),
    ("led on", {}, b"led on\n"),
    ("led on\n", {}, b"led on\n"),
    ("led on", {"newline": False}, b"led on"),
    ("aGk=", {"binary": True}, b"hi"),
    ("café", {}, "café\n".encode()),
])
def test_command_encoding(data, kwargs, raw):
    assert _encode_command(data, newline=kwargs.get("newline", True), binary=kwargs.get("binary", False)) == raw


@pytest.mark.parametrize(("data", "kwargs", "message"), [
    (5, {}, "data must be a string, a mapping or a list, not int"),
    ({"x": float("nan")}, {}, "data cannot be sent as json: out of range float values are not json compliant"),
    ("%%%", {"binary": True}, "data is not valid base64: '%%%'"),
    ({"a": 1}, {"binary": True}, "data must be base64 text when binary is true, not dict"),
    ("x", {"reply_timeout": -1}, "reply_timeout must be at least 0 seconds, not -1"),
])
def test_bad_write_arguments_are_action_errors(open_backend, data, kwargs, message):
    backend, _ = open_backend(device="loop://")
    with pytest.raises(ActionError, match=re.escape(message)):
        backend.write(data, **kwargs)


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(("config", "message"), [
    ({}, "missing required key 'device'"),
    ({"device": "/dev/x", "format": "xml"}, "format: must be one of 'json', 'keyvalue', not 'xml'"),
    ({"device": "/dev/x", "read_timeout": 0}, "read_timeout: must be in range 0.01..60.0, not 0"),
    ({"device": "/dev/x", "baud_rate": 12}, "baud_rate: must be in range 50..4000000, not 12"),
    ({"device": "/dev/x", "on_connect": ["ok", 5]}, "on_connect[1]: must be a string, a mapping or a list, not int"),
    ({"device": "/dev/x", "thresholds": {"t": [1, 2, 3]}}, "thresholds.t: [low, high] needs exactly 2 numbers, not 3"),
    ({"device": "/dev/x", "max_line": 8}, "max_line: must be in range 16..1048576, not 8"),
])
def test_bad_config_is_refused_naming_the_value(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SerialSensorBackend(config)


def test_platypush_serial_keys_are_accepted_with_warnings():
    raw = {"device": "/dev/ttyUSB0", "baud_rate": 115200, "timeout": 2.0, "enable_polling": True,
           "poll_interval": 0.1, "max_size": 1024}
    values, problems = SerialSensorBackend.config_schema.validate(raw, ("serial",))
    assert problems and all(p.warning for p in problems)
    text = " | ".join(p.message for p in problems)
    assert "'max_size' is renamed to 'max_line'" in text
    assert "'timeout' is deprecated: pihub never waits for a device lock" in text
    assert "'poll_interval' is deprecated" in text and "'enable_polling' is deprecated" in text
    backend = SerialSensorBackend(values)
    assert backend.parser.max_line == 1024 and backend.baud_rate == 115200


def test_an_unknown_url_scheme_is_unavailable_naming_it():
    with pytest.raises(BackendUnavailable, match=r"serial device 'bogus://x': unknown url scheme 'bogus' "
                                                 r"\(allowed: a device path, or alt://"):
        SerialSensorBackend({"device": "bogus://x"}).validate_environment()
    SerialSensorBackend({"device": "socket://localhost:7000"}).validate_environment()


# ---------------------------------------------------------------------------- the hub


def test_a_hook_on_above_threshold_fires_end_to_end(make_hub, sim, serial_registered):
    sim.set(temperature=20.0)
    hub = make_hub(f"""
        mock:
          outputs: {{fan: false}}
        serial:
          device: {sim.path}
          reconnect_interval: 0.05
          thresholds: {{temperature: [24, 26]}}
        event.hook.too_warm:
          if:
            type: SensorDataAboveThresholdEvent
            source: serial
            data: {{temperature: {{$gt: 26}}}}
          then:
            - action: mock.set
              args: {{name: fan, value: "${{data['temperature']}}"}}
    """)
    serial = hub.backends["serial"]
    assert serial.status == BackendStatus.RUNNING
    assert wait_for(lambda: hub.execute("serial.status").output["connected"])
    out = hub.execute("serial.write", {"data": {"cmd": "set", "temperature": 30}, "reply_timeout": 5})
    assert out.ok, out.errors
    assert out.output["reply"] == {"ok": True, "cmd": "set"}
    assert wait_for(lambda: hub.backends["mock"].outputs["fan"] == 30)
    assert hub.execute("serial.status").output["sensor"]["sides"] == {"temperature": "above"}
    assert hub.execute("serial.get_data").output["temperature"] == 30


def test_the_hub_runs_on_while_the_serial_device_is_missing(make_hub, tmp_path, serial_registered):
    hub = make_hub(f"""
        serial:
          device: {tmp_path}/ttyGONE
          reconnect_interval: 0.05
    """)
    backend = hub.backends["serial"]
    assert wait_for(lambda: backend.error is not None)
    status = {b["name"]: b for b in hub.status()["backends"]}["serial"]
    assert status["status"] == "degraded"
    assert f"serial device '{tmp_path}/ttyGONE' not found" in status["error"]
    assert hub.execute("variable.set", {"still": "alive"}).ok
    out = hub.execute("serial.write", {"data": "hello"})
    assert not out.ok and "is not connected" in out.errors[0]


# ---------------------------------------------------------------------------- the program


def test_the_simulator_runs_as_a_program(tmp_path, open_backend):
    link = tmp_path / "ttyCLI"
    proc = subprocess.Popen(
        [sys.executable, str(HW_MOCKS / "serial_sensor.py"), "--link", str(link), "--interval", "0.05",
         "--seed", "3", "--set", "temperature=24.5"], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(link.exists, timeout=10)
        backend, rec = open_backend(device=str(link))
        assert rec.wait(lambda: rec.of("SensorDataChangeEvent"), timeout=10)
        assert rec.of("SensorDataChangeEvent")[0].args["data"]["temperature"] == 24.5
        out = backend.write({"cmd": "bogus"}, reply_timeout=5)
        assert out["reply"] == {"ok": False, "cmd": "bogus",
                                "error": "unknown command 'bogus' (allowed: garbage, interval, read, set, unplug)"}
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
    assert rc == 0, proc.stderr.read()
    assert not link.is_symlink()
