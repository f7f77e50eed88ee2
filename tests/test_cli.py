"""The pihub command, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """
event.hook.door:
  if: {type: GPIOEvent, pin: 17, value: 1}
  then:
    - action: logger.info
      args: {msg: "door ${pin}"}
    - action: mock.set
      args: {name: bell, value: true}
event.hook.hot:
  if:
    type: SensorDataChangeEvent
    data: {temperature: {$gte: 25}}
  then:
    - action: variable.set
      args: {hot: "${data['temperature']}"}
mock: {}
"""


def pihub(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "pihub", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=timeout)


def test_check_config_ok(write_config):
    r = pihub("check-config", str(write_config(GOOD)))
    assert r.returncode == 0, r.stderr
    assert "ok (2 hooks, 0 procedures" in r.stdout


def test_check_config_invalid_lists_every_error_located(write_config):
    path = write_config("""\
        event.hook.door:
          if: {type: GPIOEvent, pinn: 17}
          then:
            - action: logger.infoo
              args: {msg: x}
        mokc: {}
    """)
    r = pihub("check-config", str(path))
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(str(path))]
    assert any("mokc" in ln and "did you mean 'mock'" in ln for ln in lines), r.stderr
    assert any("then[0].action: 'infoo' is not an action of plugin 'logger'" in ln for ln in lines), r.stderr


def test_check_config_unreadable(tmp_path):
    r = pihub("check-config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2
    assert "missing.yaml" in r.stderr


def test_check_config_never_echoes_secrets(write_config):
    path = write_config("""
        shell:
          enabled: !env PIHUB_TEST_SECRET
    """)
    r = pihub("check-config", str(path), env={"PIHUB_TEST_SECRET": "hunter2-very-secret"})
    assert "hunter2-very-secret" not in r.stdout + r.stderr


def test_exec_runs_one_action_and_prints_the_response(write_config):
    path = write_config(GOOD)
    r = pihub("--config", str(path), "exec", "variable.set", "colour=blue", "n:=3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"output": {"colour": "blue", "n": 3}, "errors": []}
    r = pihub("exec", "--config", str(path), "variable.get", "name=n")
    assert json.loads(r.stdout)["output"] == {"n": 3}


def test_exec_reports_action_errors_with_exit_1(write_config):
    r = pihub("--config", str(write_config(GOOD)), "exec", "varaible.get")
    assert r.returncode == 1
    assert "did you mean 'variable'" in json.loads(r.stdout)["errors"][0]


def test_exec_bad_json_argument(write_config):
    r = pihub("--config", str(write_config(GOOD)), "exec", "variable.set", "n:={oops")
    assert r.returncode == 1 and "not valid JSON" in r.stderr


def test_replay_traces_fired_and_not_fired_hooks(write_config, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([
        json.dumps({"type": "event", "args": {"type": "GPIOEvent", "pin": 17, "value": 1}}),
        json.dumps({"type": "GPIOEvent", "pin": 4, "value": 1}),
        json.dumps({"type": "platypush.message.event.sensor.SensorDataChangeEvent",
                    "data": {"temperature": 26}}),
        "not json",
    ]) + "\n")
    r = pihub("replay", "--config", str(write_config(GOOD)), str(events))
    assert r.returncode == 1  # one bad line
    out = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert out[0]["fired"] == ["door"]
    assert "hot" in out[0]["not_fired"]
    acts = out[0]["actions"]
    assert acts[0]["action"] == "logger.info" and acts[0]["args"] == {"msg": "door 17"}
    assert acts[1]["action"] == "mock.set" and acts[1]["skipped"]  # hardware: not run
    assert out[1]["fired"] == [] and out[1]["not_fired"]["door"] == "pin: 4 != 17"
    assert out[2]["fired"] == ["hot"]
    assert out[2]["actions"][0]["output"] == {"hot": 26}
    # variable.set published a VariableChangedEvent: replayed right after its cause
    assert out[3]["caused_by"] == 3
    assert out[3]["event"]["args"] == {"type": "pihub.events.VariableChangedEvent", "name": "hot", "value": 26}
    assert out[4] == {"line": 4, "error": out[4]["error"]} and "JSON" in out[4]["error"]


def test_replay_reports_a_line_not_utf8_or_too_long_on_that_line_and_reads_on(write_config, tmp_path):
    from pihub.replay import MAX_LINE_BYTES

    good = json.dumps({"type": "GPIOEvent", "pin": 4, "value": 1}).encode()
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([good, b'{"type":"GPIOEvent","pin":"\xff"}',
                                   b'{"type":"GPIOEvent","pin":"' + b"a" * MAX_LINE_BYTES + b'"}', good]) + b"\n")
    r = pihub("replay", "--config", str(write_config(GOOD)), str(events))
    assert r.returncode == 1, r.stderr
    out = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert out[0]["event"]["args"]["pin"] == 4
    assert out[1]["line"] == 2 and "not UTF-8" in out[1]["error"]
    assert out[2]["line"] == 3 and str(MAX_LINE_BYTES) in out[2]["error"]
    assert out[3]["event"]["args"]["pin"] == 4
    assert len(out) == 4


def _notify_socket(tmp_path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify.sock"))
    s.settimeout(30)
    return s


def test_run_notifies_systemd_and_stops_cleanly_on_sigterm(write_config, tmp_path):
    sock = _notify_socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen([sys.executable, "-m", "pihub", "--config", str(write_config(GOOD)), "run"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msgs = []
        while not any("READY=1" in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        while not any("WATCHDOG=1" in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0, err
    assert "ready in" in err and "pihub stopped" in err
    ready = next(m for m in msgs if "READY=1" in m)
    assert "STATUS=running" in ready


def test_run_with_a_bad_config_exits_1(write_config):
    r = pihub("--config", str(write_config("bogus_section: {}\n")), "run")
    assert r.returncode == 1
    assert "bogus_section" in r.stderr


@pytest.mark.parametrize("item,expected", [
    ("a=b", {"a": "b"}), ("a=1", {"a": "1"}), ("a:=1", {"a": 1}), ("a:=[1,2]", {"a": [1, 2]}),
    ("url=http://x/?q=1", {"url": "http://x/?q=1"}), ("a=", {"a": ""}),
])
def test_exec_argument_syntax(item, expected):
    from pihub.cli import parse_exec_args

    assert parse_exec_args([item]) == expected


@pytest.mark.parametrize("item", ["novalue", "=x", ":=1"])
def test_exec_argument_errors(item):
    from pihub.cli import parse_exec_args

    with pytest.raises(ValueError):
        parse_exec_args([item])


# -- check-config on Platypush configs (issue 7) ------------------------------------------------

MCP3008_PLUGIN = """\
gpio.sensor.mcp3008:
  spi_port: 0
  spi_device: 0
  Vdd: 3.3
  channels:
    0: {name: light}
    1: {name: temperature}
"""
MCP3008_BACKEND = """\
backend.sensor.mcp3008:
  poll_seconds: 0.5
  thresholds: {light: 2.5}
  enabled_sensors: [light, temperature]
"""
MCP3008_HOOK = """\
event.hook.dark:
  if: {type: SensorDataBelowThresholdEvent}
  then: {action: variable.set, args: {dark: true}}
"""


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.endswith("(warning)")]


def test_check_config_mcp3008_plugin_and_backend_in_one_file(write_config):
    r = pihub("check-config", str(write_config(MCP3008_PLUGIN + MCP3008_BACKEND + MCP3008_HOOK)))
    assert r.returncode == 0, r.stderr
    assert "defined twice" not in r.stderr
    warnings = _warnings(r.stderr)
    for old in ("gpio.sensor.mcp3008", "backend.sensor.mcp3008"):
        assert any(f"platypush section {old!r} is read as 'adc'" in w for w in warnings), r.stderr


def test_check_config_mcp3008_split_by_include(write_config, tmp_path):
    (tmp_path / "sensors.yaml").write_text(MCP3008_BACKEND, encoding="utf-8")
    r = pihub("check-config", str(write_config("include: sensors.yaml\n" + MCP3008_PLUGIN + MCP3008_HOOK)))
    assert r.returncode == 0, r.stderr
    assert "sensors.yaml" in r.stdout and "defined twice" not in r.stderr
    assert any("sensors.yaml:1:1: platypush section 'backend.sensor.mcp3008' is read as 'adc'" in w
               for w in _warnings(r.stderr)), r.stderr


def test_check_config_conflicting_mcp3008_pair_is_a_located_error(write_config, tmp_path):
    (tmp_path / "sensors.yaml").write_text("backend.sensor.mcp3008:\n  Vdd: 5.0\n", encoding="utf-8")
    path = write_config("include: sensors.yaml\n" + MCP3008_PLUGIN)
    r = pihub("check-config", str(path))
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if not ln.endswith("(warning)") and ln.startswith("/")]
    # write_config adds two lines (workdir, http) above the text
    assert errors == [f"{path}:7:3: adc.Vdd: 'Vdd' is 3.3 here but 5.0 in 'backend.sensor.mcp3008' at "
                      f"{tmp_path / 'sensors.yaml'}:2:3; both sections are read as 'adc', so set it in one "
                      f"of them"], r.stderr


def test_check_config_backend_sensor_serial_is_the_serial_section(write_config):
    r = pihub("check-config", str(write_config("""\
        serial: {device: "loop://", baud_rate: 9600}
        backend.sensor.serial:
          thresholds: {temperature: 25}
          poll_seconds: 1
        event.hook.hot:
          if: {type: SensorDataAboveThresholdEvent, source: serial}
          then: {action: serial.write, args: {data: "fan on"}}
    """)))
    assert r.returncode == 0, r.stderr
    assert any("platypush section 'backend.sensor.serial' is read as 'serial'" in w
               for w in _warnings(r.stderr)), r.stderr


def test_check_config_every_documented_backend_http_key(write_config, tmp_path):
    (tmp_path / "ca.d").mkdir()
    r = pihub("check-config", str(write_config(f"""\
        backend.http:
          port: 8008
          websocket_port: 8009
          bind_address: 127.0.0.1
          disable_websocket: false
          resource_dirs: {{pics: {tmp_path}}}
          ssl_cert: /etc/pihub/cert.pem
          ssl_key: /etc/pihub/key.pem
          ssl_cafile: /etc/pihub/ca.pem
          ssl_capath: {tmp_path / 'ca.d'}
          run_externally: true
          uwsgi_args: ['--plugin', 'python', '--http-socket', ':8008', '--master', '--processes', '4']
          maps: {{api_key: abc}}
          dashboard: {{widgets: []}}
          redis_queue: platypush/http
          poll_seconds: 1
          secret_key_file: ~/.local/share/platypush/flask.secret.key
          use_werkzeug_server: false
          zeroconf_enabled: true
          bind_socket: /tmp/platypush.sock
          num_workers: 4
    """)))
    assert r.returncode == 0, r.stderr
    warnings = _warnings(r.stderr)
    assert not any("unknown key" in ln for ln in r.stderr.splitlines()), r.stderr
    assert any("'uwsgi_args' is deprecated: pihub does not use uWSGI" in w for w in warnings), r.stderr
    for key in ("maps", "dashboard", "redis_queue", "poll_seconds", "secret_key_file", "use_werkzeug_server",
                "zeroconf_enabled", "bind_socket"):
        assert any(f"http: {key!r} is deprecated" in w for w in warnings), (key, r.stderr)
    assert not any("'ssl_capath' is" in w or "'run_externally' is" in w for w in warnings), r.stderr
