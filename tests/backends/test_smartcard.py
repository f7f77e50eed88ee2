"""The smart card backend: through real pcscd + vpcd + the virtual card (HARDWARE.md §3.4),
and through a fake PC/SC layer for what vpcd cannot do (plug a reader in, time a back-off)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pihub_testing import EventRecorder, RecordingClock, finishes, load_hw_mock, need_pcsc_stack, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.smartcard import (
    PNP_READER,
    SCARD_E_CANCELLED,
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_NO_SERVICE,
    SCARD_E_TIMEOUT,
    SCARD_F_COMM_ERROR,
    STATE_CHANGED,
    STATE_PRESENT,
    STATE_UNKNOWN,
    SmartCardBackend,
    parse_atr,
)
from pihub.clock import ManualClock
from pihub.errors import ConfigError

vc = load_hw_mock("virtual_card")

ATR = "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A"
OTHER_ATR = "3B 95 13 81 01 80 73 FF 01 00 0B"
UID = "04 A1 B2 C3 D4 E5 F6"
READER = "Virtual PCD 00 00"


def statuses(backend: SmartCardBackend) -> list[tuple[str, str | None]]:
    """Bind a listener to ``backend``; the list it fills with ``(status, error)``."""
    calls: list[tuple[str, str | None]] = []
    backend.bind_status_listener(lambda b: calls.append((str(b.status), b.error)))
    return calls


# ---------------------------------------------------------------------------- real stack
@pytest.fixture
def card(tmp_path) -> Iterator[Any]:
    """pcscd with vpcd in a private network namespace, and the virtual card (not inserted)."""
    need_pcsc_stack()
    with vc.VirtualCardProcess(atr=ATR, uid=UID, pcscd_log=tmp_path / "pcscd.log") as proc:
        yield proc


@pytest.fixture
def opened() -> Iterator[Any]:
    """``open(config) -> (backend, recorder)``; every backend opened is closed."""
    backends: list[SmartCardBackend] = []

    def open_(config: dict[str, Any] | None = None) -> tuple[SmartCardBackend, EventRecorder]:
        backend = SmartCardBackend({"retry_interval": 0.1, "max_retry_interval": 0.5, **(config or {})})
        backend.validate_environment()
        rec = EventRecorder()
        backend.open(rec)
        backends.append(backend)
        return backend, rec

    yield open_
    for b in backends:
        b.close()


def test_insert_fires_detected_with_the_configured_atr_and_uid_then_remove_fires_removed(card, opened):
    backend, rec = opened({"atr": [ATR.lower().replace(" ", "")]})  # spaces and case ignored
    assert wait_for(lambda: backend.device_status()["readers"], 10)
    card.insert()
    detected = ("SmartCardDetectedEvent", {"atr": ATR, "reader": READER, "uid": UID})
    assert rec.wait_count(1) == [detected]
    assert rec.events[0].source == "smartcard"
    assert backend.device_status()["cards"] == {READER: {"atr": ATR, "uid": UID}}
    card.remove()
    assert rec.wait_count(2) == [detected, ("SmartCardRemovedEvent", {"atr": ATR, "reader": READER, "uid": UID})]
    assert backend.device_status()["cards"] == {}


def test_the_log_shows_the_card_masked_while_the_event_carries_it_in_full(card, opened, caplog):
    caplog.set_level(logging.DEBUG, logger="pihub.backends.smartcard")
    backend, rec = opened()
    assert wait_for(lambda: backend.device_status()["readers"], 10)
    card.insert()
    assert rec.wait_count(1) == [("SmartCardDetectedEvent", {"atr": ATR, "reader": READER, "uid": UID})]
    card.remove()
    rec.wait_count(2)
    text = caplog.text
    assert f"card …00 6A (uid …E5 F6) detected in {READER}" in text
    assert f"card …00 6A removed from {READER}" in text
    parts = UID.split()
    for sep in (" ", "", ":"):  # no 3 bytes of the UID in a row, in any spelling; not the whole ATR
        assert sep.join(ATR.split()) not in text.upper()
        for i in range(len(parts) - 2):
            assert sep.join(parts[i:i + 3]) not in text.upper(), text


def test_an_uid_answer_with_a_bad_status_word_is_logged_without_its_data(fake, caplog):
    scard, _clock, open_ = fake
    caplog.set_level(logging.DEBUG, logger="pihub.backends.smartcard")
    uid = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]
    scard.SCardTransmit = lambda card, protocol, apdu: (0, [*uid, 0x62, 0x82])  # data, then a warning
    scard.readers = {"R": [0, bytes.fromhex("3B8F8001")]}
    _backend, rec = open_()
    assert rec.wait_count(1) == [("SmartCardDetectedEvent", {"atr": "3B 8F 80 01", "reader": "R", "uid": None})]
    assert "no uid from R: the card answered 62 82 after 7 data bytes (not logged)" in caplog.text
    assert "C3 D4" not in caplog.text.upper() and "C3D4" not in caplog.text.upper()


def test_a_card_present_at_start_is_detected_and_one_without_uid_gives_null(card, opened):
    card.command("uid none")
    card.insert()
    _backend, rec = opened()  # no atr filter: every card
    assert rec.wait_count(1) == [("SmartCardDetectedEvent", {"atr": ATR, "reader": READER, "uid": None})]


def test_a_card_whose_atr_is_not_listed_fires_nothing(card, opened):
    backend, rec = opened({"atr": [ATR, "3B 8F 80 01 FF *"]})
    assert wait_for(lambda: backend.device_status()["readers"], 10)
    card.command(f"atr {OTHER_ATR}")
    card.insert()
    assert wait_for(lambda: backend.device_status()["ignored"] == {READER: OTHER_ATR}, 10)
    card.remove()
    assert wait_for(lambda: backend.device_status()["ignored"] == {}, 10)
    # the listed card comes next: had the other fired anything, it would be first
    card.command(f"atr {ATR}")
    card.insert()
    assert rec.wait_count(1) == [("SmartCardDetectedEvent", {"atr": ATR, "reader": READER, "uid": UID})]
    assert len(rec.events) == 1 and backend.device_status()["ignored_cards"] == 1


def test_pcscd_stopped_and_started_degrades_then_recovers_by_itself(card, opened):
    card.insert()
    backend, rec = opened()
    rec.wait_count(1)
    calls = statuses(backend)
    card.command("pcscd stop")
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED, 10)
    assert "pcscd is not running" in backend.error and "systemctl start pcscd" in backend.error
    assert backend.device_status()["service"] is False
    card.remove()  # taken out while pcscd was down
    card.command("pcscd start")
    assert wait_for(lambda: backend.status == BackendStatus.RUNNING, 10), backend.error
    assert calls[0] == ("running", None) and calls[-1] == ("running", None)
    assert [s for s, _ in calls].count("degraded") == 1, calls  # one reason for the whole outage
    # the card that went while pcscd was down is reported gone; new ones are seen again
    assert rec.wait_count(2)[1] == ("SmartCardRemovedEvent", {"atr": ATR, "reader": READER, "uid": UID})
    card.insert()
    assert rec.wait_count(3)[2] == ("SmartCardDetectedEvent", {"atr": ATR, "reader": READER, "uid": UID})
    assert backend.device_status()["service_losses"] == 1


def test_pcscd_not_running_at_open_is_degraded_until_it_starts(card, opened):
    card.command("pcscd stop")
    backend, rec = opened()
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED, 10)
    assert "pcscd is not running" in backend.error
    card.command("pcscd start")
    assert wait_for(lambda: backend.status == BackendStatus.RUNNING, 10), backend.error
    card.insert()
    assert rec.wait_count(1)[0][0] == "SmartCardDetectedEvent"


def test_close_cancels_the_pcsc_wait_at_once(card, opened):
    backend, _rec = opened()
    assert wait_for(lambda: backend.device_status()["readers"], 10)
    finishes(backend.close, timeout=5, what="close() while blocked in SCardGetStatusChange")
    assert backend.status == BackendStatus.STOPPED


def test_a_hub_hook_fires_on_a_card_from_a_platypush_config(card, make_hub):
    hub = make_hub(f"""
        backend.scard:
          atr: "{ATR}"
        mock: {{outputs: {{room: null}}}}
        event.hook.key_card_in:
          if: {{type: platypush.message.event.scard.SmartCardDetectedEvent, uid: "{UID}"}}
          then: [{{action: mock.set, args: {{name: room, value: true}}}}]
        event.hook.key_card_out:
          if: {{type: SmartCardRemovedEvent}}
          then: [{{action: mock.set, args: {{name: room, value: false}}}}]
    """)
    room = hub.backends["mock"].outputs
    assert wait_for(lambda: hub.execute("smartcard.status").output["readers"], 10)
    card.insert()
    assert wait_for(lambda: room.get("room") is True, 10)
    card.remove()
    assert wait_for(lambda: room.get("room") is False, 10)


# ---------------------------------------------------------------------------- config
def test_an_invalid_atr_in_the_config_is_located_and_named(make_hub):
    with pytest.raises(ConfigError) as ei:
        make_hub("""
            smartcard:
              atr:
                - "3B 8F 80 01"
                - "3B 8G 80"
        """, start=False)
    (problem,) = ei.value.problems
    lines = Path(problem.file).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "3B 8G 80" in text)
    col = lines[line - 1].index('"3B 8G 80"') + 1
    assert (problem.line, problem.col) == (line, col)  # at the bad value itself
    text = str(ei.value)
    assert f"config.yaml:{line}:{col}: smartcard.atr[1]: must be hex bytes" in text and "'3B 8G 80'" in text


@pytest.mark.parametrize(("atr", "path", "message"), [
    ("3B 8", "atr", "must be hex bytes such as '3B 8F 80 01' (spaces and case ignored, a trailing * for a "
                    "prefix), not '3B 8'"),
    (["3B", "zz"], "atr[1]", "must be hex bytes such as '3B 8F 80 01'"),
    (["3B", 59], "atr[1]", "must be a string of hex bytes such as '3B 8F 80 01', not 59"),
    (["*"], "atr[0]", "not '*'"),
    (["3B" * 34], "atr[0]", "is 34 bytes long, but an ATR has at most 33"),
    ([], "atr", "must list at least one ATR (leave it out for every card), not an empty list"),
    ("3B\x00\n8F", "atr", "not '3B\\x00\\n8F'"),  # control characters are shown escaped
    ("41" * 5000, "atr", "'" + "41" * 18 + "4..."),  # a huge value is cut short
])
def test_bad_atrs_are_refused_naming_the_value(atr, path, message):
    with pytest.raises(ValueError, match="^" + re.escape(path) + ": .*" + re.escape(message)):
        SmartCardBackend({"atr": atr})


def test_atrs_ignore_spaces_colons_and_case_and_a_star_is_a_prefix():
    assert parse_atr("3b:8f 80 01").matches(bytes.fromhex("3B8F8001"))
    prefix = parse_atr(" 3B 8F *")
    assert prefix.matches(bytes.fromhex("3B8F8001")) and not prefix.matches(bytes.fromhex("3B8E"))
    assert not parse_atr("3B 8F").matches(bytes.fromhex("3B8F80"))  # exact without a star
    assert SmartCardBackend({"atr": "3b8f"}).atr_filter == (parse_atr("3B 8F"),)


def test_retry_intervals_must_be_in_order():
    with pytest.raises(ValueError, match=r"max_retry_interval: must be at least retry_interval \(5 s\), not 1"):
        SmartCardBackend({"retry_interval": 5, "max_retry_interval": 1})


def test_the_platypush_section_is_read_with_a_warning(load_config, write_config):
    config = load_config(write_config('backend.scard:\n  atr: "3B 8F"\n'))
    assert config.sections["smartcard"]["atr"] == "3B 8F"
    assert any("backend.scard" in str(p) and "smartcard" in str(p) for p in config.warnings)


# ---------------------------------------------------------------------------- fake PC/SC
class FakeScard:
    """pcscd as the backend sees it through pyscard's ``smartcard.scard`` calls.

    ``readers``: name -> ``[event counter, atr bytes or None]``; ``up``: pcscd answers.
    SCardGetStatusChange blocks until a reader state differs from the one asked about,
    the reader list changes (PnP), pcscd goes down, or SCardCancel.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.up = True
        self.readers: dict[str, list[Any]] = {}
        self.uid: list[int] | None = [0x04, 0xA1]
        self.attempts: list[float] = []  # clock times of SCardEstablishContext
        self._cond = threading.Condition()
        self._cancelled = False
        self._ctx = 0

    def change(self, fn) -> None:
        with self._cond:
            fn(self)
            self._cond.notify_all()

    def insert(self, reader: str, atr: bytes) -> None:
        self.change(lambda s: s.readers[reader].__setitem__(slice(None), [s.readers[reader][0] + 1, atr]))

    def remove(self, reader: str) -> None:
        self.change(lambda s: s.readers[reader].__setitem__(slice(None), [s.readers[reader][0] + 1, None]))

    def _state(self, reader: str) -> tuple[int, list[int]]:
        if reader == PNP_READER:
            return len(self.readers) << 16, []
        if reader not in self.readers:
            return STATE_UNKNOWN, []
        count, atr = self.readers[reader]
        return (count << 16) | (STATE_PRESENT if atr else 0x10), list(atr or b"")

    # the PC/SC calls
    def SCardEstablishContext(self, scope):  # noqa: N802
        with self._cond:
            self.attempts.append(self.clock.now())
            if not self.up:
                return SCARD_E_NO_SERVICE, 0
            self._ctx += 1
            return 0, self._ctx

    def SCardReleaseContext(self, ctx):  # noqa: N802
        return 0

    def SCardListReaders(self, ctx, groups):  # noqa: N802
        with self._cond:
            if not self.up:
                return SCARD_E_NO_SERVICE, []
            return (0, list(self.readers)) if self.readers else (SCARD_E_NO_READERS_AVAILABLE, [])

    def SCardGetStatusChange(self, ctx, timeout_ms, states):  # noqa: N802
        with self._cond:
            while True:
                if self._cancelled:
                    self._cancelled = False
                    return SCARD_E_CANCELLED, []
                if not self.up or ctx != self._ctx:
                    return SCARD_F_COMM_ERROR, []
                out, changed = [], False
                for reader, current in states:
                    event, atr = self._state(reader)
                    if current == 0 or event != current:
                        changed, event = True, event | STATE_CHANGED
                    out.append((reader, event, atr))
                if changed:
                    return 0, out
                if not self._cond.wait(timeout_ms / 1000):
                    return SCARD_E_TIMEOUT, []

    def SCardCancel(self, ctx):  # noqa: N802
        self.change(lambda s: setattr(s, "_cancelled", True))
        return 0

    def SCardConnect(self, ctx, reader, share, protocols):  # noqa: N802
        return 0, 1, 2

    def SCardTransmit(self, card, protocol, apdu):  # noqa: N802
        return 0, ([0x6A, 0x81] if self.uid is None else [*self.uid, 0x90, 0x00])

    def SCardDisconnect(self, card, disposition):  # noqa: N802
        return 0

    def SCardGetErrorMessage(self, hresult):  # noqa: N802
        return "Service not available." if hresult == SCARD_E_NO_SERVICE else "error"


@pytest.fixture
def fake() -> Iterator[tuple[FakeScard, RecordingClock, Any]]:
    """``(fake pcscd, clock, open(config) -> (backend, recorder))``."""
    clock = RecordingClock()
    scard = FakeScard(clock)
    backends: list[SmartCardBackend] = []

    def open_(config: dict[str, Any] | None = None) -> tuple[SmartCardBackend, EventRecorder]:
        backend = SmartCardBackend(config, clock=clock, scard=scard)
        rec = EventRecorder()
        backend.open(rec)
        backends.append(backend)
        return backend, rec

    yield scard, clock, open_
    for b in backends:
        finishes(b.close, what="close")


def test_the_retry_back_off_doubles_up_to_the_maximum_and_restarts_after_pcscd_answered(fake):
    scard, clock, open_ = fake
    scard.up = False
    backend, _ = open_({"retry_interval": 1.0, "max_retry_interval": 5.0})
    for n in range(1, 6):
        assert wait_for(lambda n=n: len(clock.waits) == n and clock.waiters == 1)
        clock.advance(clock.waits[-1])
    assert wait_for(lambda: len(clock.waits) == 6 and clock.waiters == 1)
    assert clock.waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert scard.attempts == [0.0, 1.0, 3.0, 7.0, 12.0, 17.0]  # each retry at its own time
    assert backend.status == BackendStatus.DEGRADED
    scard.readers = {"R": [0, None]}
    scard.change(lambda s: setattr(s, "up", True))
    clock.advance(5.0)
    assert wait_for(lambda: backend.status == BackendStatus.RUNNING)
    scard.change(lambda s: setattr(s, "up", False))  # pcscd restarted: retry soon again
    assert wait_for(lambda: len(clock.waits) == 7)
    assert clock.waits[-1] == 1.0


def test_readers_plugged_in_and_out(fake):
    scard, _clock, open_ = fake
    backend, rec = open_()
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)
    assert backend.error.startswith("no smart card reader is connected")
    scard.change(lambda s: s.readers.__setitem__("USB reader 00 00", [3, bytes.fromhex("3B8F")]))
    card = {"atr": "3B 8F", "reader": "USB reader 00 00", "uid": "04 A1"}
    assert rec.wait_count(1) == [("SmartCardDetectedEvent", card)]  # a card already in the new reader
    assert backend.status == BackendStatus.RUNNING
    assert backend.device_status()["readers"] == ["USB reader 00 00"]
    scard.change(lambda s: s.readers.clear())  # unplugged with the card in it
    assert rec.wait_count(2)[1] == ("SmartCardRemovedEvent", card)
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED)


def test_a_card_swapped_between_two_waits_is_removed_then_detected(fake):
    scard, _clock, open_ = fake
    scard.readers = {"R": [0, bytes.fromhex("3B01")]}
    _backend, rec = open_()
    rec.wait_count(1)
    scard.change(lambda s: s.readers.__setitem__("R", [2, bytes.fromhex("3B02")]))  # out and in again
    assert rec.wait_count(3)[1:] == [("SmartCardRemovedEvent", {"atr": "3B 01", "reader": "R", "uid": "04 A1"}),
                               ("SmartCardDetectedEvent", {"atr": "3B 02", "reader": "R", "uid": "04 A1"})]


def test_a_card_left_in_its_reader_while_pcscd_restarts_fires_nothing(fake):
    scard, clock, open_ = fake
    scard.readers = {"R": [5, bytes.fromhex("3B01")]}
    backend, rec = open_({"retry_interval": 1.0})
    rec.wait_count(1)
    scard.change(lambda s: setattr(s, "up", False))
    assert wait_for(lambda: backend.status == BackendStatus.DEGRADED and clock.waiters == 1)
    scard.readers = {"R": [1, bytes.fromhex("3B01")]}  # a new pcscd counts from scratch
    scard.change(lambda s: setattr(s, "up", True))
    clock.advance(1.0)
    assert wait_for(lambda: backend.status == BackendStatus.RUNNING)
    scard.remove("R")
    assert rec.wait_count(2) == [("SmartCardDetectedEvent", {"atr": "3B 01", "reader": "R", "uid": "04 A1"}),
                           ("SmartCardRemovedEvent", {"atr": "3B 01", "reader": "R", "uid": "04 A1"})]


def test_read_uid_false_never_talks_to_the_card(fake):
    scard, _clock, open_ = fake
    scard.readers = {"R": [0, bytes.fromhex("3B01")]}
    scard.SCardConnect = None  # any call would raise
    _backend, rec = open_({"read_uid": False})
    assert rec.wait_count(1) == [("SmartCardDetectedEvent", {"atr": "3B 01", "reader": "R", "uid": None})]


def test_virtual_card_answers_as_documented():
    card = vc.VirtualCard(bytes.fromhex("3B01"), bytes.fromhex("04A1"))
    assert card.answer(b"\x04") == bytes.fromhex("3B01")
    assert card.answer(b"\x01") is None and card.answer(b"\x00") is None
    assert card.answer(bytes.fromhex("FFCA000000")) == bytes.fromhex("04A19000")
    assert card.answer(bytes.fromhex("00A4040000")) == bytes.fromhex("6D00")
    card.uid = None
    assert card.answer(bytes.fromhex("FFCA000000")) == bytes.fromhex("6A81")
    with pytest.raises(ValueError, match="atr must be hex bytes such as '3B 8F 80 01', not 'xyz'"):
        vc.parse_hex("xyz", "atr")


def test_the_panels_entities_list_each_reader_with_its_card_masked_to_the_last_two_bytes(fake):
    scard, _clock, open_ = fake
    atr = bytes.fromhex("3B8F8001804F0CA0000003060300010000000069")
    scard.uid = [0x04, 0xA1, 0xB2, 0xC3]
    scard.readers = {"A 00": [0, atr], "B 01": [0, bytes.fromhex("3B0102")], "C 02": [0, None]}
    backend, rec = open_({"atr": ["3B 8F 80 01 *"]})
    rec.wait_count(1)
    assert wait_for(lambda: backend.device_status()["ignored_cards"] == 1)
    entities = backend.describe_entities()
    assert entities == [
        {"name": "A 00", "kind": "card_reader", "card": {"atr": "…00 69", "uid": "…B2 C3"}, "ignored": None},
        {"name": "B 01", "kind": "card_reader", "card": None, "ignored": "…01 02"},
        {"name": "C 02", "kind": "card_reader", "card": None, "ignored": None}]
    assert "A1" not in repr(entities) and "4F 0C" not in repr(entities)  # nothing more of the numbers
    scard.remove("A 00")
    rec.wait_count(2)
    assert backend.describe_entities()[0]["card"] is None
