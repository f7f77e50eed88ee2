#!/usr/bin/python3
"""A recording stand-in for the system commands deploy/install.py calls.

Installed (as symlinks named apt-get, dpkg-query, useradd, groupadd, usermod, systemctl,
raspi-config, journalctl) in a directory put first on PATH. Every call is appended to
``$STUB_LOG`` as one JSON array ``[name, arg, ...]``; the effects a second run of the
installer must see are simulated in the staging root (passwd, group, the enable symlink) and in
``$STUB_STATE`` (installed packages, raspi-config settings), so that "re-running changes
nothing" is checked against the state the first run left, not assumed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

name = Path(sys.argv[0]).name
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps([name, *args]) + "\n")
state = Path(os.environ["STUB_STATE"])
state.mkdir(parents=True, exist_ok=True)


def root_of(argv: list[str]) -> Path:
    for i, a in enumerate(argv):
        if a == "--root":
            return Path(argv[i + 1])
        if a.startswith("--root="):
            return Path(a.split("=", 1)[1])
    sys.exit(f"stub {name}: called without --root: the test would change this machine")


def add_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def next_id(root: Path) -> int:
    used = {int(line.split(":")[2]) for f in ("passwd", "group") if (root / "etc" / f).exists()
            for line in (root / "etc" / f).read_text().splitlines()}
    return max(used | {989}) + 1


packages = state / "dpkg"
if name == "dpkg-query":
    have = set(packages.read_text().split()) if packages.exists() else set()
    wanted = [a for a in args if not a.startswith("-")]
    for p in wanted:
        if p in have:
            print(f"{p} ii ")
    sys.exit(0 if set(wanted) <= have else 1)
elif name == "apt-get" and args[:1] == ["install"]:
    with packages.open("a") as f:
        f.write(" ".join(a for a in args[1:] if not a.startswith("-")) + "\n")
elif name == "useradd":
    root = root_of(args)
    n = next_id(root)
    add_line(root / "etc" / "group", f"{args[-1]}:x:{n}:")
    add_line(root / "etc" / "passwd", f"{args[-1]}:x:{n}:{n}::/var/lib/pihub:/usr/sbin/nologin")
elif name == "groupadd":
    root = root_of(args)
    add_line(root / "etc" / "group", f"{args[-1]}:x:{next_id(root)}:")
elif name == "usermod":
    root = root_of(args)
    groups, user = args[args.index("-aG") + 1].split(","), args[-1]
    path = root / "etc" / "group"
    lines = []
    for line in path.read_text().splitlines():
        f = line.split(":")
        if f[0] in groups:
            f[3] = ",".join([m for m in f[3].split(",") if m] + [user])
        lines.append(":".join(f))
    path.write_text("\n".join(lines) + "\n")
elif name == "systemctl" and ("enable" in args or "disable" in args):
    link = root_of(args) / "etc/systemd/system/multi-user.target.wants/pihub.service"
    if "enable" in args:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/etc/systemd/system/pihub.service")
    else:
        link.unlink(missing_ok=True)
elif name == "raspi-config":
    settings_file = state / "raspi.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    what = args[1]
    if what.startswith("get_"):
        print(settings.get(what[4:], "1"))
    else:
        settings[what[3:]] = args[2]
        settings_file.write_text(json.dumps(settings))
