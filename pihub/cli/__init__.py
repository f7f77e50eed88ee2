"""The ``pihub`` command: one module per command family, shared exit codes and printer.

``pihub run``                          the daemon (:mod:`pihub.cli.daemon`)
``pihub check-config [FILE]``          validate a config (:mod:`pihub.cli.check`)
``pihub exec ACTION [k=v | k:=json]``  run one action (:mod:`pihub.cli.execute`)
``pihub replay --config F EVENTS``     feed recorded events through the hooks (:mod:`pihub.cli.replay`)
``pihub user ...``, ``pihub token ...``  users and API tokens (:mod:`pihub.cli.auth`)
``pihub doctor [--json]``              what breaks on a Pi, with fixes (:mod:`pihub.cli.doctor`)

Exit codes and the error printer are :mod:`pihub.cli.common`'s, the same for every command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pihub import __version__
from pihub.cli import auth, doctor
from pihub.cli.check import cmd_check_config
from pihub.cli.daemon import cmd_run
from pihub.cli.execute import cmd_exec, parse_exec_args
from pihub.cli.replay import cmd_replay

__all__ = ["build_parser", "main", "parse_exec_args"]


def build_parser() -> argparse.ArgumentParser:
    """The ``pihub`` argument parser; each command sets ``func(args) -> exit code``."""
    p = argparse.ArgumentParser(prog="pihub", description="A lean automation daemon for the Raspberry Pi.")
    p.add_argument("--version", action="version", version=f"pihub {__version__}")
    config_help = "config file (default: $PIHUB_CONFIG, ~/.config/pihub/config.yaml, /etc/pihub/config.yaml)"
    p.add_argument("-c", "--config", help=config_help)
    # -c/--config is accepted before or after the command (pihub replay --config F ...)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", parents=[common], help="run the daemon")
    r.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (overrides the config)")
    r.add_argument("--ready-file", help=argparse.SUPPRESS)  # start->ready time, for benchmarks
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", parents=[common],
                       help="validate a config file (exit 0 ok, 1 invalid, 2 unreadable)")
    c.add_argument("file", nargs="?", help="config file (default: as for run)")
    c.set_defaults(func=cmd_check_config)

    e = sub.add_parser("exec", parents=[common], help="run one action: pihub exec variable.set name=x n:=3")
    e.add_argument("action", help="plugin.method, or procedure.NAME")
    e.add_argument("args", nargs="*", help="name=string or name:=json")
    e.set_defaults(func=cmd_exec)

    rp = sub.add_parser("replay", parents=[common], help="feed recorded events (JSON lines) through the hooks")
    rp.add_argument("events", help="JSON-lines file of events, or - for stdin")
    rp.add_argument("--run-actions", action="store_true",
                    help="also run actions with effects outside pihub (hardware, shell)")
    rp.set_defaults(func=cmd_replay)

    auth.add_parsers(sub, common)
    doctor.add_parser(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pihub`` command; returns its exit code (see :mod:`pihub.cli.common`)."""
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
