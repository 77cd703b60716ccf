"""examples/signalbus/app.py runs and its trace leads from the request to the consumer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sigtrace.testing import audit_file_events

ROOT = Path(__file__).resolve().parents[3]


def run_example(tmp_path: Path, broker: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    audit = tmp_path / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "signalbus" / "app.py"), str(audit), "--broker", broker],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    spans = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    summary = next(line for line in out.stdout.splitlines() if line.startswith("broker "))
    return summary, spans, audit_file_events(audit)


@pytest.mark.parametrize("broker", ["memory", "rabbitmq"])
def test_example_traces_request_send_and_consumer(tmp_path: Path, broker: str, request: pytest.FixtureRequest) -> None:
    if broker == "rabbitmq":
        request.getfixturevalue("rabbitmq")  # skips with the reason when RabbitMQ is absent
    summary, spans, audit = run_example(tmp_path, broker)
    assert summary == f"broker {broker}; pending 2; consumed 1:teapot"
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    requests = by_name["POST /orders"]
    ok, refused = sorted(by_name["send order_placed"], key=lambda s: s["start_time"])
    (relay,) = by_name["flushmany order_placed"]
    (consumer,) = by_name["shop.orders process"]
    # The first order's send links to its request, and the consumer continues the send's trace.
    assert [link["context"]["span_id"] for link in ok["links"]] == [requests[0]["context"]["span_id"]]
    assert consumer["context"]["trace_id"] == ok["context"]["trace_id"] == relay["context"]["trace_id"]
    assert consumer["parent_id"] == ok["context"]["span_id"]
    assert ok["status"]["status_code"] == "UNSET"
    assert refused["status"]["status_code"] == "ERROR" and relay["status"]["status_code"] == "ERROR"
    assert refused["attributes"]["error.type"] == "BrokerRefusedError"
    assert [(e["pk"], e["outcome"]) for e in audit] == [("1", "ok"), ("2", "error")]
    assert {e["service_name"] for e in audit} == {"shop"}
