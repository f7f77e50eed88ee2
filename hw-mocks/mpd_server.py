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
import subprocess
import sys
import tempfile
from pathlib import Path

# child_server.py lies beside this file; put its folder on the path however this file is
# loaded (run as a script, or by path from the tests and benchmarks)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_server import ChildServer, free_port  # noqa: E402


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


class MpdServer(ChildServer):
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

    label = "mpd"

    def command(self) -> list[str]:
        return ["mpd", "--no-daemon", "--stderr", str(self.conf)]

    def ports(self) -> list[int]:
        return [self.port]

    def start(self, timeout: float = 15.0) -> MpdServer:
        """Start mpd, wait until it answers, and build its database (``timeout`` s).

        Raises:
            RuntimeError: it exited or did not answer in time (its log is in the message).
        """
        super().start(timeout)
        self.mpc("update", "--wait")
        return self

    def mpc(self, *args: str) -> str:
        """Run ``mpc`` against this server (with its password); its output (when installed)."""
        host = f"{self.password}@127.0.0.1" if self.password else "127.0.0.1"
        out = subprocess.run(["mpc", "-q", "-h", host, "-p", str(self.port), *args], check=True,
                             capture_output=True, text=True, timeout=30)
        return out.stdout


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
