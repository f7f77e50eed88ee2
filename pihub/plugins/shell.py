"""``shell.exec``: run a program, without a shell, when the config allows it.

Off by default: it runs programs as the pihub user, so it needs ``shell: {enabled: true}``
in the config. ``allowed_commands`` narrows it further to listed programs.

Choices, and how they differ from Platypush's ``shell.exec``:

* ``cmd`` is an argv list (``["ls", "-l", "/tmp"]``) run with ``shell=False``; a string is
  refused, because splitting it would need a shell's quoting rules and running it would
  need a shell (with its injection risks when ``${...}`` values are spliced in).
* ``allowed_commands`` matches ``argv[0]`` exactly: ``echo`` allows ``echo`` looked up in
  pihub's PATH, not ``/tmp/x/echo``; list ``/usr/bin/echo`` to pin a path.
* The output is ``{"stdout": str, "stderr": str, "returncode": int}``; stdout is never
  JSON-decoded (``echo 123`` gives ``"123\\n"``, Platypush gives ``123``).
* A non-zero exit status is reported as an error, with the output still returned, as
  Platypush does; ``ignore_errors: true`` turns that off.
* The command runs in its own session (process group). On timeout the whole group is
  killed with SIGKILL, so children it started die too, and the action reports the
  timeout with the output read so far.
* Each of stdout and stderr keeps at most :data:`OUTPUT_CAP` bytes; the rest is read and
  dropped (the command is never blocked on a full pipe), and the kept text ends with a
  note saying how much was dropped. Text is decoded as UTF-8, bad bytes replaced.
* stdin is ``/dev/null``. ``env`` adds to (or overrides) pihub's environment.
* :meth:`ShellPlugin.close` kills the process groups of commands still running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from typing import Annotated, Any, ClassVar

from pihub.config.schema import Field, Schema
from pihub.errors import ActionError
from pihub.plugin import Plugin, action

log = logging.getLogger("pihub.plugins.shell")

#: Bytes of stdout (and, separately, of stderr) kept per command: 1 MiB.
OUTPUT_CAP = 1 << 20

_READ_SIZE = 65536
_ARGV_HINT = "an argv list such as ['ls', '-l']: commands run without a shell"
_ENABLE_HINT = "set 'enabled: true' in the 'shell:' section of the config (shell: {enabled: true})"


class _Capture:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        """Keep what fits under the cap from ``chunk``; count the rest as dropped."""
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        """The kept bytes as text, with a note when some were dropped."""
        text = self.kept.decode("utf-8", errors="replace")
        if self.dropped:
            text += (f"\n[pihub: output truncated: kept the first {len(self.kept)} bytes, "
                     f"dropped {self.dropped}]")
        return text


class ShellPlugin(Plugin):
    """Run programs from hooks, procedures and HTTP, when enabled.

    Args:
        enabled: allow ``shell.exec`` at all.
        timeout: default seconds before a command is killed (> 0).
        allowed_commands: when given, ``argv[0]`` must be one of these, exactly.

    Raises:
        ValueError: a non-positive timeout or a non-list ``allowed_commands``.
    """

    name: ClassVar[str] = "shell"
    config_schema: ClassVar[Schema | None] = Schema(
        {
            "enabled": Field(bool, default=False,
                             doc="allow shell.exec (off by default: it runs programs as the pihub user)"),
            "timeout": Field(float, default=10.0, min=0.001,
                             doc="seconds before a command is killed, unless the call gives its own"),
            "allowed_commands": Field(list[str], default=None,
                                      doc="if set, the programs allowed: argv[0] must equal one"),
        },
        doc="shell.exec: run programs given as argv lists, without a shell.",
    )

    def __init__(self, enabled: bool = False, timeout: float = 10.0,
                 allowed_commands: list[str] | None = None) -> None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"shell.timeout must be a number of seconds > 0, not {timeout!r}")
        if allowed_commands is not None and (
                not isinstance(allowed_commands, list)
                or not all(isinstance(c, str) and c for c in allowed_commands)):
            raise ValueError(f"shell.allowed_commands must be a list of program names, "
                             f"not {allowed_commands!r}")
        self.enabled = bool(enabled)
        self.timeout = float(timeout)
        self.allowed_commands = list(allowed_commands) if allowed_commands is not None else None
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    @action
    def exec(  # noqa: A003 - Platypush's action name
        self,
        cmd: Annotated[list[str], _ARGV_HINT],
        timeout: float | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        ignore_errors: bool = False,
    ) -> tuple[dict[str, Any], str | None]:
        """Run a program and return its output: ``args: {cmd: [ls, -l, /tmp]}``.

        Args:
            cmd: the program and its arguments, as a list; no shell is involved, so no
                quoting, globbing, pipes or ``$VAR`` expansion.
            timeout: seconds before the command is killed; default: ``shell.timeout``.
            cwd: the working directory; default: pihub's.
            env: environment variables to add or override.
            ignore_errors: do not report a non-zero exit status as an error.

        Returns:
            ``{"stdout": str, "stderr": str, "returncode": int}``, plus an error when the
            command timed out or exited with a non-zero status.
        """
        if not self.enabled:
            raise ActionError(f"running commands is disabled: {_ENABLE_HINT}")
        # the action layer refuses a string already; this guards Python callers
        if isinstance(cmd, str):  # type: ignore[unreachable]
            raise ActionError(f"cmd must be {_ARGV_HINT}, not the string {cmd!r}")
        if not cmd:
            raise ActionError(f"cmd must not be empty: give {_ARGV_HINT}")
        if self.allowed_commands is not None and cmd[0] not in self.allowed_commands:
            raise ActionError(f"command {cmd[0]!r} is not in shell.allowed_commands "
                              f"(allowed: {', '.join(self.allowed_commands) or 'none'})")
        limit = self.timeout if timeout is None else timeout
        if not limit > 0:
            raise ActionError(f"timeout must be > 0 seconds, not {timeout!r}")
        if cwd is not None and not os.path.isdir(cwd):
            raise ActionError(f"cwd {cwd!r} is not a directory")
        full_env = None if env is None else {**os.environ, **env}
        result, timed_out = self._run(list(cmd), limit, cwd, full_env)
        rc = result["returncode"]
        if timed_out:
            return result, f"command {cmd[0]!r} timed out after {limit:g} s and was killed"
        if rc < 0 and not ignore_errors:
            return result, f"command {cmd[0]!r} was killed by signal {-rc}"
        if rc != 0 and not ignore_errors:
            return result, f"command {cmd[0]!r} exited with status {rc}"
        return result, None

    def _run(self, argv: list[str], timeout: float, cwd: str | None,
             env: dict[str, str] | None) -> tuple[dict[str, Any], bool]:
        """Run ``argv`` until it ends or ``timeout`` seconds pass.

        Returns:
            The result dict and whether the command was killed for the timeout.

        Raises:
            ActionError: the program cannot be started (not found, not executable).
        """
        log.debug("shell.exec: %r (timeout %g s, cwd %r)", argv, timeout, cwd)
        deadline = time.monotonic() + timeout
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, cwd=cwd, env=env, shell=False,
                                    close_fds=True, start_new_session=True)
        except FileNotFoundError:
            raise ActionError(f"cannot run {argv[0]!r}: command not found") from None
        except PermissionError:
            raise ActionError(f"cannot run {argv[0]!r}: permission denied") from None
        except OSError as e:
            raise ActionError(f"cannot run {argv[0]!r}: {e.strerror or e}") from None
        with self._lock:
            self._running.add(proc)
        out, err = _Capture(OUTPUT_CAP), _Capture(OUTPUT_CAP)
        timed_out = False
        assert proc.stdout is not None and proc.stderr is not None
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ, out)
                sel.register(proc.stderr, selectors.EVENT_READ, err)
                while sel.get_map():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        timed_out = True
                        break
                    for key, _ in sel.select(remaining):
                        chunk = os.read(key.fd, _READ_SIZE)
                        if chunk:
                            key.data.add(chunk)
                        else:
                            sel.unregister(key.fileobj)
            if not timed_out:
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    # Closed its pipes but kept running (daemonised child, `exec >&-`).
                    timed_out = True
            if timed_out:
                _kill_group(proc)
                proc.wait()
        finally:
            proc.stdout.close()
            proc.stderr.close()
            if proc.returncode is None:
                _kill_group(proc)
                proc.wait()
            with self._lock:
                self._running.discard(proc)
        return {"stdout": out.text(), "stderr": err.text(), "returncode": proc.returncode}, timed_out

    def close(self) -> None:
        """Kill the process groups of commands still running."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``proc`` (it was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
