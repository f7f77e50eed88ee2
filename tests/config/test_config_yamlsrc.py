"""pihub.config.yamlsrc: plain values, positions by path, tags, secrets, located problems."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pihub_testing import need_tool

from pihub.config.yamlsrc import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    MAX_FILE_BYTES,
    Location,
    PositionLoader,
    Secret,
    parse_document,
    read_regular,
)

BOTH = pytest.mark.parametrize("pure", [False, True], ids=["default-loader", "pure-loader"])
#: Python's int-from-text digit limit (4300 unless PYTHONINTMAXSTRDIGITS says otherwise)
LIMIT = sys.get_int_max_str_digits()


def parse(text: str, file: str = "/cfg/c.yaml", *, env: dict[str, str] | None = None, pure: bool = False):
    return parse_document(textwrap.dedent(text), file, environ=env or {}, pure=pure)


def messages(doc) -> list[str]:
    return [str(p) for p in doc.problems]


# -- values and positions -------------------------------------------------------------------


@BOTH
def test_builds_plain_values(pure: bool) -> None:
    doc = parse("""\
        a: 1
        b: [x, 2.5, true, null]
        c: {d: e}
        when: 2024-01-02
        """, pure=pure)
    assert doc.problems == []
    assert doc.value["a"] == 1 and doc.value["b"] == ["x", 2.5, True, None]
    assert type(doc.value) is dict and type(doc.value["b"]) is list and type(doc.value["c"]) is dict
    assert doc.value["c"] == {"d": "e"}
    assert str(doc.value["when"]) == "2024-01-02"


def test_default_loader_uses_libyaml_when_available() -> None:
    assert issubclass(PositionLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@BOTH
def test_locates_keys_and_values_by_path(pure: bool) -> None:
    doc = parse("""\
        top:
          port: 8008
          list:
            - first
            - {x: 1, y: [a, b]}
        """, pure=pure)
    assert doc.locate(("top", "port")) == Location("/cfg/c.yaml", 2, 9)
    assert doc.locate(("top", "port"), at_key=True) == Location("/cfg/c.yaml", 2, 3)
    assert doc.locate(("top", "list", 0)) == Location("/cfg/c.yaml", 4, 7)
    assert doc.locate(("top", "list", 1, "y", 1)) == Location("/cfg/c.yaml", 5, 21)
    assert doc.locate(("top", "list", 1, "x"), at_key=True) == Location("/cfg/c.yaml", 5, 8)
    assert doc.locate(()) == Location("/cfg/c.yaml", 1, 1)


def test_locate_missing_path_falls_back_to_the_nearest_key() -> None:
    doc = parse("""\
        a: 0
        section:
          present: 1
        """)
    # a missing key is shown at the key of the mapping that lacks it
    assert doc.locate(("section", "absent"), at_key=True) == Location("/cfg/c.yaml", 2, 1)
    assert doc.locate(("section", "absent", "deeper")) == Location("/cfg/c.yaml", 2, 1)
    assert doc.locate(("nothing",)) == Location("/cfg/c.yaml", 1, 1)


def test_locate_index_zero_into_a_mapping_is_the_mapping() -> None:
    doc = parse("""\
        hook:
          then:
            action: x.y
            args: {pin: 3}
        """)
    assert doc.locate(("hook", "then", 0, "args", "pin")) == Location("/cfg/c.yaml", 4, 17)
    assert doc.locate(("hook", "then", 1)) == Location("/cfg/c.yaml", 2, 3)


def test_int_keys_are_kept_and_locatable() -> None:
    doc = parse("""\
        notes:
          60: on
          61: off
        """)
    assert doc.value == {"notes": {60: True, 61: False}}
    assert doc.locate(("notes", 61), at_key=True) == Location("/cfg/c.yaml", 3, 3)


# -- problems -------------------------------------------------------------------------------


def test_syntax_error_is_located_pure_loader() -> None:
    doc = parse("a: b: c\n", pure=True)
    # pihub's part of the message: the location and "invalid yaml:"; the rest is PyYAML's
    [message] = messages(doc)
    assert message.startswith("/cfg/c.yaml:1:5: invalid yaml: ")
    assert doc.value is None


def test_syntax_error_is_located_libyaml() -> None:
    need_tool(yaml.__with_libyaml__, "PyYAML built without libyaml (the lock's wheels have it)")
    [message] = messages(parse("a: b: c\n"))
    assert message.startswith("/cfg/c.yaml:1:5: invalid yaml: ")


def test_syntax_error_names_its_context() -> None:
    doc = parse("a: [1, 2\n", pure=True)
    assert messages(doc) == [("/cfg/c.yaml:2:1: invalid yaml: expected ',' or ']', but got '<stream end>' "
                              "(while parsing a flow sequence at line 1, col 4)")]


@BOTH
def test_unknown_tag_is_a_problem_and_the_value_is_none(pure: bool) -> None:
    doc = parse("""\
        a: 1
        b: !foo bar
        """, pure=pure)
    assert messages(doc) == ["/cfg/c.yaml:2:4: b: unknown tag '!foo' (allowed tags: !env, !file)"]
    assert doc.value == {"a": 1, "b": None}


@BOTH
def test_python_tags_are_refused_and_never_executed(pure: bool, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "executed"
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    text = f"""\
        x: !!python/object/apply:os.system ["touch {marker}"]
        y: !!python/object/new:subprocess.check_output [["touch", "{marker}"]]
        z: !!python/name:os.system
        """
    doc = parse(text, pure=pure)
    assert messages(doc) == [
        "/cfg/c.yaml:1:4: x: unknown tag '!!python/object/apply:os.system' (allowed tags: !env, !file)",
        ("/cfg/c.yaml:2:4: y: unknown tag '!!python/object/new:subprocess.check_output' "
         "(allowed tags: !env, !file)"),
        "/cfg/c.yaml:3:4: z: unknown tag '!!python/name:os.system' (allowed tags: !env, !file)",
    ]
    assert doc.value == {"x": None, "y": None, "z": None}
    assert calls == [] and not marker.exists()


def test_standard_tags_other_than_plain_values_are_refused() -> None:
    doc = parse("""\
        s: !!set {a, b}
        m: !!map scalar
        """)
    assert messages(doc) == [
        "/cfg/c.yaml:1:4: s: unknown tag '!!set' (allowed tags: !env, !file)",
        "/cfg/c.yaml:2:4: m: tag '!!map' does not apply to a scalar",
    ]


def test_bad_explicit_scalar_is_a_problem_that_says_what_is_allowed() -> None:
    doc = parse("n: !!int abc\nb: !!bool maybe\n")
    assert messages(doc) == [
        f"/cfg/c.yaml:1:4: n: 'abc' is not a valid !!int (allowed: an integer of at most {LIMIT} digits:"
        " decimal, 0x hex, 0o octal or 0b binary)",
        "/cfg/c.yaml:2:4: b: 'maybe' is not a valid !!bool (allowed: true or false)",
    ]


@BOTH
def test_an_integer_past_the_digit_limit_is_a_short_problem(pure: bool) -> None:
    # valid YAML, but Python's int() refuses more than LIMIT digits (quadratic-time conversion)
    digits = "1" + "0" * LIMIT
    doc = parse(f"v: {digits}\nw: -{'7' * LIMIT}\n", pure=pure)
    [problem] = doc.problems
    assert str(problem) == (f"/cfg/c.yaml:1:4: v: '100000000000000000000000000000...0000000000' ({LIMIT + 1} digits)"
                            f" is not a valid !!int (allowed: an integer of at most {LIMIT} digits: decimal,"
                            " 0x hex, 0o octal or 0b binary)")
    assert doc.value == {"v": None, "w": -int("7" * LIMIT)}


@BOTH
def test_duplicate_key_is_a_problem(pure: bool) -> None:
    doc = parse("""\
        gpio:
          pin: 3
          pin: 4
        """, pure=pure)
    assert messages(doc) == [
        "/cfg/c.yaml:3:3: gpio: duplicate key 'pin' (first at line 2, col 3); yaml would silently keep the last"]


def test_merge_keys_are_not_duplicates_and_explicit_keys_win() -> None:
    doc = parse("""\
        base: &b {pin: 3, pull: up}
        door:
          <<: *b
          pin: 4
        """)
    assert doc.problems == []
    assert doc.value["door"] == {"pin": 4, "pull": "up"}
    assert doc.locate(("door", "pull")) == Location("/cfg/c.yaml", 1, 25)


def test_aliases_share_one_object() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 4)]
    doc = parse_document("\n".join(lines) + "\n", "/cfg/bomb.yaml", environ={})
    assert not doc.problems
    assert doc.value["a3"][3] is doc.value["a2"]
    assert doc.locate(("a2", 0, 0, 3)) == Location("/cfg/bomb.yaml", 1, 19)
    # aliases count as the values they stand for: 11 + 111 + 1111 + 11111, plus the keys
    assert doc.nodes == 1 + 4 + 11 + 111 + 1111 + 11111


@BOTH
def test_alias_bomb_is_refused_at_the_alias_that_passes_the_limit(pure: bool) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    doc = parse_document("\n".join(lines) + "\n", "/cfg/bomb.yaml", environ={}, pure=pure)
    # the mapping and a0..a3 hold 12349 values (see above); a4 and its key add 2, and each
    # *a3 in a4 adds 11111: the 8th passes 100000
    assert messages(doc) == [f"/cfg/bomb.yaml:5:{10 + 5 * 7}: alias *a3 stands for 11111 values, which takes "
                             f"the config past {MAX_CONFIG_NODES} values (the most a config may hold, in all its "
                             f"files, counting each alias as the values it stands for)"]
    assert doc.value is None and doc.root is None


@pytest.mark.parametrize("text", [
    "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b {k: *a, l: *a, m: *a, n: *a, o: *a, p: *a, q: *a, r: *a}\n"
    + "".join(f"c{i}: {{<<: *b, z: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b]}}\n"
              for i in range(1000)),
    "[" + ", ".join(["0"] * (MAX_CONFIG_NODES + 1)) + "]\n",
    "".join(f"k{i}: 0\n" for i in range(MAX_CONFIG_NODES // 2 + 1)),
], ids=["merge-and-alias-mappings", "flow-list", "keys"])
def test_too_many_values_is_a_located_problem(text: str) -> None:
    doc = parse_document(text, "/cfg/big.yaml", environ={})
    assert len(doc.problems) == 1 and doc.value is None
    problem = doc.problems[0]
    assert (problem.line, problem.col) != (1, 1) and f"past {MAX_CONFIG_NODES} values" in problem.message
    assert doc.nodes == MAX_CONFIG_NODES + 1 or problem.message.startswith("alias")


def test_the_value_budget_can_be_a_remainder() -> None:
    doc = parse_document("a: [1, 2, 3]\nb: [4, 5]\n", "/cfg/c.yaml", environ={}, max_nodes=6)
    assert messages(doc) == [f"/cfg/c.yaml:2:1: too many values: this one takes the config past "
                             f"{MAX_CONFIG_NODES} values (the most a config may hold, in all its files, counting "
                             f"each alias as the values it stands for)"]
    assert parse_document("a: [1, 2, 3]\n", "/cfg/c.yaml", environ={}, max_nodes=6).problems == []


@BOTH
def test_block_nesting_deeper_than_the_limit_is_a_located_problem(pure: bool) -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(MAX_CONFIG_DEPTH + 1))
    doc = parse_document(text, "/cfg/deep.yaml", environ={}, pure=pure)
    assert messages(doc) == [f"/cfg/deep.yaml:{MAX_CONFIG_DEPTH + 1}:{MAX_CONFIG_DEPTH + 1}: lists and mappings "
                             f"nested more than {MAX_CONFIG_DEPTH} deep (the most a config may nest)"]
    assert parse_document(text.rsplit("\n", 2)[0] + "\n", "/cfg/deep.yaml", environ={}).problems == []


def test_more_bytes_than_the_limit_is_a_problem_and_not_parsed() -> None:
    doc = parse_document(b"#" * MAX_CONFIG_BYTES + b"\n", "/cfg/big.yaml", environ={})
    assert messages(doc) == [f"/cfg/big.yaml:1:1: the file is larger than {MAX_CONFIG_BYTES} bytes "
                             f"(the most a config file may hold); split it with include"]
    assert parse_document(b"#" * (MAX_CONFIG_BYTES - 1) + b"\n", "/cfg/big.yaml", environ={}).problems == []


def test_recursive_alias_is_a_problem() -> None:
    doc = parse("a: &x [1, *x]\n")
    assert messages(doc) == ["/cfg/c.yaml:1:4: a[1]: recursive alias: a collection cannot contain itself"]


def test_mapping_keys_must_be_scalars() -> None:
    doc = parse("? [a, b]\n: 1\nc: 2\n")
    assert messages(doc) == ["/cfg/c.yaml:1:3: mapping keys must be scalars, not a list"]
    assert doc.value == {"c": 2}


def test_invalid_utf8_is_located() -> None:
    doc = parse_document(b"a: 1\nb: \xff\n", "/cfg/c.yaml", environ={})
    assert messages(doc) == ["/cfg/c.yaml:2:4: invalid yaml: not utf-8 text (byte 0xff)"]


@BOTH
def test_control_characters_are_located(pure: bool) -> None:
    doc = parse("aé: 1\nb: \x07\n", pure=pure)
    assert len(doc.problems) == 1
    p = doc.problems[0]
    assert (p.line, p.col) == (2, 4)
    assert p.message.startswith("invalid yaml: unacceptable character #x0007: ")


def test_all_problems_of_a_file_are_collected() -> None:
    doc = parse("""\
        a: !foo 1
        b: !env MISSING
        c: 1
        c: 2
        """)
    assert [(p.line, p.col) for p in doc.problems] == [(1, 4), (2, 4), (4, 1)]


# -- !env and !file -------------------------------------------------------------------------


@BOTH
def test_env_reads_the_variable_as_a_secret(pure: bool) -> None:
    doc = parse("token: !env TOK\n", env={"TOK": "hunter2"}, pure=pure)
    assert doc.problems == []
    assert isinstance(doc.value["token"], Secret)
    assert doc.value["token"] == "hunter2"


@BOTH
def test_env_missing_variable_is_a_problem_naming_it(pure: bool) -> None:
    doc = parse("""\
        http:
          token: !env PIHUB_TOKEN
        """, pure=pure)
    assert messages(doc) == [("/cfg/c.yaml:2:10: http.token: environment variable 'PIHUB_TOKEN' is not set "
                              "(use !env [PIHUB_TOKEN, default] to give a default)")]
    assert doc.value == {"http": {"token": None}}


def test_env_default_is_used_when_unset_and_keeps_non_string_types() -> None:
    doc = parse("""\
        a: !env [UNSET, fallback]
        b: !env [UNSET, 8008]
        c: !env [SET, 8008]
        d: !env [UNSET, null]
        """, env={"SET": "9000"})
    assert doc.problems == []
    assert isinstance(doc.value["a"], Secret) and doc.value["a"] == "fallback"
    assert doc.value["b"] == 8008 and type(doc.value["b"]) is int
    assert isinstance(doc.value["c"], Secret) and doc.value["c"] == "9000"
    assert doc.value["d"] is None


def test_env_bad_forms_are_problems() -> None:
    doc = parse("""\
        a: !env {x: 1}
        b: !env [ONE]
        c: !env ""
        """)
    assert messages(doc) == [
        "/cfg/c.yaml:1:4: a: !env takes a variable name or [name, default], not a mapping",
        "/cfg/c.yaml:2:4: b: !env takes a variable name or [name, default], not a list of 1 items",
        "/cfg/c.yaml:3:4: c: !env needs an environment variable name, not ''",
    ]


def test_file_reads_stripped_content_relative_to_the_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("  s3cret\n\n", encoding="utf-8")
    doc = parse("pw: !file secrets/pw\n", file=str(tmp_path / "c.yaml"))
    assert doc.problems == []
    assert isinstance(doc.value["pw"], Secret)
    assert doc.value["pw"].reveal() == "s3cret"


def test_file_missing_is_a_problem_naming_the_path(tmp_path: Path) -> None:
    cfg = str(tmp_path / "c.yaml")
    doc = parse("pw: !file nope.txt\n", file=cfg)
    assert messages(doc) == [
        f"{cfg}:1:5: pw: cannot read !file {str(tmp_path / 'nope.txt')!r}: no such file or directory"]


def test_file_too_large_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    cfg = str(tmp_path / "c.yaml")
    doc = parse("pw: !file big\n", file=cfg)
    assert messages(doc) == [(f"{cfg}:1:5: pw: !file {str(tmp_path / 'big')!r} is larger than "
                              f"{MAX_FILE_BYTES} bytes")]


@pytest.mark.parametrize("make", ["fifo", "directory", "/dev/zero"])
def test_file_of_anything_but_a_regular_file_is_a_problem(tmp_path: Path, make: str) -> None:
    target = tmp_path / "special"
    if make == "fifo":
        os.mkfifo(target)  # no writer: opening it for reading would block forever
    elif make == "directory":
        target.mkdir()
    else:
        target = Path(make)
    cfg = str(tmp_path / "c.yaml")
    doc = parse(f"pw: !file {target}\n", file=cfg)
    reason = {"fifo": "not a regular file (a fifo)", "directory": "is a directory",
              "/dev/zero": "not a regular file (a character device)"}[make]
    assert messages(doc) == [f"{cfg}:1:5: pw: cannot read !file {str(target)!r}: {reason}"]


def test_read_regular_reads_one_byte_past_the_limit(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    assert read_regular(str(tmp_path / "f"), 4) == b"01234"
    assert read_regular(str(tmp_path / "f"), 10) == b"0123456789"
    os.symlink(tmp_path / "f", tmp_path / "link")
    assert read_regular(str(tmp_path / "link"), 100) == b"0123456789"


# -- Secret -----------------------------------------------------------------------------------


def test_secret_is_redacted_when_shown_but_usable_as_a_string() -> None:
    s = Secret("hunter2")
    assert repr(s) == "'***'" and str(s) == "***"
    # each formatting route separately: they reach __str__/__format__ by different paths
    assert f"{s}" == "***" and f"{s:>5}" == "  ***"
    assert "%s" % s == "***"  # noqa: UP031
    assert "{}".format(s) == "***"  # noqa: UP032
    assert repr({"token": s}) == "{'token': '***'}"
    assert s.reveal() == "hunter2" and type(s.reveal()) is str
    assert s == "hunter2" and hash(s) == hash("hunter2")
    assert "Bearer " + s == "Bearer hunter2"
    assert s.encode() == b"hunter2"
    assert json.dumps(s) == '"hunter2"'


@BOTH
def test_absurd_nesting_is_a_problem_not_a_crash(pure: bool) -> None:
    # libyaml stops flow nesting itself (its wording is its own), the pure parser reaches
    # pihub's depth limit: either way one located problem on line 1, and no value
    doc = parse("a: " + "[" * 5000 + "]" * 5000 + "\n", pure=pure)
    assert [(p.file, p.line, p.path) for p in doc.problems] == [("/cfg/c.yaml", 1, "")]
    assert doc.problems[0].col > 1
    assert doc.value is None and doc.root is None


def test_merge_list_earlier_sources_win() -> None:
    doc = parse("""\
        a: &a {pin: 1}
        b: &b {pin: 2, pull: up}
        c:
          <<: [*a, *b]
        """)
    assert doc.problems == []
    assert doc.value["c"] == {"pin": 1, "pull": "up"}
