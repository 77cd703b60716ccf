"""Audit outputs a log shipper relies on: a JSON-lines file that survives logrotate, trace ids in the app's own logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import sigtrace
from sigtrace.core.operation import Operation
from sigtrace.core.text import span_id_hex, trace_id_hex
from sigtrace.sinks import audit
from sigtrace.sinks.redaction import Redactor
from sigtrace.testing import capture


def audit_events(path: Path) -> list[dict[str, Any]]:
    """The audit events of a file, without the stream header and checkpoint lines (tests/sinks/test_audit_chain.py)."""
    return [event for line in path.read_text().splitlines() if (event := json.loads(line))["event"] == "sigtrace.audit"]


def run_operation(cap: Any, pk: str) -> None:
    engine = cap.installation.engine
    engine.begin(Operation("test", "save", collection="orders", pk=pk), pk)
    engine.end(pk)


def test_audit_file_is_reopened_after_logrotate_moves_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit._ReopeningFile, "check_interval", 0.0)
    path = tmp_path / "audit.jsonl"
    rotated = tmp_path / "audit.jsonl.1"
    with capture(sources=["blinker"], audit=True, audit_file=str(path)) as cap:
        run_operation(cap, "1")
        path.rename(rotated)  # logrotate's default "create" mode: move away, the writer must follow
        run_operation(cap, "2")
        run_operation(cap, "3")
    assert [event["pk"] for event in audit_events(rotated)] == ["1"]
    assert [event["pk"] for event in audit_events(path)] == ["2", "3"]


def test_copytruncate_keeps_appending(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with capture(sources=["blinker"], audit=True, audit_file=str(path)) as cap:
        run_operation(cap, "1")
        path.write_text("")  # logrotate's copytruncate mode
        run_operation(cap, "2")
    assert [event["pk"] for event in audit_events(path)] == ["2"]


def test_add_trace_context_puts_the_current_span_in_the_applications_own_log_lines() -> None:
    with capture(sources=["blinker"]) as cap:
        tracer = cap.tracer_provider.get_tracer("app")
        with structlog.testing.capture_logs(processors=[sigtrace.add_trace_context]) as logs:
            logger = structlog.get_logger()
            logger.info("outside")
            with tracer.start_as_current_span("request") as span:
                logger.info("inside")
        ctx = span.get_span_context()
    outside, inside = logs
    assert "trace_id" not in outside
    assert inside["trace_id"] == format(ctx.trace_id, "032x") and inside["span_id"] == format(ctx.span_id, "016x")


@pytest.mark.parametrize(
    ("trace_id", "span_id"), [(1, 1), (2**128 - 1, 2**64 - 1), (0x0AF7651916CD43DD8448EB211C80319C, 0xB7)]
)
def test_trace_and_span_ids_are_written_as_w3c_hex_whatever_their_leading_zeros(trace_id: int, span_id: int) -> None:
    # The ids are spelled through bytes.hex() (no format spec parsed per event), by core/text.py's helpers
    # and inline in make_event: the same text as format(id, "032x") / format(id, "016x") for every 128-bit /
    # 64-bit id, leading zeros included.
    assert trace_id_hex(trace_id) == format(trace_id, "032x") and span_id_hex(span_id) == format(span_id, "016x")
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1)))
    op = Operation("blinker", "save", collection="orders", pk="1")
    op.span, op.outcome = span, "ok"
    sink = audit.AuditSink(
        [], service_name=None, redactor=Redactor(), capture_values=False, audit_reads=False, actor=None
    )
    event = sink.make_event(op, 1_700_000_000_000_000_000, 0.001)
    with trace.use_span(span):
        logged = sigtrace.add_trace_context(None, "info", {})
    for fields in (event, logged):
        assert fields["trace_id"] == format(trace_id, "032x") and fields["span_id"] == format(span_id, "016x")
