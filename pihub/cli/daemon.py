"""``pihub run``: the daemon, until SIGTERM/SIGINT; systemd ``Type=notify`` aware."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from pihub.cli.common import EXIT_INVALID, EXIT_OK, CommandError, guarded, load_config

log = logging.getLogger("pihub.cli")


@guarded
def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon; exit 0 after a clean stop, 1 for an invalid config or logging setup."""
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
        raise CommandError(f"pihub run: {e}") from None
    config = load_config(args.config)
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
        os.environ[str(key)] = str(value)
    hub = Hub(config)

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
