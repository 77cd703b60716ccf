"""The correlation engine: sources report start/end events, the engine pairs them and feeds the sinks.

A source calls :meth:`Engine.begin` at a pre signal and :meth:`Engine.end` at the matching post
signal (or at the failure it observed), with a correlation key; or wraps a library entry point in
:meth:`Engine.entry` where receivers cannot make a span current (see ``core/context.py``). The
engine keeps the in-flight table bounded, reaps orphans from one thread, and reports every
operation exactly once to its sinks (``core/sinks.py``): the audit record first, the span last. A
write inside an open transaction is held until the transaction ends (``core/transactions.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from contextvars import Token
from functools import lru_cache
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

from sigtrace import semconv
from sigtrace._config import Exclusions
from sigtrace.core import safety
from sigtrace.core.context import (
    Attachment,
    Scope,
    StaleAttachments,
    attach,
    current_actor,
    current_context,
    current_scope,
    detach,
    enter_scope,
    exit_scope,
)
from sigtrace.core.correlation import InFlightTable, weak_ref
from sigtrace.core.operation import Operation
from sigtrace.core.sinks import Sink, labels_of

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
    "post_signal",
    "changed_fields",
    "values",
)


#: The key ``suppress_instrumentation()`` sets, and the plain one older instrumentations set (as
#: ``opentelemetry.instrumentation.utils.is_instrumentation_enabled`` reads both; here from one context lookup).
_SUPPRESSED = _SUPPRESS_INSTRUMENTATION_KEY
_SUPPRESSED_PLAIN = "suppress_instrumentation"


def instrumentation_suppressed() -> bool:
    """True inside ``suppress_instrumentation()`` (OpenTelemetry's own exporters use it)."""
    ctx = current_context()
    return bool(ctx.get(_SUPPRESSED) or ctx.get(_SUPPRESSED_PLAIN))


def error_type_of(error: BaseException) -> str:
    """``error.type`` of an exception: its class's qualified name, as OpenTelemetry's Python instrumentations use."""
    return type(error).__qualname__


class Engine:
    """Pairs starts with ends and reports each operation once to every sink."""

    def __init__(
        self,
        sinks: Sequence[tuple[str, Sink]],
        *,
        max_in_flight: int,
        orphan_timeout: float,
        exclude: Exclusions | None = None,
    ) -> None:
        #: (name, sink) in start order; ends go to them in the reverse order (the audit record first).
        self._starting = tuple(sinks)
        self._finishing = tuple(reversed(self._starting))
        #: The sinks told of a start: not those that say they do nothing then (``wants_started = False``,
        #: e.g. the audit sink): one Python call fewer per operation.
        self._on_start = tuple(sink for _kind, sink in self._starting if getattr(sink, "wants_started", True))
        #: Whether a write inside an open transaction waits for it: only if a sink reports what the database
        #: kept (the audit log, the operations count). Without one (spans only) a source mirrors no
        #: transaction: no listener, no patch, no lookup per write (decided once, at installation).
        self.holds_writes = any(getattr(sink, "wants_resolved", True) for _kind, sink in self._starting)
        self.exclude = exclude or Exclusions()
        self._excluding = bool(self.exclude)
        self.table = InFlightTable(max_in_flight, orphan_timeout, self._orphaned)
        #: The table's operations taken out and not yet reported (``InFlightTable.ending``): each is popped
        #: from it once its sinks ran, here, without a call of the table's.
        self._ending = self.table.ending
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._excluded = lru_cache(maxsize=4096)(self._compute_excluded)
        self._stale = StaleAttachments(max_in_flight)
        #: Its table itself (the same dict for the engine's life): ``if self._stale_spans`` is a C-level
        #: truth test where ``if self._stale`` was a call of ``StaleAttachments.__bool__``, twice per operation.
        self._stale_spans = self._stale.pending
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

    def close(self, timeout: float = 1.0) -> None:
        """Stop the reaper, end what is still in flight as orphans (reason ``uninstall``), and wait (up to
        ``timeout``) for the operations other threads are ending: their sinks run before the outputs close."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5.0)
            self._reaper = None
        for op in self.table.drain():
            self._orphaned(op, "uninstall")
        self.table.wait_ended(timeout)
        self._stale.close()

    # --- what sources call ---

    def enabled(self, source: str, model: str | None, name: str, signal: str | None = None) -> bool:
        """False under ``suppress_instrumentation`` or for an excluded source/model/operation/signal."""
        ctx = current_context()  # instrumentation_suppressed(), without its frame: read at every operation
        if ctx.get(_SUPPRESSED) or ctx.get(_SUPPRESSED_PLAIN):
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
        if self._stale_spans:
            self._stale.detach_current()
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
            self.start(op, activate=activate)
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

    def claim(
        self, key: Hashable, *, obj: object = None, signal: str | None = None, unexpected: bool = False
    ) -> Operation | None:
        """The entry scope's operation, if it waits for this pre signal's ``key``: claimed, no new operation.

        The cheap path of :meth:`begin` for the common case (a pre signal inside the library call
        its source wrapped): a source calls it first and builds an :class:`Operation` only when it
        returns ``None``. ``signal`` names the pre signal on the claimed operation. ``unexpected``:
        also a scope that waits for no key (the library makes the key inside the call, as PynamoDB
        its ``req_uuid``); the source has checked that this signal is its call's own.
        """
        scope = current_scope()
        if scope is None:
            return None
        own = scope.op
        if own is None or own.done or own.key is not None:
            return None
        expect = scope.expect
        if expect is None:
            if not unexpected:
                return None
        elif expect != key:
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
        pk: str | None = None,
        signal: str | None = None,
        audit: dict[str, Any] | None = None,
        **updates: Any,
    ) -> Operation | None:
        """An operation ends (post signal, or a failure the source observed). Unknown keys are ignored.

        ``pk``, ``signal``, ``audit`` and any other ``updates`` fill in the operation as
        :meth:`Operation.update` does (``None`` keeps what it had); the three a post signal usually
        tells are parameters of their own, set without ``update``'s loop.
        """
        if op is None:
            if key is None:
                return None
            op = self.table.pop(key, obj)
        elif op.key is not None:
            self.table.discard(op)
        if op is None:
            return None
        if op.done:
            self._ending.pop(id(op), None)
            return None
        if pk is not None:
            op.pk = pk
        if signal is not None:
            op.signal = signal
        if audit:
            op.audit.update(audit)
        if updates:
            op.update(**updates)
        self.finish(op, semconv.OUTCOME_ERROR if error is not None else outcome, error)
        return op

    def record_event(self, op: Operation) -> None:
        """A single signal with no pair: an event on the current span and an audit event (outcome ``ok``)."""
        if not self.enabled(op.source, op.model, op.name, op.signal):
            return
        op.actor = current_actor()
        op.outcome = semconv.OUTCOME_OK
        op.done = True
        op.span = trace.get_current_span()
        now = time.time_ns()
        for kind, sink in self._finishing:
            try:
                sink.event(op, now)
            except Exception as exc:  # noqa: BLE001 - each sink on its own
                safety.report(f"sink.{kind}", exc)

    def describe(self, op: Operation, **fields: Any) -> None:
        """Fill in fields of a running ``op`` that name it (``db_system``, ``namespace``, ``collection``...),
        learnt after it started; every sink moves what it keyed by the old ones (the in-flight count)."""
        before = labels_of(op)
        op.update(**fields)
        if op.done or not op.start_ns or labels_of(op) == before:
            return  # not running (not started yet, or ended): nothing keyed by the old labels
        for kind, sink in self._starting:
            try:
                sink.described(op, before)
            except Exception as exc:  # noqa: BLE001
                safety.report(f"sink.{kind}", exc)

    def lookup(self, key: Hashable) -> Operation | None:
        return self.table.get(key)

    def current(self, *, ended: bool = False) -> Operation | None:
        """The operation of the entry scope this code runs in: ``None`` without one, or once it ended
        (``ended=True``: that one too, e.g. for a second post signal of the same call).

        What a source's hook inside a wrapped call asks instead of reading the scope: the
        operation its own wrapper built, to add what only the library's internals tell.
        """
        scope = current_scope()
        if scope is None:
            return None
        op = scope.op
        return None if op is None or (op.done and not ended) else op

    def expecting(self) -> Hashable | None:
        """The ``expect`` of the entry scope this code runs in (also one whose operation is excluded)."""
        scope = current_scope()
        return None if scope is None else scope.expect

    def entry(self, op: Operation | None = None, *, expect: Hashable | None = None) -> EntryScope:
        """Scope a library entry point: ``op``'s span is current during the call, failures end it at once."""
        return EntryScope(self, op, expect)

    def start(self, op: Operation, *, activate: bool = False) -> Attachment | None:
        """Start ``op`` (clock, actor, every sink's ``started``). ``activate``: its span becomes current in
        this context until it ends here. Returns that attachment, if any (also kept as ``op.token``)."""
        op.start_ns = time.time_ns()
        op.start_monotonic = time.monotonic()
        op.actor = current_actor()
        for sink in self._on_start:
            sink.started(op)
        if activate and op.span is not None:
            attachment = op.token = attach(op.span)
            return attachment
        return None

    def finish(self, op: Operation, outcome: str, error: BaseException | None = None, *, untrack: bool = False) -> None:
        """End ``op`` once with ``outcome``: every sink's ``finished``, the audit record first.

        ``untrack``: also remove it from the in-flight table (a caller that did not pop it, such as
        an entry scope). A write inside an open transaction is held: its span and duration now, its
        audit event and count when the transaction ends (:meth:`_resolve`).
        """
        # Whatever the path, ``op`` is no longer being ended when this returns (InFlightTable.ending).
        try:
            # try/except rather than ``with safety.guard``: the same net, without two calls per block.
            try:
                if op.done:
                    return
                if untrack and op.key is not None:
                    self.table.discard(op)
                op.done = True
                op.outcome = outcome
                if error is not None:
                    op.error = error
                    # A source may have named the failure more precisely (a service's error code).
                    op.error_type = op.error_type or error_type_of(error)
                end_ns = time.time_ns()
                duration = time.monotonic() - op.start_monotonic
                if duration < 0.0:
                    duration = 0.0
                txn = op.transaction
                held = txn is not None and outcome == semconv.OUTCOME_OK
                op.held = held
            except Exception as exc:  # noqa: BLE001 - the safety net
                safety.report("engine.finish", exc)
                return
            # Each sink on its own: one that fails never keeps the others from reporting. An activated span is
            # still current while they run (the duration's exemplar is the operation's own span, as inside an
            # entry scope; see MetricSink.finished).
            for kind, sink in self._finishing:
                try:
                    sink.finished(op, end_ns, duration, held)
                except Exception as exc:  # noqa: BLE001
                    safety.report(f"sink.{kind}", exc)
            if op.token is not None:
                try:
                    if not detach(op.token):
                        self._remember_stale(op)  # covered by a newer one, or in another context
                    elif self._stale_spans:
                        self._stale.detach_current()  # an older one that ended first is now on top
                    op.token = None
                except Exception as exc:  # noqa: BLE001 - the safety net
                    safety.report("engine.finish", exc)
            if held:
                self._hold(op)
        finally:
            self._ending.pop(id(op), None)

    # --- internals ---

    def _hold(self, op: Operation) -> None:
        """Leave a held write's outcome to its transaction (reported now where that is no longer possible)."""
        try:
            txn = op.transaction
            if txn is not None and txn.hold(lambda outcome: self._resolve(op, outcome)):
                # Bounded like every in-flight operation: max_in_flight, orphan_timeout (then ``unknown``).
                self.table.add(("sigtrace.held", id(op)), op)
                return
            # The transaction ended before the write did: it shares the transaction's fate.
            outcome = txn.final_outcome if txn is not None else None
            self._resolve(op, outcome or semconv.OUTCOME_OK)
            return
        except Exception as exc:  # noqa: BLE001 - the safety net; the write is then reported at once
            safety.report("engine.hold", exc)
        self._resolve(op, semconv.OUTCOME_OK)

    def _resolve(self, op: Operation, outcome: str, orphan_reason: str | None = None) -> None:
        """A held write's transaction ended (or never will): its final outcome to every sink, once."""
        with self._held_lock:
            if not op.held:
                return  # resolved already (the reaper and a late commit may race)
            op.held = False
        self.table.discard(op)  # into InFlightTable.ending until its sinks ran (uninstall waits for them)
        try:
            op.outcome = outcome
            if orphan_reason is not None:
                op.orphaned = True
                op.audit["orphan_reason"] = orphan_reason
            for kind, sink in self._finishing:
                try:
                    sink.resolved(op)
                except Exception as exc:  # noqa: BLE001
                    safety.report(f"sink.{kind}", exc)
        finally:
            self._ending.pop(id(op), None)

    def _discard_started(self, op: Operation) -> None:
        """Undo :meth:`start` of a duplicate without reporting it."""
        op.done = True
        if op.token is not None:
            detach(op.token)
            op.token = None
        for kind, sink in self._finishing:
            try:
                sink.cancelled(op)
            except Exception as exc:  # noqa: BLE001
                safety.report(f"sink.{kind}", exc)

    def _orphaned(self, op: Operation, reason: str) -> None:
        if op.held:
            # Ended, but its transaction did not within orphan_timeout (or uninstall/overflow came first).
            self._resolve(op, semconv.OUTCOME_UNKNOWN, "transaction_timeout" if reason == "timeout" else reason)
            return
        op.orphaned = True
        op.audit["orphan_reason"] = reason
        if op.token is not None:
            # Attached in the context of the thread that sent the pre; resetting it from here is not
            # possible: that context detaches it at its next begin(), or close() does.
            self._remember_stale(op)
            op.token = None
        self.finish(op, semconv.OUTCOME_UNKNOWN, None)

    def _remember_stale(self, op: Operation) -> None:
        if op.span is not None and op.token is not None:
            self._stale.remember(op.span, op.token)


class EntryScope(Scope):
    """Context manager around one library call, and the :class:`Scope` it makes current; see ``core/context.py``."""

    __slots__ = ("_engine", "_scope_token", "_span_token")

    def __init__(self, engine: Engine, op: Operation | None, expect: Hashable | None) -> None:
        if op is not None and not engine.enabled(op.source, op.model, op.name, op.signal):
            op = None
        # Scope.__init__ spelled here (one frame fewer per entry call).
        self.op = op
        self.expect = expect
        self.ops: list[Operation] = []
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
                self._engine.start(op)
                if op.span is not None:
                    self._span_token = attach(op.span)
            self._scope_token = enter_scope(self)
        except Exception as exc:  # noqa: BLE001 - the safety net, as ``with safety.guard`` without its calls
            safety.report("engine.entry", exc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            own = self.op
            if self.ops:
                self._finish_pending(exc)
            elif own is not None and not own.done:  # the common case: only the call's own operation is open
                if exc is not None:
                    self._engine.finish(own, semconv.OUTCOME_ERROR, exc, untrack=True)
                else:
                    self._engine.finish(own, semconv.OUTCOME_OK, untrack=True)
            if self._span_token is not None:
                # A with-block restores its caller's context whatever was attached inside it
                # (detach(token, force=True), without its frame).
                token = self._span_token[0]
                token.var.reset(token)
            if self._scope_token is not None:
                exit_scope(self._scope_token)
        except Exception as failure:  # noqa: BLE001 - the safety net
            safety.report("engine.entry", failure)

    def _finish_pending(self, exc: BaseException | None) -> None:
        """End what the call left open: with its exception, or ``ok`` (it returned: it happened)."""
        engine = self._engine
        own = self.op
        pending = [own] if own is not None and not own.done else []
        pending.extend(op for op in self.ops if not op.done)
        # Newest first and the scope's own operation last: tokens are reset in the reverse order
        # of their attach, and no child span ends after its parent.
        for op in reversed(pending):
            if exc is not None:
                engine.finish(op, semconv.OUTCOME_ERROR, exc, untrack=True)
            else:
                # The call returned: it happened, even where no post signal said so.
                engine.finish(op, semconv.OUTCOME_OK, untrack=True)

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
