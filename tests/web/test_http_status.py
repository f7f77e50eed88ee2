"""``GET /status``: the daemon's state over HTTP, with backends running, degraded and failed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from http_support import Rig, assert_error, assert_security_headers, build_rig, rig

from pihub import __version__
from pihub.backends.base import Backend, BackendStatus
from pihub.errors import BackendUnavailable
from pihub.events import Event

__all__ = ["rig"]  # the fixture, imported for pytest


class _Flaky(Backend):
    """Opens fine; the test reports its device missing and back."""

    name = "flaky"

    def open(self, emit: Any) -> None:
        self.status = BackendStatus.RUNNING

    def close(self) -> None:
        pass


class _Missing(Backend):
    name = "missing"

    def validate_environment(self) -> None:
        raise BackendUnavailable("no /dev/ttyUSB0 on this machine")

    def open(self, emit: Any) -> None:  # pragma: no cover - never reached
        raise AssertionError

    def close(self) -> None:
        pass


@pytest.fixture
def odd(make_hub: Callable[..., Any], tmp_path: Path) -> Rig:
    """A rig whose hub also has a backend that degrades and one that cannot start."""
    r = build_rig(make_hub, tmp_path, start=False)
    for cls in (_Flaky, _Missing):
        backend = cls({})
        r.hub.backends[backend.name] = backend
    r.hub.start()
    return r


def _backends(reply_body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in reply_body["backends"]}


def test_status_needs_the_read_scope(rig: Rig) -> None:
    assert_error(rig.call("GET", "/status"), 401, "INVALID_CREDENTIALS")
    assert_error(rig.call("GET", "/status", headers={"X-Token": "ph_wrong"}), 401, "INVALID_CREDENTIALS")
    r = rig.call("GET", "/status", headers=rig.as_("read"))
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert_security_headers(r)


def test_status_names_the_daemon_and_its_counters(rig: Rig) -> None:
    assert rig.hub.publish(Event.of("CustomEvent", subtype="http-test", value=1))
    rig.call("POST", "/hook/ping", json_body={"n": 1}, headers=rig.as_("control"))
    assert rig.hub.flush()
    body = rig.call("GET", "/status", headers=rig.as_("read")).json()
    assert body["device_id"] == rig.hub.device_id and body["version"] == __version__
    assert body["ready"] is True and body["uptime_s"] >= 0
    assert _backends(body)["mock"] == {"name": "mock", "status": "running", "error": None}
    bus = body["bus"]
    assert bus["producers"]["hub"]["published"] >= 2  # the CustomEvent and the WebhookEvent
    assert bus["published"] == sum(p["published"] for p in bus["producers"].values())
    assert bus["dropped"] == 0 and bus["depth"] == 0
    assert body["hooks"]["defined"] == len(rig.hub.hooks) and body["hooks"]["fired"] >= 2
    assert body["dispatcher"]["events"] >= 2


def test_a_degraded_backend_shows_with_its_reason_and_recovers(odd: Rig) -> None:
    flaky = odd.hub.backends["flaky"]
    assert _backends(odd.call("GET", "/status", headers=odd.as_("read")).json())["flaky"]["status"] == "running"
    assert flaky.report_degraded("device /dev/ttyACM0 is gone; retrying every 2 s")
    body = odd.call("GET", "/status", headers=odd.as_("read")).json()
    assert _backends(body)["flaky"] == {"name": "flaky", "status": "degraded",
                                        "error": "device /dev/ttyACM0 is gone; retrying every 2 s"}
    assert flaky.report_recovered()
    body = odd.call("GET", "/status", headers=odd.as_("read")).json()
    assert _backends(body)["flaky"] == {"name": "flaky", "status": "running", "error": None}


def test_a_failed_backend_shows_why(odd: Rig) -> None:
    body = odd.call("GET", "/status", headers=odd.as_("read")).json()
    missing = _backends(body)["missing"]
    assert missing["status"] == str(BackendStatus.FAILED_ENVIRONMENT) == "failed: unavailable"
    assert "ttyUSB0" in missing["error"]
    assert _backends(body)["mock"]["status"] == "running"  # the hub runs on


def test_status_of_a_hub_not_started(make_hub: Callable[..., Any], tmp_path: Path) -> None:
    r = build_rig(make_hub, tmp_path, start=False)
    body = r.call("GET", "/status", headers=r.as_("read")).json()
    assert body["ready"] is False and body["uptime_s"] == 0
    assert _backends(body)["mock"]["status"] == "configured"
