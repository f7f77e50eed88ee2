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
