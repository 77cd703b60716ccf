"""In-memory capture of sigtrace's spans, metric points and audit events, for your tests and ours.

    from sigtrace.testing import capture

    with capture() as cap:
        Order(id="1").save()
    assert cap.span("save orders").status.is_ok

As a pytest plugin (registered through the ``pytest11`` entry point) it provides the
``sigtrace_capture`` fixture: sigtrace installed on in-memory providers for one test.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import sigtrace
import sigtrace._runtime
from sigtrace import semconv
from sigtrace._runtime import Installation

__all__ = ["Capture", "MetricPoint", "audit_file_events", "capture"]


class MetricPoint:
    """One data point of one metric, flattened for assertions."""

    __slots__ = ("attributes", "name", "point")

    def __init__(self, name: str, attributes: Mapping[str, Any], point: Any) -> None:
        self.name = name
        self.attributes = dict(attributes)
        self.point = point

    @property
    def value(self) -> Any:
        """Sum or gauge value; for a histogram, the count."""
        return getattr(self.point, "value", getattr(self.point, "count", None))

    def __repr__(self) -> str:
        return f"MetricPoint({self.name!r}, {self.attributes!r}, value={self.value!r})"


class Capture:
    """What one installation produced: finished spans, audit events and metric points."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])
        self._audit: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.installation: Installation | None = None

    # --- audit sink ---

    def record_audit(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self._audit.append(dict(event))

    def settle(self) -> None:
        """Wait until the audit events of finished operations were delivered (they go through a background thread)."""
        installation = self.installation or sigtrace._runtime.current()
        if installation is not None:
            installation.flush_audit()

    @property
    def audit_events(self) -> list[dict[str, Any]]:
        self.settle()
        with self._lock:
            return list(self._audit)

    # --- spans ---

    @property
    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span with this name (fails if there are none or several)."""
        found = self.spans_named(name)
        if len(found) != 1:
            raise AssertionError(
                f"expected one span named {name!r}, found {len(found)}: {[s.name for s in self.spans]}"
            )
        return found[0]

    def audit_for(self, span: ReadableSpan) -> list[dict[str, Any]]:
        """The audit events that carry this span's ids."""
        ctx = span.get_span_context()
        assert ctx is not None
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        return [e for e in self.audit_events if e.get("trace_id") == trace_id and e.get("span_id") == span_id]

    # --- metrics ---

    def metric_points(self, name: str) -> list[MetricPoint]:
        """Current data points of metric ``name`` (cumulative)."""
        self.settle()  # an audit output's failure is counted once it was delivered
        data = self.metric_reader.get_metrics_data()
        points: list[MetricPoint] = []
        if data is None:
            return points
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(MetricPoint(name, p.attributes or {}, p) for p in metric.data.data_points)
        return points

    def metric_total(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's (or count of a histogram's) points whose attributes include ``attributes``."""
        total = 0.0
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        for point in self.metric_points(name):
            if all(point.attributes.get(k) == v for k, v in wanted.items()):
                total += point.value or 0
        return total

    def clear(self) -> None:
        self.settle()  # events still on their way belong to what is cleared
        self.exporter.clear()
        with self._lock:
            self._audit.clear()


def audit_file_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The audit events of a JSON-lines audit file, in order, without the record's own lines
    (stream headers and checkpoints, docs/audit.md)."""
    with open(path, encoding="utf-8") as file:
        lines = [json.loads(line) for line in file if line.strip()]
    return [line for line in lines if line.get("event") == semconv.AUDIT_EVENT]


@contextmanager
def capture(**options: Any) -> Iterator[Capture]:
    """Install sigtrace on in-memory providers for the block; uninstall it after.

    Options are those of :func:`sigtrace.install`; ``audit`` defaults to the capture itself.
    Fails if sigtrace is already installed (a test must own its installation).
    """
    if sigtrace.is_installed():
        raise RuntimeError("sigtrace is already installed; uninstall it before capturing")
    cap = Capture()
    options.setdefault("tracer_provider", cap.tracer_provider)
    options.setdefault("meter_provider", cap.meter_provider)
    options.setdefault("audit", cap.record_audit)
    cap.installation = sigtrace.install(**options)
    try:
        yield cap
    finally:
        sigtrace.uninstall()


try:  # the pytest plugin, when pytest is there
    import pytest
except ImportError:  # pragma: no cover - sigtrace.testing works without pytest
    pass
else:

    @pytest.fixture
    def sigtrace_capture() -> Iterator[Capture]:
        """sigtrace installed on in-memory providers for this test."""
        with capture() as cap:
            yield cap
