"""``make demo``: pihub on the mock rig, with every device simulator this machine can run.

    .venv/bin/python hw-mocks/demo.py [--duration S] [--no-DEVICE...]

Starts the simulators of ``hw-mocks/`` (each one a separate process, as the real devices
would be), waits until each says it is ready, writes ``run/demo.yaml`` (the base rig
``hw-mocks/demo.yaml`` plus one ``hw-mocks/demo.d/DEVICE.yaml`` per simulator that runs),
prints the panel's address with a login and an API token, and runs ``pihub run`` on it.
Ctrl-C (or ``--duration``) stops pihub, then the simulators.

Devices, and what each needs (a device whose needs are missing is left out, and the
reason is printed with the command that would add it):

========== ============================================ ====================================
device     simulator                                    needs
========== ============================================ ====================================
serial     ``serial_sensor.py`` on a pty (run/ttySENSOR) nothing
flic       ``fake_flicd.py`` on 127.0.0.1:5551           nothing
midi       ``midi_controller.py`` on a private JACK      ``jackd`` (apt jackd2), mido and
           server ``pihubdemo``                          python-rtmidi in the venv
smartcard  ``virtual_card.py --pcscd``                   root, pcscd, vsmartcard-vpcd,
                                                         iproute2; no other pcscd running
camera     none: ``camera.pi`` with ``driver: mock`` runs   ``ffmpeg`` (apt ffmpeg); watch with
           its own ffmpeg test picture on port 2222      ``vlc tcp/h264://127.0.0.1:2222``
mqtt       ``mqtt_broker.py``: a private Mosquitto on     ``mosquitto`` (apt mosquitto)
           127.0.0.1:18830, user ``pihub-demo``
mpd        ``mpd_server.py``: a private mpd on 6600       ``mpd`` and ``ffmpeg`` (apt)
           with three generated tones
file_watch none: watches ``run/inbox``                   inotify_simple in the venv
========== ============================================ ====================================

The login: user ``demo`` with a random password, created on the first run and kept in
``run/demo-login`` (git-ignored, mode 0600); the API token in ``run/demo-token`` is given
to pihub as its headless admin token (``PIHUB_API_TOKEN``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUN = ROOT / "run"
PY = sys.executable
PIHUB = Path(PY).parent / "pihub"
READY_TIMEOUT_S = 20.0
JACK_SERVER = "pihubdemo"
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")


@dataclass
class Device:
    """One simulator: how to start it, how it says it is ready, what it needs."""

    name: str
    what: str                                    # one line for the banner
    argv: list[str] | None                       # None: nothing to start (the backend is its own rig)
    ready: Callable[[str], bool]                 # true for the output line that means ready
    missing: Callable[[], str | None]            # why it cannot run here, with the fix; None: it can
    pihub_env: dict[str, str] = field(default_factory=dict)
    extra_config: str = ""                       # YAML written into run/demo.yaml (paths known only here)
    proc: subprocess.Popen[str] | None = None


def _module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _midi_missing() -> str | None:
    if shutil.which("jackd") is None:
        return "jackd is not installed (sudo apt-get install --no-install-recommends jackd2)"
    if not (_module("mido") and _module("rtmidi")):
        return "mido / python-rtmidi are not in this venv (.venv/bin/pip install 'pihub[midi]')"
    return None


def _card_missing() -> str | None:
    if os.geteuid() != 0:
        return "the virtual card runs its own pcscd, which needs root (sudo make demo)"
    if shutil.which("pcscd") is None or not VPCD_DRIVER.exists():
        return "pcscd / vsmartcard-vpcd are not installed (sudo apt-get install pcscd vsmartcard-vpcd)"
    if shutil.which("ip") is None:
        return "iproute2 is not installed (sudo apt-get install iproute2)"
    return None


def _tool_missing(tool: str, package: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (sudo apt-get install --no-install-recommends {package})"
        return None

    return missing


def _mpd_missing() -> str | None:
    for tool, package in (("mpd", "mpd"), ("ffmpeg", "ffmpeg")):
        if shutil.which(tool) is None and not Path("/usr/bin", tool).exists():
            return f"{tool} is not installed (sudo apt-get install --no-install-recommends {package})"
    return None


def _inotify_missing() -> str | None:
    return None if _module("inotify_simple") else "inotify_simple is not in this venv (.venv/bin/pip install 'pihub[file_watch]')"


def devices() -> list[Device]:
    """The rig's simulators, in start order."""
    return [
        Device("serial", "a temperature/humidity sensor on a pty (run/ttySENSOR), one reading a second",
               [PY, str(HERE / "serial_sensor.py"), "--link", str(RUN / "ttySENSOR"), "--interval", "1",
                "--seed", "1"],
               ready=lambda line: "ready on" in line, missing=lambda: None),
        Device("flic", "a Flic button 80:e4:da:70:a1:c0 on a fake flicd (127.0.0.1:5551), double press every 5 s",
               [PY, str(HERE / "fake_flicd.py"), "--port", "5551", "--control-port", "5552",
                "--button", "80:e4:da:70:a1:c0", "--cycle", "5"],
               ready=lambda line: line.startswith("fake flicd on"), missing=lambda: None),
        Device("midi", f"a MIDI controller on JACK server {JACK_SERVER!r}: control 7 swept, middle C, every 5 s",
               [PY, str(HERE / "midi_controller.py"), "--jackd", JACK_SERVER, "--cycle", "5"],
               ready=lambda line: line == "ready", missing=_midi_missing,
               pihub_env={"JACK_DEFAULT_SERVER": JACK_SERVER, "JACK_NO_START_SERVER": "1",
                          "JACK_NO_AUDIO_RESERVATION": "1"}),
        Device("smartcard", "a key card in a virtual reader on a real pcscd, in and out every 5 s",
               [PY, str(HERE / "virtual_card.py"), "--pcscd", "--cycle", "5"],
               ready=lambda line: line == "ready", missing=_card_missing),
        Device("camera", "camera.pi on ffmpeg's test picture: vlc tcp/h264://127.0.0.1:2222, "
                         "http://127.0.0.1:8008/camera/camera.pi/photo.jpg",
               None, ready=lambda line: True, missing=_tool_missing("ffmpeg", "ffmpeg")),
        Device("mqtt", "a private Mosquitto on 127.0.0.1:18830 (user pihub-demo / pihub), topics home/#, "
                       "Home Assistant discovery on",
               [PY, str(HERE / "mqtt_broker.py"), "--port", "18830", "--user", "pihub-demo:pihub"],
               ready=lambda line: line.startswith('{"host"'), missing=_tool_missing("mosquitto", "mosquitto")),
        Device("mpd", "a private mpd on 127.0.0.1:6600 with three generated tones (null audio output): "
                      "music.mpd.play resource=tone1.ogg",
               [PY, str(HERE / "mpd_server.py"), "--port", "6600", "--dir", str(RUN / "mpd")],
               ready=lambda line: line.startswith('{"host"'), missing=_mpd_missing),
        Device("file_watch", "run/inbox watched: drop a file there", None, ready=lambda line: True,
               missing=_inotify_missing,
               extra_config=f'file_watch: {{paths: [{{path: "{RUN / "inbox"}", recursive: true}}]}}\n'),
    ]


def start(device: Device) -> str | None:
    """Start ``device`` and wait until it is ready; None, or why it did not start."""
    if device.argv is None:
        return None
    proc = subprocess.Popen(device.argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    device.proc = proc
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        # keeps reading after ready, so that a chatty simulator never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, name=f"demo-{device.name}", daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            return f"exited ({proc.wait()}): {' | '.join(seen[-3:]) or 'no output'}"
        seen.append(line)
        if device.ready(line):
            return None
    stop(device)
    return f"not ready within {READY_TIMEOUT_S:.0f} s: {' | '.join(seen[-3:]) or 'no output'}"


def stop(device: Device) -> None:
    """SIGTERM the simulator's process group; SIGKILL after 5 s."""
    proc, device.proc = device.proc, None
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def write_config(running: Sequence[Device], http_port: int | None) -> Path:
    """``run/demo.yaml``: the base rig plus the fragments of the running devices."""
    includes = ["../hw-mocks/demo.yaml"]
    includes += [f"../hw-mocks/demo.d/{d.name}.yaml" for d in running if (HERE / "demo.d" / f"{d.name}.yaml").exists()]
    text = "# written by hw-mocks/demo.py at each start: edit hw-mocks/demo.yaml or hw-mocks/demo.d/ instead\n"
    text += "include:\n" + "".join(f"  - {p}\n" for p in includes)
    text += "".join(d.extra_config for d in running)
    if http_port is not None:  # tests: a free port instead of demo.yaml's 8008 (a warning names both)
        text += f"http: {{port: {http_port}, websocket_port: {http_port + 1}}}\n"
    path = RUN / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    if not (path.exists() and path.read_text(encoding="utf-8").strip()):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(make() + "\n")
    return path.read_text(encoding="utf-8").strip()


def ensure_login(config: Path) -> str:
    """The demo user's password; creates the user (or resets its password) when needed."""
    login = RUN / "demo-login"
    fresh = not login.exists()
    password = _secret_file(login, lambda: secrets.token_urlsafe(12))
    if fresh:
        for verb in ("add", "passwd"):  # the workdir may already hold a demo user from before
            cp = subprocess.run([str(PIHUB), "--config", str(config), "user", verb, "demo", "--password-stdin"],
                                input=password + "\n", text=True, capture_output=True, cwd=ROOT)
            if cp.returncode == 0:
                break
        else:
            login.unlink()
            raise SystemExit(f"demo: cannot create the demo user: {cp.stderr.strip()}")
    return password


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pihub on the mock rig (make demo)")
    ap.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    ap.add_argument("--http-port", type=int, help="HTTP port instead of 8008 (the websocket gets the next one)")
    for d in devices():
        ap.add_argument(f"--no-{d.name}", action="store_true", help=f"leave out the {d.name} simulator")
    args = ap.parse_args(argv)
    # SIGTERM (systemd, a test's teardown) ends the demo as Ctrl-C does: the finally below
    # stops the simulators, which run in their own sessions and would otherwise be left
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    RUN.mkdir(exist_ok=True)
    (RUN / "inbox").mkdir(exist_ok=True)
    token = _secret_file(RUN / "demo-token", lambda: "ph_demo_" + secrets.token_urlsafe(24))
    running: list[Device] = []
    try:
        print("pihub demo: the mock rig", flush=True)
        for d in devices():
            why = f"left out (--no-{d.name})" if getattr(args, f"no_{d.name}") else d.missing()
            if why is None:
                why = start(d)
            if why is None:
                running.append(d)
                print(f"  {d.name:10} {d.what}", flush=True)
            else:
                print(f"  {d.name:10} off: {why}", flush=True)
        config = write_config(running, args.http_port)
        password = ensure_login(config)
        port = args.http_port or 8008
        print(f"\npanel:  http://127.0.0.1:{port}/   login: demo / {password}", flush=True)
        print(f"        http://127.0.0.1:{port}/dashboard/demo (a wall-tablet dashboard)", flush=True)
        print(f"API:    curl -s -H 'Authorization: Bearer {token}' "
              f"-d '{{\"type\":\"request\",\"action\":\"mock.history\"}}' http://127.0.0.1:{port}/execute",
              flush=True)
        print(f"events: ws://127.0.0.1:{port + 1}/ws/events (same token)\n", flush=True)
        env = {**os.environ, "PIHUB_API_TOKEN": token}
        for d in running:
            env.update(d.pihub_env)
        pihub = subprocess.Popen([str(PIHUB), "--config", str(config), "run"], cwd=ROOT, env=env)
        try:
            pihub.wait(args.duration)
        except subprocess.TimeoutExpired:
            pihub.send_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # the terminal sent SIGINT to pihub as well
        try:
            rc = pihub.wait(15)
        except subprocess.TimeoutExpired:
            pihub.kill()
            rc = pihub.wait()
        return 0 if rc in (0, -signal.SIGINT, 128 + signal.SIGINT) else rc
    finally:
        for d in reversed(running):
            stop(d)


if __name__ == "__main__":
    sys.exit(main())
