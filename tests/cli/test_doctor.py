"""``pihub doctor`` on this machine: no Pi devices (each device check fails with its fix), a
config that needs none (exit 0), ``--json``, ``--needs``, and the checks that can be provoked
here (a busy port, a user outside a group, an invalid config)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pihub.cli import doctor

DEVICES = """\
http: {port: 0, websocket_port: 0}
gpio: {inputs: {button: {pin: 17}}}
adc: {bus: 0, device: 1}
serial: {device: /dev/ttyAMA7}
smartcard: {}
flic: {port: %d}
workdir: %s
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pihub", *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
def devices_config(tmp_path: Path) -> Path:
    p = tmp_path / "devices.yaml"
    p.write_text(DEVICES % (_closed_port(), tmp_path / "data"))
    return p


@pytest.fixture
def plain_config(tmp_path: Path) -> Path:
    p = tmp_path / "plain.yaml"
    p.write_text(f"workdir: {tmp_path / 'data'}\nhttp: {{port: 0, websocket_port: 0}}\n"
                 "mock: {}\ngpio: {pin_factory: mock, inputs: {b: {pin: 17}}}\nadc: {driver: mock}\n")
    return p


def test_on_this_machine_every_device_check_fails_with_its_fix(devices_config: Path) -> None:
    proc = _doctor("--config", str(devices_config), "doctor", "--json", "--with", "camera,audio")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    fixes = {"gpio": "gpio.pin_factory: mock", "spi": "raspi-config nonint do_spi 0",
             "serial": "raspi-config nonint do_serial_hw 0", "smartcard": "systemctl enable --now pcscd.socket",
             "flic": "flicd", "camera": "apt install python3-picamera2", "audio": "modprobe snd-seq"}
    for name, fix in fixes.items():
        assert checks[name]["status"] == "fail", checks[name]
        assert fix in checks[name]["fix"], checks[name]
    assert "/dev/spidev0.1" in checks["spi"]["detail"] and "/dev/ttyAMA7" in checks["serial"]["detail"]
    assert checks["config"]["status"] == checks["native"]["status"] == "ok"


def test_the_text_report_prints_each_problem_with_its_fix(devices_config: Path) -> None:
    proc = _doctor("--config", str(devices_config), "doctor")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("FAIL  spi"))
    assert lines[fail + 1].strip().startswith("fix: sudo raspi-config nonint do_spi 0")
    assert lines[-1] == "5 problems"


def test_a_config_that_needs_no_device_passes(plain_config: Path) -> None:
    proc = _doctor("--config", str(plain_config), "doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert proc.stdout.splitlines()[-1] == "no problems"
    assert "needs no device" in proc.stdout


def test_an_invalid_config_is_a_failure_that_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("http: {port: 99999}\n")
    proc = _doctor("--config", str(bad), "doctor", "--json")
    assert proc.returncode == 1
    config = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "config")
    assert config["status"] == "fail" and "bad.yaml:1" in config["detail"] and "port" in config["detail"]
    assert f"pihub check-config {bad}" in config["fix"]


def test_a_busy_port_is_reported_with_its_number(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"workdir: {tmp_path}\nhttp: {{port: {port}, disable_websocket: true}}\n")
        checks = {c.name: c for c in doctor.run_checks(str(cfg))}
    assert checks["ports"].status == "fail"
    assert f"HTTP port {port} on 127.0.0.1" in checks["ports"].detail
    assert f"sport = :{port}" in checks["ports"].fix


def test_a_user_outside_the_device_groups_is_told_the_usermod_line(devices_config: Path) -> None:
    checks = {c.name: c for c in doctor.run_checks(str(devices_config), user="nobody")}
    groups = checks["groups"]
    assert groups.status == "fail"
    assert "nobody is not in" in groups.detail and "dialout" in groups.detail
    assert "sudo usermod -aG" in groups.fix and groups.fix.endswith("nobody (then restart pihub or log in again)")


def test_a_missing_user_is_reported(devices_config: Path) -> None:
    checks = {c.name: c for c in doctor.run_checks(str(devices_config), user="no-such-user-pihub")}
    assert checks["groups"].status == "fail" and "'no-such-user-pihub' does not exist" in checks["groups"].detail


def test_too_little_disk_is_a_failure(plain_config: Path) -> None:
    checks = {c.name: c for c in doctor.run_checks(str(plain_config), min_free_mb=2 ** 40)}
    assert checks["disk"].status == "fail" and "MiB free" in checks["disk"].detail


def test_needs_lists_what_the_installer_acts_on(devices_config: Path) -> None:
    proc = _doctor("--config", str(devices_config), "doctor", "--needs", "--with", "camera")
    assert proc.returncode == 0, proc.stderr
    needs = json.loads(proc.stdout)
    assert needs["kinds"] == ["gpio", "spi", "serial", "camera", "smartcard", "flic"]
    assert needs["apt"] == ["python3-lgpio", "python3-picamera2", "pcscd", "python3-pyscard"]
    assert needs["groups"] == ["gpio", "spi", "dialout", "video"]
    assert needs["raspi"] == {"spi": [["do_spi", "0"]], "serial": [["do_serial_hw", "0"], ["do_serial_cons", "1"]]}
    assert needs["address_families"] == []
    assert needs["backends"] == {"gpio": ["gpio"], "spi": ["adc"], "serial": ["serial"],
                                 "smartcard": ["smartcard"], "flic": ["flic"]}


@pytest.mark.parametrize("text", [
    "gpio: {pin_factory: mock}\n",
    "adc: {driver: mock}\n",
    "serial: {device: 'socket://localhost:7000'}\n",
    "serial: {device: run/ttySENSOR}\n",
    "gpio: {enabled: false, inputs: {b: {pin: 17}}}\n",
])
def test_mock_drivers_network_ports_and_disabled_backends_need_no_device(tmp_path: Path, text: str) -> None:
    from pihub.cli.common import load_config

    p = tmp_path / "c.yaml"
    p.write_text(text)
    assert doctor.kinds_for(load_config(str(p))) == {}


def test_an_unknown_device_kind_is_refused_with_the_allowed_ones(plain_config: Path) -> None:
    proc = _doctor("--config", str(plain_config), "doctor", "--with", "gpio,bluetooth")
    assert proc.returncode == 1
    assert "--with bluetooth: unknown device kind; allowed: gpio, spi, i2c" in proc.stderr
