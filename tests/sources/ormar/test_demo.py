"""The ormar scenario of ``sigtrace demo`` runs on its embedded SQLite and shows what it claims."""

from __future__ import annotations

from opentelemetry.trace import StatusCode

from sigtrace.demo import ormar as scenario
from sigtrace.testing import capture


def test_demo_scenario() -> None:
    with capture(sources=["ormar"]) as cap:
        scenario.run()
        ops = [(e["operation"], e["outcome"]) for e in cap.audit_events]
        assert ("relation_add", "ok") in ops and ("update", "ok") in ops and ("bulk_create", "ok") in ops
        assert any(e["operation"] == "update" and "filter" in e for e in cap.audit_events)  # the query set's
        assert [e["error_type"] for e in cap.audit_events if e["outcome"] == "error"] == ["IntegrityError"]
        failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
        assert [s.name for s in failed] == ["save tags"]
        assert all(e["actor"] == "alice" for e in cap.audit_events)
        assert cap.installation is not None and cap.installation.in_flight() == 0
