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
from opentelemetry.sdk.metrics.export import ExponentialHistogram, Histogram, InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import sigtrace
import sigtrace._runtime
from sigtrace import semconv
from sigtrace._config import resolve_options
from sigtrace._runtime import Installation
from sigtrace.core.text import span_id_hex, trace_id_hex

__all__ = ["Capture", "MetricPoint", "audit_file_events", "capture"]


def _raw_value(point: Any) -> Any:
    return getattr(point, "value", getattr(point, "count", None))


class MetricPoint:
    """One data point of one metric, flattened for assertions.

    ``value`` counts from the last :meth:`Capture.clear`; ``point`` is the SDK's cumulative data point.
    """

    __slots__ = ("_base", "attributes", "name", "point")

    def __init__(self, name: str, attributes: Mapping[str, Any], point: Any, base: float = 0) -> None:
        self.name = name
        self.attributes = dict(attributes)
        self.point = point
        self._base = base

    @property
    def value(self) -> Any:
        """Sum or gauge value; for a histogram, the count. Counters and histograms from the last ``clear()``."""
        value = _raw_value(self.point)
        return value - self._base if self._base and value is not None else value

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
        #: Cumulative counter and histogram values at the last clear(), by (metric, attributes).
        self._metric_base: dict[tuple[str, frozenset[tuple[str, Any]]], float] = {}

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
        """The one finished span with this name (fails if there are none or several, listing what there is)."""
        found = self.spans_named(name)
        if not found:
            names = sorted({s.name for s in self.spans})
            raise AssertionError(f"expected one span named {name!r}, found none; finished spans: {names}")
        if len(found) > 1:
            listed = "\n".join(f"  {_describe_span(span)}" for span in found)
            raise AssertionError(f"expected one span named {name!r}, found {len(found)}:\n{listed}")
        return found[0]

    def audit_for(self, span: ReadableSpan) -> list[dict[str, Any]]:
        """The audit events that carry this span's ids."""
        ctx = span.get_span_context()
        assert ctx is not None
        trace_id, span_id = trace_id_hex(ctx.trace_id), span_id_hex(ctx.span_id)
        return [e for e in self.audit_events if e.get("trace_id") == trace_id and e.get("span_id") == span_id]

    # --- metrics ---

    def metric_points(self, name: str) -> list[MetricPoint]:
        """Current data points of metric ``name`` (cumulative)."""
        self.settle()  # an audit output's failure is counted once it was delivered
        points: list[MetricPoint] = []
        for metric_name, point, accumulates in self._collect():
            if metric_name != name:
                continue
            attributes = point.attributes or {}
            base = self._metric_base.get((name, frozenset(attributes.items())), 0) if accumulates else 0
            if accumulates and base and _raw_value(point) == base:
                continue  # unchanged since clear(): nothing to show
            points.append(MetricPoint(name, attributes, point, base))
        return points

    def _collect(self) -> list[tuple[str, Any, bool]]:
        """Every data point: (metric name, point, whether it accumulates: a counter or a histogram)."""
        data = self.metric_reader.get_metrics_data()
        found: list[tuple[str, Any, bool]] = []
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.data
                    accumulates = isinstance(kind, Histogram | ExponentialHistogram) or (
                        isinstance(kind, Sum) and kind.is_monotonic
                    )
                    found.extend((metric.name, point, accumulates) for point in metric.data.data_points)
        return found

    def metric_total(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's (or count of a histogram's) points whose attributes include ``attributes``."""
        total = 0.0
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        for point in self.metric_points(name):
            if all(point.attributes.get(k) == v for k, v in wanted.items()):
                total += point.value or 0
        return total

    def clear(self) -> None:
        """Forget the spans, audit events and metric points so far (counters and histograms count from here;
        the in-flight count is a level and stays)."""
        self.settle()  # events still on their way belong to what is cleared
        self.exporter.clear()
        with self._lock:
            self._audit.clear()
        self._metric_base = {
            (name, frozenset((point.attributes or {}).items())): _raw_value(point) or 0
            for name, point, accumulates in self._collect()
            if accumulates
        }


def _describe_span(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    span_id = span_id_hex(ctx.span_id) if ctx is not None else "?"
    parent = span_id_hex(span.parent.span_id) if span.parent is not None else None
    attributes = dict(span.attributes or {})
    return f"{span.name!r} span_id={span_id} parent={parent} status={span.status.status_code.name} {attributes}"


def audit_file_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The audit events of a JSON-lines audit file, in order, without the record's own lines
    (stream headers and checkpoints, docs/audit.md)."""
    with open(path, encoding="utf-8") as file:
        lines = [json.loads(line) for line in file if line.strip()]
    return [line for line in lines if line.get("event") == semconv.AUDIT_EVENT]


@contextmanager
def capture(**options: Any) -> Iterator[Capture]:
    """Install sigtrace on in-memory providers for the block; uninstall it after.

    Options are those of ``sigtrace.install``; ``audit`` defaults to the capture itself.
    When sigtrace is already installed (a Django project's ``INSTALLED_APPS``, an ``install()`` at
    import), the capture takes it over for the block: that installation is uninstalled, the
    capture's installed, and afterwards the original installed again with its own options.
    """
    cap = Capture()
    options.setdefault("tracer_provider", cap.tracer_provider)
    options.setdefault("meter_provider", cap.meter_provider)
    options.setdefault("audit", cap.record_audit)
    resolved = resolve_options(options)  # a bad option fails before the running installation is touched
    with sigtrace._runtime._lock:  # no install() of another thread between the two
        taken = sigtrace._runtime.current()
        if taken is not None:
            sigtrace.uninstall()
        try:
            cap.installation = sigtrace._runtime.install_resolved(resolved)
        except BaseException:
            if taken is not None:
                sigtrace._runtime.install_resolved(taken.options)
            raise
    try:
        yield cap
    finally:
        with sigtrace._runtime._lock:
            sigtrace.uninstall()
            if taken is not None:
                sigtrace._runtime.install_resolved(taken.options)


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
