"""Self-check of the real OTLP receiver fixture (rotel), driven by the real OTel SDK.

Why: every exporter test in sigtrace trusts tests/otlp_receiver.py; this file
proves that what the SDK sends over gRPC and HTTP/protobuf comes back intact
(names, ids, parent links, attributes, histogram buckets, log trace context)
and that a crashed receiver makes exports fail fast and recover on restart.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

try:  # tests/ on sys.path (rootdir-less layout) or tests as a package
    from otlp_receiver import (  # fixtures are used by name
        OtlpReceiver,
        ReceiverUnavailableError,
        fresh_otlp_receiver,
        otlp_receiver,
    )
except ImportError:  # pragma: no cover
    from tests.otlp_receiver import (  # noqa: F401
        OtlpReceiver,
        ReceiverUnavailableError,
        fresh_otlp_receiver,
        otlp_receiver,
    )

PROTOCOLS = ["grpc", "http/protobuf"]
BOUNDS = [1.0, 10.0, 100.0]


@dataclass
class Exporters:
    spans: SpanExporter
    metrics: MetricExporter
    logs: LogRecordExporter


def make_exporters(rx: OtlpReceiver, protocol: str, timeout: float = 10.0) -> Exporters:
    """The SDK's own OTLP exporters aimed at the receiver."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        ep = rx.grpc_endpoint
        return Exporters(
            OTLPSpanExporter(endpoint=ep, insecure=True, timeout=timeout),
            OTLPMetricExporter(endpoint=ep, insecure=True, timeout=timeout),
            OTLPLogExporter(endpoint=ep, insecure=True, timeout=timeout),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    ep = rx.http_endpoint
    return Exporters(
        HttpSpanExporter(endpoint=f"{ep}/v1/traces", timeout=timeout),
        HttpMetricExporter(endpoint=f"{ep}/v1/metrics", timeout=timeout),
        HttpLogExporter(endpoint=f"{ep}/v1/logs", timeout=timeout),
    )


@pytest.fixture
def run_id() -> str:
    """Unique per test: the session receiver is shared, so we filter on it."""
    return uuid.uuid4().hex


def _mine(records: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r["resource"].get("selfcheck.run") == run_id]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_span_metric_log_round_trip(fresh_otlp_receiver: OtlpReceiver, protocol: str, run_id: str) -> None:
    rx = fresh_otlp_receiver
    exp = make_exporters(rx, protocol)
    resource = Resource.create({"service.name": "selfcheck", "selfcheck.run": run_id})

    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(exp.spans))
    reader = PeriodicExportingMetricReader(exp.metrics, export_interval_millis=3_600_000)
    mp = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[View(instrument_name="selfcheck.latency", aggregation=ExplicitBucketHistogramAggregation(BOUNDS))],
    )
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(exp.logs))
    logger = logging.getLogger(f"selfcheck.{run_id}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    with warnings.catch_warnings():  # deprecated in the SDK, still what most apps use
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.INFO, logger_provider=lp)
    logger.addHandler(handler)

    try:
        tracer = tp.get_tracer("selfcheck.tracer", "1.2.3")
        with tracer.start_as_current_span("selfcheck.parent", kind=SpanKind.SERVER) as parent:
            parent.set_attribute("selfcheck.protocol", protocol)
            with tracer.start_as_current_span("selfcheck.child", kind=SpanKind.CLIENT) as child:
                child.set_attribute("http.response.status_code", 503)
                child.set_attribute("selfcheck.tags", ["a", "b"])
                child.add_event("retry", {"attempt": 2})
                logger.error("payment failed for order %s", 42, extra={"order.id": "42"})
                child.set_status(Status(StatusCode.ERROR, "boom"))
        hist = mp.get_meter("selfcheck.meter").create_histogram("selfcheck.latency", unit="ms")
        for v in (5, 50, 500):
            hist.record(v, {"route": "/pay"})

        assert tp.force_flush(10_000)
        assert lp.force_flush(10_000)
        assert mp.force_flush(10_000)

        spans = rx.wait_for(lambda: len(_mine(rx.spans(), run_id)) >= 2 and _mine(rx.spans(), run_id))
        logs = rx.wait_for(lambda: _mine(rx.logs(), run_id))
        points = rx.wait_for(lambda: _mine(rx.metrics("selfcheck.latency"), run_id))
    finally:
        logger.removeHandler(handler)
        tp.shutdown()
        lp.shutdown()
        mp.shutdown()

    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"selfcheck.parent", "selfcheck.child"}
    p, c = by_name["selfcheck.parent"], by_name["selfcheck.child"]
    pctx, cctx = parent.get_span_context(), child.get_span_context()
    assert p["trace_id"] == c["trace_id"] == format(pctx.trace_id, "032x")
    assert p["span_id"] == format(pctx.span_id, "016x")
    assert c["span_id"] == format(cctx.span_id, "016x")
    assert p["parent_span_id"] == ""
    assert c["parent_span_id"] == p["span_id"]
    assert p["kind"] == SpanKind.SERVER.name and c["kind"] == SpanKind.CLIENT.name
    assert p["attributes"] == {"selfcheck.protocol": protocol}
    assert c["attributes"] == {"http.response.status_code": 503, "selfcheck.tags": ["a", "b"]}
    assert c["status_code"] == "ERROR" and c["status_message"] == "boom"
    assert p["status_code"] == "UNSET"
    assert [(e["name"], e["attributes"]) for e in c["events"]] == [("retry", {"attempt": 2})]
    assert c["resource"]["service.name"] == "selfcheck"
    assert (c["scope_name"], c["scope_version"]) == ("selfcheck.tracer", "1.2.3")

    (log,) = logs
    assert log["body"] == "payment failed for order 42"
    assert log["severity_text"] == "ERROR" and log["severity_number"] == 17
    assert log["trace_id"] == c["trace_id"] and log["span_id"] == c["span_id"]
    assert log["attributes"]["order.id"] == "42"
    assert log["resource"]["service.name"] == "selfcheck"

    (pt,) = points
    assert pt["type"] == "histogram" and pt["unit"] == "ms"
    assert pt["aggregation_temporality"] == "CUMULATIVE"
    assert pt["attributes"] == {"route": "/pay"}
    assert pt["explicit_bounds"] == BOUNDS
    assert pt["bucket_counts"] == [0, 1, 1, 1]
    assert pt["count"] == 3 and pt["sum"] == 555
    assert (pt["min"], pt["max"]) == (5, 500)

    assert rx.errors() == []
    assert rx.is_alive()


class _RecordingExporter(SpanExporter):
    """Wraps an exporter to expose each export's result and duration to the test."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[tuple[SpanExportResult, float]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        t0 = time.monotonic()
        result = self.inner.export(spans)
        self.results.append((result, time.monotonic() - t0))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


@pytest.fixture
def private_receiver(otlp_receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    """Its own rotel (the session one stays untouched), only if the session one could start."""
    rx = OtlpReceiver()
    try:
        rx.start()
    except ReceiverUnavailableError as e:  # pragma: no cover - the session fixture already skipped
        pytest.skip(str(e))
    yield rx
    rx.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_crash_then_restart(private_receiver: OtlpReceiver, protocol: str, run_id: str) -> None:
    rx = private_receiver
    export_timeout = 2.0
    rec = _RecordingExporter(make_exporters(rx, protocol, timeout=export_timeout).spans)
    tp = TracerProvider(resource=Resource.create({"selfcheck.run": run_id}))
    tp.add_span_processor(SimpleSpanProcessor(rec))
    tracer = tp.get_tracer("selfcheck.crash")
    try:
        with tracer.start_as_current_span("before-crash"):
            pass
        rx.wait_for(lambda: rx.spans("before-crash"))
        grpc_port, http_port = rx.grpc_port, rx.http_port

        rx.kill()
        assert not rx.is_alive()
        t0 = time.monotonic()
        with tracer.start_as_current_span("during-crash"):
            pass
        caller_blocked = time.monotonic() - t0
        result, _ = rec.results[-1]
        assert result is SpanExportResult.FAILURE
        assert caller_blocked < export_timeout + 3, f"export to a dead receiver blocked {caller_blocked:.1f}s"

        rx.restart()
        assert (rx.grpc_port, rx.http_port) == (grpc_port, http_port)
        with tracer.start_as_current_span("after-restart"):
            pass
        assert rec.results[-1][0] is SpanExportResult.SUCCESS
        rx.wait_for(lambda: rx.spans("after-restart"))
        assert rx.spans("during-crash") == []
        assert [s["name"] for s in _mine(rx.spans(), run_id)] == ["before-crash", "after-restart"]
    finally:
        tp.shutdown()


def _post_json(rx: OtlpReceiver, path: str, body: dict[str, Any]) -> int:
    req = urllib.request.Request(
        rx.http_endpoint + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as resp:
        return int(resp.status)


def test_odd_payloads_do_not_kill_the_receiver(fresh_otlp_receiver: OtlpReceiver) -> None:
    """Nested/bytes values and a metric kind rotel's model hides (summary) must not crash the agent."""
    rx = fresh_otlp_receiver
    attrs = [
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "x", "value": {"intValue": 3}}]}}},
        {"key": "arr", "value": {"arrayValue": {"values": [{"boolValue": True}, {"doubleValue": 1.5}]}}},
        {"key": "raw", "value": {"bytesValue": "AAEC"}},
    ]
    ids = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
    body = {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "hi"}}]}}
    summary = {"dataPoints": [{"count": 2, "sum": 3.0, "quantileValues": [{"quantile": 0.5, "value": 1.0}]}]}
    assert (
        _post_json(
            rx,
            "/v1/traces",
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "odd", **ids, "attributes": attrs}]}]}]},
        )
        == 200
    )
    assert (
        _post_json(
            rx, "/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": body, "attributes": attrs}]}]}]}
        )
        == 200
    )
    metrics = [{"name": "odd.summary", "summary": summary}]
    assert _post_json(rx, "/v1/metrics", {"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]}) == 200

    (span,) = rx.wait_for(lambda: rx.spans("odd"))
    (log,) = rx.wait_for(rx.logs)
    rx.wait_for(lambda: rx.metrics("odd.summary"))
    expected = {"kv": {"x": 3}, "arr": [True, 1.5], "raw": "000102"}
    assert span["attributes"] == expected and log["attributes"] == expected
    assert log["body"] == {"msg": "hi"}
    assert rx.errors() == []
    assert rx.is_alive()
