"""The SQLAlchemy source's hot-path spellings, each pinned to the plain one it replaces."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from sigtrace.sources import sqlalchemy as source
from sigtrace.sources.kit import pk_text
from tests.sources.sqlalchemy.models import Customer, Stock


class _Unprintable:
    def __str__(self) -> str:
        raise TypeError("no text")

    def __repr__(self) -> str:
        raise TypeError("no repr either")


@pytest.mark.parametrize(
    "identity",
    [(1,), ("a",), (None,), ("x" * 300,), (_Unprintable(),), (2, "b"), (None, None), (3, None), ()],
    ids=["int", "str", "none", "long", "unprintable", "composite", "composite-none", "composite-part", "empty"],
)
def test_the_pk_of_an_identity_is_pk_text_of_it(identity: tuple[Any, ...]) -> None:
    """``_pk_of``'s one-column fast path says what ``pk_text(state.identity)`` says."""
    facts = source._facts(sa.inspect(Stock if len(identity) == 2 else Customer))
    state = SimpleNamespace(key=(Customer, identity, None), dict={})
    assert source._pk_of(facts, state) == pk_text(identity)
