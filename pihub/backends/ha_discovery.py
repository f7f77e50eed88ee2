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
* every entity names the availability topic ``pihub/<device>/status`` (``online``, and
  ``offline`` as the connection's last will and on a clean stop).

Object ids, and the device id in every topic, are the names with anything but
``[a-zA-Z0-9_-]`` turned into ``_`` (HA's rule for discovery topics; it also keeps ``/``,
``+`` and ``#`` out of topic levels).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["SENSOR_CLASSES", "Entity", "availability_topic", "gpio_entities", "object_id", "sensor_entity"]

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


def object_id(*parts: object) -> str:
    """The parts joined with ``_``, each made safe for a discovery topic level."""
    return "_".join(_UNSAFE.sub("_", str(p)) for p in parts)


def availability_topic(state_prefix: str, device: str) -> str:
    """``<state_prefix>/<device>/status``: ``online`` / ``offline``."""
    return f"{state_prefix}/{device}/status"


class Entity:
    """One discovered entity: where its config, state and commands go.

    Attributes:
        component: HA's component (``switch``, ``binary_sensor``, ``sensor``).
        key: what the backend knows it by (``("gpio", name)`` or ``(source, key)``).
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
