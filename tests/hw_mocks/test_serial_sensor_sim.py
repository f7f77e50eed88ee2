"""The serial sensor simulator itself (hw-mocks/serial_sensor.py), seen from a plain pyserial host."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

HW_MOCKS = Path(__file__).resolve().parents[2] / "hw-mocks"


def _load_simulator() -> Any:
    spec = importlib.util.spec_from_file_location("pihub_hw_mocks_serial_sensor", HW_MOCKS / "serial_sensor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sim_module = _load_simulator()
SerialSensorSimulator = sim_module.SerialSensorSimulator


class Host:
    """A pyserial host on the simulator's pty: sends commands, reads lines."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 9600, timeout=5)
        self.port.reset_input_buffer()

    def line(self) -> bytes:
        raw = self.port.readline()
        assert raw.endswith(b"\n"), f"no complete line within 5 s: {raw!r}"
        return raw

    def obj(self) -> dict[str, Any]:
        return json.loads(self.line())

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send a command; return its reply, skipping readings printed meanwhile."""
        self.port.write(json.dumps(cmd).encode() + b"\n")
        for _ in range(100):
            obj = self.obj()
            if "ok" in obj:
                return obj
        raise AssertionError("no reply among 100 lines")


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[tuple[Any, Host]]:
    """A simulator that prints only when asked (interval 0), and a host on it."""
    with SerialSensorSimulator(tmp_path / "ttySIM", interval=0, seed=5) as sim:
        host = Host(sim.path)
        yield sim, host
        host.port.close()


def test_the_link_points_at_a_real_tty(tmp_path):
    with SerialSensorSimulator(tmp_path / "ttySIM", interval=0) as sim:
        assert sim.path == str(tmp_path / "ttySIM")
        assert os.path.realpath(sim.path) == sim.device and sim.device.startswith("/dev/pts/")
        with serial.Serial(sim.path, 115200, timeout=1) as port:
            assert os.isatty(port.fileno())
    assert not (tmp_path / "ttySIM").is_symlink()  # stop() removes the link


def test_readings_drift_within_bounds_and_repeat_with_the_seed():
    a = SerialSensorSimulator(seed=11)
    b = SerialSensorSimulator(seed=11)
    c = SerialSensorSimulator(seed=12)
    seq_a = [a.next_reading() for _ in range(500)]
    assert seq_a == [b.next_reading() for _ in range(500)]
    assert seq_a != [c.next_reading() for _ in range(500)]
    assert len({r["temperature"] for r in seq_a}) > 50  # it drifts
    for r in seq_a:
        assert list(r) == ["temperature", "humidity", "light"]
        assert 10.0 <= r["temperature"] <= 40.0 and 0.0 <= r["humidity"] <= 100.0
        assert isinstance(r["light"], int) and 0 <= r["light"] <= 1023


def test_pinned_values_do_not_drift():
    sim = SerialSensorSimulator(seed=1, pinned={"temperature": 30.5})
    assert {sim.next_reading()["temperature"] for _ in range(50)} == {30.5}


def test_read_and_set_commands(quiet):
    sim, host = quiet
    assert host.command({"cmd": "read"}) == {"ok": True, "cmd": "read"}
    assert set(host.obj()) == {"temperature", "humidity", "light"}
    assert host.command({"cmd": "set", "temperature": 30, "humidity": 55.5}) == {"ok": True, "cmd": "set"}
    host.command({"cmd": "read"})
    reading = host.obj()
    assert reading["temperature"] == 30 and reading["humidity"] == 55.5
    host.command({"cmd": "set", "temperature": None})  # drift again
    host.command({"cmd": "read"})
    assert host.obj()["temperature"] != 30
    assert sim.commands[1] == {"cmd": "set", "temperature": 30, "humidity": 55.5}


def test_the_interval_command_starts_and_stops_readings(quiet):
    sim, host = quiet
    assert host.command({"cmd": "interval", "value": 0.01}) == {"ok": True, "cmd": "interval"}
    assert set(host.obj()) == {"temperature", "humidity", "light"}
    assert sim.wait_for(lambda s: s.readings >= 3, 5)
    assert host.command({"cmd": "interval", "value": -1})["ok"] is False


def test_the_garbage_command_prints_one_malformed_line(quiet):
    _, host = quiet
    assert host.command({"cmd": "garbage"}) == {"ok": True, "cmd": "garbage"}
    assert host.line() == sim_module.GARBAGE
    with pytest.raises(ValueError):
        json.loads(sim_module.GARBAGE)


@pytest.mark.parametrize(("line", "reply"), [
    (b'{"cmd": "dance"}', {"ok": False, "cmd": "dance",
                           "error": "unknown command 'dance' (allowed: garbage, interval, read, set, unplug)"}),
    (b'{"cmd": "set", "temperature": "hot"}', {"ok": False, "cmd": "set",
                                               "error": "temperature must be a number or null, not 'hot'"}),
    (b'{"cmd": "unplug", "seconds": 0}', {"ok": False, "cmd": "unplug",
                                          "error": "seconds must be a number > 0, not 0"}),
    (b'[1, 2]', {"ok": False, "error": "expected an object with a 'cmd' string"}),
])
def test_bad_commands_are_answered_with_an_error(quiet, line, reply):
    _, host = quiet
    host.port.write(line + b"\n")
    assert host.obj() == reply


def test_invalid_json_commands_are_answered_with_an_error(quiet):
    _, host = quiet
    host.port.write(b"{nope\n")
    reply = host.obj()
    assert reply["ok"] is False and reply["error"].startswith("invalid json")


def test_unplug_closes_the_pty_removes_the_link_and_comes_back(quiet):
    sim, host = quiet
    assert host.command({"cmd": "unplug", "seconds": 30}) == {"ok": True, "cmd": "unplug"}
    with pytest.raises(serial.SerialException):
        host.port.read(1)  # end of file: the device is gone
    assert sim.wait_for(lambda s: not s.plugged, 5)
    assert not os.path.lexists(sim.path)
    sim.replug()
    assert sim.wait_for(lambda s: s.plugged, 5)
    assert sim.plugs == 2
    again = Host(sim.path)
    assert again.command({"cmd": "read"}) == {"ok": True, "cmd": "read"}
    again.port.close()


def test_keyvalue_format(tmp_path):
    with SerialSensorSimulator(tmp_path / "ttyKV", interval=0, fmt="keyvalue", pinned={"temperature": 20}) as sim:
        host = Host(sim.path)
        host.port.write(b'{"cmd": "read"}\n')
        assert host.line() == b"ok=true cmd=read\n"
        assert host.line().startswith(b"temperature=20 humidity=")
        host.port.close()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fmt": "xml"}, "format must be 'json' or 'keyvalue', not 'xml'"),
    ({"interval": -1}, "interval must be a number of seconds >= 0, not -1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SerialSensorSimulator(**kwargs)


def test_methods_need_a_started_simulator():
    with pytest.raises(RuntimeError, match="simulator is not started"):
        SerialSensorSimulator().read_now()
