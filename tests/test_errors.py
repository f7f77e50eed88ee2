"""The error tree and the one "did you mean" of pihub's messages."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from pihub.errors import PihubError, close_matches, did_you_mean, shorten


def test_suggestions_handle_transpositions_short_words_and_far_words() -> None:
    assert did_you_mean("fi", ["if", "for"]) == " (did you mean 'if'?)"
    assert did_you_mean("esle", ["else", "elif"]) == " (did you mean 'else'?)"
    assert did_you_mean("acton", ["action"]) == " (did you mean 'action'?)"
    assert did_you_mean("banana", ["if", "else"]) == ""


def test_close_matches_puts_edits_first_then_similar_longer_words() -> None:
    assert close_matches("temprature_sensor", ["temperature_sensor_x", "humidity"]) == ["temperature_sensor_x"]
    assert close_matches("gpoi", ["gpio", "gpios", "adc"], n=1) == ["gpio"]
    assert close_matches("mock", ["mock", 3, None]) == []  # the word itself and non-strings are skipped


def _modules() -> list[str]:
    import pihub

    return sorted(m.name for m in pkgutil.walk_packages(pihub.__path__, "pihub.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("module", _modules())
def test_every_public_exception_of_a_module_is_in_the_error_tree(module: str) -> None:
    """Exceptions callers may catch live in pihub.errors under PihubError; private ones
    (a leading underscore) are control flow inside one module. Every module of the
    package is checked, so a new backend's exception is too."""
    mod = importlib.import_module(module)
    for name, obj in vars(mod).items():
        if inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_"):
            if obj.__module__.startswith("pihub"):
                assert issubclass(obj, PihubError), f"{module}.{name} is not a PihubError"
                assert obj.__module__ == "pihub.errors", f"{module}.{name} is defined outside pihub.errors"


@pytest.mark.parametrize(("value", "said"), [
    ("n" * 10_000_000, "'nnnnn"),
    (b"b" * 10_000_000, "b'bbbb"),
    (bytearray(b"a" * 10_000_000), "bytearray(b'aaa"),
    ([[[[[1]]]]] * 1000, "[[[[...]]], [[[...]]]"),
])
def test_shorten_is_bounded_and_says_when_it_cut(value: object, said: str) -> None:
    text = shorten(value, 200)  # room for the repr's own cut: "..." is its mark, not shorten's
    assert text.startswith(said) and len(text) <= 200 and "..." in text
