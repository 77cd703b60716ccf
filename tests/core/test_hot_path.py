"""The hot path's named tricks, each pinned to the plain spelling it replaces (docs/performance.md, "This round")."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider

from sigtrace import semconv
from sigtrace.core.context import attach, current_context, detach
from sigtrace.core.operation import Operation
from sigtrace.testing import Capture


def test_attach_makes_the_same_context_as_the_api() -> None:
    span = TracerProvider().get_tracer("t").start_span("s")
    token = otel_context.attach(otel_context.set_value("other", 1))
    try:
        expected = trace.set_span_in_context(span)
        attachment = attach(span)
        assert current_context() is attachment[1] is otel_context.get_current()
        assert dict(attachment[1]) == dict(expected)
        assert type(attachment[1]) is type(expected)
        assert trace.get_current_span() is span
        assert detach(attachment)
        assert trace.get_current_span() is not span
        assert otel_context.get_value("other") == 1
    finally:
        otel_context.detach(token)


def test_suppressed_instrumentation_is_read_from_the_same_context() -> None:
    from sigtrace.core.engine import instrumentation_suppressed

    assert not instrumentation_suppressed()
    with suppress_instrumentation():
        assert instrumentation_suppressed()
    token = otel_context.attach(otel_context.set_value("suppress_instrumentation", True))
    try:
        assert instrumentation_suppressed()
    finally:
        otel_context.detach(token)


def _engine(cap: Capture) -> Any:
    assert cap.installation is not None
    return cap.installation.engine


def _signal(cap: Capture) -> object:
    (span,) = cap.spans
    return (span.attributes or {}).get(semconv.SIGTRACE_SIGNAL, "absent")


def test_a_predicted_post_signal_is_what_the_span_says_when_it_came(sigtrace_capture: Capture) -> None:
    engine = _engine(sigtrace_capture)
    engine.begin(Operation("test", "save", signal="pre_save", post_signal="post_save"), "k")
    engine.end("k", signal="post_save")
    assert _signal(sigtrace_capture) == "post_save"


def test_a_predicted_post_signal_that_never_came_is_not_on_the_span(sigtrace_capture: Capture) -> None:
    engine = _engine(sigtrace_capture)
    engine.begin(Operation("test", "save", signal="pre_save", post_signal="post_save"), "k")
    engine.end("k", error=ValueError("no post"))
    assert _signal(sigtrace_capture) == "pre_save"  # the last signal seen


def test_a_predicted_post_signal_with_no_signal_at_all_leaves_no_attribute(sigtrace_capture: Capture) -> None:
    engine = _engine(sigtrace_capture)
    with engine.entry(Operation("test", "save", post_signal="post_save")):
        pass  # the call returned without any signal (a model Django sends none for)
    assert _signal(sigtrace_capture) == "absent"
    (event,) = sigtrace_capture.audit_events
    assert event.get("signal") is None


def _exemplar_span_ids(cap: Capture) -> list[int]:
    return [e.span_id for p in cap.metric_points(semconv.METRIC_DURATION) for e in p.point.exemplars]


@pytest.mark.parametrize("activate", [True, False])  # False: a span started where it cannot be made current
def test_the_duration_exemplar_is_the_operations_own_span(sigtrace_capture: Capture, activate: bool) -> None:
    engine = _engine(sigtrace_capture)
    engine.begin(Operation("test", "save", collection="t"), "k", activate=activate)
    engine.end("k")
    (span,) = sigtrace_capture.spans
    assert _exemplar_span_ids(sigtrace_capture) == [span.get_span_context().span_id]  # type: ignore[union-attr]
