"""The hook-selection rule (pihub.engine.hooks.select)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pihub.engine.conditions import compile_condition
from pihub.engine.hooks import Hook, outranked_by, select
from pihub.errors import ConfigProblem

ANY = compile_condition({}, ())


def hooks(*priorities: int) -> list[Hook]:
    return [Hook(f"h{i}", ANY, None, p, i) for i, p in enumerate(priorities)]


def names(chosen: list[tuple[Hook, dict[str, Any]]]) -> list[str]:
    return [h.name for h, _ in chosen]


def test_nothing_matched_nothing_runs() -> None:
    assert select([]) == []


def test_without_priorities_every_matching_hook_runs_in_config_order() -> None:
    hs = hooks(0, 0, 0, 0)
    shuffled = [(h, {}) for h in hs]
    random.Random(4).shuffle(shuffled)
    assert names(select(shuffled)) == ["h0", "h1", "h2", "h3"]


def test_only_the_highest_priority_runs() -> None:
    hs = hooks(0, 5, 0, 2)
    assert names(select([(h, {}) for h in hs])) == ["h1"]


def test_ties_at_the_top_run_in_config_order() -> None:
    hs = hooks(3, 0, 3, 1, 3)
    assert names(select([(h, {}) for h in reversed(hs)])) == ["h0", "h2", "h4"]


def test_negative_priority_is_a_fallback() -> None:
    fallback, normal = hooks(-1, 0)
    assert names(select([(fallback, {}), (normal, {})])) == ["h1"]
    assert names(select([(fallback, {})])) == ["h0"]


def test_captures_travel_with_their_hook() -> None:
    a, b = hooks(1, 1)
    assert select([(b, {"x": "2"}), (a, {"x": "1"})]) == [(a, {"x": "1"}), (b, {"x": "2"})]


def test_input_is_not_modified() -> None:
    hs = hooks(0, 1)
    given = [(hs[1], {}), (hs[0], {})]
    select(given)
    assert given == [(hs[1], {}), (hs[0], {})]


@pytest.mark.parametrize("priority", ["1", 1.5, True, None])
def test_priority_must_be_an_integer(priority: Any) -> None:
    with pytest.raises(ConfigProblem) as info:
        Hook("h", ANY, None, priority, 0)
    assert info.value.path == ("priority",) and repr(priority) in info.value.message


def test_outranked_by_names_the_first_top_priority_hook() -> None:
    hs = hooks(0, 2, 5, 5)
    matches = [(h, {}) for h in hs]
    assert outranked_by(hs[0], matches) is hs[2]
    assert outranked_by(hs[1], matches) is hs[2]
    assert outranked_by(hs[3], matches) is None
