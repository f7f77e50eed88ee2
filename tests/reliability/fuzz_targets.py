"""Coverage-guided fuzz targets: hostile bytes into pihub's parsers and evaluator.

Each target takes one input (bytes) and raises only when pihub breaks a promise; the
promise is in the target's docstring. The same functions serve two drivers:

* **atheris** (libFuzzer, coverage-guided; pihub's modules are instrumented): run as
  ``python fuzz_targets.py TARGET [libFuzzer options] [corpus dirs]``. libFuzzer first
  runs every input of the corpus dirs (the seeds kept in ``corpus/<target>/`` and the
  crashes saved there), then mutates for ``-max_total_time`` seconds. An input that
  raises, hangs (``-timeout``) or runs out of memory (``-rss_limit_mb``) is written as
  ``crash-…``/``timeout-…``/``oom-…`` where ``-artifact_prefix`` says: the test puts them
  in ``corpus/<target>/``, where they stay as regression cases.
* **hypothesis**, where atheris has no wheel (it needs clang to build, e.g. on a Pi): the
  same script with ``--hypothesis SECONDS CORPUS_DIR`` replays the corpus, then feeds
  random bytes for the budget (random, not coverage-guided).

``tests/reliability/test_fuzz.py`` runs each target for a few seconds in ``make test``
and for minutes under ``make soak``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Target = Callable[[bytes], None]

#: Names an expression may read: one of each kind of value a hook context holds.
_NAME_KINDS = ("x", "s", "l", "d", "f", "n", "b", "t", "event")


def _names(seed: bytes) -> dict[str, Any]:
    """Values for the names, derived from ``seed`` (8 bytes)."""
    seed = seed.ljust(8, b"\0")
    i = int.from_bytes(seed[:4], "little", signed=True)
    text = seed.decode("latin-1")
    return {
        "x": i,
        "s": text,
        "l": [i, text, None, [1, 2]],
        "d": {"k": i, text: [i], "nested": {"a": 1.5}},
        "f": i / 7,
        "n": None,
        "b": seed,
        "t": (i, text),
        "event": {"type": "CustomEvent", "args": {"subtype": text, "value": i}},
    }


def expr(data: bytes) -> None:
    """``${…}``: compile and evaluate any text; only ExpressionError may escape.

    Input: byte 0 picks the entry point (compile_expr / compile_template), bytes 1..8 seed
    the names' values, the rest (UTF-8, errors replaced) is the source.
    """
    from pihub.engine.expr import compile_expr, compile_template
    from pihub.errors import ExpressionError

    if not data:
        return
    mode, names, text = data[0], _names(data[1:9]), data[9:].decode("utf-8", "replace")
    try:
        if mode & 1:
            compile_template({"args": [text, {"k": text}]}).render(names)
        else:
            compile_expr(text).value(names)
    except ExpressionError:
        pass


def line(data: bytes) -> None:
    """Line parsers: any bytes, split anywhere, never raise and always balance the books.

    Input: byte 0 picks the parser and ``max_line`` (16..79 bytes), byte 1 the feed size
    (1..256); the rest is the stream. Promises: ``feed`` never raises; the readings do not
    depend on how the stream is split; ``lines == readings + malformed``; the buffer never
    holds more than ``max_line`` bytes.
    """
    from pihub.parsers.line import PARSERS

    if len(data) < 2:
        return
    kinds = sorted(PARSERS)
    cls = PARSERS[kinds[data[0] % len(kinds)]]
    max_line = 16 + data[0] // len(kinds) % 64
    step = 1 + data[1]
    stream = data[2:]
    whole, pieces = cls(max_line), cls(max_line)
    out_whole = whole.feed(stream)
    out_pieces: list[Any] = []
    for i in range(0, len(stream), step):
        out_pieces += pieces.feed(stream[i:i + step])
        assert pieces.pending <= max_line, (pieces.pending, max_line)
    assert out_pieces == out_whole, "readings depend on how the stream was split"
    for p in (whole, pieces):
        assert p.lines == p.readings + p.malformed, p.stats()
        assert p.pending <= max_line
    assert whole.stats() == pieces.stats()


def wire(data: bytes) -> None:
    """Wire-format decoder: ``messages.parse`` of any bytes or text raises only MessageError."""
    from pihub.errors import MessageError
    from pihub.messages import Request, parse

    for message in (data, data.decode("utf-8", "replace")):
        try:
            parsed = parse(message, default_origin="fuzz")
        except MessageError:
            continue
        if isinstance(parsed, Request):
            plugin, method = parsed.split_action()
            assert plugin and method


def config(data: bytes) -> None:
    """Config loader: any file content gives a Config or ConfigError/ConfigProblems, nothing else."""
    from pihub import config as cfg
    from pihub.errors import ConfigError, ConfigProblems
    from pihub.hub import known_sections

    with tempfile.TemporaryDirectory(prefix="pihub-fuzz-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(data)
        try:
            cfg.load(str(path), sections=known_sections())
        except (ConfigError, ConfigProblems):
            pass


TARGETS: dict[str, Target] = {"expr": expr, "line": line, "wire": wire, "config": config}


def _atheris(target: Target, argv: list[str]) -> None:
    """libFuzzer over ``target`` with pihub instrumented; never returns."""
    import atheris

    with atheris.instrument_imports(include=["pihub"]):
        import pihub.config
        import pihub.engine.expr
        import pihub.hub
        import pihub.messages
        import pihub.parsers.line  # noqa: F401
    atheris.Setup(argv, target)
    atheris.Fuzz()


def _hypothesis(target: Target, seconds: float, corpus: Path) -> int:
    """Replay ``corpus``, then random inputs for ``seconds``; 1 (and the input) on failure."""
    import time

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    for f in sorted(corpus.iterdir()):
        if f.is_file():
            target(f.read_bytes())

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=4096))
    def run(data: bytes) -> None:
        try:
            target(data)
        except BaseException:
            (corpus / f"crash-hypothesis-{abs(hash(data)):x}").write_bytes(data)
            raise

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        run()
    return 0


def main(argv: list[str]) -> int:
    """``fuzz_targets.py TARGET [libFuzzer args]`` or ``TARGET --hypothesis SECONDS CORPUS``."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dirs]", file=sys.stderr)
        return 2
    target = TARGETS[argv[1]]
    if len(argv) == 5 and argv[2] == "--hypothesis":
        return _hypothesis(target, float(argv[3]), Path(argv[4]))
    _atheris(target, [argv[0], *argv[2:]])
    return 0


if __name__ == "__main__":
    # the targets import pihub from the checkout, as the tests do
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[2]))
    sys.exit(main(sys.argv))
