"""Smart cards: a card put on (or in) a PC/SC reader, and taken away.

Config (section ``smartcard``; Platypush's ``backend.scard`` is read as this section)::

    smartcard:
      atr:                        # cards that fire events; absent/null: every card
        - "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A"
        - "3B 8F 80 01 *"         # a trailing * matches every ATR starting with these bytes
      read_uid: true              # ask the card its UID (FF CA 00 00 00) on insertion
      retry_interval: 1.0         # s before the first retry when pcscd is not there
      max_retry_interval: 30.0    # s; the retry delay doubles up to this

ATRs are hex bytes; spaces, colons and case are ignored (``3b8f8001...`` is the same
ATR), and a single ATR may be given as a string instead of a list. A bad one is a config
error naming it (``smartcard.atr[1]: must be hex bytes ...``).

Events (``source: smartcard``)::

    SmartCardDetectedEvent {atr: "3B 8F 80 01 ...", reader: "ACS ACR122U 00 00", uid: "04 A1 B2 C3"}
    SmartCardRemovedEvent  {atr: ..., reader: ..., uid: ...}   (the values of the card that went)

``atr`` and ``uid`` are upper-case space-separated hex (``uid: null`` when the card does
not answer ``FF CA 00 00 00`` with ``90 00``, e.g. a contact card, or with
``read_uid: false``). A card whose ATR is not in ``atr`` fires nothing, neither when it
comes nor when it goes. Removed fires only for a card that fired Detected.

The events carry the full ATR and UID (hooks match on them); the log (the journal) shows
them only as :func:`mask_card_number` does for the panel and MQTT (``…E5 F6``), and never
the raw answer to ``FF CA`` (its data is the UID): a UID is what a cloned key card needs.

How it works: one thread (``pihub-smartcard``) holds a PC/SC context (pyscard's
``smartcard.scard``, i.e. libpcsclite talking to ``pcscd``) and blocks in
``SCardGetStatusChange`` on every reader plus the ``\\\\?PnP?\\Notification`` pseudo-reader,
so a card insertion, a removal and a reader plugged in or out all wake it at once (no
polling by pihub; pcscd itself polls serial readers such as vpcd about every 0.4 s). A
reader unplugged with a card in it gives the card's Removed event; a reader plugged in
with a card already in it gives Detected, as does a card present when pihub starts. A
card swapped between two waits (the reader's event counter moved) gives Removed then
Detected.

pyscard's ``CardMonitor``/``ReaderMonitor`` observers are not used: they are
process-wide singletons whose thread stops for good on ``SCARD_E_NO_SERVICE`` (so they
never recover from a pcscd restart), print tracebacks to stderr, poll readers every
second on their own timer, and cannot be stopped before their 60 s wait ends. This
backend uses the same PC/SC calls they are built on, in a thread it owns, cancelled at
once by ``SCardCancel`` on :meth:`SmartCardBackend.close`.

pcscd not running (or stopped, or restarted): the backend is ``degraded`` with an error
saying so and retries on :attr:`Backend.clock` with a back-off (``retry_interval``,
doubled up to ``max_retry_interval``, reset once pcscd answers); it is ``running`` again
by itself once pcscd is back. No reader at all is ``degraded`` too, until one is plugged
in. Cards known before pcscd went away and still in their reader with the same ATR when
it is back fire nothing (a key card left in its slot during a pcscd restart does not
switch the room off and on); the others fire Removed / Detected.

Unlike Platypush's ``backend.scard``: the ATR filter compares bytes (the peer compared
the ASCII of the hex text, so it never matched), a list of ATRs is a list (not an
(atr, mask) pair), nothing busy-spins while a card stays on the reader, removal is
reported from the reader state (not from a failed reconnect), and every reader is
watched, including readers plugged in later.

Action: ``smartcard.status()`` (the method :meth:`SmartCardBackend.device_status`).
"""

from __future__ import annotations

import string
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit
from pihub.clock import Clock
from pihub.config.schema import Field, Schema, show
from pihub.errors import BackendUnavailable, ConfigProblem, ConfigProblems
from pihub.events import CATALOGUE, Event
from pihub.plugin import action

__all__ = ["AtrPattern", "ScardApi", "SmartCardBackend", "mask_card_number", "parse_atr"]

_DETECTED: Final = CATALOGUE.get("SmartCardDetectedEvent")
_REMOVED: Final = CATALOGUE.get("SmartCardRemovedEvent")

#: the pseudo-reader whose state changes when a reader is plugged in or out (PC/SC part 5)
PNP_READER: Final = "\\\\?PnP?\\Notification"
#: ms one SCardGetStatusChange may block; close() cancels it at once, so this only bounds
#: how long a wedged pcscd goes unnoticed
_WAIT_MS: Final = 60_000
#: PC/SC GET DATA, P1=00 (PC/SC part 3, 3.2.2.1.3): the card's UID, for contactless cards
GET_UID_APDU: Final = (0xFF, 0xCA, 0x00, 0x00, 0x00)
_MAX_ATR: Final = 33  # bytes (ISO 7816-3)

# PC/SC return codes and states (pcsclite.h); the same numbers pyscard's scard module has
SCARD_S_SUCCESS: Final = 0
SCARD_E_CANCELLED: Final = 0x80100002
SCARD_E_TIMEOUT: Final = 0x8010000A
SCARD_E_NO_SERVICE: Final = 0x8010001D
SCARD_E_SERVICE_STOPPED: Final = 0x8010001E
SCARD_E_NO_READERS_AVAILABLE: Final = 0x8010002E
SCARD_F_COMM_ERROR: Final = 0x80100013
STATE_UNAWARE: Final = 0x0000
STATE_CHANGED: Final = 0x0002
STATE_UNKNOWN: Final = 0x0004
STATE_UNAVAILABLE: Final = 0x0008
STATE_PRESENT: Final = 0x0020
STATE_MUTE: Final = 0x0200
_SERVICE_DOWN: Final = frozenset({SCARD_E_NO_SERVICE, SCARD_E_SERVICE_STOPPED, SCARD_F_COMM_ERROR})


def _hex(data: bytes) -> str:
    """``3B 8F 80``: upper-case, space-separated (as Platypush's toHexString)."""
    return data.hex(" ").upper()


@dataclass(frozen=True)
class AtrPattern:
    """One entry of the ``atr`` filter: exact bytes, or a prefix (a trailing ``*``)."""

    atr: bytes
    prefix: bool = False

    def matches(self, atr: bytes) -> bool:
        """True when ``atr`` is this ATR (or starts with it, for a prefix)."""
        return atr.startswith(self.atr) if self.prefix else atr == self.atr

    def __str__(self) -> str:
        return _hex(self.atr) + (" *" if self.prefix else "")


def parse_atr(text: object) -> AtrPattern:
    """An ``atr`` entry from config: hex bytes, spaces/colons/case ignored, optional ``*`` at the end.

    Raises:
        ValueError: a fragment naming the bad value and what is allowed (no subject).
    """
    if not isinstance(text, str):
        raise ValueError(f"must be a string of hex bytes such as '3B 8F 80 01', not {show(text)}")
    body = text.strip()
    prefix = body.endswith("*")
    digits = "".join(body.removesuffix("*").replace(":", " ").split())
    try:
        if not digits or len(digits) % 2:
            raise ValueError
        atr = bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"must be hex bytes such as '3B 8F 80 01' (spaces and case ignored, "
                         f"a trailing * for a prefix), not {show(text)}") from None
    if len(atr) > _MAX_ATR:
        raise ValueError(f"is {len(atr)} bytes long, but an ATR has at most {_MAX_ATR}: {show(text)}")
    return AtrPattern(atr, prefix)


class ScardApi(Protocol):
    """The PC/SC calls the backend makes: pyscard's ``smartcard.scard`` module has them.

    Return conventions are pyscard's: ``(hresult, value...)`` tuples; reader states are
    ``(reader, event_state, atr as a list of ints)``.
    """

    def SCardEstablishContext(self, scope: int) -> tuple[int, int]: ...  # noqa: N802
    def SCardReleaseContext(self, ctx: int) -> int: ...  # noqa: N802
    def SCardListReaders(self, ctx: int, groups: list[str]) -> tuple[int, list[str]]: ...  # noqa: N802
    def SCardGetStatusChange(self, ctx: int, timeout_ms: int,  # noqa: N802
                             states: list[tuple[str, int]]) -> tuple[int, list[tuple[str, int, list[int]]]]: ...
    def SCardCancel(self, ctx: int) -> int: ...  # noqa: N802
    def SCardConnect(self, ctx: int, reader: str, share: int, protocols: int) -> tuple[int, int, int]: ...  # noqa: N802
    def SCardTransmit(self, card: int, protocol: int, apdu: list[int]) -> tuple[int, list[int]]: ...  # noqa: N802
    def SCardDisconnect(self, card: int, disposition: int) -> int: ...  # noqa: N802
    def SCardGetErrorMessage(self, hresult: int) -> str: ...  # noqa: N802


@dataclass
class _Card:
    """A card that fired Detected (so its removal fires Removed)."""

    atr: bytes
    uid: bytes | None
    count: int  # the reader's event counter when seen (high 16 bits of the state)


_SCHEMA_FIELDS: dict[str, Field] = {
    "atr": Field((str, list, None), None,
                 doc="ATR(s) of the cards that fire events, hex (spaces and case ignored; a trailing * "
                     "matches a prefix); null: every card"),
    "read_uid": Field(bool, True, doc="ask each detected card its UID with the APDU FF CA 00 00 00"),
    "retry_interval": Field(float, 1.0, min=0.05, max=3600.0,
                            doc="seconds before the first retry when pcscd is not running"),
    "max_retry_interval": Field(float, 30.0, min=0.05, max=3600.0,
                                doc="seconds; the retry delay doubles up to this"),
}


class SmartCardBackend(Backend):
    """Card readers through pcscd: Detected/Removed events, filtered by ATR.

    See the module docstring for the config, the events and the recovery rules.

    Args:
        config: the ``smartcard`` section (validated again here, so a raw mapping works).
        clock: the time of the retry back-off (:mod:`pihub.clock`).
        scard: the PC/SC layer (default: pyscard's ``smartcard.scard``, imported at
            :meth:`open`); tests hand a fake one to drive reader plug/unplug.

    Raises:
        ConfigProblems: the section is invalid (a ``ValueError``), every problem listed.
    """

    name: ClassVar[str] = "smartcard"
    config_schema: ClassVar[Schema] = Schema(
        _SCHEMA_FIELDS, doc="Smart card readers through pcscd (PC/SC): card inserted/removed events.")

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None,
                 scard: ScardApi | None = None) -> None:
        super().__init__(config, clock=clock)
        values = self.config
        raw = values["atr"]
        entries = [raw] if isinstance(raw, str) else list(raw or [])
        errors: list[ConfigProblem] = []
        patterns: list[AtrPattern] = []
        for i, entry in enumerate(entries):
            try:
                patterns.append(parse_atr(entry))
            except ValueError as e:
                errors.append(ConfigProblem(("atr",) if isinstance(raw, str) else ("atr", i), str(e)))
        if isinstance(raw, list) and not raw:
            errors.append(ConfigProblem(("atr",), "must list at least one ATR (leave it out for every card), "
                                                  "not an empty list"))
        if values["max_retry_interval"] < values["retry_interval"]:
            errors.append(ConfigProblem(("max_retry_interval",), (
                f"must be at least retry_interval ({values['retry_interval']:g} s), "
                f"not {values['max_retry_interval']:g}")))
        if errors:
            raise ConfigProblems(errors)
        #: the ATR filter; empty: every card
        self.atr_filter: tuple[AtrPattern, ...] = tuple(patterns)
        self.read_uid: bool = values["read_uid"]
        self.retry_interval: float = values["retry_interval"]
        self.max_retry_interval: float = values["max_retry_interval"]
        self._scard = scard
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None
        self._ctx_lock = threading.Lock()
        self._ctx: int | None = None
        self._state_lock = threading.Lock()
        self._readers: list[str] = []
        self._cards: dict[str, _Card] = {}  # reader -> the reported card in it
        self._ignored: dict[str, bytes] = {}  # reader -> ATR of a card the filter rejected
        self._service = False  # pcscd answers
        self._counts = {"detected": 0, "removed": 0, "ignored_cards": 0, "dropped_events": 0,
                        "service_losses": 0, "uid_failures": 0}

    # ------------------------------------------------------------------ lifecycle
    def validate_environment(self) -> None:
        """Check that pyscard is importable (pcscd itself may come later: that is degraded).

        Raises:
            BackendUnavailable: pyscard (or libpcsclite under it) is missing.
        """
        if self._scard is not None:
            return
        try:
            from smartcard import scard  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(
                f"pyscard is not installed or cannot load libpcsclite ({e}); pip install 'pihub[smartcard]' "
                f"and apt-get install pcscd libpcsclite1") from None

    def open(self, emit: Emit) -> None:
        """Start the monitor thread ``pihub-smartcard``; it connects to pcscd and retries."""
        if self._thread is not None:
            return
        if self._scard is None:
            from smartcard import scard

            self._scard = scard
        self._emit = emit
        self.status, self.error = BackendStatus.RUNNING, None
        self._thread = BackendThread(f"pihub-{self.name}", self._run)
        self._thread.start()

    def close(self) -> None:
        """Stop the monitor (cancelling its PC/SC wait) and release the context; idempotent.

        Raises:
            RuntimeError: the monitor did not stop within 10 s (a PC/SC call that ignores SCardCancel).
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stopping.set()
            # a cancel is lost when the thread is between two waits, so repeat it until it ends
            for _ in range(200):
                self._cancel()
                thread.join(0.05)
                if not thread.is_alive():
                    break
            thread.stop(timeout=0.1)
        self._emit = None
        self.status = BackendStatus.STOPPED

    def _cancel(self) -> None:
        """Wake a blocked SCardGetStatusChange (any thread)."""
        with self._ctx_lock:
            if self._ctx is not None and self._scard is not None:
                self._scard.SCardCancel(self._ctx)

    # ------------------------------------------------------------------ monitor thread
    def _run(self, stopping: threading.Event) -> None:
        """Connect to pcscd, watch until it goes, wait (back-off), again; until stopped."""
        delay = self.retry_interval
        while not stopping.is_set():
            try:
                reason, answered = self._session(stopping)
            except Exception as e:  # a bug must not end the monitor silently
                self.log.exception("smart card monitor failed")
                reason, answered = f"smart card monitor failed: {type(e).__name__}: {e}", False
            if stopping.is_set():
                return
            if answered:
                delay = self.retry_interval  # pcscd was there: a restart, start the back-off again
            self._service_lost(reason)
            if self.clock.wait(stopping, delay):
                return
            delay = min(delay * 2, self.max_retry_interval)

    def _error(self, hresult: int) -> str:
        assert self._scard is not None
        try:
            text = self._scard.SCardGetErrorMessage(hresult)
        except Exception:  # a fake or an odd code: the number says enough
            text = "error"
        return f"{text} (0x{hresult & 0xFFFFFFFF:08X})"

    def _down_reason(self, hresult: int, answered: bool) -> str:
        """Why the session ended, for ``error``: one text for the whole of a pcscd outage
        (the first call after pcscd went fails differently from the next ones)."""
        retry = f"retrying with back-off {self.retry_interval:g} s to {self.max_retry_interval:g} s"
        if hresult in _SERVICE_DOWN:
            self.log.debug("pcscd %s: %s", "went away" if answered else "not there", self._error(hresult))
            return f"the PC/SC service pcscd is not running (start it: systemctl start pcscd.socket); {retry}"
        return f"PC/SC failed: {self._error(hresult)}; {retry}"

    def _session(self, stopping: threading.Event) -> tuple[str, bool]:
        """One PC/SC context: watch readers and cards until pcscd goes or we stop.

        Returns:
            ``(why it ended, whether pcscd answered at all)``.
        """
        scard = self._scard
        assert scard is not None
        hr, ctx = scard.SCardEstablishContext(2)  # SCARD_SCOPE_SYSTEM (pcsc-lite treats all scopes alike)
        if hr != SCARD_S_SUCCESS:
            return self._down_reason(hr, False), False
        with self._ctx_lock:
            self._ctx = ctx
        try:
            if stopping.is_set():
                return "stopped", True
            return self._watch(ctx, stopping), True
        finally:
            with self._ctx_lock:
                self._ctx = None
            scard.SCardReleaseContext(ctx)

    def _watch(self, ctx: int, stopping: threading.Event) -> str:
        """Wait for state changes and turn them into events; returns why it stopped."""
        scard = self._scard
        assert scard is not None
        hr, readers = self._list_readers(ctx)
        if hr != SCARD_S_SUCCESS:
            return self._down_reason(hr, True)
        self._service_up()
        states: dict[str, int] = dict.fromkeys(readers, STATE_UNAWARE)
        self._readers_changed(readers)
        pnp = STATE_UNAWARE
        counts: dict[str, int] = {}  # reader -> event counter seen in this session
        while not stopping.is_set():
            query = [*states.items(), (PNP_READER, pnp)]
            hr, result = scard.SCardGetStatusChange(ctx, _WAIT_MS, query)
            if hr in (SCARD_E_TIMEOUT, SCARD_E_CANCELLED):
                continue
            if hr != SCARD_S_SUCCESS:
                return self._down_reason(hr, True)
            replug = False
            for reader, event, atr in result:
                if reader == PNP_READER:
                    replug |= bool(event & STATE_CHANGED)
                    pnp = event & ~STATE_CHANGED
                elif reader in states:
                    states[reader] = event & ~STATE_CHANGED
                    self._reader_state(reader, event, bytes(atr), counts)
            if replug:
                hr, readers = self._list_readers(ctx)
                if hr != SCARD_S_SUCCESS:
                    return self._down_reason(hr, True)
                states = {r: states.get(r, STATE_UNAWARE) for r in readers}
                for gone in set(counts) - set(readers):
                    del counts[gone]
                self._readers_changed(readers)
        return "stopped"

    def _list_readers(self, ctx: int) -> tuple[int, list[str]]:
        assert self._scard is not None
        hr, readers = self._scard.SCardListReaders(ctx, [])
        if hr == SCARD_E_NO_READERS_AVAILABLE:
            return SCARD_S_SUCCESS, []
        return hr, list(readers or [])

    def _reader_state(self, reader: str, event: int, atr: bytes, counts: dict[str, int]) -> None:
        """One reader's new state: a card came, went, or was swapped."""
        count = event >> 16
        last = counts.get(reader)
        counts[reader] = count
        present = bool(event & STATE_PRESENT) and not event & (STATE_MUTE | STATE_UNAVAILABLE) and bool(atr)
        with self._state_lock:
            known = self._cards.get(reader)
            ignored = self._ignored.get(reader)
        same = present and (last is None or last == count)  # the counter moves on every insert/remove
        if known is not None and not (same and known.atr == atr):
            self._card_removed(reader, known)
        if ignored is not None and not (same and ignored == atr):
            with self._state_lock:
                self._ignored.pop(reader, None)
        if not present or (known is not None and same and known.atr == atr) or (same and ignored == atr):
            return
        if self.atr_filter and not any(p.matches(atr) for p in self.atr_filter):
            with self._state_lock:
                self._ignored[reader] = atr
            self._counts["ignored_cards"] += 1
            self.log.info("card %s in %s is not in the atr list: ignored", mask_card_number(atr), reader)
            return
        uid = self._read_uid(reader) if self.read_uid else None
        card = _Card(atr, uid, count)
        with self._state_lock:
            self._cards[reader] = card
        self._counts["detected"] += 1
        self.log.info("card %s (uid %s) detected in %s", mask_card_number(atr),
                      mask_card_number(uid) if uid else None, reader)
        self._publish(_DETECTED, reader, card)

    def _card_removed(self, reader: str, card: _Card) -> None:
        with self._state_lock:
            if self._cards.get(reader) is card:
                del self._cards[reader]
        self._counts["removed"] += 1
        self.log.info("card %s removed from %s", mask_card_number(card.atr), reader)
        self._publish(_REMOVED, reader, card)

    def _readers_changed(self, readers: list[str]) -> None:
        """The reader list (at connect or after a plug/unplug): forget the cards of readers gone."""
        with self._state_lock:
            old, self._readers = self._readers, list(readers)
            gone = [(r, c) for r, c in self._cards.items() if r not in readers]
            for r in [r for r in self._ignored if r not in readers]:
                del self._ignored[r]
        for reader, card in gone:
            self._card_removed(reader, card)
        added, removed = set(readers) - set(old), set(old) - set(readers)
        if added or removed:
            self.log.info("smart card readers: %s (plugged in: %s; unplugged: %s)", readers or "none",
                          sorted(added) or "none", sorted(removed) or "none")
        if not readers:
            self.report_degraded("no smart card reader is connected (pcscd sees none: plug one in, "
                                 "check lsusb and pcscd's log); waiting for one")
        else:
            self.report_recovered()

    def _read_uid(self, reader: str) -> bytes | None:
        """The card's UID (``FF CA 00 00 00`` -> data + ``90 00``), or None."""
        scard = self._scard
        assert scard is not None
        with self._ctx_lock:
            ctx = self._ctx
        if ctx is None:
            return None
        hr, card, protocol = scard.SCardConnect(ctx, reader, 2, 3)  # SHARE_SHARED, T0 | T1
        if hr != SCARD_S_SUCCESS:
            self._counts["uid_failures"] += 1
            self.log.debug("no uid from %s: connect: %s", reader, self._error(hr))
            return None
        try:
            hr, response = scard.SCardTransmit(card, protocol, list(GET_UID_APDU))
        finally:
            scard.SCardDisconnect(card, 0)  # SCARD_LEAVE_CARD
        if hr != SCARD_S_SUCCESS or len(response) < 3 or response[-2:] != [0x90, 0x00]:
            if hr != SCARD_S_SUCCESS:
                self._counts["uid_failures"] += 1
            # the status word only: the data before it may be the UID
            self.log.debug("no uid from %s: %s", reader, self._error(hr) if hr else
                           f"the card answered {_hex(bytes(response[-2:]))} after {max(len(response) - 2, 0)} "
                           "data bytes (not logged)")
            return None
        return bytes(response[:-2])

    def _publish(self, kind: Any, reader: str, card: _Card) -> None:
        emit = self._emit
        if emit is None:
            return
        args = {"atr": _hex(card.atr), "reader": reader, "uid": _hex(card.uid) if card.uid else None}
        if not emit(Event(kind, args, time.monotonic_ns(), self.name)):
            self._counts["dropped_events"] += 1

    def _service_up(self) -> None:
        with self._state_lock:
            self._service = True
        self.log.info("connected to pcscd")

    def _service_lost(self, reason: str) -> None:
        with self._state_lock:
            was, self._service = self._service, False
        if was:
            self._counts["service_losses"] += 1
        if self.report_degraded(reason):
            self.log.log(30 if was else 40, "%s", reason)  # WARNING after it worked, else ERROR

    # ------------------------------------------------------------------ actions
    @action(aliases=["status"])
    def device_status(self) -> dict[str, Any]:
        """The readers, the cards in them and the monitor's counters (action ``smartcard.status``).

        Returns:
            ``service`` (pcscd answers), ``error``, ``readers`` (names), ``cards``
            (``{reader: {atr, uid}}`` of the detected cards), ``ignored`` (``{reader:
            atr}`` of cards the atr filter rejected), ``atr_filter``; counters
            ``detected``, ``removed``, ``ignored_cards``, ``dropped_events``,
            ``service_losses``, ``uid_failures``.
        """
        with self._state_lock:
            return {
                "service": self._service,
                "error": self.error,
                "readers": list(self._readers),
                "cards": {r: {"atr": _hex(c.atr), "uid": _hex(c.uid) if c.uid else None}
                          for r, c in self._cards.items()},
                "ignored": {r: _hex(a) for r, a in self._ignored.items()},
                "atr_filter": [str(p) for p in self.atr_filter],
                **self._counts,
            }

    def describe_entities(self) -> list[dict[str, Any]]:
        """The readers, for the web panel, with card numbers masked (a panel is often open
        on a wall tablet; a UID is what a cloned key card needs).

        Returns:
            ``{"name": reader, "kind": "card_reader", "card", "ignored"}`` per reader pcscd
            lists: ``card`` is ``{"atr", "uid"}`` of the detected card in it (null: none),
            ``ignored`` the ATR of a card the ``atr`` filter rejected (null: none), each
            masked to its last 2 bytes (``…00 6A``; ``uid`` null when the card gave none).
        """
        with self._state_lock:
            readers = list(self._readers)
            cards = dict(self._cards)
            ignored = dict(self._ignored)
        out = []
        for r in readers:
            card = cards.get(r)
            atr = ignored.get(r)
            out.append({"name": r, "kind": "card_reader",
                        "card": {"atr": mask_card_number(card.atr),
                                 "uid": mask_card_number(card.uid) if card.uid else None}
                        if card is not None else None,
                        "ignored": mask_card_number(atr) if atr is not None else None})
        return out


def mask_card_number(data: bytes | str) -> str:
    """``…00 6A``: only the last 2 bytes (4 hex digits) of a card number, as :func:`_hex`.

    ``data`` is the number's bytes, or its hex text as the events carry it (``"04 A1 B2
    C3"``; whatever is not a hex digit is dropped, so text that is no card number shows
    at most 4 of its hex digits, never more).
    """
    if isinstance(data, str):
        digits = "".join(c for c in data if c in string.hexdigits)[-4:]
        data = bytes.fromhex(digits[len(digits) % 2:])
    return "…" + _hex(data[-2:])
