"""The Platypush wire format: request, response and event envelopes.

Request:  ``{"type":"request","action":"plugin.method","args":{...},"id":...,"target":...}``
Response: ``{"type":"response","id":...,"response":{"output":...,"errors":[...]}}``
Event:    ``{"type":"event","args":{"type":"<event type>", ...}}``

Differences from Platypush, on purpose: ids are a random per-run prefix and a counter (:func:`pihub.events.new_event_id`), not ``random``; a string output is
never JSON-decoded (``"123"`` stays a string); a null output still becomes
``{"success": <no errors>}`` as Platypush clients expect.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

from pihub.errors import MessageError, shorten
from pihub.events import CATALOGUE, Event, new_event_id


@dataclass(slots=True)
class Request:
    """An action request. ``args`` may be a dict (keywords), a list (positional) or a scalar."""

    action: str
    args: Any = field(default_factory=dict)
    id: str = field(default_factory=new_event_id)
    target: str = ""
    origin: str = ""

    def split_action(self) -> tuple[str, str]:
        """``camera.pi.take_picture`` -> ``("camera.pi", "take_picture")`` (split on the last dot)."""
        plugin, dot, method = self.action.rpartition(".")
        if not dot or not plugin or not method:
            raise MessageError(f"action must be 'plugin.method', not {self.action!r}")
        return plugin, method


@dataclass(slots=True)
class Response:
    """An action's result. ``errors`` holds human-readable strings; empty means success."""

    output: Any = None
    errors: list[str] = field(default_factory=list)
    id: str = ""
    target: str = ""
    origin: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        output = {"success": not self.errors} if self.output is None else self.output
        return {
            "id": self.id,
            "type": "response",
            "target": self.target,
            "origin": self.origin,
            "_timestamp": time.time(),
            "response": {"output": output, "errors": list(self.errors)},
        }


def parse(message: str | bytes | dict[str, Any], *, default_origin: str = "", wire_size: int = 0) -> Request | Event:
    """Parse a request or event envelope.

    Args:
        message: JSON text or an already decoded dict.
        default_origin: origin to record when the message has none (``http``...).
        wire_size: bytes of the text a dict ``message`` was decoded from (for text, its
            length is taken): an event's :attr:`~pihub.events.Event.wire_size`.

    Raises:
        MessageError: for text that :func:`loads` refuses, a non-object, an unknown ``type``, a
            missing or malformed ``action``, event ``args`` that are not an object, an event
            ``type`` that is not a string, or an unknown event type; the bad value's JSON
            type and the value (shortened) are named.
    """
    if isinstance(message, (bytes, str)):
        wire_size = wire_size or len(message)
        try:
            message = loads(message)
        except MessageError as e:
            raise MessageError(f"message is {e}") from None
    if not isinstance(message, dict):
        raise MessageError(f"message must be a JSON object, not {json_kind(message, show=True)}")
    kind = message.get("type")
    if kind == "request":
        action = message.get("action", message.get("name"))
        if not isinstance(action, str) or not action:
            raise MessageError("request has no 'action' (a 'plugin.method' string)")
        req = Request(action=action, args=message.get("args", {}),
                      id=str(message.get("id") or new_event_id()),
                      target=str(message.get("target") or ""),
                      origin=str(message.get("origin") or default_origin))
        req.split_action()
        return req
    if kind == "event":
        if "args" not in message:
            raise MessageError("event has no 'args' (a JSON object)")
        args = message["args"]
        if not isinstance(args, dict):
            raise MessageError(f"event 'args' must be a JSON object, not {json_kind(args, show=True)}")
        args = dict(args)
        if "type" not in args:
            raise MessageError("event args have no 'type' (an event type name such as 'GPIOEvent')")
        type_name = args.pop("type")
        if not isinstance(type_name, str):
            raise MessageError(f"event 'type' must be a string (an event type name such as 'GPIOEvent'), "
                               f"not {json_kind(type_name, show=True)}")
        try:
            et = CATALOGUE.get(type_name)
        except KeyError as e:
            raise MessageError(str(e)) from None
        return Event(et, args, time.monotonic_ns(), str(message.get("origin") or default_origin),
                     str(message.get("id") or ""), wire_size=wire_size)
    raise MessageError(f"message type must be 'request' or 'event', not {json_kind(kind, show=True)}")


class Encoder(json.JSONEncoder):
    """JSON for outputs: bytes as ``0x..`` hex, sets/tuples as lists, others via ``str``."""

    def default(self, o: Any) -> Any:
        if isinstance(o, (bytes, bytearray)):
            return "0x" + bytes(o).hex()
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if isinstance(o, Event):
            return o.to_dict()
        if isinstance(o, Exception):
            return f"<{type(o).__name__}> {o}"
        if hasattr(o, "isoformat"):
            return o.isoformat()
        return str(o)


def _finite_or_none(text: str) -> float | None:
    """JSON float hook: ``1e999`` and friends become None rather than infinity."""
    value = float(text)
    return value if math.isfinite(value) else None


def _no_constant(_name: str) -> None:
    """JSON constant hook: ``NaN``/``Infinity`` (not JSON, but Python accepts them) -> None."""


#: Reads JSON from the outside (MQTT payloads, serial lines) with every number finite:
#: ``NaN``, ``Infinity`` and floats beyond a double's range (``1e999``), which Python's
#: reader accepts, read as None.
FINITE_JSON: Final = json.JSONDecoder(parse_float=_finite_or_none, parse_constant=_no_constant)


def loads(text: str | bytes) -> Any:
    """Decode JSON that came from outside: an HTTP body, a websocket or TCP message, a
    webhook, a replayed line. Numbers are read as :data:`FINITE_JSON` reads them.

    Args:
        text: the document; bytes must be UTF-8 (RFC 8259 for JSON on a network), and a
            leading byte order mark is ignored, as RFC 8259 allows.

    Raises:
        MessageError: a fragment to follow "the body is" / "message is": ``not UTF-8
            text`` (naming UTF-16 or UTF-32 when it is that), ``not valid JSON: <what> at line L column C`` (positions only, never
            the document's text), ``nested too deeply to decode (...)``, or ``not valid JSON: a
            number has more than N digits``.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            other = json.detect_encoding(raw)
            raise MessageError("not UTF-8 text" + (f" (it is {other.upper()}: send JSON as UTF-8)"
                                                   if other not in ("utf-8", "utf-8-sig") else "")) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return FINITE_JSON.decode(text)
    except json.JSONDecodeError as e:
        raise MessageError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError:  # the only other: int() of a number past Python's digit limit
        raise MessageError(f"not valid JSON: a number has more than {sys.get_int_max_str_digits()} "
                           f"digits") from None
    except RecursionError:  # json's decoder recurses once per nested array/object
        raise MessageError(f"nested too deeply to decode (at most about {sys.getrecursionlimit()} levels of "
                           f"arrays and objects)") from None


def json_kind(value: Any, *, show: bool = False) -> str:
    """The JSON type name of a decoded value: ``an object``, ``an array``, ``a string``...;
    with ``show``, followed by a scalar itself, shortened (``a string ('B...')``), or a
    container's size (``an object of 3 keys``): its contents are not echoed, since they
    may hold a credential."""
    kind = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
    if not show or value is None:
        return kind
    if isinstance(value, dict):
        return f"{kind} of {len(value)} key{'' if len(value) == 1 else 's'}"
    if isinstance(value, list):
        return f"{kind} of {len(value)} item{'' if len(value) == 1 else 's'}"
    return f"{kind} ({shorten(value)})"


def dumps(obj: Any) -> str:
    """Serialise with :class:`Encoder`, compact, as strict JSON.

    A NaN or infinite float, anywhere (a sensor's reading, an MQTT payload, an action's
    output), is written as ``null``, as JavaScript's ``JSON.stringify`` does: ``NaN`` and
    ``Infinity`` are not JSON, and a browser's ``JSON.parse`` refuses the whole message.

    Raises:
        ValueError: ``obj`` contains itself.
    """
    try:
        return json.dumps(obj, cls=Encoder, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # rare: encode once more with the constants allowed, then read them back as null
        # (the Encoder may have turned objects into values that hold them)
        loose = FINITE_JSON.decode(json.dumps(obj, cls=Encoder, separators=(",", ":")))
        return json.dumps(loose, separators=(",", ":"), allow_nan=False)
