"""Run ``pihub`` under an import tracer and write what each import added to the RSS.

    python bench/import_rss.py OUT.json -- --config F run

The tracer sits first on ``sys.meta_path`` and wraps every module's loader: around each
module's execution it reads the resident set (``/proc/self/statm``), so a module's
*exclusive* cost is the RSS its own execution added minus what its nested imports added.
Costs are summed per owner: the top-level package for third-party and standard modules
(``bottle``, ``asyncio``, ``ssl``...), the second level for pihub (``pihub.web``). Shared
libraries count where they were first loaded (``_hashlib`` maps libcrypto, so a later
``_ssl`` finds most of it resident).

``OUT.json`` is written when the process receives SIGUSR1 (the benchmark sends it after
the idle window), then the process continues until SIGTERM::

    {"rss_kib": int, "baseline_kib": int, "by_import": {"ssl": 1208, ...}}

``baseline_kib`` is the RSS when the tracer started (interpreter + site).
"""

from __future__ import annotations

import importlib.abc
import json
import os
import signal
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kib() -> int:
    """This process's resident set, in KiB."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE_KIB


class _Frame:
    __slots__ = ("name", "start", "children")

    def __init__(self, name: str) -> None:
        self.name, self.start, self.children = name, rss_kib(), 0


class ImportRSS(importlib.abc.MetaPathFinder):
    """The tracer: ``costs[module] = exclusive KiB`` for every module imported after install."""

    def __init__(self) -> None:
        self.costs: dict[str, int] = {}
        self._stack: list[_Frame] = []

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _Loader(self, spec.loader, name)
            return spec
        return None

    def enter(self, name: str) -> None:
        self._stack.append(_Frame(name))

    def leave(self) -> None:
        frame = self._stack.pop()
        inclusive = rss_kib() - frame.start
        self.costs[frame.name] = self.costs.get(frame.name, 0) + inclusive - frame.children
        if self._stack:
            self._stack[-1].children += inclusive

    def by_owner(self) -> dict[str, int]:
        """Exclusive costs summed per owner (see the module docstring), largest first."""
        owners: dict[str, int] = {}
        for name, kib in self.costs.items():
            parts = name.split(".")
            owner = ".".join(parts[:2]) if parts[0] == "pihub" else parts[0]
            owners[owner] = owners.get(owner, 0) + kib
        return dict(sorted(owners.items(), key=lambda kv: -kv[1]))


class _Loader(importlib.abc.Loader):
    def __init__(self, tracer: ImportRSS, inner: Any, name: str) -> None:
        self._tracer, self._inner, self._name = tracer, inner, name

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        # extension modules map their shared library here, so the frame opens before it
        self._tracer.enter(self._name)
        try:
            return self._inner.create_module(spec)  # type: ignore[no-any-return]
        except BaseException:
            self._tracer.leave()
            raise

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._inner.exec_module(module)
        finally:
            self._tracer.leave()

    def __getattr__(self, attr: str) -> Any:  # get_resource_reader, is_package... of the real loader
        return getattr(self._inner, attr)


def main(argv: list[str]) -> int:
    out, sep, pihub_args = argv[0], argv[1], argv[2:]
    if sep != "--":
        raise SystemExit("usage: import_rss.py OUT.json -- PIHUB-ARGS...")
    baseline = rss_kib()
    tracer = ImportRSS()
    sys.meta_path.insert(0, tracer)

    def dump(_signum: int, _frame: Any) -> None:
        with open(out + ".part", "w", encoding="utf-8") as f:
            json.dump({"rss_kib": rss_kib(), "baseline_kib": baseline, "by_import": tracer.by_owner()}, f)
        os.replace(out + ".part", out)  # the benchmark waits for OUT to exist: whole or absent

    signal.signal(signal.SIGUSR1, dump)
    from pihub.cli import main as pihub_main

    return pihub_main(pihub_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
