"""Persisted variables: ``variable.get``, ``variable.set``, ``variable.unset``.

Platypush's ``variable`` plugin, kept in pihub's SQLite store so that values survive a
restart. Output shapes match Platypush: ``get`` returns ``{name: value}`` (all variables
without a name), ``set`` returns the values it was given.

Choices:

* Setting a variable to ``null`` removes it, as Platypush treats a None variable as
  unset (its listing leaves them out); ``get`` then answers the default.
* ``unset`` returns the names it removed (Platypush returns ``True``), so a procedure can
  tell whether something was there.
* Each change emits ``VariableChangedEvent{name, value}`` (``value`` null when removed)
  after it is committed; a ``set`` to the value already stored is no change and emits
  nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from pihub.config.schema import Schema
from pihub.errors import ActionError
from pihub.events import Event
from pihub.plugin import Plugin, action
from pihub.store import Store

log = logging.getLogger("pihub.plugins.variable")

#: ``emit(event)``: hands an event to the hub; must not block.
Emit = Callable[[Event], Any]


class VariablePlugin(Plugin):
    """Read and write persisted variables.

    Args:
        store: the hub's store (shared, thread-safe).
        emit: where ``VariableChangedEvent`` go.
    """

    name: ClassVar[str] = "variable"
    config_schema: ClassVar[Schema | None] = Schema({}, doc="No options.")
    side_effects: ClassVar[bool] = False

    def __init__(self, store: Store, emit: Emit) -> None:
        self._store = store
        self._emit = emit

    def _changed(self, values: dict[str, Any]) -> None:
        """Emit one VariableChangedEvent per name; a failing emit is logged, not raised."""
        for name, value in values.items():
            try:
                self._emit(Event.of("VariableChangedEvent", source=self.name, name=name, value=value))
            except Exception:
                # The change is committed already; failing the action would misreport it.
                log.warning("cannot emit VariableChangedEvent for %r", name, exc_info=True)

    @action
    def get(self, name: str | None = None, default: Any = None, default_value: Any = None) -> dict[str, Any]:
        """Read one variable, or all of them.

        Args:
            name: the variable; omit it to get every variable.
            default: the value answered when the variable does not exist.
            default_value: Platypush's name for ``default``; give one or the other.

        Returns:
            ``{name: value}`` for one variable; ``{name: value, ...}`` for all of them.
        """
        if default is not None and default_value is not None:
            raise ActionError("give 'default' or 'default_value', not both")
        fallback = default if default is not None else default_value
        if name is None:
            return self._store.get_variables()
        if not name:
            raise ActionError("name must be a non-empty str, not ''")
        try:
            return {name: self._store.get_variables([name]).get(name, fallback)}
        except ValueError as e:  # a name the store cannot hold (not UTF-8 text)
            raise ActionError(str(e)) from None

    @action
    def set(self, **values: Any) -> dict[str, Any]:
        """Set one or more variables: ``args: {colour: blue, count: 3}``.

        Args:
            **values: variable names and their values (JSON data: null, bool, number, str,
                list, dict); null removes the variable.

        Returns:
            The values given.
        """
        if not values:
            raise ActionError('no variables given (pass them as named arguments, e.g. {"colour": "blue"})')
        to_set = {n: v for n, v in values.items() if v is not None}
        to_unset = [n for n, v in values.items() if v is None]
        try:
            changed = self._store.set_variables(to_set)
            removed = self._store.unset_variables(to_unset) if to_unset else []
        except ValueError as e:
            raise ActionError(str(e)) from None
        self._changed({n: to_set[n] for n in changed} | dict.fromkeys(removed))
        return values

    @action
    def unset(self, *names: str, name: str | None = None) -> list[str]:
        """Remove variables: ``args: {name: colour}`` or ``args: [colour, count]``.

        Args:
            *names: the variables to remove.
            name: one variable to remove (Platypush's form).

        Returns:
            The names that existed and were removed.
        """
        wanted = [*names, *([name] if name is not None else [])]
        if not wanted:
            raise ActionError("no variable named (pass 'name' or a list of names)")
        try:
            removed = self._store.unset_variables(wanted)
        except ValueError as e:
            raise ActionError(str(e)) from None
        self._changed(dict.fromkeys(removed))
        return removed
