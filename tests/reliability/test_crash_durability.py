"""kill -9 of a real ``pihub run`` during acknowledged writes: nothing corrupt, nothing lost.

The write path under test: ``POST /execute`` ``variable.set`` -> ``Store.set_variables``,
which answers only after its ``COMMIT`` returned (WAL mode, ``synchronous=NORMAL``). A
SIGKILL is a process crash, not a power cut: what SQLite handed to the kernel survives it,
so every write the API acknowledged must be in the file after the crash. (A power cut may
lose the last commits by design; see :mod:`pihub.store`.)

Each trial starts the daemon on the same workdir, lets writer threads issue writes over
keep-alive connections, kills the daemon at a pseudo-random number of acknowledged writes
(seeded per trial, so a failure names its trial), then reopens the file: SQLite's
``integrity_check`` must answer ``ok``, :class:`~pihub.store.Store` must open it, and every
acknowledged write of every trial so far must be there with its value. Writes that were in
flight when the process died may or may not be there, but never torn: a request setting
two variables leaves both or neither, with the values sent.

``make test`` runs 3 trials; ``make soak`` runs 300.
"""

from __future__ import annotations

import http.client
import random
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from pihub_testing import wait_for
from reliability_support import HANG_BREAKER, Daemon, execute, request, scaled

from pihub.store import Store

TRIALS = scaled(3, 300)
WRITERS = 3
#: The first variable of a request's pair: prefix and sequence number.
_PAIR = re.compile(r"(t\d+w\d+)a(\d+)")


class Writer(threading.Thread):
    """Sets pairs of variables until the connection fails; records what was acknowledged."""

    def __init__(self, daemon: Daemon, trial: int, n: int) -> None:
        super().__init__(name=f"writer-{trial}-{n}", daemon=True)
        self.conn = daemon.connect()
        self.prefix = f"t{trial}w{n}"
        self.sent: dict[str, Any] = {}    # every variable a request carried
        self.acked: dict[str, Any] = {}   # variables of requests answered with success
        self.refused: list[Any] = []      # answers that were not success (a bug while alive)
        self.error: BaseException | None = None

    def run(self) -> None:
        seq = 0
        try:
            while True:
                values = {f"{self.prefix}a{seq}": {"seq": seq, "pad": "x" * (seq % 97)},
                          f"{self.prefix}b{seq}": seq}
                self.sent.update(values)
                status, body = execute(self.conn, request("variable.set", values))
                if status != 200 or body["response"]["errors"]:
                    self.refused.append((status, body))
                    return
                self.acked.update(values)
                seq += 1
        except (OSError, http.client.HTTPException) as e:  # the daemon died under us
            self.error = e
        finally:
            self.conn.close()


def check_file(db: Path, must_have: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """Reopen the store after a crash: intact, every acknowledged write there, none torn.

    Returns:
        The variables stored.
    """
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        raw.close()
    store = Store(db)
    try:
        stored = store.get_variables()
    finally:
        store.close()
    lost = sorted(k for k in must_have if stored.get(k) != must_have[k])
    assert not lost, f"{len(lost)} acknowledged writes lost or changed, e.g. {lost[:5]}"
    wrong = sorted(k for k in stored if stored[k] != sent[k])
    assert not wrong, f"stored values that were never sent: {wrong[:5]}"
    # a request's two variables are one transaction: both or neither
    for key in sent:
        pair = _PAIR.fullmatch(key)
        if pair:
            other = f"{pair.group(1)}b{pair.group(2)}"
            assert (key in stored) == (other in stored), f"half of a request stored: {key}, {other}"
    return stored


def test_kill_9_during_acknowledged_writes_loses_nothing(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    acked: dict[str, Any] = {}
    sent: dict[str, Any] = {}
    try:
        for trial in range(TRIALS):
            daemon.start()
            writers = [Writer(daemon, trial, n) for n in range(WRITERS)]
            kill_at = len(acked) + 2 * random.Random(trial).randint(1, 150)
            for w in writers:
                w.start()

            def written(writers: list[Writer] = writers, kill_at: int = kill_at) -> bool:
                """Kill point reached (or a writer stopped early, which fails below)."""
                now = len(acked) + sum(len(w.acked) for w in writers)
                return now >= kill_at or not all(w.is_alive() for w in writers)

            assert wait_for(written, timeout=HANG_BREAKER), f"trial {trial}: writes stalled"
            assert daemon.kill() == -9
            for w in writers:
                w.join(HANG_BREAKER)
                assert not w.is_alive(), f"trial {trial}: {w.name} hangs after the kill"
                assert not w.refused, f"trial {trial}: a write was refused: {w.refused[0]}"
                acked.update(w.acked)
                sent.update(w.sent)
            check_file(daemon.db_path, acked, sent)

        # and the daemon itself starts on the crashed file and still serves it
        daemon.start()
        conn = daemon.connect()
        status, body = execute(conn, request("variable.get", {}))
        conn.close()
        assert status == 200 and not body["response"]["errors"]
        assert {k: body["response"]["output"][k] for k in acked} == acked
        assert daemon.terminate() == 0
        check_file(daemon.db_path, acked, sent)
    finally:
        daemon.close()
    assert len(acked) >= 2 * TRIALS
