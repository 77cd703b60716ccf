"""The SQLAlchemy source's hot-path spellings, each pinned to the plain one it replaces."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from sigtrace.sources import sqlalchemy as source
from sigtrace.sources.kit import pk_text
from sigtrace.testing import capture
from tests.sources.sqlalchemy.models import Customer, Order, Stock, audit_by


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


def test_a_statement_without_a_filter_has_none_also_once_cached(engine: sa.Engine) -> None:
    """The filter cache keeps "" for a statement without WHERE clause: reported as no filter, first time or not."""
    with capture(sources=["sqlalchemy"]) as cap, orm.Session(engine) as session:
        session.add(Customer(id=1, name="c", orders=[Order(id=1, total=1)]))
        session.commit()
        cap.clear()
        for total in (2, 3):
            session.execute(sa.update(Order).values(total=total))
            session.execute(sa.update(Order).where(Order.total > total).values(status="paid"))
        session.commit()
    events = audit_by(cap.audit_events, "update", "Order")
    assert [event.get("filter") for event in events] == [None, "sa_orders.total > :total_1"] * 2


def test_the_statement_flags_read_are_what_orm_execute_state_says(engine: sa.Engine) -> None:
    """``_on_orm_execute`` reads the statement's flags where ORMExecuteState's properties would be read."""
    seen: list[tuple[bool, ...]] = []

    def listener(state: Any) -> None:
        statement = state.statement
        seen.append((state.is_update, statement.is_dml and statement.is_update))
        seen.append((state.is_delete, statement.is_dml and statement.is_delete))
        seen.append((state.is_insert, statement.is_dml and statement.is_insert))
        seen.append((state.is_select, statement.is_select))

    with orm.Session(engine) as session:
        sa.event.listen(session, "do_orm_execute", listener)
        session.execute(sa.insert(Customer).values(id=1, name="c"))
        session.execute(sa.update(Customer).values(name="d"))
        session.execute(sa.select(Customer))
        session.execute(sa.text("SELECT 1"))
        session.execute(sa.delete(Customer))
        session.rollback()
    assert len(seen) == 20
    assert all(ours == theirs for ours, theirs in seen)
