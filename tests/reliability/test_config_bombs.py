"""Config bombs: what a hostile or unlucky config may cost ``pihub check-config``.

Each case runs the real CLI in a subprocess and expects the located problem that names
the limit it passed (see :mod:`pihub.config.yamlsrc` and :mod:`pihub.config.loader`).
The subprocess timeout is a hang-breaker only: it fires when a cap is already broken
(before the caps, the alias bomb ran for minutes and a FIFO include hung for ever).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pihub.config.loader import MAX_INCLUDE_DEPTH
from pihub.config.yamlsrc import MAX_CONFIG_BYTES, MAX_CONFIG_NODES

#: Seconds before a check-config run is declared hung (it takes well under one).
HANG_BREAKER = 10.0

NODES_LIMIT = (f"{MAX_CONFIG_NODES} values (the most a config may hold, in all its files, counting each alias "
               f"as the values it stands for)")


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``pihub check-config PATH``; fail the test when it does not finish."""
    env = {k: v for k, v in os.environ.items() if k != "PIHUB_CONFIG"}
    try:
        return subprocess.run([sys.executable, "-m", "pihub", "check-config", str(path)], capture_output=True,
                              text=True, env=env, timeout=HANG_BREAKER, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pihub check-config {path} did not finish in {HANG_BREAKER} s")


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines of an invalid config (exit 1), without the count line."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == f"{len(lines) - 1} error{'s' if len(lines) != 2 else ''}"
    return lines[:-1]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _laughs(levels: int, width: int = 10) -> list[str]:
    """``l0: &l0 "lol"``, then ``lN: &lN [*lN-1, ...]`` (``width`` aliases): ``width ** levels`` leaves."""
    return ['l0: &l0 "lol"'] + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]"
                                for i in range(1, levels + 1)]


def test_alias_bomb_in_a_hook_action_args(tmp_path: Path) -> None:
    lines = ["event.hook.bomb:", "  if: {type: CustomEvent}", "  then:", "    - action: logger.info", "      args:"]
    lines += ["        " + line for line in _laughs(9)]
    cfg = write(tmp_path / "c.yaml", "\n".join(lines) + "\n")
    # 14 values up to args, l0..l4 bring it to 12364, l5 to 12366; each *l4 adds 11111,
    # so the 8th (line 11, after "        l5: &l5 [" and 7 "*l4, ") passes the limit
    assert errors(check_config(cfg)) == [
        f"{cfg}:11:{17 + 7 * 5 + 1}: alias *l4 stands for 11111 values, which takes the config past {NODES_LIMIT}"]


def test_billion_laughs_list(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "\n".join(_laughs(9)) + "\n")
    # 1 + 2 + 12 + 112 + 1112 + 11112 = 12351 values up to l4; l5 adds 2 then 11111 an alias
    assert errors(check_config(cfg)) == [
        f"{cfg}:6:{9 + 7 * 5 + 1}: alias *l4 stands for 11111 values, which takes the config past {NODES_LIMIT}"]


def test_billion_laughs_mapping(tmp_path: Path) -> None:
    lines = ["k: &k [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"k{i}: &k{i} {{" + ", ".join(f"x{j}: *k{i - 1 if i > 1 else ''}" for j in range(10)) + "}"
              for i in range(1, 10)]
    cfg = write(tmp_path / "c.yaml", "\n".join(lines) + "\n")
    # up to k3: 13579 values; k4 adds 2, then 12222 a pair: the alias of the 8th pair passes
    assert errors(check_config(cfg)) == [
        f"{cfg}:5:{9 + 7 * 9 + 5}: alias *k3 stands for 12221 values, which takes the config past {NODES_LIMIT}"]


def test_a_huge_key_count_within_the_byte_limit(tmp_path: Path) -> None:
    n = MAX_CONFIG_NODES // 2 + 1
    cfg = write(tmp_path / "c.yaml", "constants:\n" + "".join(f"  k{i}: 0\n" for i in range(n)))
    assert cfg.stat().st_size <= MAX_CONFIG_BYTES
    # the root, constants and its mapping, then 2 a key: the value of key j passes the
    # limit when 3 + 2 * j > MAX_CONFIG_NODES; key j (from 1) is k{j - 1} on line j + 1
    j = (MAX_CONFIG_NODES - 1) // 2
    assert errors(check_config(cfg)) == [
        f"{cfg}:{j + 1}:{len(f'  k{j - 1}: ') + 1}: too many values: this one takes the config past {NODES_LIMIT}"]


def test_a_huge_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    with cfg.open("w", encoding="ascii") as f:  # twice the byte limit (the issue had 4.4 M keys, 60 MB)
        f.writelines(f"k{i}: 0\n" for i in range(MAX_CONFIG_BYTES // 5))
    assert errors(check_config(cfg)) == [
        f"{cfg}:1:1: the file is larger than {MAX_CONFIG_BYTES} bytes (the most a config file may hold); "
        f"split it with include"]


def test_files_that_each_include_the_next_twice(tmp_path: Path) -> None:
    # 21 files as in the issue: each file is read once, and the chain stops at the depth limit
    for i in range(21):
        write(tmp_path / f"f{i}.yaml", f"include: [f{i + 1}.yaml, f{i + 1}.yaml]\nprocedure.p{i}: []\n"
              if i < 20 else "procedure.p20: []\n")
    deepest, refused = tmp_path / f"f{MAX_INCLUDE_DEPTH}.yaml", tmp_path / f"f{MAX_INCLUDE_DEPTH + 1}.yaml"
    limit = (f"includes nested more than {MAX_INCLUDE_DEPTH} deep (the most a config may nest them): "
             f"{str(refused)!r} would be at depth {MAX_INCLUDE_DEPTH + 1}")
    second = 11 + len(f"{refused.name}, ")
    assert errors(check_config(tmp_path / "f0.yaml")) == [f"{deepest}:1:11: include[0]: {limit}",
                                                          f"{deepest}:1:{second}: include[1]: {limit}"]


def test_files_that_each_include_the_next_ten_times_within_the_depth_limit(tmp_path: Path) -> None:
    # 10 ** 8 walks if each include were followed again
    for i in range(MAX_INCLUDE_DEPTH + 1):
        body = f"procedure.p{i}: []\n"
        if i < MAX_INCLUDE_DEPTH:
            body = "include: [" + ", ".join([f"f{i + 1}.yaml"] * 10) + "]\n" + body
        write(tmp_path / f"f{i}.yaml", body)
    result = check_config(tmp_path / "f0.yaml")
    assert result.returncode == 0, result.stderr
    assert f"ok ({0} hooks, {MAX_INCLUDE_DEPTH + 1} procedures, 0 warnings)" in result.stdout


def test_an_include_chain_deeper_than_the_limit(tmp_path: Path) -> None:
    for i in range(200):
        write(tmp_path / f"d{i}.yaml", f"include: d{i + 1}.yaml\n")
    deepest = tmp_path / f"d{MAX_INCLUDE_DEPTH}.yaml"
    assert errors(check_config(tmp_path / "d0.yaml")) == [
        f"{deepest}:1:10: include: includes nested more than {MAX_INCLUDE_DEPTH} deep (the most a config may nest "
        f"them): {str(tmp_path / f'd{MAX_INCLUDE_DEPTH + 1}.yaml')!r} would be at depth {MAX_INCLUDE_DEPTH + 1}"]


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory", "socket"])
def test_an_include_of_anything_but_a_regular_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(target)  # nobody writes: a blocking open would never return
    elif kind == "directory":
        target.mkdir()
    elif kind == "socket":
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
        sock.close()
    else:
        target = Path(kind)
    cfg = write(tmp_path / "c.yaml", f"device_id: x\ninclude: {target}\n")
    reason = {"/dev/zero": "not a regular file (a character device)", "fifo": "not a regular file (a fifo)",
              "directory": "is a directory", "socket": "not a regular file (a socket)"}[kind]
    assert errors(check_config(cfg)) == [f"{cfg}:2:10: include: cannot read included file {str(target)!r}: {reason}"]


def test_an_oversized_include(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    cfg = write(tmp_path / "c.yaml", "include: big.yaml\n")
    assert errors(check_config(cfg)) == [
        f"{big}:1:1: the file is larger than {MAX_CONFIG_BYTES} bytes (the most a config file may hold); "
        f"split it with include"]


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_main_config_that_is_not_a_regular_file_is_unreadable(tmp_path: Path, kind: str) -> None:
    target = Path(kind) if kind.startswith("/") else tmp_path / "c.yaml"
    if kind == "fifo":
        os.mkfifo(target)
    result = check_config(target)
    what = "a fifo" if kind == "fifo" else "a character device"
    assert (result.returncode, result.stderr) == (2, f"cannot read config file {str(target)!r}: "
                                                     f"not a regular file ({what})\n")
