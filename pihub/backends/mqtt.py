"""MQTT: topics in as events, messages out, and requests between pihub daemons.

Config (section ``mqtt``; Platypush's ``backend.mqtt`` is read under this name)::

    mqtt:
      host: 127.0.0.1              # the broker
      port: 1883
      username: pi-kitchen         # optional; the broker user
      password: !env MQTT_PASSWORD # a secret: never in logs, errors or /status
      client_id: pihub-kitchen     # default: pihub-<device_id>
      keepalive: 60                # s between pings when nothing else is sent
      qos: 0                       # of subscriptions, RPC requests and responses, and the
                                   # default of mqtt.publish (0, 1 or 2)
      tls: false                   # TLS; implied by ca_certs/certfile
      ca_certs: /etc/pihub/ca.pem  # CA that signed the broker's certificate (Platypush: tls_cafile);
                                   # without it: the system's CAs
      certfile: ...                # client certificate and key (tls_certfile, tls_keyfile)
      keyfile: ...
      tls_insecure: false          # true skips the host name check (never the chain check)
      topics: [home/+/temp]        # subscribed; each message is an MQTTMessageEvent
      listeners:                   # Platypush's form of the same: [{topics: [...]}]
        - topics: [home/door]
      rpc: true                    # serve requests on <run_topic_prefix>/<device_id>
      run_topic_prefix: platypush_bus_mq   # Platypush's backend.mqtt 'topic'
      trusted_users: [pi-hall]     # broker users whose requests need no token (see below)
      peer_tokens: {hall: !env HALL_TOKEN}  # tokens mqtt.execute sends to those devices
      timeout: 30                  # s mqtt.execute waits for a response
      rpc_workers: 2               # threads running requests that arrived by MQTT
      rpc_queue: 16                # requests waiting at most; more are refused ("busy")
      max_payload: 262144          # bytes; longer messages are dropped (below)
      protocol: "5"                # MQTT version: "5", or "3.1.1" for a broker without 5
      discovery: false             # Home Assistant MQTT discovery (below)
      discovery_prefix: homeassistant
      state_prefix: pihub          # entities' state/command topics and the availability topic
      connect_timeout: 5           # s for the TCP connect and TLS handshake
      reconnect_interval: 1        # s before the first reconnect; doubles per failed attempt...
      max_reconnect_interval: 30   # ...up to this

Size bound: over MQTT 5 (the default; Mosquitto has it since 1.6) pihub asks the broker for
packets of at most ``max_payload`` + 96 KiB (MQTT 5's Maximum Packet Size: room for the
longest topic), so the broker drops a longer message instead of sending it, and one
client publishing 100 MB cannot make pihub read 100 MB; a message just over
``max_payload`` that still reaches pihub is dropped and counted (``oversized``). Over
MQTT 3.1.1 there is no such field: every message is read whole, then dropped and counted
when too long, so bound it at the broker (Mosquitto's ``message_size_limit``).

Events: a message on a subscribed topic is ``MQTTMessageEvent{host, port, topic, msg}``
(Platypush's ``platypush.message.event.mqtt.MQTTMessageEvent`` is its alias). ``msg`` is
the payload JSON-decoded when it is JSON, else its UTF-8 text, else ``0x``-prefixed hex.

Actions: ``mqtt.publish(topic, msg, qos, retain)`` (a dict or list is sent as JSON),
``mqtt.subscribe(topic)`` (kept across reconnects), ``mqtt.execute(target, action, args,
token, timeout)`` and ``mqtt.status``.

**Requests between daemons** (Platypush's topics and envelopes). A daemon subscribes to
``<prefix>/<device_id>``; a request envelope published there (``{"type": "request",
"action": ..., "args": ..., "id": ..., "token": ...}``) runs through the hub's ``execute``
exactly as ``POST /execute`` runs it, and its response envelope is published on
``<prefix>/<device_id>/responses/<id>``, where Platypush's ``mqtt.send_message`` waits for
it. An event envelope there is published on this daemon's bus (so hooks here see another
Pi's events). Unlike Platypush, whose run topic executes anything anyone publishes, a
message is only accepted:

* with a ``token`` field holding a valid API token of *this* daemon with the ``control``
  scope (what ``POST /execute`` asks), as Platypush's own clients put it; or
* on ``<prefix>/<device_id>/from/<user>`` where ``<user>`` is in ``trusted_users``. The
  broker, not pihub, knows who published: MQTT 3.1.1 carries no sender. So it is the
  **operator's duty** to let each broker user publish only under its own name, with this
  line in mosquitto's ``acl_file`` (``%u`` is the connected user name)::

      pattern write platypush_bus_mq/+/from/%u

  and to grant ``platypush_bus_mq/#`` otherwise only as the deployment needs. Without such
  an ACL, anyone who may publish on the broker can claim any trusted name: leave
  ``trusted_users`` empty and use tokens.

Anything else is refused with an error response (no action runs) and logged, at most once
a minute with the count. Requests wait in a bounded queue (``rpc_queue``) for
``rpc_workers`` threads; a flood beyond it is refused ("busy"), and error responses are
themselves limited to :data:`ERROR_RESPONSES_PER_S`, so a flood grows no queue.

A request with another ``target`` given to the hub (``POST /execute``, the websocket)
goes there through ``mqtt.execute``. ``mqtt.execute(target, action, args)`` publishes a request to ``<prefix>/<target>`` with
``token`` (the argument, else ``peer_tokens[target]``), or without a token on
``<prefix>/<target>/from/<username>`` (this daemon must then be a trusted user of the
target), and returns the target's response (its output and errors) or fails after
``timeout`` seconds. It subscribes once per target to ``<prefix>/<target>/responses/+``.

Status: while the broker is unreachable, refuses the login, or fails the TLS handshake,
the backend is ``degraded`` with the reason (the user name may appear, the password
never) and reconnects with back-off on :attr:`Backend.clock`; on reconnect it subscribes
again to every topic (a clean session: the broker kept nothing).

The client is paho-mqtt (see pyproject.toml), driven by pihub's own reader thread
(``pihub-mqtt``) with ``Client.loop``, not paho's ``loop_start``: paho's reconnect loop
sleeps on its own, and the back-off here must run on the clock. Only that thread writes
to the socket: other threads (actions) queue packets and wake it, as paho's external-loop
mode does (an ``on_socket_register_write`` callback), so two threads never interleave
bytes of a TLS stream.

**Home Assistant discovery** (``discovery: true``, in a hub): on each connect, and again
once every backend is open, the GPIO outputs (switches), inputs (binary sensors), the
numeric keys of sensor readings (sensors with unit and device class), the Flic buttons and
the smart-card readers (event entities) are announced as retained configs under
``<discovery_prefix>/<component>/<device_id>/<object>/config``
(:mod:`pihub.backends.ha_discovery`), with their states retained on
``<state_prefix>/<device_id>/...``. A Flic click (``click``/``double_click``/``hold``) or
a card detected/removed is published there as an event, not retained, the card's ATR and
UID masked to their last 4 hex digits; a button or reader first seen in an event is
announced before its event (Home Assistant may miss that first event while it sets the
entity up). MIDI is not announced. ``<state_prefix>/<device_id>/status`` is ``online``,
and ``offline`` as the last will and on a clean stop. ``ON``/``OFF`` on a switch's command
topic runs ``gpio.write`` through the hub's request gate as a trusted sender: it is the
**operator's duty** to let only Home Assistant's broker user publish on
``<state_prefix>/<device_id>/gpio/+/set``. Commands naming a pin that is no announced
switch, or a payload other than ON/OFF, are ignored, counted (``refused``) and logged as a
warning naming the topic (at most once a minute, with the number held back). A command is
found by its topic, whose pin level is the name made safe (``porch.lamp`` ->
``…/gpio/porch_lamp/set``); two names made the same get one entity, the first in the
config, and a warning naming both (:class:`~pihub.backends.ha_discovery.EntityTable`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import queue
import socket
import ssl
import threading
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from pihub.backends.base import BackendStatus, BackendThread, Emit, RequestChannel
from pihub.backends.ha_discovery import (
    Entity,
    EntityTable,
    availability_topic,
    event_entities,
    event_entity,
    event_message,
    gpio_entities,
    object_id,
    on_off,
    sensor_entity,
)
from pihub.clock import Clock
from pihub.config.schema import Field, Schema, dict_of, show
from pihub.errors import ActionError, BackendUnavailable, ConfigProblem, ConfigProblems, shorten
from pihub.events import CATALOGUE, Event, new_event_id
from pihub.logs import LogLimiter
from pihub.messages import FINITE_JSON, Response, dumps
from pihub.plugin import action

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["ERROR_RESPONSES_PER_S", "MqttBackend", "check_topic", "decode_payload", "encode_payload"]

_MESSAGE_EVENT: Final = CATALOGUE.get("MQTTMessageEvent")
#: error responses (refused or busy requests) sent per second at most; beyond, requests
#: are dropped unanswered (counted), so a flood cannot make the daemon flood back.
ERROR_RESPONSES_PER_S: Final = 20
_REFUSAL_LOG_INTERVAL: Final = 60.0  # s between two log lines about refused requests
_MAX_ID: Final = 128  # characters of a request id (it becomes a topic level)
_MAX_TARGETS: Final = 64  # devices mqtt.execute keeps a response subscription for
_LOOP_TIMEOUT: Final = 1.0  # s paho's select waits; publish/close wake it earlier
#: bytes of an MQTT PUBLISH besides its payload: fixed header (5), the longest topic
#: (2 + 65535), packet id (2), and room for the broker's properties (32 KiB): 96 KiB
_PACKET_OVERHEAD: Final = 5 + 2 + 65535 + 2 + 32768
_MQTT_MAX_PACKET: Final = 268435460  # 256 MiB + the 5-byte fixed header: MQTT's own limit
_MAX_ENTITIES: Final = 512  # HA entities announced at most (sensor keys, buttons, readers come from events)
_CLASH_LOG_BURST: Final = 8  # warnings about names sharing HA topics per _REFUSAL_LOG_INTERVAL


def check_topic(topic: object, *, wildcards: bool) -> str | None:
    """Why ``topic`` is not a valid MQTT topic (``wildcards``: a subscription filter), or None.

    The rules of MQTT 3.1.1 §4.7: not empty, at most 65535 UTF-8 bytes, no NUL; in a filter
    ``#`` only as the whole last level and ``+`` only as a whole level; in a topic name
    neither.
    """
    if not isinstance(topic, str) or not topic:
        return "must be a non-empty string"
    if "\0" in topic:
        return "must not contain a NUL character"
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return "is longer than 65535 bytes"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if not wildcards and ("+" in level or "#" in level):
            return "must not contain the wildcards + or # (a topic to publish to)"
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "may use # only as the whole last level (home/#)"
        if "+" in level and level != "+":
            return "may use + only as a whole level (home/+/temp)"
    return None


def _topic_field(value: str, path: tuple[Any, ...], errors: list[ConfigProblem], *, wildcards: bool) -> None:
    why = check_topic(value, wildcards=wildcards)
    if why:
        errors.append(ConfigProblem(path, f"{why}, not {show(value)}"))


def _level_ok(name: str) -> bool:
    """True when ``name`` can be one topic level: no / + # or NUL, not empty."""
    return bool(name) and not any(c in name for c in "/+#\0")


_LISTENER: Final = Schema({
    "topics": Field(list[str], doc="topic filters to subscribe to"),
    "host": Field(str, None, doc="must be the section's host (one broker per section)"),
    "port": Field(int, None, min=1, max=65535, doc="must be the section's port"),
}, doc="Platypush's listener: topics on the section's broker.")

_SCHEMA: Final = Schema({
    "host": Field(str, "127.0.0.1", doc="broker host name or address"),
    "port": Field(int, 1883, min=1, max=65535, doc="broker TCP port (8883 is the usual TLS port)"),
    "username": Field(str, None, doc="broker user name"),
    "password": Field(str, None, secret=True, doc="broker password (use !env or !file)"),
    "client_id": Field(str, None, doc="MQTT client id; default pihub-<device_id>"),
    "keepalive": Field(int, 60, min=5, max=65535, doc="seconds between pings on an idle connection"),
    "qos": Field(int, 0, choices=(0, 1, 2), doc="QoS of subscriptions, RPC messages and mqtt.publish's default"),
    "tls": Field(bool, False, doc="connect with TLS (implied by ca_certs or certfile)"),
    "ca_certs": Field(str, None, aliases=("tls_cafile",), doc="PEM file of the CA that signed the broker's "
                                                              "certificate; default: the system's CAs"),
    "certfile": Field(str, None, aliases=("tls_certfile",), doc="PEM client certificate (TLS client auth)"),
    "keyfile": Field(str, None, aliases=("tls_keyfile",), doc="PEM key of certfile"),
    "tls_insecure": Field(bool, False, doc="skip the check that the certificate names host (never the chain)"),
    "topics": Field(list[str], [], doc="topic filters subscribed; each message is an MQTTMessageEvent"),
    "listeners": Field(types.GenericAlias(list, (_LISTENER,)), [], doc="Platypush's listeners: more topic filters, same broker"),
    "rpc": Field(bool, True, aliases=("subscribe_default_topic",),
                 doc="serve authenticated requests on <run_topic_prefix>/<device_id>"),
    "run_topic_prefix": Field(str, "platypush_bus_mq", aliases=("topic",),
                              doc="the request topic prefix (Platypush's backend.mqtt topic)"),
    "trusted_users": Field(list[str], [], doc="broker users whose requests on <prefix>/<device_id>/from/<user> "
                                              "need no token (needs the broker ACL in the docs)"),
    "peer_tokens": Field(dict_of(str), {}, secret=True, doc="device id -> that device's API token, "
                                                            "sent by mqtt.execute"),
    "timeout": Field(float, 30.0, min=0.01, max=3600.0, doc="seconds mqtt.execute waits for a response"),
    "rpc_workers": Field(int, 2, min=1, max=16, doc="threads running requests that arrived by MQTT"),
    "rpc_queue": Field(int, 16, min=1, max=1024, doc="requests waiting at most; more are refused as busy"),
    "max_payload": Field(int, 262144, min=1, max=268435455, doc="bytes; longer incoming messages are dropped"),
    "protocol": Field(str, "5", choices=("5", "3.1.1"),
                      doc="MQTT version; 5 lets the broker drop messages over max_payload unsent"),
    "connect_timeout": Field(float, 5.0, min=0.1, max=120.0, doc="seconds for the TCP connect and TLS handshake"),
    "reconnect_interval": Field(float, 1.0, min=0.01, max=3600.0,
                                doc="seconds before the first reconnect; doubles per failed attempt"),
    "max_reconnect_interval": Field(float, 30.0, min=0.01, max=3600.0,
                                    doc="seconds; the longest wait between reconnect attempts"),
    "discovery": Field(bool, False, doc="Home Assistant MQTT discovery of GPIO pins, sensor readings, Flic "
                                        "buttons and card readers"),
    "discovery_prefix": Field(str, "homeassistant", doc="Home Assistant's discovery topic prefix"),
    "state_prefix": Field(str, "pihub", doc="prefix of the entities' state, command and availability topics"),
}, doc="MQTT: topics as MQTTMessageEvent, mqtt.publish, and authenticated requests between daemons.")


class _Lost(Exception):
    """The broker connection failed or ended (the message says why, never a secret)."""


@dataclass(slots=True)
class _Pending:
    """A request mqtt.execute waits for."""

    done: threading.Event = field(default_factory=threading.Event)
    response: dict[str, Any] | None = None


def _connect_error(host: str, port: int, exc: OSError, tls: bool) -> str:
    """Why a connect to the broker failed, saying what to check."""
    if tls and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return f"TLS handshake with {host}:{port} failed (connection reset); is that port a TLS listener?"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the certificate of {host}:{port} failed verification ({exc.verify_message}); "
                f"check mqtt.ca_certs names the CA that signed it, and that it names host {host!r}")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {host}:{port} failed ({exc.reason or exc}); is that port a TLS listener?"
    if exc.errno == errno.ECONNREFUSED:
        return f"connection refused by {host}:{port} (is the broker running and listening there?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {host}:{port} (host down or firewalled?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve broker host {host!r}: {exc.strerror}"
    return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


def _request_id(payload: bytes | bytearray) -> str | None:
    """The ``id`` of a request envelope, when it can be read (to address an error response)."""
    try:
        rid = json.loads(payload).get("id")
    except (ValueError, RecursionError, AttributeError):
        return None
    return rid if isinstance(rid, str) else None


def decode_payload(payload: bytes | bytearray) -> Any:
    """An MQTT payload as an event's ``msg``: JSON when it is JSON, else text, else ``0x`` hex.

    ``NaN``, ``Infinity`` and numbers beyond a double's range (``1e999``), which Python's
    JSON reader accepts but JSON has not, read as None, as a serial sensor's line does.
    """
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + bytes(payload).hex()
    try:
        return FINITE_JSON.decode(text)
    except (ValueError, RecursionError):
        return text


def encode_payload(msg: Any) -> bytes:
    """What mqtt.publish sends: bytes as they are, text as UTF-8, anything else as JSON."""
    if isinstance(msg, (bytes, bytearray)):
        return bytes(msg)
    if isinstance(msg, str):
        return msg.encode("utf-8")
    return dumps(msg).encode("utf-8")


class MqttBackend(RequestChannel):
    """An MQTT client: listeners, publish, and authenticated RPC (see the module docstring).

    Args:
        config: the ``mqtt`` section (validated again here, so a raw mapping works).
        clock: the time of reconnect back-offs, mqtt.execute's timeout and the refusal
            limits (tests: a ManualClock).

    Raises:
        ConfigProblems: the section is invalid (a ``ValueError``), every problem listed.
    """

    name: ClassVar[str] = "mqtt"
    config_schema: ClassVar[Schema] = _SCHEMA

    def __init__(self, config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(config, clock=clock)
        v = self.config
        errors: list[ConfigProblem] = []
        if not v["host"].strip():
            errors.append(ConfigProblem(("host",), "must be a host name or address, not an empty string"))
        filters: list[str] = []
        for i, topic in enumerate(v["topics"]):
            _topic_field(topic, ("topics", i), errors, wildcards=True)
            filters.append(topic)
        for i, listener in enumerate(v["listeners"]):
            for key, mine in (("host", v["host"]), ("port", v["port"])):
                if listener[key] is not None and listener[key] != mine:
                    errors.append(ConfigProblem(("listeners", i, key), (
                        f"must be the section's {key} {mine!r} (one broker per mqtt section), "
                        f"not {show(listener[key])}")))
            for j, topic in enumerate(listener["topics"]):
                _topic_field(topic, ("listeners", i, "topics", j), errors, wildcards=True)
                filters.append(topic)
        why = check_topic(v["run_topic_prefix"], wildcards=False)
        if why:
            errors.append(ConfigProblem(("run_topic_prefix",), f"{why}, not {show(v['run_topic_prefix'])}"))
        for i, user in enumerate(v["trusted_users"]):
            if not _level_ok(user):
                errors.append(ConfigProblem(("trusted_users", i), f"must be a broker user name without / + # "
                                                                  f"(it is a topic level), not {show(user)}"))
        for device in v["peer_tokens"]:
            if not _level_ok(device):
                errors.append(ConfigProblem(("peer_tokens", device), "must be keyed by a device id without "
                                                                     "/ + # (it is a topic level)"))
        if v["keyfile"] and not v["certfile"]:
            errors.append(ConfigProblem(("keyfile",), "needs certfile (the client certificate it belongs to)"))
        if v["password"] is not None and v["username"] is None:
            errors.append(ConfigProblem(("password",), "needs username (the broker user it belongs to)"))
        if v["max_reconnect_interval"] < v["reconnect_interval"]:
            errors.append(ConfigProblem(("max_reconnect_interval",), (
                f"must be at least reconnect_interval ({v['reconnect_interval']:g} s), "
                f"not {v['max_reconnect_interval']:g}")))
        for key in ("discovery_prefix", "state_prefix"):
            why = check_topic(v[key], wildcards=False)
            if why:
                errors.append(ConfigProblem((key,), f"{why}, not {show(v[key])}"))
        if errors:
            raise ConfigProblems(errors)
        self.host: str = v["host"]
        self.port: int = v["port"]
        self.qos: int = v["qos"]
        self.prefix: str = v["run_topic_prefix"]
        self.use_tls: bool = bool(v["tls"] or v["ca_certs"] or v["certfile"])
        self.reconnect_interval: float = v["reconnect_interval"]
        self.max_reconnect_interval: float = v["max_reconnect_interval"]
        self.trusted_users: frozenset[str] = frozenset(v["trusted_users"])
        self._lock = threading.Lock()  # everything below that other threads read
        self._filters: list[str] = list(dict.fromkeys(filters))
        self._targets: set[str] = set()  # devices whose responses we subscribe to
        self._pending: dict[str, _Pending] = {}
        self._suback: dict[int, threading.Event] = {}
        self._client: paho.Client | None = None
        self._emit: Emit | None = None
        self._thread: BackendThread | None = None
        self._workers: list[BackendThread] = []
        #: work for the RPC workers: served requests, HA commands and announcements
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.discovery: bool = v["discovery"]
        self._describe_devices: Callable[[], list[dict[str, Any]]] | None = None
        self._entities = EntityTable()  # HA switches, binary sensors, sensors; written under _lock
        self._events = EntityTable()  # HA event entities: (family, name) -> entity; written under _lock
        self._clash_log = LogLimiter(_CLASH_LOG_BURST, _REFUSAL_LOG_INTERVAL, self.clock.now)
        self._command_log = LogLimiter(1, _REFUSAL_LOG_INTERVAL, self.clock.now)  # ignored HA commands
        self._broker: Literal["connecting", "connected", "unreachable", "stopped"] = "connecting"
        self._connected = threading.Event()
        self._refused: str | None = None
        self._reported_down = False
        self._opened = False
        self._ssl: ssl.SSLContext | None = None
        self._client_id = ""
        self._errors_window = (float("-inf"), 0)  # (window start, error responses sent in it)
        self._refusals = (float("-inf"), 0)       # (last log time, refusals since)
        self._counts = {"connects": 0, "connect_failures": 0, "connection_losses": 0, "messages": 0,
                        "dropped_events": 0, "oversized": 0, "requests": 0, "refused": 0, "busy": 0,
                        "unanswered": 0, "responses": 0}

    # ------------------------------------------------------------------ wiring
    def _rpc_filters(self) -> list[str]:
        """The request topics this daemon serves: none without the hub's request gate
        (:meth:`bind_requests`; a backend run alone has listeners and publish only), or
        with ``rpc: false``."""
        if self._handle is None or not self.config["rpc"] or not self.device_id or not _level_ok(self.device_id):
            return []
        base = f"{self.prefix}/{self.device_id}"
        # every user's from/ topic, trusted or not: an untrusted one gets an error response
        # (the gate asks it for a token) rather than silence until its timeout
        return [base, f"{base}/from/+"]

    def bind_hub_views(self, describe_devices: Callable[[], list[dict[str, Any]]],
                       add_listener: Callable[[Callable[[Event], None]], None]) -> None:
        """Hand over what Home Assistant discovery reads (before :meth:`open`): the hub's
        ``describe_devices`` (the GPIO entities) and a way to see every event (states,
        sensor readings; ``ApplicationStartedEvent`` announces again once every backend
        is open). Without them (a backend run alone) discovery announces nothing."""
        if not self.discovery:
            return
        self._describe_devices = describe_devices
        add_listener(self._on_bus_event)

    def validate_environment(self) -> None:
        """Import paho-mqtt and load the TLS files.

        Raises:
            BackendUnavailable: paho-mqtt is missing, or a TLS file cannot be loaded (named).
        """
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise BackendUnavailable("the mqtt backend needs paho-mqtt (pip install 'pihub[mqtt]')") from None
        if self.use_tls:
            self._ssl = self._tls_context()

    def _tls_context(self) -> ssl.SSLContext:
        v = self.config
        try:
            ctx = ssl.create_default_context(cafile=v["ca_certs"])
        except (OSError, ssl.SSLError) as e:
            raise BackendUnavailable(f"mqtt.ca_certs {v['ca_certs']!r} cannot be loaded as a PEM CA file: "
                                     f"{getattr(e, 'strerror', None) or e}") from None
        if v["certfile"]:
            try:
                ctx.load_cert_chain(v["certfile"], v["keyfile"])
            except (OSError, ssl.SSLError) as e:
                raise BackendUnavailable(f"mqtt.certfile {v['certfile']!r} / keyfile {v['keyfile']!r} cannot be "
                                         f"loaded as a PEM certificate and key: "
                                         f"{getattr(e, 'strerror', None) or e}") from None
        ctx.check_hostname = not v["tls_insecure"]
        return ctx

    # ------------------------------------------------------------------ lifecycle
    def open(self, emit: Emit) -> None:
        """Create the client and start ``pihub-mqtt`` (connects, reconnects) and the RPC workers."""
        if self._thread is not None:
            return
        if self.use_tls and self._ssl is None:
            self._ssl = self._tls_context()
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        v = self.config
        self._client_id = v["client_id"] or f"pihub-{self.device_id or new_event_id()[:12]}"
        if v["protocol"] == "5":
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id, clean_session=True,
                                 protocol=mqtt.MQTTv311)
        client.connect_timeout = v["connect_timeout"]
        if v["username"] is not None:
            client.username_pw_set(v["username"], v["password"])
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        # external-loop mode: publish() from other threads only queues and wakes this loop
        client.on_socket_register_write = lambda *_: None
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        for topic in self._rpc_filters():
            client.message_callback_add(topic, self._on_request)
        commands = self._commands_topic()
        if commands:
            client.will_set(self._availability(), "offline", qos=1, retain=True)
            client.message_callback_add(commands, self._on_command)
        if self._handle is not None and self.config["rpc"] and not self._rpc_filters():
            self.log.warning("no MQTT requests served: device_id %r contains / + or #, which a topic level "
                             "cannot", self.device_id)
        self._client = client
        self._emit = emit
        self.status, self.error = BackendStatus.RUNNING, None
        self._opened = True
        if self._rpc_filters() or self._commands_topic():
            for i in range(v["rpc_workers"]):
                worker = BackendThread(f"pihub-{self.name}-rpc-{i}", self._work)
                worker.start()
                self._workers.append(worker)
        self._thread = BackendThread(f"pihub-{self.name}", self._run)
        self._thread.start()

    def close(self) -> None:
        """Disconnect, stop the reader and the workers; idempotent.

        Requests waiting in the queue are dropped unanswered (their callers time out).

        Raises:
            RuntimeError: a thread did not stop.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stopping.set()
            client = self._client
            if client is not None:
                with contextlib.suppress(Exception):
                    if self._commands_topic() and self._connected.is_set():  # a clean stop sends no will
                        client.publish(self._availability(), "offline", qos=0, retain=True)
                    client.disconnect()  # wakes the loop's select (after the offline, in order)
            thread.stop(timeout=self.config["connect_timeout"] + 5.0)
        workers, self._workers = self._workers, []
        for w in workers:
            w.stopping.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        for _ in workers:
            self._queue.put(None)
        for w in workers:
            w.stop(timeout=self.config["timeout"] + 5.0)
        self._emit = None
        with self._lock:
            self._broker = "stopped"
            pending = list(self._pending.values())
        self._connected.clear()
        for p in pending:
            p.done.set()
        self.status = BackendStatus.STOPPED

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus once open ``broker`` (connecting, connected, unreachable, stopped)."""
        out = super().describe_status()
        if self._opened:
            with self._lock:
                out["broker"] = self._broker
        return out

    # ------------------------------------------------------------------ reader thread
    def _run(self, stopping: threading.Event) -> None:
        """Connect, loop until the connection ends, wait (back-off), reconnect; until stopped."""
        delay = self.reconnect_interval
        while not stopping.is_set():
            self._refused = None
            try:
                self._session(stopping)
                reason = "the broker closed the connection"
            except _Lost as e:
                reason = str(e)
            except Exception as e:  # a bug must not end the reader silently
                self.log.exception("mqtt client failed")
                reason = f"mqtt client failed: {type(e).__name__}: {e}"
            was_connected = self._connected.is_set()
            self._connected.clear()
            if stopping.is_set():
                return
            if was_connected:
                delay = self.reconnect_interval
            self._lost(reason, was_connected)
            if self.clock.wait(stopping, delay):
                return
            if not was_connected:
                delay = min(delay * 2, self.max_reconnect_interval)

    def _session(self, stopping: threading.Event) -> None:
        """One connection: connect, then paho's loop until it ends.

        Raises:
            _Lost: the connection failed or ended (why).
        """
        client = self._client
        assert client is not None
        import paho.mqtt.client as mqtt

        try:
            if self.config["protocol"] == "5":
                client.connect(self.host, self.port, keepalive=self.config["keepalive"], clean_start=True,
                               properties=self._connect_properties())
            else:
                client.connect(self.host, self.port, keepalive=self.config["keepalive"])
        except OSError as e:
            with self._lock:
                self._counts["connect_failures"] += 1
            raise _Lost(_connect_error(self.host, self.port, e, self.use_tls)) from None
        while not stopping.is_set():
            rc = client.loop(_LOOP_TIMEOUT)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if stopping.is_set():
                    return
                raise _Lost(self._refused or f"connection lost ({mqtt.error_string(rc)})")
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop(0.1)  # send the DISCONNECT

    def _connect_properties(self) -> Any:
        """MQTT 5 CONNECT properties: the Maximum Packet Size this client accepts (see the
        module docstring), so the broker drops a longer message rather than send it."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
        props.MaximumPacketSize = min(self.config["max_payload"] + _PACKET_OVERHEAD, _MQTT_MAX_PACKET)
        return props

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            with self._lock:
                self._counts["connect_failures"] += 1
            who = f"user {self.config['username']!r}" if self.config["username"] is not None else "anonymous login"
            self._refused = (f"the broker refused the login of {who} ({reason}); check mqtt.username and "
                             f"mqtt.password against the broker's password_file")
            return
        with self._lock:
            self._counts["connects"] += 1
            topics = self._filters + self._rpc_filters() + [f"{self.prefix}/{t}/responses/+" for t in self._targets]
        commands = self._commands_topic()
        if commands:
            topics.append(commands)
        if topics:
            client.subscribe([(t, self.qos) for t in topics])
        self._connected.set()
        with self._lock:  # after the event: "connected" in the status means actions can publish
            self._broker = "connected"
        if commands:
            client.publish(self._availability(), "online", qos=1, retain=True)
            self._queue.put(self._announce)  # reads other backends: not on the loop thread
        self.log.info("connected to the MQTT broker at %s:%s (%d subscriptions)", self.host, self.port, len(topics))
        if self._reported_down:
            self._reported_down = False
            self.report_recovered()

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, mid: int, reasons: Any, _props: Any) -> None:
        for r in reasons:
            if r.is_failure:
                self.log.warning("the broker refused a subscription of %s:%s (%s): check its ACL",
                                 self.host, self.port, r)
        with self._lock:
            done = self._suback.pop(mid, None)
        if done is not None:
            done.set()

    def _lost(self, reason: str, was_connected: bool) -> None:
        with self._lock:
            self._broker = "unreachable"
            if was_connected:
                self._counts["connection_losses"] += 1
        error = (f"MQTT broker {self.host}:{self.port}: {reason}; reconnecting with back-off "
                 f"{self.reconnect_interval:g}..{self.max_reconnect_interval:g} s")
        self._reported_down = True
        if self.report_degraded(error):
            self.log.warning("%s", error)

    # ------------------------------------------------------------------ incoming
    def _oversized(self, msg: paho.MQTTMessage) -> bool:
        if len(msg.payload) <= self.config["max_payload"]:
            return False
        with self._lock:
            self._counts["oversized"] += 1
        self.log.debug("dropped a %d-byte message on %s (max_payload %d)", len(msg.payload), msg.topic,
                       self.config["max_payload"])
        return True

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        """A message on a listener topic: an MQTTMessageEvent."""
        if self._oversized(msg):
            return
        with self._lock:
            self._counts["messages"] += 1
        self._publish(Event(_MESSAGE_EVENT, {"host": self.host, "port": self.port, "topic": msg.topic,
                                             "msg": decode_payload(msg.payload)}, time.monotonic_ns(), self.name,
                            wire_size=len(msg.payload)))

    def _publish(self, event: Event) -> None:
        emit = self._emit
        if emit is not None and not emit(event):
            with self._lock:
                self._counts["dropped_events"] += 1

    def _on_request(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        """A message on this daemon's request topic: queued for a worker, or refused as busy.

        The loop thread does no more (it must keep reading): authentication, parsing and
        running are the hub's request gate's, on a worker.
        """
        if self._oversized(msg):
            return
        with self._lock:
            self._counts["requests"] += 1
        trusted_base = f"{self.prefix}/{self.device_id}/from/"
        user = msg.topic[len(trusted_base):] if msg.topic.startswith(trusted_base) else None
        if self._queue.qsize() >= self.config["rpc_queue"]:
            with self._lock:
                self._counts["busy"] += 1
            self._refuse(_request_id(msg.payload), f"busy: {self.config['rpc_queue']} requests already wait; "
                                                   f"try again")
            return
        self._queue.put(functools.partial(self._serve, bytes(msg.payload), user))

    def _refuse(self, rid: str | None, why: str) -> None:
        """Answer a request refused here with an error response (limited), and log (limited)."""
        now = self.clock.now()
        with self._lock:
            self._counts["refused"] += 1
            last, n = self._refusals
            log_now = now - last >= _REFUSAL_LOG_INTERVAL
            self._refusals = (now, 0) if log_now else (last, n + 1)
            start, sent = self._errors_window
            if now - start >= 1.0:
                start, sent = now, 0
            answer = rid is not None and sent < ERROR_RESPONSES_PER_S
            self._errors_window = (start, sent + 1 if answer else sent)
            if not answer:
                self._counts["unanswered"] += 1
        if log_now:
            more = f" ({n} more refused since the last report)" if n else ""
            self.log.warning("refused a request on %s/%s: %s%s", self.prefix, self.device_id, why, more)
        if answer:
            assert rid is not None
            self._respond(Response(errors=[why], id=rid, origin=self.device_id or "").to_dict())

    def _respond(self, envelope: dict[str, Any]) -> None:
        """Publish a response envelope on ``<prefix>/<device_id>/responses/<its id>``."""
        client = self._client
        rid = envelope.get("id")
        if client is None or not isinstance(rid, str) or len(rid) > _MAX_ID or not _level_ok(rid):
            with self._lock:  # no id, or one that cannot be a topic level: nobody can be waiting
                self._counts["unanswered"] += 1
            return
        client.publish(f"{self.prefix}/{self.device_id}/responses/{rid}", dumps(envelope), qos=self.qos)
        with self._lock:
            self._counts["responses"] += 1

    def _work(self, stopping: threading.Event) -> None:
        """A worker: runs queued requests, HA commands and announcements until stopped."""
        while not stopping.is_set():
            job = self._queue.get()
            if job is None or stopping.is_set():
                return
            try:
                job()
            except Exception:  # a failed job must not end the worker
                self.log.exception("mqtt worker job failed")

    def _serve(self, payload: bytes, user: str | None) -> None:
        """One request through the hub's request gate; the response back."""
        peer = f"broker user {user!r}" if user is not None else f"{self.host}:{self.port}"
        try:
            envelope = self._handle(payload, channel=self.name, peer=peer,  # type: ignore[misc]
                                    trusted=user is not None and user in self.trusted_users)
        except Exception as e:  # the gate never raises; a stopping hub might
            self.log.warning("a request by MQTT failed: %s: %s", type(e).__name__, e)
            envelope = Response(errors=[f"{type(e).__name__}: {e}"], id=_request_id(payload) or "",
                                origin=self.device_id or "").to_dict()
        if envelope is not None:
            self._respond(envelope)

    # ------------------------------------------------------------------ Home Assistant
    def _commands_topic(self) -> str | None:
        """Where HA's switch commands arrive, when discovery runs in a hub; else None."""
        if not self.discovery or self._handle is None or not self.device_id:
            return None
        return f"{self.config['state_prefix']}/{object_id(self.device_id)}/gpio/+/set"

    def _availability(self) -> str:
        return availability_topic(self.config["state_prefix"], object_id(self.device_id or ""))

    def _announce(self) -> None:
        """Publish (retained) the discovery config and state of every entity known now."""
        describe, client = self._describe_devices, self._client
        if describe is None or client is None or not self._connected.is_set():
            return
        devices = describe()
        where = {"discovery_prefix": self.config["discovery_prefix"], "state_prefix": self.config["state_prefix"]}
        found = gpio_entities(self.device_id or "", devices, **where)
        events = event_entities(self.device_id or "", devices, **where)
        clashes: list[tuple[Entity, Entity]] = []
        with self._lock:
            for table, new in [*((self._entities, e) for e, _ in found),
                               *((self._events, e) for e in events)]:
                holder = table.add(new)  # a holder once: announcements repeat on every connect
                if holder is not None:
                    clashes.append((new, holder))
            entities = [*self._entities.values(), *self._events.values()]
            states = [(kept, value) for ent, value in found
                      if value is not None and (kept := self._entities.get(ent.key)) is not None]
        for new, holder in clashes:
            self._clashed(new, holder)
        for ent in entities:
            client.publish(ent.config_topic, dumps(ent.config), qos=1, retain=True)
        for ent, value in states:
            client.publish(ent.state_topic, on_off(value), qos=self.qos, retain=True)

    def _clashed(self, new: Entity, holder: Entity) -> None:
        """Warn (limited) that ``new`` gets no entity: ``holder``, another name, has its topics."""
        with self._lock:
            log, held = self._clash_log.allow()
        if log:
            more = f" ({held} more such names since the last report)" if held else ""
            self.log.warning("Home Assistant: %s is not announced: its topics (%s) are those of %s, "
                             "announced first (topics keep only [A-Za-z0-9_-] of a name); rename one of "
                             "them%s", shorten(new.config["name"]), shorten(new.state_topic, 200),
                             shorten(holder.config["name"]), more)

    def _on_bus_event(self, event: Event) -> None:
        """Every event, on the dispatcher thread: states, new sensors and button/card events to
        HA (queued, never blocks)."""
        client = self._client
        if client is None or not self._connected.is_set():
            return
        name = event.type.name
        if name == "ApplicationStartedEvent":
            self._queue.put(self._announce)
        elif name == "GPIOEvent":
            ent = self._entities.get(("gpio", str(event.args.get("name") or event.args.get("pin"))))
            if ent is not None:
                client.publish(ent.state_topic, on_off(event.args.get("value")), qos=self.qos, retain=True)
        elif name == "SensorDataChangeEvent":
            data = event.args.get("data")
            source = str(event.args.get("source") or event.source)
            readings = data if isinstance(data, dict) else {"value": data}
            for key, value in readings.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                ent = self._entities.get((source, str(key)))
                if ent is None:
                    if self._entities.refused((source, str(key))):
                        continue  # warned about when it was refused
                    with self._lock:
                        if len(self._entities) >= _MAX_ENTITIES:
                            continue
                        ent = sensor_entity(self.device_id or "", source, str(key),
                                            discovery_prefix=self.config["discovery_prefix"],
                                            state_prefix=self.config["state_prefix"])
                        holder = self._entities.add(ent)
                    if holder is not None:
                        self._clashed(ent, holder)
                        continue
                    client.publish(ent.config_topic, dumps(ent.config), qos=1, retain=True)
                client.publish(ent.state_topic, dumps(value), qos=self.qos, retain=True)
        elif (seen := event_message(name, event.args)) is not None:
            self._event(client, *seen)

    def _event(self, client: paho.Client, family: str, name: str, payload: dict[str, Any] | None) -> None:
        """Announce a button or reader not known yet, then publish its event (not retained:
        an event is momentary, a later subscriber must not see it again)."""
        ent = self._events.get((family, name))
        if ent is None:
            if self._events.refused((family, name)):
                return  # warned about when it was refused
            with self._lock:
                if len(self._entities) + len(self._events) >= _MAX_ENTITIES:
                    return
                ent = event_entity(self.device_id or "", family, name,
                                   discovery_prefix=self.config["discovery_prefix"],
                                   state_prefix=self.config["state_prefix"])
                holder = self._events.add(ent)
            if holder is not None:
                self._clashed(ent, holder)
                return
            client.publish(ent.config_topic, dumps(ent.config), qos=1, retain=True)
        if payload is not None:
            client.publish(ent.state_topic, dumps(payload), qos=self.qos, retain=False)

    def _on_command(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        """HA switched a GPIO output: ``ON``/``OFF`` on its command topic -> gpio.write on a worker."""
        if self._oversized(msg):
            return
        ent = self._entities.commanded(msg.topic)  # the topic level is the name made safe, not the name
        payload = bytes(msg.payload)  # exactly what the switch's config announces: ON or OFF
        if ent is None or payload not in (b"ON", b"OFF"):
            why = ("no switch is announced with this command topic" if ent is None
                   else f"the payload {shorten(payload, 40)} is neither ON nor OFF")
            with self._lock:
                self._counts["refused"] += 1
                log, held = self._command_log.allow()
            if log:  # a silent refusal once hid that no announced name could be commanded
                more = f" ({held} more ignored since the last report)" if held else ""
                self.log.warning("ignored a Home Assistant command on %s: %s%s", shorten(msg.topic, 200),
                                 why, more)
            return
        if self._queue.qsize() >= self.config["rpc_queue"]:
            with self._lock:
                self._counts["busy"] += 1
            return
        self._queue.put(functools.partial(self._command, ent, payload == b"ON"))

    def _command(self, ent: Entity, on: bool) -> None:
        """Run HA's command through the hub's gate (trusted: the broker's ACL decides who may
        publish on command topics), then report the pin's new state."""
        request = {"type": "request", "action": "gpio.write", "args": {"pin": ent.key[1], "value": int(on)}}
        envelope = self._handle(request, channel=self.name, peer="Home Assistant", trusted=True)  # type: ignore[misc]
        body = (envelope or {}).get("response") or {}
        if body.get("errors"):
            self.log.warning("Home Assistant's command on %s failed: %s", ent.key[1], "; ".join(body["errors"]))
            return
        output = body.get("output")
        value = output.get("value", int(on)) if isinstance(output, dict) else int(on)
        client = self._client
        if client is not None:
            client.publish(ent.state_topic, on_off(value), qos=self.qos, retain=True)

    def _on_response(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        """A response on a target's response topic: hand it to the mqtt.execute waiting."""
        rid = msg.topic.rpartition("/")[2]
        with self._lock:
            pending = self._pending.get(rid)
        if pending is None or self._oversized(msg):
            return
        try:
            data = json.loads(msg.payload)
        except (ValueError, RecursionError):
            data = None
        pending.response = data if isinstance(data, dict) else {"response": {"errors": [
            "the response is not a JSON object envelope"]}}
        pending.done.set()

    # ------------------------------------------------------------------ actions
    def _require_client(self) -> paho.Client:
        client = self._client
        if client is None or self._thread is None:
            raise ActionError(f"the mqtt backend is not running (status: {self.status})")
        if not self._connected.is_set():
            raise ActionError(f"not connected to the MQTT broker {self.host}:{self.port}: "
                              f"{self.error or 'connecting'}")
        return client

    @action
    def publish(self, topic: str, msg: Any = None, qos: int | None = None, retain: bool = False) -> dict[str, Any]:
        """Publish ``msg`` on ``topic`` (a dict or list as JSON, text as UTF-8).

        Args:
            topic: a topic name, without wildcards.
            msg: the payload; null publishes an empty message (with ``retain``: clears the
                retained message).
            qos: 0, 1 or 2; default: the section's ``qos``.
            retain: the broker keeps it for later subscribers.

        Returns:
            ``{"topic", "mid", "bytes"}``: with QoS 0 once the message is queued (written
            to the socket soon after); with QoS 1 or 2 once the broker acknowledged it
            (at most ``timeout`` seconds).
        """
        why = check_topic(topic, wildcards=False)
        if why:
            raise ActionError(f"topic {why}, not {show(topic)}")
        qos = self.qos if qos is None else qos
        if qos not in (0, 1, 2):
            raise ActionError(f"qos must be 0, 1 or 2, not {qos!r}")
        payload = b"" if msg is None else encode_payload(msg)
        client = self._require_client()
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc:
            import paho.mqtt.client as mqtt

            raise ActionError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        if qos:
            # an I/O timeout, like a socket's: real seconds, not a rule on the clock
            info.wait_for_publish(self.config["timeout"])
            if not info.is_published():
                raise ActionError(f"the broker did not acknowledge the QoS {qos} message on {topic!r} within "
                                  f"{self.config['timeout']:g} s")
        return {"topic": topic, "mid": info.mid, "bytes": len(payload)}

    @action
    def subscribe(self, topic: str) -> dict[str, Any]:
        """Subscribe to ``topic`` (a filter: ``+`` and ``#`` allowed); its messages become
        MQTTMessageEvents, also after a reconnect.

        Returns:
            ``{"topic", "subscribed"}``: ``subscribed`` is false when it was already.
        """
        why = check_topic(topic, wildcards=True)
        if why:
            raise ActionError(f"topic {why}, not {show(topic)}")
        with self._lock:
            if topic in self._filters:
                return {"topic": topic, "subscribed": False}
            self._filters.append(topic)
        client = self._client
        if client is not None and self._connected.is_set():
            client.subscribe(topic, self.qos)
        return {"topic": topic, "subscribed": True}

    @action
    def execute(self, target: str, action: str, args: Any = None, token: str | None = None,
                timeout: float | None = None) -> Response:
        """Run ``action`` on the pihub (or Platypush) daemon ``target`` and return its response.

        Args:
            target: the other daemon's device id.
            action: ``plugin.method`` (or ``procedure.NAME``) to run there.
            args: its arguments (a mapping, a list or one value).
            token: an API token of ``target``; default ``peer_tokens[target]``; without
                one the request goes to ``<prefix>/<target>/from/<username>`` (this
                daemon's broker user must be trusted there).
            timeout: seconds to wait for the response; default the section's ``timeout``.

        Returns:
            The target's response (its output and errors, as if run here).
        """
        if not isinstance(target, str) or not _level_ok(target):
            raise ActionError(f"target must be a device id without / + # (a topic level), not {show(target)}")
        wait = self.config["timeout"] if timeout is None else timeout
        if not 0 < wait <= 3600:
            raise ActionError(f"timeout must be in range 0..3600 s, not {wait!r}")
        if token is None:
            token = self.config["peer_tokens"].get(target)
        user = self.config["username"]
        if token is None and user is None:
            raise ActionError(f"no token for device {target!r}: pass token, set mqtt.peer_tokens.{target}, or set "
                              f"mqtt.username to a broker user {target!r} trusts")
        if token is None and not _level_ok(user):
            raise ActionError("mqtt.username cannot be a topic level (it contains / + or #): use a token")
        client = self._require_client()
        self._watch_responses(client, target, wait)
        rid = new_event_id()
        envelope: dict[str, Any] = {"type": "request", "id": rid, "target": target, "action": action,
                                    "args": {} if args is None else args,
                                    "origin": self.device_id or self._client_id}
        topic = f"{self.prefix}/{target}"
        if token is not None:
            envelope["token"] = token
        else:
            topic += f"/from/{user}"
        pending = _Pending()
        with self._lock:
            self._pending[rid] = pending
        try:
            info = client.publish(topic, dumps(envelope), qos=self.qos)
            if info.rc:
                import paho.mqtt.client as mqtt

                raise ActionError(f"request to {target!r} not sent: {mqtt.error_string(info.rc)}")
            if not self.clock.wait(pending.done, wait) or pending.response is None:
                if self._thread is None:
                    raise ActionError(f"the mqtt backend stopped while waiting for {target!r}")
                raise ActionError(f"no response from device {target!r} within {wait:g} s (is it running, "
                                  f"connected to {self.host}:{self.port} with rpc on?)")
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        body = pending.response.get("response")
        body = body if isinstance(body, dict) else {}
        errors = body.get("errors") or []
        errors = [str(e) for e in errors] if isinstance(errors, list) else [str(errors)]
        return Response(output=body.get("output"), errors=errors)

    def _watch_responses(self, client: paho.Client, target: str, wait: float) -> None:
        """Subscribe to ``target``'s responses once (waits for the broker's SUBACK)."""
        with self._lock:
            if target in self._targets:
                return
            if len(self._targets) >= _MAX_TARGETS:
                raise ActionError(f"mqtt.execute talks to at most {_MAX_TARGETS} devices per daemon")
            self._targets.add(target)
            done = threading.Event()
            topic = f"{self.prefix}/{target}/responses/+"
            client.message_callback_add(topic, self._on_response)
            rc, mid = client.subscribe(topic, self.qos)
            if rc == 0 and mid is not None:
                self._suback[mid] = done
        if rc != 0 or not self.clock.wait(done, wait):
            with self._lock:
                self._targets.discard(target)
            client.message_callback_remove(topic)
            raise ActionError(f"the broker did not confirm the subscription to {target!r}'s responses")

    @action(aliases=["status"], blocking=False)
    def broker_status(self) -> dict[str, Any]:
        """The broker connection and counters (action ``mqtt.status``).

        Returns:
            ``broker`` (host:port), ``state`` (connecting, connected, unreachable,
            stopped), ``error`` (why not connected), ``device_id`` (RPC; null without a
            hub), ``subscriptions`` (listener filters) and the counters ``connects``,
            ``connect_failures``, ``connection_losses``, ``messages``, ``dropped_events``,
            ``oversized``, ``requests``, ``refused``, ``busy``, ``unanswered`` (refusals
            not answered: over the limit or no usable id), ``responses``.
        """
        with self._lock:
            return {"broker": f"{self.host}:{self.port}", "state": self._broker, "error": self.error,
                    "device_id": self.device_id, "subscriptions": list(self._filters), **self._counts}
