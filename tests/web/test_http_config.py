"""The ``http`` config section: defaults, limits, Platypush's ``backend.http`` and its options."""

from __future__ import annotations

import json

import pytest

from pihub import config as cfg
from pihub.config import Secret
from pihub.errors import ConfigError
from pihub.hub import known_sections
from pihub.web import HTTP_SCHEMA


def _load(write_config, text: str) -> cfg.Config:
    sections = {**known_sections(), "http": HTTP_SCHEMA}
    return cfg.load(str(write_config(text)), sections=sections)


def test_defaults_are_safe() -> None:
    values, problems = HTTP_SCHEMA.validate({}, ("http",))
    assert problems == []
    assert values["bind_address"] == "127.0.0.1" and values["port"] == 8008
    assert values["websocket_port"] == 8009 and values["allow_query_token"] is False
    assert values["max_body"] == 65536 and values["max_frame"] == 65536
    assert values["hooks"] == {} and values["resource_dirs"] == {} and values["allowed_origins"] == []
    assert values["enabled"] is True and values["disable_websocket"] is False
    assert values["ssl_cert"] is None and values["ssl_key"] is None and values["ssl_cafile"] is None


def test_every_field_documents_itself() -> None:
    described = HTTP_SCHEMA.describe()
    json.dumps(described)
    for name, field in described["properties"].items():
        assert field.get("description"), name
    for name in ("max_body", "max_frame", "websocket_replay", "websocket_queue", "hook_timeout"):
        doc = described["properties"][name]["description"]
        assert any(unit in doc for unit in ("bytes", "events", "messages", "seconds")), name


def test_platypush_backend_http_section_loads(write_config) -> None:
    conf = _load(write_config, """
        backend.http:
          port: 8018
          bind_address: 0.0.0.0
          websocket_port: 8009
          num_workers: 3
          resource_dirs: {pics: /tmp}
          zeroconf_enabled: false
    """)
    http = conf.sections["http"]
    assert http["port"] == 8018 and http["bind_address"] == "0.0.0.0" and http["threads"] == 3
    assert http["resource_dirs"] == {"pics": "/tmp"}
    messages = " | ".join(str(w) for w in conf.warnings)
    assert "backend.http" in messages and "num_workers" in messages and "zeroconf_enabled" in messages


@pytest.mark.parametrize("text,fragment", [
    ("http: {port: 70000}", "port"),
    ("http: {max_body: 10}", "max_body"),
    ("http: {allow_query_token: 'yes'}", "allow_query_token"),
    ("http: {hooks: {door: {tokn: x}}}", "tokn"),
    ("http: {bogus: 1}", "bogus"),
])
def test_bad_values_are_located_errors(write_config, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(write_config, text)
    assert fragment in str(e.value)


def test_hook_tokens_are_secrets(write_config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOOR_TOKEN", "s3cret-door-token")
    conf = _load(write_config, """
        http:
          hooks:
            door: {token: !env DOOR_TOKEN}
            github: {public: true}
    """)
    hooks = conf.sections["http"]["hooks"]
    assert isinstance(hooks["door"]["token"], Secret) and hooks["door"]["token"] == "s3cret-door-token"
    assert "s3cret" not in repr(hooks) and hooks["github"]["public"] is True
    assert "s3cret" not in json.dumps(HTTP_SCHEMA.describe())
