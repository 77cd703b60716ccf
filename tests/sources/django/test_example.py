"""Runs examples/django (its own settings, so in a fresh interpreter) with Django's test client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sigtrace.testing import audit_file_events

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "django"

SCRIPT = r"""
import json

import django

django.setup()  # the AppConfig installs sigtrace from settings.SIGTRACE

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import sigtrace

assert sigtrace.is_installed()
exporter = InMemorySpanExporter()
# The application sets its provider after sigtrace's AppConfig.ready(): sigtrace's spans go to it.
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
DjangoInstrumentor().instrument()
call_command("migrate", verbosity=0)
client = Client()
client.force_login(User.objects.create_user("alice", password="pw"))
exporter.clear()


def post(url, body=None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


results = {
    "product": post("/products/", {"sku": "A1", "stock": 3}).status_code,
    "duplicate": post("/products/", {"sku": "A1"}).status_code,
}
placed = post("/orders/", {"sku": "A1", "quantity": 2, "notes": ["gift", "fragile"], "tags": ["rush"]})
results["order"] = placed.status_code
results["restock"] = post("/products/restock/").json()
results["cancel"] = client.delete(f"/orders/{placed.json()['id']}/").status_code
spans = [
    {
        "name": s.name,
        "id": format(s.context.span_id, "016x"),
        "trace": format(s.context.trace_id, "032x"),
        "parent": format(s.parent.span_id, "016x") if s.parent else None,
        "kind": s.kind.name,
        "status": s.status.status_code.name,
    }
    for s in exporter.get_finished_spans()
]
print(json.dumps({"results": results, "spans": spans}))
"""


def test_example_project(tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DJANGO_", "SIGTRACE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="shop.settings",
        SHOP_DB=str(tmp_path / "shop.sqlite3"),
        SHOP_AUDIT_FILE=str(audit_file),
        PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(ROOT)]),  # this tree's sigtrace, whatever is installed
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["results"] == {
        "product": 201,
        "duplicate": 409,
        "order": 201,
        "restock": {"restocked": 1},
        "cancel": 200,
    }
    spans: list[dict[str, Any]] = output["spans"]
    by_id = {s["id"]: s for s in spans}
    requests = {s["id"]: s for s in spans if s["kind"] == "SERVER"}
    assert len(requests) == 5

    def parent_name(span: dict[str, Any]) -> str:
        return str(by_id[span["parent"]]["name"])

    ours = [s for s in spans if s["kind"] == "CLIENT" and s["parent"] in requests]
    names = [s["name"] for s in ours]
    for expected in (
        "save orders_product",
        "save orders_order",
        "bulk_create orders_orderline",
        "save orders_tag",
        "relation_add orders_order_tags",
        "update orders_product",
        "delete orders_order",
    ):
        assert expected in names, (expected, names)
    failed = [s for s in ours if s["status"] == "ERROR"]
    assert [s["name"] for s in failed] == ["save orders_product"]
    (delete,) = [s for s in ours if s["name"] == "delete orders_order"]
    assert not [s for s in spans if s["parent"] == delete["id"]]  # one operation: the cascade is in its audit
    assert all(parent_name(s).startswith(("POST", "DELETE")) for s in ours)

    events = audit_file_events(audit_file)
    mine = [e for e in events if e.get("actor") == "alice"]
    assert {e["operation"] for e in mine} >= {"save", "bulk_create", "relation_add", "delete"}
    traces = {s["trace"] for s in requests.values()}
    assert all(e["trace_id"] in traces for e in mine)
    assert [e["error_type"] for e in mine if e["outcome"] == "error"] == ["IntegrityError"]
    assert not [e for e in events if e.get("model") == "Session"]  # excluded in settings.SIGTRACE
    deleted = {e["collection"]: e for e in mine if e.get("span_id") == delete["id"]}
    assert set(deleted) == {"orders_order", "orders_orderline", "orders_order_tags"}, deleted
    assert "pk" in deleted["orders_order"] and deleted["orders_orderline"]["rows"] == 2  # fast-deleted: a count
    line_event = next(e for e in mine if e["operation"] == "bulk_create")
    assert line_event["rows"] == 2 and len(line_event["pks"]) == 2
