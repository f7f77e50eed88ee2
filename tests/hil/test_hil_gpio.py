"""GPIO end to end: output edge -> wired input -> GPIOEvent -> hook -> action.

The rig jumpers output 'drive' (GPIO27) to input 'sense' (GPIO17): on the mock rig through
gpiozero's MockConnectedPin, on a Pi through a wire.
"""

from __future__ import annotations

import time

from hil_support import percentile, wait_for

from pihub.backends.base import BackendStatus

HOOKS = """
mock: {}
event.hook.sense_high:
  if: {type: GPIOEvent, name: sense, value: 1}
  then:
    - action: mock.set
      args: {name: seen, value: "${pin}"}
event.hook.sense_low:
  if: {type: GPIOEvent, name: sense, value: 0}
  then:
    - action: mock.set
      args: {name: seen, value: low}
"""


def test_edge_to_hook_to_action_and_latency(make_hub, gpio_section, record_property):
    hub = make_hub(gpio_section + HOOKS)
    assert hub.backends["gpio"].status == BackendStatus.RUNNING, hub.backends["gpio"].error
    mock = hub.backends["mock"]
    outputs = mock.outputs
    rises: list[int] = []  # the rising edges' time (GPIOEvent.ts_ns: taken in the pin's callback)
    hub.dispatcher.add_listener(
        lambda e: rises.append(e.ts_ns) if e.type.name == "GPIOEvent" and e.args["value"] == 1 else None)
    edge_us: list[float] = []  # the edge -> mock.set by the hook (both on time.monotonic_ns)
    call_us: list[float] = []  # gpio.on called -> the set seen by this thread (it polls)
    for n in range(1, 201):
        t0 = time.perf_counter_ns()
        assert hub.execute("gpio.on", {"pin": "drive"}).ok
        assert wait_for(lambda: outputs.get("seen") == 17), "rising edge never reached the hook's action"
        call_us.append((time.perf_counter_ns() - t0) / 1000)
        assert wait_for(lambda n=n: len(rises) == n)  # the listener sees a batch after its hooks
        done = [h for h in mock.history(4) if h["kind"] == "output" and h["value"] == 17][-1]
        edge_us.append((done["mono_ns"] - rises[-1]) / 1000)
        assert hub.execute("gpio.off", {"pin": "drive"}).ok
        assert wait_for(lambda: outputs.get("seen") == "low"), "falling edge never reached the hook's action"
    assert hub.execute("gpio.read", {"pin": "sense"}).output["value"] == 0
    assert all(x > 0 for x in edge_us)
    p50, p99 = percentile(edge_us, 0.5), percentile(edge_us, 0.99)
    record_property("edge_to_action_p50_us", p50)
    record_property("edge_to_action_p99_us", p99)
    record_property("call_to_seen_p50_us", percentile(call_us, 0.5))
    print(f"\nhil: gpio input edge -> event -> hook -> action: p50 {p50:.0f} us, p99 {p99:.0f} us; gpio.on "
          f"called -> action seen by the polling test: p50 {percentile(call_us, 0.5):.0f} us "
          f"({len(edge_us)} edges)")


def test_every_edge_is_one_event(make_hub, gpio_section):
    hub = make_hub(gpio_section + "mock: {}\n")
    events = []
    hub.dispatcher.add_listener(lambda e: events.append(e.args["value"]) if e.type.name == "GPIOEvent" else None)
    for _ in range(50):
        hub.execute("gpio.on", {"pin": "drive"})
        hub.backends["gpio"].wait_settled()
        hub.execute("gpio.off", {"pin": "drive"})
        hub.backends["gpio"].wait_settled()
    assert hub.flush()
    assert events == [1, 0] * 50
