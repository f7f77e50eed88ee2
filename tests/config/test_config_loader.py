"""pihub.config.loader: search order, includes, Platypush keys, sections, located problems."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from pihub.config import (
    Config,
    ConfigNotFound,
    ConfigUnreadable,
    Field,
    HookSpec,
    ProcedureSpec,
    Schema,
    SchemaProblem,
    Secret,
    load,
)
from pihub.config import loader as loader_mod
from pihub.config import schema as schema_mod
from pihub.config.loader import LEGACY_SECTIONS, SPLIT_SECTIONS, parse_procedure_key, search_paths
from pihub.errors import ConfigError, ConfigProblem

SECTIONS = {
    "gpio": Schema({"pins": Field(list[int], []), "pull": Field(str, "up", choices=("up", "down"))}),
    "http": Schema({"port": Field(int, 8008, min=1, max=65535), "bind": Field(str, "127.0.0.1"),
                    "password": Field(str, None, secret=True)}),
    "midi": Schema({}, extra=True),
    "flic": Schema({}, extra=True),
    "smartcard": Schema({}, extra=True),
    "camera.pi": Schema({}, extra=True),
    "adc": Schema({"channels": Field(list, [])}),
    "mqtt": Schema({}, extra=True),
    "serial": Schema({}, extra=True),
    "sensor.dht": Schema({}, extra=True),
    "file_watch": Schema({}, extra=True),
    "rss": Schema({}, extra=True),
    "tcp": Schema({}, extra=True),
    "redis_queue": Schema({}, extra=True),
    "music.mpd": Schema({}, extra=True),
    "shell": Schema({"enabled": Field(bool, False)}),
}


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def errors_of(path: str, sections: dict[str, Schema] | None = SECTIONS) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path, sections=sections)
    return [str(p) for p in info.value.problems]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIHUB_CONFIG", raising=False)
    monkeypatch.delenv("PIHUB_WORKDIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(loader_mod, "SYSTEM_CONFIG", str(tmp_path / "etc" / "pihub" / "config.yaml"))


# -- each error kind, exactly ---------------------------------------------------------------


def test_unknown_top_level_key_with_did_you_mean(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        device_id: pi
        gpoi:
          pins: [1]
        """)
    assert errors_of(cfg) == [f"{cfg}:2:1: unknown section 'gpoi' (did you mean 'gpio'?)"]


def test_unknown_section_with_misspelled_prefix(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        event.hooks.door: {if: {}, then: []}
        procedures.x: []
        zzzzzz: {}
        evnt.hook.bell: {if: {}, then: []}
        ftp.server.x: {}
        """)
    assert errors_of(cfg) == [
        f"{cfg}:1:1: unknown section 'event.hooks.door' (did you mean 'event.hook.door'?)",
        f"{cfg}:2:1: unknown section 'procedures.x' (did you mean 'procedure.x'?)",
        f"{cfg}:3:1: unknown section 'zzzzzz'",
        f"{cfg}:4:1: unknown section 'evnt.hook.bell' (did you mean 'event.hook.bell'?)",
        f"{cfg}:5:1: unknown section 'ftp.server.x'",
    ]


def test_unknown_key_inside_a_section(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        http:
          prot: 80
        """)
    assert errors_of(cfg) == [f"{cfg}:2:3: http: unknown key 'prot' (did you mean 'port'?)"]


def test_wrong_type(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        http:
          port: abc
        """)
    assert errors_of(cfg) == [f"{cfg}:2:9: http.port: must be an int, not 'abc'"]


def test_out_of_range(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        http: {port: 70000}
        """)
    assert errors_of(cfg) == [f"{cfg}:1:14: http.port: must be in range 1..65535, not 70000"]


def test_missing_required_key_is_located_at_the_section(tmp_path: Path) -> None:
    sections = {"door": Schema({"pin": Field(int)})}
    cfg = write(tmp_path, "c.yaml", """\
        device_id: x
        door:
          pull: up
        """)
    assert errors_of(cfg, sections) == [
        f"{cfg}:2:1: door: missing required key 'pin'",
        f"{cfg}:3:3: door: unknown key 'pull' (allowed: 'pin')",
    ]


def test_bad_yaml_syntax(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        http:
          port: 1
         bind: x
        """)
    [message] = errors_of(cfg)
    assert message.startswith(f"{cfg}:3:2: invalid yaml: ")


def test_unknown_tag(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        http:
          bind: !hostname x
        """)
    assert errors_of(cfg) == [f"{cfg}:2:9: http.bind: unknown tag '!hostname' (allowed tags: !env, !file)"]


def test_python_object_apply_is_refused_and_never_executed(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    cfg = write(tmp_path, "c.yaml", f"""\
        constants:
          x: !!python/object/apply:os.system ["echo hi > {marker}"]
        """)
    assert errors_of(cfg) == [(f"{cfg}:2:6: constants.x: unknown tag '!!python/object/apply:os.system' "
                               f"(allowed tags: !env, !file)")]
    assert calls == [] and not marker.exists()


def test_duplicate_key(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        gpio: {pull: up}
        http: {}
        gpio: {pull: down}
        """)
    assert errors_of(cfg) == [(f"{cfg}:3:1: duplicate key 'gpio' (first at line 1, col 1); "
                               f"yaml would silently keep the last")]


def test_missing_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIHUB_TEST_PASSWORD", raising=False)
    cfg = write(tmp_path, "c.yaml", """\
        http:
          password: !env PIHUB_TEST_PASSWORD
        """)
    assert errors_of(cfg) == [(f"{cfg}:2:13: http.password: environment variable 'PIHUB_TEST_PASSWORD' is not set "
                               f"(use !env [PIHUB_TEST_PASSWORD, default] to give a default)")]


def test_include_cycle(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "include: sub/b.yaml\n")
    b = write(tmp_path, "sub/b.yaml", "device_id: x\ninclude: [../a.yaml]\n")
    assert errors_of(a) == [f"{b}:2:11: include[0]: include cycle: {a} -> {b} -> {a}"]


def test_include_of_itself(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "include: a.yaml\n")
    assert errors_of(a) == [f"{a}:1:10: include: include cycle: {a} -> {a}"]


def test_include_of_a_missing_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        include:
          - missing.yaml
        """)
    assert errors_of(cfg) == [(f"{cfg}:2:5: include[0]: cannot read included file "
                               f"{str(tmp_path / 'missing.yaml')!r}: no such file or directory")]


def test_bad_include_values(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "include: [1, '']\n")
    assert errors_of(cfg) == [f"{cfg}:1:11: include[0]: must be a file path, not 1",
                              f"{cfg}:1:14: include[1]: must be a file path, not ''"]


def test_all_errors_of_a_file_are_reported_together_in_order(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        http:
          port: 0
          prot: 1
        gpoi: {}
        gpio:
          pull: sideways
          pins: [1, x]
        event.hook.h: {then: []}
        procedure.p: {action: x}
        xq: !nope 1
        """)
    assert errors_of(cfg) == [
        f"{cfg}:2:9: http.port: must be in range 1..65535, not 0",
        f"{cfg}:3:3: http: unknown key 'prot' (did you mean 'port'?)",
        f"{cfg}:4:1: unknown section 'gpoi' (did you mean 'gpio'?)",
        f"{cfg}:6:9: gpio.pull: must be one of 'up', 'down', not 'sideways'",
        f"{cfg}:7:13: gpio.pins[1]: must be an int, not 'x'",
        f"{cfg}:8:1: event.hook.h: missing required key 'if'",
        f"{cfg}:9:14: procedure.p: must be a list of steps, not a mapping",
        f"{cfg}:10:1: unknown section 'xq'",
        f"{cfg}:10:5: xq: unknown tag '!nope' (allowed tags: !env, !file)",
    ]


def test_errors_in_included_files_name_their_own_file(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", "http: {port: 0}\ninclude: inc/extra.yaml\n")
    inc = write(tmp_path, "inc/extra.yaml", "# comment\ngpio: {pull: left}\n")
    with pytest.raises(ConfigError) as info:
        load(main, sections=SECTIONS)
    assert [str(p) for p in info.value.problems] == [
        f"{main}:1:14: http.port: must be in range 1..65535, not 0",
        f"{inc}:2:14: gpio.pull: must be one of 'up', 'down', not 'left'",
    ]


def test_warnings_do_not_fail_and_ride_along_with_errors(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "backend.http: {port: 0}\n")
    with pytest.raises(ConfigError) as info:
        load(cfg, sections=SECTIONS)
    assert [str(p) for p in info.value.problems] == [f"{cfg}:1:22: http.port: must be in range 1..65535, not 0"]
    assert [str(p) for p in info.value.warnings] == [
        f"{cfg}:1:1: platypush section 'backend.http' is read as 'http'; rename it to 'http'"]


# -- Platypush keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), sorted(LEGACY_SECTIONS.items()))
def test_legacy_keys_are_mapped_with_a_warning_naming_the_new_key(tmp_path: Path, old: str, new: str) -> None:
    cfg = write(tmp_path, "c.yaml", f"device_id: x\n{old}: {{}}\n")
    config = load(cfg, sections=SECTIONS)
    assert new in config.sections and old not in config.sections
    advice = (f"move its options into one {new!r} section" if old in SPLIT_SECTIONS.get(new, ())
              else f"rename it to {new!r}")
    assert [str(w) for w in config.warnings] == [f"{cfg}:2:1: platypush section {old!r} is read as {new!r}; {advice}"]


def test_legacy_expected_table() -> None:
    assert LEGACY_SECTIONS == {
        "backend.http": "http", "backend.midi": "midi", "backend.button.flic": "flic",
        "backend.scard": "smartcard", "backend.camera.pi": "camera.pi", "backend.sensor.mcp3008": "adc",
        "backend.sensor.serial": "serial", "backend.mqtt": "mqtt", "backend.serial": "serial",
        "backend.tcp": "tcp", "backend.redis": "redis_queue",
        "backend.music.mpd": "music.mpd", "backend.mpd": "music.mpd",
        "gpio.sensor.mcp3008": "adc", "sensor.mcp3008": "adc",
        "backend.inotify": "file_watch", "backend.file.monitor": "file_watch", "file.monitor": "file_watch",
        "backend.http.poll": "rss"}


def test_legacy_backend_sensor_maps_to_sensor_when_that_section_exists(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "backend.sensor.dht: {x: 1}\nbackend.sensor.nope: {}\n")
    with pytest.raises(ConfigError) as info:
        load(cfg, sections=SECTIONS)
    assert [str(p) for p in info.value.problems] == [
        f"{cfg}:2:1: platypush section 'backend.sensor.nope' has no pihub counterpart: pihub's sensor sections "
        f"are 'adc' (for 'backend.sensor.mcp3008'), 'serial' (for 'backend.sensor.serial'); remove it, or "
        f"install a package that provides a 'sensor.nope' backend"]
    assert [str(p) for p in info.value.warnings] == [
        f"{cfg}:1:1: platypush section 'backend.sensor.dht' is read as 'sensor.dht'; rename it to 'sensor.dht'"]


def test_legacy_section_problems_use_the_new_name_and_the_old_place(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "backend.http:\n  port: x\n")
    assert errors_of(cfg) == [f"{cfg}:2:9: http.port: must be an int, not 'x'"]


def test_backend_websocket_is_an_error_naming_where_requests_go_now(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "backend.websocket: {port: 8765}\n")
    [error] = errors_of(cfg)
    assert error.startswith(f"{cfg}:1:1: section 'backend.websocket': requests over a websocket are served")
    assert "/ws/requests" in error and "http.websocket_port: 8765" in error


def test_camera_pi_legacy_is_an_error(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "camera.pi.legacy: {}\n")
    assert errors_of(cfg) == [(f"{cfg}:1:1: section 'camera.pi.legacy': the legacy picamera (v1) stack is not "
                               f"supported; use 'camera.pi' (picamera2)")]


def test_two_spellings_of_one_section_in_one_file_is_an_error(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "backend.http: {}\nhttp: {}\n")
    assert errors_of(cfg) == [(f"{cfg}:2:1: http: 'http' is defined twice in this file, also as "
                               f"'backend.http' at line 1, col 1")]


# -- secrets ----------------------------------------------------------------------------------


def test_secrets_never_appear_in_errors_or_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIHUB_SECRET_PORT", "hunter2")
    monkeypatch.setenv("PIHUB_SECRET_BIND", "swordfish")
    (tmp_path / "pw").write_text("opensesame\n", encoding="utf-8")
    cfg = write(tmp_path, "c.yaml", """\
        backend.http:
          port: !env PIHUB_SECRET_PORT
          bind: !file pw
          password: !env PIHUB_SECRET_BIND
          pasword: !env PIHUB_SECRET_PORT
        gpio:
          pull: !env PIHUB_SECRET_BIND
          pins: !file pw
        constants:
          k: !file pw
        token: !env [PIHUB_NOPE, 1234567]
        """)
    with pytest.raises(ConfigError) as info:
        load(cfg, sections=SECTIONS)
    e = info.value
    assert [str(p) for p in e.problems] == [
        f"{cfg}:2:9: http.port: must be an int, not '***'",
        f"{cfg}:5:3: http: unknown key 'pasword' (did you mean 'password'?)",
        f"{cfg}:7:9: gpio.pull: must be one of 'up', 'down', not '***'",
        f"{cfg}:8:9: gpio.pins: must be a list of ints, not '***'",
        f"{cfg}:11:8: token: must be a string, not '***'",
    ]
    text = str(e) + "\n".join(map(str, e.warnings)) + repr(e.problems) + repr(e.warnings)
    for secret in ("hunter2", "swordfish", "opensesame", "1234567"):
        assert secret not in text


def test_secret_values_survive_validation_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIHUB_SECRET_PORT", "8443")
    monkeypatch.setenv("PIHUB_TOKEN_X", "tok-123")
    cfg = write(tmp_path, "c.yaml", """\
        token: !env PIHUB_TOKEN_X
        http: {port: !env PIHUB_SECRET_PORT, password: plain}
        """)
    config = load(cfg, sections=SECTIONS)
    assert config.sections["http"]["port"] == 8443
    assert isinstance(config.token, Secret) and config.token.reveal() == "tok-123"
    assert isinstance(config.sections["http"]["password"], Secret)
    assert "tok-123" not in repr(config) and "plain" not in repr(config)


def test_plain_token_is_wrapped_as_a_secret(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "token: abc\n")
    config = load(cfg, sections=SECTIONS)
    assert isinstance(config.token, Secret) and config.token == "abc"


# Every field kind with an invalid secret: the texts mix cases because messages may change
# a value's case (``logging.level`` is upper-cased before its choices are checked); the
# numbers parse, and are out of every range and choice below.
SECRET_TEXT = "ENVSECRET-1a2b3c"
SECRET_NUMBERS = ("-7340923", "97340923417", "7340923.5")
_SECRET_ENV = {"PIHUB_T_TEXT": SECRET_TEXT, "PIHUB_T_LOW": "-7340923", "PIHUB_T_HIGH": "97340923417",
               "PIHUB_T_FLOAT": "7340923.5"}

#: option -> (field, YAML value invalid for it); one per type kind and per Field option.
_PROBE_FIELDS: dict[str, tuple[Field, str]] = {
    "a_bool": (Field(bool, False), "!env PIHUB_T_TEXT"),
    "an_int": (Field(int, 0, doc="a count"), "!env PIHUB_T_TEXT"),
    "an_int_in_range": (Field(int, 0, min=0, max=10), "!env PIHUB_T_HIGH"),
    "an_int_choice": (Field(int, 1, choices=(1, 2)), "!env PIHUB_T_LOW"),
    "a_float": (Field(float, 0.0), "!env PIHUB_T_TEXT"),
    "a_float_in_range": (Field(float, 0.0, min=-1.0, max=1.0), "!env PIHUB_T_FLOAT"),
    "a_str_choice": (Field(str, "a", choices=("a", "b")), "!env PIHUB_T_TEXT"),
    "a_str": (Field(str, ""), "[!env PIHUB_T_TEXT]"),
    "a_list": (Field(list, []), "!env PIHUB_T_TEXT"),
    "a_dict": (Field(dict, {}), "!env PIHUB_T_TEXT"),
    "a_list_of": (Field(list[int], []), "[1, !env PIHUB_T_TEXT]"),
    "a_dict_of": (Field(dict[str, float], {}), "{k: !env PIHUB_T_TEXT}"),
    "alternatives": (Field((int, list[int], None), None), "!env PIHUB_T_TEXT"),
    "a_schema": (Field(Schema({"x": Field(int, 0, max=5)}), {}), "{x: !env PIHUB_T_HIGH}"),
    "a_schema_given_text": (Field(Schema({}), {}), "!env PIHUB_T_TEXT"),
    "anything": (Field(object, None), "!env PIHUB_T_TEXT"),  # any value is valid: nothing to show
    "a_secret": (Field(int, 0, secret=True, min=0), "!env PIHUB_T_LOW"),
    "renamed": (Field(int, 0, aliases=("old_name",)), "!env PIHUB_T_TEXT"),
    "deprecated": (Field(int, 0, deprecated="use 'an_int'"), "!env PIHUB_T_TEXT"),
    "required": (Field(bool), "!env PIHUB_T_TEXT"),
}
_PROBE = Schema({name: f for name, (f, _) in _PROBE_FIELDS.items()})


def _kind(spec: object) -> object:
    """The schema type kind of a spec: a plain type, or the name of a composite form."""
    if isinstance(spec, Schema):
        return "Schema"
    if isinstance(spec, tuple):
        return "alternatives"
    origin = typing.get_origin(spec)
    return f"{origin.__name__}[...]" if origin is not None else spec


def test_secret_probe_covers_every_field_kind_and_option() -> None:
    kinds = {_kind(f.type) for f, _ in _PROBE_FIELDS.values()}
    kinds |= {_kind(alt) for f, _ in _PROBE_FIELDS.values() if isinstance(f.type, tuple) for alt in f.type}
    # the kinds schema.py names in its messages, plus its composite forms
    assert kinds >= {*schema_mod._NAMES, "Schema", "alternatives", "list[...]", "dict[...]"} - {type(None)}
    options = {opt.name for f, _ in _PROBE_FIELDS.values() for opt in dataclasses.fields(Field)
               if getattr(f, opt.name) != opt.default}
    assert options >= {opt.name for opt in dataclasses.fields(Field)}


def _grep_secrets(text: str) -> list[str]:
    """The secrets (any case) found in ``text``."""
    return [s for s in (SECRET_TEXT, *SECRET_NUMBERS) if s.lower() in text.lower()]


def test_every_field_kind_masks_an_invalid_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in _SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    written = {n: "old_name" if n == "renamed" else n for n in _PROBE_FIELDS}  # an alias warns too
    body = "".join(f"  {written[n]}: {v}\n" for n, (_, v) in _PROBE_FIELDS.items())
    cfg = write(tmp_path, "c.yaml", f"""\
logging: {{level: !env PIHUB_T_TEXT}}
probe:
{body}  ? !env PIHUB_T_TEXT
  : an unknown key from the environment
""")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as info:
        load(cfg, sections={"probe": _PROBE})
    e = info.value
    paths = {p.path for p in e.problems}
    # every probe that can be invalid was reported, so the grep below saw its message
    assert paths >= {"logging.level", *(f"probe.{written[n]}" for n in _PROBE_FIELDS if n not in
                                        ("anything", "a_list_of", "a_dict_of", "a_schema"))}
    assert {"probe.a_list_of[1]", "probe.a_dict_of.k", "probe.a_schema.x"} <= paths
    assert any("'***'" in p.message for p in e.problems if p.path == "logging.level")
    out = capsys.readouterr()
    text = "\n".join([str(e), *map(str, e.warnings), repr(e.problems), repr(e.warnings), caplog.text,
                      out.out, out.err])
    assert _grep_secrets(text) == []


#: YAML values tried, in order, for a field of pihub's real sections, with the value each
#: one stands for (to find, with Field.check, one the field rejects).
_CANDIDATES = (
    ("!env PIHUB_T_LOW", Secret("-7340923")),  # numbers first: they reach range and choice checks
    ("!env PIHUB_T_HIGH", Secret("97340923417")),
    ("!env PIHUB_T_TEXT", Secret(SECRET_TEXT)),
    ("[!env PIHUB_T_TEXT]", [Secret(SECRET_TEXT)]),
    ("{k: !env PIHUB_T_TEXT}", {"k": Secret(SECRET_TEXT)}),
)


def _invalid_secrets(schema: Schema) -> dict[str, str]:
    """Option -> a YAML secret value the option rejects, for every option that rejects one."""
    out = {}
    for name, f in schema.fields.items():
        for text, value in _CANDIDATES:
            _, problems = f.check(value, (name,))
            if problems:
                out[name] = text
                break
    return out


def test_check_config_never_prints_a_secret_for_any_real_field(tmp_path: Path) -> None:
    from pihub.hub import known_sections

    lines = ["logging: {level: !env PIHUB_T_TEXT}", f"workdir: {tmp_path / 'work'}"]
    expected = {"logging.level"}
    for section, schema in known_sections().items():
        bad = _invalid_secrets(schema)
        if bad:
            lines.append(f"{section}:")
            lines += [f"  {name}: {text}" for name, text in bad.items()]
            expected |= {f"{section}.{name}" for name in bad}
    cfg = tmp_path / "c.yaml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, **_SECRET_ENV}
    env.pop("PIHUB_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "pihub", "check-config", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1, r.stderr
    reported = {line.split(": ")[1] for line in r.stderr.splitlines() if line.startswith(f"{cfg}:")}
    # every probe was reported (a path with an index or a key below it counts), so the grep saw it
    assert {e for e in expected if not any(p == e or p.startswith((e + ".", e + "[")) for p in reported)} == set()
    assert _grep_secrets(r.stdout + r.stderr) == []


# -- search order -----------------------------------------------------------------------------


def test_explicit_path_wins_and_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigNotFound) as info:
        load(str(tmp_path / "none.yaml"))
    assert str(info.value) == f"config file {str(tmp_path / 'none.yaml')!r} does not exist"
    assert isinstance(info.value, ConfigUnreadable) and isinstance(info.value, OSError)


def test_pihub_config_env_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_cfg = write(tmp_path, "env.yaml", "device_id: from-env\n")
    write(tmp_path, "home/.config/pihub/config.yaml", "device_id: from-home\n")
    monkeypatch.setenv("PIHUB_CONFIG", env_cfg)
    config = load()
    assert config.device_id == "from-env" and config.files == [env_cfg]


def test_pihub_config_env_naming_a_missing_file_is_an_error(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "home/.config/pihub/config.yaml", "device_id: from-home\n")
    monkeypatch.setenv("PIHUB_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigNotFound, match=r"\(from \$PIHUB_CONFIG\) does not exist"):
        load()


def test_user_config_before_system_config(tmp_path: Path) -> None:
    write(tmp_path, "etc/pihub/config.yaml", "device_id: from-etc\n")
    assert load().device_id == "from-etc"
    write(tmp_path, "home/.config/pihub/config.yaml", "device_id: from-home\n")
    config = load()
    assert config.device_id == "from-home" and config.warnings == []


def test_platypush_config_is_an_import_source_with_a_warning(tmp_path: Path) -> None:
    src = write(tmp_path, "home/.config/platypush/config.yaml", "device_id: from-platypush\n")
    config = load()
    assert config.device_id == "from-platypush"
    user = str(tmp_path / "home/.config/pihub/config.yaml")
    assert [str(w) for w in config.warnings] == [
        (f"{src}:1:1: no pihub config found; reading the platypush config {src!r} (copy it to {user!r} "
         f"to silence this)")]
    write(tmp_path, "etc/pihub/config.yaml", "device_id: from-etc\n")
    assert load().device_id == "from-etc"


def test_no_config_anywhere_lists_the_places_looked_at(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with pytest.raises(ConfigNotFound) as info:
        load()
    places = [f"{home}/.config/pihub/config.yaml", f"{tmp_path}/etc/pihub/config.yaml",
              f"{home}/.config/platypush/config.yaml"]
    assert str(info.value) == ("no config file found; looked at $PIHUB_CONFIG (not set), " + ", ".join(places)
                               + "; create one or pass a path")
    assert info.value.searched == ["$PIHUB_CONFIG", *places]


def test_search_paths_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert search_paths({"PIHUB_CONFIG": "/x.yaml"}) == [
        ("/x.yaml", "env"), (f"{home}/.config/pihub/config.yaml", "user"),
        (f"{tmp_path}/etc/pihub/config.yaml", "system"), (f"{home}/.config/platypush/config.yaml", "platypush")]


def test_unreadable_file_is_config_unreadable(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigUnreadable) as info:
        load(str(tmp_path / "dir.yaml"))
    assert str(info.value) == f"cannot read config file {str(tmp_path / 'dir.yaml')!r}: is a directory"
    assert not isinstance(info.value, ConfigNotFound)


# -- includes ---------------------------------------------------------------------------------


def test_include_merges_at_the_point_of_inclusion(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", """\
        device_id: before
        constants: {a: 1}
        include: [one.yaml, sub/two.yaml]
        constants: {a: 3}
        """.replace("constants: {a: 3}", "logging: {level: warning}"))
    one = write(tmp_path, "one.yaml", "device_id: from-one\nconstants: {a: 2}\n")
    two = write(tmp_path, "sub/two.yaml", "include: ../three.yaml\n")
    three = write(tmp_path, "three.yaml", "logging: {level: debug}\n")
    config = load(main, sections=SECTIONS)
    assert config.device_id == "from-one" and config.constants == {"a": 2}
    assert config.logging["level"] == "WARNING"
    assert config.files == [main, one, two, three]
    assert [str(w) for w in config.warnings] == [
        f"{main}:4:1: logging: also defined at {three}:1:1; this later definition replaces it",
        f"{one}:1:1: device_id: also defined at {main}:1:1; this later definition replaces it",
        f"{one}:2:1: constants: also defined at {main}:2:1; this later definition replaces it",
    ]


def test_two_files_defining_one_hook_warn_naming_both(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", """\
        event.hook.door: {if: {type: A}, then: []}
        procedure.p: []
        include: inc.yaml
        """)
    inc = write(tmp_path, "inc.yaml", """\
        event.hook.door: {if: {type: B}, then: []}
        procedure.async.p(x): []
        """)
    config = load(main, sections=SECTIONS)
    assert [h.if_ for h in config.hooks] == [{"type": "B"}]
    assert [(p.key, p.is_async) for p in config.procedures] == [("procedure.async.p(x)", True)]
    assert [str(w) for w in config.warnings] == [
        f"{inc}:1:1: event.hook.door: also defined at {main}:1:1; this later definition replaces it",
        f"{inc}:2:1: procedure.p: also defined at {main}:2:1; this later definition replaces it",
    ]


def test_the_same_file_included_twice_is_read_once_without_warnings(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", "include: [a.yaml, b.yaml]\n")
    a = write(tmp_path, "a.yaml", "include: common.yaml\n")
    b = write(tmp_path, "b.yaml", "include: common.yaml\n")
    common = write(tmp_path, "common.yaml", "device_id: c\n")
    config = load(main, sections=SECTIONS)
    assert config.device_id == "c" and config.warnings == []
    assert config.files == [main, a, common, b]


def test_a_file_included_by_each_of_a_chain_twice_is_read_and_walked_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # each file includes the next twice: walking every include would classify the last
    # file's keys 2**8 times
    names = [f"f{i}.yaml" for i in range(loader_mod.MAX_INCLUDE_DEPTH)]
    for i, name in enumerate(names):
        nxt = f"include: [{names[i + 1]}, {names[i + 1]}]\n" if i + 1 < len(names) else ""
        write(tmp_path, name, f"{nxt}procedure.p{i}: []\n")
    main = write(tmp_path, "main.yaml", "include: [f0.yaml, f0.yaml]\n")
    reads: list[str] = []
    classified: list[str] = []
    read_document, classify = loader_mod.read_document, loader_mod._Loader.classify
    monkeypatch.setattr(loader_mod, "read_document", lambda f, **kw: reads.append(f) or read_document(f, **kw))
    monkeypatch.setattr(loader_mod._Loader, "classify",
                        lambda self, doc, key, value: classified.append(key) or classify(self, doc, key, value))
    config = load(main, sections=SECTIONS)
    assert reads == config.files == [main, *(str(tmp_path / n) for n in names)]
    assert sorted(classified) == sorted(f"procedure.p{i}" for i in range(len(names)))
    assert sorted(p.name for p in config.procedures) == sorted(f"p{i}" for i in range(len(names)))
    assert config.warnings == []


def test_including_a_file_again_merges_its_entries_again_where_it_stands(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", "include: [common.yaml, mid.yaml, other.yaml]\n")
    common = write(tmp_path, "common.yaml", "device_id: common\n")
    mid = write(tmp_path, "mid.yaml", "device_id: mid\n")
    other = write(tmp_path, "other.yaml", "include: common.yaml\n")
    config = load(main, sections=SECTIONS)
    assert config.device_id == "common" and config.files == [main, common, mid, other]
    assert [str(w) for w in config.warnings] == [
        f"{common}:1:1: device_id: also defined at {mid}:1:1; this later definition replaces it",
        f"{mid}:1:1: device_id: also defined at {common}:1:1; this later definition replaces it",
    ]


def test_includes_nested_deeper_than_the_limit_are_refused_at_the_include(tmp_path: Path) -> None:
    depth = loader_mod.MAX_INCLUDE_DEPTH
    for i in range(depth + 2):
        write(tmp_path, f"d{i}.yaml", f"include: d{i + 1}.yaml\nprocedure.p{i}: []\n")
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "d0.yaml"), sections=SECTIONS)
    deepest = tmp_path / f"d{depth}.yaml"
    assert [str(p) for p in info.value.problems] == [
        f"{deepest}:1:10: include: includes nested more than {depth} deep (the most a config may nest them): "
        f"{str(tmp_path / f'd{depth + 1}.yaml')!r} would be at depth {depth + 1}"]
    assert len(info.value.config.files) == depth + 1


def test_a_config_of_more_files_than_the_limit_is_refused_at_the_include(tmp_path: Path) -> None:
    n = loader_mod.MAX_CONFIG_FILES
    for i in range(n):
        write(tmp_path, f"i{i}.yaml", f"procedure.p{i}: []\n")
    main = write(tmp_path, "main.yaml", "include:\n" + "".join(f"  - i{i}.yaml\n" for i in range(n)))
    with pytest.raises(ConfigError) as info:
        load(main, sections=SECTIONS)
    assert [str(p) for p in info.value.problems] == [
        f"{main}:{n + 1}:5: include[{n - 1}]: {str(tmp_path / f'i{n - 1}.yaml')!r} would be file {n + 1} of the "
        f"config; a config may be made of at most {n} files"]


def test_the_value_limit_counts_every_file(tmp_path: Path) -> None:
    half = loader_mod.MAX_CONFIG_NODES // 2
    main = write(tmp_path, "main.yaml", f"include: [a.yaml, b.yaml, c.yaml]\nconstants: {{k: [{'0,' * half}0]}}\n")
    write(tmp_path, "a.yaml", "device_id: a\n")
    b = write(tmp_path, "b.yaml", f"environment: [{'0,' * half}0]\n")
    write(tmp_path, "c.yaml", "device_id: c\n")
    with pytest.raises(ConfigError) as info:
        load(main, sections=SECTIONS)
    (problem,) = info.value.problems
    assert problem.file == b and problem.message.startswith(
        f"too many values: this one takes the config past {loader_mod.MAX_CONFIG_NODES} values")
    assert info.value.config.files == [main, str(tmp_path / "a.yaml"), b]  # c.yaml is not read


def test_an_include_path_from_the_environment_is_not_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIHUB_T_INCLUDE", "ENVSECRET-path.yaml")
    main = write(tmp_path, "main.yaml", "include: [!env PIHUB_T_INCLUDE]\n")
    assert errors_of(main) == [f"{main}:1:11: include[0]: cannot read included file '***': "
                               f"no such file or directory"]


def test_include_relative_to_the_including_file_and_home(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", "include: ['~/inc.yaml']\n")
    write(tmp_path, "home/inc.yaml", "device_id: home-inc\n")
    assert load(main, sections=SECTIONS).device_id == "home-inc"


# -- disabled / enabled -----------------------------------------------------------------------


def test_disabled_true_drops_the_section_with_a_note(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        gpio: {disabled: true, pull: bogus}
        backend.nothing: {disabled: true}
        """)
    config = load(cfg, sections=SECTIONS)
    assert "gpio" not in config.sections and config.disabled == set()
    assert [str(n) for n in config.notes] == [f"{cfg}:1:1: gpio: disabled (disabled: true); skipped",
                                              f"{cfg}:2:1: backend.nothing: disabled (disabled: true); skipped"]


def test_enabled_false_keeps_the_section_marked_disabled(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        gpio: {enabled: false, pull: down}
        http: {enabled: true, disabled: false, port: 81}
        event.hook.h: {enabled: false, if: {}, then: []}
        """)
    config = load(cfg, sections=SECTIONS)
    assert config.sections["gpio"] == {"pins": [], "pull": "down"}
    assert config.sections["http"]["port"] == 81
    assert config.disabled == {"gpio", "event.hook.h"}
    assert [(h.name, h.enabled) for h in config.hooks] == [("h", False)]
    assert config.notes == [] and config.warnings == []


def test_flags_must_be_booleans(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "gpio: {disabled: 'yes'}\n")
    assert errors_of(cfg) == [f"{cfg}:1:18: gpio.disabled: must be true or false, not 'yes'"]


def test_a_schema_that_declares_enabled_receives_it(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "shell: {enabled: true}\n")
    config = load(cfg, sections=SECTIONS)
    assert config.sections["shell"] == {"enabled": True} and config.disabled == set()


# -- hooks and procedures ---------------------------------------------------------------------


def test_hook_then_single_mapping_is_normalised_to_a_list_and_located(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        event.hook.door:
          if: {type: GPIOEvent, pin: 4}
          then:
            action: gpio.write
            args: {pin: 5, value: 1}
          priority: 3
        event.hook.list:
          if: {}
          then:
            - action: a.b
            - action: c.d
              args: {x: 1}
        """)
    config = load(cfg, sections=SECTIONS)
    door, lst = config.hooks
    assert door == HookSpec(name="door", if_={"type": "GPIOEvent", "pin": 4},
                            then=[{"action": "gpio.write", "args": {"pin": 5, "value": 1}}], priority=3,
                            path=("event.hook.door",))
    assert lst.priority == 0 and len(lst.then) == 2
    assert str(config.problem((*door.path, "then", 0, "args", "value"), "bad")) == \
        f"{cfg}:5:27: event.hook.door.then[0].args.value: bad"
    assert str(config.problem((*lst.path, "then", 1, "args", "x"), "bad")) == \
        f"{cfg}:12:17: event.hook.list.then[1].args.x: bad"


def test_hook_errors(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        event.hook.a: {iff: {}, then: []}
        event.hook.b: {if: [], then: x, priority: high}
        event.hook.c:
        event.hook.:
          if: {}
        """)
    assert errors_of(cfg) == [
        f"{cfg}:1:1: event.hook.a: missing required key 'if'",
        f"{cfg}:1:16: event.hook.a: unknown key 'iff' (did you mean 'if'?)",
        f"{cfg}:2:20: event.hook.b.if: must be a mapping, not a list",
        f"{cfg}:2:30: event.hook.b.then: must be a list or a mapping, not 'x'",
        f"{cfg}:2:43: event.hook.b.priority: must be an int, not 'high'",
        f"{cfg}:3:14: event.hook.c: must be a mapping with 'if' and 'then', not null",
        f"{cfg}:4:1: hook 'event.hook.' needs a name: event.hook.NAME",
    ]


@pytest.mark.parametrize(("key", "expected"), [
    ("procedure.blink", ("blink", (), False)),
    ("procedure.sync.blink", ("blink", (), False)),
    ("procedure.async.blink", ("blink", (), True)),
    ("procedure.blink(pin, times)", ("blink", ("pin", "times"), False)),
    ("procedure.async.blink(pin)", ("blink", ("pin",), True)),
    ("procedure.blink()", ("blink", (), False)),
    ("procedure.blink (a,b) ", ("blink", ("a", "b"), False)),
    ("procedure.lights.on", ("lights.on", (), False)),
    ("procedure.async.lights.on", ("lights.on", (), True)),
    ("procedure.async", ("async", (), False)),
    ("procedure.turn-off_2", ("turn-off_2", (), False)),
])
def test_parse_procedure_key(key: str, expected: tuple) -> None:
    assert parse_procedure_key(key) == expected


@pytest.mark.parametrize(("key", "message"), [
    ("procedure.", "bad procedure name ''"),
    ("procedure.a b", "bad procedure name 'a b'"),
    ("procedure.x(a", "bad procedure key"),
    ("procedure.x(1a)", "bad parameter name '1a'"),
    ("procedure.x(a, a)", "parameter 'a' is declared twice"),
    ("procedure.x(a,,b)", "bad parameter name ''"),
    ("proc.x", "procedure keys start with 'procedure.'"),
    ("procedure..x", "bad procedure name '.x'"),
])
def test_parse_procedure_key_rejects(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_procedure_key(key)


def test_procedures_in_config(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        procedure.sync.a: [{action: x.y}]
        procedure.async.b(pin, n):
          - action: gpio.write
            args: {pin: "${pin}"}
        """)
    config = load(cfg, sections=SECTIONS)
    assert config.procedures == [
        ProcedureSpec(key="procedure.sync.a", name="a", params=(), is_async=False, steps=[{"action": "x.y"}],
                      path=("procedure.sync.a",)),
        ProcedureSpec(key="procedure.async.b(pin, n)", name="b", params=("pin", "n"), is_async=True,
                      steps=[{"action": "gpio.write", "args": {"pin": "${pin}"}}],
                      path=("procedure.async.b(pin, n)",)),
    ]
    b = config.procedures[1]
    assert str(config.problem((*b.path, 0, "args", "pin"), "bad")) == f"{cfg}:4:17: procedure.async.b(pin, n)[0].args.pin: bad"


def test_bad_procedure_key_in_config(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "device_id: x\nprocedure.x(1): []\n")
    assert errors_of(cfg) == [f"{cfg}:2:1: bad parameter name '1' in 'procedure.x(1)' (must be an identifier)"]


def test_cron_is_kept_aside_with_a_warning(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "cron.nightly: {cron_expression: '0 3 * * *', actions: []}\n")
    config = load(cfg, sections=SECTIONS)
    assert config.crons == {"cron.nightly": {"cron_expression": "0 3 * * *", "actions": []}}
    assert [str(w) for w in config.warnings] == [
        f"{cfg}:1:1: cron jobs are not supported yet; 'cron.nightly' is kept aside and will not run"]


# -- core keys --------------------------------------------------------------------------------


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path, "c.yaml", "")
    monkeypatch.setenv("PIHUB_WORKDIR", str(tmp_path / "wd"))
    config = load(cfg, sections=SECTIONS)
    assert config.device_id == socket.gethostname()
    assert config.token is None and config.environment == {} and config.constants == {}
    assert config.workdir == str(tmp_path / "wd")
    assert config.logging == {"level": "INFO", "format": None, "filename": None}
    assert config.hooks == [] and config.procedures == [] and config.sections == {} and config.files == [cfg]


def test_workdir_default_without_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path, "c.yaml", "")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert load(cfg).workdir == str(tmp_path / "home/.local/share/pihub")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert load(cfg).workdir == "/var/lib/pihub"


def test_workdir_relative_to_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "sub/c.yaml", "workdir: data\n")
    assert load(cfg).workdir == str(tmp_path / "sub/data")


def test_core_key_errors(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        device_id: ''
        token: [a]
        workdir: 3
        environment: {A: 1, B: true, C: [x]}
        constants: [1]
        logging: {level: loud, fmt: x}
        """)
    assert errors_of(cfg) == [
        f"{cfg}:1:12: device_id: must be a non-empty string, not ''",
        f"{cfg}:2:8: token: must be a string, not '***'",
        f"{cfg}:3:10: workdir: must be a directory path, not 3",
        f"{cfg}:4:24: environment.B: must be a string or an int or a number, not true",
        f"{cfg}:4:33: environment.C: must be a string or an int or a number, not a list",
        f"{cfg}:5:12: constants: must be a mapping of names to values, not a list",
        (f"{cfg}:6:18: logging.level: must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL', "
         f"not 'LOUD'"),
        f"{cfg}:6:24: logging: unknown key 'fmt' (did you mean 'format'?)",
    ]


def test_environment_values_become_strings(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "environment: {A: 1, B: 2.5, C: x}\nconstants: {k: [1]}\n")
    config = load(cfg)
    assert config.environment == {"A": "1", "B": "2.5", "C": "x"}
    assert config.constants == {"k": [1]}


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "- a\n- b\n")
    assert errors_of(cfg) == [f"{cfg}:1:1: a config file must be a mapping of section names, not a list"
                              " (is it a config file?)"]


def test_an_included_file_that_is_no_config_is_not_echoed(tmp_path: Path) -> None:
    write(tmp_path, "token.txt", "ghp_SECRETTOKEN1234567890\n")
    cfg = write(tmp_path, "c.yaml", "include: token.txt\n")
    errors = errors_of(cfg)
    assert errors == [f"{tmp_path / 'token.txt'}:1:1: a config file must be a mapping of section names, not text"
                      " (is it a config file?)"]
    assert "SECRET" not in "".join(errors)


def test_section_names_must_be_strings(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "device_id: x\n12: {}\n")
    assert errors_of(cfg) == [f"{cfg}:2:1: section names must be strings, not 12"]


def test_without_section_schemas_sections_are_kept_raw(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "anything: {x: 1}\nempty:\nbad: 3\n")
    assert errors_of(cfg, None) == [f"{cfg}:3:6: bad: must be a mapping of options, not 3"]
    cfg = write(tmp_path, "d.yaml", "anything: {x: 1}\nempty:\n")
    assert load(cfg).sections == {"anything": {"x": 1}, "empty": {}}


# -- Config.locate / problem / located --------------------------------------------------------


def test_config_locates_problems_for_later_compile_steps(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        backend.http:
          port: 80
        event.hook.h:
          if: {type: X, pn: 3}
          then: []
        """)
    config = load(cfg, sections=SECTIONS)
    assert isinstance(config, Config)
    assert str(config.located(ConfigProblem(("if", "pn"), "unknown"), ("event.hook.h",))) == \
        f"{cfg}:4:21: event.hook.h.if.pn: unknown"
    assert str(config.located(SchemaProblem(("if",), "unknown key 'pn'", key="pn"), ("event.hook.h",))) == \
        f"{cfg}:4:17: event.hook.h.if: unknown key 'pn'"
    warn = config.problem(("http", "port"), "odd port", True)
    assert warn.warning and str(warn) == f"{cfg}:2:9: http.port: odd port"
    assert str(config.problem(("http",), "missing x", key="x")) == f"{cfg}:1:1: http: missing x"
    assert str(config.problem(("nowhere", 1), "lost")) == "nowhere[1]: lost"


def test_config_error_carries_the_valid_parts(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", """\
        http: {port: 0}
        gpio: {pull: down}
        event.hook.ok: {if: {}, then: []}
        event.hook.bad: {then: []}
        """)
    with pytest.raises(ConfigError) as info:
        load(cfg, sections=SECTIONS)
    partial = info.value.config
    assert isinstance(partial, Config)
    assert partial.sections == {"gpio": {"pins": [], "pull": "down"}}
    assert [h.name for h in partial.hooks] == ["ok"]
