"""Runs examples/sqlalchemy/app.py: HTTP span -> flush -> batches and SQL, and the audit events of the requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

import sigtrace
from sigtrace import semconv
from sigtrace.testing import Capture
from tests.examples import load_example

pytest.importorskip("flask_sqlalchemy", reason="Flask-SQLAlchemy 3 is not installed (extra test-sources)")
pytest.importorskip("opentelemetry.instrumentation.flask", reason="the Flask instrumentation is not installed")


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def children(cap: Capture, parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in cap.spans if s.parent is not None and s.parent.span_id == span_id(parent)]


def test_request_tree_and_audit(tmp_path: Path) -> None:
    cap = Capture()
    example = load_example("sqlalchemy")
    app = example.create_app(
        f"sqlite:///{tmp_path / 'orders.sqlite'}",
        cap.tracer_provider,
        meter_provider=cap.meter_provider,
        audit=cap.record_audit,
    )
    try:
        client = app.test_client()
        created = client.post("/orders", json={"customer": "ada", "total": 42}, headers={"x-user": "alice"})
        assert created.status_code == 201
        order_id = created.get_json()["id"]
        assert client.post("/orders", json={"customer": "bob", "total": -1}).status_code == 422
        assert client.post("/orders/ship").get_json() == {"rows": 1}
        assert client.delete(f"/orders/{order_id}", headers={"x-user": "bob"}).status_code == 204
        cap.settle()
    finally:
        example.shutdown(app)
    assert not sigtrace.is_installed()

    (post,) = [s for s in cap.spans if s.kind == SpanKind.SERVER and s.name == "POST /orders"][:1]
    (flush,) = [s for s in children(cap, post) if s.name == "flush"]
    under_flush = children(cap, flush)
    names = {s.name for s in under_flush}
    assert {"insert customers", "insert orders"} <= names
    assert any(name.startswith("INSERT") for name in names), names  # the driver's statements
    batch = next(s for s in under_flush if s.name == "insert orders")
    assert dict(batch.attributes or {})[semconv.SIGTRACE_ROWS_AFFECTED] == 1

    events: list[dict[str, Any]] = cap.audit_events
    ops = [(e["operation"], e["model"], e["outcome"], e.get("actor")) for e in events]
    assert ops == [
        ("insert", "Customer", "ok", "alice"),
        ("insert", "Order", "ok", "alice"),
        ("insert", "Customer", "rolled_back", None),
        ("insert", "Order", "rolled_back", None),
        ("update", "Order", "ok", None),
        ("delete", "Order", "ok", "bob"),
    ]
    assert events[4]["rows"] == 1 and "filter" in events[4]
