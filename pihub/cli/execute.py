"""``pihub exec ACTION [name=value | name:=json ...]``: run one action, print the response.

Arguments follow httpie's convention: ``name=value`` passes the string ``value`` as is;
``name:=value`` parses ``value`` as JSON (``pin:=17``, ``on:=true``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from pihub.cli.common import EXIT_INVALID, EXIT_OK, CommandError, guarded, load_config


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


@guarded
def cmd_exec(args: argparse.Namespace) -> int:
    """Run one action with the configured plugins/backends; print the Platypush response.

    Exit 0 when the action reported no error, 1 otherwise.
    """
    from pihub.hub import Hub
    from pihub.messages import dumps

    try:
        kwargs = parse_exec_args(args.args)
    except ValueError as e:
        raise CommandError(f"pihub exec: {e}") from None
    hub = Hub(load_config(args.config))
    try:
        hub.start(serve_web=False)
        resp = hub.execute(args.action, kwargs)
        hub.flush(5.0)
    finally:
        hub.stop()
    print(dumps(resp.to_dict()["response"]))
    return EXIT_OK if resp.ok else EXIT_INVALID
