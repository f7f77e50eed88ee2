"""pihub.config.schema: typed fields, every problem collected, secrets never shown."""

from __future__ import annotations

import json

import pytest

from pihub.config.schema import REQUIRED, Field, Schema, dict_of, suggest
from pihub.config.yamlsrc import Secret
from pihub.errors import SchemaProblem, format_path

HTTP = Schema({
    "port": Field(int, 8008, doc="TCP port", min=1, max=65535),
    "bind": Field(str, "127.0.0.1", aliases=("bind_address",)),
    "mode": Field(str, "ro", choices=("ro", "rw")),
    "token": Field(str, None, secret=True),
    "ratio": Field(float, 0.5, min=0.0),
    "debug": Field(bool, False),
    "tags": Field(list[str], []),
    "limits": Field(dict[str, int], {}),
    "old": Field(int, 0, deprecated="use 'new' instead"),
})


def shown(problems: list) -> list[str]:
    """Problems as ``path: message`` (+ ``[key]``/``(warning)`` markers) for exact asserts."""
    out = []
    for p in problems:
        key = getattr(p, "key", None)
        text = f"{format_path(p.path)}: {p.message}"
        if key is not None:
            text += f" [key {key!r}]"
        if getattr(p, "warning", False):
            text += " (warning)"
        out.append(text)
    return out


def test_valid_mapping_gets_defaults() -> None:
    values, problems = HTTP.validate({"port": 80, "ratio": 2}, ("http",))
    assert problems == []
    assert values == {"port": 80, "bind": "127.0.0.1", "mode": "ro", "token": None, "ratio": 2.0,
                      "debug": False, "tags": [], "limits": {}, "old": 0}
    assert type(values["ratio"]) is float


def test_wrong_type_names_the_bad_value() -> None:
    _, problems = HTTP.validate({"port": "abc", "debug": "yes", "bind": 5, "tags": "a"}, ("http",))
    assert shown(problems) == [
        "http.port: must be an int, not 'abc'",
        "http.debug: must be true or false, not 'yes'",
        "http.bind: must be a string, not 5",
        "http.tags: must be a list of strings, not 'a'",
    ]


def test_bool_is_not_an_int_and_int_is_not_a_bool() -> None:
    _, problems = HTTP.validate({"port": True, "debug": 1}, ("http",))
    assert shown(problems) == ["http.port: must be an int, not true", "http.debug: must be true or false, not 1"]


def test_out_of_range_messages() -> None:
    schema = Schema({"a": Field(int, 0, min=1, max=7), "b": Field(int, 5, min=1), "c": Field(float, 0, max=2.5)})
    _, problems = schema.validate({"a": 9, "b": 0, "c": 3}, ("s",))
    assert shown(problems) == [
        "s.a: must be in range 1..7, not 9",
        "s.b: must be at least 1, not 0",
        "s.c: must be at most 2.5, not 3.0",
    ]


def test_range_bounds_are_inclusive() -> None:
    values, problems = HTTP.validate({"port": 65535}, ())
    assert problems == [] and values["port"] == 65535
    _, problems = HTTP.validate({"port": 65536}, ())
    assert shown(problems) == ["port: must be in range 1..65535, not 65536"]


def test_not_in_choices() -> None:
    _, problems = HTTP.validate({"mode": "wr"}, ("http",))
    assert shown(problems) == ["http.mode: must be one of 'ro', 'rw', not 'wr'"]


def test_unknown_key_with_did_you_mean_and_allowed_list() -> None:
    _, problems = HTTP.validate({"prot": 1}, ("http",))
    assert shown(problems) == ["http: unknown key 'prot' (did you mean 'port'?) [key 'prot']"]
    small = Schema({"pin": Field(int), "pull": Field(str, "up")})
    _, problems = small.validate({"pin": 1, "zzz": 2}, ("gpio",))
    assert shown(problems) == ["gpio: unknown key 'zzz' (allowed: 'pin', 'pull') [key 'zzz']"]
    _, problems = Schema({}).validate({"x": 1}, ("event",))
    assert shown(problems) == ["event: unknown key 'x' (no keys are allowed here) [key 'x']"]


def test_extra_keys_are_kept_when_allowed() -> None:
    values, problems = Schema({"a": Field(int, 1)}, extra=True).validate({"b": [1]}, ())
    assert problems == [] and values == {"a": 1, "b": [1]}


def test_missing_required_key() -> None:
    schema = Schema({"pin": Field(int), "name": Field(str, REQUIRED)})
    _, problems = schema.validate({}, ("gpio",))
    assert shown(problems) == ["gpio: missing required key 'pin' [key 'pin']",
                               "gpio: missing required key 'name' [key 'name']"]


def test_a_bad_value_is_not_also_reported_missing() -> None:
    _, problems = Schema({"pin": Field(int)}).validate({"pin": "x"}, ("g",))
    assert shown(problems) == ["g.pin: must be an int, not 'x'"]


def test_every_problem_is_collected() -> None:
    _, problems = HTTP.validate({"port": 0, "mode": "x", "prot": 1, "tags": [1, "ok", None]}, ("http",))
    assert len(problems) == 5
    assert shown(problems)[-2:] == ["http.tags[0]: must be a string, not 1", "http.tags[2]: must be a string, not null"]


def test_alias_is_accepted_with_a_warning_naming_the_new_key() -> None:
    values, problems = HTTP.validate({"bind_address": "0.0.0.0"}, ("http",))
    assert values["bind"] == "0.0.0.0" and "bind_address" not in values
    assert shown(problems) == [("http: 'bind_address' is renamed to 'bind'; use 'bind' "
                                "[key 'bind_address'] (warning)")]


def test_alias_and_new_name_together_is_an_error() -> None:
    values, problems = HTTP.validate({"bind_address": "0.0.0.0", "bind": "::"}, ("http",))
    assert values["bind"] == "::"
    assert shown(problems) == [("http: both 'bind_address' and its new name 'bind' are set; keep only 'bind' "
                                "[key 'bind_address']")]
    assert not problems[0].warning


def test_deprecated_key_warns_and_is_still_used() -> None:
    values, problems = HTTP.validate({"old": 3}, ("http",))
    assert values["old"] == 3
    assert shown(problems) == ["http: 'old' is deprecated: use 'new' instead [key 'old'] (warning)"]


def test_secret_field_never_echoes_its_value() -> None:
    schema = Schema({"token": Field(str, None, secret=True), "pin": Field(int, 0, secret=True, max=9),
                     "mode": Field(str, "a", choices=("a", "b"), secret=True)})
    _, problems = schema.validate({"token": 123456, "pin": 424242, "mode": "hunter2"}, ("x",))
    assert shown(problems) == ["x.token: must be a string, not '***'",
                               "x.pin: must be at most 9, not '***'",
                               "x.mode: must be one of 'a', 'b', not '***'"]
    for text in shown(problems):
        assert "123456" not in text and "424242" not in text and "hunter2" not in text


def test_secret_field_wraps_plain_strings() -> None:
    values, problems = HTTP.validate({"token": "abc"}, ())
    assert problems == []
    assert isinstance(values["token"], Secret) and values["token"] == "abc" and repr(values["token"]) == "'***'"


def test_secret_values_are_parsed_for_numbers_and_bools() -> None:
    values, problems = HTTP.validate({"port": Secret("9000"), "debug": Secret("Yes"), "ratio": Secret("0.25")}, ())
    assert problems == []
    assert values["port"] == 9000 and values["debug"] is True and values["ratio"] == 0.25


def test_bad_secret_number_is_redacted() -> None:
    _, problems = HTTP.validate({"port": Secret("hunter2"), "debug": Secret("hunter2")}, ("http",))
    assert shown(problems) == ["http.port: must be an int, not '***'",
                               "http.debug: must be true or false (true/false, yes/no, on/off, 1/0), not '***'"]


def test_a_secret_stays_redacted_after_it_is_parsed() -> None:
    # the parsed number is no longer a Secret, but it came from one: range and choice
    # messages must not show it
    schema = Schema({"port": Field(int, 1, max=10), "mode": Field(int, 1, choices=(1, 2)),
                     "ratio": Field(float, 0.0, min=0.0)})
    _, problems = schema.validate({"port": Secret("8443"), "mode": Secret("7"), "ratio": Secret("-2.5")}, ())
    assert shown(problems) == ["port: must be at most 10, not '***'", "mode: must be one of 1, 2, not '***'",
                               "ratio: must be at least 0.0, not '***'"]


def test_plain_strings_are_not_coerced() -> None:
    _, problems = HTTP.validate({"port": "80"}, ())
    assert shown(problems) == ["port: must be an int, not '80'"]


def test_long_strings_and_collections_are_shortened() -> None:
    _, problems = HTTP.validate({"port": "x" * 100, "bind": {"a": "secret-ish"}}, ())
    assert shown(problems) == [f"port: must be an int, not '{'x' * 37}...'", "bind: must be a string, not a mapping"]


def test_dict_of_type() -> None:
    _, problems = HTTP.validate({"limits": {"a": 1, "b": "x", 3: 4}}, ("http",))
    assert shown(problems) == ["http.limits.b: must be an int, not 'x'",
                               "http.limits: keys must be strings, not 3 [key 3]"]
    _, problems = HTTP.validate({"limits": [1]}, ("http",))
    assert shown(problems) == ["http.limits: must be a mapping of names to ints, not a list"]


def test_dict_of_a_schema_or_alternatives_checks_each_value_at_its_key() -> None:
    pins = Schema({"pin": Field(int, min=0, max=27)})
    schema = Schema({"inputs": Field(dict_of(pins), {}), "names": Field(dict_of((int, str)), {})})
    _, problems = schema.validate({"inputs": {"door": {"pin": 4}, "bell": {"pin": 40}},
                                        "names": {"a": 17, "b": "GPIO27", "c": 1.5, 9: "x"}}, ("gpio",))
    assert shown(problems) == ["gpio.inputs.bell.pin: must be in range 0..27, not 40",
                               "gpio.names.c: must be an int or a string, not 1.5",
                               "gpio.names: keys must be strings, not 9 [key 9]"]
    values, problems = schema.validate({"inputs": {"door": {"pin": 4}}, "names": {"b": "GPIO27"}}, ())
    assert problems == [] and values == {"inputs": {"door": {"pin": 4}}, "names": {"b": "GPIO27"}}
    _, problems = schema.validate({"inputs": [{"pin": 4}]}, ("gpio",))
    assert shown(problems) == ["gpio.inputs: must be a mapping of names to mappings, not a list"]


def test_tuple_of_types_and_null() -> None:
    schema = Schema({"v": Field((int, str, None), 0), "w": Field((str, list[str]), "a")})
    values, problems = schema.validate({"v": None, "w": ["a", "b"]}, ())
    assert problems == [] and values == {"v": None, "w": ["a", "b"]}
    _, problems = schema.validate({"v": 1.5, "w": ["a", 2]}, ("s",))
    # a list value is explained by the list alternative's own item problem
    assert shown(problems) == ["s.v: must be an int or a string or null, not 1.5", "s.w[1]: must be a string, not 2"]


def test_null_means_unset_only_when_the_default_is_none() -> None:
    values, problems = HTTP.validate({"token": None, "port": None}, ("http",))
    assert values["token"] is None
    assert shown(problems) == ["http.port: must be an int, not null"]


def test_nested_schema_paths() -> None:
    pins = Schema({"pin": Field(int, min=0, max=27), "pull": Field(str, "up", choices=("up", "down"))})
    schema = Schema({"inputs": Field(list[pins], []), "main": Field(pins, {"pin": 1})})
    values, problems = schema.validate({"inputs": [{"pin": 3}, {"pin": 40, "pul": "up"}], "main": {"pin": 2}},
                                       ("gpio",))
    assert shown(problems) == ["gpio.inputs[1].pin: must be in range 0..27, not 40",
                               "gpio.inputs[1]: unknown key 'pul' (did you mean 'pull'?) [key 'pul']"]
    assert values["main"] == {"pin": 2, "pull": "up"}


def test_not_a_mapping() -> None:
    values, problems = HTTP.validate([1, 2], ("http",))
    assert values == {} and shown(problems) == ["http: must be a mapping, not a list"]
    values, problems = HTTP.validate(None, ("http",))
    assert problems == [] and values["port"] == 8008


def test_mutable_defaults_are_copied() -> None:
    a, _ = HTTP.validate({}, ())
    a["tags"].append("x")
    b, _ = HTTP.validate({}, ())
    assert b["tags"] == []


def test_schema_problems_are_config_problems() -> None:
    _, problems = HTTP.validate({"prot": 1}, ("http",))
    assert isinstance(problems[0], SchemaProblem)
    assert problems[0].path == ("http",) and problems[0].key == "prot" and problems[0].warning is False


@pytest.mark.parametrize("spec", [set, tuple, list[int, str], dict[int, str], "int", ()])
def test_unsupported_field_types_are_programming_errors(spec: object) -> None:
    with pytest.raises(TypeError, match="unsupported field type"):
        Field(spec)


def test_bad_declarations_are_programming_errors() -> None:
    with pytest.raises(TypeError, match="larger than"):
        Field(int, 0, min=5, max=1)
    with pytest.raises(TypeError, match="already a field"):
        Schema({"a": Field(int, 0), "b": Field(int, 0, aliases=("a",))})
    with pytest.raises(TypeError, match="must be a Field"):
        Schema({"a": int})  # type: ignore[dict-item]


def test_describe_is_json_schema_like() -> None:
    schema = Schema({
        "port": Field(int, 8008, doc="TCP port", min=1, max=65535),
        "token": Field(str, "dflt", secret=True),
        "mode": Field(str, "ro", choices=("ro", "rw"), aliases=("access",), deprecated="use 'acl'"),
        "pins": Field(list[int]),
        "map": Field(dict[str, (int, None)], {}),
        "nested": Field(Schema({"x": Field(bool, True)}), {}),
    }, doc="the HTTP API")
    d = schema.describe()
    json.dumps(d)
    assert d["description"] == "the HTTP API" and d["required"] == ["pins"] and d["additionalProperties"] is False
    props = d["properties"]
    assert props["port"] == {"type": "integer", "description": "TCP port", "default": 8008, "minimum": 1,
                             "maximum": 65535}
    assert props["token"] == {"type": "string", "writeOnly": True}
    assert props["mode"] == {"type": "string", "default": "ro", "enum": ["ro", "rw"], "x-aliases": ["access"],
                             "deprecated": True, "x-deprecated": "use 'acl'"}
    assert props["pins"] == {"type": "array", "items": {"type": "integer"}}
    assert props["map"] == {"type": "object", "additionalProperties": {"anyOf": [{"type": "integer"},
                                                                                 {"type": "null"}]},
                            "default": {}}
    assert props["nested"]["properties"]["x"] == {"type": "boolean", "default": True}


def test_suggest() -> None:
    assert suggest("gpoi", ["gpio", "http"]) == " (did you mean 'gpio'?)"
    assert suggest("zzzz", ["gpio", "http"]) == ""
    assert suggest("zzzz", ["gpio", "http"], allowed=True) == " (allowed: 'gpio', 'http')"
