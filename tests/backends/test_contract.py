"""One contract suite, run over every backend registered under ``pihub.backends``.

Each backend provides a ``contract_config`` (a config that works on this machine's rig)
in CONTRACT_CONFIGS below, or the suite fails: a new backend cannot land untested.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator

import pytest
from pihub_testing import load_hw_mock, need_pcsc_stack, need_tool

from pihub.backends.base import Backend, BackendStatus
from pihub.clock import ManualClock
from pihub.hub import backend_classes

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
}
BAD_CONFIGS = {
    "mock": {"script": [{"after": -1, "event": {"type": "GPIOEvent"}}]},
    "adc": {"driver": "mock", "channels": {9: {"name": "light"}}},
    "serial": {"device": "/dev/ttyACM0", "format": "xml"},
    "gpio": {"pin_factory": "mock", "inputs": {"doorbell": {"pin": "GPIO99"}}},
    "smartcard": {"atr": ["3B 8G"]},
    "flic": {"latency_mode": "fast"},
    "midi": {"api": "coremidi"},
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
CONTRACT_RIGS = {"smartcard": _smartcard_rig, "flic": _flic_rig, "midi": _midi_rig}


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

    before = set(threading.enumerate())
    backend.open(emit)
    started = set(threading.enumerate()) - before
    assert backend.status == BackendStatus.RUNNING
    assert ev.wait(5), f"{name} emitted nothing"
    assert got[0].source == name
    backend.close()
    assert backend.status == BackendStatus.STOPPED
    n = len(got)
    assert [t.name for t in started if t.is_alive()] == [], "threads left running after close"
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
