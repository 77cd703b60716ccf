"""Operation spans: kind CLIENT, named ``{operation} {collection}``, database semantic conventions.

The attribute set that depends only on (source, system, operation, model, collection, namespace) is
computed once per combination and cached; per operation only the signal, pk, correlation id and
extras are added. At the end only what changed since the start is set again (the SDK validates
every attribute it is given): where the cached set is the same object, only those few.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from sigtrace import semconv
from sigtrace.core.operation import Operation
from sigtrace.core.sinks import Labels

__all__ = ["SpanSink", "old_names_enabled"]

_MISSING = object()


def old_names_enabled() -> bool:
    """``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`` adds the old attribute names beside the stable ones."""
    opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "database/dup" in {part.strip() for part in opt_in.split(",")}


@lru_cache(maxsize=4096)
def _base_attributes(
    source: str,
    db_system: str | None,
    name: str,
    model: str | None,
    collection: str | None,
    namespace: str | None,
    dup: bool,
) -> Mapping[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = dict(semconv.operation_attributes(source, db_system, name, collection))
    if namespace:
        attrs[semconv.DB_NAMESPACE] = namespace
    if model:
        attrs[semconv.SIGTRACE_MODEL] = model
    if dup:
        if db_system:
            attrs[semconv.OLD_DB_SYSTEM] = semconv.OLD_DB_SYSTEM_VALUES.get(db_system, db_system)
        attrs[semconv.OLD_DB_OPERATION] = name
        if namespace:
            attrs[semconv.OLD_DB_NAME] = namespace
    return attrs


class SpanSink:
    """Starts and ends the span of each operation."""

    #: A span says what the call did: a transaction's later outcome changes nothing in it (core/sinks.py).
    wants_resolved = False

    def __init__(self, tracer_provider: TracerProvider | None, max_value_length: int) -> None:
        self.tracer: Tracer = trace.get_tracer(semconv.SCOPE_NAME, tracer_provider=tracer_provider)
        self.dup = old_names_enabled()
        self.max_value_length = max_value_length
        #: Spans of the OpenTelemetry SDK can lose an attribute (``_unset``): only they start with a predicted
        #: post signal before any signal came (Django's save span starts before its pre_save). Decided once.
        self._unsets = isinstance(self.tracer, SdkTracer)

    def _base(self, op: Operation) -> Mapping[str, AttributeValue]:
        return _base_attributes(op.source, op.db_system, op.name, op.model, op.collection, op.namespace, self.dup)

    def attributes(self, op: Operation) -> dict[str, AttributeValue]:
        attrs = dict(self._base(op))
        self._add_own(attrs, op)
        return attrs

    def _add_own(self, attrs: dict[str, AttributeValue], op: Operation, *, signal: bool = True) -> None:
        """Add the attributes of this operation alone: signal, pk, correlation id, the source's extras."""
        if signal and op.signal:
            attrs[semconv.SIGTRACE_SIGNAL] = op.signal
        if op.pk is not None:
            attrs[semconv.SIGTRACE_PK] = op.pk[: self.max_value_length]
        if op.correlation_id is not None:
            attrs[semconv.SIGTRACE_CORRELATION_ID] = op.correlation_id
        if op.attributes:
            limit = self.max_value_length
            for key, value in op.attributes.items():
                attrs[key] = value[:limit] if isinstance(value, str) else value

    # --- the sink life cycle (core/sinks.py) ---

    def cancelled(self, op: Operation) -> None:
        if op.span is not None:
            op.span.end()

    def described(self, op: Operation, before: Labels) -> None:
        """The span's name and attributes are brought up to date when it ends."""

    def resolved(self, op: Operation) -> None:
        """The span ended with the call; a transaction's later outcome is the audit event's and the count's."""

    def event(self, op: Operation, time_ns: int) -> None:
        if op.span is not None:
            op.span.add_event(op.name, self.attributes(op), timestamp=time_ns)

    # --- spans ---

    def started(self, op: Operation) -> None:
        """Start ``op``'s span (``op.span``) with every attribute known now (the SDK validates each one once).

        Where the source names the post signal that will end ``op`` (``op.post_signal``), the span starts
        with it as ``sigtrace.signal``: at the end it is then the same and not set again, which is most of
        what the span sink cost over a bare SDK span. :meth:`finished` corrects it where another signal was last,
        and removes it where no signal came at all (only from SDK spans, which allow it: ``_unsets``).
        """
        base = _base_attributes(op.source, op.db_system, op.name, op.model, op.collection, op.namespace, self.dup)
        attributes = dict(base)
        signal = op.signal
        if op.post_signal is not None and (signal is not None or self._unsets):
            signal = op.post_signal
        if signal:
            attributes[semconv.SIGTRACE_SIGNAL] = signal
        self._add_own(attributes, op, signal=False)
        op.span_base = base
        op.span_attributes = attributes
        collection = op.collection
        op.span = self.tracer.start_span(
            f"{op.name} {collection}" if collection else op.name,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=op.start_ns,
        )

    def finished(self, op: Operation, end_ns: int, duration_s: float, held: bool) -> None:
        """End ``op``'s span now, also for a write ``held`` by its transaction: the span says what the call did."""
        span = op.span
        if span is None:
            return
        if not span.is_recording():
            span.end(end_time=end_ns)
            return
        # Information learnt after the start (pk from the post signal, signal name, extras).
        started = op.span_attributes or {}
        base = _base_attributes(op.source, op.db_system, op.name, op.model, op.collection, op.namespace, self.dup)
        if base is op.span_base:  # same operation, model and collection: same name, same cached set
            current: dict[str, AttributeValue] = {}
            self._add_own(current, op)
        else:
            if getattr(span, "name", None) != op.span_name:
                span.update_name(op.span_name)
            current = self.attributes(op)
        changed: dict[str, AttributeValue] | None = None
        for key, value in current.items():  # a loop, not a comprehension: no frame of its own (Python 3.11)
            if started.get(key, _MISSING) != value:
                if changed is None:
                    changed = {}
                changed[key] = value
        if changed:
            span.set_attributes(changed)
        if op.signal is None and semconv.SIGTRACE_SIGNAL in started:
            _unset(span, semconv.SIGTRACE_SIGNAL)  # the predicted post signal, and no signal came
        if op.outcome == semconv.OUTCOME_ERROR:
            span.set_attribute(semconv.ERROR_TYPE, op.error_type or "_OTHER")
            if op.error is not None:
                span.record_exception(op.error, escaped=True)
            span.set_status(Status(StatusCode.ERROR, _describe(op.error)))
        elif op.outcome == semconv.OUTCOME_SKIPPED:
            span.set_attribute(semconv.SIGTRACE_OUTCOME, semconv.OUTCOME_SKIPPED)
        if op.orphaned:
            span.set_attribute(semconv.SIGTRACE_ORPHANED, True)
        span.end(end_time=end_ns)


def _unset(span: Span, key: str) -> None:
    """Remove an attribute from a recording SDK span (the API has no call for it; ``SpanSink._unsets``)."""
    attributes: Any = getattr(span, "_attributes", None)
    with contextlib.suppress(Exception):  # only SDK spans get a predicted signal
        del attributes[key]


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return f"{type(error).__name__}: {error}"[:1024]
