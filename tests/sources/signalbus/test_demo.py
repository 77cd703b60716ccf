"""The Flask-SignalBus scenario of ``sigtrace demo`` runs and shows what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from opentelemetry.trace import StatusCode

from sigtrace.demo import signalbus as scenario
from sigtrace.testing import capture

CLI = "import sys; from sigtrace.cli import main; sys.exit(main())"


def test_demo_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scenario.LIBRARY == "flask_signalbus"
    with capture(sources=["signalbus"]) as cap:
        # The demo runner sets the global tracer provider; here the request spans go to the capture.
        monkeypatch.setattr(scenario.trace, "get_tracer", cap.tracer_provider.get_tracer)
        scenario.run()
    names = sorted(s.name for s in cap.spans)
    assert names.count("autoflush order_placed") == 2 and names.count("send order_placed") == 2
    assert len(cap.spans_named("flush invoice_requested")) == 1 and len(cap.spans_named("send invoice_requested")) == 1
    assert len(cap.spans_named("BATCH send stock_changed")) == 1
    failed = sorted(s.name for s in cap.spans if s.status.status_code == StatusCode.ERROR)
    assert failed == ["autoflush order_placed", "send order_placed"]
    events = [(e["operation"], e["collection"], e["outcome"], e.get("actor")) for e in cap.audit_events]
    assert events == [
        ("send", "order_placed", "ok", "alice"),  # autoflush, in the request
        ("send", "order_placed", "error", "alice"),  # the refused message
        ("send", "invoice_requested", "ok", "outbox-relay"),  # the explicit flush
        *[("BATCH send", "stock_changed", "ok", "outbox-relay")] * 3,  # the batch: one event per message
    ]
    request_traces = {s.get_span_context().trace_id for s in cap.spans_named("POST /orders")}  # type: ignore[union-attr]
    for relayed in ("send invoice_requested", "BATCH send stock_changed"):  # each send links to its request
        span = cap.span(relayed)
        assert span.links and {link.context.trace_id for link in span.links} <= request_traces


def test_demo_command_shows_all_three_signals() -> None:
    """The whole ``sigtrace demo --source signalbus`` on this stack: waterfall, audit, metrics, a raw line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    done = subprocess.run(
        [sys.executable, "-c", CLI, "demo", "--source", "signalbus"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.strip().startswith("flush invoice_requested") for line in lines)
    refused = [line for line in lines if "BrokerRefusedError" in line]
    assert refused and all("(deliberate: the broker refuses one message; commit() still returns)" in x for x in refused)
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["source"])
    # Runs are operations too: autoflush, send, flush, send, flushmany, batch ok; the refused autoflush and send.
    assert lines[header + 1].split()[:3] == ["signalbus", "6", "2"]
    raw = json.loads(lines[lines.index("one audit event as the JSON-lines record holds it:") + 1])
    assert raw["source"] == "signalbus" and raw["event"] == "sigtrace.audit" and raw["trace_id"]
