"""Metric points of each operation: the duration histogram and sigtrace's own counters.

Only low-cardinality attributes (source, system, operation, collection, outcome, error type);
never a pk. The attribute dicts are cached per combination, as the SDK hashes them per record.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.util.types import AttributeValue

from sigtrace import semconv
from sigtrace.core.operation import Operation

__all__ = ["MetricSink"]


@lru_cache(maxsize=4096)
def _attributes(
    source: str,
    db_system: str | None,
    name: str,
    collection: str | None,
    outcome: str | None,
    error_type: str | None,
) -> Mapping[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {semconv.SIGTRACE_SOURCE: source, semconv.DB_OPERATION_NAME: name}
    if db_system:
        attrs[semconv.DB_SYSTEM_NAME] = db_system
    if collection:
        attrs[semconv.DB_COLLECTION_NAME] = collection
    if outcome:
        attrs[semconv.SIGTRACE_OUTCOME] = outcome
    if error_type:
        attrs[semconv.ERROR_TYPE] = error_type
    return attrs


class MetricSink:
    """Records the duration histogram and the operation, orphan, error and in-flight counters."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        meter = metrics.get_meter(semconv.SCOPE_NAME, meter_provider=meter_provider)
        #: The installation's meter: a source creates its own instruments on it (``engine.metrics.meter``).
        self.meter = meter
        self.duration = meter.create_histogram(
            semconv.METRIC_DURATION,
            unit="s",
            description="Duration of database client operations observed through their signals.",
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        )
        self.operations = meter.create_counter(
            semconv.METRIC_OPERATIONS, unit="{operation}", description="Operations finished, by outcome."
        )
        self.orphans = meter.create_counter(
            semconv.METRIC_ORPHANS,
            unit="{operation}",
            description="Operations whose end was never observed (pre signal without post), by reason.",
        )
        self.internal_errors = meter.create_counter(
            semconv.METRIC_INTERNAL_ERRORS,
            unit="{error}",
            description="Errors inside sigtrace, caught before they reached the application.",
        )
        self.in_flight = meter.create_up_down_counter(
            semconv.METRIC_IN_FLIGHT, unit="{operation}", description="Operations started and not yet ended."
        )

    def started(self, op: Operation) -> None:
        self.in_flight.add(1, _attributes(op.source, op.db_system, op.name, op.collection, None, None))

    def cancelled(self, op: Operation) -> None:
        """A started operation turned out to be a duplicate: it leaves the in-flight count unreported."""
        self.in_flight.add(-1, _attributes(op.source, op.db_system, op.name, op.collection, None, None))

    def finished(self, op: Operation, duration_s: float) -> None:
        base = _attributes(op.source, op.db_system, op.name, op.collection, None, None)
        self.in_flight.add(-1, base)
        # error.type on the duration metric if and only if the operation failed.
        self.duration.record(
            duration_s, _attributes(op.source, op.db_system, op.name, op.collection, None, op.error_type)
        )
        self.operations.add(1, _attributes(op.source, op.db_system, op.name, op.collection, op.outcome, op.error_type))
        if op.orphaned:
            reason = op.audit.get("orphan_reason")
            attrs = dict(base)
            if isinstance(reason, str):
                attrs[semconv.SIGTRACE_ORPHAN_REASON] = reason
            self.orphans.add(1, attrs)

    def internal_error(self, kind: str) -> None:
        self.internal_errors.add(1, {semconv.SIGTRACE_ERROR_KIND: kind})
