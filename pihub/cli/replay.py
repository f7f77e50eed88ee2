"""``pihub replay --config F EVENTS``: feed recorded events through the hooks (see
:mod:`pihub.replay`), one JSON trace line per event on stdout."""

from __future__ import annotations

import argparse
import sys

from pihub.cli.common import EXIT_INVALID, EXIT_OK, EXIT_UNREADABLE, CommandError, guarded, load_config


@guarded
def cmd_replay(args: argparse.Namespace) -> int:
    """Exit 0 when every line was a valid event, 1 otherwise (or when a line's hooks caused more
    events than :data:`pihub.replay.MAX_CAUSED`), 2 when the file is unreadable."""
    from pihub.replay import read_lines, replay

    config = load_config(args.config)
    try:
        # bytes: each line is decoded on its own, so a line that is not UTF-8 is that line's error
        src = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")  # noqa: SIM115
    except OSError as e:
        raise CommandError(f"cannot read events file {args.events!r}: {e.strerror}", EXIT_UNREADABLE) from None
    with src:
        bad = replay(config, read_lines(src), sys.stdout, run_actions=args.run_actions)
    return EXIT_INVALID if bad else EXIT_OK
