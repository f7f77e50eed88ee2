"""What every ``pihub`` command shares: exit codes, the config loader, the error printer.

Exit codes, the same for every command:

==  ==============================================================================
0   done
1   bad input: an invalid config, a bad argument, an action that failed, a refused
    credential (the message names the thing, the value and what is allowed)
2   nothing to work on: the config or an input file cannot be read, the store
    cannot be opened
==  ==============================================================================

A command raises :class:`CommandError` (or lets a config error through) and
:func:`guarded` turns it into its message on stderr and its exit code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TextIO

from pihub.errors import CommandError

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_UNREADABLE", "CommandError", "guarded", "load_config",
           "print_problems"]


def load_config(path: str | None) -> Any:
    """Load the config at ``path`` (None: the usual search) with every known section.

    Raises:
        pihub.config.ConfigUnreadable: the file cannot be found or read.
        pihub.errors.ConfigError: it is invalid (every problem, located).
    """
    from pihub import config as cfg
    from pihub.hub import known_sections

    return cfg.load(path, sections=known_sections())


def print_problems(err: Exception, out: TextIO) -> None:
    """Print a ConfigError as one located problem a line, its warnings, and a count."""
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


def guarded(command: Callable[..., int]) -> Callable[..., int]:
    """Map a command's failures to the exit codes above, printing why on stderr."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        from pihub.errors import ConfigError, ConfigUnreadable

        try:
            return command(*args, **kwargs)
        except CommandError as e:
            print(str(e), file=sys.stderr)
            return e.code
        except ConfigUnreadable as e:
            print(str(e), file=sys.stderr)
            return EXIT_UNREADABLE
        except ConfigError as e:
            print_problems(e, sys.stderr)
            return EXIT_INVALID

    return run
