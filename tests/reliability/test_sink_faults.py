"""Faults inside the telemetry pipeline: exporters, metric readers and audit outputs that raise or block,
and an application whose structlog configuration is unusual. The application's operations always
succeed with their correct results, and each fault is counted."""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import blinker
import pytest
import structlog
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import sigtrace
from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.testing import audit_file_events, capture

pre, post = blinker.NamedSignal("pre_charge"), blinker.NamedSignal("post_charge")
OPERATIONS = 300


@pytest.fixture(autouse=True)
def traced_pair() -> Iterator[Any]:
    pair = sigtrace.trace_signals(pre, post, key=lambda sender, **kw: kw["request"], collection="payments")
    yield pair
    pair.untrace()


def charge(amount: int) -> int:
    request = uuid.uuid4()
    pre.send("payment", request=request)
    post.send("payment", request=request)
    return amount * 100


def run_operations(count: int = OPERATIONS) -> None:
    """The application: every result is checked, an exception would fail the test."""
    for i in range(count):
        assert charge(i) == i * 100


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def hit(self) -> None:
        with self.lock:
            self.count += 1


class RaisingSpanExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = Calls()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls.hit()
        raise ConnectionResetError("exporter broke")


class RaisingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.calls = Calls()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.calls.hit()
        raise ConnectionResetError("metric exporter broke")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class RaisingLogExporter(LogRecordExporter):
    def __init__(self) -> None:
        self.calls = Calls()

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.calls.hit()
        raise ConnectionResetError("log exporter broke")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class RaisingReader(InMemoryMetricReader):
    """A metric reader whose collection raises (as a broken pull endpoint would)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = Calls()

    def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self.calls.hit()
        raise RuntimeError("reader broke")


def test_exporters_and_metric_readers_that_raise(tmp_path: Path) -> None:
    spans_batch, spans_simple, metric_exporter, log_exporter = (
        RaisingSpanExporter(),
        RaisingSpanExporter(),
        RaisingMetricExporter(),
        RaisingLogExporter(),
    )
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(spans_batch, schedule_delay_millis=10))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_simple))
    reader = RaisingReader()
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(metric_exporter, export_interval_millis=20), reader]
    )
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter, schedule_delay_millis=10))
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # the SDK logs every failed export
    before = safety.error_counts().get("installation.flush", 0)
    try:
        handle = sigtrace.install(
            sources=["blinker"],
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            logger_provider=logger_provider,
            audit_file=str(tmp_path / "audit.jsonl"),  # and OTLP log records, to the raising log exporter
        )
        run_operations()
        for _ in range(3):
            with pytest.raises(RuntimeError):
                reader.collect()  # a pull that fails in the reader's thread, not the application's
        with safety.strict(False):
            handle.force_flush(2_000)  # the meter provider raises: its reader failed to collect
            assert handle.in_flight() == 0
            sigtrace.uninstall()
    finally:
        logging.getLogger("opentelemetry").setLevel(logging.NOTSET)
        for provider in (tracer_provider, meter_provider, logger_provider):
            provider.shutdown()
    faults = {
        "span export (batch)": spans_batch.calls.count,
        "span export (simple)": spans_simple.calls.count,
        "metric export": metric_exporter.calls.count,
        "metric collection": reader.calls.count,
        "log export": log_exporter.calls.count,
        "failed flushes counted": safety.error_counts().get("installation.flush", 0) - before,
    }
    print(f"\n[reliability] raising exporters/readers: operations={OPERATIONS}, faults injected={faults}")
    assert spans_simple.calls.count == OPERATIONS  # one failing export per span, none reached the application
    assert all(count >= 1 for count in faults.values()), faults


class BoomError(RuntimeError):
    pass


def raising_audit(event: Any) -> None:
    raise BoomError("audit sink broke")


class RaisingLogger:
    """A structlog-like logger (has bind/info) whose every call raises."""

    def bind(self, **kw: Any) -> RaisingLogger:
        return self

    def info(self, event: str, **kw: Any) -> None:
        raise BoomError("logger broke")


@pytest.mark.parametrize("audit", [raising_audit, RaisingLogger()], ids=["callable", "structlog"])
def test_audit_output_that_raises_is_counted(audit: Any) -> None:
    before = safety.error_counts()
    with safety.strict(False), capture(sources=["blinker"], audit=audit) as cap:
        run_operations()
        kind = "audit.output.structlog" if isinstance(audit, RaisingLogger) else "audit.output.callable"
        assert cap.metric_total(semconv.METRIC_INTERNAL_ERRORS, sigtrace__error__kind=kind) == OPERATIONS
        assert len(cap.spans_named("charge payments")) == OPERATIONS
    assert safety.error_counts()[kind] - before.get(kind, 0) == OPERATIONS


def test_audit_file_on_a_full_disk_is_counted_and_other_outputs_still_work() -> None:
    """/dev/full: every write fails with ENOSPC. The operation, its span and the OTLP log record go on."""
    with safety.strict(False), capture(sources=["blinker"], audit_file="/dev/full", audit=True) as cap:
        run_operations(50)
        assert cap.metric_total(semconv.METRIC_INTERNAL_ERRORS, sigtrace__error__kind="audit.output.jsonl") == 50
        assert len(cap.spans_named("charge payments")) == 50


def test_audit_output_that_blocks_cannot_stall_the_application() -> None:
    """A callable that blocks forever (a network audit service that hangs): operations go on at full speed,
    the events wait in a bounded queue, excess is dropped and counted, and delivery resumes when it unblocks."""
    gate = threading.Event()
    delivered: list[dict[str, Any]] = []

    def blocking(event: Any) -> None:
        gate.wait()
        delivered.append(dict(event))

    with safety.strict(False), capture(sources=["blinker"], audit=blocking) as cap:
        assert cap.installation is not None
        audit = cap.installation.audit
        assert audit is not None
        (_, output) = audit.outputs[0]
        output.max_pending = 100  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        run_operations(OPERATIONS)
        took = time.perf_counter() - t0
        assert len(cap.exporter.get_finished_spans()) == OPERATIONS  # every operation ended, none waited
        dropped = cap.metric_total(semconv.METRIC_INTERNAL_ERRORS, sigtrace__error__kind="audit.output.callable")
        gate.set()  # the audit service comes back
        cap.settle()
        print(
            f"\n[reliability] blocking audit output: operations={OPERATIONS} in {took * 1e3:.1f} ms, "
            f"queued then delivered={len(delivered)}, dropped and counted={dropped:.0f}"
        )
        assert len(delivered) == 100 and dropped == OPERATIONS - 100
        assert took < 10.0  # sanity only: a blocked output would have stalled the first operation forever


def test_unusual_structlog_configuration_of_the_application(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The application configured structlog for stdlib logging only (no JSON renderer, its own processors):
    its logging keeps working as it configured it, and sigtrace's audit record is still JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    app_logger = logging.getLogger("shop")
    app_logger.addHandler(handler)
    app_logger.setLevel(logging.INFO)
    structlog.configure(
        processors=[structlog.stdlib.add_log_level, _plain],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    audit_file = tmp_path / "audit.jsonl"
    try:
        log = structlog.get_logger("shop")
        with capture(sources=["blinker"], audit=log, audit_file=str(audit_file)) as cap:
            log.info("before")
            run_operations(20)
            cap.settle()  # the application's logger gets audit events from sigtrace's background thread
            log.info("after")
            assert len(cap.spans_named("charge payments")) == 20
            cap.settle()
        lines = stream.getvalue().splitlines()
        assert lines[0] == "before" and lines[-1] == "after"
        # The audit events also went to the application's logger, rendered its way (not JSON).
        assert sum(semconv.AUDIT_EVENT in line for line in lines) == 20
        records = audit_file_events(audit_file)
        assert len(records) == 20 and {r["outcome"] for r in records} == {"ok"}
    finally:
        structlog.reset_defaults()
        app_logger.removeHandler(handler)


def _plain(logger: Any, method: str, event_dict: Any) -> str:
    """A renderer of the application's own: the event only, no JSON."""
    return str(event_dict.get("event"))


def test_stdlib_logging_only_without_structlog_configuration(tmp_path: Path) -> None:
    """structlog never configured, stdlib logging at WARNING with a root handler: the audit record is complete."""
    audit_file = tmp_path / "audit.jsonl"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    logging.basicConfig(level=logging.WARNING)
    with capture(sources=["blinker"], tracer_provider=provider, audit=True, audit_file=str(audit_file)):
        run_operations(20)
    records = audit_file_events(audit_file)
    assert [r["outcome"] for r in records] == ["ok"] * 20
    assert len(exporter.get_finished_spans()) == 20
