"""The correlation engine and sinks: bounds, orphans, failures of sinks, identity keys, values and redaction."""

from __future__ import annotations

import gc
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import sigtrace
from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.correlation import InFlightTable, identity_key
from sigtrace.core.operation import Operation
from sigtrace.sinks.redaction import MASK, Redactor
from sigtrace.testing import Capture, capture


def engine_of(cap: Capture) -> Any:
    assert cap.installation is not None
    return cap.installation.engine


def test_orphan_flood_keeps_the_table_at_max_in_flight_and_counts_every_orphan() -> None:
    with capture(sources=["blinker"], max_in_flight=1000, audit=False) as cap:
        engine = engine_of(cap)
        for i in range(100_000):
            engine.begin(Operation("test", "put", collection="t"), ("req", i))
            assert len(engine.table) <= 1000
        assert len(engine.table) == 1000
        overflow = cap.metric_total(semconv.METRIC_ORPHANS, sigtrace__orphan__reason="overflow")
        assert overflow == 99_000
        assert len(cap.spans) == 99_000
        assert all(s.attributes and s.attributes[semconv.SIGTRACE_ORPHANED] for s in cap.spans)
    # uninstall ends the last 1,000 as orphans too: every orphan is counted.
    assert len(cap.spans) == 100_000


def test_every_path_through_the_in_flight_table_releases_its_lock() -> None:
    # The table takes its lock with acquire()/release() (not ``with``, see core/correlation.py): each
    # early return inside the block must still release it, or the next operation of any thread hangs.
    orphans: list[str] = []
    table = InFlightTable(2, 60.0, lambda op, reason: orphans.append(reason))
    first, second, third = (Operation("test", "save") for _ in range(3))

    def released(result: object) -> object:
        assert not table._lock.locked()
        return result

    assert released(table.add("a", first)) is None  # registered
    assert released(table.add("a", second)) is first  # already in flight: returned from inside the block
    assert released(table.add("b", second)) is None
    assert released(table.add("c", third)) is None and orphans == ["overflow"]  # the oldest evicted
    assert released(table.pop("missing")) is None
    assert released(table.pop("b", obj=object())) is second  # no weak reference: any obj matches
    assert released(table.discard(third)) is True
    assert released(table.discard(third)) is False
    # Taken out and not yet reported: still counted, until the engine has run their sinks (InFlightTable.ending).
    assert len(table) == 2 and table.ending == {id(second): second, id(third): third}
    assert table.wait_ended(0.01) is False
    for op in (second, third):
        table.ending.pop(id(op))
    assert len(table) == 0 and table.wait_ended(0.0) is True


def test_duplicate_pre_makes_no_second_span(sigtrace_capture: Capture) -> None:
    engine = engine_of(sigtrace_capture)
    first = engine.begin(Operation("test", "save", collection="t"), "k")
    again = engine.begin(Operation("test", "save", collection="t"), "k")
    assert again is first
    engine.end("k")
    assert len(sigtrace_capture.spans) == 1
    assert sigtrace_capture.metric_total(semconv.METRIC_IN_FLIGHT) == 0


def test_identity_keys_check_the_very_object(sigtrace_capture: Capture) -> None:
    engine = engine_of(sigtrace_capture)

    class Model:
        def __eq__(self, other: object) -> bool:  # models compare by value
            return True

        __hash__ = object.__hash__

    a, b = Model(), Model()
    engine.begin(Operation("test", "save"), identity_key(a, "save"), obj=a)
    assert engine.end(identity_key(b, "save"), obj=b) is None  # equal, not the same
    assert engine.end(identity_key(a, "save"), obj=a) is not None


def test_dead_object_whose_id_is_reused_is_an_orphan(sigtrace_capture: Capture) -> None:
    engine = engine_of(sigtrace_capture)

    class Model:
        pass

    obj = Model()
    key = identity_key(obj, "save")
    engine.begin(Operation("test", "save"), key, obj=obj)
    del obj
    gc.collect()
    newcomer = Model()
    op = engine.begin(Operation("test", "save"), key, obj=newcomer)  # same key, other object
    assert op is not None and op.ref is not None and op.ref() is newcomer
    reasons = [e.get("orphan_reason") for e in sigtrace_capture.audit_events]
    assert reasons == ["collected"]


def test_failing_sink_does_not_fail_the_operation_and_is_counted() -> None:
    def broken(event: Any) -> None:
        raise OSError("disk full")

    with safety.strict(False), capture(sources=["blinker"], audit=broken) as cap:
        engine = engine_of(cap)
        engine.begin(Operation("test", "save", collection="t"), "k")
        engine.end("k")
        assert len(cap.spans) == 1  # the span still ends
        assert cap.metric_total(semconv.METRIC_INTERNAL_ERRORS, sigtrace__error__kind="audit.output.callable") == 1
    assert safety.error_counts().get("audit.output.callable", 0) >= 1


def test_strict_mode_raises_internal_errors() -> None:
    with safety.strict(True), pytest.raises(OSError):
        safety.report("test", OSError("x"))
    with safety.strict(False):
        safety.report("test", OSError("x"))  # swallowed, counted


def test_values_only_with_capture_values_and_always_redacted() -> None:
    values = {"email": "a@example.org", "password": "hunter2", "api_key": "k-123", "ssn": "078-05-1120"}
    with capture(sources=["blinker"]) as cap:
        engine = engine_of(cap)
        engine.begin(Operation("test", "save", values=values, changed_fields=["email"]), "k")
        engine.end("k")
        (event,) = cap.audit_events
        assert "values" not in event and event["changed_fields"] == ["email"]
        assert "hunter2" not in json.dumps(event)
    with capture(sources=["blinker"], capture_values=True, redact=[r"ssn"]) as cap:
        engine = engine_of(cap)
        engine.begin(Operation("test", "save", values=values), "k")
        engine.end("k")
        (event,) = cap.audit_events
        assert event["values"] == {"email": "a@example.org", "password": MASK, "api_key": MASK, "ssn": MASK}
        text = json.dumps(event)
        for secret in ("hunter2", "k-123", "078-05-1120"):
            assert secret not in text


def test_redactor_masks_nested_and_caps_sizes() -> None:
    redactor = Redactor(["internal_.*"], max_length=16)
    out = redactor.mapping(
        {
            "profile": {"Authorization": "Bearer x", "credit_card": "4111", "name": "n" * 100},
            "internal_note": "x",
            "tokens": ["a"],
            "line": "a\nb",
        }
    )
    assert out["profile"]["Authorization"] == MASK and out["profile"]["credit_card"] == MASK
    assert out["profile"]["name"].startswith("n" * 16) and "more]" in out["profile"]["name"]
    assert out["internal_note"] == MASK and out["tokens"] == MASK
    assert out["line"] == "a\nb"  # JSON rendering escapes it: no forged line
    assert MASK not in ("password",)


def test_audit_json_lines_file_is_written_before_the_span_ends(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    seen_at_span_end: list[int] = []
    with capture(sources=["blinker"], audit=True, audit_file=str(path)) as cap:
        from opentelemetry.sdk.trace import SpanProcessor

        class LineCounter(SpanProcessor):
            def on_end(self, span: Any) -> None:
                seen_at_span_end.append(path.read_text().count('"event": "sigtrace.audit"}'))  # not the header

        cap.tracer_provider.add_span_processor(LineCounter())
        engine = engine_of(cap)
        for i in range(3):
            engine.begin(Operation("test", "save", collection="t", pk=str(i), values={"x": "y\nz"}), i)
            engine.end(i)
    lines = path.read_text().splitlines()
    assert seen_at_span_end == [1, 2, 3]
    header, *events = [json.loads(line) for line in lines]
    assert header["event"] == "sigtrace.audit.stream"
    assert [e["pk"] for e in events] == ["0", "1", "2"]
    assert all(e["event"] == semconv.AUDIT_EVENT and e["outcome"] == "ok" for e in events)
    assert all(len(e["trace_id"]) == 32 and len(e["span_id"]) == 16 for e in events)


def test_error_type_on_span_and_metric_only_when_failed(sigtrace_capture: Capture) -> None:
    engine = engine_of(sigtrace_capture)
    engine.begin(Operation("test", "save", collection="t"), "ok")
    engine.end("ok")
    engine.begin(Operation("test", "save", collection="t"), "bad")
    engine.end("bad", error=KeyError("x"))
    ok, bad = sigtrace_capture.spans
    assert ok.attributes is not None and semconv.ERROR_TYPE not in ok.attributes
    assert bad.attributes is not None and bad.attributes[semconv.ERROR_TYPE] == "KeyError"
    types = sorted(
        str(p.attributes.get(semconv.ERROR_TYPE)) for p in sigtrace_capture.metric_points(semconv.METRIC_DURATION)
    )
    assert types == ["KeyError", "None"]


def test_old_attribute_names_with_database_dup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database/dup")
    with capture(sources=["blinker"]) as cap:
        engine = engine_of(cap)
        engine.begin(Operation("t", "PutItem", collection="orders", db_system="aws.dynamodb", namespace="ns"), "k")
        engine.end("k")
        attrs = cap.span("PutItem orders").attributes
        assert attrs is not None
        assert attrs["db.system.name"] == "aws.dynamodb" and attrs["db.system"] == "dynamodb"
        assert attrs["db.operation"] == "PutItem" and attrs["db.name"] == "ns"


def test_entry_scope_fails_every_open_operation_of_the_call(sigtrace_capture: Capture) -> None:
    engine = engine_of(sigtrace_capture)
    with pytest.raises(ZeroDivisionError), engine.entry(Operation("test", "save", collection="t")) as entry:
        assert entry.operation is not None
        claimed = engine.begin(Operation("test", "save", collection="t", signal="pre_save", pk="7"), "k")
        assert claimed is entry.operation  # the receiver claimed the scope's operation
        _ = 1 / 0
    (span,) = sigtrace_capture.spans
    assert span.attributes is not None
    assert span.attributes[semconv.ERROR_TYPE] == "ZeroDivisionError"
    assert span.attributes[semconv.SIGTRACE_PK] == "7"
    assert engine.table.get("k") is None


def test_uuid_correlation_id_is_recorded(sigtrace_capture: Capture) -> None:
    import blinker

    pre, post = blinker.NamedSignal("pre_x"), blinker.NamedSignal("post_x")
    pair = sigtrace.trace_signals(pre, post, key=lambda s, **kw: kw["u"])
    try:
        u = uuid.uuid4()
        pre.send("s", u=u)
        post.send("s", u=u)
        assert sigtrace_capture.audit_events[0]["correlation_id"] == str(u)
    finally:
        pair.untrace()


def test_orphan_made_current_does_not_stay_current() -> None:
    from opentelemetry import trace

    with capture(sources=["blinker"], orphan_timeout=0.05) as cap:
        engine = engine_of(cap)
        engine.begin(Operation("test", "send"), "orphan", activate=True)
        orphan_span = trace.get_current_span()
        assert orphan_span.is_recording()  # current between its pre and its (missing) post
        deadline = time.monotonic() + 10
        while orphan_span.is_recording() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not orphan_span.is_recording()  # ended by the reaper thread, still current here
        engine.begin(Operation("test", "send"), "next")  # the next pre in this context cleans up
        current = trace.get_current_span()
        assert current is not orphan_span
        parent = getattr(current, "parent", None)
        assert parent is None  # the new operation is not a child of the dead one
        engine.end("next")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_close_detaches_orphans_made_current_in_this_context() -> None:
    from opentelemetry import trace

    with capture(sources=["blinker"], orphan_timeout=0.05) as cap:
        engine = engine_of(cap)
        engine.begin(Operation("test", "send"), "orphan", activate=True)
        orphan_span = trace.get_current_span()
        deadline = time.monotonic() + 10
        while orphan_span.is_recording() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not orphan_span.is_recording()
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize("fails", [False, True])
def test_entry_scope_restores_the_callers_context(sigtrace_capture: Capture, fails: bool) -> None:
    from opentelemetry import trace

    engine = engine_of(sigtrace_capture)
    tracer = sigtrace_capture.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("caller") as caller:
        try:
            with engine.entry(Operation("test", "save", collection="t")):
                # an operation made current inside the call whose post never comes
                engine.begin(Operation("other", "inner"), "inner", activate=True)
                assert trace.get_current_span().is_recording()
                if fails:
                    raise LookupError("boom")
        except LookupError:
            pass
        assert trace.get_current_span() is caller
    outcomes = sorted(e["outcome"] for e in sigtrace_capture.audit_events)
    assert outcomes == (["error", "error"] if fails else ["ok", "ok"])


def test_operations_ending_out_of_order_leave_no_span_current(sigtrace_capture: Capture) -> None:
    from opentelemetry import trace

    engine = engine_of(sigtrace_capture)
    engine.begin(Operation("a", "first"), "a", activate=True)
    engine.begin(Operation("b", "second"), "b", activate=True)
    engine.end("a")  # the older one ends first while the newer one is on top
    assert getattr(trace.get_current_span(), "name", None) == "second"  # the newer one stays current
    engine.end("b")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_claim_hands_a_pre_signal_the_entry_scopes_operation_it_waits_for(sigtrace_capture: Capture) -> None:
    engine = engine_of(sigtrace_capture)
    item = type("Item", (), {})()
    key = identity_key(item, "save")
    assert engine.claim(key, obj=item, signal="pre_save") is None  # no scope: the source builds its own
    with engine.entry(Operation("test", "save", collection="t"), expect=key) as entry:
        assert engine.claim(identity_key(item, "delete"), obj=item, signal="pre_delete") is None  # not its key
        claimed = engine.claim(key, obj=item, signal="pre_save")
        assert claimed is entry.operation and claimed is not None
        assert claimed.signal == "pre_save" and engine.lookup(key) is claimed
        assert engine.claim(key, obj=item, signal="pre_save") is None  # claimed once
        assert engine.end(key, obj=item, signal="post_save") is claimed
    (span,) = sigtrace_capture.spans_named("save t")
    assert span.attributes is not None and span.attributes[semconv.SIGTRACE_SIGNAL] == "post_save"
    assert len(sigtrace_capture.audit_events) == 1


def test_claim_leaves_an_excluded_signal_untraced() -> None:
    with capture(sources=["blinker"], exclude=["signal:pre_save"]) as cap:
        engine = engine_of(cap)
        item = type("Item", (), {})()
        key = identity_key(item, "save")
        with engine.entry(Operation("test", "save", collection="t"), expect=key):
            assert engine.claim(key, obj=item, signal="pre_save") is None
            assert engine.claim(key, obj=item, signal="pre_other") is not None


def test_current_and_expecting_tell_a_hook_the_entry_scope_it_runs_in() -> None:
    with capture(sources=["blinker"], exclude=["model:Hidden"]) as cap:
        engine = engine_of(cap)
        assert engine.current() is None and engine.expecting() is None  # outside any scope
        marker = ("call", 1)
        with engine.entry(Operation("test", "save", collection="t"), expect=marker) as entry:
            assert engine.current() is entry.operation and engine.expecting() == marker
            with engine.entry(expect="inner"):
                assert engine.current() is None and engine.expecting() == "inner"  # an observing scope
            assert engine.end(op=entry.operation) is not None
            assert engine.current() is None and engine.expecting() == marker  # ended: no longer current
        with engine.entry(Operation("test", "save", model="Hidden"), expect=marker):
            assert engine.current() is None and engine.expecting() == marker  # excluded: the scope still says
        assert engine.current() is None and engine.expecting() is None


@pytest.mark.parametrize(
    ("options", "holds"),
    [
        ({}, True),  # the default: audit log and metrics
        ({"audit": False}, True),  # the operations count still waits for the commit
        ({"metrics": False}, True),  # the audit log does
        ({"audit": False, "metrics": False}, False),  # spans only: a span says what the call did
    ],
)
def test_writes_wait_for_their_transaction_only_where_a_sink_reports_what_was_kept(
    options: dict[str, Any], holds: bool
) -> None:
    with capture(sources=["blinker"], **options) as cap:
        assert engine_of(cap).holds_writes is holds
        assert cap.installation is not None
        assert all(source.holds_writes is holds for source in cap.installation.sources.values())
