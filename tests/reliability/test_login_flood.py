"""Login floods: argon2 stays bounded, the limits count every attempt, memory stays put.

What issue 8 found, each as a test that failed before the fix:

* sixteen concurrent wrong logins ran argon2 on every HTTP worker thread, and glibc kept
  one argon2 buffer per thread's malloc arena: 38 -> 210 MB, for good. Now at most
  ``kdf_concurrency`` computations run at once, always on the same dedicated threads;
  the rest wait in a short line or get 429 ``RATE_LIMITED``;
* 32 simultaneous attempts from one address all passed the "5 failures" check, because
  failures were counted when they ended;
* 100 addresses made 500 guesses: there was no hub-wide budget.

The concurrency tests hold every argon2 computation inside an instrumented hasher (the
``hasher`` seam of :class:`pihub.auth.Auth`) until the test has seen every attempt
either enter it or be refused, so what they assert does not depend on timing.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters
from pihub_testing import wait_for
from reliability_support import HANG_BREAKER, Daemon, rss_kib, scaled

from pihub.auth import LIMIT_ADDRESS, LIMIT_BUSY, LIMIT_TOTAL, Auth
from pihub.errors import AuthFailed, RateLimited
from pihub.store import Store

# the HTTP tests' rig lives beside them in tests/web (no packages in tests/)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from http_support import PASSWORD, Reply, Rig, assert_error, bearer, build_rig, call  # noqa: E402

from pihub.web.app import make_app  # noqa: E402

WRONG = "not the password"


class HeldHasher(PasswordHasher):
    """A cheap argon2id hasher whose verifications wait for :attr:`release`.

    It records how many verifications ran at once (:attr:`most_at_once`), how many
    started (:attr:`entered`), on which threads, and the hash each one was given.
    """

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=64, parallelism=1)
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.entered = 0
        self.threads: set[str] = set()
        self.hashes: list[str] = []
        self.hash_calls = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.hash_calls += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.running += 1
            self.entered += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
            self.hashes.append(hash if isinstance(hash, str) else hash.decode())
        try:
            assert self.release.wait(HANG_BREAKER), "the test never released the hasher"
            return super().verify(hash, password)
        finally:
            with self._lock:
                self.running -= 1


class Crowd:
    """Threads that each run one call and keep its outcome (a value or an exception)."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, calls: list[Callable[[], Any]]) -> None:
        for i, fn in enumerate(calls):
            t = threading.Thread(target=self._run, args=(fn,), name=f"flood-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            out: Any = fn()
        except Exception as e:  # noqa: BLE001 - the outcome under test
            out = e
        with self._lock:
            self.outcomes.append(out)

    def count(self, pred: Callable[[Any], bool]) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if pred(o))

    def join(self) -> list[Any]:
        for t in self._threads:
            t.join(HANG_BREAKER)
            assert not t.is_alive(), f"{t.name} is still running after {HANG_BREAKER} s"
        return list(self.outcomes)


@pytest.fixture
def rig(make_hub: Callable[..., Any], tmp_path: Path) -> Iterator[Rig]:
    yield build_rig(make_hub, tmp_path)


def _limited(reason: str) -> Callable[[Any], bool]:
    return lambda o: isinstance(o, RateLimited) and o.reason == reason


@pytest.mark.parametrize("slots", [1, 2])
def test_a_flood_of_wrong_logins_runs_at_most_n_argon2_at_once_on_n_kdf_threads(rig: Rig, slots: int) -> None:
    held = HeldHasher()
    auth = Auth(rig.hub.store, hasher=held, kdf_concurrency=slots, kdf_queue=4, kdf_wait_s=HANG_BREAKER,
                max_failures_total=1000)
    app = make_app(rig.hub, auth=auth)
    crowd = Crowd()
    body = {"username": "alice", "password": WRONG}
    crowd.start([lambda i=i: call(app, "POST", "/login", json_body=body, remote_addr=f"192.0.2.{i + 1}")
                 for i in range(16)])
    busy = 16 - slots - 4

    def refused(o: Any) -> bool:
        return isinstance(o, Reply) and o.status == 429

    assert wait_for(lambda: held.entered == slots and crowd.count(refused) == busy, timeout=HANG_BREAKER), \
        (held.entered, crowd.count(refused))
    assert held.most_at_once == slots and held.running == slots
    held.release.set()
    replies = crowd.join()
    assert sorted(r.status for r in replies) == [401] * (slots + 4) + [429] * busy
    for r in replies:
        if r.status == 429:
            assert_error(r, 429, "RATE_LIMITED")
            assert r.headers["retry-after"] == "1"
    assert held.entered == slots + 4 and held.most_at_once == slots
    # argon2 ran only on the dedicated threads (so only their malloc arenas keep a buffer)
    assert 1 <= len(held.threads) <= slots and all(n.startswith("pihub-kdf") for n in held.threads), held.threads
    # a refused attempt was never tried, so it was not counted: that address still has 5
    refused_addr = next(f"192.0.2.{i + 1}" for i in range(16)
                        if auth._failures.get(f"192.0.2.{i + 1}") is None)
    for _ in range(5):
        assert call(app, "POST", "/login", json_body=body, remote_addr=refused_addr).status == 401
    assert_error(call(app, "POST", "/login", json_body=body, remote_addr=refused_addr), 429, "RATE_LIMITED")
    auth.close()


def test_exactly_max_failures_of_32_simultaneous_attempts_pass_the_address_check(rig: Rig) -> None:
    held = HeldHasher()
    auth = Auth(rig.hub.store, hasher=held, kdf_concurrency=1, kdf_queue=64, kdf_wait_s=HANG_BREAKER)
    crowd = Crowd()
    crowd.start([lambda: auth.login("alice", WRONG, ip="198.51.100.7") for _ in range(32)])
    assert wait_for(lambda: crowd.count(_limited(LIMIT_ADDRESS)) == 27 and held.entered == 1,
                    timeout=HANG_BREAKER), (crowd.count(_limited(LIMIT_ADDRESS)), held.entered)
    held.release.set()
    outcomes = crowd.join()
    assert sum(isinstance(o, AuthFailed) for o in outcomes) == 5
    assert sum(_limited(LIMIT_ADDRESS)(o) for o in outcomes) == 27
    assert held.entered == 5
    with pytest.raises(RateLimited):
        auth.login("alice", PASSWORD, ip="198.51.100.7")
    auth.close()


def test_a_login_that_waits_too_long_for_the_hasher_is_refused_and_not_counted(rig: Rig) -> None:
    held = HeldHasher()
    auth = Auth(rig.hub.store, hasher=held, kdf_concurrency=1, kdf_queue=1, kdf_wait_s=0.05)
    crowd = Crowd()
    crowd.start([lambda: auth.login("alice", WRONG, ip="203.0.113.1")])
    assert wait_for(lambda: held.entered == 1, timeout=HANG_BREAKER)
    with pytest.raises(RateLimited) as e:  # waits its 0.05 s in line, then gives up
        auth.login("alice", PASSWORD, ip="203.0.113.2")
    assert (e.value.reason, e.value.retry_after) == (LIMIT_BUSY, 1)
    assert held.entered == 1
    held.release.set()
    crowd.join()
    assert "203.0.113.2" not in auth._failures and len(auth._recent) == 1
    assert auth.login("alice", PASSWORD, ip="203.0.113.2").username == "alice"
    auth.close()


def test_the_hub_wide_budget_stops_many_addresses_and_ages_out(rig: Rig) -> None:
    # the attack: 100 source addresses, 5 guesses each
    statuses = []
    for guess in range(5):
        for host in range(100):
            r = rig.call("POST", "/login", json_body={"username": "alice", "password": f"guess {guess}"},
                         remote_addr=f"10.8.{host}.1")
            statuses.append(r.status)
        rig.clock.advance(1)
    assert statuses.count(401) == 50 and statuses.count(429) == 450  # only the budget was checked
    r = rig.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD},
                 remote_addr="192.0.2.200")
    body = assert_error(r, 429, "RATE_LIMITED")  # the price: the owner waits too...
    assert "on this hub" in body["message"]
    # ...until the first of the 50 failures (t=0) leaves the 300 s window; now is t=5
    assert r.headers["retry-after"] == "295"
    assert rig.call("GET", "/actions", headers=bearer(rig.tokens["read"])).status == 200  # tokens still work
    rig.clock.advance(294)
    assert rig.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD},
                    remote_addr="192.0.2.200").status == 429
    rig.clock.advance(1)
    assert rig.call("POST", "/login", json_body={"username": "alice", "password": PASSWORD},
                    remote_addr="192.0.2.200").status == 200


def test_the_budget_and_the_address_limit_count_together(rig: Rig) -> None:
    auth = Auth(rig.hub.store, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
                max_failures=2, max_failures_total=3, clock=rig.clock)
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        with pytest.raises(AuthFailed):
            auth.login("alice", WRONG, ip=ip)
    with pytest.raises(RateLimited) as e:
        auth.login("alice", WRONG, ip="192.0.2.1")
    assert e.value.reason == LIMIT_ADDRESS  # the address's own limit is reported first
    with pytest.raises(RateLimited) as e:
        auth.login("alice", PASSWORD, ip="192.0.2.3")
    assert e.value.reason == LIMIT_TOTAL
    auth.close()


def test_an_unknown_user_costs_exactly_one_verification_with_the_current_parameters(rig: Rig) -> None:
    held = HeldHasher()
    held.release.set()
    auth = Auth(rig.hub.store, hasher=held, max_failures=100)
    auth.add_user("carol", PASSWORD)
    assert held.hash_calls == 1
    for who in ("carol", "nobody", "nobody", "Not A Name"):
        with pytest.raises(AuthFailed):
            auth.login(who, WRONG, ip="192.0.2.9")
    assert held.hash_calls == 1 and held.entered == 4  # one verification each, no hashing
    real, *dummies = (extract_parameters(h) for h in held.hashes)
    assert dummies == [real] * 3  # same type, memory, passes, lanes, lengths
    assert not held.check_needs_rehash(held.hashes[1])
    assert len(set(held.hashes[1:])) == 1  # one dummy, made once
    auth.close()


def test_a_real_daemon_keeps_its_memory_under_a_login_flood(tmp_path: Path) -> None:
    """Hundreds of failed logins from many addresses: RSS grows by one argon2 buffer at
    most, not one per HTTP thread (210 MB before the fix). A behaviour bound, generous."""
    daemon = Daemon(tmp_path)
    with Store(daemon.db_path) as store:
        auth = Auth(store)
        auth.add_user("alice", PASSWORD)
        auth.close()
    try:
        daemon.start()
        before = rss_kib(daemon.pid)
        per_thread = scaled(20, 200)
        statuses: list[int] = []
        lock = threading.Lock()

        def flood(t: int) -> None:
            for i in range(per_thread):
                # a fresh loopback source address per attempt: the per-address limit never helps
                conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=HANG_BREAKER,
                                                  source_address=(f"127.{t + 1}.{i // 200}.{i % 200 + 1}", 0))
                try:
                    conn.request("POST", "/login", body=json.dumps({"username": ("alice", "nobody")[i % 2],
                                                                    "password": WRONG}),
                                 headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                finally:
                    conn.close()
                with lock:
                    statuses.append(resp.status)

        threads = [threading.Thread(target=flood, args=(t,), name=f"flood-{t}") for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG_BREAKER)
        assert not any(t.is_alive() for t in threads)
        assert len(statuses) == 16 * per_thread and set(statuses) <= {401, 429}, set(statuses)
        assert statuses.count(401) >= 1
        grown_mib = (rss_kib(daemon.pid) - before) / 1024
        assert grown_mib < 60, f"RSS grew by {grown_mib:.0f} MiB under the flood"
        assert daemon.terminate() == 0
    finally:
        daemon.close()
