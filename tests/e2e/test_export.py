"""End to end: sigtrace configured only through OTEL_* variables, exporting to a real OTLP receiver (rotel).

Each scenario runs in its own interpreter, as an application would, over gRPC and over HTTP/protobuf. The
receiver's view is checked: span names and the caller -> operation -> driver chain, error status and
``error.type``, the duration histogram with the semantic-convention buckets, and the audit events as OTLP log
records carrying the same trace and span ids as their spans. The metric names the receiver got, translated to
Prometheus naming, are those the Grafana dashboard in ``dashboards/`` queries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sigtrace import semconv
from sigtrace.testing import audit_file_events
from tests.dashboards_naming import kind_from_otlp, prometheus_names
from tests.otlp_receiver import OtlpReceiver
from tests.test_dashboards import DASHBOARD_FILE, iter_queries, load_json, parse_promql

SCENARIOS = Path(__file__).with_name("scenarios")
#: scenario -> library it needs
REQUIRES = {"blinker": "blinker", "ormar": "ormar", "pynamodb": "pynamodb", "edgy": "edgy", "django": "django"}


def scenarios() -> list[str]:
    # Files are named scenario_<source>.py: a script named like its library would shadow it.
    return sorted(p.stem.removeprefix("scenario_") for p in SCENARIOS.glob("scenario_*.py"))


def run_scenario(
    name: str, receiver: OtlpReceiver, protocol: str, audit_file: Path, extra_env: dict[str, str] | None = None
) -> Any:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": f"e2e-{name}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "SIGTRACE_AUDIT_FILE": str(audit_file),
            "SIGTRACE_STRICT": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            **(extra_env or {}),
        }
    )
    out = subprocess.run(
        [sys.executable, str(SCENARIOS / f"scenario_{name}.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("scenario", scenarios())
def test_export_reaches_a_real_receiver(
    scenario: str, protocol: str, fresh_otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    library = REQUIRES.get(scenario, scenario)
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed in this environment")
    rx = fresh_otlp_receiver
    audit_file = tmp_path / "audit.jsonl"
    told = run_scenario(scenario, rx, protocol, audit_file)
    service = f"e2e-{scenario}"

    def ours(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r.get("resource", {}).get("service.name") == service]

    ops = rx.wait_for(lambda: [s for s in ours(rx.spans()) if s["name"] == told["operation"]] or None, timeout=20)
    spans = ours(rx.spans())
    by_id = {s["span_id"]: s for s in spans}
    assert len(ops) == told["ok"] + told["failed"], [s["name"] for s in spans]

    # caller -> operation -> driver
    callers = [s for s in spans if s["name"] == told["caller"]]
    assert callers, [s["name"] for s in spans]
    caller_ids = {c["span_id"] for c in callers}
    for op in ops:
        assert op["kind"] == "CLIENT"
        assert op["parent_span_id"] in caller_ids
        assert op["attributes"][semconv.SIGTRACE_SOURCE] == scenario
        if "db_system" in told:  # a source over a database says which one, and which table
            assert op["attributes"][semconv.DB_SYSTEM_NAME] == told["db_system"]
            assert (
                f"{op['attributes'][semconv.DB_OPERATION_NAME]} {op['attributes'][semconv.DB_COLLECTION_NAME]}"
                == (told["operation"])
            )
    ok_ops = [s for s in ops if s["status_code"] != "ERROR"]
    drivers = [s for s in spans if s["name"].startswith(told["driver"])]
    assert drivers, [s["name"] for s in spans]
    assert any(by_id.get(d["parent_span_id"], {}).get("name") == told["operation"] for d in drivers)

    # failure
    failed = [s for s in ops if s["status_code"] == "ERROR"]
    assert len(failed) == told["failed"] and len(ok_ops) == told["ok"]
    for span in failed:
        assert span["attributes"][semconv.ERROR_TYPE] == told["error_type"]
        assert any(e["name"] == "exception" for e in span["events"])
    for span in ok_ops:
        assert semconv.ERROR_TYPE not in span["attributes"]

    # the duration histogram with the semantic-convention buckets
    points = rx.wait_for(lambda: ours(rx.metrics(semconv.METRIC_DURATION)) or None, timeout=20)
    assert all(p["type"] == "histogram" and p["unit"] == "s" for p in points)
    assert all(tuple(p["explicit_bounds"]) == semconv.DURATION_BUCKETS for p in points)
    error_points = [p for p in points if p["attributes"].get(semconv.ERROR_TYPE) == told["error_type"]]
    assert error_points and error_points[-1]["count"] >= told["failed"]

    # audit events as OTLP log records, with the same trace and span ids as their spans
    logs = rx.wait_for(lambda: (lambda found: found if len(found) >= len(ops) else None)(ours(rx.logs())), timeout=20)
    audit = [log for log in logs if log["event_name"] == semconv.AUDIT_EVENT or "outcome" in log["attributes"]]
    for op in ops:
        matching = [a for a in audit if a["trace_id"] == op["trace_id"] and a["span_id"] == op["span_id"]]
        assert len(matching) == 1, (op["name"], op["span_id"], audit)
        outcome = matching[0]["attributes"]["outcome"]
        assert outcome == ("error" if op["status_code"] == "ERROR" else "ok")
        if told.get("actor"):
            assert matching[0]["attributes"]["actor"] == told["actor"]
    # the local JSON-lines record holds the same events
    local = audit_file_events(audit_file)
    assert sorted((e["trace_id"], e["span_id"], e["outcome"]) for e in local if e["source"] == scenario) == sorted(
        (op["trace_id"], op["span_id"], "error" if op["status_code"] == "ERROR" else "ok") for op in ops
    )
    assert rx.is_alive() and not rx.errors()


def dashboard_metric_names() -> set[str]:
    """Every Prometheus metric name a query of the Grafana dashboard selects (panels and variables)."""
    names: set[str] = set()
    for _, datasource, expr, _ in iter_queries(load_json(DASHBOARD_FILE)):
        if (datasource or {}).get("type") != "prometheus":
            continue
        label_values = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", expr)
        query = label_values.group(1) if label_values else expr
        names |= {name for name, _ in parse_promql(query)[0] if name}
    return names


def test_every_metric_the_dashboard_queries_reaches_a_real_receiver(
    fresh_otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    if importlib.util.find_spec("blinker") is None:
        pytest.skip("blinker is not installed in this environment")
    wanted = dashboard_metric_names()
    assert {"sigtrace_operations_total", "db_client_operation_duration_seconds_bucket"} <= wanted, wanted
    rx = fresh_otlp_receiver
    # The blinker scenario plus an orphan and an internal error: every metric sigtrace exports gets a point.
    run_scenario("blinker", rx, "grpc", tmp_path / "audit.jsonl", {"E2E_EVERY_METRIC": "1"})
    got: set[str] = set()

    def received() -> bool:
        got.clear()
        for point in rx.metrics():
            if point.get("resource", {}).get("service.name") == "e2e-blinker":
                got.update(
                    prometheus_names(point["name"], kind_from_otlp(point["type"], point["is_monotonic"]), point["unit"])
                )
        return wanted <= got

    with contextlib.suppress(AssertionError):  # timed out: the assertion below names what is missing
        rx.wait_for(received, timeout=20)
    assert wanted <= got, (
        f"the dashboard queries metrics the receiver never got: {sorted(wanted - got)}; got {sorted(got)}"
    )
    assert rx.is_alive() and not rx.errors()
