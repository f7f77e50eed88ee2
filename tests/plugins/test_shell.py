"""shell.exec with real subprocesses: output, exit status, timeout, caps and the gates."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
from pihub_testing import wait_for

from pihub.engine.actions import ActionRegistry
from pihub.messages import Response
from pihub.plugins import shell as shell_mod
from pihub.plugins.shell import ShellPlugin

PY = sys.executable


def registry(**kw: object) -> ActionRegistry:
    r = ActionRegistry()
    r.register(ShellPlugin(**{"enabled": True, **kw}))  # type: ignore[arg-type]
    return r


def run(r: ActionRegistry, args: object) -> Response:
    return r.execute("shell.exec", args)


def test_echo_output_is_a_plain_string() -> None:
    resp = run(registry(), {"cmd": ["echo", "123"]})
    assert resp == Response(output={"stdout": "123\n", "stderr": "", "returncode": 0})


def test_arguments_are_not_interpreted_by_a_shell(tmp_path: Path) -> None:
    resp = run(registry(), {"cmd": ["echo", "$HOME", "*", "a;b", "`id`"], "cwd": str(tmp_path)})
    assert resp.output["stdout"] == "$HOME * a;b `id`\n"


def test_list_args_form_and_stderr() -> None:
    resp = run(registry(), [[PY, "-c", "import sys; sys.stderr.write('oops')"]])
    assert resp.errors == [] and resp.output["stderr"] == "oops" and resp.output["stdout"] == ""


def test_non_zero_exit_is_an_error_with_the_output() -> None:
    resp = run(registry(), {"cmd": ["false"]})
    assert resp.output == {"stdout": "", "stderr": "", "returncode": 1}
    assert resp.errors == ["command 'false' exited with status 1"]


def test_ignore_errors() -> None:
    resp = run(registry(), {"cmd": ["false"], "ignore_errors": True})
    assert resp == Response(output={"stdout": "", "stderr": "", "returncode": 1})


def exited(pid: int) -> bool:
    """True once process ``pid`` has ended: gone, or a zombie its new parent has not reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # the state follows "(comm)"


def test_timeout_kills_the_process_group_and_reports_it(tmp_path: Path) -> None:
    script = tmp_path / "spawner.py"
    # The command starts a grandchild; both must die with the process group.
    script.write_text(
        "import subprocess, sys, time\n"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print('started', grandchild.pid, flush=True)\n"
        "time.sleep(30)\n")
    t0 = time.monotonic()
    resp = run(registry(), {"cmd": [PY, str(script)], "timeout": 0.5})
    elapsed = time.monotonic() - t0
    assert resp.errors == [f"command {PY!r} timed out after 0.5 s and was killed"]
    word, pid = resp.output["stdout"].split()
    assert word == "started"
    assert resp.output["returncode"] == -9
    assert elapsed < 10
    assert wait_for(lambda: exited(int(pid)), timeout=10), "the grandchild outlived its process group"


def test_sleep_with_the_configured_timeout() -> None:
    resp = run(registry(timeout=0.3), {"cmd": ["sleep", "5"]})
    assert resp.errors == ["command 'sleep' timed out after 0.3 s and was killed"]


def test_a_process_that_closes_its_pipes_still_times_out() -> None:
    script = "import os, time; os.close(1); os.close(2); time.sleep(30)"
    resp = run(registry(), {"cmd": [PY, "-c", script], "timeout": 0.5})
    assert resp.errors and "timed out after 0.5 s" in resp.errors[0]


def test_disabled_by_default_names_the_config_key() -> None:
    r = ActionRegistry()
    r.register(ShellPlugin())
    resp = run(r, {"cmd": ["echo", "hi"]})
    assert resp.output is None
    assert resp.errors == ["shell.exec: running commands is disabled: set 'enabled: true' in the 'shell:' "
                           "section of the config (shell: {enabled: true})"]


def test_a_string_command_is_rejected_with_an_explanation(tmp_path: Path) -> None:
    resp = run(registry(), {"cmd": "touch ran", "cwd": str(tmp_path)})
    assert resp.errors == ["shell.exec: argument 'cmd' must be a list[str], not 'touch ran' "
                           "(an argv list such as ['ls', '-l']: commands run without a shell)"]
    assert not (tmp_path / "ran").exists()


def test_a_string_command_is_rejected_from_python_too() -> None:
    with pytest.raises(Exception, match="an argv list such as"):
        ShellPlugin(enabled=True).exec("echo hi")  # type: ignore[arg-type]


def test_allowed_commands_restrict_argv0() -> None:
    r = registry(allowed_commands=["echo"])
    assert run(r, {"cmd": ["echo", "ok"]}).output["stdout"] == "ok\n"
    assert run(r, {"cmd": ["true"]}).errors == [
        "shell.exec: command 'true' is not in shell.allowed_commands (allowed: echo)"]
    echo = shutil.which("echo")
    assert echo and run(r, {"cmd": [echo, "x"]}).errors == [
        f"shell.exec: command {echo!r} is not in shell.allowed_commands (allowed: echo)"]


def test_empty_and_non_string_argv() -> None:
    r = registry()
    assert run(r, {"cmd": []}).errors == [
        "shell.exec: cmd must not be empty: give an argv list such as ['ls', '-l']: "
        "commands run without a shell"]
    assert run(r, {"cmd": ["sleep", 1]}).errors[0].startswith(
        "shell.exec: argument 'cmd[1]' must be a str, not 1")


def test_command_not_found_and_bad_cwd(tmp_path: Path) -> None:
    r = registry()
    assert run(r, {"cmd": ["no-such-program-pihub"]}).errors == [
        "shell.exec: cannot run 'no-such-program-pihub': command not found"]
    missing = str(tmp_path / "nope")
    assert run(r, {"cmd": ["true"], "cwd": missing}).errors == [
        f"shell.exec: cwd {missing!r} is not a directory"]


def test_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    os.chmod(script, 0o644)
    assert run(registry(), {"cmd": [str(script)]}).errors == [
        f"shell.exec: cannot run {str(script)!r}: permission denied"]


def test_cwd_and_env(tmp_path: Path) -> None:
    resp = run(registry(), {"cmd": [PY, "-c", "import os; print(os.getcwd()); print(os.environ['PIHUB_X'])"],
                            "cwd": str(tmp_path), "env": {"PIHUB_X": "42"}})
    assert resp.errors == []
    assert resp.output["stdout"].splitlines() == [str(tmp_path.resolve()), "42"]


def test_env_adds_to_the_daemon_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIHUB_KEEP", "kept")
    resp = run(registry(), {"cmd": [PY, "-c", "import os; print(os.environ['PIHUB_KEEP'])"],
                            "env": {"A": "b"}})
    assert resp.output["stdout"] == "kept\n"


def test_bad_timeouts() -> None:
    assert run(registry(), {"cmd": ["true"], "timeout": 0}).errors == [
        "shell.exec: timeout must be > 0 seconds, not 0.0"]
    with pytest.raises(ValueError, match=r"shell\.timeout must be a number of seconds > 0, not -1"):
        ShellPlugin(timeout=-1)
    with pytest.raises(ValueError, match=r"shell\.allowed_commands must be a list of program names"):
        ShellPlugin(allowed_commands="echo")  # type: ignore[arg-type]


def test_output_is_capped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shell_mod, "OUTPUT_CAP", 1000)
    script = "import sys; sys.stdout.write('a' * 5000); sys.stderr.write('b' * 10)"
    resp = run(registry(), {"cmd": [PY, "-c", script]})
    assert resp.errors == []
    out = resp.output["stdout"]
    assert out == "a" * 1000 + "\n[pihub: output truncated: kept the first 1000 bytes, dropped 4000]"
    assert resp.output["stderr"] == "b" * 10


def test_large_output_does_not_block_the_command() -> None:
    script = "import sys; sys.stdout.write('x' * (3 << 20)); print('end', file=sys.stderr)"
    resp = run(registry(), {"cmd": [PY, "-c", script], "timeout": 20})
    assert resp.errors == [] and resp.output["returncode"] == 0
    assert resp.output["stderr"] == "end\n"
    assert resp.output["stdout"].startswith("x" * 1000)
    assert resp.output["stdout"].endswith(f"dropped {(3 << 20) - shell_mod.OUTPUT_CAP}]")


def test_invalid_utf8_is_replaced() -> None:
    resp = run(registry(), {"cmd": [PY, "-c", "import sys; sys.stdout.buffer.write(b'a\\xffb')"]})
    assert resp.output["stdout"] == "a\ufffdb"


def test_killed_by_a_signal_is_reported() -> None:
    resp = run(registry(), {"cmd": [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]})
    assert resp.output["returncode"] == -15
    assert resp.errors == [f"command {PY!r} was killed by signal 15"]


def test_config_schema() -> None:
    schema = ShellPlugin.config_schema
    assert schema is not None
    values, problems = schema.validate({}, ("shell",))
    assert problems == [] and values == {"enabled": False, "timeout": 10.0, "allowed_commands": None}
    raw = {"enabled": True, "timeout": 2, "allowed_commands": ["echo"]}
    values, problems = schema.validate(raw, ("shell",))
    assert problems == [] and ShellPlugin(**values).allowed_commands == ["echo"]
    _, problems = schema.validate({"timeout": 0}, ("shell",))
    assert len(problems) == 1 and "timeout" in str(problems[0])


def test_close_kills_running_commands() -> None:
    plugin = ShellPlugin(enabled=True, timeout=30)
    r = ActionRegistry()
    r.register(plugin)
    result: list[Response] = []

    def call() -> None:
        result.append(run(r, {"cmd": ["sleep", "30"]}))

    t = threading.Thread(target=call)
    t.start()
    assert wait_for(lambda: plugin._running)  # close kills the commands it knows are running
    plugin.close()
    t.join(10)
    assert not t.is_alive()
    assert result[0].output["returncode"] == -9


def test_replay_skips_shell_commands() -> None:
    assert registry().has_side_effects("shell.exec")
