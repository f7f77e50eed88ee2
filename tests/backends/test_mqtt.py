"""The MQTT backend against a real Mosquitto (hw-mocks/mqtt_broker.py): password file, ACL,
a TLS listener with a throwaway CA; and requests between two hubs on one broker."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import EventRecorder, load_hw_mock, need_tool, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.mqtt import ERROR_RESPONSES_PER_S, MqttBackend, check_topic
from pihub.clock import ManualClock
from pihub.config import Secret
from pihub.errors import ActionError, ConfigProblems
from pihub.events import new_event_id

USERS = {"kitchen": "kitchen-pw-1", "hall": "hall-pw-2", "intruder": "intruder-pw-3"}


def _need_broker_tools() -> None:
    for tool in ("mosquitto", "mosquitto_passwd", "mosquitto_pub", "openssl"):
        need_tool(shutil.which(tool) is not None or Path("/usr/sbin", tool).exists(),
                  f"{tool} is not installed (apt-get install mosquitto mosquitto-clients openssl)")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _need_broker_tools()
    with load_hw_mock("mqtt_broker").Broker(tmp_path_factory.mktemp("mosquitto"), USERS) as b:
        yield b


@pytest.fixture
def backends() -> Iterator[list[MqttBackend]]:
    made: list[MqttBackend] = []
    yield made
    for b in made:
        b.close()


def _open(made: list[MqttBackend], config: dict[str, Any], emit: Any = None, **kw: Any) -> MqttBackend:
    b = MqttBackend(config, **kw)
    b.validate_environment()
    b.open(emit or EventRecorder())
    made.append(b)
    return b


def _connected(b: MqttBackend) -> bool:
    return b.broker_status()["state"] == "connected"


def _pub(broker: Any, topic: str, payload: bytes, user: str = "kitchen", mode: str = "-s") -> None:
    """Publish with mosquitto_pub, a client that is not pihub's (``-l``: one message per line)."""
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", user, "-P", USERS[user],
                    "-t", topic, mode], input=payload, check=True, timeout=10)


def _sub_one(broker: Any, topic: str) -> subprocess.Popen[bytes]:
    """mosquitto_sub waiting for one message on ``topic`` (retained ones included)."""
    return subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", "kitchen", "-P",
                             USERS["kitchen"], "-t", topic, "-C", "1", "-v"], stdout=subprocess.PIPE)


# ---------------------------------------------------------------------- config
def test_topics_are_checked_as_mqtt_defines_them():
    assert check_topic("home/+/temp", wildcards=True) is None
    assert check_topic("home/#", wildcards=True) is None
    assert "whole last level" in check_topic("home/#/x", wildcards=True)
    assert "whole level" in check_topic("home/a+", wildcards=True)
    assert "wildcards" in check_topic("home/+", wildcards=False)
    assert "NUL" in check_topic("a\0b", wildcards=True)
    assert check_topic("", wildcards=True) == "must be a non-empty string"


def test_bad_sections_name_the_key_and_value_never_the_password():
    with pytest.raises(ConfigProblems) as ei:
        MqttBackend({"topics": ["home/#/x"], "listeners": [{"host": "other", "topics": ["a/+b"]}],
                     "password": Secret("hunter2-secret"), "trusted_users": ["a/b"], "state_prefix": "pihub/#",
                     "qos": 1, "run_topic_prefix": "bus/+"})
    text = str(ei.value)
    for expected in ("topics[0]", "'home/#/x'", "listeners[0].host", "one broker per mqtt section", "'other'",
                     "listeners[0].topics[0]", "password: needs username", "trusted_users[0]", "state_prefix",
                     "run_topic_prefix"):
        assert expected in text, expected
    assert "hunter2" not in text
    _, problems = MqttBackend.config_schema.validate({"qos": 3, "password": Secret("hunter2-secret")}, ("mqtt",))
    assert [p.path for p in problems] == [("mqtt", "qos")] and "hunter2" not in str(problems)


def test_platypush_keys_are_read():
    b = MqttBackend({"tls_cafile": "/x/ca.pem", "topic": "bus", "subscribe_default_topic": False,
                     "listeners": [{"host": "127.0.0.1", "port": 1883, "topics": ["home/door"]}]})
    assert b.config["ca_certs"] == "/x/ca.pem" and b.use_tls and b.prefix == "bus" and b.config["rpc"] is False
    assert b.broker_status()["subscriptions"] == ["home/door"]


# ---------------------------------------------------------------------- listeners and publish
def test_listener_messages_become_events_json_decoded_when_json(broker, backends):
    rec = EventRecorder()
    b = _open(backends, {"port": broker.port, "username": "kitchen", "password": USERS["kitchen"],
                         "topics": ["test/listen/+"], "listeners": [{"topics": ["test/other"]}]}, rec)
    assert wait_for(lambda: _connected(b))
    _pub(broker, "test/listen/json", b'{"on": true, "level": [1, 2]}')
    _pub(broker, "test/listen/text", b"not {json")
    _pub(broker, "test/listen/bin", b"\xff\xfe\x00")
    _pub(broker, "test/other", b"42")
    _pub(broker, "test/unsubscribed", b"1")
    assert rec.wait_count(4) == [
        ("MQTTMessageEvent", {"host": "127.0.0.1", "port": broker.port, "topic": "test/listen/json",
                              "msg": {"on": True, "level": [1, 2]}}),
        ("MQTTMessageEvent", {"host": "127.0.0.1", "port": broker.port, "topic": "test/listen/text",
                              "msg": "not {json"}),
        ("MQTTMessageEvent", {"host": "127.0.0.1", "port": broker.port, "topic": "test/listen/bin",
                              "msg": "0xfffe00"}),
        ("MQTTMessageEvent", {"host": "127.0.0.1", "port": broker.port, "topic": "test/other", "msg": 42}),
    ]
    assert all(e.source == "mqtt" for e in rec.events)
    # the payload's length is what the event rings charge at least (pihub.events.Event.wire_size)
    assert [e.wire_size for e in rec.events] == [29, 9, 3, 2]


def test_oversized_and_deeply_nested_messages_do_not_break_the_reader(broker, backends):
    rec = EventRecorder()
    b = _open(backends, {"port": broker.port, "username": "kitchen", "password": USERS["kitchen"],
                         "topics": ["test/hostile"], "max_payload": 1000}, rec)
    assert wait_for(lambda: _connected(b))
    _pub(broker, "test/hostile", b"x" * 1001)
    _pub(broker, "test/hostile", b"[" * 999)  # not JSON that decodes: kept as text
    _pub(broker, "test/hostile", b'{"v": NaN, "w": [Infinity, -Infinity], "x": 1e999}')  # Python reads it; JSON not
    _pub(broker, "test/hostile", b"end")
    assert [e["msg"] for _, e in rec.wait_count(3)] == ["[" * 999, {"v": None, "w": [None, None], "x": None}, "end"]
    assert b.broker_status()["oversized"] == 1


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_huge_message_is_not_read_whole_over_mqtt_5(broker, backends, protocol):
    rec = EventRecorder()
    b = _open(backends, {"port": broker.port, "username": "kitchen", "password": USERS["kitchen"],
                         "topics": ["test/huge"], "max_payload": 1000, "protocol": protocol}, rec)
    assert wait_for(lambda: _connected(b))
    _pub(broker, "test/huge", b"x" * 2_000_000)
    _pub(broker, "test/huge", b"x" * 1001)  # over max_payload, under the packet size asked for
    _pub(broker, "test/huge", b"end")
    assert [e["msg"] for _, e in rec.wait_count(1)] == ["end"]
    # over MQTT 5 the broker never sent the 2 MB one (Maximum Packet Size); 3.1.1 read it, then dropped it
    assert wait_for(lambda: b.broker_status()["oversized"] == (1 if protocol == "5" else 2))


def test_publish_sends_json_and_retains(broker, backends):
    b = _open(backends, {"port": broker.port, "username": "kitchen", "password": USERS["kitchen"]})
    assert wait_for(lambda: _connected(b))
    out = b.publish("test/pub/state", {"on": True}, qos=1, retain=True)
    assert out["topic"] == "test/pub/state" and out["bytes"] == len(b'{"on":true}')
    sub = _sub_one(broker, "test/pub/state")  # subscribes after the publish: gets it as retained
    assert sub.communicate(timeout=10)[0] == b'test/pub/state {"on":true}\n'
    b.publish("test/pub/state", None, retain=True)  # clears it
    with pytest.raises(ActionError, match=r"topic must not contain the wildcards.*'test/\+'"):
        b.publish("test/+", "x")
    with pytest.raises(ActionError, match="qos must be 0, 1 or 2, not 5"):
        b.publish("test/x", "x", qos=5)


def test_subscribe_adds_a_listener_topic(broker, backends):
    rec = EventRecorder()
    b = _open(backends, {"port": broker.port, "username": "kitchen", "password": USERS["kitchen"]}, rec)
    assert wait_for(lambda: _connected(b))
    assert b.subscribe("test/later/#") == {"topic": "test/later/#", "subscribed": True}
    assert b.subscribe("test/later/#") == {"topic": "test/later/#", "subscribed": False}
    # the SUBACK is not awaited by subscribe: publish until the first one arrives
    assert wait_for(lambda: _pub(broker, "test/later/a", b"1") or rec.of("MQTTMessageEvent"), timeout=10)


# ---------------------------------------------------------------------- failures and recovery
def test_wrong_password_is_degraded_with_the_reason_and_no_secret(broker, backends, caplog):
    caplog.set_level(logging.DEBUG)
    password = Secret("definitely-wrong-pw")
    b = _open(backends, {"port": broker.port, "username": "kitchen", "password": password})
    assert wait_for(lambda: b.status == BackendStatus.DEGRADED)
    assert "refused the login of user 'kitchen'" in b.error and "mqtt.password" in b.error
    assert f"127.0.0.1:{broker.port}" in b.error
    shown = json.dumps(b.describe_status()) + json.dumps(b.broker_status()) + caplog.text
    assert "definitely-wrong-pw" not in shown


def test_unreachable_broker_backs_off_on_the_clock(broker, backends):
    from pihub_testing import RecordingClock

    clock = RecordingClock()
    port = load_hw_mock("mqtt_broker").free_port()
    b = _open(backends, {"port": port, "reconnect_interval": 1.0, "max_reconnect_interval": 4.0}, clock=clock)
    assert wait_for(lambda: b.status == BackendStatus.DEGRADED)
    assert f"connection refused by 127.0.0.1:{port}" in b.error
    for i in range(4):
        assert wait_for(lambda i=i: clock.waiters == 1 and len(clock.waits) == i + 1)
        clock.advance(clock.waits[-1])
    assert wait_for(lambda: len(clock.waits) == 5)
    assert clock.waits[:5] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.broker_status()["connect_failures"] >= 5


def test_broker_restart_reconnects_and_resubscribes(tmp_path, backends):
    _need_broker_tools()
    with load_hw_mock("mqtt_broker").Broker(tmp_path, USERS, tls=False) as own:
        rec = EventRecorder()
        statuses: list[tuple[str, str | None]] = []
        b = _open(backends, {"port": own.port, "username": "kitchen", "password": USERS["kitchen"],
                             "topics": ["test/restart"], "reconnect_interval": 0.05}, rec)
        b.bind_status_listener(lambda x: statuses.append((str(x.status), x.error)))
        assert wait_for(lambda: _connected(b))
        own.restart()
        assert wait_for(lambda: len(statuses) >= 3 and statuses[-1][0] == "running", timeout=15)
        assert statuses[1][0] == "degraded" and "connection lost" in statuses[1][1]
        assert statuses[-1] == ("running", None)
        _pub(own, "test/restart", b"after")  # only a re-subscribed client gets it
        assert rec.wait(lambda: rec.of("MQTTMessageEvent", msg="after"), timeout=10)
        assert b.broker_status()["connection_losses"] == 1


def test_tls_with_the_ca_works_and_a_wrong_ca_fails_clearly(broker, backends, tmp_path):
    rec = EventRecorder()
    b = _open(backends, {"port": broker.tls_port, "username": "kitchen", "password": USERS["kitchen"],
                         "ca_certs": str(broker.ca_file), "topics": ["test/tls"]}, rec)
    assert wait_for(lambda: _connected(b))
    b.publish("test/tls", "secret over tls")
    assert rec.wait(lambda: rec.of("MQTTMessageEvent", msg="secret over tls"))
    other_ca, _, _ = load_hw_mock("mqtt_broker").make_ca(tmp_path, "other")
    bad = _open(backends, {"port": broker.tls_port, "username": "kitchen", "password": USERS["kitchen"],
                           "ca_certs": str(other_ca)})
    assert wait_for(lambda: bad.status == BackendStatus.DEGRADED)
    assert "TLS: the certificate of 127.0.0.1" in bad.error and "check mqtt.ca_certs" in bad.error
    plain = _open(backends, {"port": broker.port, "ca_certs": str(broker.ca_file)})  # TLS to a plain port
    assert wait_for(lambda: plain.status == BackendStatus.DEGRADED)
    assert "TLS handshake" in plain.error


def test_a_missing_ca_file_makes_the_backend_unavailable(tmp_path):
    from pihub.errors import BackendUnavailable

    b = MqttBackend({"ca_certs": str(tmp_path / "nope.pem")})
    with pytest.raises(BackendUnavailable, match=r"mqtt.ca_certs '.*nope.pem' cannot be loaded"):
        b.validate_environment()


# ---------------------------------------------------------------------- requests between hubs
def _hub_config(tmp_path: Path, device: str, port: int, **mqtt: Any) -> str:
    section = {"port": port, "username": device, "password": USERS[device], "timeout": 10, **mqtt}
    return (f"device_id: {device}\nworkdir: {tmp_path / device}\n"
            f"mqtt: {json.dumps(section)}\n")


def _token(hub: Any) -> str:
    hub.auth.add_user("owner", "a long enough password", scope="admin")
    return hub.auth.create_token("owner", name="peer", scopes=("control",))[0]


@pytest.fixture
def two_hubs(broker, make_hub, tmp_path):
    hall = make_hub(_hub_config(tmp_path, "hall", broker.port, trusted_users=["kitchen"]))
    token = _token(hall)
    kitchen = make_hub(_hub_config(tmp_path, "kitchen", broker.port))
    for hub in (hall, kitchen):
        assert wait_for(lambda hub=hub: _connected(hub.backends["mqtt"]))
    return kitchen, hall, token


def _run(hub: Any, action: str, /, **args: Any) -> Any:
    return hub.registry.execute(action, args)


def test_a_request_with_the_targets_token_runs_there_and_returns_its_response(two_hubs):
    kitchen, hall, token = two_hubs
    resp = _run(kitchen, "mqtt.execute", target="hall", action="variable.set", args={"lamp": "on"}, token=token)
    assert resp.errors == [] and resp.output == {"lamp": "on"}
    assert _run(hall, "variable.get", name="lamp").output == {"lamp": "on"}
    assert _run(kitchen, "variable.get", name="lamp").output == {"lamp": None}
    failing = _run(kitchen, "mqtt.execute", target="hall", action="variable.nope", token=token)
    assert failing.errors and "nope" in failing.errors[0]  # the target's error comes back


def test_requests_without_or_with_a_wrong_token_are_refused_and_logged(two_hubs, caplog):
    kitchen, hall, token = two_hubs
    caplog.set_level(logging.WARNING)
    wrong = "ph_" + "x" * 43
    resp = _run(kitchen, "mqtt.execute", target="hall", action="variable.set", args={"a": 1}, token=wrong)
    assert resp.errors and "INVALID_CREDENTIALS" in resp.errors[0]
    ok = _run(kitchen, "mqtt.execute", target="hall", action="variable.set", args={"b": 1}, token=token)
    assert ok.errors == []
    assert _run(hall, "variable.get", name="a").output == {"a": None}
    assert "refused" in caplog.text and wrong not in caplog.text
    with pytest.raises(ActionError, match=r"no response from device 'attic' within 0.2 s"):
        kitchen.backends["mqtt"].execute("attic", "variable.get", {}, None, 0.2)


def test_a_trusted_broker_user_needs_no_token_and_cannot_be_spoofed(two_hubs, broker):
    kitchen, hall, token = two_hubs
    # kitchen is in hall's trusted_users: no token, the request goes on .../from/kitchen
    resp = _run(kitchen, "mqtt.execute", target="hall", action="variable.set", args={"trusted": 1})
    assert resp.errors == []
    assert _run(hall, "variable.get", name="trusted").output == {"trusted": 1}
    # hall trusts nobody in kitchen's config: the same request the other way is refused
    back = _run(hall, "mqtt.execute", target="kitchen", action="variable.set", args={"x": 1})
    assert back.errors and "INVALID_CREDENTIALS" in back.errors[0]
    # another broker user claiming kitchen's name: the broker's ACL drops it; then a
    # request with a token from the same client, which arrives after it, marks the end
    spoof = {"type": "request", "id": "spoof1", "action": "variable.set", "args": {"spoofed": 1}}
    _pub(broker, "platypush_bus_mq/hall/from/kitchen", json.dumps(spoof).encode(), "intruder")
    marker = {"type": "request", "id": "mark1", "action": "variable.set", "args": {"marker": 1}, "token": token}
    _pub(broker, "platypush_bus_mq/hall", json.dumps(marker).encode(), "intruder")
    assert wait_for(lambda: _run(hall, "variable.get", name="marker").output == {"marker": 1})
    assert _run(hall, "variable.get", name="spoofed").output == {"spoofed": None}


def test_hostile_request_messages_get_errors_or_nothing_never_a_crash(two_hubs, broker):
    kitchen, hall, token = two_hubs
    mqtt = hall.backends["mqtt"]
    bad = _run(kitchen, "mqtt.execute", target="hall", action="nodot", token=token)
    assert bad.errors and "plugin.method" in bad.errors[0]  # the gate's error, sent back
    for hostile in (b"not json", b"[" * 5000, b'{"type": "request", "id": "a/#", "action": "variable.get"}',
                    b"\xff" * 10):
        _pub(broker, "platypush_bus_mq/hall", hostile, "kitchen")
    resp = _run(kitchen, "mqtt.execute", target="hall", action="variable.set", args={"after": 1}, token=token)
    assert resp.errors == [] and mqtt.status == BackendStatus.RUNNING
    assert wait_for(lambda: mqtt.broker_status()["unanswered"] >= 4)  # no id to answer to


def test_a_flood_of_requests_is_bounded(broker, backends):
    """A blocked worker: requests beyond rpc_queue are refused as busy, error responses
    limited per second of the clock; nothing queues without bound."""
    clock = ManualClock()
    release = threading.Event()  # set at the end; a failed test leaves it, and close() waits it out
    handled: list[bytes] = []

    def gate(message: bytes, **kw: Any) -> dict[str, Any]:
        release.wait(30)
        handled.append(message)
        return {"type": "response", "id": json.loads(message)["id"], "response": {"output": 1, "errors": []}}

    b = MqttBackend({"port": broker.port, "username": "hall", "password": USERS["hall"], "rpc_workers": 1,
                     "rpc_queue": 2}, clock=clock)
    b.bind_requests(gate, "hall")
    rec = EventRecorder()
    b.open(rec)
    backends.append(b)
    assert wait_for(lambda: _connected(b))
    responses = []
    watcher = _open(backends, {"port": broker.port, "username": "kitchen", "password": USERS["kitchen"],
                               "topics": ["platypush_bus_mq/hall/responses/+"]},
                    lambda e: e.args["topic"].endswith("/probe") or responses.append(e) or True)
    assert wait_for(lambda: _connected(watcher))
    # the watcher's subscription is active once a probe gets through
    assert wait_for(lambda: b.publish("platypush_bus_mq/hall/responses/probe", "p")
                    and watcher.broker_status()["messages"], timeout=10)
    n = 60
    lines = b"".join(json.dumps({"type": "request", "id": f"r{i}", "action": "variable.get"}).encode() + b"\n"
                     for i in range(n))
    _pub(broker, "platypush_bus_mq/hall", lines, "kitchen", mode="-l")
    assert wait_for(lambda: b.broker_status()["requests"] == n, timeout=10)
    st = b.broker_status()
    accepted = n - st["busy"]
    assert accepted in (2, 3)  # two queued, and one in the worker once it took the first
    assert b._queue.qsize() <= 2
    assert wait_for(lambda: len(responses) == ERROR_RESPONSES_PER_S), (len(responses), st, b._queue.qsize())
    assert st["unanswered"] == st["busy"] - ERROR_RESPONSES_PER_S
    assert all("busy" in json.dumps(e.args["msg"]) for e in responses)
    release.set()
    assert wait_for(lambda: len(handled) == accepted and len(responses) == ERROR_RESPONSES_PER_S + accepted)


# ---------------------------------------------------------------------- Home Assistant discovery
def test_home_assistant_discovery_announces_entities_and_switches_the_pin(broker, make_hub, tmp_path, backends):
    from pihub.events import CATALOGUE, Event

    rec = EventRecorder()
    watcher = _open(backends, {"port": broker.port, "username": "kitchen", "password": USERS["kitchen"],
                               "topics": ["homeassistant/#", "pihub/#"]}, rec)
    assert wait_for(lambda: _connected(watcher))
    hall = make_hub(_hub_config(tmp_path, "hall", broker.port, discovery=True)
                    + "gpio: {pin_factory: mock, inputs: {door: {pin: 17}}, outputs: {lamp: {pin: 27}},"
                      " mock_wiring: {27: 17}}\n")
    switch, binary = "homeassistant/switch/hall/gpio_lamp/config", "homeassistant/binary_sensor/hall/gpio_door/config"
    assert rec.wait(lambda: rec.of("MQTTMessageEvent", topic=switch) and rec.of("MQTTMessageEvent", topic=binary)
                    and rec.of("MQTTMessageEvent", topic="pihub/hall/status", msg="online"), timeout=10)
    config = rec.of("MQTTMessageEvent", topic=switch)[-1].args["msg"]
    assert config["command_topic"] == "pihub/hall/gpio/lamp/set"
    assert config["state_topic"] == "pihub/hall/gpio/lamp/state"
    assert config["availability_topic"] == "pihub/hall/status" and config["unique_id"] == "pihub_hall_gpio_lamp"
    assert "command_topic" not in rec.of("MQTTMessageEvent", topic=binary)[-1].args["msg"]
    assert rec.wait(lambda: rec.of("MQTTMessageEvent", topic="pihub/hall/gpio/lamp/state", msg="OFF"))
    # hostile commands: a pin that is no switch, a payload that is not ON/OFF
    _pub(broker, "pihub/hall/gpio/door/set", b"ON")
    _pub(broker, "pihub/hall/gpio/ghost/set", b"ON")
    _pub(broker, "pihub/hall/gpio/lamp/set", b"MAYBE")
    _pub(broker, "pihub/hall/gpio/lamp/set", b"ON      junk")  # ON/OFF exactly, as the switch announces
    _pub(broker, "pihub/hall/gpio/lamp/set", b"on")
    assert wait_for(lambda: hall.backends["mqtt"].broker_status()["refused"] == 5)
    _pub(broker, "pihub/hall/gpio/lamp/set", b"ON" + b" " * 300_000)  # over max_payload: not even read as ON
    assert wait_for(lambda: hall.backends["mqtt"].broker_status()["oversized"] == 1)
    assert _run(hall, "gpio.read", pin="lamp").output["value"] == 0
    _pub(broker, "pihub/hall/gpio/lamp/set", b"ON")  # as Home Assistant does
    assert rec.wait(lambda: rec.of("MQTTMessageEvent", topic="pihub/hall/gpio/lamp/state", msg="ON"))
    assert _run(hall, "gpio.read", pin="lamp").output["value"] == 1
    # the lamp is wired to the door input: its GPIOEvent reaches HA as the door's state
    assert rec.wait(lambda: rec.of("MQTTMessageEvent", topic="pihub/hall/gpio/door/state", msg="ON"))
    hall.publish(Event(CATALOGUE.get("SensorDataChangeEvent"), {"data": {"temperature": 21.5, "label": "x"},
                                                                "source": "serial"}, 0, "serial"))
    sensor = "homeassistant/sensor/hall/serial_temperature/config"
    assert rec.wait(lambda: rec.of("MQTTMessageEvent", topic=sensor)
                    and rec.of("MQTTMessageEvent", topic="pihub/hall/serial/temperature/state", msg=21.5))
    sc = rec.of("MQTTMessageEvent", topic=sensor)[-1].args["msg"]
    assert (sc["unit_of_measurement"], sc["device_class"]) == ("°C", "temperature")
    assert not rec.of("MQTTMessageEvent", topic="homeassistant/sensor/hall/serial_label/config")  # not a number
    hall.stop()
    assert rec.wait(lambda: rec.of("MQTTMessageEvent", topic="pihub/hall/status", msg="offline"))


def test_switches_obey_their_announced_command_topics_whatever_their_names(broker, make_hub, tmp_path, watcher,
                                                                           caplog):
    """A name with characters a topic level cannot hold is announced made safe, and Home
    Assistant's commands on the announced topic reach the pin; of two names made the same,
    the first in the config gets the entity, with a warning naming both."""
    caplog.set_level(logging.WARNING, logger="pihub")
    hall = make_hub(_hub_config(tmp_path, "hall", broker.port, discovery=True)
                    + "gpio: {pin_factory: mock, outputs: {porch.lamp: {pin: 27}, 'hall lamp': {pin: 22},"
                      " a.b: {pin: 23}, a_b: {pin: 24}}}\n")
    configs = {safe: f"homeassistant/switch/hall/gpio_{safe}/config" for safe in ("porch_lamp", "hall_lamp", "a_b")}
    assert wait_for(lambda: all(watcher.on(t) for t in configs.values()), 10), "not announced"

    def value(pin: str) -> int:
        return _run(hall, "gpio.read", pin=pin).output["value"]

    for safe, name in (("porch_lamp", "porch.lamp"), ("hall_lamp", "hall lamp")):
        config = watcher.on(configs[safe])[-1]["payload"]
        assert (config["name"], config["command_topic"]) == (name, f"pihub/hall/gpio/{safe}/set")
        for payload, want in ((b"ON", 1), (b"OFF", 0)):  # exactly what Home Assistant sends
            _pub(broker, config["command_topic"], payload)
            assert wait_for(lambda name=name, want=want: value(name) == want), (name, payload)
            assert wait_for(lambda c=config, p=payload: (seen := watcher.on(c["state_topic"]))
                            and seen[-1]["payload"] == p.decode())
    # a.b and a_b share every topic: a.b, first in the config, has them; a_b is not announced
    clash = [r for r in caplog.records if "is not announced" in r.getMessage()]
    assert [(r.levelno, "'a_b'" in r.getMessage(), "'a.b'" in r.getMessage()) for r in clash] == [
        (logging.WARNING, True, True)]
    assert {m["payload"]["name"] for m in watcher.on(configs["a_b"])} == {"a.b"}
    _pub(broker, "pihub/hall/gpio/a_b/set", b"ON")
    assert wait_for(lambda: value("a.b") == 1)
    assert value("a_b") == 0
    # the raw name is no command topic: refused, and said once at WARNING naming the topic
    refused = hall.backends["mqtt"].broker_status()["refused"]
    _pub(broker, "pihub/hall/gpio/porch.lamp/set", b"ON")
    _pub(broker, "pihub/hall/gpio/ghost/set", b"ON")
    assert wait_for(lambda: hall.backends["mqtt"].broker_status()["refused"] == refused + 2)
    ignored = [r for r in caplog.records if "ignored a Home Assistant command" in r.getMessage()]
    assert [(r.levelno, "pihub/hall/gpio/porch.lamp/set" in r.getMessage()) for r in ignored] == [
        (logging.WARNING, True)], "one line a minute at most, naming the topic"
    assert value("porch.lamp") == 0


def test_names_made_the_same_get_one_entity_the_first_and_commands_are_found_by_topic():
    from pihub.backends.ha_discovery import EntityTable, gpio_entities

    names = [("output", "porch.lamp"), ("output", "a.b"), ("output", "a_b"), ("input", "a b"),
             ("output", "porch/lamp"), ("output", "hall lamp")]
    devices = [{"name": "gpio", "entities": [{"kind": kind, "name": name, "value": 0} for kind, name in names]}]

    def announce(table: EntityTable) -> dict[str, str | None]:
        found = gpio_entities("my pi", devices, discovery_prefix="ha", state_prefix="ph")
        return {ent.key[1]: (holder.key[1] if (holder := table.add(ent)) else None) for ent, _ in found}

    table = EntityTable()
    assert announce(table) == {"porch.lamp": None, "a.b": None, "a_b": "a.b", "a b": "a.b",
                               "porch/lamp": "porch.lamp", "hall lamp": None}
    first = table.get(("gpio", "a.b"))
    # again, on a reconnect: nothing new, and a clash is reported only the first time
    assert set(announce(table).values()) == {None}
    assert table.get(("gpio", "a.b")) is first and len(table) == 3
    assert table.get(("gpio", "a_b")) is None
    assert table.refused(("gpio", "a_b")) and table.refused(("gpio", "porch/lamp"))
    assert not table.refused(("gpio", "a.b")) and not table.refused(("gpio", "unknown"))
    for topic, name in (("ph/my_pi/gpio/porch_lamp/set", "porch.lamp"), ("ph/my_pi/gpio/a_b/set", "a.b"),
                        ("ph/my_pi/gpio/hall_lamp/set", "hall lamp")):
        ent = table.commanded(topic)
        assert ent is not None and ent.key == ("gpio", name), topic
    for topic in ("ph/my_pi/gpio/porch.lamp/set", "ph/my_pi/gpio/porch_lamp/state", "ph/my_pi/gpio/+/set",
                  "ph/my_pi/gpio/porch_lamp/set/x", "ph/my_pi/gpio/hall lamp/set"):
        assert table.commanded(topic) is None, topic


def test_a_request_with_another_target_goes_there_through_the_hub(two_hubs):
    """POST /execute's path (Hub.execute) with target: hall on kitchen runs on hall."""
    from pihub.messages import Request

    kitchen, hall, _ = two_hubs
    resp = kitchen.execute(Request(action="variable.set", args={"via": "target"}, target="hall", origin="http"))
    assert resp.errors == [] and resp.output == {"via": "target"}
    assert _run(hall, "variable.get", name="via").output == {"via": "target"}
    assert _run(kitchen, "variable.get", name="via").output == {"via": None}
    local = kitchen.execute(Request(action="variable.set", args={"here": 1}, target="kitchen"))
    assert local.errors == [] and _run(kitchen, "variable.get", name="here").output == {"here": 1}


def test_a_hook_step_with_a_target_runs_on_that_device(broker, make_hub, tmp_path):
    """The seeds' pattern: a hook on one Pi drives another (target: in the step)."""
    from pihub.events import Event

    hall = make_hub(_hub_config(tmp_path, "hall", broker.port, trusted_users=["kitchen"]))
    kitchen = make_hub(_hub_config(tmp_path, "kitchen", broker.port) + """
event.hook.doorbell_lights_the_hall:
  if: {type: CustomEvent, subtype: doorbell}
  then:
    - action: variable.set
      args: {hall_light: "on"}
      target: hall
    - action: variable.set
      args: {rang: true}
""")
    for hub in (hall, kitchen):
        assert wait_for(lambda hub=hub: _connected(hub.backends["mqtt"]))
    assert kitchen.publish(Event.of("CustomEvent", subtype="doorbell"))
    assert wait_for(lambda: _run(hall, "variable.get", name="hall_light").output == {"hall_light": "on"}, 10)
    assert wait_for(lambda: _run(kitchen, "variable.get", name="rang").output == {"rang": True}, 10)
    assert _run(kitchen, "variable.get", name="hall_light").output == {"hall_light": None}


def test_platypush_backend_mqtt_section_loads_as_mqtt_with_a_warning(write_config, load_config):
    config = load_config(write_config("""
        backend.mqtt:
          host: broker.lan
          topic: platypush_bus_mq
          listeners:
            - topics: [home/door]
    """))
    assert config.sections["mqtt"]["host"] == "broker.lan"
    assert config.sections["mqtt"]["run_topic_prefix"] == "platypush_bus_mq"
    assert any("'mqtt'" in str(w) for w in config.warnings)


def test_sensor_keys_get_units_and_classes_by_name():
    from pihub.backends.ha_discovery import sensor_entity

    def unit(key: str) -> tuple[Any, Any]:
        c = sensor_entity("pi", "adc", key, discovery_prefix="homeassistant", state_prefix="pihub").config
        return c.get("unit_of_measurement"), c.get("device_class")

    assert unit("temperature") == ("°C", "temperature")
    assert unit("kitchen_humidity") == ("%", "humidity")
    assert unit("light") == (None, None)
    ent = sensor_entity("my pi", "serial", "a/b+", discovery_prefix="homeassistant", state_prefix="pihub")
    assert ent.config_topic == "homeassistant/sensor/my_pi/serial_a_b_/config"  # a level each, no wildcards
    assert ent.state_topic == "pihub/my_pi/serial/a_b_/state"
    assert ent.config["availability_topic"] == "pihub/my_pi/status" and ent.config["device"]["name"] == "my pi"


# ---------------------------------------------------------------------- Home Assistant event entities
BUTTON, OTHER_BUTTON = "80:e4:da:70:a1:c0", "80:e4:da:70:a1:c9"
ATR, UID = "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A", "04 A1 B2 C3"


class _Watcher:
    """mosquitto_sub on HA's and pihub's trees with MQTT 5 "retain as published": each
    message with the retain flag its *publisher* set (a plain subscription sees 0 on every
    live message), as ``{"topic", "retain", "payload"}`` (payload JSON-decoded when JSON)."""

    def __init__(self, broker: Any) -> None:
        self.lines: list[str] = []
        self._proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", "kitchen", "-P", USERS["kitchen"],
             "-V", "mqttv5", "--retain-as-published", "-F", "%j", "-t", "homeassistant/#", "-t", "pihub/#"],
            stdout=subprocess.PIPE, text=True, encoding="utf-8")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # retained: delivered once its one SUBSCRIBE (both filters) is done, whenever that is
        ready = f"ready-{new_event_id()}"
        self._retain(broker, "-m", ready)
        assert wait_for(lambda: any(m["payload"] == ready for m in self.on("pihub/watcher-ready")), 10), (
            "mosquitto_sub did not subscribe")

    @staticmethod
    def _retain(broker: Any, *message: str) -> None:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", "kitchen", "-P",
                        USERS["kitchen"], "-t", "pihub/watcher-ready", "-r", *message], check=True, timeout=10)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line)

    def on(self, topic: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            m = json.loads(line)
            if m["topic"] == topic:
                with contextlib.suppress(ValueError):
                    m["payload"] = json.loads(m["payload"])
                out.append(m)
        return out

    def close(self, broker: Any) -> None:
        self._retain(broker, "-n")  # an empty retained message clears it
        self._proc.terminate()
        self._proc.wait(10)
        self._reader.join(10)


@pytest.fixture
def watcher(broker) -> Iterator[_Watcher]:
    w = _Watcher(broker)
    yield w
    w.close(broker)


def test_flic_buttons_and_card_readers_are_event_entities_with_momentary_masked_events(
        broker, make_hub, tmp_path, watcher):
    from pihub.events import Event

    with load_hw_mock("fake_flicd").FakeFlicd([BUTTON], hold_time=0.3, double_window=0.2) as flicd:
        hub = make_hub(_hub_config(tmp_path, "kitchen", broker.port, discovery=True)
                       + f"flic: {{port: {flicd.port}, reconnect_interval: 0.05}}\n")
        config_topic = "homeassistant/event/kitchen/flic_80_e4_da_70_a1_c0/config"
        assert wait_for(lambda: watcher.on(config_topic), 10), "the flicd button was not announced"
        announced = watcher.on(config_topic)[-1]
        assert announced["retain"] == 1
        config = announced["payload"]
        assert config["event_types"] == ["click", "double_click", "hold"] and config["device_class"] == "button"
        assert config["unique_id"] == "pihub_kitchen_flic_80_e4_da_70_a1_c0"
        assert config["availability_topic"] == "pihub/kitchen/status"
        state = config["state_topic"]
        assert state == "pihub/kitchen/flic/80_e4_da_70_a1_c0/state"
        assert wait_for(lambda: hub.backends["flic"].describe_status()["buttons"].get(BUTTON) == "connected", 10)
        flicd.press(BUTTON, "double")
        flicd.press(BUTTON, "hold")
        assert wait_for(lambda: len(watcher.on(state)) >= 2, 10), watcher.on(state)
        assert [(m["retain"], m["payload"]) for m in watcher.on(state)] == [
            (0, {"event_type": "double_click", "btn_addr": BUTTON, "was_queued": False}),
            (0, {"event_type": "hold", "btn_addr": BUTTON, "was_queued": False})]

    # a button no backend listed (another Pi's event, say) is announced by its first event
    assert hub.publish(Event.of("FlicButtonClickEvent", "flic", btn_addr=OTHER_BUTTON, was_queued=True,
                                time_diff=3))
    other = "pihub/kitchen/flic/80_e4_da_70_a1_c9/state"
    assert wait_for(lambda: watcher.on(other), 10)
    assert watcher.on("homeassistant/event/kitchen/flic_80_e4_da_70_a1_c9/config")[-1]["retain"] == 1
    assert watcher.on(other)[-1]["payload"] == {"event_type": "click", "btn_addr": OTHER_BUTTON, "was_queued": True}

    reader = "Virtual PCD 00 00"
    assert hub.publish(Event.of("SmartCardDetectedEvent", "smartcard", atr=ATR, reader=reader, uid=UID))
    assert hub.publish(Event.of("SmartCardRemovedEvent", "smartcard", atr=ATR, reader=reader, uid=UID))
    card_state = "pihub/kitchen/smartcard/Virtual_PCD_00_00/state"
    assert wait_for(lambda: len(watcher.on(card_state)) >= 2, 10), watcher.on(card_state)
    card_config = watcher.on("homeassistant/event/kitchen/smartcard_Virtual_PCD_00_00/config")[-1]
    assert card_config["retain"] == 1 and card_config["payload"]["event_types"] == ["detected", "removed"]
    assert "device_class" not in card_config["payload"] and card_config["payload"]["state_topic"] == card_state
    masked = {"reader": reader, "atr": "…00 6A", "uid": "…B2 C3"}
    assert [(m["retain"], m["payload"]) for m in watcher.on(card_state)] == [
        (0, {"event_type": "detected", **masked}), (0, {"event_type": "removed", **masked})]
    # the card number never reaches the broker whole, in any form, on any topic
    seen = "".join(watcher.lines)
    for secret in (UID, UID.replace(" ", ""), UID.replace(" ", "").lower(), "A1 B2", ATR[:20]):
        assert secret not in seen, secret


def test_event_entities_come_from_the_backends_lists_with_hostile_names_made_safe():
    from pihub.backends.ha_discovery import MAX_EVENT_NAME, event_entities

    devices = [
        {"name": "flic", "entities": [{"name": BUTTON, "kind": "flic_button", "status": "connected"},
                                      {"name": "x" * (MAX_EVENT_NAME + 1), "kind": "flic_button"},
                                      {"name": None, "kind": "flic_button"}]},
        {"name": "smartcard", "entities": [{"name": "ACS/ACR+ #1", "kind": "card_reader", "card": None}]},
        {"name": "gpio", "entities": [{"name": "lamp", "kind": "output", "value": 0}]},
        {"name": "midi", "entities": [{"name": "nanoKONTROL2", "kind": "midi_input"}]},
    ]
    ents = event_entities("my pi", devices, discovery_prefix="ha", state_prefix="ph")
    assert [(e.component, e.key) for e in ents] == [("event", ("flic", BUTTON)), ("event", ("smartcard", "ACS/ACR+ #1"))]
    flic, card = ents
    assert flic.config_topic == "ha/event/my_pi/flic_80_e4_da_70_a1_c0/config"
    assert flic.command_topic is None and "command_topic" not in flic.config
    assert flic.config["event_types"] == ["click", "double_click", "hold"] and flic.config["device_class"] == "button"
    assert card.config_topic == "ha/event/my_pi/smartcard_ACS_ACR___1/config"  # one level each, no wildcards
    assert card.state_topic == "ph/my_pi/smartcard/ACS_ACR___1/state" and card.config["name"] == "card reader ACS/ACR+ #1"
    assert card.config["event_types"] == ["detected", "removed"] and "device_class" not in card.config


def test_event_messages_name_the_entity_and_mask_card_numbers_whatever_the_event_carries():
    from pihub.backends.ha_discovery import MAX_EVENT_NAME, event_message

    assert event_message("FlicButtonDoubleClickEvent", {"btn_addr": BUTTON, "was_queued": 0, "time_diff": 0}) == (
        "flic", BUTTON, {"event_type": "double_click", "btn_addr": BUTTON, "was_queued": False})
    assert event_message("FlicButtonHoldEvent", {"btn_addr": BUTTON})[2]["event_type"] == "hold"
    # a press sequence or a connection change makes the button known, fires no HA event
    assert event_message("FlicButtonEvent", {"btn_addr": BUTTON, "sequence": ["ShortPressEvent"]}) == (
        "flic", BUTTON, None)
    assert event_message("FlicButtonConnectionEvent", {"btn_addr": BUTTON, "status": "connected"}) == (
        "flic", BUTTON, None)
    assert event_message("SmartCardRemovedEvent", {"atr": ATR, "reader": "R", "uid": None}) == (
        "smartcard", "R", {"event_type": "removed", "reader": "R", "atr": "…00 6A", "uid": None})
    # hostile card numbers: lower case without spaces, noise around the digits, a megabyte
    for uid, shown in (("04a1b2c3", "…B2 C3"), ("uid=04:A1:B2:C3!", "…B2 C3"), ("ZZ", "…"),
                       ("04 A1 " * 200_000 + "B2 C3", "…B2 C3")):
        payload = event_message("SmartCardDetectedEvent", {"atr": ATR, "reader": "R", "uid": uid})[2]
        assert payload["uid"] == shown, uid
    # no entity for a missing, non-text or overlong name, nor for MIDI or other events
    for type_name, args in (("SmartCardDetectedEvent", {"atr": ATR, "uid": UID}),
                            ("SmartCardDetectedEvent", {"atr": ATR, "reader": ["R"], "uid": UID}),
                            ("FlicButtonClickEvent", {"btn_addr": "a" * (MAX_EVENT_NAME + 1)}),
                            ("FlicButtonClickEvent", {"btn_addr": ""}),
                            ("MidiMessageEvent", {"device": "nanoKONTROL2", "message": [176, 1, 64]}),
                            ("GPIOEvent", {"pin": 17, "value": 1})):
        assert event_message(type_name, args) is None, (type_name, args)
