"""Metric points of each operation: the duration histogram and sigtrace's own counters.

Only low-cardinality attributes (source, system, operation, collection, outcome, error type);
never a pk. The attribute dicts are cached per combination, as the SDK hashes them per record.

Per operation only the duration histogram goes through the SDK. The operation and in-flight
counts are kept in process (one dict update under a lock) and reported by observable instruments
when a reader collects: an SDK measurement costs several microseconds, and three of them per
operation were a third of sigtrace's overhead. The exported data is the same (a monotonic sum per
attribute set for ``sigtrace.operations``, a non-monotonic one for the in-flight count).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from sigtrace import semconv
from sigtrace.core.context import span_is_current, with_span
from sigtrace.core.operation import Operation
from sigtrace.core.sinks import Labels

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
    attrs: dict[str, AttributeValue] = dict(semconv.operation_attributes(source, db_system, name, collection))
    if outcome:
        attrs[semconv.SIGTRACE_OUTCOME] = outcome
    if error_type:
        attrs[semconv.ERROR_TYPE] = error_type
    return attrs


#: Attribute sets a tally keeps apart; beyond, counts go to one overflow set (as the SDK's cardinality limit does).
MAX_ATTRIBUTE_SETS = 2000
_OVERFLOW: Mapping[str, AttributeValue] = {"otel.metric.overflow": True}
_Key = tuple[str, str | None, str, str | None, str | None, str | None]


class _Tally:
    """Counts per attribute set, kept in process and observed at collection time."""

    __slots__ = ("_counts", "_lock")

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self._lock = lock or threading.Lock()
        self._counts: dict[_Key, list[Any]] = {}  # key -> [count, attributes]

    def add(self, key: _Key, amount: int) -> None:
        with self._lock:
            self._add(key, amount)

    def _add(self, key: _Key, amount: int) -> None:
        """:meth:`add` for a caller that holds the lock."""
        self.entry(key)[0] += amount

    def entry(self, key: _Key) -> list[Any]:
        """The ``[count, attributes]`` of ``key`` (created at 0; the overflow set's beyond the limit), lock held.

        Entries are never removed: a caller may keep one and add to ``entry[0]`` later under the lock.
        """
        entry = self._counts.get(key)
        if entry is None:
            if len(self._counts) >= MAX_ATTRIBUTE_SETS:
                key = ("", None, "", None, None, "overflow")
                entry = self._counts.get(key)
                if entry is None:
                    entry = self._counts[key] = [0, _OVERFLOW]
            else:
                entry = self._counts[key] = [0, _attributes(*key)]
        return entry

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            entries = [(count, attributes) for count, attributes in self._counts.values()]
        return [Observation(count, attributes) for count, attributes in entries]


class _Tallies:
    """The tallies of one meter, created once: a meter registers an observable instrument name only once,
    so a second installation on the same provider must feed the callbacks of the first."""

    __slots__ = ("in_flight", "in_flight_instrument", "lock", "operations", "operations_instrument")

    def __init__(self, meter: Meter) -> None:
        #: One lock for both tallies: an operation's end updates both at once.
        self.lock = threading.Lock()
        self.operations = _Tally(self.lock)
        self.in_flight = _Tally(self.lock)
        self.operations_instrument = meter.create_observable_counter(
            semconv.METRIC_OPERATIONS,
            callbacks=[self.operations.observe],
            unit="{operation}",
            description="Operations finished, by outcome.",
        )
        self.in_flight_instrument = meter.create_observable_up_down_counter(
            semconv.METRIC_IN_FLIGHT,
            callbacks=[self.in_flight.observe],
            unit="{operation}",
            description="Operations started and not yet ended.",
        )


_tallies_lock = threading.Lock()
_tallies: weakref.WeakKeyDictionary[Any, _Tallies] = weakref.WeakKeyDictionary()


def _tallies_of(meter: Meter) -> _Tallies:
    with _tallies_lock:
        try:
            found = _tallies.get(meter)
        except TypeError:  # a meter that cannot be weakly referenced: no sharing
            return _Tallies(meter)
        if found is None:
            found = _Tallies(meter)
            _tallies[meter] = found
        return found


class _Slot:
    """What an operation's labels (source, system, name, collection) need per operation, looked up once.

    The in-flight entry and the ``ok`` count entry of the tallies (the latter made at the first ``ok``
    end, so no zero count is reported before one), and the duration histogram's attribute set: a
    start and an ``ok`` end then cost one dict lookup each instead of building the tallies' keys and
    looking them up (two ``_add`` calls and an ``lru_cache`` call per operation). The counts are
    the tallies' own entries, so what a reader observes is the same.
    """

    __slots__ = ("duration_attributes", "in_flight", "labels", "ok")

    def __init__(self, labels: Labels, in_flight: list[Any]) -> None:
        self.labels = labels
        self.in_flight = in_flight
        self.ok: list[Any] | None = None
        source, db_system, name, collection = labels
        self.duration_attributes = _attributes(source, db_system, name, collection, None, None)


#: Label sets a sink keeps slots for; beyond, an operation looks its entries up as before.
MAX_SLOTS = 4096


class MetricSink:
    """Records the duration histogram and the operation, orphan, error and in-flight counters."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        meter = metrics.get_meter(semconv.SCOPE_NAME, meter_provider=meter_provider)
        #: The installation's meter: a source creates its own instruments on it (``Source.meter``).
        self.meter = meter
        self.duration = meter.create_histogram(
            semconv.METRIC_DURATION,
            unit="s",
            description="Duration of database client operations observed through their signals.",
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        )
        tallies = _tallies_of(meter)
        self._operations = tallies.operations
        self._in_flight = tallies.in_flight
        self._tally_lock = tallies.lock
        self.operations = tallies.operations_instrument
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
        self.in_flight = tallies.in_flight_instrument
        self._slots: dict[Labels, _Slot] = {}

    # --- the sink life cycle (core/sinks.py) ---

    def _slot(self, labels: Labels) -> _Slot:
        slot = self._slots.get(labels)
        if slot is None:
            with self._tally_lock:
                slot = _Slot(labels, self._in_flight.entry((*labels, None, None)))
            if len(self._slots) < MAX_SLOTS:
                self._slots[labels] = slot
        return slot

    def started(self, op: Operation) -> None:
        labels = (op.source, op.db_system, op.name, op.collection)
        slot = self._slots.get(labels) or self._slot(labels)
        lock = self._tally_lock
        lock.acquire()  # acquire/release, not ``with``: core/correlation.py says why
        try:
            slot.in_flight[0] += 1
        finally:
            lock.release()

    def described(self, op: Operation, before: Labels) -> None:
        """The in-flight count of ``op`` moves to its new attribute set."""
        with self._tally_lock:
            self._in_flight._add((*before, None, None), -1)
            self._in_flight._add((op.source, op.db_system, op.name, op.collection, None, None), 1)

    def cancelled(self, op: Operation) -> None:
        """A started operation turned out to be a duplicate: it leaves the in-flight count unreported."""
        self._in_flight.add((op.source, op.db_system, op.name, op.collection, None, None), -1)

    def finished(self, op: Operation, end_ns: int, duration_s: float, held: bool) -> None:
        """The operation ended: its duration now, its count by outcome now or, for a write ``held`` by its
        transaction, in :meth:`resolved` when the transaction's outcome is known."""
        source, db_system, name, collection, error_type = op.source, op.db_system, op.name, op.collection, op.error_type
        labels = (source, db_system, name, collection)
        slot = self._slots.get(labels) or self._slot(labels)
        outcome = op.outcome
        lock = self._tally_lock
        lock.acquire()  # both tallies under one acquisition (acquire/release: core/correlation.py says why)
        try:
            slot.in_flight[0] -= 1
            if not held:
                if outcome == semconv.OUTCOME_OK and error_type is None:
                    ok = slot.ok
                    if ok is None:
                        ok = slot.ok = self._operations.entry((*labels, outcome, None))
                    ok[0] += 1
                else:
                    self._operations._add((*labels, outcome, error_type), 1)
        finally:
            lock.release()
        # error.type on the duration metric if and only if the operation failed. The measurement's context
        # is the operation's own span (where the SDK keeps an exemplar, it links to that span): current
        # already where the span is (an entry scope, an activated span), made here where it is not (a span
        # started in a receiver that cannot change its caller's context).
        span = op.span
        self.duration.record(
            duration_s,
            slot.duration_attributes if error_type is None else _attributes(*labels, None, error_type),
            context=None if span is None or span_is_current(span) else with_span(span),
        )
        if op.orphaned:
            base = _attributes(source, db_system, name, collection, None, None)
            reason = op.audit.get("orphan_reason")
            attrs = dict(base)
            if isinstance(reason, str):
                attrs[semconv.SIGTRACE_ORPHAN_REASON] = reason
            self.orphans.add(1, attrs)

    def event(self, op: Operation, time_ns: int) -> None:
        """Single signals are span events and audit events; they have no duration to record."""

    def resolved(self, op: Operation) -> None:
        """A held write's transaction ended: count it under its final outcome (``ok``, ``rolled_back``...)."""
        self._operations.add((op.source, op.db_system, op.name, op.collection, op.outcome, op.error_type), 1)
        if op.orphaned:
            attrs = dict(_attributes(op.source, op.db_system, op.name, op.collection, None, None))
            reason = op.audit.get("orphan_reason")
            if isinstance(reason, str):
                attrs[semconv.SIGTRACE_ORPHAN_REASON] = reason
            self.orphans.add(1, attrs)

    def internal_error(self, kind: str) -> None:
        self.internal_errors.add(1, {semconv.SIGTRACE_ERROR_KIND: kind})
