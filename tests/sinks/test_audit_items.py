"""Operation.audit_items: a batch audits one event per item; an empty sequence audits nothing."""

from __future__ import annotations

from sigtrace.core.operation import Operation
from sigtrace.testing import capture


def test_batch_audits_one_event_per_item_and_empty_audits_none() -> None:
    with capture(sources=[]) as cap:
        assert cap.installation is not None
        engine = cap.installation.engine
        batch = Operation("test", "BATCH send", collection="outbox", audit_items=[{"pk": "1"}, {"pk": "2"}])
        with engine.entry(batch):
            pass
        run = Operation("test", "flush", audit_items=())
        with engine.entry(run):
            pass
        span = cap.span("BATCH send outbox")
        events = cap.audit_for(span)
        assert [e["pk"] for e in events] == ["1", "2"]
        assert all(e["operation"] == "BATCH send" and e["outcome"] == "ok" for e in events)
        assert cap.span("flush") is not None
        assert len(cap.audit_events) == 2
