"""The safety net: a sigtrace failure inside a flush, a statement or a transaction event never reaches the
application (counted and logged instead); strict mode (sigtrace's own suite) raises it. And reads."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.sources import sqlalchemy as source
from sigtrace.sources.kit import sa_session as _sa_session
from sigtrace.testing import capture
from tests.sources.sqlalchemy.models import Customer, Order


class BrokenError(Exception):
    pass


def broken(*_args: Any, **_kwargs: Any) -> Any:
    raise BrokenError("sigtrace bug")


def test_a_broken_source_never_breaks_the_application(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "_changes", broken)  # inside every batch's end
    monkeypatch.setattr(source, "_filter_text", broken)  # after every ORM statement ran
    monkeypatch.setattr(_sa_session, "_innermost", broken)  # inside every commit and rollback event
    before = safety.error_counts()
    with safety.strict(False), capture(sources=["sqlalchemy"]) as cap, orm.Session(engine) as session:
        session.add(Customer(id=1, name="safe", orders=[Order(id=1, total=1)]))
        session.commit()
        assert session.execute(sa.update(Order).values(total=2)).rowcount == 1
        session.commit()
        assert session.get(Order, 1).total == 2  # type: ignore[union-attr]
        assert cap.metric_total(semconv.METRIC_INTERNAL_ERRORS) >= 3
    after = safety.error_counts()
    for kind in ("source.sqlalchemy.batch", "source.sqlalchemy.execute.after", "source.sqlalchemy.transactions"):
        assert after.get(kind, 0) > before.get(kind, 0), kind


def test_a_malformed_orm_execute_event_is_counted_and_sqlalchemy_goes_on(engine: sa.Engine) -> None:
    """``do_orm_execute`` reads the statement before its entry scope: that read is under the net too."""
    before = safety.error_counts().get("source.sqlalchemy.orm_execute", 0)
    with safety.strict(False), capture(sources=["sqlalchemy"]), orm.Session(engine) as session:
        session.dispatch.do_orm_execute(None)  # no ORMExecuteState: the net catches it, nothing is raised here
        session.add(Customer(id=3, name="after"))
        session.commit()
        assert session.get(Customer, 3) is not None
    assert safety.error_counts()["source.sqlalchemy.orm_execute"] == before + 1
    with (
        safety.strict(True),
        capture(sources=["sqlalchemy"]),
        orm.Session(engine) as session,
        pytest.raises(AttributeError),
    ):
        session.dispatch.do_orm_execute(None)


def test_strict_mode_raises_sigtraces_own_errors(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "_filter_text", broken)
    with safety.strict(True), capture(sources=["sqlalchemy"]), orm.Session(engine) as session:
        with pytest.raises(BrokenError):
            session.execute(sa.update(Order).values(total=2))
        session.rollback()


def test_reads_only_with_audit_reads(engine: sa.Engine) -> None:
    with orm.Session(engine) as session:
        session.add(Customer(id=2, name="reader"))
        session.commit()
    with capture(sources=["sqlalchemy"]) as cap, orm.Session(engine) as session:
        assert session.scalars(sa.select(Customer)).all()
        assert cap.spans == () and cap.audit_events == []
    with capture(sources=["sqlalchemy"], audit_reads=True) as cap, orm.Session(engine) as session:
        assert [c.name for c in session.scalars(sa.select(Customer))] == ["reader"]
        span = cap.span("select sa_customers")
        assert span.parent is None
        (event,) = cap.audit_events
        assert event["operation"] == "select" and event["outcome"] == semconv.OUTCOME_OK
