"""schemathesis against ``/openapi.json``, on the WSGI app of a real hub.

Every operation of the document gets generated requests (valid and invalid ones), sent
with the env token (admin, and not revocable, so a generated ``DELETE /tokens/{id}``
cannot lock the run out), and every response goes through all of schemathesis's checks:
no server error, a documented status code, content type, headers and body schema,
valid data accepted, invalid data rejected, authentication not ignored.

The short run is part of ``make test``; the long one (``-m fuzz``, >= 10,000 requests)
runs in ``make fuzz``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from http_support import ENV_TOKEN, Rig, build_rig
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pihub.web.openapi import openapi_document

#: The hub: the mock backend and hooks with each kind of reply, but none that fails on
#: purpose (a documented 500 would still be a server error to schemathesis).
FUZZ_YAML = """
mock: {}
event.hook.ping:
  if: {type: WebhookEvent, hook: ping}
  then:
    - return: '${ {"pong": 1} }'
event.hook.fuzz:
  if: {type: WebhookEvent, hook: fuzz}
  then:
    - return: '${ [{"method": method}, 202, {"X-Fuzz": "1"}] }'
event.hook.custom:
  if: {type: CustomEvent}
  then:
    - action: variable.set
      args: {custom_seen: '${type}'}
"""


#: Every request carries the env token as its X-Token: schemathesis then knows the
#: credential is real, and probes each operation without it and with a wrong one.
CONFIG = SchemathesisConfig.from_dict({"auth": {"openapi": {"xToken": {"api_key": ENV_TOKEN}}}})


#: Checks left out per operation, and why. POST /auth: which fields a valid body needs
#: depends on ?type= (login needs username and password, token with an admin credential
#: needs none), which OpenAPI 3.0 cannot state; every other check still runs on it.
EXCLUDED = {"POST /auth": [positive_data_acceptance]}


@pytest.fixture
def fuzz_rig(make_hub, tmp_path) -> Iterator[Rig]:
    root = tmp_path / "pub"
    root.mkdir()
    (root / "a.txt").write_text("inside")
    # schemathesis probes every operation with wrong Basic credentials and expects 401; the
    # production limits (5 per address, 50 for the hub) would turn those into 429s. The
    # limiter has its own tests.
    rig = build_rig(make_hub, tmp_path, yaml=FUZZ_YAML, settings={"resource_dirs": {"pub": str(root)}},
                    max_failures=1_000_000, max_failures_total=1_000_000)
    yield rig


def run_schemathesis(rig: Rig, examples_per_operation: int) -> dict[str, int]:
    """Fuzz every operation; return generated cases per operation. Fails on the first failed check.

    Each case is one request plus the probes some checks send (the request again without
    the credential, with a wrong one...); ``handled`` below counts all of them.
    """
    schema = schemathesis.openapi.from_wsgi("/openapi.json", rig.app, config=CONFIG)
    return {op.label: fuzz_operation(op, examples_per_operation)
            for op in (result.ok() for result in schema.get_all_operations())}


def fuzz_operation(operation: Any, examples: int) -> int:
    """Send up to ``examples`` generated cases to one operation, validating each; return the count."""
    sent = 0
    excluded = EXCLUDED.get(operation.label, [])

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        nonlocal sent
        response = case.call()
        sent += 1
        case.validate_response(response, excluded_checks=excluded)

    check()
    return sent


def test_the_document_covers_every_operation(fuzz_rig: Rig) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_rig.app, config=CONFIG)
    labels = {result.ok().label for result in schema.get_all_operations()}
    # every documented operation but GET /openapi.json, which schemathesis leaves out (it
    # is where the schema came from)
    documented = {f"{method.upper()} {path}" for path, ops in openapi_document()["paths"].items()
                  for method in ops}
    assert labels == documented - {"GET /openapi.json"}
    assert len(labels) == 32  # 22 API operations + the panel's 8 + the camera's 2
    assert {"POST /execute", "GET /resources/{name}/{path}", "OPTIONS /hook/{name}",
            "DELETE /tokens/{token_id}",
            "GET /metrics", "GET /readyz", "GET /status"} <= labels


def handled(rig: Rig) -> int:
    """Requests the app answered so far (every status)."""
    return sum(rig.app.status_counts.values())


def test_schemathesis_short(fuzz_rig: Rig) -> None:
    sent = run_schemathesis(fuzz_rig, examples_per_operation=20)
    assert all(n > 0 for n in sent.values()), sent
    assert sum(sent.values()) >= 300 and handled(fuzz_rig) >= 400, (sent, handled(fuzz_rig))
    assert not any(code >= 500 for code in fuzz_rig.app.status_counts), fuzz_rig.app.status_counts


@pytest.mark.fuzz
def test_schemathesis_long(fuzz_rig: Rig) -> None:
    per_operation = int(os.environ.get("PIHUB_FUZZ_EXAMPLES", "800"))
    sent = run_schemathesis(fuzz_rig, examples_per_operation=per_operation)
    total = sum(sent.values())
    print(f"\nschemathesis: {total} generated cases, {handled(fuzz_rig)} requests answered, over "
          f"{len(sent)} operations: {sent}; statuses {dict(sorted(fuzz_rig.app.status_counts.items()))}")
    assert total >= 10_000, sent
    assert not any(code >= 500 for code in fuzz_rig.app.status_counts), fuzz_rig.app.status_counts
