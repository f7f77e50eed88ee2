"""A private mpd for tests, benchmarks and the demo: a null audio output, generated tones.

    python hw-mocks/mpd_server.py [--dir DIR] [--port N] [--password PW] [--tracks N]

starts Debian's ``mpd`` (apt ``mpd``) in the foreground on 127.0.0.1 with a ``null`` audio
output (it plays in real time into nothing, with a software mixer so the volume works), and
a music directory of ``--tracks`` short sine tones made with ``ffmpeg -f lavfi``, tagged
``Tone N`` by ``Artist N`` on the album ``Tones``; the database is built before it returns.
The port defaults to a free one; what it chose is printed as one JSON line. Ctrl-C stops it.

From Python: ``with MpdServer(tmpdir, password="pw") as mpd: mpd.port, mpd.restart()``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tones(music: Path, n: int, seconds: float = 30.0) -> list[str]:
    """``n`` tagged Ogg Vorbis sine tones of ``seconds`` each in ``music``; their file names."""
    music.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(1, n + 1):
        name = f"tone{i}.ogg"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={220 * i}:duration={seconds}", "-metadata", f"title=Tone {i}",
                        "-metadata", f"artist=Artist {i}", "-metadata", "album=Tones", str(music / name)],
                       check=True, capture_output=True, timeout=60)
        names.append(name)
    return names


class MpdServer:
    """One mpd process on 127.0.0.1 with its own music dir, database and null output.

    Args:
        directory: where its files go (config, music, database, state, log).
        port: 0 picks a free one.
        password: when set, every command needs it (mpd's ``password`` with all permissions).
        tracks: how many tones to generate.
    """

    def __init__(self, directory: str | Path, *, port: int = 0, password: str | None = None, tracks: int = 3) -> None:
        for tool in ("mpd", "ffmpeg"):
            if shutil.which(tool) is None:
                raise FileNotFoundError(f"{tool} is not installed (apt-get install mpd ffmpeg)")
        self.dir = Path(directory)
        self.port = port or free_port()
        self.password = password
        self.tracks = make_tones(self.dir / "music", tracks)
        self.log_file = self.dir / "mpd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [f'music_directory "{self.dir / "music"}"', f'db_file "{self.dir / "db"}"',
                 f'state_file "{self.dir / "state"}"', f'pid_file "{self.dir / "pid"}"',
                 'bind_to_address "127.0.0.1"', f'port "{self.port}"', 'zeroconf_enabled "no"',
                 'auto_update "no"', 'audio_output {\n  type "null"\n  name "null"\n  mixer_type "software"\n}']
        if password:
            lines.append(f'password "{password}@read,add,control,admin"')
        self.conf = self.dir / "mpd.conf"
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 15.0) -> MpdServer:
        """Start mpd, wait until it answers, and build its database (``timeout`` s).

        Raises:
            RuntimeError: it exited or did not answer in time (its log is in the message).
        """
        log = open(self.log_file, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(["mpd", "--no-daemon", "--stderr", str(self.conf)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.01)  # a child process's start-up: nothing to wait on but the port
        else:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
            self.stop()
            raise RuntimeError(f"mpd did not listen on {self.port} within {timeout} s:\n{text}")
        self.mpc("update", "--wait")
        return self

    def mpc(self, *args: str) -> str:
        """Run ``mpc`` against this server (with its password); its output (when installed)."""
        host = f"{self.password}@127.0.0.1" if self.password else "127.0.0.1"
        out = subprocess.run(["mpc", "-q", "-h", host, "-p", str(self.port), *args], check=True,
                             capture_output=True, text=True, timeout=30)
        return out.stdout

    def stop(self) -> None:
        """Stop mpd (SIGTERM, then SIGKILL after 5 s); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Stop and start again on the same port (clients must reconnect)."""
        self.stop()
        self.start()

    def __enter__(self) -> MpdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--dir", help="where mpd's files go (default: a new temp dir)")
    ap.add_argument("--port", type=int, default=0, help="mpd's port (default: a free one)")
    ap.add_argument("--password", help="require this password (default: none)")
    ap.add_argument("--tracks", type=int, default=3, help="how many tones to generate (default 3)")
    args = ap.parse_args(argv)
    directory = args.dir or tempfile.mkdtemp(prefix="pihub-mpd-")
    server = MpdServer(directory, port=args.port, password=args.password, tracks=args.tracks).start()
    print(json.dumps({"host": "127.0.0.1", "port": server.port, "dir": str(directory), "tracks": server.tracks}),
          flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
