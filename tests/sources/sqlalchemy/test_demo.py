"""The SQLAlchemy scenario of ``sigtrace demo`` runs on its embedded SQLite and shows what it claims."""

from __future__ import annotations

from opentelemetry.trace import StatusCode

from sigtrace import semconv
from sigtrace.demo import sqlalchemy as scenario
from sigtrace.testing import capture


def test_demo_scenario() -> None:
    with capture(sources=["sqlalchemy"]) as cap:
        scenario.run()
        ops = [(e["operation"], e["model"], e["outcome"]) for e in cap.audit_events]
        assert ops.count(("insert", "Order", semconv.OUTCOME_OK)) == 2
        assert ("update", "Order", semconv.OUTCOME_OK) in ops  # the ORM update and the unit of work's
        assert ("insert", "Customer", semconv.OUTCOME_ROLLED_BACK) in ops  # the savepoint
        assert ops.count(("delete", "Order", semconv.OUTCOME_OK)) == 2  # the cascade
        assert [e["error_type"] for e in cap.audit_events if e["outcome"] == semconv.OUTCOME_ERROR] == [
            "IntegrityError"
        ]
        failed = sorted(s.name for s in cap.spans if s.status.status_code == StatusCode.ERROR)
        assert failed == ["flush", "insert customers"]
        assert all(e["actor"] == "alice" for e in cap.audit_events)
        assert cap.installation is not None and cap.installation.in_flight() == 0
