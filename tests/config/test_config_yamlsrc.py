"""pihub.config.yamlsrc: plain values, positions by path, tags, secrets, located problems."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pihub.config.yamlsrc import MAX_FILE_BYTES, Location, PositionLoader, Secret, parse_document

BOTH = pytest.mark.parametrize("pure", [False, True], ids=["default-loader", "pure-loader"])


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
    assert messages(doc) == ["/cfg/c.yaml:1:5: invalid yaml: mapping values are not allowed here"]
    assert doc.value is None


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
def test_syntax_error_is_located_libyaml() -> None:
    doc = parse("a: b: c\n")
    assert messages(doc) == ["/cfg/c.yaml:1:5: invalid yaml: mapping values are not allowed in this context"]


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


def test_bad_explicit_scalar_is_a_problem() -> None:
    doc = parse("n: !!int abc\n")
    assert messages(doc) == ["/cfg/c.yaml:1:4: n: 'abc' is not a valid !!int"]


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


def test_aliases_share_one_object_so_alias_bombs_stay_small() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    start = time.perf_counter()
    doc = parse_document("\n".join(lines) + "\n", "/cfg/bomb.yaml", environ={})
    elapsed = time.perf_counter() - start
    # bools only: on failure pytest would otherwise try to repr 10**12 leaves
    shared = doc.value["a11"][3] is doc.value["a10"]
    where = doc.locate(("a2", 0, 0, 3))
    assert elapsed < 2.0
    assert not doc.problems
    assert shared
    assert where == Location("/cfg/bomb.yaml", 1, 19)


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
    doc = parse("a: " + "[" * 5000 + "]" * 5000 + "\n", pure=pure)
    assert messages(doc) == ["/cfg/c.yaml:1:1: invalid yaml: nested too deeply"]
    assert doc.value is None


def test_merge_list_earlier_sources_win() -> None:
    doc = parse("""\
        a: &a {pin: 1}
        b: &b {pin: 2, pull: up}
        c:
          <<: [*a, *b]
        """)
    assert doc.problems == []
    assert doc.value["c"] == {"pin": 1, "pull": "up"}
