"""One contract suite, run over every backend registered under ``pihub.backends``.

Each backend provides a ``contract_config`` (a config that works on this machine's rig)
in CONTRACT_CONFIGS below, or the suite fails: a new backend cannot land untested.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pihub_testing import load_hw_mock, need_pcsc_stack, need_tool

from pihub.backends.base import Backend, BackendStatus, BackendThread, RequestChannel, emit_counted
from pihub.clock import ManualClock
from pihub.hub import backend_classes
from pihub.messages import parse

#: a working config per backend on the mock rig, and how to make it emit one event.
CONTRACT_CONFIGS = {
    "mock": ({"script": [{"after": 0.0, "event": {"type": "GPIOEvent", "pin": 1, "value": 1}}]}, None),
    "adc": ({"driver": "mock", "poll_interval": 0.01, "channels": {0: {"name": "light"}}}, None),
    # pyserial's loop:// (what is written comes back): connecting emits SerialDeviceEvent,
    # and the on_connect line comes back as a reading. The real-pty tests are in
    # test_serial_sensor.py, with the hw-mocks simulator.
    "serial": ({"device": "loop://", "read_timeout": 0.1, "on_connect": [{"temperature": 21.5}]}, None),
    # loopback: the output's initial high, jumpered to the input, is a real edge at open()
    "gpio": ({"pin_factory": "mock", "inputs": {"sense": {"pin": 17}},
              "outputs": {"drive": {"pin": 27, "initial": True}}, "mock_wiring": {27: 17}}, None),
    # real pcscd + vpcd with the virtual card already inserted (CONTRACT_RIGS): opening
    # detects it. The card/reader/pcscd tests are in test_smartcard.py.
    "smartcard": ({"retry_interval": 0.1}, None),
    # the fake flicd (CONTRACT_RIGS; it fills in its port): the button's channel becoming
    # Ready emits FlicButtonConnectionEvent. The press tests are in test_flic.py.
    "flic": ({"buttons": ["80:e4:da:70:a1:c0"]}, None),
    # a private jackd + the controller simulator (CONTRACT_RIGS): opening the input emits
    # MidiDeviceConnectedEvent. The message/output/throttle tests are in test_midi.py.
    "midi": ({"api": "jack", "inputs": ["slider"]}, None),
    # ffmpeg as the camera (CONTRACT_RIGS checks it is installed): stream_on_start captures at
    # open, which emits CameraRecordingStartedEvent. The stream/client tests are in test_camera.py.
    "camera.pi": ({"driver": "mock", "listen_port": 0, "resolution": [320, 240], "stream_on_start": True}, None),
    # a private mosquitto with a retained message (CONTRACT_RIGS; it fills in the port and
    # user): subscribing at connect delivers it, an MQTTMessageEvent. The broker, TLS and
    # RPC tests are in test_mqtt.py.
    "mqtt": ({"topics": ["test/contract"]}, None),
    # a request channel: a client posts an event after open (REQUEST_POKES), which the
    # channel hands to its gate with its own emit. The auth/framing tests are in test_tcp.py.
    "tcp": ({"port": 0}, None),
    # a real redis-server (CONTRACT_RIGS fills in its socket); a client pushes an event.
    # The auth/junk/restart tests are in test_redis_queue.py.
    "redis_queue": ({"unix_socket_path": "/nonexistent-filled-in-by-the-rig", "poll_timeout": 0.2}, None),
    # a temp dir (CONTRACT_RIGS fills it in) where the rig creates files until the test ends.
    # The event/coalescing/missing-path tests are in test_file_watch.py.
    "file_watch": ({"paths": ["/nonexistent-filled-in-by-the-rig"]}, None),
    # a local HTTP server serving a one-entry feed (CONTRACT_RIGS fills in its URL): the first
    # poll at open announces it. The dedup/304/broken-feed tests are in test_rss.py.
    "rss": ({"feeds": ["http://127.0.0.1:1/filled-in-by-the-rig"], "timeout": 2}, None),
    # a real mpd with a null output (CONTRACT_RIGS fills in its port): the state at the first
    # connection is announced, a MusicStopEvent. The player/search/restart tests are in test_mpd.py.
    "music.mpd": ({"host": "127.0.0.1", "port": 1, "retry_interval": 0.05}, None),
}
BAD_CONFIGS = {
    "mock": {"script": [{"after": -1, "event": {"type": "GPIOEvent"}}]},
    "adc": {"driver": "mock", "channels": {9: {"name": "light"}}},
    "serial": {"device": "/dev/ttyACM0", "format": "xml"},
    "gpio": {"pin_factory": "mock", "inputs": {"doorbell": {"pin": "GPIO99"}}},
    "smartcard": {"atr": ["3B 8G"]},
    "flic": {"latency_mode": "fast"},
    "midi": {"api": "coremidi"},
    "camera.pi": {"driver": "mock", "rotation": 90},
    "mqtt": {"qos": 3},
    "tcp": {"port": 70000},
    "redis_queue": {"redis_args": {"decode_responses": True}},
    "file_watch": {"paths": [{"path": "/tmp", "events": ["rename"]}]},
    "rss": {"feeds": ["file:///etc/passwd"]},
    "music.mpd": {"port": 66000},
}


def _smartcard_rig() -> contextlib.AbstractContextManager[object]:
    need_pcsc_stack()
    return load_hw_mock("virtual_card").VirtualCardProcess(inserted=True)


@contextlib.contextmanager
def _flic_rig() -> Iterator[None]:
    with load_hw_mock("fake_flicd").FakeFlicd(["80:e4:da:70:a1:c0"]) as flicd:
        CONTRACT_CONFIGS["flic"][0]["port"] = flicd.port  # a free port, known only now
        yield


@contextlib.contextmanager
def _midi_rig() -> Iterator[None]:
    need_tool(shutil.which("jackd") is not None, "jackd is not installed (apt-get install jackd2)")
    mock = load_hw_mock("midi_controller")
    with mock.private_jack(f"pihubcontract{os.getpid()}"), mock.MidiController("controller", "slider"):
        yield


#: backends whose contract config needs an outside service: name -> a context manager
#: factory that starts it (and stops it on exit) around each of the backend's tests.
@contextlib.contextmanager
def _camera_rig() -> Iterator[None]:
    need_tool(shutil.which("ffmpeg") is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
    yield


@contextlib.contextmanager
def _mqtt_rig() -> Iterator[None]:
    import subprocess
    import tempfile

    for tool in ("mosquitto", "mosquitto_passwd", "mosquitto_pub"):
        need_tool(shutil.which(tool) is not None or os.path.exists(f"/usr/sbin/{tool}"),
                  f"{tool} is not installed (apt-get install mosquitto mosquitto-clients)")
    with tempfile.TemporaryDirectory() as d, load_hw_mock("mqtt_broker").Broker(d, {"u": "p"}, tls=False) as b:
        subprocess.run(["mosquitto_pub", "-p", str(b.port), "-u", "u", "-P", "p", "-t", "test/contract", "-r",
                        "-q", "1", "-m", "retained"], check=True, timeout=10)
        CONTRACT_CONFIGS["mqtt"][0].update(port=b.port, username="u", password="p")
        yield


@contextlib.contextmanager
def _file_watch_rig() -> Iterator[None]:
    with tempfile.TemporaryDirectory() as d:
        CONTRACT_CONFIGS["file_watch"][0]["paths"] = [d]
        stop = threading.Event()

        def touch() -> None:  # a stimulus, not a wait: a new file every 20 ms until the test ends
            i = 0
            while not stop.wait(0.02):
                Path(d, f"f{i}").write_text("")
                i += 1

        t = threading.Thread(target=touch, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()


@contextlib.contextmanager
def _rss_rig() -> Iterator[None]:
    feed = (b'<rss version="2.0"><channel><title>T</title><item><guid>1</guid><title>one</title></item>'
            b'</channel></rss>')

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(feed)))
            self.end_headers()
            self.wfile.write(feed)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    CONTRACT_CONFIGS["rss"][0]["feeds"] = [f"http://127.0.0.1:{server.server_address[1]}/feed.xml"]
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _redis_rig() -> Iterator[None]:
    from test_redis_queue import RedisServer

    need_tool(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="pihub-contract-redis-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            CONTRACT_CONFIGS["redis_queue"][0]["unix_socket_path"] = str(server.sock)
            yield
        finally:
            server.stop()


@contextlib.contextmanager
def _mpd_rig() -> Iterator[None]:
    for tool in ("mpd", "mpc", "ffmpeg"):
        need_tool(shutil.which(tool) is not None, f"{tool} is not installed (apt-get install mpd mpc ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="pihub-contract-mpd-") as d, load_hw_mock("mpd_server").MpdServer(d) as s:
        CONTRACT_CONFIGS["music.mpd"][0]["port"] = s.port
        yield


CONTRACT_RIGS = {"music.mpd": _mpd_rig, "redis_queue": _redis_rig, "smartcard": _smartcard_rig, "flic": _flic_rig, "midi": _midi_rig, "camera.pi": _camera_rig,
                 "mqtt": _mqtt_rig, "file_watch": _file_watch_rig, "rss": _rss_rig}


@pytest.fixture(autouse=True)
def _contract_rig(request: pytest.FixtureRequest) -> Iterator[None]:
    callspec = getattr(request.node, "callspec", None)
    rig = CONTRACT_RIGS.get(callspec.params.get("name")) if callspec else None
    if rig is None:
        yield
        return
    with rig():
        yield

BACKENDS = sorted(backend_classes())


def _contract_gate(message, *, channel, emit, peer="", token=None, trusted=False, on_accepted=None):
    """Stands in for the hub's request gate (pihub.ingress): accepts the sender, emits a
    posted event (and, as the gate does for an event, returns None: nothing to answer)."""
    if on_accepted is not None:
        on_accepted()
    event = parse(message)
    event.source = channel
    emit(event)
    return None


def _tcp_poke(backend: Backend) -> None:
    import json
    import socket

    with socket.create_connection(backend.address, timeout=5) as s:
        s.sendall(json.dumps({"type": "event", "args": {"type": "CustomEvent", "subtype": "contract"}}).encode()
                  + b"\n")
        assert s.recv(100) == b"{}\n"


#: request channels: how a client makes the open channel emit one event
def _redis_poke(backend: Backend) -> None:
    import json

    import redis

    client = redis.Redis(unix_socket_path=backend.config["unix_socket_path"])
    client.rpush(backend.config["queue"], json.dumps({"type": "event", "args": {"type": "CustomEvent",
                                                                                  "subtype": "contract"}}))
    client.close()


REQUEST_POKES = {"tcp": _tcp_poke, "redis_queue": _redis_poke}


def test_every_backend_has_a_contract_config():
    assert set(BACKENDS) <= set(CONTRACT_CONFIGS), set(BACKENDS) - set(CONTRACT_CONFIGS)


@pytest.mark.parametrize("name", BACKENDS)
def test_open_emit_close(name):
    cls = backend_classes()[name]
    assert issubclass(cls, Backend) and cls.name == name
    config, _ = CONTRACT_CONFIGS[name]
    clock = ManualClock()
    backend = cls(config, clock=clock)
    assert backend.status == BackendStatus.CONFIGURED
    backend.validate_environment()
    got = []
    ev = threading.Event()

    def emit(event):
        got.append(event)
        ev.set()
        return True

    if isinstance(backend, RequestChannel):
        backend.bind_requests(_contract_gate, "contract")
    before = set(threading.enumerate())
    backend.open(emit)
    started = set(threading.enumerate()) - before
    if name in REQUEST_POKES:
        REQUEST_POKES[name](backend)
    assert backend.status == BackendStatus.RUNNING
    assert ev.wait(5), f"{name} emitted nothing"
    assert got[0].source == name
    backend.close()
    assert backend.status == BackendStatus.STOPPED
    n = len(got)
    # the rig's simulators (hw-mocks, threads named fake-*) serve the backend's connections:
    # theirs end when they see the close, a moment later; the backend's must be gone now
    assert [t.name for t in started if t.is_alive() and not t.name.startswith("fake-")] == [], (
        "threads left running after close")
    clock.advance(3600)  # every window, interval and back-off ends: what was left armed would fire now
    assert len(got) == n, "events after close"
    backend.close()  # idempotent


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_config_is_refused_by_its_schema(name):
    cls = backend_classes()[name]
    assert cls.config_schema is not None
    _, problems = cls.config_schema.validate(BAD_CONFIGS[name], (name,))
    bad_nested = not problems
    if bad_nested:  # nested errors are the backend's to raise
        with pytest.raises(ValueError):
            cls(BAD_CONFIGS[name])


@pytest.mark.parametrize("name", BACKENDS)
def test_status_is_described(name):
    backend = backend_classes()[name](CONTRACT_CONFIGS[name][0])
    d = backend.describe_status()
    assert d == {"name": name, "status": "configured", "error": None}


@pytest.mark.parametrize("name", BACKENDS)
def test_degraded_and_recovered_reports_reach_the_status_listener(name):
    backend = backend_classes()[name](CONTRACT_CONFIGS[name][0])
    calls = []
    assert not backend.report_degraded("device missing")  # not open: nothing to degrade
    backend.open(lambda event: True)
    try:
        backend.bind_status_listener(lambda b: calls.append((b.status, b.error)))
        assert calls == [(BackendStatus.RUNNING, None)]  # the status at binding time
        assert backend.report_degraded("device /dev/x missing; retrying every 1 s")
        assert not backend.report_degraded("device /dev/x missing; retrying every 1 s")  # a repeat
        d = backend.describe_status()  # a backend may add its own details (flic: buttons)
        assert {k: d[k] for k in ("name", "status", "error")} == {
            "name": name, "status": "degraded", "error": "device /dev/x missing; retrying every 1 s"}
        assert backend.report_degraded("device /dev/x: permission denied")  # a new reason is a change
        assert backend.report_recovered()
        assert not backend.report_recovered()
        assert calls[1:] == [(BackendStatus.DEGRADED, "device /dev/x missing; retrying every 1 s"),
                             (BackendStatus.DEGRADED, "device /dev/x: permission denied"),
                             (BackendStatus.RUNNING, None)]
        assert backend.report_degraded("gone again")
    finally:
        backend.close()
    assert backend.status == BackendStatus.STOPPED  # close ends a degraded backend too
    assert not backend.report_recovered() and not backend.report_degraded("after close")
    assert backend.status == BackendStatus.STOPPED and len(calls) == 5


def test_a_failing_status_listener_does_not_break_the_reporting_backend(caplog):
    backend = backend_classes()["mock"](CONTRACT_CONFIGS["mock"][0])
    backend.open(lambda event: True)
    try:
        backend.bind_status_listener(lambda b: 1 / 0)
        assert backend.report_degraded("device missing")
        assert backend.status == BackendStatus.DEGRADED
        assert "status listener failed" in caplog.text
    finally:
        backend.close()


def test_emit_counted_counts_taken_and_dropped_events_and_does_nothing_before_open() -> None:
    from pihub.events import Event

    counts = {"events": 0, "dropped_events": 0}
    taken: list[Event] = []
    event = Event.of("CustomEvent", subtype="x")
    assert emit_counted(lambda e: taken.append(e) is None, event, counts) is True
    assert emit_counted(lambda e: False, event, counts) is False  # the bus was full
    assert emit_counted(None, event, counts) is False  # not open: not counted either way
    assert taken == [event]
    assert counts == {"events": 1, "dropped_events": 1}


class _CrashingLoop(Backend):
    """A backend whose reader loop raises what it did not expect."""

    name = "crashing_loop"

    def open(self, emit):
        self.status = BackendStatus.RUNNING
        self._thread = BackendThread("pihub-crashing", self._run)
        self._thread.start()

    def _run(self, stopping):
        raise ValueError("unexpected byte\nforged line")

    def close(self) -> None:
        self._thread.stop(5)
        self.status = BackendStatus.STOPPED


def test_a_loop_that_raises_is_logged_once_and_its_backend_reported_failed(caplog):
    backend = _CrashingLoop({})
    calls = []
    backend.bind_status_listener(lambda b: calls.append((b.status, b.error)))
    with caplog.at_level(logging.ERROR):
        backend.open(lambda event: True)
        backend._thread.join(5)
    assert not backend._thread.is_alive()
    reason = "thread pihub-crashing ended: ValueError: unexpected byte\\nforged line"
    assert (backend.status, backend.error) == (BackendStatus.FAILED_RUNTIME, reason)
    assert calls[-1] == (BackendStatus.FAILED_RUNTIME, reason)
    logged = [r for r in caplog.records if "pihub-crashing ended on an unexpected error" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    backend.close()
    assert backend.status == BackendStatus.STOPPED
