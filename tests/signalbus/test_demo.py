"""The Flask-SignalBus scenario of ``sigtrace demo`` runs and shows what it promises."""

from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode

from sigtrace.demo import signalbus as scenario
from sigtrace.testing import capture


def test_demo_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scenario.LIBRARY == "flask_signalbus"
    with capture(sources=["signalbus"]) as cap:
        # The demo runner sets the global tracer provider; here the request spans go to the capture.
        monkeypatch.setattr(scenario.trace, "get_tracer", cap.tracer_provider.get_tracer)
        scenario.run()
    names = sorted(s.name for s in cap.spans)
    assert names.count("autoflush order_placed") == 2 and names.count("send order_placed") == 2
    assert len(cap.spans_named("BATCH send stock_changed")) == 1
    failed = sorted(s.name for s in cap.spans if s.status.status_code == StatusCode.ERROR)
    assert failed == ["autoflush order_placed", "send order_placed"]
    assert [e["outcome"] for e in cap.audit_events] == ["ok", "error", "ok", "ok", "ok"]
    batch = cap.span("BATCH send stock_changed")
    request_traces = {s.get_span_context().trace_id for s in cap.spans_named("POST /orders")}  # type: ignore[union-attr]
    assert {link.context.trace_id for link in batch.links} <= request_traces and batch.links
