"""The example shop (examples/pynamodb/app.py) against the moto server: in-process, and as a script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.trace import StatusCode

from sigtrace import semconv
from sigtrace.testing import Capture, audit_file_events, capture
from tests.sources.pynamodb.conftest import FAKE_ENV
from tests.sources.pynamodb.helpers import attrs, new_id

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from examples.pynamodb import app  # noqa: E402


@pytest.fixture
def shop(dynamodb: str) -> Iterator[Capture]:
    app.use_endpoint(dynamodb)
    try:
        app.create_tables()
        with capture(sources=["pynamodb"]) as cap:
            yield cap
    finally:
        app.use_endpoint(None)


def test_checkout_in_process(shop: Capture) -> None:
    email = f"{new_id()}@example.com"
    assert app.checkout(email, shop.tracer_provider) == {"orders": 2, "refused": 1, "order_count": 2}
    checkout = shop.span("checkout")
    inside = [s for s in shop.spans if s.parent is not None and s.parent.span_id == checkout.context.span_id]  # type: ignore[union-attr]
    assert [s.name for s in inside] == [
        "PutItem shop_customers",
        "TransactWriteItems",
        "TransactWriteItems",
        "UpdateItem shop_orders",
        "UpdateItem shop_orders",
        "Query shop_orders",
    ]
    refused = inside[4]
    assert refused.status.status_code == StatusCode.ERROR
    assert attrs(refused)[semconv.ERROR_TYPE] == "ConditionalCheckFailedException"
    assert set(attrs(inside[1])[semconv.AWS_DYNAMODB_TABLE_NAMES]) == {"shop_orders", "shop_customers"}
    writes = shop.audit_events
    assert [(e["operation"], e["outcome"]) for e in writes] == [
        ("PutItem", "ok"),
        ("TransactWriteItems", "ok"),
        ("TransactWriteItems", "ok"),
        ("UpdateItem", "ok"),
        ("UpdateItem", "error"),
    ]
    assert {e["actor"] for e in writes} == {email}
    assert writes[0]["pk"] == email


def test_the_script_runs(dynamodb: str, tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.jsonl"
    env = {
        **os.environ,
        **FAKE_ENV,
        "DYNAMODB_ENDPOINT": dynamodb,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pynamodb" / "app.py"), str(audit_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "orders=2 refused=1 order_count=2" in done.stdout
    assert '"name": "PutItem shop_customers"' in done.stdout  # the console exporter's spans
    events = audit_file_events(audit_file)
    writes = [(e["operation"], e["outcome"]) for e in events if e["operation"] not in ("CreateTable",)]
    assert writes == [
        ("PutItem", "ok"),
        ("TransactWriteItems", "ok"),
        ("TransactWriteItems", "ok"),
        ("UpdateItem", "ok"),
        ("UpdateItem", "error"),
    ]
    assert all(e["service_name"] == "shop" and e["actor"] == "alice@example.com" for e in events if "actor" in e)
