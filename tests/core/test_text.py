"""safe_text: the text of any value, never an exception, bounded."""

from __future__ import annotations

import pytest

from sigtrace.core.text import MAX_TEXT, safe_text


class IntStr:
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "<IntStr 42>"


class Hostile:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_plain_values_are_their_str() -> None:
    assert safe_text("abc") == "abc"
    assert safe_text(12) == "12"
    assert safe_text(1.5) == "1.5"


def test_a_str_that_fails_falls_back_to_repr_then_to_the_type() -> None:
    with pytest.raises(TypeError):
        str(IntStr())
    assert safe_text(IntStr()) == "<IntStr 42>"
    assert safe_text(Hostile()) == "<Hostile>"


def test_text_is_bounded() -> None:
    long = safe_text("x" * 10_000)
    assert len(long) == MAX_TEXT and long.endswith("…")
    assert safe_text("abcdef", limit=4) == "abc…"
    assert safe_text(10**5000).startswith("<int")  # Python refuses str() of an int that long
