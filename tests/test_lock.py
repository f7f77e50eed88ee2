"""The dependency lock agrees with pyproject.toml.

``requirements/runtime.txt`` and ``requirements/test.txt`` are what ``make`` and ``.ci/run``
install (hash-checked). When someone adds or tightens a dependency in ``pyproject.toml``
without ``make lock``, installs would silently diverge from what the project declares;
this test names the requirement and the command that fixes it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"

#: lock file -> the pyproject extras it is compiled with (see the Makefile's lock target).
LOCKS: dict[str, tuple[str, ...]] = {
    "runtime.txt": ("gpio", "serial", "spi"),
    "test.txt": ("gpio", "serial", "test"),
}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def parse_lock(text: str) -> dict[str, list[Version]]:
    """Pinned versions by canonical name (a universal lock may pin a name more than once,
    under different markers)."""
    pins: dict[str, list[Version]] = {}
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            pins.setdefault(canonicalize_name(m.group(1)), []).append(Version(m.group(2)))
    return pins


def unhashed_pins(text: str) -> list[str]:
    """Pinned names that carry no ``--hash`` (pip's --require-hashes would refuse them)."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    return [b.split("==", 1)[0] for b in blocks if _PIN.match(b) and "--hash=sha256:" not in b]


def declared(pyproject: Mapping[str, object], extras: Iterable[str], build_in: str) -> list[Requirement]:
    """What one lock must satisfy: the dependencies, the given extras and the build tools."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    reqs = [Requirement(r) for r in project["dependencies"]]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        reqs += [Requirement(r) for r in optional[extra]]
    build = pyproject["build-system"]
    assert isinstance(build, dict)
    reqs += [Requirement(r) for r in build["requires"]]
    reqs += [Requirement(line) for line in build_in.splitlines() if line.strip() and not line.startswith("#")]
    return reqs


def lock_problems(pyproject_text: str, locks: Mapping[str, str], build_in: str) -> list[str]:
    """Every way the locks disagree with ``pyproject_text``; empty when they agree."""
    pyproject = tomllib.loads(pyproject_text)
    problems = []
    for name, text in locks.items():
        pins = parse_lock(text)
        for req in declared(pyproject, LOCKS[name], build_in):
            versions = pins.get(canonicalize_name(req.name))
            if not versions:
                problems.append(f"requirements/{name}: {req} is declared but not locked: run 'make lock'")
            elif not any(req.specifier.contains(v, prereleases=True) for v in versions):
                have = ", ".join(map(str, versions))
                problems.append(f"requirements/{name}: {req} is declared but {req.name}=={have} is locked:"
                                " run 'make lock'")
        problems += [f"requirements/{name}: {pin} has no --hash" for pin in unhashed_pins(text)]
    return problems


def _real() -> tuple[str, dict[str, str], str]:
    return ((ROOT / "pyproject.toml").read_text(), {n: (REQ / n).read_text() for n in LOCKS},
            (REQ / "build.in").read_text())


def test_the_locks_agree_with_pyproject() -> None:
    pyproject, locks, build_in = _real()
    assert lock_problems(pyproject, locks, build_in) == []


def test_build_in_names_every_build_requirement() -> None:
    pyproject, _, build_in = _real()
    build_names = {canonicalize_name(Requirement(r).name) for r in tomllib.loads(pyproject)["build-system"]["requires"]}
    listed = {canonicalize_name(Requirement(line).name) for line in build_in.splitlines()
              if line.strip() and not line.startswith("#")}
    assert build_names <= listed


def test_a_dependency_added_without_relocking_is_reported() -> None:
    pyproject, locks, build_in = _real()
    changed = pyproject.replace("dependencies = [", "dependencies = [\n    'tomli-w>=1',", 1)
    assert changed != pyproject
    problems = lock_problems(changed, locks, build_in)
    assert len(problems) == len(LOCKS)
    assert all("tomli-w>=1 is declared but not locked: run 'make lock'" in p for p in problems)


def test_a_tightened_bound_without_relocking_is_reported() -> None:
    pyproject, locks, build_in = _real()
    pinned = parse_lock(locks["runtime.txt"])["pyyaml"][0]
    changed = re.sub(r'"PyYAML>=[^"]*"', f'"PyYAML>{pinned}"', pyproject)
    assert changed != pyproject
    problems = lock_problems(changed, locks, build_in)
    assert any(f"PyYAML>{pinned} is declared but PyYAML=={pinned} is locked" in p for p in problems)


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_every_pin_is_hashed_for_every_platform(name: str) -> None:
    text = (REQ / name).read_text()
    assert unhashed_pins(text) == []
    # A universal lock lists the sdist or wheels beyond this machine's: a package with a
    # compiled core has more than one file hashed (x86-64, aarch64, armhf builds differ).
    block = text.split("\npyyaml==", 1)[1].split("\n", 1)[1].split("\n#", 1)[0]
    assert block.count("--hash=sha256:") > 2


def test_an_unhashed_pin_is_reported() -> None:
    assert unhashed_pins("a==1 \\\n    --hash=sha256:00\nb==2\n    # via x\n") == ["b"]
