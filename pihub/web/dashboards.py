"""Dashboards: full-screen pages of widgets for a wall tablet or a TV, from the config.

The ``dashboards`` section maps a name to a dashboard, shown at ``/dashboard/<name>``
(:mod:`pihub.web.panel`). As on Platypush's dashboards, a dashboard is rows of 12
columns; each widget says how many columns it takes (``columns``, default 12). On a
narrow screen (under 600 px) every widget takes the whole width, one under the other::

    dashboards:
      hall:
        title: Hall
        rows:
          - - {widget: clock, columns: 4}
            - {widget: sensor, columns: 8, source: serial, key: temperature, label: Inside}
          - - {widget: switch, columns: 6, backend: gpio, entity: porch_light}
            - {widget: action, columns: 6, label: Lights off, action: procedure.lights_off,
               args: {reason: dashboard}}
          - - {widget: events, columns: 12, limit: 10}
          - - {widget: carousel, columns: 12, dir: photos, interval: 10}

Widgets (keys beyond ``widget``, ``columns`` and ``label``):

* ``sensor``: ``source`` (the backend whose ``SensorData*Event`` carry the value),
  ``key`` (the key in the event's ``data``), ``unit`` (optional), ``history`` (points in
  the chart, default 60): the value and a chart of recent values.
* ``switch``: ``backend`` and ``entity``: an output of that backend's card on the
  Devices page (a GPIO output, a mock output), switched with the ``control`` scope and
  shown read-only without it.
* ``camera``: ``camera`` (its name, as in ``/camera/<name>/photo.jpg``: ``pi`` for
  ``camera.pi``), ``interval``: a fresh snapshot every ``interval`` seconds (default 10).
* ``clock``: the time and date.
* ``events``: the last ``limit`` events (default 20), of ``types`` only when given.
* ``action``: a button running ``action`` with ``args`` (``control`` scope).
* ``carousel``: the images of ``dir``, a key of ``http.resource_dirs``, one every
  ``interval`` seconds (default 10).

A dashboard is viewable with a ``read``-scoped API token in the URL *fragment*
(``/dashboard/hall#token=...``), which the browser never sends to a server or puts in a
``Referer``: the page sends it as ``Authorization: Bearer`` and in the websocket's auth
message. Or with a panel session.
"""

from __future__ import annotations

import re
import types
from collections.abc import Hashable
from typing import Any, Final

from pihub.config.schema import REQUIRED, Field, Schema, show
from pihub.errors import ConfigProblem

__all__ = ["DASHBOARDS_SCHEMA", "DASHBOARD_NAME", "WIDGETS"]

#: Widget kinds and the keys each one requires.
WIDGETS: Final[dict[str, tuple[str, ...]]] = {
    "sensor": ("source", "key"),
    "switch": ("backend", "entity"),
    "camera": ("camera",),
    "clock": (),
    "events": (),
    "action": ("action",),
    "carousel": ("dir",),
}
#: A dashboard name, as it appears in ``/dashboard/<name>``.
DASHBOARD_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Columns of a row.
COLUMNS: Final = 12

WIDGET_SCHEMA: Final = Schema(
    {
        "widget": Field(str, REQUIRED, choices=tuple(WIDGETS), doc="the kind of widget"),
        "columns": Field(int, COLUMNS, min=1, max=COLUMNS, doc="columns of the row's 12 it takes"),
        "label": Field(str, None, doc="its title; default from its other keys"),
        "source": Field(str, None, doc="sensor: the backend whose SensorData events carry the value"),
        "key": Field(str, None, doc="sensor: the key of the value in the event's data"),
        "unit": Field(str, None, doc="sensor: the unit shown after the value"),
        "history": Field(int, 60, min=2, max=1000, doc="sensor: values in the chart"),
        "backend": Field(str, None, doc="switch: the backend of the output"),
        "entity": Field(str, None, doc="switch: the output's name"),
        "camera": Field(str, None, doc="camera: the camera's name"),
        "limit": Field(int, 20, min=1, max=500, doc="events: events shown"),
        "types": Field(list[str], [], doc="events: only these event types (short names); all when empty"),
        "action": Field(str, None, doc="action: the action to run (plugin.method or procedure.NAME)"),
        "args": Field(dict, {}, doc="action: its arguments"),
        "dir": Field(str, None, doc="carousel: a key of http.resource_dirs"),
        "interval": Field(float, 10.0, min=1.0, max=3600.0,
                          doc="carousel: seconds per image; camera: seconds between snapshots"),
    },
    doc="one widget of a dashboard row",
)

DASHBOARD_SCHEMA: Final = Schema(
    {
        "title": Field(str, None, doc="the page title; default the dashboard's name"),
        "rows": Field(types.GenericAlias(list, (types.GenericAlias(list, (WIDGET_SCHEMA,)),)), REQUIRED,
                      doc="rows of widgets, each a list of widgets whose columns add up to 12 at most"),
    },
    doc="one dashboard: rows of 12 columns",
)


class _Dashboards(Schema):
    """The ``dashboards`` section: a name -> :data:`DASHBOARD_SCHEMA` mapping, plus the
    checks a schema cannot say (widget keys, columns per row, names)."""

    def __init__(self) -> None:
        super().__init__({}, doc="dashboards by name, served at /dashboard/<name> (read scope)")

    def validate(self, raw: Any, path: tuple[Hashable, ...] = ()) -> tuple[dict[str, Any], list[ConfigProblem]]:
        """Validate the section, collecting every problem (see :meth:`Schema.validate`)."""
        path = tuple(path)
        if raw is None:
            return {}, []
        if not isinstance(raw, dict):
            return {}, [ConfigProblem(path, f"must be a mapping of dashboard names, not {show(raw)}")]
        out: dict[str, Any] = {}
        problems: list[ConfigProblem] = []
        for name, board in raw.items():
            where = (*path, name)
            if not isinstance(name, str) or not DASHBOARD_NAME.match(name):
                problems.append(ConfigProblem(where, f"dashboard name {show(name)} must be 1 to 64 letters, "
                                                     "digits, '_' or '-'"))
                continue
            values, ps = DASHBOARD_SCHEMA.validate(board, where)
            if not ps:
                ps = _check_rows(values["rows"], where)
            problems += ps
            out[name] = values
        return (out if not any(not getattr(p, "warning", False) for p in problems) else {}), problems

    def describe(self) -> dict[str, Any]:
        """The section as a JSON-schema-like dict: a mapping of dashboards."""
        return {"type": "object", "description": self.doc, "additionalProperties": DASHBOARD_SCHEMA.describe()}


def _check_rows(rows: list[list[dict[str, Any]]], where: tuple[Hashable, ...]) -> list[ConfigProblem]:
    """What a schema cannot say: the columns of each row, the keys each widget needs."""
    problems = []
    for r, row in enumerate(rows):
        taken = sum(w["columns"] for w in row)
        if taken > COLUMNS:
            problems.append(ConfigProblem((*where, "rows", r), f"the widgets take {taken} columns; a row has {COLUMNS}"))
        for i, widget in enumerate(row):
            for key in WIDGETS[widget["widget"]]:
                if not widget.get(key):
                    problems.append(ConfigProblem((*where, "rows", r, i), f"a {widget['widget']} widget needs {key!r}"))
    return problems


#: The ``dashboards`` config section.
DASHBOARDS_SCHEMA: Final = _Dashboards()
