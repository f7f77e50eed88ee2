"""``pihub user ...`` and ``pihub token ...``: manage users and API tokens from a shell.

``pihub user add USERNAME [--scope S] [--password-stdin]``   create a user
``pihub user passwd USERNAME [--password-stdin]``            change a password (ends its sessions)
``pihub user remove USERNAME``                               delete a user, its tokens and sessions
``pihub token create USERNAME [--name N] [--scope S] [--expires-days D]``
``pihub token list [USERNAME] [--json]``                     no secrets
``pihub token revoke ID_OR_NAME [--user USERNAME]``

These open the store in the config's workdir directly, without the daemon; a running
daemon notices the change at its next check (see :mod:`pihub.auth`), so a revoked token
stops working at once. Passwords are read with a confirmed :func:`getpass.getpass`
prompt, or one line of standard input with ``--password-stdin`` (for scripts); they are
never taken from the command line, where ``ps`` and shell history would show them.

Exit codes (:mod:`pihub.cli.common`): 0 ok, 1 bad input (the message names it), 2 config
or store unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pihub.auth import SCOPES, Auth, TokenInfo, check_username, expand_scopes
from pihub.cli.common import EXIT_INVALID, EXIT_OK, EXIT_UNREADABLE, CommandError, load_config

# scopes and numbers are checked by the commands, not argparse, so bad ones exit 1 (bad
# input) with pihub's message rather than argparse's exit 2 (which means config trouble here)
_SCOPE_METAVAR = "{" + ",".join(SCOPES) + "}"


def add_parsers(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Add the ``user`` and ``token`` commands to the ``pihub`` parser.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.
        common_parent: the parent parser holding ``-c/--config`` (with a suppressed
            default, so giving it after the command does not hide one given before).
    """
    user = subparsers.add_parser("user", parents=[common_parent], help="add, change or remove a user")
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    pw_help = "read the password from one line of standard input instead of prompting"

    p = users.add_parser("add", parents=[common_parent], help="create a user")
    p.add_argument("username", help="1..64 of a-z 0-9 _ . -, starting with a letter or digit")
    p.add_argument("--scope", default="admin", metavar=_SCOPE_METAVAR,
                   help="the user's highest scope (default admin); its tokens may not exceed it")
    p.add_argument("--password-stdin", action="store_true", help=pw_help)
    p.set_defaults(func=cmd_user_add)

    p = users.add_parser("passwd", parents=[common_parent],
                         help="change a password (ends its panel sessions)")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help=pw_help)
    p.set_defaults(func=cmd_user_passwd)

    p = users.add_parser("remove", parents=[common_parent], help="delete a user with its tokens and sessions")
    p.add_argument("username")
    p.set_defaults(func=cmd_user_remove)

    token = subparsers.add_parser("token", parents=[common_parent], help="create, list or revoke API tokens")
    tokens = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    p = tokens.add_parser("create", parents=[common_parent], help="create an API token (shown once)")
    p.add_argument("username", help="the token's owner")
    p.add_argument("--name", help="unique per user (default: USERNAME-<8 hex digits>)")
    p.add_argument("--scope", default="control", metavar=_SCOPE_METAVAR,
                   help="read: state and events; control: also run actions (default); admin: everything")
    p.add_argument("--expires-days", metavar="D", help="lifetime in days, e.g. 90 or 0.5 (default: never)")
    p.set_defaults(func=cmd_token_create)

    p = tokens.add_parser("list", parents=[common_parent],
                          help="list API tokens (never the tokens themselves)")
    p.add_argument("username", nargs="?", help="only this user's tokens")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_token_list)

    p = tokens.add_parser("revoke", parents=[common_parent], help="revoke an API token by id or name")
    p.add_argument("token", metavar="ID_OR_NAME")
    p.add_argument("--user", help="the owner, when several users have a token of that name")
    p.set_defaults(func=cmd_token_revoke)


# -- commands ---------------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> int:
    """``pihub user add``: create a user with a prompted (or stdin) password."""

    def run(auth: Auth) -> None:
        # everything but the password is checked first, so nobody types one in vain
        check_username(args.username)
        expand_scopes(args.scope)
        if auth.has_user(args.username):
            raise CommandError(f"user {args.username!r} already exists")
        auth.add_user(args.username, _read_password(args, args.username), scope=args.scope)
        print(f"user {args.username!r} added (scope {args.scope})")

    return _with_auth(args, run)


def cmd_user_passwd(args: argparse.Namespace) -> int:
    """``pihub user passwd``: set a new password; the user's panel sessions end."""

    def run(auth: Auth) -> None:
        if not auth.has_user(args.username):
            raise CommandError(f"no such user {args.username!r}")
        auth.set_password(args.username, _read_password(args, args.username))
        print(f"password of user {args.username!r} changed; its panel sessions were ended")

    return _with_auth(args, run)


def cmd_user_remove(args: argparse.Namespace) -> int:
    """``pihub user remove``: delete a user, its API tokens and sessions."""

    def run(auth: Auth) -> None:
        n = len(auth.list_tokens(args.username))
        auth.remove_user(args.username)
        print(f"user {args.username!r} removed with {n} api token{'s' if n != 1 else ''}")

    return _with_auth(args, run)


def cmd_token_create(args: argparse.Namespace) -> int:
    """``pihub token create``: print a new token on stdout, alone, once."""

    def run(auth: Auth) -> None:
        token, info = auth.create_token(args.username, name=args.name, scopes=(args.scope,),
                                        expires_days=_days(args.expires_days))
        expires = "never" if info.expires_at is None else _when(info.expires_at)
        print(f"api token {info.id} {info.name!r} for user {info.username!r} (scope {args.scope}, expires "
              f"{expires}). Store it now: it will not be shown again.", file=sys.stderr)
        # alone on stdout, so TOKEN=$(pihub token create ...) works
        print(token)

    return _with_auth(args, run)


def cmd_token_list(args: argparse.Namespace) -> int:
    """``pihub token list``: a table (or JSON lines) of tokens; no secrets."""

    def run(auth: Auth) -> None:
        infos = auth.list_tokens(args.username)
        if args.json:
            for t in infos:
                print(json.dumps({"id": t.id, "name": t.name, "username": t.username,
                                  "scopes": list(t.scopes), "created_at": t.created_at,
                                  "expires_at": t.expires_at, "last_used_at": t.last_used_at}))
            return
        if not infos:
            print("no api tokens" + (f" for user {args.username!r}" if args.username else ""))
            return
        print(_table(infos, time.time()))

    return _with_auth(args, run)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """``pihub token revoke``: revoke by id or name; exit 1 when nothing matched."""

    def run(auth: Auth) -> None:
        if not auth.revoke_token(args.token, username=args.user):
            owner = f" of user {args.user!r}" if args.user else ""
            raise CommandError(f"no api token{owner} with id or name {args.token!r}")
        print(f"api token {args.token!r} revoked")

    return _with_auth(args, run)


# -- helpers ----------------------------------------------------------------------------


def _with_auth(args: argparse.Namespace, run: Callable[[Auth], None]) -> int:
    """Open the config's store, run ``run(auth)``, close; map failures to exit codes.

    Returns:
        0, 1 for bad input (ValueError, refused credentials), 2 when the config or the
        store cannot be used.
    """
    from pihub.errors import StoreError
    from pihub.store import Store

    try:
        workdir = _workdir(getattr(args, "config", None))
        path = Path(workdir) / "pihub.db"
        store = Store(path)
    except CommandError as e:
        print(str(e), file=sys.stderr)
        return e.code
    except StoreError as e:
        print(str(e), file=sys.stderr)
        return EXIT_UNREADABLE
    except OSError as e:  # the workdir cannot be created (Store lets mkdir's error through)
        print(f"cannot open the store {str(path)!r}: {(e.strerror or str(e)).lower()}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        auth = Auth(store)
        try:
            run(auth)
        finally:
            auth.close()
    except CommandError as e:
        print(f"pihub {args.command}: {e}", file=sys.stderr)
        return e.code
    except (ValueError, PermissionError) as e:
        print(f"pihub {args.command}: {e}", file=sys.stderr)
        return EXIT_INVALID
    except StoreError as e:
        print(str(e), file=sys.stderr)
        return EXIT_UNREADABLE
    finally:
        store.close()
    return EXIT_OK


def _workdir(config_path: str | None) -> str:
    """The workdir of the config at ``config_path`` (None: the usual search).

    A config with errors elsewhere (a hook typo) still names its workdir, and users
    must stay manageable then; only an error in ``workdir`` itself is fatal.

    Raises:
        CommandError: exit 2 when the config cannot be read or its workdir is unusable.
    """
    from pihub.errors import ConfigError, ConfigUnreadable

    try:
        return str(load_config(config_path).workdir)
    except ConfigUnreadable as e:
        raise CommandError(str(e), EXIT_UNREADABLE) from None
    except ConfigError as e:
        config = getattr(e, "config", None)
        if config is None or any(p.path.split(".")[0].split("[")[0] == "workdir" for p in e.problems):
            raise CommandError(str(e), EXIT_UNREADABLE) from None
        n = len(e.problems)
        print(f"warning: the config has {n} error{'s' if n != 1 else ''} (see pihub check-config); "
              f"using its workdir {config.workdir}", file=sys.stderr)
        return str(config.workdir)


def _read_password(args: argparse.Namespace, username: str) -> str:
    """A new password: one stdin line with ``--password-stdin``, else a confirmed prompt.

    Raises:
        CommandError: empty input, mismatching confirmation, no terminal and no stdin line.
    """
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise CommandError("no password on standard input (--password-stdin reads one line)")
        return password
    import getpass  # here: it loads termios, and the daemon never prompts

    try:
        password = getpass.getpass(f"new password for {username!r}: ")
        again = getpass.getpass("repeat it: ")
    except EOFError:
        raise CommandError("no password given: type it at the prompt, or use --password-stdin") from None
    if password != again:
        raise CommandError("the two passwords do not match")
    return password


def _days(text: str | None) -> float | None:
    """``--expires-days`` as a number of days; None when not given.

    Raises:
        CommandError: not a number (the range is checked by :meth:`Auth.create_token`).
    """
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise CommandError(f"--expires-days must be a number of days, not {text!r}") from None


def _when(ts: float | None) -> str:
    """Seconds since the epoch as local ``YYYY-MM-DD HH:MM``; ``-`` for None."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _table(infos: list[TokenInfo], now: float) -> str:
    """Tokens as an aligned text table; expired ones are marked."""
    rows = [("ID", "NAME", "USER", "SCOPE", "CREATED", "EXPIRES", "LAST USED")]
    for t in infos:
        expires = _when(t.expires_at)
        if t.expires_at is not None and t.expires_at <= now:
            expires += " (expired)"
        rows.append((str(t.id), t.name, t.username, t.scopes[-1] if t.scopes else "-", _when(t.created_at),
                     expires, _when(t.last_used_at)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
