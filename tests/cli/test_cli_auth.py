"""``pihub user ...`` and ``pihub token ...``, as real processes and in-process."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pihub.auth import Auth
from pihub.cli import auth as authcli
from pihub.cli import build_parser
from pihub.errors import AuthFailed
from pihub.store import Store

PASSWORD = "s3cret-passw0rd"

def pihub(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``pihub ARGS`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(Path(authcli.__file__).parents[2])}
    return subprocess.run([sys.executable, "-m", "pihub", *args], capture_output=True, text=True, input=input,
                          env=env, timeout=60, check=False)


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Path:
    return write_config("logger: {}\n")


@pytest.fixture
def db(config: Path, tmp_path: Path) -> Path:
    return tmp_path / "work" / "pihub.db"


@contextlib.contextmanager
def opened(db: Path) -> Iterator[Auth]:
    with Store(db) as store:
        auth = Auth(store)
        yield auth
        auth.close()


def add_user(config: Path, name: str = "alice", password: str = PASSWORD, *extra: str) -> None:
    r = pihub("-c", str(config), "user", "add", name, "--password-stdin", *extra, input=password + "\n")
    assert r.returncode == 0, r.stderr


# -- as processes --------------------------------------------------------------------------


def test_user_add_stores_a_user_that_can_log_in(config: Path, db: Path) -> None:
    r = pihub("user", "add", "alice", "--password-stdin", "-c", str(config), input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "user 'alice' added (scope admin)" in r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    with opened(db) as auth:
        p = auth.login("alice", PASSWORD, ip="127.0.0.1")
        assert p.allows("admin")


def test_user_add_with_a_scope(config: Path, db: Path) -> None:
    add_user(config, "reader", PASSWORD, "--scope", "read")
    with opened(db) as auth:
        assert auth.login("reader", PASSWORD, ip="127.0.0.1").scopes == frozenset({"read"})


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["Alice"], PASSWORD, "username must be 1..64 characters"),
    (["bob", "--scope", "root"], PASSWORD, "scope must be one of read, control, admin, not 'root'"),
    (["bob"], "short\n", "password must be 8..4096 characters, not 5"),
    (["bob"], "", "no password on standard input"),
    (["bob"], "\n", "no password on standard input"),
])
def test_user_add_refuses_bad_input_with_exit_1(config: Path, db: Path, args: list[str], stdin: str,
                                                message: str) -> None:
    r = pihub("-c", str(config), "user", "add", *args, "--password-stdin", input=stdin)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr
    assert stdin.strip() == "" or stdin.strip() not in r.stderr
    with opened(db) as auth:
        assert auth.user_count() == 0


def test_user_add_refuses_a_duplicate(config: Path) -> None:
    add_user(config)
    r = pihub("-c", str(config), "user", "add", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 1
    assert "user 'alice' already exists" in r.stderr


def test_user_passwd_changes_the_password(config: Path, db: Path) -> None:
    add_user(config)
    r = pihub("-c", str(config), "user", "passwd", "alice", "--password-stdin", input="another-one\n")
    assert r.returncode == 0, r.stderr
    with opened(db) as auth:
        assert auth.login("alice", "another-one", ip="127.0.0.1").username == "alice"
        with pytest.raises(AuthFailed):
            auth.login("alice", PASSWORD, ip="127.0.0.1")
    r = pihub("-c", str(config), "user", "passwd", "bob", "--password-stdin", input="another-one\n")
    assert r.returncode == 1 and "no such user 'bob'" in r.stderr


def test_user_remove_deletes_the_user_and_its_tokens(config: Path, db: Path) -> None:
    add_user(config)
    token = pihub("-c", str(config), "token", "create", "alice").stdout.strip()
    r = pihub("-c", str(config), "user", "remove", "alice")
    assert r.returncode == 0, r.stderr
    assert "user 'alice' removed with 1 api token" in r.stdout
    with opened(db) as auth:
        assert auth.user_count() == 0
        assert auth.check_token(token) is None
    r = pihub("-c", str(config), "user", "remove", "alice")
    assert r.returncode == 1 and "no such user 'alice'" in r.stderr


def test_token_create_prints_the_token_alone_on_stdout_once(config: Path, db: Path) -> None:
    add_user(config)
    r = pihub("-c", str(config), "token", "create", "alice", "--name", "phone", "--scope", "read",
              "--expires-days", "30")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert r.stdout == token + "\n" and token.startswith("ph_")
    assert "will not be shown again" in r.stderr and "'phone'" in r.stderr and token not in r.stderr
    with opened(db) as auth:
        p = auth.check_token(token)
        assert p is not None and p.username == "alice" and p.scopes == frozenset({"read"})
        (info,) = auth.list_tokens()
        assert info.expires_at is not None and 29.9 * 86400 < info.expires_at - info.created_at < 30.1 * 86400
    listing = pihub("-c", str(config), "token", "list")
    assert token not in listing.stdout and token[3:] not in listing.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["bob"], "no such user 'bob'"),
    (["alice", "--scope", "all"], "not 'all'"),
    (["alice", "--expires-days", "soon"], "--expires-days must be a number of days, not 'soon'"),
    (["alice", "--expires-days", "0"], "expires_days must be a number in (0, 36500]"),
    (["alice", "--name", "42"], "must not be all digits"),
])
def test_token_create_refuses_bad_input_with_exit_1(config: Path, db: Path, args: list[str],
                                                    message: str) -> None:
    add_user(config)
    r = pihub("-c", str(config), "token", "create", *args)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr
    assert r.stdout == ""
    with opened(db) as auth:
        assert auth.list_tokens() == []


def test_token_create_refuses_a_scope_above_the_user(config: Path) -> None:
    add_user(config, "reader", PASSWORD, "--scope", "read")
    r = pihub("-c", str(config), "token", "create", "reader", "--scope", "control")
    assert r.returncode == 1
    assert "token scope 'control' is above the scope of user 'reader'" in r.stderr


def test_token_list_shows_no_secrets_and_filters(config: Path) -> None:
    add_user(config)
    add_user(config, "bob")
    t1 = pihub("-c", str(config), "token", "create", "alice", "--name", "phone").stdout.strip()
    t2 = pihub("-c", str(config), "token", "create", "bob", "--name", "tasker",
               "--scope", "admin").stdout.strip()
    r = pihub("-c", str(config), "token", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "USER", "SCOPE", "CREATED", "EXPIRES", "LAST", "USED"]
    assert lines[1].split()[:4] == ["1", "phone", "alice", "control"]
    assert lines[2].split()[:4] == ["2", "tasker", "bob", "admin"]
    for t in (t1, t2):
        assert t not in r.stdout and t[3:] not in r.stdout
    r = pihub("-c", str(config), "token", "list", "bob", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["id"], x["name"], x["username"], x["scopes"]) for x in rows] == [
        (2, "tasker", "bob", ["read", "control", "admin"])]
    r = pihub("-c", str(config), "token", "list", "carol")
    assert r.returncode == 0 and "no api tokens for user 'carol'" in r.stdout


def test_token_revoke_by_id_and_by_name(config: Path, db: Path) -> None:
    add_user(config)
    t1 = pihub("-c", str(config), "token", "create", "alice", "--name", "phone").stdout.strip()
    t2 = pihub("-c", str(config), "token", "create", "alice", "--name", "tasker").stdout.strip()
    with opened(db) as auth:
        running = auth  # stands for the daemon: its index is loaded before the revocations
        assert running.check_token(t1) and running.check_token(t2)
        r = pihub("-c", str(config), "token", "revoke", "1")
        assert r.returncode == 0, r.stderr
        assert running.check_token(t1) is None
        assert running.check_token(t2) is not None
        r = pihub("token", "revoke", "tasker", "-c", str(config))
        assert r.returncode == 0, r.stderr
        assert running.check_token(t2) is None
    r = pihub("-c", str(config), "token", "revoke", "tasker")
    assert r.returncode == 1 and "no api token with id or name 'tasker'" in r.stderr


def test_token_revoke_with_an_ambiguous_name_needs_the_user(config: Path) -> None:
    add_user(config)
    add_user(config, "bob")
    for user in ("alice", "bob"):
        assert pihub("-c", str(config), "token", "create", user, "--name", "phone").returncode == 0
    r = pihub("-c", str(config), "token", "revoke", "phone")
    assert r.returncode == 1 and "2 users have a token named 'phone'" in r.stderr
    r = pihub("-c", str(config), "token", "revoke", "phone", "--user", "bob")
    assert r.returncode == 0, r.stderr
    r = pihub("-c", str(config), "token", "list", "--json")
    assert [json.loads(line)["username"] for line in r.stdout.splitlines()] == ["alice"]


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    r = pihub("-c", str(tmp_path / "missing.yaml"), "token", "list")
    assert r.returncode == 2
    assert "missing.yaml" in r.stderr


def test_a_config_with_errors_elsewhere_still_names_its_workdir(write_config: Callable[..., Path],
                                                                tmp_path: Path) -> None:
    config = write_config("nosuchsection: {}\n")
    r = pihub("-c", str(config), "user", "add", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "the config has 1 error" in r.stderr
    assert (tmp_path / "work" / "pihub.db").exists()


def test_a_bad_workdir_exits_2(write_config: Callable[..., Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = write_config(f"workdir: {blocker / 'sub'}\n")
    r = pihub("-c", str(config), "token", "list")
    assert r.returncode == 2, r.stderr


# -- in-process: the prompt ----------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def prompts(monkeypatch: pytest.MonkeyPatch, *answers: str | type[BaseException]) -> list[str]:
    """Make getpass answer ``answers`` in turn; returns the prompts shown."""
    shown: list[str] = []
    queue = list(answers)

    def fake_getpass(prompt: str = "") -> str:
        shown.append(prompt)
        answer = queue.pop(0)
        if isinstance(answer, type):
            raise answer()
        return answer

    monkeypatch.setattr("getpass.getpass", fake_getpass)  # imported where the prompt is shown
    return shown


def test_the_daemon_does_not_load_the_prompt() -> None:
    """getpass (and termios) are imported when a password is prompted for, not by ``pihub run``."""
    code = "import sys\nimport pihub.cli, pihub.hub, pihub.web.app\nprint('getpass' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_prompted_password_must_be_confirmed(config: Path, db: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    prompts(monkeypatch, PASSWORD, PASSWORD + "x")
    args = parse(["-c", str(config), "user", "add", "alice"])
    assert args.func(args) == 1
    assert "the two passwords do not match" in capsys.readouterr().err
    shown = prompts(monkeypatch, PASSWORD, PASSWORD)
    assert args.func(args) == 0
    assert shown == ["new password for 'alice': ", "repeat it: "]
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
    with opened(db) as auth:
        assert auth.login("alice", PASSWORD, ip="127.0.0.1").username == "alice"


def test_no_terminal_and_no_stdin_password_exits_1(config: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    prompts(monkeypatch, EOFError)
    args = parse(["user", "add", "alice", "-c", str(config)])
    assert args.func(args) == 1
    assert "use --password-stdin" in capsys.readouterr().err


def test_no_prompt_for_a_user_that_cannot_be_added_or_changed(config: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    shown = prompts(monkeypatch)
    for argv, message in ((["user", "add", "Bad"], "username must be"),
                          (["user", "passwd", "nobody"], "no such user 'nobody'")):
        args = parse(["-c", str(config), *argv])
        assert args.func(args) == 1
        assert message in capsys.readouterr().err
    assert shown == []


def test_password_stdin_strips_only_the_line_end(config: Path, db: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("  spaced pass  \r\nsecond line\n"))
    args = parse(["-c", str(config), "user", "add", "alice", "--password-stdin"])
    assert args.func(args) == 0
    with opened(db) as auth:
        assert auth.login("alice", "  spaced pass  ", ip="127.0.0.1").username == "alice"
