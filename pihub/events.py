"""The event catalogue: every event type pihub knows, and the :class:`Event` value.

Each type has a short name (``GPIOEvent``), an optional parent (hooks on a parent match
its subtypes, as in Platypush), the Platypush dotted class path it travels as on the wire,
extra aliases, its documented attributes, and its *native layout*: which attribute is
carried in which field of the 64-byte ring slot (``native/ph_event.h``) so that the C
matcher can test it. Attributes without a native field are matched in Python.

The catalogue covers every event of the mission from the start, so that hooks for any
backend compile and replay before that backend exists.

Wire names: an event is serialised with ``args.type`` = its Platypush path when it has
one (Platypush clients dispatch on that exact string), else ``pihub.events.<Name>``.
Lookups accept the short name, the Platypush path, the ``platypush.events.`` prefix form
and ``pihub.events.<Name>``.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from pihub.errors import UnknownEventType, close_matches

if TYPE_CHECKING:  # both import this module
    from pihub.engine.hooks import Hook
    from pihub.messages import Response

#: Native slot fields an attribute can live in (see ``PH_F_*`` in native/ph_event.h).
#: ``key0``/``key1`` hold interned values (str, int, bool...: equal in Python <=> equal id),
#: ``code`` a small unsigned int, ``num0..num2`` doubles.
NativeField = Literal["key0", "key1", "code", "num0", "num1", "num2"]
FIELD_INDEX: dict[str, int] = {"key0": 0, "key1": 1, "code": 2, "num0": 3, "num1": 4, "num2": 5}


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type of the catalogue.

    Attributes:
        name: the short name (``GPIOEvent``), unique.
        id: 1-based id used in ring slots; stable for a given pihub version only.
        parent: the parent type, or None for the root ``Event``.
        platypush: Platypush's dotted class path, or None when Platypush has no such event.
        aliases: other accepted names (old Platypush paths).
        attrs: documented attribute names with a one-line description each.
        native: attribute name -> native slot field, for the C matcher.
        doc: what the event means and who emits it.
    """

    name: str
    id: int
    parent: EventType | None
    platypush: str | None
    aliases: tuple[str, ...]
    attrs: Mapping[str, str]
    native: Mapping[str, NativeField]
    doc: str
    abstract: bool = False

    @property
    def wire_name(self) -> str:
        """The ``args.type`` string this event travels as."""
        return self.platypush or f"pihub.events.{self.name}"

    def is_a(self, other: EventType) -> bool:
        """True if this type is ``other`` or one of its subtypes."""
        t: EventType | None = self
        while t is not None:
            if t is other:
                return True
            t = t.parent
        return False

    def __repr__(self) -> str:
        return f"<EventType {self.name}>"


class Catalogue:
    """The registry of event types, in a fixed order (ids are 1-based positions)."""

    def __init__(self) -> None:
        self._types: list[EventType] = []
        self._by_name: dict[str, EventType] = {}

    def add(
        self,
        name: str,
        parent: str | None,
        platypush: str | None,
        attrs: Mapping[str, str],
        native: Mapping[str, NativeField] | None = None,
        doc: str = "",
        aliases: tuple[str, ...] = (),
        abstract: bool = False,
    ) -> EventType:
        """Register a type; parents must be registered first. Returns the new type."""
        par = self._by_name[parent] if parent else None
        inherited_attrs = dict(par.attrs) if par else {}
        inherited_attrs.update(attrs)
        inherited_native = dict(par.native) if par else {}
        inherited_native.update(native or {})
        for attr, fld in inherited_native.items():
            if fld not in FIELD_INDEX:
                raise ValueError(f"{name}.{attr}: unknown native field {fld!r}")
        if len(set(inherited_native.values())) != len(inherited_native):
            raise ValueError(f"{name}: two attributes share a native field")
        et = EventType(
            name=name,
            id=len(self._types) + 1,
            parent=par,
            platypush=platypush,
            aliases=aliases,
            attrs=inherited_attrs,
            native=inherited_native,
            doc=doc,
            abstract=abstract,
        )
        self._types.append(et)
        for key in (name, f"pihub.events.{name}", platypush, *aliases):
            if key:
                self._by_name[key] = et
                if key.startswith("platypush.message.event."):
                    self._by_name["platypush.events." + key.removeprefix("platypush.message.event.")] = et
        return et

    def get(self, name: str) -> EventType:
        """Look a type up by short name, Platypush path or alias.

        Raises:
            UnknownEventType: naming the closest known names.
        """
        try:
            return self._by_name[name]
        except KeyError:
            pass
        short = name.rsplit(".", 1)[-1]
        raise UnknownEventType(name, close_matches(short, [t.name for t in self._types])) from None

    def by_id(self, type_id: int) -> EventType:
        """The type with that slot id (1-based)."""
        return self._types[type_id - 1]

    def subtypes(self, et: EventType) -> list[EventType]:
        """``et`` and every type derived from it, in catalogue order."""
        return [t for t in self._types if t.is_a(et)]

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


CATALOGUE = Catalogue()
_add = CATALOGUE.add
_P = "platypush.message.event."

_add("Event", None, _P[:-1] + ".Event", {}, doc="The root type: a hook on it matches every event.",
     abstract=True)
_add("CustomEvent", "Event", _P + "custom.CustomEvent", {"subtype": "free-form name chosen by the sender"},
     {"subtype": "key0"}, doc="Fired by the event.fire action, POST /execute or a procedure.")
_add("ApplicationStartedEvent", "Event", _P + "application.ApplicationStartedEvent", {},
     doc="pihub has started every component and is ready.")
_add("ApplicationStoppingEvent", "Event", None, {},
     doc="pihub is shutting down; hooks on it run before backends close.")

_add("GPIOEvent", "Event", _P + "gpio.GPIOEvent",
     {"pin": "pin number, or its configured name", "value": "0 or 1 after the edge",
      "name": "configured input name, when the pin has one"},
     {"pin": "key0", "value": "num0", "name": "key1"}, doc="An input pin changed level (after debounce).")

_add("SensorDataEvent", "Event", _P + "sensor.SensorDataEvent",
     {"data": "the reading: a number, or a {name: value} dict", "source": "the sensor backend that read it"},
     {"source": "key0", "data": "num0"}, abstract=True, doc="Base of the sensor events.")
_add("SensorDataChangeEvent", "SensorDataEvent", _P + "sensor.SensorDataChangeEvent", {},
     doc="A reading changed by more than the tolerance since the last reported one.")
_add("SensorDataAboveThresholdEvent", "SensorDataEvent", _P + "sensor.SensorDataAboveThresholdEvent", {},
     doc="A reading crossed a threshold upwards.")
_add("SensorDataBelowThresholdEvent", "SensorDataEvent", _P + "sensor.SensorDataBelowThresholdEvent", {},
     doc="A reading crossed a threshold downwards.")

_add("MidiMessageEvent", "Event", _P + "midi.MidiMessageEvent",
     {"message": "the raw bytes as a list of ints", "device": "input port name", "port": "input port index",
      "delay": "seconds since the previous message on that port",
      "kind": "decoded kind: note_on, note_off, control_change, pitchwheel, program_change, sysex...",
      "channel": "0-15 (channel messages)", "note": "0-127 (note messages)", "velocity": "0-127 (notes)",
      "control": "controller number 0-127 (control_change)", "value": "0-127 (control_change, aftertouch)",
      "pitch": "-8192..8191 (pitchwheel)", "program": "0-127 (program_change)", "data": "sysex payload bytes"},
     {"device": "key0", "kind": "key1", "control": "code", "port": "num0", "delay": "num1", "value": "num2"},
     doc="A MIDI message arrived on an input port (raw bytes as Platypush sends them, plus mido's fields).")
_add("MidiDeviceConnectedEvent", "Event", _P + "midi.MidiDeviceConnectedEvent",
     {"device": "port name", "port": "port index"}, {"device": "key0", "port": "num0"},
     doc="A MIDI port was opened.")
_add("MidiDeviceDisconnectedEvent", "Event", _P + "midi.MidiDeviceDisconnectedEvent",
     {"device": "port name", "port": "port index"}, {"device": "key0", "port": "num0"},
     doc="A MIDI port went away.")

_add("FlicButtonEvent", "Event", _P + "flic.FlicButtonEvent",
     {"btn_addr": "button Bluetooth address aa:bb:cc:dd:ee:ff",
      "sequence": "presses, e.g. ['ShortPressEvent', 'LongPressEvent']"},
     {"btn_addr": "key0"}, aliases=(_P + "button.flic.FlicButtonEvent",),
     doc="A press sequence on one Flic button ended (sequence timeout).")
_FLIC_CLICK_ATTRS = {"btn_addr": "button Bluetooth address aa:bb:cc:dd:ee:ff",
                     "was_queued": "true when made out of range and delivered on reconnect",
                     "time_diff": "seconds since it happened (queued clicks; else 0)"}
_add("FlicButtonClickEvent", "Event", None, _FLIC_CLICK_ATTRS, {"btn_addr": "key0"},
     doc="flicd classified a single click (known once its double-click window passed).")
_add("FlicButtonDoubleClickEvent", "Event", None, _FLIC_CLICK_ATTRS, {"btn_addr": "key0"},
     doc="flicd classified a double click (two presses within 0.5 s).")
_add("FlicButtonHoldEvent", "Event", None, _FLIC_CLICK_ATTRS, {"btn_addr": "key0"},
     doc="flicd classified a hold (the button held 1 s).")
_add("FlicButtonConnectionEvent", "Event", None,
     {"btn_addr": "button Bluetooth address", "status": "connected, disconnected or not verified"},
     {"btn_addr": "key0", "status": "key1"}, doc="A Flic button's connection status changed.")

_add("SmartCardDetectedEvent", "Event", _P + "scard.SmartCardDetectedEvent",
     {"atr": "card ATR as upper-case space-separated hex", "reader": "reader name",
      "uid": "card UID (the answer to FF CA 00 00 00) as upper-case space-separated hex, or null"},
     {"atr": "key0", "reader": "key1"}, doc="A smart card was inserted (its ATR passed the atr filter).")
_add("SmartCardRemovedEvent", "Event", _P + "scard.SmartCardRemovedEvent",
     {"atr": "ATR of the removed card", "reader": "reader name", "uid": "UID of the removed card, or null"},
     {"atr": "key0", "reader": "key1"}, doc="A smart card that was reported detected was removed.")

_add("CameraEvent", "Event", _P + "camera.CameraEvent", {"device": "camera device"}, {"device": "key0"},
     abstract=True, doc="Base of the camera events.")
_add("CameraRecordingStartedEvent", "CameraEvent", _P + "camera.CameraRecordingStartedEvent",
     {"filename": "output file, if any"}, {"filename": "key1"}, doc="Recording or streaming started.")
_add("CameraRecordingStoppedEvent", "CameraEvent", _P + "camera.CameraRecordingStoppedEvent", {},
     doc="Recording or streaming stopped.")
_add("CameraVideoRenderedEvent", "CameraEvent", _P + "camera.CameraVideoRenderedEvent",
     {"filename": "the video file"}, {"filename": "key1"}, doc="A video file was written.")
_add("CameraPictureTakenEvent", "CameraEvent", _P + "camera.CameraPictureTakenEvent",
     {"filename": "the picture file"}, {"filename": "key1"}, doc="A picture was taken.")
_add("CameraFrameCapturedEvent", "CameraEvent", _P + "camera.CameraFrameCapturedEvent",
     {"filename": "the frame file"}, {"filename": "key1"}, doc="A frame was captured to a file.")
_add("CameraClientEvent", "CameraEvent", None,
     {"client": "peer address host:port", "connected": "true on connect, false on disconnect"},
     {"client": "key1", "connected": "num0"}, doc="A stream client connected or went away.")
_add("CameraStreamClientConnectedEvent", "CameraClientEvent", None, {},
     doc="A viewer connected to a camera's H.264 TCP stream (connected: true).")
_add("CameraStreamClientDisconnectedEvent", "CameraClientEvent", None,
     {"reason": "closed, reset, too slow, sent data, stream stopped or shutdown"},
     doc="A viewer of a camera's H.264 TCP stream went away or was dropped (connected: false).")

_add("WebhookEvent", "Event", _P + "http.hook.WebhookEvent",
     {"hook": "the <name> of /hook/<name>", "method": "HTTP method, upper case", "args": "query parameters",
      "data": "parsed JSON body, else text", "headers": "request headers"},
     {"hook": "key0", "method": "key1"}, doc="An HTTP request reached /hook/<name>.")
_add("MQTTMessageEvent", "Event", _P + "mqtt.MQTTMessageEvent",
     {"host": "broker host", "port": "broker port", "topic": "message topic",
      "msg": "payload, JSON-decoded when possible"},
     {"topic": "key0", "host": "key1", "port": "num0"}, doc="A message arrived on a subscribed MQTT topic.")
_add("SpeechRecognizedEvent", "Event", _P + "assistant.SpeechRecognizedEvent",
     {"phrase": "the recognised text", "assistant": "which assistant heard it"},
     {"assistant": "key0"}, doc="A voice assistant recognised a phrase; hooks match it word by word.")

_add("PushbulletEvent", "Event", _P + "pushbullet.PushbulletEvent",
     {"push_type": "note, link or file", "title": "push title", "body": "push text", "url": "link pushes' URL",
      "sender_email": "who sent it", "source_device_iden": "the sending device"},
     {"push_type": "key0", "sender_email": "key1"},
     doc="A Pushbullet push; pihub has no Pushbullet backend, the event arrives from a bridge over"
         " POST /execute or a webhook.")

_add("SerialDeviceEvent", "Event", None, {"device": "serial device path", "connected": "true or false"},
     {"device": "key0", "connected": "num0"}, doc="A serial sensor device disappeared or came back.")
_add("BackendStatusEvent", "Event", None,
     {"backend": "backend name", "status": "new status", "error": "why, when failed or degraded"},
     {"backend": "key0", "status": "key1"},
     doc="A backend changed status (running, degraded: retrying a missing device, failed).")
_add("BusOverflowEvent", "Event", None,
     {"producer": "producer name", "dropped": "events dropped since the last report"},
     {"producer": "key0", "dropped": "num0"}, doc="A producer's ring was full and events were dropped.")
_add("VariableChangedEvent", "Event", None,
     {"name": "variable name", "value": "new value (null when unset)"}, {"name": "key0"},
     doc="A persisted variable was set or unset.")

# file_watch (pihub/backends/file_watch.py). Wire names: Platypush's current file.monitor
# events (what a Platypush peer can decode today); its removed ``path.*`` (2018-2020) and
# ``inotify.*`` (2020-2023) names are aliases.
_PATH_ATTRS = {"path": "full path of the entry that changed", "is_directory": "true for a directory",
               "watch_path": "the configured path that saw it"}
_add("PathEvent", "Event", _P + "file.FileSystemEvent", _PATH_ATTRS, {"path": "key0", "watch_path": "key1"},
     aliases=(_P + "inotify.InotifyEvent",), abstract=True, doc="Base of the file watch events.")
for _kind, _ino, _what in (("Create", "Create", "was created (or moved in)"),
                           ("Modify", "Modify", "was modified (coalesced: see changes)"),
                           ("Delete", "Delete", "was deleted (or moved out)"),
                           ("Moved", "Moved", "was moved within the watched paths")):
    _add(f"Path{_kind}Event", "PathEvent", _P + f"file.FileSystem{_kind}Event",
         {"new_path": "where it was moved to"} if _kind == "Moved" else
         {"changes": "changes merged into this event (1: a single one)"} if _kind == "Modify" else {},
         aliases=(_P + f"path.Path{_kind}Event", _P + f"inotify.Inotify{_ino}Event"),
         doc=f"A watched file or directory {_what}.")

# rss (pihub/backends/rss.py)
_add("NewFeedEntryEvent", "Event", _P + "rss.NewFeedEntryEvent",
     {"feed_url": "the feed's URL", "feed_title": "the feed's title", "id": "the entry's id (guid)",
      "url": "the entry's link", "title": "entry title", "published": "ISO 8601 UTC time, or null",
      "summary": "entry summary", "content": "entry content, or null", "author": "author, or null",
      "tags": "tag terms"},
     {"feed_url": "key0"}, doc="A new entry appeared in a polled RSS/Atom feed (once, across restarts).")
_add("FeedUpdateEvent", "Event", _P + "http.rss.NewFeedEvent",
     {"source_url": "the feed's URL", "source_title": "the feed's title", "title": "the feed's title",
      "response": "the new entries, as NewFeedEntryEvent gives each", "request": "{url, method}",
      "skipped": "new entries past max_entries, marked seen without an event"},
     {"source_url": "key0"}, aliases=("NewFeedEvent",),
     doc="A feed poll found new entries (one event per poll, after their NewFeedEntryEvents).")

# music.mpd (pihub/backends/mpd.py); Platypush's music.* names
_add("MusicEvent", "Event", _P + "music.MusicEvent",
     {"status": "the player's status (mpd's: state, volume, song, elapsed... as strings)",
      "track": "the current track (file, title, artist, album, id...; {} when none)",
      "plugin_name": "the player plugin, music.mpd"},
     {"plugin_name": "key0"}, abstract=True, doc="Base of the music player events.")
_add("MusicPlayEvent", "MusicEvent", _P + "music.MusicPlayEvent", {}, doc="The player started or resumed playing.")
_add("MusicPauseEvent", "MusicEvent", _P + "music.MusicPauseEvent", {}, doc="The player paused.")
_add("MusicStopEvent", "MusicEvent", _P + "music.MusicStopEvent", {}, doc="The player stopped.")
_add("NewPlayingTrackEvent", "MusicEvent", _P + "music.NewPlayingTrackEvent", {},
     doc="A track started playing (not a resume from pause).")
_add("VolumeChangeEvent", "MusicEvent", _P + "music.VolumeChangeEvent", {"volume": "the new volume, 0-100"},
     {"volume": "num0"}, doc="The player's volume changed.")



class Reply:
    """A one-shot answer to whoever published an event and waits (a webhook's request).

    The dispatcher decides, from its one match of the event, which hook answers
    (:attr:`hook`, the first hook it selects) or that none does (:meth:`resolve` with
    None); the answering hook's run resolves it with its Response. Only the first
    :meth:`resolve` counts. Thread-safe.
    """

    __slots__ = ("_answer", "_done", "_lock", "hook")

    def __init__(self) -> None:
        #: the hook that answers, once the dispatcher chose it.
        self.hook: Hook | None = None
        self._answer: Response | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def resolve(self, answer: Response | None) -> None:
        """Answer with ``answer`` (a Response, or None: no hook handles the event); later calls do nothing."""
        with self._lock:
            if self._done.is_set():
                return
            self._answer = answer
            self._done.set()

    @property
    def done(self) -> bool:
        """True once resolved."""
        return self._done.is_set()

    def wait(self, timeout: float) -> tuple[bool, Response | None]:
        """Wait up to ``timeout`` seconds; ``(True, answer)`` when resolved, else ``(False, None)``."""
        if self._done.wait(timeout):
            return True, self._answer
        return False, None


#: 16 random hex characters drawn once per process: ids of two runs never collide.
_ID_PREFIX: Final = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def new_event_id() -> str:
    """A 32-hex-character id, unique to this process and run: the per-process random
    prefix, then a counter (16 hex). Not guessable from outside the run (Platypush uses
    ``random``), and one ``os.urandom`` per process rather than per id: a syscall per event
    on the dispatcher thread cost about 1 µs."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


# ------------------------------------------------------------- retained size
#: Bytes :func:`approx_size` charges for an object header (a container, a str), for a
#: value it does not look into (an int, a float, None, an unknown object, or an item past
#: its depth or visit limits), and per slot of a list/tuple, a dict and a set.
_HEADER: Final = 56
_SCALAR: Final = 32
_SLOT: Final = 8
_DICT_SLOT: Final = 40
_SET_SLOT: Final = 16
#: Bytes of an Event object besides its args: the object, its id, timestamp and source.
_EVENT_BYTES: Final = 256
#: How far :func:`approx_size` looks: items sampled per container, container levels, and
#: values visited in all per call (past either limit a container counts its slots only,
#: with each item charged ``_SCALAR``).
APPROX_SAMPLE: Final = 8
APPROX_DEPTH: Final = 4
APPROX_VISITS: Final = 64


def approx_size(value: Any) -> int:
    """About how many bytes of memory ``value`` keeps alive, in bounded work.

    Approximate by design: it exists to bound what the event rings retain (the websocket
    replay ring, the hook traces), not to measure. What it counts: a str, bytes or
    bytearray as its ``len`` plus a header (a non-ASCII str really takes 2-4 bytes a
    character); a list/tuple/dict/set as a header plus a few bytes per slot, plus its
    items. A container of at most :data:`APPROX_SAMPLE` items has all of them looked at; a
    bigger one has :data:`APPROX_SAMPLE` of them (evenly spaced in a list/tuple, the first
    ones of a dict/set) and their total is scaled up to its length. Below
    :data:`APPROX_DEPTH` levels of nesting, or once :data:`APPROX_VISITS` values were
    looked at, a container counts its slots and ``_SCALAR`` per item. An item that is an
    int from -5 to 256, a bool or None counts nothing past its slot (CPython shares them);
    anything else (another int, a float, other objects) counts ``_SCALAR``. Shared objects are counted at
    each reference. So the work is bounded whatever ``value`` is (at most
    :data:`APPROX_VISITS` containers looked into, each for at most :data:`APPROX_SAMPLE`
    items or key/value pairs), and a large container whose big items sit away from the
    sampled ones is under-counted: the rings keep their count bounds too.
    """
    return _approx(value, APPROX_DEPTH, [APPROX_VISITS])


def _approx(value: Any, depth: int, left: list[int]) -> int:
    """:func:`approx_size` of ``value`` with ``depth`` container levels and ``left[0]``
    visits still allowed (``left`` is shared by the whole walk)."""
    left[0] -= 1
    t = type(value)
    if isinstance(value, (str, bytes, bytearray)):
        return _HEADER + len(value)
    if isinstance(value, Mapping):
        per = _DICT_SLOT
    elif t is list or t is tuple:
        per = _SLOT
    elif t is set or t is frozenset:
        per = _SET_SLOT
    else:
        return _SCALAR
    n = len(value)
    size = _HEADER + n * per
    if depth <= 0 or left[0] <= 0:
        return size + n * _SCALAR
    k = min(n, APPROX_SAMPLE)
    if per == _DICT_SLOT:  # keys, then values (a dict's order is the same for both)
        if n > k:
            sample: Iterable[Any] = itertools.chain(itertools.islice(value, k),
                                                    itertools.islice(value.values(), k))
        else:
            sample = itertools.chain(value, value.values())
    elif per == _SLOT and n > k:
        sample = [value[i * n // k] for i in range(k)]  # by index: an islice would walk all n
    else:
        sample = itertools.islice(value, k)
    got = 0
    for item in sample:
        ti = type(item)
        if ti is str:
            got += _HEADER + len(item)
        elif ti is int:
            got += 0 if -5 <= item <= 256 else _SCALAR  # CPython shares the small ints
        elif ti is float:
            got += _SCALAR
        elif ti is bool or item is None:
            pass  # singletons: the slot is all
        else:
            got += _approx(item, depth - 1, left)
    return size + got * n // k if k else size


@dataclass(slots=True)
class Event:
    """An event: a type and its attributes.

    Attributes:
        type: the catalogue type.
        args: attribute values (never contains ``type``).
        ts_ns: CLOCK_MONOTONIC nanoseconds when it happened (the slot clock).
        source: who emitted it (backend name, ``http``, ``procedure``...).
        id: a unique id, made lazily for the wire.
        timestamp: wall-clock seconds since the epoch, for the wire.
    """

    type: EventType
    args: dict[str, Any]
    ts_ns: int = 0
    source: str = ""
    id: str = ""
    timestamp: float = field(default_factory=time.time)
    #: set by :meth:`pihub.hub.Hub.webhook`: who is waiting for this event's answer.
    reply: Reply | None = field(default=None, repr=False, compare=False)
    #: bytes of the message it was decoded from, when it came over a wire (an MQTT payload,
    #: a request body, a websocket or TCP message; 0 otherwise): :meth:`approx_size` never
    #: answers less, since sampling may miss where a hostile message put its bulk, while
    #: what JSON decodes to takes at least as many bytes as its text.
    wire_size: int = field(default=0, repr=False, compare=False)
    #: :meth:`approx_size`'s answer once asked (-1 before).
    _size: int = field(default=-1, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, type_name: str, source: str = "", **args: Any) -> Event:
        """Build an event by type name: ``Event.of("GPIOEvent", pin=17, value=1)``."""
        return cls(CATALOGUE.get(type_name), args, time.monotonic_ns(), source)

    def to_dict(self, device_id: str = "") -> dict[str, Any]:
        """The Platypush event envelope (``{"type": "event", "args": {"type": ...}}``)."""
        if not self.id:
            self.id = new_event_id()
        return {
            "type": "event",
            "target": device_id,
            "origin": self.source or device_id,
            "id": self.id,
            "_timestamp": self.timestamp,
            "args": {"type": self.type.wire_name, **self.args},
        }

    def approx_size(self) -> int:
        """About how many bytes this event keeps alive: :func:`approx_size` of its args plus
        the event object's own, in bounded work, and never less than :attr:`wire_size`.
        Worked out at the first call and cached: the rings that keep events charge it when
        they take one, so a later change of ``args`` is not counted."""
        size = self._size
        if size < 0:
            args = max(approx_size(self.args), self.wire_size)
            size = self._size = _EVENT_BYTES + len(self.source) + args
        return size

    def context(self) -> dict[str, Any]:
        """The names a hook sees: ``event`` (this event as a dict) plus each attribute."""
        return {**self.args, "event": {"type": self.type.name, "args": self.args, "source": self.source,
                                        "origin": self.source, "id": self.id, "_timestamp": self.timestamp}}

    def __repr__(self) -> str:
        return f"<Event {self.type.name} {self.args!r}>"
