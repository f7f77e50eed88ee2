"""``pihub check-config [FILE]``: load and fully compile a config, print every problem."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from typing import Any

from pihub.cli.common import EXIT_INVALID, EXIT_OK, guarded, load_config, print_problems


@guarded
def cmd_check_config(args: argparse.Namespace) -> int:
    """Exit 0 when the config (sections, hooks, procedures, actions) is valid, else 1."""
    from pihub.errors import ConfigError

    try:
        config = load_config(args.file or args.config)
    except ConfigError as e:
        # the valid parts still compile: report their hook/procedure problems too
        problems = list(e.problems) + list(e.warnings)
        if e.config is not None:
            problems += compile_problems(e.config)
        print_problems(ConfigError(sorted(set(problems), key=_problem_order)), sys.stderr)
        return EXIT_INVALID
    problems = compile_problems(config)
    if any(not p.warning for p in problems):
        print_problems(ConfigError(problems), sys.stderr)
        return EXIT_INVALID
    for w in config.warnings:
        print(f"{w} (warning)", file=sys.stderr)
    print(f"{', '.join(config.files)}: ok ({len(config.hooks)} hooks, {len(config.procedures)} procedures, "
          f"{len(config.warnings)} warnings)")
    return EXIT_OK


def _problem_order(p: Any) -> tuple[str, int, int, str]:
    return (p.file, p.line, p.col, p.message)


def compile_problems(config: Any) -> list[Any]:
    """Build (and stop) a hub from ``config`` in a scratch workdir; its located problems."""
    from pihub.errors import ConfigError
    from pihub.hub import Hub

    with tempfile.TemporaryDirectory(prefix="pihub-check-") as tmp:
        try:
            Hub(dataclasses.replace(config, workdir=tmp)).stop()
        except ConfigError as e:
            return list(e.problems)
    return []
