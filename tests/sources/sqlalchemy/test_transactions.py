"""Audit outcomes follow the session's transaction (issue: the audit log says what the database kept).

On SQLite and the real PostgreSQL (``engine`` is parametrized; PostgreSQL skips when the server is absent).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.outcomes import counted, outcomes_of, run_in_threads
from tests.sources.sqlalchemy.models import Customer

TABLE = Customer.__tablename__


def inserts_counted(cap: Capture, outcome: str) -> float:
    return cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome=outcome, db__operation__name="insert")


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["sqlalchemy"]) as cap:
        yield cap


def test_a_committed_write_is_audited_at_the_commit_not_before(engine: sa.Engine, cap: Capture) -> None:
    with orm.Session(engine) as session:
        session.add(Customer(id=1, name="alice"))
        session.flush()
        # The span is not delayed; the audit event and the count wait for the commit.
        assert cap.span(f"insert {TABLE}") is not None
        assert outcomes_of(cap, TABLE) == {}
        assert inserts_counted(cap, semconv.OUTCOME_OK) == 0  # (the flush itself is no write: counted at its end)
        session.commit()
    assert outcomes_of(cap, TABLE) == {"1": [semconv.OUTCOME_OK]}
    (event,) = cap.audit_for(cap.span(f"insert {TABLE}"))
    assert event["outcome"] == semconv.OUTCOME_OK
    assert inserts_counted(cap, semconv.OUTCOME_OK) == 1


def test_a_hundred_concurrent_transactions_half_rolled_back_match_the_database(
    engine: sa.Engine, cap: Capture, backend: str
) -> None:
    transactions, threads = 100, 8 if backend == "postgresql" else 1  # SQLite: one writer at a time
    factory = orm.sessionmaker(engine)
    pending = iter(range(1, transactions + 1))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                number = next(pending, None)
            if number is None:
                return
            with factory() as session:
                session.add(Customer(id=number, name=f"c{number}"))
                session.flush()
                if number % 2:
                    session.commit()
                else:
                    session.rollback()

    run_in_threads(threads, work)
    with orm.Session(engine) as session:
        stored = {str(pk) for pk in session.scalars(sa.select(Customer.id))}
    seen = outcomes_of(cap, TABLE)
    assert len(seen) == transactions
    for pk, outcomes in seen.items():
        assert outcomes == [semconv.OUTCOME_OK if pk in stored else semconv.OUTCOME_ROLLED_BACK], pk
    assert len(stored) == transactions // 2
    assert inserts_counted(cap, semconv.OUTCOME_ROLLED_BACK) == transactions // 2
    assert counted(cap, semconv.OUTCOME_ROLLED_BACK) == transactions // 2  # nothing but the inserts rolled back


def test_spans_only_listens_to_no_session_transaction(engine: sa.Engine) -> None:
    """Without the audit log and metrics nothing waits for a commit (``Engine.holds_writes``): no listener on
    ``Session`` mirrors its transactions; the insert's span ends with its flush as always."""
    from sigtrace.sources.kit.sa_session import TRACKER

    with capture(sources=["sqlalchemy"]):
        assert TRACKER.active  # what the check below would see listening
    with capture(sources=["sqlalchemy"], audit=False, metrics=False) as spans_only:
        assert not TRACKER.active
        assert not sa.event.contains(orm.Session, "after_commit", TRACKER._listeners[1][1])
        with orm.Session(engine) as session:
            session.add(Customer(id=7, name="rolled back"))
            session.flush()
            session.rollback()
        span = spans_only.span(f"insert {TABLE}")
        assert span.status.is_ok
        assert spans_only.installation is not None and spans_only.installation.in_flight() == 0
    with orm.Session(engine) as session:
        assert session.get(Customer, 7) is None
