"""The correlation engine: sources report start/end events, the engine pairs them and feeds the sinks.

A source calls :meth:`Engine.begin` at a pre signal and :meth:`Engine.end` at the matching post
signal (or at the failure it observed), with a correlation key; or wraps a library entry point in
:meth:`Engine.entry` where receivers cannot make a span current (see ``core/context.py``). The
engine keeps the in-flight table bounded, reaps orphans from one thread, and reports every
operation exactly once: audit event first (the durable record), then metrics, then the span end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from contextvars import Token
from functools import lru_cache
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

from sigtrace import semconv
from sigtrace._config import Exclusions
from sigtrace.core import safety
from sigtrace.core.context import Scope, current_actor, current_scope, enter_scope, exit_scope
from sigtrace.core.correlation import InFlightTable, weak_ref
from sigtrace.core.operation import Operation
from sigtrace.sinks.audit import AuditSink
from sigtrace.sinks.metrics import MetricSink
from sigtrace.sinks.spans import SpanSink

__all__ = ["Engine", "EntryScope", "error_type_of"]

_DESCRIPTIVE = (
    "name",
    "model",
    "collection",
    "db_system",
    "namespace",
    "pk",
    "correlation_id",
    "signal",
    "changed_fields",
    "values",
)


# Guards are stateless (a kind): one instance each, entered several times per operation.
_GUARD_AUDIT = safety.guard("sink.audit")
_GUARD_SPANS = safety.guard("sink.spans")


#: The key ``suppress_instrumentation()`` sets, and the plain one older instrumentations set (as
#: ``opentelemetry.instrumentation.utils.is_instrumentation_enabled`` reads both; here from one context lookup).
_SUPPRESS_KEYS = (_SUPPRESS_INSTRUMENTATION_KEY, "suppress_instrumentation")


def instrumentation_suppressed() -> bool:
    """True inside ``suppress_instrumentation()`` (OpenTelemetry's own exporters use it)."""
    ctx = otel_context.get_current()
    return bool(ctx.get(_SUPPRESS_KEYS[0]) or ctx.get(_SUPPRESS_KEYS[1]))


def error_type_of(error: BaseException) -> str:
    """``error.type`` of an exception: its class's qualified name, as OpenTelemetry's Python instrumentations use."""
    return type(error).__qualname__


class Engine:
    """Pairs starts with ends and reports each operation once to the span, metric and audit sinks."""

    def __init__(
        self,
        spans: SpanSink,
        metrics: MetricSink | None,
        audit: AuditSink | None,
        *,
        max_in_flight: int,
        orphan_timeout: float,
        exclude: Exclusions | None = None,
    ) -> None:
        self.spans = spans
        self.metrics = metrics
        self.audit = audit
        self.exclude = exclude or Exclusions()
        self._excluding = bool(self.exclude)
        self.table = InFlightTable(max_in_flight, orphan_timeout, self._orphaned)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._excluded = lru_cache(maxsize=4096)(self._compute_excluded)
        #: Context tokens of operations made current in a context that could not detach them (the
        #: reaper ended them, or their post came from another thread), by span id: detached at the
        #: next begin() that finds that span current in its context, or at close().
        self._stale: dict[int, Attachment] = {}
        self._stale_lock = threading.Lock()
        #: Serialises the resolution of held writes (a commit and the reaper may meet).
        self._held_lock = threading.Lock()

    # --- life cycle ---

    def start_reaper(self) -> None:
        """One daemon thread for every orphan, waking a few times per ``orphan_timeout``."""
        if self._reaper is not None:
            return
        interval = max(0.01, min(self.table.timeout / 4.0, 1.0))

        def run() -> None:
            while not self._stop.wait(interval):
                with safety.guard("engine.reaper"):
                    self.table.reap()

        self._reaper = threading.Thread(target=run, name="sigtrace-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        """Stop the reaper and end what is still in flight as orphans (reason ``uninstall``)."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5.0)
            self._reaper = None
        for op in self.table.drain():
            self._orphaned(op, "uninstall")
        with self._stale_lock:
            stale = list(self._stale.values())
            self._stale.clear()
        # Detach what this context can, newest first, until nothing more comes off the top.
        while stale:
            detached = [attachment for attachment in reversed(stale) if _detach(attachment)]
            if not detached:
                break
            stale = [attachment for attachment in stale if attachment not in detached]
        # What is left was covered by attachments the bounded table let go: restoring this
        # context to before its oldest remaining one restores it to before them all (tokens of
        # other threads' contexts cannot be reset here and are skipped).
        for attachment in stale:
            if _detach(attachment, force=True):
                break

    # --- what sources call ---

    def enabled(self, source: str, model: str | None, name: str, signal: str | None = None) -> bool:
        """False under ``suppress_instrumentation`` or for an excluded source/model/operation/signal."""
        if instrumentation_suppressed():
            return False
        return not (self._excluding and self._excluded(source, model, name, signal))

    def _compute_excluded(self, source: str, model: str | None, name: str, signal: str | None) -> bool:
        return self.exclude.matches(source, model, name, signal)

    def begin(
        self, op: Operation, key: Hashable | None = None, *, obj: object = None, activate: bool = False
    ) -> Operation | None:
        """An operation starts (pre signal). Returns the operation now in flight, or ``None`` if untraced.

        Inside an :class:`EntryScope` whose operation is not claimed yet, that operation is
        claimed and enriched instead of starting a second span. ``obj`` is the instance behind an
        identity key (checked by weak reference at the end). ``activate`` makes the span current in
        this context until :meth:`end` runs in the same context (only where pre and post do).
        """
        if not self.enabled(op.source, op.model, op.name, op.signal):
            return None
        if self._stale:
            self._detach_stale_current()
        if key is not None:
            existing = self.table.get(key)
            if existing is not None and (existing.ref is None or existing.ref() is obj):
                # A second pre for an operation already in flight (e.g. parent-model signals): no duplicate.
                return existing
        scope = current_scope()
        target = scope.claimable(op, key) if scope is not None else None
        if target is not None:
            _absorb(target, op)
        else:
            target = op
            if obj is not None:
                op.ref = weak_ref(obj)
            self._start(op, activate=activate)
        if key is not None:
            existing = self.table.add(key, target)
            if existing is not None:
                # Lost a race with another thread starting the same key: keep the first.
                if target is op and target is not existing:
                    self._discard_started(op)
                return existing
        if scope is not None and target is not scope.op:
            scope.ops.append(target)
        return target

    def claim(self, key: Hashable, *, obj: object = None, signal: str | None = None) -> Operation | None:
        """The entry scope's operation, if it waits for this pre signal's ``key``: claimed, no new operation.

        The cheap path of :meth:`begin` for the common case (a pre signal inside the library call
        its source wrapped): a source calls it first and builds an :class:`Operation` only when it
        returns ``None``. ``signal`` names the pre signal on the claimed operation.
        """
        scope = current_scope()
        if scope is None:
            return None
        own = scope.op
        if own is None or own.done or own.key is not None or scope.expect is None or scope.expect != key:
            return None
        if self._excluding and signal is not None and self._excluded(own.source, own.model, own.name, signal):
            return None
        if obj is not None and own.ref is None:
            own.ref = weak_ref(obj)
        existing = self.table.add(key, own)
        if existing is not None:
            return existing
        if signal is not None:
            own.signal = signal
        return own

    def end(
        self,
        key: Hashable | None = None,
        *,
        op: Operation | None = None,
        obj: object = None,
        outcome: str = semconv.OUTCOME_OK,
        error: BaseException | None = None,
        **updates: Any,
    ) -> Operation | None:
        """An operation ends (post signal, or a failure the source observed). Unknown keys are ignored."""
        if op is None:
            if key is None:
                return None
            op = self.table.pop(key, obj)
        else:
            self.table.discard(op)
        if op is None or op.done:
            return None
        if updates:
            op.update(**updates)
        self._finish(op, semconv.OUTCOME_ERROR if error is not None else outcome, error)
        return op

    def record_event(self, op: Operation) -> None:
        """A single signal with no pair: an event on the current span and an audit event (outcome ``ok``)."""
        if not self.enabled(op.source, op.model, op.name, op.signal):
            return
        op.actor = current_actor()
        op.outcome = semconv.OUTCOME_OK
        op.done = True
        span = trace.get_current_span()
        op.span = span
        with _GUARD_SPANS:
            span.add_event(op.name, self.spans.attributes(op))
        if self.audit is not None:
            with _GUARD_AUDIT:
                self.audit.emit(op, time.time_ns(), 0.0)

    def lookup(self, key: Hashable) -> Operation | None:
        return self.table.get(key)

    def entry(self, op: Operation | None = None, *, expect: Hashable | None = None) -> EntryScope:
        """Scope a library entry point: ``op``'s span is current during the call, failures end it at once."""
        return EntryScope(self, op, expect)

    # --- internals ---

    def _start(self, op: Operation, *, activate: bool) -> None:
        op.start_ns = time.time_ns()
        op.start_monotonic = time.monotonic()
        op.actor = current_actor()
        op.span = self.spans.start(op)
        if self.metrics is not None:
            self.metrics.started(op)
        if activate:
            op.token = _attach(op.span)

    def _discard_started(self, op: Operation) -> None:
        """Undo :meth:`_start` of a duplicate without reporting it."""
        op.done = True
        if op.token is not None:
            _detach(op.token)
            op.token = None
        if self.metrics is not None:
            self.metrics.cancelled(op)
        if op.span is not None:
            op.span.end()

    def _finish(self, op: Operation, outcome: str, error: BaseException | None) -> None:
        # try/except rather than ``with safety.guard``: the same net, without two calls per block.
        try:
            if op.done:
                return
            op.done = True
            op.outcome = outcome
            if error is not None:
                op.error = error
                # A source may have named the failure more precisely (a service's error code).
                op.error_type = op.error_type or error_type_of(error)
            if op.token is not None:
                if not _detach(op.token):
                    self._remember_stale(op)  # covered by a newer one, or in another context
                elif self._stale:
                    self._detach_stale_current()  # an older one that ended first is now on top
                op.token = None
            end_ns = time.time_ns()
            duration = time.monotonic() - op.start_monotonic
            if duration < 0.0:
                duration = 0.0
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report("engine.finish", exc)
            return
        # A write inside an open transaction: its audit event and count wait for the transaction.
        held = op.transaction is not None and outcome == semconv.OUTCOME_OK and self._hold(op, end_ns, duration)
        # Each sink on its own: one that fails never keeps the others from reporting.
        if self.audit is not None and not held:
            try:
                self.audit.emit(op, end_ns, duration)
            except Exception as exc:  # noqa: BLE001
                safety.report("sink.audit", exc)
        if self.metrics is not None:
            try:
                self.metrics.finished(op, duration, count=not held)
            except Exception as exc:  # noqa: BLE001
                safety.report("sink.metrics", exc)
        try:
            self.spans.end(op, end_ns)
        except Exception as exc:  # noqa: BLE001
            safety.report("sink.spans", exc)

    def _hold(self, op: Operation, end_ns: int, duration: float) -> bool:
        """Keep ``op``'s audit events and count on its transaction; False where it cannot be held (report now)."""
        txn = op.transaction
        try:
            if txn is None or txn.closed:
                return False
            op.held = self.audit.build(op, end_ns, duration) if self.audit is not None else []
            if not txn.hold(lambda outcome: self._resolve(op, outcome)):
                op.held = None
                return False
            # Bounded like every in-flight operation: max_in_flight, orphan_timeout (then ``unknown``).
            self.table.add(("sigtrace.held", id(op)), op)
            return True
        except Exception as exc:  # noqa: BLE001 - the safety net; the write is then reported at once
            op.held = None
            safety.report("engine.hold", exc)
            return False

    def _resolve(self, op: Operation, outcome: str, orphan_reason: str | None = None) -> None:
        """The transaction of a held write ended (or never will): deliver its events with ``outcome``, count it."""
        with self._held_lock:
            events = op.held
            if events is None:
                return  # resolved already (the reaper and a late commit race)
            op.held = None
        self.table.discard(op)
        op.outcome = outcome
        if orphan_reason is not None:
            op.orphaned = True
            op.audit["orphan_reason"] = orphan_reason
        if self.audit is not None:
            for event in events:
                try:
                    event["outcome"] = outcome
                    if orphan_reason is not None:
                        name = event.pop("event")
                        event["orphaned"] = True
                        event["orphan_reason"] = orphan_reason
                        event["event"] = name
                    self.audit.deliver(event)
                except Exception as exc:  # noqa: BLE001
                    safety.report("sink.audit", exc)
        if self.metrics is not None:
            try:
                self.metrics.resolved(op)
            except Exception as exc:  # noqa: BLE001
                safety.report("sink.metrics", exc)

    def _orphaned(self, op: Operation, reason: str) -> None:
        if op.held is not None:
            # Ended, but its transaction never did within orphan_timeout (or uninstall/overflow came first).
            self._resolve(op, semconv.OUTCOME_UNKNOWN, "transaction_timeout" if reason == "timeout" else reason)
            return
        op.orphaned = True
        op.audit["orphan_reason"] = reason
        if op.token is not None:
            # Attached in the context of the thread that sent the pre; resetting it from here is not
            # possible: that context detaches it at its next begin(), or close() does.
            self._remember_stale(op)
            op.token = None
        self._finish(op, semconv.OUTCOME_UNKNOWN, None)

    def _remember_stale(self, op: Operation) -> None:
        if op.span is None or op.token is None:
            return
        with self._stale_lock:
            if len(self._stale) >= max(self.table.max_size, 2):
                # Keep the oldest: close() restores a context to before it (see there).
                keys = iter(self._stale)
                next(keys)
                self._stale.pop(next(keys))
            self._stale[op.span.get_span_context().span_id] = op.token

    def _detach_stale_current(self) -> None:
        """Detach the spans left current in this context by operations that ended elsewhere."""
        while True:
            span_id = trace.get_current_span().get_span_context().span_id
            with self._stale_lock:
                attachment = self._stale.pop(span_id, None)
            if attachment is None:
                return
            if not _detach(attachment):
                with self._stale_lock:
                    self._stale[span_id] = attachment
                return


class EntryScope(Scope):
    """Context manager around one library call, and the :class:`Scope` it makes current; see ``core/context.py``."""

    __slots__ = ("_engine", "_scope_token", "_span_token")

    def __init__(self, engine: Engine, op: Operation | None, expect: Hashable | None) -> None:
        if op is not None and not engine.enabled(op.source, op.model, op.name, op.signal):
            op = None
        super().__init__(op, expect)
        self._engine = engine
        self._span_token: Attachment | None = None
        self._scope_token: Token[Scope | None] | None = None

    @property
    def operation(self) -> Operation | None:
        return self.op

    def __enter__(self) -> EntryScope:
        try:
            op = self.op
            if op is not None:
                self._engine._start(op, activate=False)
                self._span_token = _attach(op.span)  # type: ignore[arg-type]
            self._scope_token = enter_scope(self)
        except Exception as exc:  # noqa: BLE001 - the safety net, as ``with safety.guard`` without its calls
            safety.report("engine.entry", exc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            engine = self._engine
            pending = [op for op in self.ops if not op.done] if self.ops else []
            own = self.op
            if own is not None and not own.done:
                pending.append(own)
            # Newest first, and before the scope's own context: tokens are reset in the reverse
            # order of their attach, so no inner operation's span outlives the call as current.
            for op in reversed(pending):
                engine.table.discard(op)
                if exc is not None:
                    engine._finish(op, semconv.OUTCOME_ERROR, exc)
                else:
                    # The call returned: it happened, even where no post signal said so.
                    engine._finish(op, semconv.OUTCOME_OK, None)
            if self._span_token is not None:
                # A with-block restores its caller's context whatever was attached inside it.
                _detach(self._span_token, force=True)
            if self._scope_token is not None:
                exit_scope(self._scope_token)
        except Exception as failure:  # noqa: BLE001 - the safety net
            safety.report("engine.entry", failure)

    async def __aenter__(self) -> EntryScope:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _absorb(target: Operation, op: Operation) -> None:
    """Copy what a pre signal knows into the scope's operation (the signal's view wins)."""
    for name in _DESCRIPTIVE:
        value = getattr(op, name)
        if value is not None:
            setattr(target, name, value)
    target.write = op.write
    target.attributes.update(op.attributes)
    target.audit.update(op.audit)


#: A context made current by sigtrace: the token to reset and the context it attached.
Attachment = tuple[Token[Any], otel_context.Context]


def _attach(span: trace.Span) -> Attachment:
    ctx = trace.set_span_in_context(span)
    return otel_context.attach(ctx), ctx


def _detach(attachment: Attachment, *, force: bool = False) -> bool:
    """Undo an attach, only in its own context and only while it is on top.

    ``ContextVar.reset`` accepts tokens in any order and then restores a stale context (the
    older operation's span comes back as current); so an attachment that something else
    covers is left for later (the newer one's detach uncovers it). ``force`` is for a
    with-block restoring its caller's context.
    """
    token, ctx = attachment
    if not force and otel_context.get_current() is not ctx:
        return False
    try:
        token.var.reset(token)
    except (ValueError, RuntimeError):
        return False
    return True
