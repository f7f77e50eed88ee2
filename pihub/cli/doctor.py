"""``pihub doctor``: what breaks on a real Pi, each problem printed with its fix.

Checks, in order (a check that does not apply to the config is not run):

==============  ==========================================================================
config          the config loads and validates (as ``pihub check-config`` does, without
                building the hub, so no device is opened)
native          ``pihub._native`` imports on this CPU and matches this pihub's ABI
gpio, spi, ...  one per device kind the enabled backends need (:data:`KINDS`): the device
                nodes exist (``/dev/gpiochip*``, ``/dev/spidevB.D``, the serial port,
                ``/dev/video*`` + libcamera, ``/dev/snd/seq``), pcscd's socket answers,
                flicd accepts a TCP connection
groups          the service user is in every group those devices need
ports           the HTTP and websocket ports are free (or held by the running pihub)
clock           the kernel clock is NTP-synchronised (a Pi has no RTC)
disk            the data directory's file system has room for recordings
unit            pihub.service's state, where systemd is PID 1
==============  ==========================================================================

Each check ends ``ok``, ``FAIL`` (printed with the fix; exit status 1), ``warn`` (printed
with the fix, exit status unchanged: an unsynchronised clock right after boot is normal)
or ``skip`` (cannot be judged here, said why). ``--json`` prints the same as one object.

``pihub doctor --needs`` prints what the config needs from the system instead (apt packages,
groups, the unit's DeviceAllow=/modprobe lines, raspi-config commands, the URL) as JSON:
``deploy/install.py`` reads it after the venv exists, so the mapping from backends to system
needs lives only here (:data:`KINDS`), in the package that knows the backends' options.
``systemd/render.py`` renders the unit from the same JSON.
"""

from __future__ import annotations

import argparse
import glob
import grp
import json
import os
import platform
import pwd
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pihub.cli.common import EXIT_INVALID, EXIT_OK, guarded, load_config

if TYPE_CHECKING:
    from pihub.config.loader import Config

__all__ = ["BASE_APT", "KINDS", "Check", "Kind", "add_parser", "cmd_doctor", "kinds_for", "needs_for",
           "run_checks"]

#: apt packages every install needs: the venv, and a compiler for pihub's native core (and for
#: the locked packages that build from source where PyPI has no wheel, e.g. spidev).
BASE_APT: tuple[str, ...] = ("python3-venv", "python3-dev", "gcc", "libffi-dev")


@dataclass(frozen=True)
class Kind:
    """What one kind of device needs from the system.

    Attributes:
        groups: groups Raspberry Pi OS's udev rules give the device nodes to.
        device_allow: the unit's ``DeviceAllow=`` values (see systemd/pihub.service).
        modules: kernel modules loaded before the service (``modprobe@NAME.service``).
        apt: Debian packages; libraries bound to system C libraries (lgpio, libcamera,
            libpcsclite) come from apt, everything else from the hash-checked lock.
        raspi: ``raspi-config nonint`` commands that enable the interface (run only when
            the installer is asked to), each a tuple of arguments.
        address_families: extra ``RestrictAddressFamilies=`` entries.
    """

    groups: tuple[str, ...] = ()
    device_allow: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    raspi: tuple[tuple[str, ...], ...] = ()
    address_families: tuple[str, ...] = ()


#: Device kinds by name. Smart cards and Flic buttons need no device node: pcscd and flicd own
#: the hardware, and pihub reaches them over a Unix socket and TCP. So "flic" adds no
#: AF_BLUETOOTH: pihub never opens a Bluetooth socket (flicd does, in its own service). The
#: camera has no raspi-config command: since Bookworm the firmware detects it
#: (``camera_auto_detect=1``, config.txt's default); the legacy ``do_camera`` (start_x, MMAL)
#: is what libcamera must not have.
KINDS: dict[str, Kind] = {
    "gpio": Kind(groups=("gpio",), device_allow=("char-gpiochip rw", "char-*gpiomem* rw"),
                 modules=("rpi_gpiomem", "bcm2835_gpiomem"), apt=("python3-lgpio",)),
    "spi": Kind(groups=("spi",), device_allow=("char-spi rw",), modules=("spidev",),
                raspi=(("do_spi", "0"),)),
    "i2c": Kind(groups=("i2c",), device_allow=("char-i2c rw",), modules=("i2c_dev",),
                raspi=(("do_i2c", "0"),)),
    # do_serial_hw 0 enables the UART, do_serial_cons 1 takes the login console off it.
    "serial": Kind(groups=("dialout",),
                   device_allow=("char-ttyAMA rw", "char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"),
                   modules=("usbserial", "cdc_acm"),
                   raspi=(("do_serial_hw", "0"), ("do_serial_cons", "1"))),
    "audio": Kind(groups=("audio",), device_allow=("char-alsa rw",), modules=("snd",)),
    "camera": Kind(groups=("video",),
                   device_allow=("char-video4linux rw", "char-media rw", "char-dma_heap rw", "/dev/vchiq rw"),
                   modules=("videodev", "mc"), apt=("python3-picamera2",)),
    "smartcard": Kind(apt=("pcscd", "python3-pyscard")),
    "flic": Kind(),
}

#: Free space below this in the data directory is a failure (recordings, the store).
MIN_FREE_MB = 512

_PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
_UNIT = "pihub.service"


@dataclass
class Check:
    """One check's verdict.

    Attributes:
        name: short name (``config``, ``gpio``, ``groups``...).
        status: ``ok``, ``fail``, ``warn`` or ``skip``.
        detail: what was found.
        fix: what to do about it (empty when ok).
    """

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class _Target:
    """What the checks look at: the config's backends and the kinds they need."""

    config: Any = None
    kinds: dict[str, list[str]] = field(default_factory=dict)  # kind -> backend names needing it


# --- what the config needs ---------------------------------------------------------------


def kinds_for(config: Any) -> dict[str, list[str]]:
    """Device kinds the enabled backends of ``config`` need.

    A backend on a mock driver (``gpio.pin_factory: mock``, ``adc.driver: mock``) or a
    serial sensor on something other than a ``/dev`` node (a pty link, ``socket://``) needs no
    device.

    Returns:
        kind name -> the section names needing it, in config order.
    """
    out: dict[str, list[str]] = {}
    sections = config.sections
    for name, values in sections.items():
        if name in config.disabled:
            continue
        values = values or {}
        kind = None
        if name == "gpio" and values.get("pin_factory", "auto") != "mock":
            kind = "gpio"
        elif name == "adc" and values.get("driver", "spidev") == "spidev":
            kind = "spi"
        elif name == "serial" and str(values.get("device") or "").startswith("/dev/"):
            kind = "serial"
        elif name in ("smartcard", "flic"):
            kind = name
        elif name == "midi":  # ALSA sequencer ports (/dev/snd/seq); through JACK, the same group
            kind = "audio"
        if kind:
            out.setdefault(kind, []).append(name)
    return out


def _http(config: Config | None) -> dict[str, Any]:
    from pihub.web import HTTP_SCHEMA

    if config is not None and config.sections.get("http"):
        return config.sections["http"]
    return HTTP_SCHEMA.validate({}, ("http",))[0]


def url_for(config: Any) -> str | None:
    """The API's URL as a phone on the LAN would type it; None when HTTP is off."""
    http = _http(config)
    if not http["enabled"] or (config is not None and "http" in config.disabled):
        return None
    host = http["bind_address"]
    if host in ("0.0.0.0", "::", ""):
        host = f"{socket.gethostname()}.local"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if http.get("ssl_cert") else "http"
    return f"{scheme}://{host}:{http['port']}"


def needs_for(kinds: Iterable[str], config: Any = None) -> dict[str, Any]:
    """What the system must provide for ``kinds`` (the installer's and render.py's input).

    Returns:
        ``{"kinds", "apt", "groups", "device_allow", "modules", "raspi", "address_families",
        "url"}``; lists keep :data:`KINDS` order and hold no duplicates; ``raspi`` maps a kind
        to its ``raspi-config nonint`` argument lists.
    """
    chosen = [k for k in KINDS if k in set(kinds)]

    def union(attr: str) -> list[Any]:
        seen: list[Any] = []
        for k in chosen:
            for v in getattr(KINDS[k], attr):
                v = list(v) if isinstance(v, tuple) else v
                if v not in seen:
                    seen.append(v)
        return seen

    return {"kinds": chosen, "apt": union("apt"), "groups": union("groups"),
            "device_allow": union("device_allow"), "modules": union("modules"),
            "raspi": {k: [list(c) for c in KINDS[k].raspi] for k in chosen if KINDS[k].raspi},
            "address_families": union("address_families"), "url": url_for(config)}


# --- the checks ------------------------------------------------------------------------------


def _check_native() -> Check:
    try:
        import pihub.bus  # noqa: F401  (the import runs the ABI check)
    except ImportError as e:
        return Check("native", "fail", f"pihub._native does not load on {platform.machine()}: {e}",
                     "reinstall pihub on this machine: sudo deploy/install.sh (in a checkout: make build)")
    return Check("native", "ok", f"pihub._native loads ({platform.machine()}, "
                                 f"{8 * struct.calcsize('P')}-bit Python)")


def _nodes(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern))


def _check_gpio(config: Any) -> Check:
    factory = ((config.sections.get("gpio") or {}).get("pin_factory") if config else None) or "auto"
    pattern = "/dev/gpiomem*" if factory in ("rpigpio", "native") else "/dev/gpiochip*"
    found = _nodes(pattern)
    if found:
        return Check("gpio", "ok", f"{', '.join(found)} present (pin_factory {factory})")
    return Check("gpio", "fail", f"no {pattern}: this kernel exposes no GPIO to pin_factory {factory}",
                 "run pihub on a Raspberry Pi (Raspberry Pi OS Bookworm or later), or set "
                 "gpio.pin_factory: mock to run without hardware")


def _check_spi(config: Any) -> Check:
    adc = (config.sections.get("adc") or {}) if config else {}
    path = f"/dev/spidev{adc.get('bus', 0)}.{adc.get('device', 0)}"
    if os.path.exists(path):
        return Check("spi", "ok", f"{path} present")
    return Check("spi", "fail", f"{path} does not exist: SPI is off or that bus/chip select is not enabled",
                 "sudo raspi-config nonint do_spi 0 && sudo reboot  (or dtparam=spi=on in "
                 "/boot/firmware/config.txt); or pass --enable-spi to deploy/install.sh")


def _check_serial(config: Any) -> Check:
    path = str(((config.sections.get("serial") or {}) if config else {}).get("device") or "/dev/serial0")
    if os.path.exists(path):
        return Check("serial", "ok", f"{path} present")
    if path.startswith(("/dev/serial0", "/dev/serial1", "/dev/ttyAMA", "/dev/ttyS")):
        fix = ("enable the UART and free it from the login console: sudo raspi-config nonint do_serial_hw 0 "
               "&& sudo raspi-config nonint do_serial_cons 1 && sudo reboot (or deploy/install.sh "
               "--enable-serial)")
    else:
        fix = "plug the device in and look for its name with: ls -l /dev/serial/by-id/"
    return Check("serial", "fail", f"serial port {path} does not exist", fix)


def _check_camera() -> Check:
    found = _nodes("/dev/video*")
    libcamera = any(glob.glob(p) for p in ("/usr/lib/*/libcamera.so*", "/usr/lib/libcamera.so*"))
    if found and libcamera:
        return Check("camera", "ok", f"{len(found)} video nodes, libcamera installed")
    missing = [w for w, ok in (("no /dev/video* node", found), ("libcamera not installed", libcamera)) if not ok]
    return Check("camera", "fail", "; ".join(missing),
                 "sudo apt install python3-picamera2; check the ribbon cable, then `rpicam-hello --list-cameras`")


def _check_audio() -> Check:
    if os.path.exists("/dev/snd/seq"):
        return Check("audio", "ok", "ALSA sequencer /dev/snd/seq present (MIDI ports: aconnect -l)")
    return Check("audio", "fail", "no ALSA sequencer /dev/snd/seq: MIDI ports cannot be listed",
                 "sudo modprobe snd-seq (and add snd-seq to /etc/modules); for JACK, start jackd first")


def _check_smartcard() -> Check:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(_PCSCD_SOCKET)
    except OSError as e:
        return Check("smartcard", "fail", f"pcscd does not answer on {_PCSCD_SOCKET}: {e.strerror or e}",
                     "sudo apt install pcscd && sudo systemctl enable --now pcscd.socket")
    return Check("smartcard", "ok", f"pcscd answers on {_PCSCD_SOCKET}")


def _check_flic(config: Any) -> Check:
    flic = (config.sections.get("flic") or {}) if config else {}
    host, port = flic.get("server", "127.0.0.1"), int(flic.get("port", 5551))
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError as e:
        return Check("flic", "fail", f"flicd is not reachable at {host}:{port}: {e.strerror or e}",
                     f"start flicd (fliclib-linux-hci): sudo flicd -f /var/lib/flicd/flic.db -s {host} -p {port}")
    return Check("flic", "ok", f"flicd accepts connections at {host}:{port}")


def _service_user(requested: str | None) -> str:
    if requested:
        return requested
    try:
        pwd.getpwnam("pihub")
        return "pihub"
    except KeyError:
        return pwd.getpwuid(os.geteuid()).pw_name


def _check_groups(user: str, groups: list[str]) -> Check:
    if not groups:
        return Check("groups", "ok", "the enabled backends need no device group")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return Check("groups", "fail", f"user {user!r} does not exist",
                     "sudo deploy/install.sh (it creates the pihub system user)")
    missing_groups, not_member = [], []
    for g in groups:
        try:
            info = grp.getgrnam(g)
        except KeyError:
            missing_groups.append(g)
            continue
        if info.gr_gid != entry.pw_gid and user not in info.gr_mem:
            not_member.append(g)
    if not missing_groups and not not_member:
        return Check("groups", "ok", f"{user} is in {', '.join(groups)}")
    detail, fixes = [], []
    if missing_groups:
        detail.append(f"group {', '.join(missing_groups)} does not exist on this system")
        fixes.append(" && ".join(f"sudo groupadd --system {g}" for g in missing_groups))
    if not_member or missing_groups:
        wanted = not_member + missing_groups
        detail.append(f"{user} is not in {', '.join(wanted)}")
        fixes.append(f"sudo usermod -aG {','.join(wanted)} {user} (then restart pihub or log in again)")
    return Check("groups", "fail", "; ".join(detail), " && ".join(fixes))


def _systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


def _unit_state() -> tuple[str, str] | None:
    """(is-active, is-enabled) of pihub.service; None where systemd is not PID 1."""
    if not _systemd_running() or shutil.which("systemctl") is None:
        return None

    def ask(verb: str) -> str:
        proc = subprocess.run(["systemctl", verb, _UNIT], capture_output=True, text=True, timeout=10,
                              check=False)
        return proc.stdout.strip() or "unknown"

    return ask("is-active"), ask("is-enabled")


def _check_ports(config: Any, unit: tuple[str, str] | None) -> Check:
    http = _http(config)
    if not http["enabled"]:
        return Check("ports", "skip", "HTTP is disabled")
    ports = [("HTTP", http["port"])]
    if not http["disable_websocket"]:
        ports.append(("websocket", http["websocket_port"]))
    host = http["bind_address"]
    busy = []
    for what, port in ports:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                busy.append(f"{what} port {port} on {host} ({e.strerror or e})")
    listed = ", ".join(f"{p}" for _, p in ports)
    if not busy:
        return Check("ports", "ok", f"{listed} free on {host}")
    if unit is not None and unit[0] == "active":
        return Check("ports", "ok", f"{listed} held, pihub.service is active (it holds them)")
    return Check("ports", "fail", "in use: " + "; ".join(busy),
                 f"find the owner with: sudo ss -ltnp 'sport = :{ports[0][1]}'; stop it, or set http.port / "
                 "http.websocket_port in the config")


_TIME_ERROR, _STA_UNSYNC = 5, 0x0040


def _check_clock() -> Check:
    import ctypes  # here, not at the top: the daemon imports this module and never needs ctypes

    class _Timex(ctypes.Structure):
        # struct timex starts with: unsigned int modes; long offset, freq, maxerror, esterror;
        # int status; ... The rest is padding big enough for every architecture's layout.
        _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                    ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                    ("_rest", ctypes.c_char * 256)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError) as e:
        return Check("clock", "skip", f"adjtimex is not available here: {e}")
    if state < 0:
        return Check("clock", "skip", f"adjtimex failed (errno {ctypes.get_errno()})")
    if state == _TIME_ERROR or tx.status & _STA_UNSYNC:
        return Check("clock", "warn",
                     "the kernel clock is not NTP-synchronised (a Pi has no battery clock: until it "
                     "is, timestamps, TLS certificates and schedules are wrong)",
                     "sudo timedatectl set-ntp true (systemd-timesyncd), and check the network; "
                     "`timedatectl` shows 'System clock synchronized: yes' when done")
    return Check("clock", "ok", "the kernel clock is NTP-synchronised")


def _check_disk(workdir: str, min_free_mb: int) -> Check:
    path = Path(workdir)
    while not path.exists() and path != path.parent:
        path = path.parent
    free_mb = shutil.disk_usage(path).free // (1024 * 1024)
    if free_mb >= min_free_mb:
        return Check("disk", "ok", f"{free_mb} MiB free for {workdir}")
    return Check("disk", "fail", f"only {free_mb} MiB free for {workdir} (recordings need >= {min_free_mb} MiB)",
                 "free space (sudo apt clean; sudo journalctl --vacuum-size=50M), or point workdir at a "
                 "bigger disk")


def _check_unit(unit: tuple[str, str] | None) -> Check:
    if unit is None:
        return Check("unit", "skip", "systemd is not PID 1 here: the service's state cannot be asked")
    active, enabled = unit
    if enabled in ("not-found", "unknown") and active in ("inactive", "unknown"):
        return Check("unit", "skip", f"{_UNIT} is not installed (sudo deploy/install.sh installs it)")
    if active == "active" and enabled == "enabled":
        return Check("unit", "ok", f"{_UNIT} is active and enabled")
    fix = "journalctl -u pihub -b --no-pager | tail -50, then: sudo systemctl enable --now pihub"
    status = "fail" if active in ("failed", "inactive", "activating") or enabled != "enabled" else "warn"
    return Check("unit", status, f"{_UNIT} is {active} and {enabled}", fix)


def run_checks(config_path: str | None, *, extra_kinds: Iterable[str] = (), user: str | None = None,
               min_free_mb: int = MIN_FREE_MB) -> list[Check]:
    """Run every check that applies; see the module docstring.

    Args:
        config_path: the config (None: the usual search).
        extra_kinds: device kinds to check although no backend of the config needs them
            (``--with camera``).
        user: the service user whose groups are checked (default: ``pihub`` if it exists,
            else the user running the command).
        min_free_mb: the disk check's threshold, MiB.
    """
    from pihub.errors import ConfigError, ConfigUnreadable

    checks: list[Check] = []
    target = _Target()
    try:
        target.config = load_config(config_path)
    except ConfigUnreadable as e:
        checks.append(Check("config", "fail", str(e), "create it from deploy/config.yaml, or pass -c FILE"))
    except ConfigError as e:
        where = e.problems[0].file if e.problems else (config_path or "the config")
        detail = "; ".join(str(p) for p in e.problems[:5]) + (" ..." if len(e.problems) > 5 else "")
        checks.append(Check("config", "fail", detail, f"fix the lines named, then: pihub check-config {where}"))
    if target.config is not None:
        target.kinds = kinds_for(target.config)
        used = ", ".join(f"{k} ({', '.join(v)})" for k, v in target.kinds.items()) or "no device"
        checks.append(Check("config", "ok", f"{target.config.files[0]} is valid; needs {used}"))
    for k in extra_kinds:
        target.kinds.setdefault(k, [])
    checks.append(_check_native())
    per_kind: dict[str, Callable[[], Check]] = {
        "gpio": lambda: _check_gpio(target.config), "spi": lambda: _check_spi(target.config),
        "serial": lambda: _check_serial(target.config), "camera": _check_camera,
        "audio": _check_audio, "smartcard": _check_smartcard,
        "flic": lambda: _check_flic(target.config),
        "i2c": lambda: Check("i2c", "ok" if _nodes("/dev/i2c-*") else "fail",
                             ", ".join(_nodes("/dev/i2c-*")) or "no /dev/i2c-* node",
                             "" if _nodes("/dev/i2c-*") else "sudo raspi-config nonint do_i2c 0")}
    for kind in KINDS:
        if kind in target.kinds:
            checks.append(per_kind[kind]())
    groups = needs_for(target.kinds)["groups"]
    who = _service_user(user)
    if who == "root" and user is None:
        checks.append(Check("groups", "skip", "no pihub user here and root needs no group "
                                              "(deploy/install.sh creates the pihub user)"))
    else:
        checks.append(_check_groups(who, groups))
    unit = _unit_state()
    checks.append(_check_ports(target.config, unit))
    checks.append(_check_clock())
    workdir = target.config.workdir if target.config is not None else "/var/lib/pihub"
    checks.append(_check_disk(workdir, min_free_mb))
    checks.append(_check_unit(unit))
    return checks


_LABEL = {"ok": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}


@guarded
def cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 0 when no check failed (warnings and skips allowed), else 1; see the module docstring."""
    kinds = [k for v in args.with_kinds for k in v.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"pihub doctor: --with {','.join(unknown)}: unknown device kind; allowed: {', '.join(KINDS)}",
              file=sys.stderr)
        return EXIT_INVALID
    if args.needs:
        config = load_config(args.config)
        found = kinds_for(config)
        print(json.dumps(needs_for([*found, *kinds], config) | {"backends": found}, indent=2))
        return EXIT_OK
    checks = run_checks(args.config, extra_kinds=kinds, user=args.user, min_free_mb=args.min_free_mb)
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{_LABEL[c.status]:<5} {c.name:<10} {c.detail}")
            if c.fix:
                print(f"{'':<5} {'':<10} fix: {c.fix}")
        n = sum(c.status == "fail" for c in checks)
        print(f"{n} problem{'s' if n != 1 else ''}" if n else "no problems")
    return EXIT_INVALID if failed else EXIT_OK


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``pihub doctor`` on the command's subparsers."""
    d = sub.add_parser("doctor", parents=[common],
                       help="check this machine for what breaks on a Pi, with fixes (exit 0 ok, 1 problems)")
    d.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    d.add_argument("--with", dest="with_kinds", action="append", default=[], metavar="KIND[,KIND]",
                   help=f"also check (or, with --needs, also need) these device kinds: {', '.join(KINDS)}")
    d.add_argument("--user", help="the service user whose groups are checked (default: pihub if it exists)")
    d.add_argument("--min-free-mb", type=int, default=MIN_FREE_MB,
                   help=f"free space the data directory needs, MiB (default {MIN_FREE_MB})")
    d.add_argument("--needs", action="store_true",
                   help="print what the config needs from the system (apt packages, groups, unit lines) "
                        "as JSON, for deploy/install.py and systemd/render.py")
    d.set_defaults(func=cmd_doctor)
