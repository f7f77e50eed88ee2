"""The hub end to end on the mock rig: config -> backend edge -> ring -> matcher -> action."""

from __future__ import annotations

import pytest
from pihub_testing import finishes, wait_for

from pihub.backends.base import Backend, BackendStatus
from pihub.errors import BackendUnavailable, ConfigError
from pihub.events import Event
from pihub.messages import Request

RIG = """
mock:
  outputs: {light: false}
event.hook.press:
  if: {type: GPIOEvent, pin: 17, value: 1}
  then:
    - action: mock.set
      args: {name: light, value: true}
    - action: variable.set
      args: {last_pin: "${pin}"}
event.hook.release:
  if: {type: GPIOEvent, pin: 17, value: 0}
  then:
    - action: mock.set
      args: {name: light, value: false}
"""




def test_edge_to_action_through_the_mock_backend(make_hub):
    hub = make_hub(RIG)
    mock = hub.backends["mock"]
    assert mock.status == BackendStatus.RUNNING
    assert hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 1}).ok
    assert wait_for(lambda: mock.outputs["light"] is True)
    assert hub.flush()
    # hook context: ${pin} keeps its int type through the exact-template rule
    assert hub.execute("variable.get", {"name": "last_pin"}).output == {"last_pin": 17}
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 0})
    assert wait_for(lambda: mock.outputs["light"] is False)


def test_unmatched_events_fire_nothing(make_hub):
    hub = make_hub(RIG)
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 4, "value": 1})
    assert hub.flush()
    assert hub.backends["mock"].outputs["light"] is False
    assert hub.dispatcher.stats.hooks_fired == 0


def test_variables_survive_a_restart(make_hub):
    hub = make_hub(RIG)
    assert hub.execute("variable.set", {"colour": "blue"}).ok
    hub.stop()
    hub2 = make_hub(RIG)
    assert hub2.execute("variable.get", {"name": "colour"}).output == {"colour": "blue"}


def test_stop_loses_nothing_in_flight(make_hub):
    hub = make_hub("""
        engine: {ring_capacity: 8192, queue_size: 100000}
        event.hook.count:
          if: {type: CustomEvent, subtype: tick}
          then:
            - action: logger.debug
              args: {msg: tick}
    """)
    n = 3000
    accepted = sum(hub.publish(Event.of("CustomEvent", subtype="tick")) for _ in range(n))
    hub.stop()
    assert accepted == n
    assert hub.pool.completed >= n  # every hook job ran before stop returned
    assert hub.dispatcher.stats.hooks_fired == n


class _Unavailable(Backend):
    name = "unavailable"

    def validate_environment(self) -> None:
        raise BackendUnavailable("no /dev/gpiochip0 on this machine")

    def open(self, emit):  # pragma: no cover - never reached
        raise AssertionError

    def close(self) -> None:
        pass


class _Crashing(Backend):
    name = "crashing"

    def open(self, emit):
        raise OSError("device vanished")

    def close(self) -> None:
        pass


def test_failed_backends_are_marked_and_the_hub_runs_on(make_hub):
    hub = make_hub(RIG, start=False)
    for cls in (_Unavailable, _Crashing):
        b = cls({})
        hub.backends[b.name] = b
    statuses = []
    hub.dispatcher.add_listener(
        lambda e: statuses.append((e.args["backend"], e.args["status"])) if e.type.name == "BackendStatusEvent"
        else None)
    hub.start()
    assert hub.backends["unavailable"].status == BackendStatus.FAILED_ENVIRONMENT
    assert "gpiochip0" in hub.backends["unavailable"].error
    assert hub.backends["crashing"].status == BackendStatus.FAILED_RUNTIME
    assert "device vanished" in hub.backends["crashing"].error
    assert hub.flush()
    assert ("unavailable", str(BackendStatus.FAILED_ENVIRONMENT)) in statuses
    assert ("mock", str(BackendStatus.RUNNING)) in statuses
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 1})
    assert wait_for(lambda: hub.backends["mock"].outputs["light"] is True)


def test_bad_hooks_and_procedures_are_all_reported_located(make_hub, tmp_path):
    with pytest.raises(ConfigError) as ei:
        make_hub("""
            event.hook.a:
              if: {type: GPIOEvnt}
              then: [{action: logger.info, args: {msg: x}}]
            event.hook.b:
              if: {type: GPIOEvent, value: {$gtt: 1}}
              then: [{action: logger.info, args: {msg: x}}]
            procedure.p:
              - fi ${x}: []
        """, start=False)
    text = str(ei.value)
    assert "GPIOEvnt" in text and "GPIOEvent" in text
    assert "$gtt" in text
    assert "fi ${x}" in text
    assert len(ei.value.problems) == 3
    assert all(p.file.endswith("config.yaml") and p.line > 0 for p in ei.value.problems)


def test_procedure_call_from_execute(make_hub):
    hub = make_hub("""
        procedure.double(x):
          - return: ${x * 2}
    """)
    assert hub.execute("procedure.double", {"x": 21}).output == 42
    r = hub.execute("procedure.doubel", {"x": 1})
    assert r.errors and "did you mean 'double'" in r.errors[0]


def test_a_request_for_another_device_never_runs_here(make_hub):
    hub = make_hub("device_id: kitchen\nmock: {}\n")
    r = hub.execute(Request(action="mock.set", args={"name": "lamp", "value": True}, target="hall"))
    assert r.errors == ["target 'hall' is not this device ('kitchen'), and no mqtt backend is configured to reach it"]
    assert hub.execute("mock.get", {"name": "lamp"}).output is None  # not run here
    mine = hub.execute(Request(action="mock.set", args={"name": "lamp", "value": True}, target="kitchen"))
    assert mine.errors == [] and hub.execute("mock.get", {"name": "lamp"}).output is True


def test_webhook_replies_with_the_hooks_result(make_hub):
    hub = make_hub("""
        event.hook.ping:
          if: {type: WebhookEvent, hook: ping}
          then:
            - return: '${ {"pong": data["n"] + 1} }'
    """)
    ev = Event.of("WebhookEvent", hook="ping", method="POST", args={}, data={"n": 41}, headers={})
    resp = hub.webhook(ev, timeout=5)
    assert resp.ok and resp.output == {"pong": 42}
    other = Event.of("WebhookEvent", hook="nobody", method="GET", args={}, data=None, headers={})
    assert hub.webhook(other, timeout=5) is None


def test_a_webhook_matches_its_hooks_once(make_hub, monkeypatch):
    """The dispatcher's (native + plan) match decides the replying hook; Hub.webhook runs no
    condition of its own (it used to match every hook in Python first)."""
    from pihub.engine.conditions import Condition

    hub = make_hub("""
        event.hook.ping:
          if: {type: WebhookEvent, hook: ping, data: {n: {$gt: 0}}}
          then:
            - return: '${ {"pong": data["n"]} }'
    """)
    calls = []
    real = Condition.match

    def counting(self, event):
        calls.append(event.type.name)
        return real(self, event)

    monkeypatch.setattr(Condition, "match", counting)
    ev = Event.of("WebhookEvent", hook="ping", method="POST", args={}, data={"n": 1}, headers={})
    assert hub.webhook(ev, timeout=5).output == {"pong": 1}
    assert calls == []


def test_backends_run_on_the_hubs_clock(write_config, load_config):
    """A mock script step 'after: 5' waits 5 s of the hub's clock: a test moves it instead of sleeping."""
    from pihub_testing import wait_for

    from pihub.clock import ManualClock
    from pihub.hub import Hub

    clock = ManualClock()
    hub = Hub(load_config(write_config("""
        mock:
          script:
            - {after: 5, event: {type: CustomEvent, subtype: later}}
    """)), clock=clock)
    hub.start()
    try:
        mock = hub.backends["mock"]
        assert mock.clock is clock
        assert wait_for(lambda: clock.waiters == 1)  # the script thread waits on the clock
        clock.advance(4.9)
        assert not [h for h in mock.history() if h["kind"] == "event"]
        clock.advance(0.1)
        assert wait_for(lambda: [h for h in mock.history() if h["kind"] == "event"])
    finally:
        hub.stop()


def test_a_third_party_backend_without_a_clock_parameter_still_loads():
    from pihub.clock import ManualClock
    from pihub.hub import _construct

    class Old(Backend):
        name = "old"

        def __init__(self, config):
            super().__init__(config)

    backend = _construct(Old, {}, ManualClock())
    assert backend.config == {}


def test_hooks_that_only_drive_outputs_run_on_the_dispatcher(make_hub):
    hub = make_hub(RIG + """
event.hook.via_procedure:
  if: {type: GPIOEvent, pin: 18}
  then:
    - action: procedure.light_on
procedure.light_on:
  - action: mock.set
    args: {name: light, value: true}
""")
    # press also writes a variable (a SQLite commit): it goes to a worker
    assert {h.name for h in hub.dispatcher.inline} == {"release"}
    mock = hub.backends["mock"]
    for value in (1, 0):
        assert hub.publish(Event.of("GPIOEvent", pin=17, value=value))
        assert hub.flush()
    assert mock.outputs["light"] is False
    st = hub.dispatcher.stats
    assert (st.hooks_fired, st.hooks_inline) == (2, 1)


def test_the_inline_budget_and_overflow_interval_come_from_the_engine_section(make_hub):
    hub = make_hub(RIG + "engine: {inline_budget: 0.002, overflow_check: 2.5}\n")
    assert (hub.dispatcher.inline_budget, hub.dispatcher.overflow_check) == (0.002, 2.5)
    assert hub.publish(Event.of("GPIOEvent", pin=17, value=0))
    assert hub.flush()
    dispatcher = hub.status()["dispatcher"]
    assert (dispatcher["hooks_inline"], dispatcher["inline_overruns"], dispatcher["inline_deferred"],
            dispatcher["inline_failed"]) == (1, 0, 0, 0)


@pytest.mark.parametrize("key, value", [("inline_budget", 0), ("inline_budget", 2), ("overflow_check", 0.001)])
def test_engine_timings_out_of_range_are_config_errors(make_hub, key, value):
    with pytest.raises(ConfigError, match=rf"engine\.{key}"):
        make_hub(RIG + f"engine: {{{key}: {value}}}\n")


def test_flush_waits_for_a_running_inline_hook(make_hub):
    hub = make_hub(RIG)
    mock = hub.backends["mock"]
    with mock._lock:  # mock.set waits for it: the inline "release" hook cannot finish
        mock.outputs["light"] = True
        assert hub.publish(Event.of("GPIOEvent", pin=17, value=0))
        assert hub.flush(timeout=0.05) is False
    assert hub.flush()
    assert mock.outputs["light"] is False
    assert hub.dispatcher.stats.hooks_inline == 1


def test_flush_follows_events_that_pool_jobs_publish(make_hub):
    hub = make_hub("""
        mock:
          outputs: {light: false}
        event.hook.first:
          if: {type: CustomEvent, subtype: first}
          then:
            - action: mock.set
              args: {name: light, value: false}
            - action: variable.set
              args: {step: 1}
            - action: event.fire
              args: {type: CustomEvent, subtype: second}
        event.hook.second:
          if: {type: CustomEvent, subtype: second}
          then:
            - action: variable.set
              args: {step: 2}
            - action: mock.set
              args: {name: light, value: true}
    """)
    mock = hub.backends["mock"]
    assert not {h.name for h in hub.dispatcher.inline}  # both run on the pool
    with mock._lock:  # the first hook's job waits in mock.set
        assert hub.publish(Event.of("CustomEvent", subtype="first"))
        assert hub.flush(timeout=0.05) is False
    assert hub.flush()  # the first job, its event, the second job
    assert mock.outputs["light"] is True
    assert hub.execute("variable.get", {"name": "step"}).output == {"step": 2}


def test_flush_without_a_dispatcher_fails_at_once_when_events_wait(make_hub):
    hub = make_hub(RIG, start=False)
    assert hub.flush()  # nothing queued: nothing to wait for
    assert hub.publish(Event.of("GPIOEvent", pin=17, value=1))
    # nothing would ever take the event: no waiting out the (hour-long) timeout
    assert finishes(lambda: hub.flush(timeout=3600), what="flush") is False
    hub.start()
    assert hub.flush()
    assert hub.backends["mock"].outputs["light"] is True


def test_webhook_replies_from_inline_and_pool_hooks_alike(make_hub):
    hub = make_hub("""
        mock: {}
        event.hook.inline:
          if: {type: WebhookEvent, hook: fast}
          then:
            - action: mock.set
              args: {name: door, value: '${data["open"]}'}
            - return: '${ {"door": output["value"]} }'
        event.hook.pooled:
          if: {type: WebhookEvent, hook: stored}
          then:
            - action: variable.set
              args: {door: '${data["open"]}'}
            - return: '${ {"door": output["door"]} }'
    """)
    assert {h.name for h in hub.dispatcher.inline} == {"inline"}
    for name in ("fast", "stored"):
        ev = Event.of("WebhookEvent", hook=name, method="POST", args={}, data={"open": True}, headers={})
        resp = hub.webhook(ev, timeout=5)
        assert resp.ok and resp.output == {"door": True}, name
    assert hub.dispatcher.stats.hooks_inline == 1


# ------------------------------------------------- what the web layer reads (pihub.web.WebHub)
def test_ready_follows_start_stop_and_the_dispatcher(make_hub, monkeypatch):
    hub = make_hub(RIG, start=False)
    assert hub.ready is False
    hub.start()
    assert hub.ready is True
    with monkeypatch.context() as m:  # a dispatcher thread that died
        m.setattr(type(hub.dispatcher), "running", property(lambda self: False))
        assert hub.ready is False
    hub.stop()
    assert hub.ready is False


def test_metrics_is_a_typed_snapshot(make_hub):
    import dataclasses

    from pihub import __version__
    from pihub.hub import HubMetrics

    hub = make_hub(RIG)
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 1})
    assert hub.flush()
    m = hub.metrics()
    assert isinstance(m, HubMetrics) and m.version == __version__ and m.device_id == hub.device_id
    assert m.bus["backend:mock"].published >= 1 and m.dispatch.hooks_fired >= 1
    assert sum(m.latency.counts) == m.latency.n >= 1 and m.latency.bounds_us[-1] == float("inf")
    assert m.pool.workers == hub.pool.workers and m.pool.completed >= 1
    assert m.websocket_clients == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.version = "x"  # type: ignore[misc]
    fired = m.dispatch.hooks_fired
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 0})
    assert hub.flush()
    assert m.dispatch.hooks_fired == fired  # a snapshot: later events do not change it
    assert hub.metrics().dispatch.hooks_fired > fired
    hub.stop()
    assert hub.metrics().bus["backend:mock"].published == 2  # a stopped hub still reports its run


def test_regex_matches_given_up_are_in_metrics_and_status(make_hub):
    from pihub.events import CATALOGUE, Event

    hub = make_hub("""
        event.hook.slow:
          if: {type: CustomEvent, text: {$regex: "(.*a){7}$"}}
          then: []
    """)
    before = hub.metrics().regex_timeouts
    hub.publish(Event(CATALOGUE.get("CustomEvent"), {"text": "a" * 4000 + "b"}, 0, "test"))
    assert hub.flush()
    assert hub.metrics().regex_timeouts == before + 1
    assert hub.status()["hooks"]["regex_timeouts"] == before + 1


def test_connections_refused_at_accept_are_in_metrics_and_status(make_hub):
    import socket

    from pihub.web.server import MAX_CONNECTIONS_PER_ADDRESS

    hub = make_hub("http: {port: 0, websocket_port: 0}\nmock: {}\n")
    assert hub.metrics().connections_refused == {"http": 0, "websocket": 0}
    socks = []
    try:
        for port in (hub.web.port, hub.live.port):
            socks += [socket.create_connection(("127.0.0.1", port), timeout=5)
                      for _ in range(MAX_CONNECTIONS_PER_ADDRESS + 1)]  # one more than an address may open
        assert wait_for(lambda: hub.metrics().connections_refused == {"http": 1, "websocket": 1})
    finally:
        for s in socks:
            s.close()
    assert hub.status()["connections_refused"] == {"http": 1, "websocket": 1}


def test_events_dropped_for_the_byte_budget_are_in_metrics_and_status(make_hub):
    from pihub.events import Event
    from pihub.web.metrics import render

    hub = make_hub("http: {port: 0, websocket_port: 0, websocket_replay_bytes: 65536}\nmock: {}\n")
    for _ in range(8):  # 8 x 20 kB against 64 KiB: each ring drops its oldest
        assert hub.publish(Event.of("CustomEvent", "test", subtype="big", blob="b" * 20_000))
    assert hub.flush()
    rings = hub.status()["recent_events"]
    assert set(rings) == {"traces", "websocket"}
    for ring in rings.values():
        assert 20_000 < ring["bytes"] <= 65536 and ring["evicted_for_bytes"] >= 4
    text = render(hub.metrics(), {}, {})
    assert f'pihub_recent_events_evicted_total{{ring="traces"}} {rings["traces"]["evicted_for_bytes"]}' in text


def test_status_reports_uptime_on_the_hubs_clock_and_every_backend(write_config, load_config):
    from pihub.clock import ManualClock
    from pihub.hub import Hub

    clock = ManualClock(start=100.0)
    hub = Hub(load_config(write_config(RIG)), clock=clock)
    for cls in (_Unavailable, _Crashing):
        b = cls({})
        hub.backends[b.name] = b
    assert hub.status()["uptime_s"] == 0 and hub.status()["ready"] is False
    hub.start()
    try:
        clock.advance(12.5)
        st = hub.status()
        assert st["uptime_s"] == 12.5 and st["ready"] is True
        backends = {b["name"]: b for b in st["backends"]}
        assert backends["mock"] == {"name": "mock", "status": "running", "error": None}
        assert backends["unavailable"]["status"] == "failed: unavailable"
        assert "gpiochip0" in backends["unavailable"]["error"]
        assert backends["crashing"]["status"] == "failed: runtime error"
        assert "device vanished" in backends["crashing"]["error"]
        assert st["hooks"]["defined"] == 2 and set(st["bus"]) == {"published", "dropped", "depth", "producers"}
    finally:
        hub.stop()


def test_describe_actions_is_the_registrys(make_hub):
    hub = make_hub(RIG)
    actions = {a["action"] for a in hub.describe_actions()}
    assert {"mock.set", "variable.get"} <= actions
    assert hub.describe_actions() == hub.registry.describe()


def test_the_websocket_accepts_the_panels_origin_on_the_http_port_bound_at_start(make_hub, monkeypatch):
    """http.port 0: the port is known only once bound, and the panel's pages come from it."""
    from websockets.sync.client import connect

    monkeypatch.setenv("PIHUB_API_TOKEN", "ph_hub_test_env_token_0123456789abcdefghijklm")
    hub = make_hub("http: {port: 0, websocket_port: 0}\nmock: {}\n")
    assert hub.web.port != 0
    with connect(f"ws://127.0.0.1:{hub.live.port}/ws/events", open_timeout=5,
                 origin=f"http://127.0.0.1:{hub.web.port}",
                 additional_headers={"X-Token": "ph_hub_test_env_token_0123456789abcdefghijklm"}) as ws:
        ws.send('{"type": "ping"}')  # accepted: the connection stays open
        assert ws.protocol.state.name == "OPEN"


def test_only_the_configured_backends_modules_are_imported(write_config):
    """A backend module is part of the daemon's memory only when its section is configured."""
    import subprocess
    import sys

    cfg = write_config("mock: {}\n")
    code = ("import sys\nfrom pihub import config\nfrom pihub.hub import Hub, known_sections\n"
            f"hub = Hub(config.load({str(cfg)!r}, sections=known_sections()))\n"
            "print(sorted(m for m in sys.modules if m.startswith('pihub.backends.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['pihub.backends.base', 'pihub.backends.mock']"
