"""``event.fire`` (alias ``event.trigger``): post an event of any catalogue type.

Used from procedures, ``POST /execute`` and phones to raise events that hooks react to,
most often ``CustomEvent`` with a ``subtype``. The type is looked up in the event
catalogue by short name, Platypush dotted path or alias; an unknown type is refused with
the closest names, and an abstract type (``Event``, ``SensorDataEvent``...) is refused
with its concrete subtypes, since hooks on the parent still match those.

The other arguments become the event's attributes as given; attributes the type does
not document are kept (Platypush stores any keyword too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from pihub.config.schema import Schema
from pihub.errors import ActionError, UnknownEventType
from pihub.events import CATALOGUE, Event, new_event_id
from pihub.plugin import Plugin, action

#: ``emit(event)``: hands an event to the hub; must not block.
Emit = Callable[[Event], Any]


class EventPlugin(Plugin):
    """Fire events by type name.

    Args:
        emit: where fired events go.
        source: the ``source`` recorded on fired events.
    """

    name: ClassVar[str] = "event"
    config_schema: ClassVar[Schema | None] = Schema({}, doc="No options.")
    side_effects: ClassVar[bool] = False

    def __init__(self, emit: Emit, source: str = "event") -> None:
        self._emit = emit
        self._source = source

    @action(aliases=["trigger"], blocking=False)  # a ring push, which never blocks
    def fire(self, type: str = "CustomEvent", **args: Any) -> str:  # noqa: A002 - Platypush's name
        """Fire an event: ``args: {type: CustomEvent, subtype: doorbell}``.

        Args:
            type: the event type: a short name (``CustomEvent``) or a Platypush path
                (``platypush.message.event.custom.CustomEvent``).
            **args: the event's attributes.

        Returns:
            The id of the fired event (32 hex characters).
        """
        try:
            et = CATALOGUE.get(type)
        except UnknownEventType as e:
            raise ActionError(str(e)) from None
        if et.abstract:
            concrete = [t.name for t in CATALOGUE.subtypes(et) if not t.abstract]
            raise ActionError(f"event type {type!r} is abstract; fire one of its subtypes: "
                              f"{', '.join(concrete)}")
        event = Event(et, dict(args), time.monotonic_ns(), self._source, new_event_id())
        self._emit(event)
        return event.id
