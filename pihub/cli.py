"""The ``pihub`` command.

``pihub run``                         the daemon (systemd ``Type=notify`` aware)
``pihub check-config [FILE]``         exit 0 valid, 1 invalid, 2 unreadable/missing
``pihub exec ACTION [k=v | k:=json]``  run one action against the config, print the response
``pihub replay --config F EVENTS``    feed recorded events through the hooks, one JSON line each

Arguments of ``exec`` follow httpie's convention: ``name=value`` passes the string
``value`` as is; ``name:=value`` parses ``value`` as JSON (``pin:=17``, ``on:=true``).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pihub import __version__

log = logging.getLogger("pihub.cli")

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def _load(path: str | None) -> Any:
    from pihub import config as cfg
    from pihub.hub import known_sections

    return cfg.load(path, sections=known_sections())


def _build(make: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``make()`` (a config load and/or hub build); on a config failure print why.

    Returns:
        ``(result, EXIT_OK)``, or ``(None, EXIT_UNREADABLE / EXIT_INVALID)``.
    """
    from pihub.config import ConfigUnreadable
    from pihub.errors import ConfigError

    try:
        return make(), EXIT_OK
    except ConfigUnreadable as e:
        print(str(e), file=sys.stderr)
        return None, EXIT_UNREADABLE
    except ConfigError as e:
        _print_problems(e, sys.stderr)
        return None, EXIT_INVALID


def _print_problems(err: Exception, out: TextIO) -> None:
    from pihub.errors import ConfigError

    if isinstance(err, ConfigError):
        for p in err.problems:
            print(str(p), file=out)
        for w in err.warnings:
            print(f"{w} (warning)", file=out)
        n = len(err.problems)
        print(f"{n} error{'s' if n != 1 else ''}", file=out)
    else:
        print(str(err), file=out)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Load and fully compile the config (hooks, procedures, sections); print every problem."""
    from pihub.config import ConfigUnreadable
    from pihub.errors import ConfigError

    try:
        config = _load(args.file or args.config)
    except ConfigUnreadable as e:
        print(str(e), file=sys.stderr)
        return EXIT_UNREADABLE
    except ConfigError as e:
        # the valid parts still compile: report their hook/procedure problems too
        problems = list(e.problems) + list(e.warnings)
        if getattr(e, "config", None) is not None:
            problems += _compile_problems(e.config)
        _print_problems(ConfigError(sorted(set(problems), key=_problem_order)), sys.stderr)
        return EXIT_INVALID
    problems = _compile_problems(config)
    if any(not p.warning for p in problems):
        _print_problems(ConfigError(problems), sys.stderr)
        return EXIT_INVALID
    for w in config.warnings:
        print(f"{w} (warning)", file=sys.stderr)
    print(f"{', '.join(config.files)}: ok ({len(config.hooks)} hooks, {len(config.procedures)} procedures, "
          f"{len(config.warnings)} warnings)")
    return EXIT_OK


def _problem_order(p: Any) -> tuple[str, int, int, str]:
    return (p.file, p.line, p.col, p.message)


def _compile_problems(config: Any) -> list[Any]:
    """Build (and stop) a hub from ``config`` in a scratch workdir; its located problems."""
    from pihub.errors import ConfigError
    from pihub.hub import Hub

    import tempfile

    with tempfile.TemporaryDirectory(prefix="pihub-check-") as tmp:
        try:
            Hub(_with_workdir(config, tmp)).stop()
        except ConfigError as e:
            return list(e.problems)
    return []


def _with_workdir(config: Any, workdir: str) -> Any:
    import dataclasses

    return dataclasses.replace(config, workdir=workdir)


def parse_exec_args(items: Sequence[str]) -> dict[str, Any]:
    """``["a=x", "n:=3"]`` -> ``{"a": "x", "n": 3}``; raises ValueError naming the bad item."""
    out: dict[str, Any] = {}
    for item in items:
        if ":=" in item and (item.index(":=") < item.index("=") + 1 if "=" in item else True):
            key, _, raw = item.partition(":=")
            try:
                out[key] = json.loads(raw)
            except ValueError as e:
                raise ValueError(f"argument {key!r}: {raw!r} is not valid JSON ({e})") from None
        elif "=" in item:
            key, _, value = item.partition("=")
            out[key] = value
        else:
            raise ValueError(f"argument {item!r} must be name=value (a string) or name:=json")
        if not key:
            raise ValueError(f"argument {item!r} has no name")
    return out


def cmd_exec(args: argparse.Namespace) -> int:
    """Run one action with the configured plugins/backends; print the Platypush response."""
    from pihub.hub import Hub
    from pihub.messages import dumps

    try:
        kwargs = parse_exec_args(args.args)
    except ValueError as e:
        print(f"pihub exec: {e}", file=sys.stderr)
        return EXIT_INVALID
    hub, code = _build(lambda: Hub(_load(args.config)))
    if hub is None:
        return code
    try:
        hub.start(serve_web=False)
        resp = hub.execute(args.action, kwargs)
        hub.flush(5.0)
    finally:
        hub.stop()
    print(dumps(resp.to_dict()["response"]))
    return EXIT_OK if resp.ok else EXIT_INVALID


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay recorded events through the hooks and print the trace (see pihub.replay)."""
    from pihub.errors import ConfigError
    from pihub.replay import replay

    config, code = _build(lambda: _load(args.config))
    if config is None:
        return code
    try:
        src = sys.stdin if args.events == "-" else open(args.events, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        print(f"cannot read events file {args.events!r}: {e.strerror}", file=sys.stderr)
        return EXIT_UNREADABLE
    with src:
        try:
            bad = replay(config, src, sys.stdout, run_actions=args.run_actions)
        except ConfigError as e:
            _print_problems(e, sys.stderr)
            return EXIT_INVALID
    return EXIT_INVALID if bad else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; talk to systemd when it asks us to."""
    from pihub.hub import Hub
    from pihub.logs import setup_logging
    from pihub.sdnotify import Notifier, Watchdog

    t0 = time.monotonic()
    # the watchdog ends a hung daemon with SIGABRT: dump every thread's stack first
    faulthandler.enable()
    try:
        setup_logging(args.log_level or "INFO")
        notifier = Notifier.from_env()
    except ValueError as e:
        print(f"pihub run: {e}", file=sys.stderr)
        return EXIT_INVALID
    config, code = _build(lambda: _load(args.config))
    if config is None:
        return code
    level = args.log_level or (config.logging or {}).get("level") or "INFO"
    try:
        setup_logging(level, fmt=(config.logging or {}).get("format"),
                      filename=(config.logging or {}).get("filename"))
    except (ValueError, OSError) as e:
        log.error("logging: %s", e)
        return EXIT_INVALID
    for w in config.warnings:
        log.warning("%s", w)
    for key, value in (config.environment or {}).items():
        import os

        os.environ[str(key)] = str(value)
    hub, code = _build(lambda: Hub(config))
    if hub is None:
        return code

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hub.start()
    ready_s = time.monotonic() - t0
    code = hub.auth.ensure_setup_code()
    if code:
        where = f"POST {hub.web.url}/auth?type=setup with" if hub.web is not None else "use"
        log.warning("no user exists yet: %s the one-time setup code %s, or run `pihub user add NAME`",
                    where, code)
    watchdog = Watchdog(notifier, lambda: hub.dispatcher.progress)
    watchdog.start()
    status = f"running: {len(hub.hooks)} hooks, {len(hub.backends)} backends"
    notifier.ready(status)
    log.info("ready in %.3f s (%s)", ready_s, status)
    if args.ready_file:
        Path(args.ready_file).write_text(f"{ready_s:.6f}\n", encoding="utf-8")
    try:
        while not stop.wait(1.0):
            hub.auth.refresh()  # revocations by `pihub token revoke` close websockets promptly
    finally:
        notifier.stopping()
        watchdog.stop()
        hub.stop()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
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

    c = sub.add_parser("check-config", parents=[common], help="validate a config file (exit 0 ok, 1 invalid, 2 unreadable)")
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

    from pihub import authcli

    authcli.add_parsers(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
