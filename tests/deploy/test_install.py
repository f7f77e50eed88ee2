"""deploy/install.py: the exact system calls, the files it leaves, re-runs, --uninstall, and
the staged daemon answering /livez (see conftest.py for the staging install)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from deploy_support import REPO, SYSTEM_PYTHON, Installed, make_staging
from pihub_testing import free_port, wait_for

from pihub.cli import doctor

VENV = "opt/pihub/.venv"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_py = _load(REPO / "deploy" / "install.py", "pihub_deploy_install")
render = _load(REPO / "systemd" / "render.py", "pihub_systemd_render_deploy")


def _ids(root: Path, name: str) -> int:
    line = next(x for x in (root / "etc" / "passwd").read_text().splitlines() if x.startswith(name + ":"))
    return int(line.split(":")[2])


def test_first_run_makes_exactly_these_system_calls(installed: Installed) -> None:
    root = str(installed.staging.root)
    fmt = "-f=${Package} ${db:Status-Abbrev}\\n"
    assert installed.first.calls == [
        ["dpkg-query", "-W", fmt, "python3-venv", "python3-dev", "gcc", "libffi-dev"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "python3-venv", "python3-dev", "gcc", "libffi-dev"],
        ["useradd", "--root", root, "--system", "--user-group", "--home-dir", "/var/lib/pihub",
         "--no-create-home", "--shell", "/usr/sbin/nologin", "pihub"],
        ["dpkg-query", "-W", fmt, "python3-lgpio", "pcscd", "python3-pyscard"],
        ["apt-get", "install", "-y", "--no-install-recommends", "python3-lgpio", "pcscd", "python3-pyscard"],
        ["groupadd", "--root", root, "--system", "gpio"],
        ["groupadd", "--root", root, "--system", "spi"],
        ["groupadd", "--root", root, "--system", "dialout"],
        ["usermod", "--root", root, "-aG", "gpio,spi,dialout", "pihub"],
        ["raspi-config", "nonint", "get_spi"],
        ["raspi-config", "nonint", "do_spi", "0"],
        ["systemctl", f"--root={root}", "enable", "pihub.service"],
    ]
    assert "reboot to apply the raspi-config changes" in installed.first.stdout


def test_the_files_it_creates_with_their_modes_and_owners(installed: Installed) -> None:
    root = installed.staging.root
    uid = _ids(root, "pihub")

    def meta(rel: str) -> tuple[int, int, int]:
        st = (root / rel).lstat()
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    assert meta("etc/pihub") == (0o755, 0, 0)
    assert meta("etc/pihub/config.yaml") == (0o640, 0, uid)  # the service reads it through its group
    assert meta("var/lib/pihub") == (0o700, uid, uid)
    assert meta("etc/systemd/system/pihub.service")[0] == 0o644
    assert (root / "etc/pihub/config.yaml").read_text() == installed.staging.config.read_text()
    link = root / "etc/systemd/system/multi-user.target.wants/pihub.service"
    assert os.readlink(link) == "/etc/systemd/system/pihub.service"
    needs = doctor.needs_for(["gpio", "spi", "serial", "smartcard", "flic"])
    assert (root / "etc/systemd/system/pihub.service").read_text() == render.render_unit(
        str(root / VENV), needs=needs)
    groups = {line.split(":")[0]: line.split(":")[3] for line in (root / "etc/group").read_text().splitlines()}
    assert {g for g, members in groups.items() if "pihub" in members.split(",")} == {"gpio", "spi", "dialout"}


def test_the_venv_sees_apt_packages_and_holds_no_build_tools(installed: Installed) -> None:
    venv = installed.staging.root / VENV
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    assert (venv / ".pihub-install").is_file()
    site = next((venv / "lib").glob("python3*/site-packages"))
    names = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert {"pihub", "gpiozero", "cffi", "yaml"} <= names
    assert not {"pip", "setuptools"} & names
    # the lock's gpiozero 2.x shadows whatever the system has, inside the venv
    out = subprocess.run([str(venv / "bin/python"), "-c", "import gpiozero, importlib.metadata as m; "
                          "print(m.version('gpiozero'), gpiozero.__file__)"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out[0].startswith("2.") and out[1].startswith(str(venv))


def test_the_venv_holds_the_runtime_lock_and_pihub_only(installed: Installed) -> None:
    """Never the test extra (schemathesis -> jsonschema-rs has no armv7l wheel: Rust on a Pi).
    The `pi` extra is covered: gpiozero and spidev from the lock, lgpio from apt."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    site = next((installed.staging.root / VENV / "lib").glob("python3*/site-packages"))
    dists = {norm(d.metadata["Name"]) for d in importlib.metadata.distributions(path=[str(site)])}
    lock = {norm(line.split("==")[0]) for line in (REPO / "requirements" / "runtime.txt").read_text().splitlines()
            if re.match(r"[A-Za-z]", line)}
    assert {"gpiozero", "spidev", "pyserial"} <= lock
    assert dists == (lock - {"setuptools"}) | {"pihub"}  # setuptools built pihub, then was removed
    assert "python3-lgpio" in doctor.needs_for(["gpio"])["apt"]


def test_a_second_run_changes_nothing(installed: Installed) -> None:
    fmt = "-f=${Package} ${db:Status-Abbrev}\\n"
    assert installed.second.calls == [
        ["dpkg-query", "-W", fmt, "python3-venv", "python3-dev", "gcc", "libffi-dev"],
        ["dpkg-query", "-W", fmt, "python3-lgpio", "pcscd", "python3-pyscard"],
        ["raspi-config", "nonint", "get_spi"],
    ]
    assert installed.after_second == installed.before_second
    assert "(nothing changed)" in installed.second.stdout
    # the second run's --config named another file: the existing config is kept and it says so
    assert re.search(r"kept /etc/pihub/config.yaml.*never overwritten \(--config .*other.yaml not used\)",
                     installed.second.stdout)


def test_it_prints_the_url_the_setup_code_hint_and_the_log_command(installed: Installed) -> None:
    out = installed.first.stdout
    assert "URL:     http://127.0.0.1:0" in out
    assert "journalctl -u pihub | grep 'setup code'" in out
    assert "journalctl -u pihub -f" in out


def test_the_staged_venv_runs_the_daemon(installed: Installed, tmp_path: Path) -> None:
    """Started from the staged venv (as the unit would), the daemon answers /livez."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"http: {{port: {port}, disable_websocket: true}}\nmock: {{}}\n")
    pihub = installed.staging.root / VENV / "bin" / "pihub"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIHUB_WORKDIR"] = str(tmp_path / "data")
    proc = subprocess.Popen([str(pihub), "--config", str(config), "run"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def live() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=1) as r:
                    return json.load(r) == {"status": "ok"}
            except OSError:
                return proc.poll() is not None
        assert wait_for(live, timeout=60, interval=0.05)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert re.search(r"setup code [0-9a-f]{8}(-[0-9a-f]{8}){3}", out)  # what the installer shows


def test_uninstall_keeps_config_and_data_and_says_so(tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "u")
    root = staging.root
    for rel, text in (("opt/pihub/.venv/bin/python", ""), ("etc/pihub/config.yaml", "http: {}\n"),
                      ("var/lib/pihub/pihub.db", "data"), ("etc/systemd/system/pihub.service", "[Unit]\n")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    link = root / "etc/systemd/system/multi-user.target.wants/pihub.service"
    link.parent.mkdir(parents=True)
    link.symlink_to("/etc/systemd/system/pihub.service")
    first = staging.install("--uninstall")
    assert first.returncode == 0, first.stderr
    assert first.calls == [["systemctl", f"--root={root}", "disable", "pihub.service"]]
    assert not (root / "opt/pihub").exists() and not (root / "etc/systemd/system/pihub.service").exists()
    assert not link.is_symlink()
    assert (root / "etc/pihub/config.yaml").read_text() == "http: {}\n"
    assert (root / "var/lib/pihub/pihub.db").read_text() == "data"
    assert "kept, on purpose: /etc/pihub (your config), /var/lib/pihub (your data" in first.stdout
    again = staging.install("--uninstall")
    assert again.returncode == 0 and again.calls == []
    assert "nothing removed" in again.stdout


@pytest.mark.parametrize("args, status, fragment", [
    (["--config", "/nonexistent/pihub.yaml"], 2, "--config /nonexistent/pihub.yaml: no such file"),
    (["--with", "gpio", "--enable-bluetooth"], 2, "unrecognized arguments: --enable-bluetooth"),
])
def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path, args: list[str], status: int,
                                                        fragment: str) -> None:
    staging = make_staging(tmp_path / "b")
    run = staging.install(*args)
    assert (run.returncode, run.calls) == (status, [])
    assert fragment in run.stderr
    assert list(staging.root.iterdir()) == []


def test_installing_as_a_normal_user_onto_the_real_root_is_refused() -> None:
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PYTHON,
                           str(REPO / "deploy/install.py")], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1
    assert "run it as root: sudo deploy/install.sh" in proc.stderr


def test_the_installer_and_doctor_agree_on_the_base_packages() -> None:
    assert install_py.BASE_APT == doctor.BASE_APT


def test_the_config_template_and_every_example_in_it_are_valid(tmp_path: Path) -> None:
    """The installed config is valid as shipped, and so is each commented-out example."""
    template = (REPO / "deploy" / "config.yaml").read_text()
    example = re.compile(r"# ( *(?:[A-Za-z0-9_.]+:(?: |$)|- ).*)")
    uncommented = "\n".join((m[1] if (m := example.fullmatch(line)) else line)
                            for line in template.splitlines())
    for name, text in (("shipped.yaml", template), ("examples.yaml", uncommented)):
        path = tmp_path / name
        path.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "pihub", "check-config", str(path)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
    assert {"gpio", "adc", "serial", "smartcard", "flic"} <= {
        line.split(":")[0] for line in uncommented.splitlines() if re.match(r"[a-z]+:", line)}


def test_the_first_boot_files_parse() -> None:
    """Syntax only: the first-boot route needs a real SD card (tests/hil/README.md)."""
    import yaml

    for script in ("firstboot.sh", "firstrun-snippet.sh", "install.sh"):
        proc = subprocess.run(["sh", "-n", str(REPO / "deploy" / script)], capture_output=True, text=True,
                              timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load((REPO / "deploy" / "user-data").read_text())
    assert (REPO / "deploy" / "user-data").read_text().startswith("#cloud-config\n")
    assert data == {"runcmd": [["sh", "-c", "sh /boot/firmware/firstboot.sh"]]}
