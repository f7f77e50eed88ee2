"""Home Assistant MQTT discovery: what the mqtt backend publishes so HA lists a Pi's devices.

Pure functions (no client, no threads): the mqtt backend publishes what they return.

For a daemon ``<device>`` with the default prefixes:

* each GPIO output (from the gpio backend's ``describe_entities``) is a **switch**, its
  config retained on ``homeassistant/switch/<device>/gpio_<name>/config``, its state
  (``ON``/``OFF``) on ``pihub/<device>/gpio/<name>/state``, its commands read from
  ``pihub/<device>/gpio/<name>/set``;
* each GPIO input is a **binary_sensor** (state topic as above, no commands);
* each key of a sensor reading (``SensorDataChangeEvent``: ADC channels, serial sensors)
  is a **sensor** on ``homeassistant/sensor/<device>/<source>_<key>/config`` with the unit
  and device class :data:`SENSOR_CLASSES` knows for the key's name (``temperature`` ->
  ``°C``, ``temperature``), and its value on ``pihub/<device>/<source>/<key>/state``;
* each Flic button (the flic backend's ``describe_entities``, or the first event of a
  button it did not list) is an **event** entity (HA's MQTT event platform) on
  ``homeassistant/event/<device>/flic_<address>/config`` with ``device_class: button``
  and ``event_types`` the press kinds flicd classifies (:data:`pihub.backends.flic.CLICK_KINDS`:
  ``click``, ``double_click``, ``hold``); each click is published, **not retained** (an
  event is momentary), on ``pihub/<device>/flic/<address>/state`` as
  ``{"event_type": "double_click", "btn_addr": ..., "was_queued": false}``. Press
  sequences (``FlicButtonEvent``) are open-ended lists, no event type: they only make a
  new button known;
* each smart-card reader is an **event** entity on
  ``homeassistant/event/<device>/smartcard_<reader>/config`` with ``event_types``
  ``detected``/``removed``; a card is published (not retained) on
  ``pihub/<device>/smartcard/<reader>/state`` as ``{"event_type": "detected", "reader":
  ..., "atr": "…00 6A", "uid": "…B2 C3"}``: ATR and UID masked to their last 4 hex digits
  as the panel shows them (:func:`pihub.backends.smartcard.mask_card_number`), because a
  UID opens door locks and a broker is often shared;
* MIDI is not announced: a stream of notes and control changes is no set of event types;
* every entity names the availability topic ``pihub/<device>/status`` (``online``, and
  ``offline`` as the connection's last will and on a clean stop).

Event entities follow https://www.home-assistant.io/integrations/event.mqtt/ (config keys
``event_types``, ``state_topic``, ``device_class``; a JSON payload whose ``event_type`` is
one of ``event_types``, its other keys the event's attributes). A button or reader name
longer than :data:`MAX_EVENT_NAME` characters, or not a string, gets no entity (the
events may come from another Pi over MQTT).

Object ids, and the device id in every topic, are the names with anything but
``[a-zA-Z0-9_-]`` turned into ``_`` (HA's rule for discovery topics; it also keeps ``/``,
``+`` and ``#`` out of topic levels): GPIO output ``porch.lamp`` is commanded on
``pihub/<device>/gpio/porch_lamp/set``. Two names made the same (``a.b`` and ``a_b``) would
share topics: the first announced keeps them, the other gets no entity and a warning naming
both (:class:`EntityTable`); rename one of the pins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeGuard

from pihub.backends.flic import CLICK_KINDS
from pihub.backends.smartcard import mask_card_number

__all__ = ["EVENT_FAMILIES", "MAX_EVENT_NAME", "SENSOR_CLASSES", "Entity", "EntityTable",
           "availability_topic", "event_entities", "event_entity", "event_message", "gpio_entities",
           "object_id", "sensor_entity"]

_UNSAFE: Final = re.compile(r"[^a-zA-Z0-9_-]")

#: a sensor reading's key (lower case; the part after the last ``_`` is tried too, so
#: ``kitchen_temperature`` is a temperature) -> (unit, HA device class); other keys get
#: neither.
SENSOR_CLASSES: Final[Mapping[str, tuple[str | None, str | None]]] = {
    "temperature": ("°C", "temperature"), "temp": ("°C", "temperature"), "temp_c": ("°C", "temperature"),
    "humidity": ("%", "humidity"), "rh": ("%", "humidity"),
    "pressure": ("hPa", "pressure"), "illuminance": ("lx", "illuminance"), "lux": ("lx", "illuminance"),
    "voltage": ("V", "voltage"), "volts": ("V", "voltage"), "current": ("A", "current"),
    "power": ("W", "power"), "energy": ("kWh", "energy"), "co2": ("ppm", "carbon_dioxide"),
    "battery": ("%", "battery"), "moisture": ("%", "moisture"),
}


_CARD_EVENTS: Final = {"SmartCardDetectedEvent": "detected", "SmartCardRemovedEvent": "removed"}
#: an event entity's family (the first part of its key and state topic) -> (the name it
#: is shown with before the button's or reader's name, its ``event_types``, HA device class)
EVENT_FAMILIES: Final[Mapping[str, tuple[str, tuple[str, ...], str | None]]] = {
    "flic": ("Flic", tuple(CLICK_KINDS.values()), "button"),
    "smartcard": ("card reader", tuple(_CARD_EVENTS.values()), None),
}
#: a backend entity's ``kind`` (``describe_entities``) -> its event family
_ENTITY_FAMILIES: Final = {"flic_button": "flic", "card_reader": "smartcard"}
#: events that make a Flic button known without being one of its event types
_FLIC_OTHER_EVENTS: Final = frozenset({"FlicButtonEvent", "FlicButtonConnectionEvent"})
#: characters; a longer button address or reader name gets no entity
MAX_EVENT_NAME: Final = 128


def object_id(*parts: object) -> str:
    """The parts joined with ``_``, each made safe for a discovery topic level."""
    return "_".join(_UNSAFE.sub("_", str(p)) for p in parts)


def availability_topic(state_prefix: str, device: str) -> str:
    """``<state_prefix>/<device>/status``: ``online`` / ``offline``."""
    return f"{state_prefix}/{device}/status"


class Entity:
    """One discovered entity: where its config, state and commands go.

    Attributes:
        component: HA's component (``switch``, ``binary_sensor``, ``sensor``, ``event``).
        key: what the backend knows it by (``("gpio", name)``, ``(source, key)`` or, for
            an event entity, ``(family, name)``).
        config_topic, state_topic: topics; ``command_topic`` is None when HA cannot command it.
        config: the discovery payload (JSON-able).
    """

    __slots__ = ("command_topic", "component", "config", "config_topic", "key", "state_topic")

    def __init__(self, component: str, key: tuple[str, str], device: str, *, discovery_prefix: str,
                 state_prefix: str, name: str, commandable: bool = False, **extra: Any) -> None:
        oid, dev = object_id(*key), object_id(device)
        base = f"{state_prefix}/{dev}/{object_id(key[0])}/{object_id(key[1])}"
        self.component = component
        self.key = key
        self.config_topic = f"{discovery_prefix}/{component}/{dev}/{oid}/config"
        self.state_topic = f"{base}/state"
        self.command_topic = f"{base}/set" if commandable else None
        self.config: dict[str, Any] = {
            "name": name, "unique_id": object_id("pihub", device, oid), "object_id": object_id(device, oid),
            "state_topic": self.state_topic, "availability_topic": availability_topic(state_prefix, dev),
            "device": {"identifiers": [object_id("pihub", device)], "name": device, "manufacturer": "pihub"},
            **{k: v for k, v in extra.items() if v is not None},
        }
        if self.command_topic is not None:
            self.config["command_topic"] = self.command_topic


class EntityTable:
    """The entities announced, by key, and the way back from a topic to its entity.

    Names become topic levels through :func:`object_id`, which is not one-to-one: GPIO pins
    ``a.b`` and ``a_b`` would share ``…/gpio/a_b/state`` (and its ``set``), and HA would
    see one entity switched by two pins. The first entity to claim a config, state or
    command topic keeps it; a later one with another key is refused (:meth:`add` returns
    the holder, once, for the caller to warn about both; the key is remembered, so a caller
    asks :meth:`refused` instead of building it again for every event). GPIO entities are added in the gpio
    section's order, so which pin wins is decided by the config, the same on every start.

    A command arrives on a topic, not a name: :meth:`commanded` finds the entity whose
    command topic it is, so a switch ``porch.lamp`` is reached by ``…/gpio/porch_lamp/set``.

    Not thread-safe for writers: the caller serialises :meth:`add` (readers may call
    :meth:`get` and :meth:`commanded` concurrently: each is one dict lookup).
    """

    __slots__ = ("_by_key", "_by_topic", "_refused")

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Entity] = {}
        self._by_topic: dict[str, Entity] = {}  # config, state and command topics -> their entity
        self._refused: set[tuple[str, str]] = set()  # keys whose topics another key holds

    def __len__(self) -> int:
        return len(self._by_key)

    def values(self) -> list[Entity]:
        """The entities, in the order they were added."""
        return list(self._by_key.values())

    def get(self, key: tuple[str, str]) -> Entity | None:
        """The entity added for ``key`` (raw names, as :attr:`Entity.key`), or None."""
        return self._by_key.get(key)

    def commanded(self, topic: str) -> Entity | None:
        """The entity whose command topic is exactly ``topic``, or None."""
        ent = self._by_topic.get(topic)
        return ent if ent is not None and ent.command_topic == topic else None

    def refused(self, key: tuple[str, str]) -> bool:
        """Whether an entity of ``key`` was refused for another key's topics."""
        return key in self._refused

    def add(self, ent: Entity) -> Entity | None:
        """Add ``ent``, unless its key is here already (the entity there is kept), was
        refused before, or another key holds one of its topics.

        Returns:
            the entity of another key holding one of ``ent``'s topics, the first time
            ``ent``'s key is refused (``ent`` was not added); else None.
        """
        if ent.key in self._by_key or ent.key in self._refused:
            return None
        topics = [t for t in (ent.config_topic, ent.state_topic, ent.command_topic) if t is not None]
        for topic in topics:
            holder = self._by_topic.get(topic)
            if holder is not None:
                self._refused.add(ent.key)
                return holder
        self._by_key[ent.key] = ent
        for topic in topics:
            self._by_topic[topic] = ent
        return None


def gpio_entities(device: str, devices: Iterable[Mapping[str, Any]], *, discovery_prefix: str,
                  state_prefix: str) -> list[tuple[Entity, Any]]:
    """The GPIO entities of :meth:`pihub.hub.Hub.describe_devices`, with their values now.

    Returns:
        ``(entity, value)`` pairs: outputs as switches, inputs as binary sensors; value is
        the pin's 0/1 (or a pwm duty), None when unknown.
    """
    out: list[tuple[Entity, Any]] = []
    for backend in devices:
        if backend.get("name") != "gpio":
            continue
        for e in backend.get("entities") or []:
            name = str(e.get("name") or e.get("pin"))
            if e.get("kind") == "output":
                ent = Entity("switch", ("gpio", name), device, discovery_prefix=discovery_prefix,
                             state_prefix=state_prefix, name=name, commandable=True, payload_on="ON",
                             payload_off="OFF")
            elif e.get("kind") == "input":
                ent = Entity("binary_sensor", ("gpio", name), device, discovery_prefix=discovery_prefix,
                             state_prefix=state_prefix, name=name, payload_on="ON", payload_off="OFF")
            else:
                continue
            out.append((ent, e.get("value")))
    return out


def sensor_entity(device: str, source: str, key: str, *, discovery_prefix: str, state_prefix: str) -> Entity:
    """A sensor for one key of ``source``'s readings, with the unit and class of its name."""
    low = key.lower()
    unit, device_class = SENSOR_CLASSES.get(low) or SENSOR_CLASSES.get(low.rpartition("_")[2]) or (None, None)
    return Entity("sensor", (source, key), device, discovery_prefix=discovery_prefix, state_prefix=state_prefix,
                  name=f"{source} {key}", unit_of_measurement=unit, device_class=device_class,
                  state_class="measurement")


def on_off(value: Any) -> str:
    """A pin value as HA's ``ON``/``OFF`` (a pwm duty above 0 is ON)."""
    return "ON" if value else "OFF"


def event_entity(device: str, family: str, name: str, *, discovery_prefix: str, state_prefix: str) -> Entity:
    """The event entity of one Flic button (``family`` ``flic``, ``name`` its address) or
    card reader (``smartcard``, the reader's name), as :data:`EVENT_FAMILIES` describes it.

    Raises:
        KeyError: ``family`` is not in :data:`EVENT_FAMILIES`.
    """
    label, event_types, device_class = EVENT_FAMILIES[family]
    return Entity("event", (family, name), device, discovery_prefix=discovery_prefix, state_prefix=state_prefix,
                  name=f"{label} {name}", event_types=list(event_types), device_class=device_class)


def event_entities(device: str, devices: Iterable[Mapping[str, Any]], *, discovery_prefix: str,
                   state_prefix: str) -> list[Entity]:
    """The event entities of :meth:`pihub.hub.Hub.describe_devices`: one per entity of kind
    ``flic_button`` or ``card_reader`` whose name is usable (see :data:`MAX_EVENT_NAME`)."""
    out: list[Entity] = []
    for backend in devices:
        for e in backend.get("entities") or []:
            family, name = _ENTITY_FAMILIES.get(e.get("kind")), e.get("name")
            if family is not None and _usable(name):
                out.append(event_entity(device, family, name, discovery_prefix=discovery_prefix,
                                        state_prefix=state_prefix))
    return out


def event_message(type_name: str, args: Mapping[str, Any]) -> tuple[str, str, dict[str, Any] | None] | None:
    """What a pihub event means to the event entities.

    Args:
        type_name: the event's type (``FlicButtonHoldEvent``).
        args: its attributes.

    Returns:
        ``(family, name, payload)``: the entity's family and name (the button's address,
        the reader's name) and the JSON payload for its state topic, or None as the
        payload when the event only makes the entity known (a press sequence, a
        connection change); None for events of no event entity, or whose name is not
        usable. A card's ``atr`` and ``uid`` are masked (null when the event has none).
    """
    if type_name in CLICK_KINDS or type_name in _FLIC_OTHER_EVENTS:
        addr = args.get("btn_addr")
        if not _usable(addr):
            return None
        kind = CLICK_KINDS.get(type_name)
        payload = None if kind is None else {"event_type": kind, "btn_addr": addr,
                                             "was_queued": bool(args.get("was_queued"))}
        return "flic", addr, payload
    if type_name in _CARD_EVENTS:
        reader = args.get("reader")
        if not _usable(reader):
            return None
        atr, uid = args.get("atr"), args.get("uid")
        return "smartcard", reader, {"event_type": _CARD_EVENTS[type_name], "reader": reader,
                                     "atr": mask_card_number(str(atr)) if atr else None,
                                     "uid": mask_card_number(str(uid)) if uid else None}
    return None


def _usable(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= MAX_EVENT_NAME
