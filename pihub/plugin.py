"""Declaring actions: the :func:`action` marker and the :class:`Plugin` base.

This module depends on nothing else of pihub's, so backends (which must not import the
bus, the engine or the web) and plugins can both declare actions. The registry that
resolves and runs them is :mod:`pihub.engine.actions`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from pihub.config.schema import Schema

F = TypeVar("F", bound=Callable[..., Any])

#: attribute :func:`action` sets on a method
MARK = "__pihub_action__"


# --------------------------------------------------------------------------------------
# Declaring actions


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """What :func:`action` records on a method.

    Attributes:
        signature: the method's signature as declared (``self`` included).
        doc: the cleaned docstring ("" when there is none).
        aliases: other action names that call the same method (``trigger`` for ``fire``).
        blocking: False when the action only touches memory or a pin and returns in
            microseconds, never waiting on I/O, a child process, the network or a lock that
            such work holds (see :func:`action`).
    """

    signature: inspect.Signature
    doc: str
    aliases: tuple[str, ...] = ()
    blocking: bool = True


@typing.overload
def action(func: F, /) -> F: ...


@typing.overload
def action(*, aliases: Sequence[str] = (), blocking: bool = True) -> Callable[[F], F]: ...


def action(func: F | None = None, /, *, aliases: Sequence[str] = (),
           blocking: bool = True) -> F | Callable[[F], F]:
    """Mark a plugin method as an action callable from outside.

    Usable bare (``@action``) or with options (``@action(aliases=["trigger"])``). The method
    is returned unchanged, so Python callers keep calling it directly; only
    :class:`ActionRegistry` applies argument checks and the return mapping.

    Args:
        func: the method, when used bare.
        aliases: extra action names for the same method; each must be a valid identifier
            and must not clash with another action of the plugin (checked at registration).
        blocking: declare ``blocking=False`` only for an action that touches memory or a
            pin and returns within microseconds: it never waits on a disk write, a child
            process, the network, a device read that can stall, or a lock that such work
            holds. A hook whose steps call only such actions may run on the dispatcher
            thread itself, skipping the hand-off to a worker (see
            :mod:`pihub.engine.dispatcher`). The default, True, is always safe.

    Returns:
        The method itself, or a decorator when called with options.

    Raises:
        TypeError: ``blocking`` is not a bool.
    """
    if not isinstance(blocking, bool):
        raise TypeError(f"action(blocking=...) must be True or False, not {blocking!r}")

    def mark(f: F) -> F:
        """Record the ActionInfo on ``f`` and return ``f``."""
        doc = inspect.cleandoc(f.__doc__) if f.__doc__ else ""
        setattr(f, MARK, ActionInfo(inspect.signature(f), doc, tuple(aliases), blocking))
        return f

    if func is not None:
        return mark(func)
    return mark


class Plugin:
    """Base of every plugin: a named set of actions.

    Subclasses MUST:

    * set ``name``: lower-case dotted identifiers (``variable``, ``camera.pi``), the prefix
      of their actions; ``procedure`` is reserved;
    * mark each method callable from outside with :func:`action`, annotate its arguments
      with the types the module docstring lists, and document it in Google style (``Args:``
      lines become per-argument help in ``GET /actions`` and the panel);
    * make their actions thread-safe: they run concurrently on several threads.

    Subclasses MAY:

    * set ``config_schema``: the :class:`~pihub.config.schema.Schema` of their config
      section; the hub validates the section with it and passes the values to ``__init__``
      as keyword arguments;
    * set ``side_effects = False`` when their actions only touch pihub's own state
      (variables, the log, events): ``pihub replay`` then runs them. The default, True,
      is the safe one for hardware, processes and the network: replay skips those;
    * override :meth:`close` to release devices, threads and files.

    Actions report user errors (bad values, a disabled feature) by raising
    :class:`~pihub.errors.ActionError` with a lower-case message; anything else they raise
    is reported as a failure with its type.
    """

    name: ClassVar[str] = ""
    config_schema: ClassVar[Schema | None] = None
    side_effects: ClassVar[bool] = True

    def close(self) -> None:
        """Release what the plugin holds. MAY be overridden; the default does nothing.

        Called once by the hub at shutdown, after the plugin is unregistered, so no action
        of it is started afterwards (actions already running may still be finishing).
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
