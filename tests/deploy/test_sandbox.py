"""The staged daemon under the unit's restrictions still reaches its device.

PID 1 is not systemd here, so ``systemd-run -p ...`` is not available; the sandbox is built
from the same kernel mechanisms with util-linux (``unshare``, ``mount``, ``chroot``,
``setpriv``), reading the user's groups from the unit rendered for the config:

=========================  ========================================================
unit setting               sandbox
=========================  ========================================================
ProtectSystem=strict,      every mount read-only (the staged venv and /etc/pihub too)
ProtectHome=read-only
StateDirectory=pihub       the staged /var/lib/pihub bound read-write, the only such path
PrivateTmp=yes             a fresh tmpfs on /tmp
DevicePolicy=closed        a tmpfs /dev holding only the nodes "closed" always allows
                           (null, zero, full, random, urandom, tty, ptmx, pts)
User=pihub                 the staged pihub uid (not in this machine's passwd)
SupplementaryGroups=       the rendered unit's groups, by this machine's gids
NoNewPrivileges=yes,       setpriv --no-new-privs, --bounding-set=-all, --inh-caps=-all
CapabilityBoundingSet=
=========================  ========================================================

The device is a serial sensor (hw-mocks/serial_sensor.py) on a pty whose slave is made
``root:dialout 0660``, as udev makes ``/dev/ttyACM0`` on a Pi. With the unit's groups the
daemon reads it; without them (the control) it cannot. Not emulated: DeviceAllow= majors of Pi
hardware (no such devices here; the rendered lines are checked by systemd-analyze in
tests/systemd), RestrictAddressFamilies= and SystemCallFilter= (seccomp).
"""

from __future__ import annotations

import grp
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import REPO, Installed
from pihub_testing import wait_for

from pihub.cli import doctor

VENV = "opt/pihub/.venv"


def _load_render():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pihub_systemd_render_sb", REPO / "systemd" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SANDBOX = textwrap.dedent("""\
    set -eu
    NR=$1 ROOT=$2 UID_=$3 GROUPS_=$4; shift 4
    mount --make-rprivate /
    mount --rbind / "$NR"
    # every mount under the new root read-only (proc and sysfs may refuse: they are
    # read-only for the service anyway, ProtectKernelTunables=)
    for m in $(awk -v nr="$NR" '$5 == nr || index($5, nr "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        mount -o remount,bind,ro "$m" 2>/dev/null || true
    done
    mount -t tmpfs -o mode=1777 tmpfs "$NR/tmp"
    mkdir -p "$NR$ROOT"
    mount --rbind "$ROOT" "$NR$ROOT"
    mount -o remount,bind,ro "$NR$ROOT"
    mount --bind "$ROOT/var/lib/pihub" "$NR$ROOT/var/lib/pihub"
    mount -t tmpfs -o mode=755 tmpfs "$NR/dev"
    for n in null zero full random urandom tty ptmx; do
        touch "$NR/dev/$n"; mount --bind "/dev/$n" "$NR/dev/$n"
    done
    mkdir "$NR/dev/pts"; mount --bind /dev/pts "$NR/dev/pts"
    exec chroot "$NR" setpriv --reuid="$UID_" --regid="$UID_" --groups="$GROUPS_" --no-new-privs \\
        --inh-caps=-all --bounding-set=-all -- "$@"
    """)


def _sandboxed(root: Path, newroot: Path, uid: int, gids: list[int], argv: list[str],
               env: dict[str, str], **kw) -> subprocess.Popen:
    newroot.mkdir()
    groups = ",".join(map(str, gids)) or str(uid)
    return subprocess.Popen(["unshare", "--mount", "sh", "-c", SANDBOX, "sandbox",
                             str(newroot), str(root), str(uid), groups, *argv], env=env, **kw)


def _staged_uid(root: Path) -> int:
    line = next(x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("pihub:"))
    return int(line.split(":")[2])


def _unit_groups(text: str) -> list[str]:
    return [g for line in text.splitlines() if line.startswith("SupplementaryGroups=")
            for g in line.partition("=")[2].split()]


@pytest.fixture
def pty_sensor(tmp_path: Path) -> Iterator[str]:
    """A serial sensor on a pty; its slave node is made root:dialout 0660, as udev would."""
    link = tmp_path / "ttySENSOR"
    sim = subprocess.Popen([sys.executable, str(REPO / "hw-mocks" / "serial_sensor.py"), "--link", str(link),
                            "--interval", "0.05", "--seed", "3"], stderr=subprocess.DEVNULL)
    try:
        assert wait_for(link.exists, timeout=30)
        node = os.path.realpath(link)
        os.chown(node, 0, grp.getgrnam("dialout").gr_gid)
        os.chmod(node, 0o660)
        yield node
    finally:
        sim.terminate()
        sim.wait(timeout=30)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe(root: Path, newroot: Path, uid: int, script: str) -> str:
    proc = _sandboxed(root, newroot, uid, [], ["/bin/sh", "-c", script], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=60)
    return out


def test_the_sandbox_leaves_only_the_state_directory_writable(installed: Installed, tmp_path: Path) -> None:
    """The control for the sandbox itself: the restrictions are real."""
    root = installed.staging.root
    uid = _staged_uid(root)
    script = (f"for p in {root}/var/lib/pihub {root}/{VENV} {root}/etc/pihub /etc /root /var/tmp /tmp; do "
              "if ( : > \"$p/.probe\" ) 2>/dev/null; then echo \"w $p\"; else echo \"r $p\"; fi; done; "
              "ls /dev | tr '\\n' ' '")
    out = _probe(root, tmp_path / "nr", uid, script)
    assert out.splitlines()[:7] == [f"w {root}/var/lib/pihub", f"r {root}/{VENV}", f"r {root}/etc/pihub",
                                    "r /etc", "r /root", "r /var/tmp", "w /tmp"]
    assert out.splitlines()[7].split() == ["full", "null", "ptmx", "pts", "random", "tty", "urandom", "zero"]
    (root / "var/lib/pihub/.probe").unlink()


@pytest.mark.parametrize("with_groups", [True, False], ids=["unit-groups", "control-no-groups"])
def test_the_daemon_reads_its_serial_device_inside_the_sandbox(installed: Installed, tmp_path: Path,
                                                               pty_sensor: str, with_groups: bool) -> None:
    root = installed.staging.root
    uid = _staged_uid(root)
    needs = doctor.needs_for(["serial"])
    unit = _load_render().render_unit(str(root / VENV), needs=needs)
    groups = _unit_groups(unit)
    assert groups == ["dialout"]
    gids = [grp.getgrnam(g).gr_gid for g in groups] if with_groups else []
    port = _port()
    config = root / "etc/pihub/sandbox.yaml"
    config.write_text(f"http: {{port: {port}, disable_websocket: true}}\n"
                      f"serial: {{device: {pty_sensor}, read_timeout: 0.2, reconnect_interval: 0.2}}\n")
    config.chmod(0o644)
    token = "ph_sandbox_" + secrets.token_urlsafe(24)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PIHUB_WORKDIR": str(root / "var/lib/pihub"), "PIHUB_API_TOKEN": token,
           "HOME": str(root / "var/lib/pihub")}
    proc = _sandboxed(root, tmp_path / "nr", uid, gids,
                      [str(root / VENV / "bin/pihub"), "--config", str(config), "run"], env=env,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def status() -> dict | None:
        body = json.dumps({"type": "request", "action": "serial.status"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/execute", data=body,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return json.load(r)["response"]["output"]
        except OSError:
            return None

    try:
        key = "readings" if with_groups else "open_failures"
        wait_for(lambda: proc.poll() is not None or (status() or {}).get(key, 0) > 0, timeout=60, interval=0.05)
        assert proc.poll() is None
        final = status()
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=30)
        config.unlink()
        for p in (root / "var/lib/pihub").iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert proc.returncode == 0, out
    assert final is not None, out
    if with_groups:
        assert final["connected"] and final["last_reading"]["temperature"] is not None, final
    else:
        assert not final["connected"] and final["readings"] == 0, final
        assert "permission denied opening serial device" in final["error"], final


