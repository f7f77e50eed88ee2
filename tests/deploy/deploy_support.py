"""Staging roots for deploy/install.py, with recording stubs for the system commands.

``deploy/install.py --root`` runs with the system Python (/usr/bin/python3, as on a Pi) and
builds a real venv from the lock; the commands that would change this machine (apt-get,
dpkg-query, useradd, groupadd, usermod, systemctl, raspi-config, journalctl) are recording
stubs first on PATH (tests/deploy/stub_command.py). The installer then runs a second time
with the same config, so tests can compare the two runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.py"
STUBBED = ("apt-get", "dpkg-query", "useradd", "groupadd", "usermod", "systemctl", "raspi-config", "journalctl")
SYSTEM_PYTHON = "/usr/bin/python3"

#: The config of the staged install: every device kind a backend can need.
DEVICES_CONFIG = """\
http: {port: 0, websocket_port: 0}
gpio: {inputs: {button: {pin: 17}}}
adc: {bus: 0, device: 1}
serial: {device: /dev/ttyAMA0}
smartcard: {}
flic: {}
"""


@dataclass
class Run:
    """One installer run: exit status, output and the stubbed commands it called."""

    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]


@dataclass
class Staging:
    root: Path
    bin: Path
    state: Path
    config: Path

    def install(self, *args: str) -> Run:
        """Run the installer into this root with the stubs first on PATH."""
        log = self.state / "calls.jsonl"
        log.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "STUB_LOG": str(log),
               "STUB_STATE": str(self.state)}
        proc = subprocess.run([SYSTEM_PYTHON, str(INSTALL), "--root", str(self.root), *args],
                              capture_output=True, text=True, env=env, timeout=600, check=False)
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return Run(proc.returncode, proc.stdout, proc.stderr, calls)


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """path -> (mode, uid, gid, sha256 of content or link target) for every entry under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                digest = os.readlink(p)
            elif p.is_file():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                digest = ""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return out


def make_staging(base: Path) -> Staging:
    """An empty root readable by other users (the sandbox runs the daemon as nobody)."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    root, stubs, state = base / "root", base / "bin", base / "state"
    for d in (root, stubs, state):
        d.mkdir()
    root.chmod(0o755)
    for name in STUBBED:
        (stubs / name).symlink_to(Path(__file__).with_name("stub_command.py"))
    config = base / "devices.yaml"
    config.write_text(DEVICES_CONFIG)
    return Staging(root, stubs, state, config)


@dataclass
class Installed:
    staging: Staging
    first: Run
    second: Run
    before_second: dict[str, tuple[int, int, int, str]]
    after_second: dict[str, tuple[int, int, int, str]]
