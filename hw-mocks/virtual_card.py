#!/usr/bin/env python3
"""A virtual smart card for vsmartcard's virtual reader (vpcd), and a private pcscd to read it.

A card reader on the Pi is a USB CCID reader served by ``pcscd``; here the reader is
vsmartcard's ``vpcd`` driver loaded by a real ``pcscd`` (Debian ``pcscd`` +
``vsmartcard-vpcd``), and this program is the card. pihub, ``pcsc_scan`` or any PC/SC
client sees a reader ``Virtual PCD 00 00`` and a card coming and going in it.

The card speaks vpcd's wire protocol (vsmartcard ``vpcd.c``): a TCP connection from the
card to vpcd (``127.0.0.1:35963`` for the first slot) is *card inserted*, closing it is
*card removed*; every message is a 2-byte big-endian length then the payload. vpcd sends
1-byte control codes (``00`` power off, ``01`` power on, ``02`` reset: no answer; ``04``:
the card answers its ATR) and C-APDUs (the card answers an R-APDU). The card answers
``FF CA 00 00 00`` (PC/SC GET DATA, "the card's UID") with its UID and ``90 00``, or with
``6A 81`` (function not supported) when it has no UID, like a contact card; any other
APDU gets ``6D 00`` (instruction not supported).

With ``--pcscd`` it also runs pcscd, the way HARDWARE.md §3.4 shows: vpcd's server binds
*every* address on fixed ports 35963/35964, so pcscd runs in a private network namespace
(``unshare -n``, only ``lo`` up) and this program runs inside it too; pcscd's socket is a
file (``/run/pcscd/pcscd.comm``), so clients outside the namespace reach it. pcscd is a
child of this program: ``pcscd stop`` / ``pcscd start`` commands restart it (the card
reconnects by itself when it is inserted). Needs root (or CAP_SYS_ADMIN) and no other
pcscd on the machine (its socket path is fixed); two ``--pcscd`` runs take turns (the
second waits for the first to exit: a lock on ``/run/lock/pihub-virtual-card.lock``).

Command line (one command; ``--help`` lists the options)::

    python3 hw-mocks/virtual_card.py --pcscd [--atr "3B 8F 80 01 ..."] [--uid "04 A1 B2 C3"]
        [--inserted] [--cycle SECONDS] [--port 35963] [--pcscd-log FILE]

It prints ``ready`` on stdout when it can take commands, then reads one command per line
on stdin and answers each with one line, ``ok <command>`` once it has taken effect (for
``insert``: vpcd has accepted the connection) or ``error <why>``:

====================  ===================================================================
``insert``            insert the card (connect to vpcd)
``remove``            remove it (close the connection)
``atr HEX``           the ATR of the next insertion (hex, spaces ignored)
``uid HEX`` / ``uid none``  the UID it answers to ``FF CA 00 00 00`` (none: ``6A 81``)
``pcscd stop``        stop pcscd (``--pcscd`` only); ``pcscd start`` starts it again
``status``            ``ok status inserted=0|1 pcscd=0|1 atr=HEX uid=HEX|none``
``quit``              remove the card, stop pcscd, exit (also on end of input, SIGTERM)
====================  ===================================================================

``--cycle S`` inserts and removes the card every S seconds by itself (``make demo``).
In-process (tests): :class:`VirtualCardProcess` runs this program and sends it commands.

Standard library only: it shares no code with pihub.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Self

__all__ = ["DEFAULT_ATR", "DEFAULT_UID", "VirtualCard", "VirtualCardProcess", "main", "parse_hex"]

#: a MIFARE Classic 1K as a PC/SC contactless reader reports it (PC/SC part 3 ATR)
DEFAULT_ATR = "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A"
DEFAULT_UID = "04 A1 B2 C3 D4 E5 F6"
VPCD_PORT = 35963  # vpcd's first slot (reader "Virtual PCD 00 00"); the second is +1
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
GET_UID = b"\xff\xca\x00\x00"  # PC/SC GET DATA, P1=00: the card's identifier
SW_OK, SW_NO_UID, SW_UNKNOWN_INS = b"\x90\x00", b"\x6a\x81", b"\x6d\x00"
_IN_NETNS = "PIHUB_VIRTUAL_CARD_NETNS"  # set by the re-exec under ``unshare -n``
LOCK_FILE = "/run/lock/pihub-virtual-card.lock"  # one --pcscd run at a time on the machine


def parse_hex(text: str, what: str) -> bytes:
    """Bytes from hex text (spaces, colons and case ignored); ValueError naming ``what``."""
    digits = "".join(text.replace(":", " ").split())
    try:
        if not digits or len(digits) % 2:
            raise ValueError
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"{what} must be hex bytes such as '3B 8F 80 01', not {text!r}") from None


def _hex(data: bytes | None) -> str:
    return "none" if data is None else data.hex(" ").upper()


class VirtualCard:
    """The card: connects to vpcd on :meth:`insert`, answers it, disconnects on :meth:`remove`.

    Args:
        atr: the Answer To Reset (bytes).
        uid: what ``FF CA 00 00 00`` answers (before ``90 00``); None answers ``6A 81``.
        host, port: vpcd's server (one slot per port).
    """

    def __init__(self, atr: bytes, uid: bytes | None, host: str = "127.0.0.1", port: int = VPCD_PORT) -> None:
        self.atr, self.uid = atr, uid
        self.host, self.port = host, port
        self.wanted = False  # inserted by command (kept across a pcscd restart)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def inserted(self) -> bool:
        """The connection to vpcd is open."""
        return self._sock is not None

    def insert(self, timeout: float = 10.0) -> None:
        """Connect to vpcd (retrying while it is not listening yet, up to ``timeout`` s).

        Raises:
            OSError: vpcd did not accept a connection within ``timeout`` seconds.
        """
        self.wanted = True
        with self._lock:
            if self._sock is not None:
                return
            deadline = time.monotonic() + timeout
            while True:
                try:
                    sock = socket.create_connection((self.host, self.port), timeout=1.0)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)  # vpcd listens once pcscd has loaded it
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        threading.Thread(target=self._serve, args=(sock,), name="virtual-card", daemon=True).start()

    def remove(self) -> None:
        """Close the connection: vpcd reports the card gone at its next poll."""
        self.wanted = False
        self._drop()

    def _drop(self, sock: socket.socket | None = None) -> None:
        with self._lock:
            if self._sock is None or (sock is not None and sock is not self._sock):
                return
            sock, self._sock = self._sock, None
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def answer(self, message: bytes) -> bytes | None:
        """The card's reply to one vpcd message (None: no reply)."""
        if len(message) == 1:
            return self.atr if message == b"\x04" else None
        if message[:4] == GET_UID:
            return SW_NO_UID if self.uid is None else self.uid + SW_OK
        return SW_UNKNOWN_INS

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                head = _recv_exact(sock, 2)
                if head is None:
                    break
                message = _recv_exact(sock, struct.unpack("!H", head)[0])
                if message is None:
                    break
                reply = self.answer(message)
                if reply is not None:
                    sock.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        self._drop(sock)  # vpcd went away (pcscd stopped): the card is out until reinserted


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _Pcscd:
    """pcscd with vpcd as its only reader driver, started in this (private) namespace."""

    def __init__(self, port: int, log: str | None) -> None:
        self.port, self.log_path = port, log
        self.confdir = Path(tempfile.mkdtemp(prefix="pihub-vpcd-"))
        (self.confdir / "vpcd").write_text(
            f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x{port:04X}\n'
            f"LIBPATH {VPCD_DRIVER}\nCHANNELID 0x{port:04X}\n", encoding="ascii")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            return
        if PCSCD_SOCKET.exists() and _socket_alive(PCSCD_SOCKET):
            raise RuntimeError(f"another pcscd is running ({PCSCD_SOCKET} answers); stop it first "
                               f"(systemctl stop pcscd.socket pcscd)")
        out: IO[bytes] | int = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(["pcscd", "-f", "-i", "-a", "-c", str(self.confdir)],
                                         stdout=out, stderr=subprocess.STDOUT)
        finally:
            if not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + timeout
        while not _socket_alive(PCSCD_SOCKET):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                self.stop()
                raise RuntimeError(f"pcscd did not start (exit status {code}; see --pcscd-log)")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + timeout  # pcscd removes its socket on the way out
        while PCSCD_SOCKET.exists() and time.monotonic() < deadline and not _socket_alive(PCSCD_SOCKET):
            with contextlib.suppress(OSError):
                PCSCD_SOCKET.unlink()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.confdir, ignore_errors=True)


def _socket_alive(path: Path) -> bool:
    """Something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _enter_private_netns() -> None:
    """Re-exec this program under ``unshare -n`` with ``lo`` up (vpcd binds every address)."""
    if os.environ.get(_IN_NETNS) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    for tool in ("unshare", "ip", "pcscd"):
        if shutil.which(tool) is None:
            sys.exit(f"virtual_card: {tool!r} not found (apt-get install util-linux iproute2 pcscd vsmartcard-vpcd)")
    if not Path(VPCD_DRIVER).exists():
        sys.exit(f"virtual_card: {VPCD_DRIVER} not found (apt-get install vsmartcard-vpcd)")
    env = dict(os.environ, **{_IN_NETNS: "1"})
    os.execvpe("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


def _lock_machine_pcscd(timeout: float = 300.0) -> None:
    """Wait for the machine's pcscd slot: pcscd's socket path is fixed, so two ``--pcscd``
    runs (two test sessions on one machine) take turns; the lock is held until exit."""
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return  # the descriptor stays open (and locked) for the life of the process
        except BlockingIOError:
            if time.monotonic() > deadline:
                sys.exit(f"virtual_card: another virtual card's pcscd held {LOCK_FILE} for {timeout:g} s")
            if not told:
                print(f"virtual_card: waiting for another virtual card's pcscd ({LOCK_FILE})", file=sys.stderr)
                told = True
            time.sleep(0.05)


def _command(card: VirtualCard, pcscd: _Pcscd | None, line: str) -> str:
    """Run one control command; the reply line."""
    words = line.split()
    if not words:
        return "error empty command"
    cmd, rest = words[0].lower(), line.strip()[len(words[0]):].strip()
    try:
        if cmd == "insert":
            card.insert()
        elif cmd == "remove":
            card.remove()
        elif cmd == "atr":
            card.atr = parse_hex(rest, "atr")
        elif cmd == "uid":
            card.uid = None if rest.lower() == "none" else parse_hex(rest, "uid")
        elif cmd == "pcscd" and rest in ("start", "stop"):
            if pcscd is None:
                return "error pcscd is not run by this program (start it with --pcscd)"
            if rest == "stop":
                pcscd.stop()
                card._drop()
            else:
                pcscd.start()
                if card.wanted:
                    card.insert()
        elif cmd == "status":
            running = pcscd is not None and pcscd.proc is not None
            return (f"ok status inserted={int(card.inserted)} pcscd={int(running)} "
                    f"atr={_hex(card.atr).replace(' ', '')} uid={_hex(card.uid).replace(' ', '')}")
        else:
            return f"error unknown command {line.strip()!r} (insert, remove, atr HEX, uid HEX|none, " \
                   "pcscd start|stop, status, quit)"
    except (OSError, RuntimeError, ValueError) as e:
        return f"error {cmd}: {e}"
    return f"ok {line.strip()}"


def main(argv: list[str] | None = None) -> int:
    """Run the card (and pcscd with ``--pcscd``), reading commands on stdin."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atr", default=DEFAULT_ATR, help="the card's ATR, hex (default: a MIFARE 1K)")
    p.add_argument("--uid", default=DEFAULT_UID, help="the UID answered to FF CA 00 00 00, hex, or 'none'")
    p.add_argument("--port", type=int, default=VPCD_PORT, help="vpcd's port (slot 0: 35963)")
    p.add_argument("--pcscd", action="store_true",
                   help="run pcscd with vpcd in a private network namespace (needs root)")
    p.add_argument("--pcscd-log", help="append pcscd's log (-i -a: info and APDUs) to this file")
    p.add_argument("--inserted", action="store_true", help="insert the card at start")
    p.add_argument("--cycle", type=float, default=0.0, help="insert/remove every this many seconds (demo)")
    args = p.parse_args(argv)
    try:
        atr = parse_hex(args.atr, "--atr")
        uid = None if args.uid.lower() == "none" else parse_hex(args.uid, "--uid")
    except ValueError as e:
        p.error(str(e))
    if args.pcscd:
        _enter_private_netns()
        _lock_machine_pcscd()
    card = VirtualCard(atr, uid, port=args.port)
    pcscd = _Pcscd(args.port, args.pcscd_log) if args.pcscd else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()  # one command at a time (stdin and the cycle)

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        if pcscd is not None:
            pcscd.start()
        if args.inserted:
            card.insert()
        say("ready")
        if args.cycle > 0:
            def cycle() -> None:
                while not stop.wait(args.cycle):
                    with lock:
                        say(_command(card, pcscd, "remove" if card.wanted else "insert"))
            threading.Thread(target=cycle, name="cycle", daemon=True).start()

        def read_stdin() -> None:
            for line in sys.stdin:
                if line.strip().lower() == "quit":
                    stop.set()
                    return
                if line.strip():
                    with lock:
                        say(_command(card, pcscd, line))
            if args.cycle <= 0:  # end of input; a cycling demo card runs on (stdin may be /dev/null)
                stop.set()

        threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    except RuntimeError as e:
        print(f"virtual_card: {e}", file=sys.stderr)
        return 1
    finally:
        card.remove()
        if pcscd is not None:
            pcscd.close()
    say("ok quit")
    return 0


class VirtualCardProcess:
    """This program as a child process, for tests: ``with VirtualCardProcess(...) as card:``.

    Starts ``virtual_card.py --pcscd`` (pcscd with vpcd in a private network namespace,
    plus the card) and waits for ``ready``; :meth:`command` sends one command and
    returns its ``ok`` line (raising on ``error``).

    Args:
        atr, uid: the card's (hex text; ``uid="none"`` for a card without a UID).
        inserted: insert the card at start.
        pcscd_log: a file for pcscd's log, or None.
        timeout: seconds to wait for each reply.
        start_timeout: seconds to wait for ``ready`` (another ``--pcscd`` run on the
            machine, e.g. a second test session, is waited for).
    """

    def __init__(self, atr: str = DEFAULT_ATR, uid: str = DEFAULT_UID, *, inserted: bool = False,
                 pcscd_log: str | os.PathLike[str] | None = None, timeout: float = 20.0,
                 start_timeout: float = 300.0) -> None:
        self.argv = [sys.executable, os.path.abspath(__file__), "--pcscd", "--atr", atr, "--uid", uid]
        if inserted:
            self.argv.append("--inserted")
        if pcscd_log is not None:
            self.argv += ["--pcscd-log", os.fspath(pcscd_log)]
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()

    def start(self) -> Self:
        """Start it and wait for ``ready``. Raises RuntimeError with its stderr if it fails."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, name="virtual-card-out", daemon=True).start()
        self._expect("ready", self.start_timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._lines.append("")  # end of output
            self._cond.notify_all()

    def _expect(self, prefix: str, timeout: float | None = None) -> str:
        timeout = self.timeout if timeout is None else timeout
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._lines), timeout):
                raise RuntimeError(f"virtual card: no reply within {timeout} s")
            line = self._lines.pop(0)
        if not line.startswith(prefix):
            err = ""
            if line == "" and self.proc is not None:
                self.proc.wait(5)
                err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"virtual card: expected {prefix!r}, got {line!r} {err}".strip())
        return line

    def command(self, line: str) -> str:
        """Send one command (see the module docstring); its ``ok`` reply line."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._expect("ok")

    def insert(self) -> None:
        self.command("insert")

    def remove(self) -> None:
        self.command("remove")

    def stop(self) -> None:
        """``quit``: remove the card, stop pcscd, wait for the exit (kill after the timeout)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write("quit\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        try:
            proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                f.close()  # type: ignore[union-attr]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
