"""Coverage-guided fuzzing of the ``${…}`` evaluator, line parsers, wire decoder and config loader.

Each target of :mod:`fuzz_targets` runs in its own process under atheris (libFuzzer) for a
fixed budget: 3 s in ``make test``, 300 s under ``make soak``. libFuzzer first replays the
target's corpus, ``corpus/<target>/`` (the seeds, and every crash found before, kept as
regression cases), then mutates. A new crash, hang (10 s per input) or out-of-memory
input is written into ``corpus/<target>/`` (``crash-…``, ``timeout-…``, ``oom-…``) and
fails the test, naming the file; commit it with the fix. New coverage-increasing inputs
go to a temporary directory, so the kept corpus only changes on purpose.

Where atheris has no wheel (it needs clang to build from source, e.g. on a Pi), the same
targets run under hypothesis (random bytes, not coverage-guided) for the same budget.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_support import SOAK

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
SCRIPT = HERE / "fuzz_targets.py"
TARGETS = ("expr", "line", "wire", "config")

#: Seconds of fuzzing per target.
BUDGET_S = 300 if SOAK else 3
#: Seconds one input may run before it counts as a hang.
INPUT_TIMEOUT_S = 10
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


def _artifacts(target: str) -> set[Path]:
    return {p for p in (CORPUS / target).iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))}


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target: str, tmp_path: Path) -> None:
    seeds = CORPUS / target
    before = _artifacts(target)
    if HAS_ATHERIS:
        cmd = [sys.executable, str(SCRIPT), target, f"-max_total_time={BUDGET_S}",
               f"-timeout={INPUT_TIMEOUT_S}", "-rss_limit_mb=1024", "-max_len=4096",
               f"-artifact_prefix={seeds}/", "-print_final_stats=1"]
        words = CORPUS / f"{target}.dict"
        if words.exists():
            cmd.append(f"-dict={words}")
        cmd += [str(tmp_path), str(seeds)]  # new coverage goes to tmp; the kept corpus is read
    else:
        cmd = [sys.executable, str(SCRIPT), target, "--hypothesis", str(BUDGET_S), str(seeds)]
    # hang-breaker only: libFuzzer enforces the budget and the per-input timeout itself
    proc = subprocess.run(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=BUDGET_S + 10 * INPUT_TIMEOUT_S + 60)
    new = sorted(_artifacts(target) - before)
    tail = "\n".join(proc.stderr.splitlines()[-40:])
    assert proc.returncode == 0 and not new, (
        f"fuzz target {target!r} failed (exit {proc.returncode}); new regression inputs: "
        f"{[str(p) for p in new]}\n{tail}")


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_in_process(target: str) -> None:
    """Every kept input, seeds and past crashes, run through the target in this process."""
    sys.path.insert(0, str(HERE))
    try:
        import fuzz_targets
    finally:
        sys.path.remove(str(HERE))
    files = sorted(p for p in (CORPUS / target).iterdir() if p.is_file())
    assert files, f"no seed corpus in {CORPUS / target}"
    for f in files:
        fuzz_targets.TARGETS[target](f.read_bytes())
