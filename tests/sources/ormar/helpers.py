"""Small assertions on captured spans."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan

from sigtrace.testing import Capture


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def hex_id(span: ReadableSpan) -> str:
    return format(span_id(span), "016x")


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def children(cap: Capture, span: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in cap.spans if parent_of(s) == span_id(span)]


def ormar_spans(cap: Capture) -> list[ReadableSpan]:
    return [s for s in cap.spans if (s.attributes or {}).get("sigtrace.source") == "ormar"]


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})
