"""Every way Flask-SignalBus sends: autoflush, flush, flushmany, flushordered, batches, the CLI; and failures.

Each test runs on SQLite and on the real PostgreSQL (``harness`` is parametrized; PostgreSQL skips
when the server is absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask_signalbus import SignalBus
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import sigtrace
from sigtrace import semconv
from sigtrace.sources.signalbus import ATTR_LEFT_PENDING, ATTR_MODELS, ATTR_PKS, ATTR_SENT, METRIC_LEFT_PENDING
from sigtrace.testing import Capture, capture
from tests.sources.signalbus.harness import BrokerDownError, Harness, is_wrapped


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["signalbus"]) as cap:
        yield cap


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def children(cap: Capture, parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in cap.spans if s.parent is not None and s.parent.span_id == span_id(parent)]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def db_system(h: Harness) -> str:
    return "postgresql" if h.db.engine.dialect.name == "postgresql" else "sqlite"


def add(h: Harness, model: Any, *texts: str, **fields: Any) -> None:
    for text in texts:
        h.db.session.add(model(text=text, **fields))
    h.db.session.commit()


# --- autoflush ---------------------------------------------------------------------------------------


def test_autoflush_sends_inside_the_request_trace(cap: Capture, harness: Harness) -> None:
    tracer = cap.tracer_provider.get_tracer("test")
    with sigtrace.actor("alice"), tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
        add(harness, harness.Outbox, "o1", "o2")
    assert sorted(harness.texts()) == ["o1", "o2"]
    assert harness.pending(harness.Outbox) == 0
    run = cap.span("autoflush outbox")
    assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id
    a = attrs(run)
    assert a[ATTR_SENT] == 2 and a[ATTR_LEFT_PENDING] == 0 and a[ATTR_MODELS] == ("Outbox",)
    assert a[semconv.DB_SYSTEM_NAME] == db_system(harness)
    sends = cap.spans_named("send outbox")
    assert len(sends) == 2 and all(s.parent is not None and s.parent.span_id == span_id(run) for s in sends)
    assert all(s.kind == SpanKind.CLIENT and attrs(s)[semconv.DB_SYSTEM_NAME] == db_system(harness) for s in sends)
    assert not any(s.links for s in sends)  # same trace as the row's origin: no link needed
    # One audit event per message, none for the run; the actor of the request.
    events = cap.audit_events
    assert sorted(e["pk"] for e in events) == sorted(attrs(s)[semconv.SIGTRACE_PK] for s in sends)
    assert {(e["operation"], e["model"], e["collection"], e["outcome"], e["actor"]) for e in events} == {
        ("send", "Outbox", "outbox", "ok", "alice")
    }
    # The headers the send injected carry the send span's context.
    send_ids = {format(span_id(s), "016x") for s in sends}
    assert {headers["traceparent"].split("-")[2] for _k, _i, _t, headers in harness.sent} == send_ids


def test_commit_without_signals_makes_no_span(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Deferred, "d1")  # autoflush off for this model: nothing queued
    harness.db.session.commit()
    assert cap.spans == ()
    assert harness.pending(harness.Deferred) == 1


def test_autoflush_disabled_on_the_bus_sends_nothing(cap: Capture, harness: Harness) -> None:
    harness.bus.autoflush = False
    add(harness, harness.Outbox, "o1")
    assert cap.spans == () and harness.sent == []
    assert harness.bus.flush(wait=0) == 1
    assert attrs(cap.span("flush"))[ATTR_SENT] == 1


def test_autoflush_failure_is_an_error_not_raised_and_rows_stay(cap: Capture, harness: Harness) -> None:
    harness.fail_texts.add("o2")
    h = harness
    for text in ("o1", "o2", "o3"):
        h.db.session.add(h.Outbox(text=text))
    h.db.session.commit()  # Flask-SignalBus logs the failed send and rolls back: commit() does not raise
    assert h.pending(h.Outbox) == 3  # even the message sent before the failure stays (it will be sent again)
    failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
    names = sorted(s.name for s in failed)
    assert names == ["autoflush outbox", "send outbox"]
    send = next(s for s in failed if s.name == "send outbox")
    assert attrs(send)[semconv.ERROR_TYPE] == "BrokerDownError"
    assert any(e.name == "exception" for e in send.events)
    run = cap.span("autoflush outbox")
    assert attrs(run)[ATTR_LEFT_PENDING] == 3 and attrs(run)[ATTR_SENT] == 0
    assert attrs(run)[semconv.ERROR_TYPE] == "BrokerDownError"
    errors = [e for e in cap.audit_events if e["outcome"] == "error"]
    assert len(errors) == 1 and errors[0]["error_type"] == "BrokerDownError"
    assert errors[0]["pk"] == attrs(send)[semconv.SIGTRACE_PK]
    assert cap.metric_total(METRIC_LEFT_PENDING, db__collection__name="outbox", error__type="BrokerDownError") == 3
    assert cap.metric_total(semconv.METRIC_DURATION, error__type="BrokerDownError", db__operation__name="send") == 1
    # Once the broker is back, a flush sends what was left.
    h.fail_texts.clear()
    cap.clear()
    assert h.bus.flush(wait=0) == 3
    assert h.pending(h.Outbox) == 0
    assert attrs(cap.span("flush"))[ATTR_SENT] == 3


# --- explicit flushes --------------------------------------------------------------------------------


def test_flush_is_one_run_with_a_span_per_message(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Deferred, "d1", "d2", "d3")
    assert harness.bus.flush(models=[harness.Deferred], wait=0) == 3
    run = cap.span("flush deferred_outbox")
    assert run.parent is None
    assert attrs(run)[ATTR_SENT] == 3 and attrs(run)[ATTR_LEFT_PENDING] == 0
    sends = cap.spans_named("send deferred_outbox")
    assert len(sends) == 3 and {s.parent.span_id for s in sends if s.parent} == {span_id(run)}
    assert len(cap.audit_events) == 3
    assert cap.metric_total(semconv.METRIC_OPERATIONS, db__operation__name="send", sigtrace__outcome="ok") == 3
    assert cap.metric_total(semconv.METRIC_OPERATIONS, db__operation__name="flush", sigtrace__outcome="ok") == 1


def test_flush_of_every_model(cap: Capture, harness: Harness) -> None:
    harness.bus.autoflush = False
    add(harness, harness.Outbox, "o1")
    add(harness, harness.Deferred, "d1")
    add(harness, harness.Ordered, "r1", rank=1)
    assert harness.bus.flush(wait=0) == 3
    run = cap.span("flush")
    assert attrs(run)[ATTR_MODELS] == ("Batch", "Deferred", "Ordered", "Outbox")
    assert attrs(run)[ATTR_SENT] == 3
    assert sorted(s.name for s in children(cap, run)) == ["send deferred_outbox", "send ordered_outbox", "send outbox"]


def test_flushmany(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Deferred, *(f"d{i}" for i in range(5)))
    assert harness.bus.flushmany(models=[harness.Deferred]) == 5
    run = cap.span("flushmany deferred_outbox")
    assert attrs(run)[ATTR_SENT] == 5 and attrs(run)[semconv.DB_SYSTEM_NAME] == db_system(harness)
    assert len([s for s in children(cap, run) if s.name == "send deferred_outbox"]) == 5
    assert harness.pending(harness.Deferred) == 0


def test_flushordered_sends_in_order(cap: Capture, harness: Harness) -> None:
    for text, rank in (("c", 3), ("a", 1), ("b", 2)):
        harness.db.session.add(harness.Ordered(text=text, rank=rank))
    harness.db.session.commit()
    assert harness.bus.flushordered(models=[harness.Ordered]) == 3
    assert harness.texts() == ["a", "b", "c"]
    run = cap.span("flushordered ordered_outbox")
    sends = sorted(children(cap, run), key=lambda s: s.start_time or 0)
    by_pk = {str(i): t for _k, i, t, _h in harness.sent}
    assert [by_pk[attrs(s)[semconv.SIGTRACE_PK]] for s in sends] == ["a", "b", "c"]


def test_batch_send_is_one_span_per_batch_and_one_audit_event_per_message(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Batch, *(f"b{i}" for i in range(12)))  # burst 10: a batch of 10, then of 2
    assert harness.bus.flushmany(models=[harness.Batch]) == 12
    batches = sorted(cap.spans_named("BATCH send batch_outbox"), key=lambda s: s.start_time or 0)
    assert [attrs(s)[semconv.DB_OPERATION_BATCH_SIZE] for s in batches] == [10, 2]
    assert [len(attrs(s)[ATTR_PKS]) for s in batches] == [10, 2]
    assert [attrs(s)[semconv.DB_OPERATION_NAME] for s in batches] == ["BATCH send", "BATCH send"]
    assert [len(b) for b in harness.batches] == [10, 2]
    # Nothing else: the model's per-message method was not used, and the run audits nothing itself.
    assert sorted({s.name for s in cap.spans}) == ["BATCH send batch_outbox", "flushmany batch_outbox"]
    events = cap.audit_events
    assert len(events) == 12 and {e["operation"] for e in events} == {"BATCH send"}
    assert sorted(int(e["pk"]) for e in events) == sorted(i for _k, i, _t, _h in harness.sent)
    assert cap.metric_total(semconv.METRIC_OPERATIONS, db__operation__name="BATCH send") == 2


def test_failing_batch_leaves_its_rows_pending(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Batch, *(f"b{i}" for i in range(12)))
    harness.fail_texts.add("b11")  # in the second batch
    with pytest.raises(BrokerDownError):
        harness.bus.flushmany(models=[harness.Batch])
    assert harness.pending(harness.Batch) == 2
    ok, failed = sorted(cap.spans_named("BATCH send batch_outbox"), key=lambda s: s.start_time or 0)
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR and attrs(failed)[semconv.ERROR_TYPE] == "BrokerDownError"
    run = cap.span("flushmany batch_outbox")
    assert run.status.status_code == StatusCode.ERROR
    assert attrs(run)[ATTR_SENT] == 10 and attrs(run)[ATTR_LEFT_PENDING] == 2
    outcomes = sorted(e["outcome"] for e in cap.audit_events)
    assert outcomes == ["error"] * 2 + ["ok"] * 10
    assert cap.metric_total(METRIC_LEFT_PENDING, db__operation__name="flushmany") == 2


def test_failing_flush_raises_and_leaves_the_chunk_pending(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Deferred, "d1", "d2", "d3")
    harness.fail_texts.add("d2")
    with pytest.raises(BrokerDownError):  # unlike autoflush, the flush kinds let the error reach their caller
        harness.bus.flush(models=[harness.Deferred], wait=0)
    assert harness.pending(harness.Deferred) == 2  # d1 was sent and deleted (burst 1); d2, d3 stay
    run = cap.span("flush deferred_outbox")
    assert run.status.status_code == StatusCode.ERROR
    assert attrs(run)[ATTR_SENT] == 1 and attrs(run)[ATTR_LEFT_PENDING] == 1
    failed = [s for s in cap.spans_named("send deferred_outbox") if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == 1
    (error,) = [e for e in cap.audit_events if e["outcome"] == "error"]
    assert error["error_type"] == "BrokerDownError" and error["model"] == "Deferred"
    assert cap.metric_total(METRIC_LEFT_PENDING, db__operation__name="flush", error__type="BrokerDownError") == 1


# --- the CLI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["flush", "flushmany", "flushordered"])
def test_cli_commands_are_runs(cap: Capture, harness: Harness, command: str) -> None:
    add(harness, harness.Deferred, "d1", "d2")
    args = ["signalbus", command, "Deferred"] + (["--wait", "0"] if command == "flush" else [])
    result = harness.app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    run = cap.span(f"{command} deferred_outbox")
    assert attrs(run)[ATTR_SENT] == 2
    assert len([s for s in children(cap, run) if s.name == "send deferred_outbox"]) == 2
    assert harness.pending(harness.Deferred) == 0


def test_cli_failure_exits_1_with_an_error_run(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Deferred, "d1")
    harness.fail_texts.add("d1")
    result = harness.app.test_cli_runner().invoke(args=["signalbus", "flushmany", "Deferred"])
    assert result.exit_code == 1
    assert cap.span("flushmany deferred_outbox").status.status_code == StatusCode.ERROR
    assert [e["outcome"] for e in cap.audit_events] == ["error"]
    assert harness.pending(harness.Deferred) == 1


def test_cli_read_commands_are_not_traced(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Deferred, "d1")
    runner = harness.app.test_cli_runner()
    assert "Deferred" in runner.invoke(args=["signalbus", "signals"]).output
    assert "Total pending: 1" in runner.invoke(args=["signalbus", "pending"]).output
    assert cap.spans == ()


# --- trace context through the outbox -----------------------------------------------------------------


def test_send_links_to_the_request_that_created_the_row(cap: Capture, harness: Harness) -> None:
    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders") as request:
        add(harness, harness.Deferred, "d1")
        add(harness, harness.Batch, "b1", "b2")
    row = harness.Deferred.query.one()
    assert row.traceparent.split("-")[1] == format(request.get_span_context().trace_id, "032x")
    harness.bus.flush(wait=0)  # later, outside the request: another trace
    send = cap.span("send deferred_outbox")
    assert send.get_span_context().trace_id != request.get_span_context().trace_id
    (link,) = send.links
    assert link.context.trace_id == request.get_span_context().trace_id
    assert link.context.span_id == request.get_span_context().span_id
    batch = cap.span("BATCH send batch_outbox")
    assert [(lk.context.trace_id, lk.context.span_id) for lk in batch.links] == [
        (request.get_span_context().trace_id, request.get_span_context().span_id)
    ]  # two rows of one request: one link


def test_rows_created_outside_a_trace_have_no_context(cap: Capture, harness: Harness) -> None:
    add(harness, harness.Deferred, "d1")
    assert harness.Deferred.query.one().traceparent is None
    harness.bus.flush(wait=0)
    assert cap.span("send deferred_outbox").links == ()


# --- instrumentation life cycle --------------------------------------------------------------------------


def test_models_mapped_before_install_are_found_and_uninstall_restores(harness: Harness) -> None:
    # (The other tests map their models after install: mapper_configured.)
    assert not is_wrapped(vars(harness.Outbox)["send_signalbus_message"])
    with capture(sources=["signalbus"]) as cap:  # models mapped before install: found in the registries
        assert is_wrapped(vars(harness.Outbox)["send_signalbus_message"])
        assert is_wrapped(vars(harness.Batch)["send_signalbus_messages"])
        add(harness, harness.Outbox, "o1")
        assert len(cap.spans_named("send outbox")) == 1
    for model in (harness.Outbox, harness.Deferred, harness.Batch, harness.Ordered):
        assert not is_wrapped(vars(model)["send_signalbus_message"])
    assert isinstance(vars(harness.Batch)["send_signalbus_messages"], classmethod)
    assert not is_wrapped(vars(SignalBus)["flush"])
    add(harness, harness.Outbox, "o2")
    assert harness.texts() == ["o1", "o2"]


def test_suppressed_instrumentation_traces_nothing(cap: Capture, harness: Harness) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    add(harness, harness.Deferred, "d1")
    with suppress_instrumentation():
        assert harness.bus.flush(wait=0) == 1
    assert cap.spans == () and cap.audit_events == []


def test_excluded_autoflush_traces_its_sends_and_counts_what_stays(harness: Harness) -> None:
    """``operation:autoflush`` excluded: no run span (none is even built), each send still traced and audited,
    and what a failed send leaves pending still counted under the run's name."""
    with capture(sources=["signalbus"], exclude=["operation:autoflush"]) as cap:
        tracer = cap.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
            add(harness, harness.Outbox, "o1", "o2")
        assert harness.pending(harness.Outbox) == 0
        assert [s.name for s in cap.spans if s.name.startswith("autoflush")] == []
        sends = cap.spans_named("send outbox")
        assert len(sends) == 2
        assert all(s.parent is not None and s.parent.span_id == span_id(request) for s in sends)
        assert sorted((e["operation"], e["outcome"]) for e in cap.audit_events) == [("send", "ok"), ("send", "ok")]
        cap.clear()
        harness.fail_texts.add("o4")
        add(harness, harness.Outbox, "o3", "o4")
        assert harness.pending(harness.Outbox) == 2
        assert [s.name for s in cap.spans if s.name.startswith("autoflush")] == []
        assert [
            attrs(s)[semconv.ERROR_TYPE]
            for s in cap.spans_named("send outbox")
            if s.status.status_code == StatusCode.ERROR
        ] == ["BrokerDownError"]
        assert (
            cap.metric_total(METRIC_LEFT_PENDING, db__operation__name="autoflush", error__type="BrokerDownError") == 2
        )
        assert cap.metric_total(semconv.METRIC_INTERNAL_ERRORS) == 0


def test_excluded_model_is_not_traced(harness: Harness) -> None:
    with capture(sources=["signalbus"], exclude=["model:Deferred"]) as cap:
        add(harness, harness.Deferred, "d1")
        add(harness, harness.Outbox, "o1")
        harness.bus.flush(wait=0)
        assert cap.spans_named("send deferred_outbox") == []
        assert len(cap.spans_named("send outbox")) == 1
