"""The MQTT backend through a private Mosquitto on loopback (hw-mocks/mqtt_broker.py).

``mqtt.publish_to_hook``: a hub ``kitchen`` has a hook on ``MQTTMessageEvent`` of topic
``bench/in`` whose action is ``mqtt.publish`` to ``bench/out``; a plain MqttBackend
publishes on ``bench/in`` and times until ``bench/out`` comes back: broker -> backend ->
ring -> matcher -> hook worker -> publish -> broker -> client, two broker hops. p50/p99 in ms.

``mqtt.publish_rate``: ``mqtt.publish`` called in a loop (QoS 0, 20-byte JSON) from one
thread; messages/s counted until a second client has received them all (none may be lost).

``mqtt.rpc_round_trip``: ``mqtt.execute`` on ``kitchen`` runs ``variable.get`` on the hub
``hall`` (token auth through the request gate) and returns its response: request publish,
broker, hall's gate and execute, response publish, broker, back. p50/p99 in ms.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import Context, percentile, result

_HW_MOCKS = Path(__file__).resolve().parents[1] / "hw-mocks"
_USERS = {"kitchen": "kitchen-pw", "hall": "hall-pw", "bench": "bench-pw"}


def _broker_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_mqtt_broker", _HW_MOCKS / "mqtt_broker.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hub(directory: Path, device: str, port: int, extra: str = "") -> Any:
    from pihub import config as cfg
    from pihub.hub import Hub, known_sections

    section = {"port": port, "username": device, "password": _USERS[device], "timeout": 10}
    path = directory / f"{device}.yaml"
    path.write_text(f"device_id: {device}\nworkdir: {directory / device}\nhttp: {{enabled: false}}\n"
                    f"mqtt: {json.dumps(section)}\n{extra}", encoding="utf-8")
    hub = Hub(cfg.load(str(path), sections=known_sections()))
    hub.start(serve_web=False)
    return hub


def _wait(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the MQTT bench rig")
        time.sleep(0.005)


def _connected(backend: Any) -> bool:
    return bool(backend.broker_status()["state"] == "connected")


def bench_mqtt(ctx: Context) -> Iterator[dict[str, Any]]:
    """publish -> hook -> publish latency, and mqtt.execute round trip, in ms."""
    from pihub.backends.mqtt import MqttBackend

    n = ctx.scale(300, 30)
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        with _broker_module().Broker(directory / "broker", _USERS, tls=False) as broker:
            hook = ("event.hook.echo:\n  if: {type: MQTTMessageEvent, topic: bench/in}\n"
                    "  then:\n    - {action: mqtt.publish, args: {topic: bench/out, msg: '${msg}'}}\n")
            kitchen = _hub(directory, "kitchen", broker.port, hook)
            hall = _hub(directory, "hall", broker.port)
            got = threading.Event()
            client = MqttBackend({"port": broker.port, "username": "bench", "password": _USERS["bench"],
                                  "topics": ["bench/out"]})
            client.validate_environment()
            client.open(lambda e: got.set() or True)
            try:
                kitchen.backends["mqtt"].subscribe("bench/in")
                for b in (kitchen.backends["mqtt"], hall.backends["mqtt"], client):
                    _wait(lambda b=b: _connected(b))
                hook_ms: list[float] = []
                for i in range(n + 10):  # the first 10 warm up (and wait out the subscription)
                    got.clear()
                    t0 = time.perf_counter()
                    client.publish("bench/in", i)
                    if not got.wait(2.0 if i < 10 else 10.0):
                        if i < 10:
                            continue
                        raise RuntimeError("the echo hook did not answer")
                    if i >= 10:
                        hook_ms.append((time.perf_counter() - t0) * 1000)
                rate_n = ctx.scale(20000, 2000)
                received = [0]
                probed = threading.Event()
                all_in = threading.Event()

                def count(event: Any) -> bool:
                    if event.args["topic"] != "bench/rate":
                        probed.set()
                        return True
                    received[0] += 1
                    if received[0] == rate_n:
                        all_in.set()
                    return True

                sink = MqttBackend({"port": broker.port, "username": "bench", "password": _USERS["bench"],
                                    "client_id": "bench-sink", "topics": ["bench/rate", "bench/probe"]})
                sink.validate_environment()
                sink.open(count)
                _wait(lambda: _connected(sink))
                pub = kitchen.backends["mqtt"]
                while not probed.wait(0.01):  # the sink's subscriptions are active once a probe arrives
                    pub.publish("bench/probe", 0)
                t0 = time.perf_counter()
                for i in range(rate_n):
                    pub.publish("bench/rate", {"i": i, "v": 21.5})
                ok = all_in.wait(60)
                rate = rate_n / (time.perf_counter() - t0)
                sink.close()
                if not ok:
                    raise RuntimeError(f"only {received[0]} of {rate_n} messages arrived")
                hall.auth.add_user("owner", "a long enough password", scope="admin")
                token = hall.auth.create_token("owner", name="bench", scopes=("control",))[0]
                rpc_ms: list[float] = []
                for i in range(n + 10):
                    t0 = time.perf_counter()
                    resp = kitchen.registry.execute("mqtt.execute", {"target": "hall", "action": "variable.get",
                                                                     "args": {"name": "x"}, "token": token})
                    if resp.errors:
                        raise RuntimeError(f"mqtt.execute failed: {resp.errors}")
                    if i >= 10:
                        rpc_ms.append((time.perf_counter() - t0) * 1000)
            finally:
                client.close()
                kitchen.stop()
                hall.stop()
    hook_ms.sort()
    rpc_ms.sort()
    note = "loopback mosquitto 2.0.11, QoS 0, system clock"
    yield result("mqtt.publish_to_hook", "p50_ms", percentile(hook_ms, 50), "ms", better="lower", n=n, note=note)
    yield result("mqtt.publish_to_hook", "p99_ms", percentile(hook_ms, 99), "ms", better="lower", n=n, note=note)
    yield result("mqtt.publish_rate", "messages_per_s", rate, "messages/s", better="higher", n=rate_n, note=note)
    yield result("mqtt.rpc_round_trip", "p50_ms", percentile(rpc_ms, 50), "ms", better="lower", n=n, note=note)
    yield result("mqtt.rpc_round_trip", "p99_ms", percentile(rpc_ms, 99), "ms", better="lower", n=n, note=note)


BENCHES = [bench_mqtt]
