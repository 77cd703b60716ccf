"""With opentelemetry-instrumentation-botocore active too: caller -> sigtrace span -> botocore span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from pynamodb.exceptions import PutError

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.pynamodb.helpers import attrs, new_id
from tests.sources.pynamodb.models import Customer

botocore_instrumentation = pytest.importorskip(
    "opentelemetry.instrumentation.botocore", reason="opentelemetry-instrumentation-botocore is not installed"
)


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["pynamodb"]) as cap:
        instrumentor = botocore_instrumentation.BotocoreInstrumentor()
        instrumentor.instrument(tracer_provider=cap.tracer_provider)
        try:
            yield cap
        finally:
            instrumentor.uninstrument()


def test_botocore_span_is_the_child_of_the_sigtrace_span(cap: Capture) -> None:
    tracer = cap.tracer_provider.get_tracer("test")
    key = new_id()
    with tracer.start_as_current_span("POST /customers") as request:
        Customer(key).save()
        Customer.get(key)
    request_id = request.get_span_context().span_id
    for operation in ("PutItem", "GetItem"):
        ours = cap.span(f"{operation} {Customer.Meta.table_name}")
        theirs = cap.span(f"DynamoDB.{operation}")
        assert ours.parent is not None and ours.parent.span_id == request_id
        assert theirs.parent is not None and theirs.parent.span_id == ours.context.span_id  # type: ignore[union-attr]
        assert ours.kind == theirs.kind == SpanKind.CLIENT
        # the same call, seen at two levels: the same request id on both
        assert attrs(ours)["aws.request_id"] == attrs(theirs)["aws.request_id"]
    # never two sibling client spans for one network call
    children_of_request = [s for s in cap.spans if s.parent is not None and s.parent.span_id == request_id]
    assert sorted(s.name for s in children_of_request) == sorted(
        f"{op} {Customer.Meta.table_name}" for op in ("PutItem", "GetItem")
    )


def test_a_failed_call_fails_both_levels(cap: Capture) -> None:
    key = new_id()
    Customer(key).save()
    with pytest.raises(PutError):
        Customer(key).save(condition=Customer.id.does_not_exist())
    theirs = [s for s in cap.spans_named("DynamoDB.PutItem") if s.status.status_code == StatusCode.ERROR]
    table = Customer.Meta.table_name
    ours = [s for s in cap.spans_named(f"PutItem {table}") if s.status.status_code == StatusCode.ERROR]
    assert len(theirs) == len(ours) == 1
    assert theirs[0].parent is not None and theirs[0].parent.span_id == ours[0].context.span_id  # type: ignore[union-attr]
    assert attrs(ours[0])[semconv.ERROR_TYPE] == "ConditionalCheckFailedException"
    # the sigtrace span ends after its child
    assert ours[0].end_time is not None and theirs[0].end_time is not None
    assert ours[0].end_time >= theirs[0].end_time
