"""``logger.*``: write to pihub's log from hooks and procedures (Platypush's ``logger``).

Messages go to the logger ``pihub.user`` so they can be told apart from pihub's own.
The actions have Platypush's names: ``trace`` (logged at DEBUG: Python has no TRACE
level), ``debug``, ``info``, ``warning`` (alias ``warn``), ``error`` and ``exception``
(logged at ERROR: an action runs outside any ``except`` block, so there is no traceback
to add).

``msg`` may be any value (a number from ``${temperature}``, a dict...) and is logged as
its text. Extra positional arguments are %-formatted into ``msg`` as Platypush does
(``args: ["t=%s", 21.5]``); formatting happens in the action, so a bad format string is
reported to the caller instead of printing a logging error on stderr.

The text logged has its control characters escaped (:func:`pihub.logs.escape_controls`):
a message built from outside data (a file name, a webhook's body) holding a newline or
an ANSI escape cannot forge a second log line or colour the terminal.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pihub.config.schema import Schema
from pihub.errors import ActionError
from pihub.logs import escape_controls
from pihub.plugin import Plugin, action

#: The logger user messages go to.
USER_LOG = logging.getLogger("pihub.user")


class LoggerPlugin(Plugin):
    """Log messages from hooks and procedures to ``pihub.user``."""

    name: ClassVar[str] = "logger"
    config_schema: ClassVar[Schema | None] = Schema({}, doc="No options.")
    side_effects: ClassVar[bool] = False

    def _log(self, level: int, msg: Any, args: tuple[Any, ...]) -> None:
        """Format ``msg % args`` (when args are given) and log it at ``level``, control
        characters escaped.

        Raises:
            ActionError: ``msg`` does not format with ``args``.
        """
        text = msg if isinstance(msg, str) else str(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError, KeyError) as e:
                raise ActionError(f"cannot format msg {text!r} with args {list(args)!r}: {e}") from None
        USER_LOG.log(level, "%s", escape_controls(text))

    @action(aliases=["trace"])
    def debug(self, msg: Any, *args: Any) -> None:
        """Log at DEBUG (``trace``, Platypush's TRACE level, is the same action).

        Args:
            msg: the message; any value, logged as text.
            *args: values %-formatted into ``msg``.
        """
        self._log(logging.DEBUG, msg, args)

    @action
    def info(self, msg: Any, *args: Any) -> None:
        """Log at INFO.

        Args:
            msg: the message; any value, logged as text.
            *args: values %-formatted into ``msg``.
        """
        self._log(logging.INFO, msg, args)

    @action(aliases=["warn"])
    def warning(self, msg: Any, *args: Any) -> None:
        """Log at WARNING.

        Args:
            msg: the message; any value, logged as text.
            *args: values %-formatted into ``msg``.
        """
        self._log(logging.WARNING, msg, args)

    @action(aliases=["exception"])
    def error(self, msg: Any, *args: Any) -> None:
        """Log at ERROR (``exception`` is the same action: there is no traceback to add).

        Args:
            msg: the message; any value, logged as text.
            *args: values %-formatted into ``msg``.
        """
        self._log(logging.ERROR, msg, args)
