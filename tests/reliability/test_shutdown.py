"""SIGTERM under load: ``pihub run`` exits 0, says ``pihub stopped``, loses nothing accepted.

The load while the signal arrives:

* the mock backend publishes a ``CustomEvent`` every millisecond, each firing a hook that
  publishes one more event from the worker pool (so jobs publish while the hub stops);
* HTTP clients post events (``CustomEvent{subtype: rec, n}``) whose hook stores
  ``rec_<n>`` in the store, and clients setting variables directly, all on keep-alive
  connections, without pause.

"Nothing accepted lost" is checked twice, from outside and from the hub's own books:

* every event the API accepted (200) has run its hook (``rec_<n>`` is in the store after
  exit), and every ``variable.set`` it acknowledged is in the store;
* the daemon's last line, ``pihub stopped: A events accepted, D dispatched, ...; Q jobs
  queued, R run, ...``, has ``A == D`` and ``Q == R``.

Timing is never asserted: the only limit is the hang-breaker on the exit. ``make test`` runs
3 rounds, ``make soak`` 40.
"""

from __future__ import annotations

import http.client
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import wait_for
from reliability_support import HANG_BREAKER, Daemon, event, execute, request, scaled

from pihub.store import Store

ROUNDS = scaled(3, 40)
#: Answers each client has had before the signal.
ACKS = 50

CONFIG = """
mock:
  script:
    - {after: 0.001, event: {type: CustomEvent, subtype: tick}}
  repeat: true
  history_size: 100
event.hook.tick:
  if: {type: CustomEvent, subtype: tick}
  then:
    - action: mock.get
      args: {name: nothing}
event.hook.rec:
  if: {type: CustomEvent, subtype: rec}
  then:
    - action: variable.set
      args: '${ {"rec_" + str(n): n} }'
"""

_STOPPED = re.compile(r"pihub stopped: (\d+) events accepted, (\d+) dispatched, (\d+) dropped \(bus full\); "
                      r"(\d+) jobs queued, (\d+) run, (\d+) failed")


class Client(threading.Thread):
    """Posts events or variable writes without pause until the daemon goes away."""

    def __init__(self, daemon: Daemon, name: str, kind: str) -> None:
        super().__init__(name=name, daemon=True)
        self.conn = daemon.connect()
        self.kind = kind
        self.accepted: dict[str, int] = {}  # variable expected in the store -> value
        self.refused: list[Any] = []

    def run(self) -> None:
        n = 0
        try:
            while True:
                key = f"{self.name}_{n}"
                if self.kind == "event":
                    message = event("CustomEvent", subtype="rec", n=key)
                else:
                    message = request("variable.set", {f"set_{key}": n})
                status, body = execute(self.conn, message)
                if status == 503 and body and body.get("code") == "BUS_FULL":
                    continue  # refused, not accepted: nothing is owed
                if status != 200 or (self.kind != "event" and body["response"]["errors"]):
                    self.refused.append((status, body))
                    return
                self.accepted[f"rec_{key}" if self.kind == "event" else f"set_{key}"] = \
                    key if self.kind == "event" else n
                n += 1
        except (OSError, http.client.HTTPException):
            pass  # the server closed: the request in flight was not acknowledged
        finally:
            self.conn.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigterm_under_load_exits_cleanly_and_loses_nothing(tmp_path: Path, round_: int) -> None:
    daemon = Daemon(tmp_path, CONFIG)
    try:
        daemon.start()
        clients = [Client(daemon, f"ev{i}", "event") for i in range(2)]
        clients += [Client(daemon, f"vs{i}", "set") for i in range(2)]
        for c in clients:
            c.start()
        # under load: every client has had answers, and the mock's ticks are flowing
        assert wait_for(lambda: all(len(c.accepted) >= ACKS or not c.is_alive() for c in clients),
                        timeout=HANG_BREAKER)
        assert all(c.is_alive() for c in clients), [c.refused for c in clients]
        conn = daemon.connect()
        status, body = execute(conn, request("mock.history", {"limit": 10}))
        conn.close()
        assert status == 200
        assert any(h["kind"] == "event" and h["delivered"] for h in body["response"]["output"])
        code = daemon.terminate()
        for c in clients:
            c.join(HANG_BREAKER)
            assert not c.is_alive(), f"{c.name} hangs after the daemon exited"
        log = daemon.log()
        assert code == 0, log
        assert "received SIGTERM, stopping" in log
        stopped = _STOPPED.search(log)
        assert stopped, log
        accepted, dispatched, _dropped, queued, run, _failed = map(int, stopped.groups())
        assert accepted == dispatched, stopped.group(0)
        assert queued == run, stopped.group(0)
        assert "Traceback" not in log and " ERROR " not in log, log
        assert not any(c.refused for c in clients), [c.refused for c in clients]
    finally:
        daemon.close()

    expected = {k: v for c in clients for k, v in c.accepted.items()}
    store = Store(daemon.db_path)
    try:
        stored = store.get_variables()
    finally:
        store.close()
    missing = sorted(k for k in expected if stored.get(k) != expected[k])
    assert not missing, f"{len(missing)} of {len(expected)} accepted requests lost, e.g. {missing[:5]}"
