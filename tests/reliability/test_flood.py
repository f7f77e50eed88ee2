"""An event flood far beyond the ring's capacity through a real hub: the books balance.

A producer thread publishes ``CustomEvent{subtype: flood}`` in batches, as fast as it
can, into a hub whose ring holds 256 events, while a hook fires on every one of them and
the HTTP API keeps serving. The ring drops what does not fit and counts it; the test
counts what it injected itself. Afterwards, exactly:

* ``dropped + processed == injected``, with ``dropped`` from the ring's counter,
  ``processed`` counted on the dispatcher thread, ``injected`` by the producer, and the
  ring's ``published`` equal to what ``publish_batch`` said it took;
* every event any producer got into the bus was dispatched;
* every processed flood event queued its hook job or counted it as dropped;
* no event is left in the bus's side table (no reference leak), and resident memory
  after the flood is within a fixed bound of what it was after a warm-up, whatever the
  flood's length (``make soak`` floods 100 times longer).

While the flood runs, a control request (``POST /execute``) is answered; its latency is
a benchmark's business, not this test's.
"""

from __future__ import annotations

import http.client
import threading
import time

from pihub_testing import wait_for
from reliability_support import HANG_BREAKER, TOKEN, execute, request, rss_kib, scaled

from pihub.events import CATALOGUE, Event

CAPACITY = 256
INJECT = scaled(400_000, 40_000_000)
BATCH = 64
#: Resident memory may grow this much (KiB) from after the warm-up to the end.
RSS_BOUND_KIB = 16 * 1024

CONFIG = f"""
http: {{port: 0, disable_websocket: true}}
engine: {{ring_capacity: {CAPACITY}}}
event.hook.flood:
  if: {{type: CustomEvent, subtype: flood}}
  then:
    - action: logger.debug
      args: {{msg: flood}}
"""


class Flood(threading.Thread):
    """Publishes events in batches through its own producer, counting them.

    It stops once it has injected ``INJECT`` events *and* the control request has been
    answered, so the answer always arrives while the flood is on (or never: a hang).
    """

    def __init__(self, hub: object) -> None:
        super().__init__(name="flood", daemon=True)
        self.producer = hub.bus.producer("flood")  # type: ignore[attr-defined]
        self.injected = 0
        self.accepted = 0
        self.rss_warm: int | None = None
        self.answered = threading.Event()

    def run(self) -> None:
        kind = CATALOGUE.get("CustomEvent")
        while self.injected < INJECT or not self.answered.is_set():
            batch = [Event(kind, {"subtype": "flood", "n": self.injected + i}, time.monotonic_ns(), "flood")
                     for i in range(BATCH)]
            self.accepted += self.producer.publish_batch(batch)
            self.injected += BATCH
            if self.rss_warm is None and self.injected >= INJECT // 10:
                self.rss_warm = rss_kib()


def test_flood_balances_the_books_and_the_api_answers(make_hub, monkeypatch) -> None:
    monkeypatch.setenv("PIHUB_API_TOKEN", TOKEN)
    hub = make_hub(CONFIG, start=False)
    processed = 0

    def count(event: Event) -> None:
        nonlocal processed
        if event.source == "flood":
            processed += 1

    hub.dispatcher.add_listener(count)
    hub.start()
    flood = Flood(hub)
    flood.start()

    # a control request once the flood is on; the flood goes on until it is answered
    assert wait_for(lambda: flood.injected >= 20 * CAPACITY, timeout=HANG_BREAKER)
    conn = http.client.HTTPConnection("127.0.0.1", hub.web.port, timeout=HANG_BREAKER)
    try:
        status, body = execute(conn, request("variable.get", {"name": "anything", "default": 7}))
    finally:
        conn.close()
        flood.answered.set()
    assert status == 200 and body["response"]["output"] == {"anything": 7}

    flood.join(HANG_BREAKER * 10)
    assert not flood.is_alive()
    assert hub.flush(HANG_BREAKER)
    rss_end = rss_kib()

    stats = hub.bus.stats()
    mine = stats["flood"]
    assert flood.injected >= INJECT
    assert mine.published == flood.accepted
    assert mine.dropped + processed == flood.injected
    assert processed == mine.published
    assert mine.dropped > 10 * CAPACITY, "not a flood: nothing much was dropped"
    assert sum(s.published for s in stats.values()) == hub.dispatcher.stats.events
    st = hub.dispatcher.stats
    assert st.hooks_fired + st.hooks_dropped == processed
    # the drops are reported (BusOverflowEvent) by the dispatcher's next periodic check
    assert wait_for(lambda: st.overflow_reports >= 1, timeout=HANG_BREAKER)
    assert hub.bus.pending_refs == 0
    assert flood.rss_warm is not None
    assert rss_end - flood.rss_warm < RSS_BOUND_KIB, (flood.rss_warm, rss_end)
