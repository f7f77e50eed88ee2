#!/usr/bin/env python3
"""Render ``systemd/pihub.service`` for a given virtualenv (installer and tests).

The unit in this directory is a complete, valid unit whose ``ExecStart=`` points at the
default venv, ``/opt/pihub/.venv``. Rendering replaces that one line and nothing else:

- ``render_unit(venv="/srv/pihub/venv")`` → ``ExecStart=/srv/pihub/venv/bin/pihub run``;
- ``render_unit(command=[python, "-m", "pihub", "run"])`` → that exact command line (tests
  use an interpreter that exists on the machine, because ``systemd-analyze verify`` rejects
  a unit whose executable is missing).

Arguments are written so that systemd parses them back to exactly the given strings
(measured with ``systemd-analyze verify``, systemd 252): plain words stay bare, others are
double-quoted with ``\\`` and ``"`` escaped; ``%`` becomes ``%%`` everywhere (specifier
expansion); ``$`` becomes ``$$`` in arguments (environment expansion) but not in the
executable path, where systemd expands no variables and would keep ``$$`` literally. Refused
with ``ValueError``, because systemd would refuse or misread the unit: control characters
anywhere (a newline would end the ``ExecStart=`` line and inject settings), and a quote or
backslash in the executable path (systemd: "Executable name contains special characters",
fatal even when correctly quoted).

Stdlib only, and it lives beside the unit rather than in the ``pihub`` package, because it
is run from the source checkout by the installer, before any venv exists::

    python3 systemd/render.py --venv /opt/pihub/.venv -o /etc/systemd/system/pihub.service

With ``needs`` (``--needs FILE``: the JSON of ``pihub doctor --needs``) the device lines are
narrowed to the enabled backends' (``DeviceAllow=``, ``SupplementaryGroups=``, the
``modprobe@`` units) and address families are added; the committed unit is the full set.

(A directory named ``systemd`` must not become an importable package: it would shadow the
``python3-systemd`` bindings. Tests load this file by path.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_VENV", "TEMPLATE", "main", "quote_arg", "render_unit"]

#: The venv the committed unit points at.
DEFAULT_VENV = "/opt/pihub/.venv"

#: The committed unit, next to this file.
TEMPLATE = Path(__file__).resolve().with_name("pihub.service")

#: Words systemd reads back unchanged without quotes (after %/$ escaping). ";" alone is a
#: command separator in older systemd, so it never stays bare.
_BARE = re.compile(r"[A-Za-z0-9_./:=,+@%$-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_EXECUTABLE = re.compile("[\"'\\\\]")


def quote_arg(arg: str, *, executable: bool = False) -> str:
    """Write one word of an ``ExecStart=`` line.

    Args:
        arg: the word exactly as the process should receive it.
        executable: True for the first word (the program's path), which systemd parses with
            stricter rules (see the module docstring).

    Returns:
        The text to put on the ``ExecStart=`` line.

    Raises:
        ValueError: ``arg`` contains a control character, or, for the executable, a quote
            or a backslash.
    """
    if _CONTROL.search(arg):
        raise ValueError(f"control characters are not allowed in a unit command line: {arg!r}")
    if executable and _UNSAFE_EXECUTABLE.search(arg):
        raise ValueError(f"systemd refuses an executable path containing a quote or backslash: {arg!r}")
    escaped = arg.replace("%", "%%")
    if not executable:
        escaped = escaped.replace("$", "$$")
    if _BARE.fullmatch(arg) and arg != ";":
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _venv_command(venv: str | os.PathLike[str]) -> list[str]:
    """The default command for a venv: ``<venv>/bin/pihub run``.

    Args:
        venv: absolute path of the virtualenv (not resolved: symlinks are kept).

    Returns:
        The argument vector.

    Raises:
        ValueError: ``venv`` is not absolute.
    """
    path = os.fspath(venv)
    if not os.path.isabs(path):
        raise ValueError(f"venv must be an absolute path, not {path!r}")
    return [os.path.join(os.path.normpath(path), "bin", "pihub"), "run"]


def render_unit(venv: str | os.PathLike[str] | None = None, *,
                command: Sequence[str] | None = None, template: str | None = None,
                needs: Mapping[str, Any] | None = None) -> str:
    """Render the unit text with a given venv or command, for the enabled backends.

    Args:
        venv: absolute path of pihub's virtualenv; ExecStart becomes ``<venv>/bin/pihub run``.
        command: the full command instead (first element an absolute path). Give exactly
            one of ``venv`` and ``command``.
        template: unit text to render; the committed ``pihub.service`` when None.
        needs: what the enabled backends need, as ``pihub doctor --needs`` prints it (keys
            ``groups``, ``device_allow``, ``modules``, ``address_families``); None keeps the
            template's full set of devices. See :func:`_restrict`.

    Returns:
        The unit text, identical to the template except for its ``ExecStart=`` line and,
        with ``needs``, the device lines it narrows.

    Raises:
        ValueError: both or neither of ``venv``/``command``; a relative path; a word systemd
            would refuse (see :func:`quote_arg`); the template lacks exactly one
            ``ExecStart=`` line; ``needs`` names a device, module or group the template does
            not have, or a malformed address family.
    """
    if (venv is None) == (command is None):
        raise ValueError("give exactly one of venv and command")
    argv = _venv_command(venv) if venv is not None else list(command or ())
    if not argv or not os.path.isabs(argv[0]):
        raise ValueError(f"the command must start with an absolute path, not {argv[:1]!r}")
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    if len(found) != 1:
        raise ValueError(f"the template must have exactly one ExecStart= line, found {len(found)}")
    i = found[0]
    newline = "\n" if lines[i].endswith("\n") else ""
    words = [quote_arg(argv[0], executable=True)] + [quote_arg(a) for a in argv[1:]]
    lines[i] = "ExecStart=" + " ".join(words) + newline
    text = "".join(lines)
    return text if needs is None else _restrict(text, needs)


_MODPROBE = re.compile(r"modprobe@([A-Za-z0-9_-]+)\.service")
_FAMILY = re.compile(r"AF_[A-Z0-9]+")


def _restrict(text: str, needs: Mapping[str, Any]) -> str:
    """Narrow the full-device template to what ``needs`` asks for.

    Only removes: ``DeviceAllow=`` lines not listed, ``modprobe@`` units of modules not
    listed (a ``Wants=``/``After=`` line left empty goes), groups not listed from
    ``SupplementaryGroups=`` (the line goes when none is left); and appends the listed
    address families to ``RestrictAddressFamilies=``. What is listed must be in the template:
    the template is the reviewed upper bound, a drop-in is the way past it.
    """
    text_lines = text.splitlines(keepends=True)

    def values(key: str) -> list[str]:
        return [line.partition("=")[2].strip() for line in text_lines if line.startswith(key + "=")]

    allow, modules, groups = (list(needs.get(k) or ()) for k in ("device_allow", "modules", "groups"))
    families = list(needs.get("address_families") or ())
    have_modules = {m for v in values("Wants") for m in _MODPROBE.findall(v)}
    have_groups = {g for v in values("SupplementaryGroups") for g in v.split()}
    for what, wanted, have in (("DeviceAllow", allow, set(values("DeviceAllow"))),
                               ("module", modules, have_modules), ("group", groups, have_groups)):
        extra = [w for w in wanted if w not in have]
        if extra:
            raise ValueError(f"{what} {', '.join(map(repr, extra))} is not in the template; allowed: "
                             f"{', '.join(sorted(have))} (add others in a drop-in)")
    bad = [f for f in families if not _FAMILY.fullmatch(str(f))]
    if bad:
        raise ValueError(f"address family {bad[0]!r} is not of the form AF_NAME")
    out = []
    for line in text_lines:
        key, _, value = line.partition("=")
        end = "\n" if line.endswith("\n") else ""
        if key == "DeviceAllow" and value.strip() not in allow:
            continue
        if key in ("Wants", "After") and _MODPROBE.search(value):
            words = [w for w in value.split() if (m := _MODPROBE.fullmatch(w)) is None or m[1] in modules]
            if not words:
                continue
            line = f"{key}={' '.join(words)}{end}"
        elif key == "SupplementaryGroups":
            kept = [g for g in value.split() if g in groups]
            if not kept:
                continue
            line = f"{key}={' '.join(kept)}{end}"
        elif key == "RestrictAddressFamilies":
            line = f"{key}={' '.join(value.split() + [f for f in families if f not in value.split()])}{end}"
        out.append(line)
    return "".join(out)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0644) via a temporary file and a rename.

    Args:
        path: destination; its directory must exist.
        text: the content.

    Raises:
        OSError: the directory is not writable.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: render the unit to a file or stdout.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit status: 0 on success, 2 on a usage or value error.
    """
    parser = argparse.ArgumentParser(description="Render pihub.service for a virtualenv.")
    parser.add_argument("--venv", default=DEFAULT_VENV,
                        help=f"absolute path of pihub's virtualenv (default {DEFAULT_VENV})")
    parser.add_argument("-o", "--output", type=Path,
                        help="write here (atomically, mode 0644) instead of stdout")
    parser.add_argument("--needs", type=Path,
                        help="JSON file from `pihub doctor --needs`: keep only the devices, modules and "
                             "groups the enabled backends need (default: the full set)")
    args = parser.parse_args(argv)
    try:
        needs = json.loads(args.needs.read_text(encoding="utf-8")) if args.needs else None
        text = render_unit(args.venv, needs=needs)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_atomically(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
