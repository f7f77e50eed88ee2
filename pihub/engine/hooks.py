"""Hooks and pihub's hook-selection rule.

A :class:`Hook` is one ``event.hook.NAME`` of the config: a compiled condition, the
compiled ``then:`` procedure (opaque here) and a priority.

**Selection rule.** When one event matches several hooks, :func:`select` decides which run:

    Among the matching hooks, only those with the highest ``priority`` run; hooks with
    equal priority all run, in config order.

``priority`` defaults to 0, so with no priorities configured every matching hook runs,
exactly as in Platypush. A hook that should pre-empt the others for the events it
matches gets a higher priority; a negative priority makes a fallback that runs only when
no priority-0 hook matches.

**How this differs from Platypush** (PLATYPUSH.md §4.6-4.7): Platypush computes a score per
match (the mean of per-attribute contributions: 2.0 per non-string equality, a running
total per string equality, ``sys.maxsize`` for an exact phrase, nothing for relational
conditions) and runs the *union* of the best-scoring hooks and the highest-priority
hooks, where the running maximum priority starts at 0. So once any matching hook has a
priority above 0, the lower-priority hooks that happen to have the best score still run,
and which ones those are depends on the score arithmetic. pihub has no scores: the
outcome depends only on the priorities and the config order, and a higher-priority hook
always excludes lower-priority ones. Configs without priorities behave the same in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pihub.engine.conditions import Condition
from pihub.errors import ConfigProblem


@dataclass(frozen=True, slots=True, eq=False)
class Hook:
    """One hook.

    Attributes:
        name: the hook name (``event.hook.NAME``).
        condition: the compiled ``if:`` block.
        then: the compiled ``then:`` procedure; owned and run by the procedure engine,
            carried here untouched.
        priority: selection priority (see the module docstring); higher wins; default 0.
        order: position in the config (0-based); ties in priority run in this order.

    Raises:
        ConfigProblem: at ``("priority",)`` when ``priority`` is not an integer.
    """

    name: str
    condition: Condition
    then: Any
    priority: int = 0
    order: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ConfigProblem(("priority",), f"must be an integer, not {self.priority!r}")

    def __repr__(self) -> str:
        return f"<Hook {self.name!r} priority={self.priority} order={self.order}>"


def select(matches: Sequence[tuple[Hook, dict[str, Any]]]) -> list[tuple[Hook, dict[str, Any]]]:
    """Apply the selection rule to the hooks that matched one event.

    Args:
        matches: ``(hook, captures)`` for every hook whose condition matched, in any order.

    Returns:
        The ``(hook, captures)`` pairs to run: those with the highest priority, sorted by
        config order. Empty when ``matches`` is empty.
    """
    if len(matches) <= 1:  # most events match one hook at most: no ranking to do
        return list(matches)
    top = max(h.priority for h, _ in matches)
    chosen = [m for m in matches if m[0].priority == top]
    chosen.sort(key=lambda m: m[0].order)
    return chosen


def outranked_by(hook: Hook, matches: Sequence[tuple[Hook, dict[str, Any]]]) -> Hook | None:
    """The first-in-config-order matching hook whose higher priority kept ``hook`` from running.

    Args:
        hook: a hook that matched.
        matches: every ``(hook, captures)`` that matched the same event.

    Returns:
        That hook, or None when ``hook`` is selected.
    """
    better = [h for h, _ in matches if h.priority > hook.priority]
    if not better:
        return None
    top = max(h.priority for h in better)
    return min((h for h in better if h.priority == top), key=lambda h: h.order)


__all__ = ["Hook", "outranked_by", "select"]
