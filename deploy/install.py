#!/usr/bin/python3
"""Install pihub as a systemd service on Raspberry Pi OS (Bookworm, Trixie; 64- and 32-bit).

Run as root from a checkout (``sudo deploy/install.sh [options]``); safe to re-run: every step
looks before it acts, and a second run with the same checkout and config changes nothing.

1. apt: ``python3-venv python3-dev gcc libffi-dev`` (only those missing; ``apt-get update``
   only when something is missing), later the packages of the enabled backends.
2. the system user ``pihub`` (group ``pihub``, home /var/lib/pihub, no login shell).
3. ``/etc/pihub`` (root, 0755) and ``/etc/pihub/config.yaml`` (root:pihub, 0640) from
   ``--config FILE`` or the commented ``deploy/config.yaml``; an existing config is never
   overwritten. ``/var/lib/pihub`` (pihub:pihub, 0700).
4. the venv ``/opt/pihub/.venv`` with ``--system-site-packages``, so the apt-packaged
   libraries bound to the Pi's C libraries (python3-lgpio, python3-picamera2, python3-pyscard)
   are used; every other package comes from the hash-checked lock ``requirements/runtime.txt``
   (``pip install --require-hashes``), then pihub itself (``--no-build-isolation --no-deps``,
   built with the locked setuptools and cffi). Never ``--break-system-packages``: nothing is
   installed outside the venv. The lock's gpiozero 2.x shadows Debian's python3-gpiozero
   (1.6.2, too old for pihub) inside the venv. pip and setuptools are removed from the venv
   afterwards (about 24 MB; the service needs neither), and brought back by the next run that
   has something to install. A stamp (hash of the lock, the source and the Python version)
   skips this step when nothing changed.
5. what the config needs, from the installed ``pihub doctor --needs``: apt packages, groups
   (created where missing, ``usermod -aG`` for those the user is not in), ``raspi-config
   nonint`` for the interfaces named by ``--enable-spi``/``--enable-serial``/``--enable-i2c``
   only (``get_*`` first: nothing is run for an interface already on).
6. the unit, rendered for those devices by ``systemd/render.py``, into
   /etc/systemd/system/pihub.service (0644); ``systemctl daemon-reload`` when it changed,
   ``enable``, and ``restart`` when anything changed or it is not running.
7. prints the URL, the one-time setup code (from the journal) and ``journalctl -u pihub -f``.

``--uninstall`` disables and removes the unit and /opt/pihub, and keeps /etc/pihub, /var/lib/pihub,
the user and the apt packages (it says so, with the commands that would remove them).

``--root DIR`` installs the files into DIR instead of / (tests, image builders): the user and
groups go to DIR/etc/passwd and DIR/etc/group (``useradd --root DIR``...), the unit is enabled
with ``systemctl --root=DIR`` and not started; apt-get, dpkg-query and raspi-config still act
on the running system. The venv's paths are DIR's (a venv cannot be moved).

Stdlib only: it runs with the system Python before any venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

SOURCE = Path(__file__).resolve().parents[1]
USER = "pihub"
VENV = "/opt/pihub/.venv"
ETC = "/etc/pihub"
STATE = "/var/lib/pihub"
UNIT = "/etc/systemd/system/pihub.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/pihub.service"
STAMP = ".pihub-install"
#: The apt packages every install needs (also in pihub.cli.doctor.BASE_APT, which a test keeps
#: equal: this script runs before pihub is installed and cannot import it).
BASE_APT = ("python3-venv", "python3-dev", "gcc", "libffi-dev")
#: --enable-X -> the device kind whose raspi-config commands it runs.
INTERFACES = {"spi": "spi", "serial": "serial", "i2c": "i2c"}
_SETUP_CODE = re.compile(r"setup code ([0-9a-f]{8}(?:-[0-9a-f]{8}){3})")
_SOURCE_GLOBS = ("pyproject.toml", "setup.py", "MANIFEST.in", "requirements/runtime.txt",
                 "pihub/**/*.py", "native/*.c", "native/*.h", "native/*.py")


class InstallError(Exception):
    """The installation cannot go on; the message says why and what to do."""


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pihub_systemd_render", SOURCE / "systemd" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids(path: Path, name: str) -> tuple[int, int] | None:
    """(uid or gid, primary gid) of ``name`` in a passwd-format file; None if absent."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if fields[0] == name and len(fields) >= 4:
            return int(fields[2]), int(fields[3]) if fields[3].isdigit() else int(fields[2])
    return None


def _members(path: Path) -> dict[str, set[str]]:
    """group -> members, from a group-format file (absent file: no groups)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4:
            out[fields[0]] = {m for m in fields[3].split(",") if m}
    return out


class Installer:
    """One run of the installer; see the module docstring for the steps.

    Args:
        root: the file-system root to install into (``/`` on a Pi).
        python: the interpreter the venv is made from.
        out: print function for progress.
    """

    def __init__(self, root: Path, python: str, out: Any = print) -> None:
        self.root = root
        self.staged = root != Path("/")
        self.python = python
        self.out = out
        self.changed: list[str] = []
        self._apt_updated = False

    # -- helpers ----------------------------------------------------------------------------

    def path(self, absolute: str) -> Path:
        """``absolute`` under the install root."""
        return self.root / absolute.lstrip("/")

    def run(self, argv: Sequence[str], *, capture: bool = False, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command (printed first unless captured); stderr passes through."""
        if not capture:
            self.out(f"+ {shlex.join(argv)}")
        try:
            proc = subprocess.run(list(argv), text=True, check=False, env=env,
                                  stdout=subprocess.PIPE if capture else None)
        except FileNotFoundError:
            raise InstallError(f"{argv[0]} not found: this installer is for Raspberry Pi OS / Debian") from None
        if check and proc.returncode != 0:
            raise InstallError(f"`{shlex.join(argv)}` failed with exit status {proc.returncode}")
        return proc

    def _root_opt(self, style: str) -> list[str]:
        if not self.staged:
            return []
        return [f"--root={self.root}"] if style == "systemctl" else ["--root", str(self.root)]

    # -- steps ------------------------------------------------------------------------------

    def ensure_apt(self, packages: Iterable[str]) -> None:
        """Install the packages dpkg does not list as installed."""
        packages = list(dict.fromkeys(packages))
        if not packages:
            return
        proc = self.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *packages],
                        capture=True, check=False)
        installed = {line.split()[0] for line in proc.stdout.splitlines()
                     if len(line.split()) >= 2 and line.split()[1].startswith("ii")}
        missing = [p for p in packages if p not in installed]
        if not missing:
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if not self._apt_updated:
            self.run(["apt-get", "update"], env=env)
            self._apt_updated = True
        self.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)
        self.changed.append("apt: " + " ".join(missing))

    def ensure_user(self) -> None:
        if _ids(self.path("/etc/passwd"), USER) is None:
            self.run(["useradd", *self._root_opt("shadow"), "--system", "--user-group", "--home-dir", STATE,
                      "--no-create-home", "--shell", "/usr/sbin/nologin", USER])
            self.changed.append(f"user {USER}")

    def _owner(self, user: str, group: str) -> tuple[int, int]:
        uid = _ids(self.path("/etc/passwd"), user)
        gid = _ids(self.path("/etc/group"), group)
        if uid is None or gid is None:
            raise InstallError(f"user {user!r} or group {group!r} is missing from {self.path('/etc/passwd')}")
        return uid[0], gid[0]

    def ensure_dir(self, absolute: str, mode: int, owner: tuple[int, int]) -> None:
        p = self.path(absolute)
        if not p.is_dir():
            p.mkdir(parents=True)
            self.changed.append(absolute)
        self._ensure_meta(p, mode, owner)

    def _ensure_meta(self, p: Path, mode: int, owner: tuple[int, int]) -> None:
        st = p.stat()
        if (st.st_mode & 0o7777) != mode:
            p.chmod(mode)
            self.changed.append(f"mode {oct(mode)} {p}")
        if (st.st_uid, st.st_gid) != owner:
            os.chown(p, *owner)
            self.changed.append(f"owner {p}")

    def ensure_config(self, given: Path | None) -> None:
        target = self.path(f"{ETC}/config.yaml")
        owner = (0, self._owner(USER, USER)[1])
        if target.exists():
            note = f" (--config {given} not used)" if given is not None else ""
            self.out(f"kept {ETC}/config.yaml: an existing config is never overwritten{note}")
        else:
            source = given or SOURCE / "deploy" / "config.yaml"
            text = source.read_text(encoding="utf-8")
            tmp = target.with_name(".config.yaml.new")
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o640)
            os.replace(tmp, target)
            self.changed.append(f"{ETC}/config.yaml")
            self.out(f"wrote {ETC}/config.yaml from {source}")
        self._ensure_meta(target, 0o640, owner)

    def _stamp(self) -> str:
        h = hashlib.sha256()
        ver = self.run([self.python, "-c", "import sys; print(sys.version)"], capture=True).stdout
        h.update(ver.encode())
        for pattern in _SOURCE_GLOBS:
            for f in sorted(SOURCE.glob(pattern)):
                if "__pycache__" not in f.parts:
                    h.update(str(f.relative_to(SOURCE)).encode() + b"\0" + f.read_bytes() + b"\0")
        return h.hexdigest()

    def ensure_venv(self) -> None:
        venv = self.path(VENV)
        py = str(venv / "bin" / "python")
        stamp = self._stamp()
        stamp_file = venv / STAMP
        if (venv / "bin" / "python").exists() and stamp_file.exists() \
                and stamp_file.read_text(encoding="utf-8").strip() == stamp:
            self.out(f"kept {VENV}: the lock and the source are unchanged")
            return
        if not (venv / "bin" / "python").exists():
            self.run([self.python, "-m", "venv", "--system-site-packages", str(venv)])
        elif self.run([py, "-c", "import pip"], capture=True, check=False).returncode != 0:
            self.run([py, "-m", "ensurepip", "--default-pip"])
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
        self.run([py, "-m", "pip", "install", "-q", "--require-hashes", "-r",
                  str(SOURCE / "requirements" / "runtime.txt")], env=env)
        self.run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(SOURCE)], env=env)
        self.run([py, "-m", "pip", "uninstall", "-q", "-y", "setuptools", "pip"], env=env)
        stamp_file.write_text(stamp + "\n", encoding="utf-8")
        self.changed.append(VENV)

    def needs(self, config: str, kinds: Sequence[str]) -> dict[str, Any]:
        argv = [str(self.path(VENV) / "bin" / "pihub"), "--config", str(self.path(config)), "doctor", "--needs"]
        argv += [f"--with={','.join(kinds)}"] if kinds else []
        proc = self.run(argv, capture=True, check=False)
        if proc.returncode != 0:
            raise InstallError(f"{self.path(config)} is not valid (see above); fix it and run the installer "
                               "again (`pihub check-config` lists every problem)")
        return json.loads(proc.stdout)

    def ensure_groups(self, groups: Sequence[str]) -> None:
        have = _members(self.path("/etc/group"))
        for g in groups:
            if g not in have:
                self.run(["groupadd", *self._root_opt("shadow"), "--system", g])
                self.changed.append(f"group {g}")
        have = _members(self.path("/etc/group"))
        missing = [g for g in groups if USER not in have.get(g, set())]
        if missing:
            self.run(["usermod", *self._root_opt("shadow"), "-aG", ",".join(missing), USER])
            self.changed.append(f"{USER} in {','.join(missing)}")

    def enable_interfaces(self, needs: dict[str, Any], asked: Sequence[str]) -> bool:
        """Run raspi-config for the asked interfaces not on yet; True if any changed."""
        changed = False
        for kind in asked:
            for do, value in needs["raspi"].get(kind, []):
                get = "get_" + do.removeprefix("do_")
                now = self.run(["raspi-config", "nonint", get], capture=True, check=False).stdout.strip()
                if now != value:
                    self.run(["raspi-config", "nonint", do, value])
                    self.changed.append(f"raspi-config {do} {value}")
                    changed = True
        return changed

    def ensure_unit(self, needs: dict[str, Any]) -> bool:
        """Write the rendered unit if it differs and enable it; True if the file changed."""
        text = _load_render().render_unit(str(self.path(VENV)) if self.staged else VENV, needs=needs)
        target = self.path(UNIT)
        wrote = not target.exists() or target.read_text(encoding="utf-8") != text
        if wrote:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(".pihub.service.new")
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
            self.changed.append(UNIT)
            if not self.staged:
                self.run(["systemctl", "daemon-reload"])
        if not self.path(WANTS).is_symlink():
            self.run(["systemctl", *self._root_opt("systemctl"), "enable", "pihub.service"])
            self.changed.append("enabled pihub.service")
        return wrote

    def start(self) -> float | None:
        """(Re)start the service when something changed or it is not running.

        Returns:
            time.time() just before the restart, or None if it was left alone.
        """
        active = self.run(["systemctl", "is-active", "--quiet", "pihub.service"], capture=True,
                          check=False).returncode == 0
        if active and not self.changed:
            return None
        t0 = time.time()
        self.run(["systemctl", "restart", "pihub.service"])
        return t0

    def setup_code(self, since: float, timeout: float = 30.0) -> str | None:
        """The setup code the restarted daemon logged; None if it logged "ready" without one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.run(["journalctl", "-u", "pihub.service", "-o", "cat", "--no-pager",
                            f"--since=@{int(since)}"], capture=True, check=False).stdout
            m = _SETUP_CODE.search(log)
            if m:
                return m[1]
            if "ready in" in log:
                return None
            time.sleep(0.5)  # polling the journal: there is nothing to wait on
        return None

    # -- the two commands -------------------------------------------------------------------

    def install(self, *, config: Path | None, kinds: Sequence[str], enable: Sequence[str],
                start: bool) -> None:
        self.ensure_apt(BASE_APT)
        self.ensure_user()
        self.ensure_dir(ETC, 0o755, (0, 0))
        self.ensure_config(config)
        self.ensure_dir(STATE, 0o700, self._owner(USER, USER))
        self.ensure_venv()
        needs = self.needs(f"{ETC}/config.yaml", [*kinds, *enable])
        self.ensure_apt(needs["apt"])
        self.ensure_groups(needs["groups"])
        reboot = self.enable_interfaces(needs, enable)
        self.ensure_unit(needs)
        code, started = None, False
        if start and not self.staged:
            t0 = self.start()
            started = t0 is not None
            if t0 is not None:
                code = self.setup_code(t0)
        self.out("")
        self.out("pihub is installed" + (" (nothing changed)" if not self.changed else ""))
        backends = ", ".join(sorted({b for v in needs.get("backends", {}).values() for b in v})) or "none"
        self.out(f"  devices: {', '.join(needs['kinds']) or 'none'} (backends: {backends})")
        self.out(f"  config:  {ETC}/config.yaml   data: {STATE}   venv: {VENV}")
        if needs.get("url"):
            self.out(f"  URL:     {needs['url']}")
        if code:
            self.out(f"  one-time setup code: {code}  (create the first user with it in the web panel,")
            self.out("           or: pihub user add NAME)")
        elif started:
            self.out("  no setup code: a user exists already (pihub user add NAME adds another)")
        else:
            self.out("  the one-time setup code is logged at each start while no user exists:")
            self.out("           journalctl -u pihub | grep 'setup code'")
        self.out("  logs:    journalctl -u pihub -f")
        self.out("  checks:  sudo -u pihub /opt/pihub/.venv/bin/pihub doctor")
        if reboot:
            self.out("  reboot to apply the raspi-config changes: sudo reboot")

    def uninstall(self) -> None:
        unit = self.path(UNIT)
        if unit.exists() or self.path(WANTS).is_symlink():
            disable = ["systemctl", *self._root_opt("systemctl"), "disable"]
            self.run(disable + ([] if self.staged else ["--now"]) + ["pihub.service"])
            unit.unlink(missing_ok=True)
            if not self.staged:
                self.run(["systemctl", "daemon-reload"])
            self.changed.append(UNIT)
        opt = self.path("/opt/pihub")
        if opt.exists():
            shutil.rmtree(opt)
            self.changed.append("/opt/pihub")
        self.out("pihub is uninstalled" if self.changed else "pihub was not installed: nothing removed")
        self.out(f"kept, on purpose: {ETC} (your config), {STATE} (your data: users, tokens, recordings),")
        self.out(f"  the user {USER} (it owns the data) and the apt packages. To remove them too:")
        self.out(f"  sudo rm -r {ETC} {STATE} && sudo userdel {USER}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit 0 on success, 1 on a failure (message on stderr), 2 on bad usage."""
    p = argparse.ArgumentParser(prog="deploy/install.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="initial /etc/pihub/config.yaml (used only if there is none)")
    p.add_argument("--with", dest="kinds", action="append", default=[], metavar="KIND[,KIND]",
                   help="also prepare these device kinds although the config does not use them yet "
                        "(gpio, spi, i2c, serial, audio, camera, smartcard, flic)")
    for name in INTERFACES:
        p.add_argument(f"--enable-{name}", action="append_const", const=name, dest="enable", default=[],
                       help=f"turn the {name.upper() if name != 'serial' else 'serial'} interface on with "
                            "raspi-config (reboot needed)")
    p.add_argument("--root", type=Path, default=Path("/"), help="install into this directory instead of /")
    p.add_argument("--python", default="/usr/bin/python3", help="interpreter for the venv (default %(default)s)")
    p.add_argument("--no-start", action="store_true", help="install and enable, but do not (re)start")
    p.add_argument("--uninstall", action="store_true", help="remove the service and the venv; keep config and data")
    args = p.parse_args(argv)
    kinds = [k for v in args.kinds for k in v.split(",") if k]
    root = args.root.resolve()
    if root == Path("/") and os.geteuid() != 0:
        print("deploy/install.sh: run it as root: sudo deploy/install.sh", file=sys.stderr)
        return 1
    if args.config is not None and not args.config.is_file():
        print(f"deploy/install.sh: --config {args.config}: no such file", file=sys.stderr)
        return 2
    inst = Installer(root, args.python)
    try:
        if args.uninstall:
            inst.uninstall()
        else:
            inst.install(config=args.config, kinds=kinds, enable=args.enable, start=not args.no_start)
    except InstallError as e:
        print(f"deploy/install.sh: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
