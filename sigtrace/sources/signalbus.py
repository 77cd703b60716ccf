"""Flask-SignalBus source: every message sent from the outbox, every flush run, and the trace context through it.

Flask-SignalBus sends no signals. Its "signals" are rows of models that define
``send_signalbus_message()`` (and optionally the class method ``send_signalbus_messages()``), sent
after each commit (autoflush, inside ``commit()``) or by ``SignalBus.flush`` / ``flushmany`` /
``flushordered`` (and the ``flask signalbus`` CLI, which calls them). So this source wraps:

- the run entry points ``SignalBus.flush``, ``flushmany``, ``flushordered`` and
  ``_after_commit_handler`` (autoflush): one parent span per run, named ``flush`` / ``flushmany`` /
  ``flushordered`` / ``autoflush`` (plus the table when the run covers one model), with the counts
  sent and left pending; runs are not audited themselves (their messages are);
- ``SignalBus._send_and_delete_signal_instances`` (the library's one send path of the flush kinds):
  counts, and the messages a failed send leaves pending (metric ``sigtrace.signalbus.messages.left_pending``);
- the model's own ``send_signalbus_message`` (span ``send {table}``, one audit event) and
  ``send_signalbus_messages`` (span ``BATCH send {table}`` with ``db.operation.batch.size``, the
  messages' pks as an attribute, their origins as links, one audit event per message). They are
  wrapped on the class that defines them, for models mapped before ``install()`` (found through
  SQLAlchemy's mapper registries), after it (``mapper_configured``), and, as a last resort, at the
  moment SignalBus is about to send them.

A send that raises ends its span as an ERROR at once (audit outcome ``error``). Autoflush then logs
the error, rolls back and returns (``commit()`` does not raise): the autoflush span is ended as an
ERROR too, and the rows it took are counted as left pending. The flush kinds let the exception
propagate to their caller (the CLI logs it and exits with status 1).

Trace context through the outbox: ``TraceContextMixin`` adds ``traceparent`` / ``tracestate``
columns filled when a row is created; the send span links to that context, so a trace viewer leads
from the request that created the row to the flush that sent it. ``inject_headers`` puts the
current context (the send span, inside ``send_signalbus_message``) into the outgoing message's
headers so that a consumer continues the trace.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any, Final

import wrapt
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.correlation import identity_key
from sigtrace.core.engine import error_type_of
from sigtrace.core.operation import Operation
from sigtrace.core.text import trace_id_hex
from sigtrace.sources.kit import FactsCache, ModelFacts, Source, database_of_url, pk_text
from sigtrace.sources.kit.sa_session import TRACKER

__all__ = [
    "ATTR_LEFT_PENDING",
    "ATTR_MODELS",
    "ATTR_PKS",
    "ATTR_SENT",
    "METRIC_LEFT_PENDING",
    "SignalBusSource",
    "TraceContextMixin",
    "extract_context",
    "inject_headers",
    "trace_context_of",
]

SOURCE: Final = "signalbus"

#: Counter of messages a run took from the outbox and left there because a send failed.
METRIC_LEFT_PENDING: Final = "sigtrace.signalbus.messages.left_pending"
#: Run span attributes: messages sent (and removed from the outbox) and left pending by the run.
ATTR_SENT: Final = "sigtrace.signalbus.messages.sent"
ATTR_LEFT_PENDING: Final = "sigtrace.signalbus.messages.left_pending"
#: Run span attribute: the signal models the run covers.
ATTR_MODELS: Final = "sigtrace.signalbus.models"
#: Batch span attribute: the pks of the batch's messages (at most :data:`MAX_BATCH_PKS`).
ATTR_PKS: Final = "sigtrace.signalbus.pks"
#: At most this many pks on a batch span: the cap of every source's pks lists.
MAX_BATCH_PKS: Final = semconv.MAX_AUDIT_PKS
#: At most this many links on a batch span (the SDK keeps 128 links by default).
MAX_BATCH_LINKS: Final = 128

_SEND: Final = "send_signalbus_message"
_SEND_BATCH: Final = "send_signalbus_messages"
_QUEUE_KEY: Final = "flask_signalbus__signals_to_flush"  # flask_signalbus.signalbus._SIGNALS_TO_FLUSH_SESSION_INFO_KEY


_W3C = TraceContextTextMapPropagator()
#: ``inject_headers`` is the application's call, not a hook of the installed source: its own guard.
_GUARD_INJECT: Final = safety.guard("source.signalbus.inject_headers")


class _Run:
    """What one flush run did; lives in a context variable set and reset by the same wrapper."""

    __slots__ = ("db_system", "dbs", "error", "kind", "left_pending", "sent")

    def __init__(self, kind: str, db_system: str | None) -> None:
        self.kind = kind
        self.db_system = db_system
        self.sent = 0
        self.left_pending = 0
        self.error: BaseException | None = None
        #: The database of each model's rows: the run's rows of a model share its session and bind.
        self.dbs: dict[type, tuple[str | None, str | None]] = {}


_RUN: ContextVar[_Run | None] = ContextVar("sigtrace_signalbus_run", default=None)
#: Set while a message or batch send is traced: a send nested in it (a batch implemented with
#: per-message sends, an override calling ``super()``) is part of it, not a second operation.
_SENDING: ContextVar[bool] = ContextVar("sigtrace_signalbus_sending", default=False)
#: What an excluded autoflush runs in instead of an entry scope (``as`` gives ``None``).
_UNTRACED: Final = contextlib.nullcontext()


# --- trace context through the outbox -------------------------------------------------------------


#: SQLAlchemy, imported once (the mixin's columns need it at import anyway). Through importlib: typed
#: as Any, as it must check against both SQLAlchemy 1.4 (no types) and 2.
_sa: Any = importlib.import_module("sqlalchemy")
_orm: Any = importlib.import_module("sqlalchemy.orm")
#: A mapped instance's state (what ``inspect(row)`` returns, without its lookup by type).
_instance_state: Callable[[Any], Any] = _orm.attributes.instance_state
#: What asking a session for its bind raises without an application context or a bind.
_NO_BIND: Final[tuple[type[BaseException], ...]] = (RuntimeError, _sa.exc.SQLAlchemyError)


def _context_columns() -> tuple[Any, Any]:
    return _sa.Column(_sa.String(55), nullable=True), _sa.Column(_sa.String(512), nullable=True)


def _capture_into(row: Any) -> None:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    if "traceparent" in carrier:
        row.traceparent = carrier["traceparent"]
        row.tracestate = carrier.get("tracestate") or None


class TraceContextMixin:
    """Opt-in mixin for signal models: the W3C trace context of the code that created the row.

    ``traceparent`` / ``tracestate`` columns, filled at construction from the current context
    (left alone if the caller passes them). The send span links to this context::

        class OrderShipped(TraceContextMixin, db.Model):
            id = db.Column(db.Integer, primary_key=True)
            def send_signalbus_message(self): ...
    """

    traceparent: Any
    tracestate: Any
    traceparent, tracestate = _context_columns()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init: Any = super().__init__
        init(*args, **kwargs)
        if getattr(self, "traceparent", None) is None:
            _capture_into(self)


def trace_context_of(row: Any) -> SpanContext | None:
    """The span context stored in a :class:`TraceContextMixin` row, if valid."""
    if not isinstance(row, TraceContextMixin):
        return None
    try:
        traceparent = row.traceparent
        tracestate = row.tracestate
    except Exception:  # noqa: BLE001 - an expired, deleted row: the send itself will tell
        return None
    if not traceparent:
        return None
    carrier = {"traceparent": str(traceparent)}
    if tracestate:
        carrier["tracestate"] = str(tracestate)
    span_context = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


def _origin_of(row: Any) -> SpanContext | None:
    """The context a send links to. None, without parsing it, where the row was created in the current
    trace (an autoflush inside its request): the send span is in that trace already, so no link."""
    if not isinstance(row, TraceContextMixin):
        return None
    try:
        traceparent = row.traceparent
    except Exception:  # noqa: BLE001 - an expired, deleted row: the send itself will tell
        return None
    current = trace.get_current_span().get_span_context()
    if current.is_valid and isinstance(traceparent, str) and traceparent[3:35] == trace_id_hex(current.trace_id):
        return None
    return trace_context_of(row)


def inject_headers(headers: MutableMapping[str, Any] | None = None) -> MutableMapping[str, Any]:
    """Put the current trace context into outgoing message headers (the global propagator: W3C by default).

    Inside ``send_signalbus_message`` the current span is sigtrace's send span, so a consumer that
    extracts these headers (``extract_context``) continues the trace of the send::

        def send_signalbus_message(self):
            channel.basic_publish(..., properties=pika.BasicProperties(headers=inject_headers({})))
    """
    if headers is None:
        headers = {}
    with _GUARD_INJECT:
        propagate.inject(headers)
    return headers


def extract_context(headers: Any) -> Context:
    """The trace context carried by a received message's headers (for the consumer's span parent)."""
    return propagate.extract(dict(headers or {}))


# --- model facts -----------------------------------------------------------------------------------


def _table_of(cls: type) -> str | None:
    name = getattr(cls, "__tablename__", None)
    if isinstance(name, str):
        return name
    table = getattr(getattr(cls, "__table__", None), "name", None)
    return table if isinstance(table, str) else None


def _pk_of(row: Any) -> str | None:
    """The row's primary key without loading anything (identity, else the pk attributes set)."""
    try:
        state = _instance_state(row)
    except Exception:  # noqa: BLE001 - not a mapped instance
        return None
    identity = state.identity
    if identity is None:
        values = [state.dict.get(prop.key) for prop in state.mapper.iterate_properties if _is_pk(state.mapper, prop)]
        if not values or any(value is None for value in values):
            return None
        identity = tuple(values)
    return pk_text(identity)  # a composite key: its parts joined by "|"


def _is_pk(mapper: Any, prop: Any) -> bool:
    columns: Any = getattr(prop, "columns", None) or ()
    return any(column in mapper.primary_key for column in columns)


def _database_of_bind(bind: Any) -> tuple[str | None, str | None]:
    url = getattr(bind, "url", None) or getattr(getattr(bind, "engine", None), "url", None)
    if url is not None:
        return database_of_url(url)
    dialect = getattr(getattr(bind, "dialect", None), "name", None)
    return (semconv.db_system_name(dialect), None) if isinstance(dialect, str) else (None, None)


#: Bind (engine or connection) -> its database, once per bind: rendering and parsing its URL was most of a
#: run's own work at every commit. An engine's URL is fixed for its life.
_BIND_DBS: Final[FactsCache[Any, tuple[str | None, str | None]]] = FactsCache(_database_of_bind)


def _db_of_bind(bind: Any) -> tuple[str | None, str | None]:
    """``db.system.name`` and ``db.namespace`` of an engine or connection (its engine's URL)."""
    if bind is None:
        return None, None
    return _BIND_DBS.cached(id(bind)) or _BIND_DBS(bind)  # (a tuple of two: never falsy)


def _db_of_row(row: Any) -> tuple[str | None, str | None]:
    try:
        session = _orm.object_session(row)
        if session is None:
            return None, None
        return _db_of_bind(session.get_bind(mapper=_sa.inspect(type(row))))
    except _NO_BIND:  # no application context, unbound session
        return None, None


def _db_of_send(row: Any) -> tuple[str | None, str | None]:
    """The database of a row being sent: looked up once per model per run, not once per row."""
    run = _RUN.get()
    if run is None:
        return _db_of_row(row)
    db = run.dbs.get(type(row))
    if db is None:
        db = run.dbs[type(row)] = _db_of_row(row)
    return db


def _db_of_bus(bus: Any) -> tuple[str | None, str | None]:
    try:
        return _db_of_bind(bus.db.engine)
    except (AttributeError, RuntimeError, _sa.exc.SQLAlchemyError):
        return None, None


def _is_signal_model(cls: Any) -> bool:
    return isinstance(cls, type) and hasattr(cls, _SEND)


def _mapped_classes() -> list[type]:
    """Every class mapped so far (SQLAlchemy's registries; private, hence the caution)."""
    mapperlib = getattr(_orm, "mapperlib", None)
    registries = getattr(mapperlib, "_mapper_registries", None)
    classes: list[type] = []
    for registry in list(registries or ()):
        for mapper in list(getattr(registry, "mappers", ())):
            cls = getattr(mapper, "class_", None)
            if isinstance(cls, type):
                classes.append(cls)
    return classes


# --- the source ------------------------------------------------------------------------------------


class SignalBusSource(Source):
    """Spans, metrics and audit events for the messages Flask-SignalBus sends.

    Its wrappers are its own, not :meth:`Source.entry`: each sets a context variable around the
    library call (the run that counts its sends, the send that contains nested ones) and counts
    what a failed call left pending before the call's scope ends the operation. Their hooks run
    under the kit's guards (``source.signalbus.<kind>``).
    """

    name = "signalbus"

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        self._lock = threading.Lock()
        self._instrumented: dict[str, weakref.WeakSet[type]] = {
            _SEND: weakref.WeakSet(),
            _SEND_BATCH: weakref.WeakSet(),
        }
        #: A model's name and table, looked up once; a signal model is instrumented on first sight.
        self._models: FactsCache[Any, ModelFacts] = FactsCache(self._learn)
        self._seq = itertools.count()
        self._left_pending: Any = None
        self._guard_send = self.guard("send")
        self._where_send = self._guard_send.kind

    def attach(self) -> None:
        module = importlib.import_module("flask_signalbus.signalbus")
        for kind in ("flush", "flushmany", "flushordered"):
            self.patch(module, f"SignalBus.{kind}", self._run_wrapper(kind))
        self.patch(module, "SignalBus._after_commit_handler", self._autoflush_wrapper)
        self.patch(module, "SignalBus._send_and_delete_signal_instances", self._chunk_wrapper)

        mapper_class = _orm.Mapper
        configured = self.receiver("mapper_configured", self._on_mapper_configured)
        _sa.event.listen(mapper_class, "mapper_configured", configured)
        self.on_detach(lambda: _sa.event.remove(mapper_class, "mapper_configured", configured))
        with self.guard("discover"):
            for cls in _mapped_classes():
                self.instrument_model(cls)

        if self.holds_writes:  # spans only: nothing waits for a commit (Engine.holds_writes), no session listener
            TRACKER.acquire()
            self.on_detach(TRACKER.release)

        if self.meter is not None:
            self._left_pending = self.meter.create_counter(
                METRIC_LEFT_PENDING,
                unit="{message}",
                description="Messages a Flask-SignalBus run took from the outbox and left there because a send failed.",
            )

    # --- model instrumentation ---

    def _on_mapper_configured(self, _mapper: Any, cls: Any) -> None:
        self.instrument_model(cls)

    def instrument_model(self, cls: Any) -> None:
        """Wrap the send methods of a signal model on the class that defines them (once; undone on detach)."""
        self._models(cls)

    def _learn(self, cls: Any) -> ModelFacts:
        """The facts of a model seen for the first time; a signal model's send methods are wrapped first."""
        if _is_signal_model(cls):
            self._wrap_sends(cls)
        return ModelFacts(getattr(cls, "__name__", None) or str(cls), _table_of(cls))

    def _wrap_sends(self, cls: type) -> None:
        for name, wrapper in ((_SEND, self._send_wrapper), (_SEND_BATCH, self._batch_wrapper)):
            owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
            if owner is None:
                continue
            with self._lock:
                done = self._instrumented[name]
                if owner in done:
                    continue
                original = vars(owner)[name]
                proxy = wrapt.FunctionWrapper(original, wrapper)
                setattr(owner, name, proxy)
                done.add(owner)
            self.on_detach(_restorer(owner, name, original, proxy))

    # --- runs ---

    def _run_op(
        self, kind: str, signal: str, models: Sequence[Any] | None, db: tuple[str | None, str | None]
    ) -> Operation:
        op = Operation(source=SOURCE, name=kind, db_system=db[0], namespace=db[1], signal=signal, audit_items=())
        if models is not None:
            facts = [self._models(model) for model in models]  # (instruments them: they are about to be sent)
            if len(facts) == 1:
                op.attributes[ATTR_MODELS] = [facts[0].model]
                op.model = facts[0].model
                op.collection = facts[0].collection
            else:
                op.attributes[ATTR_MODELS] = sorted({model.model for model in facts})
        return op

    def _run_wrapper(self, kind: str) -> Callable[..., Any]:
        engine = self.engine
        guard = self.guard(kind)

        def wrapper(wrapped: Callable[..., Any], bus: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            op = None
            with guard:
                models = args[0] if args else kwargs.get("models")
                if models is None:
                    models = bus.get_signal_models()
                elif not isinstance(models, list | tuple):
                    models = None  # an iterator: never consume the caller's argument
                op = self._run_op(kind, kind, models, _db_of_bus(bus))
            if op is None or _RUN.get() is not None:
                return wrapped(*args, **kwargs)
            run = _Run(kind, op.db_system)
            token = _RUN.set(run)
            try:
                with engine.entry(op):
                    try:
                        sent = wrapped(*args, **kwargs)
                    except BaseException:
                        with guard:
                            _set_counts(op, run)
                        raise
                    with guard:
                        if isinstance(sent, int):
                            run.sent = sent
                        _set_counts(op, run)
                    return sent
            finally:
                _RUN.reset(token)

        return wrapper

    def _autoflush_wrapper(
        self, wrapped: Callable[..., Any], bus: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        guard = self.guard("autoflush")
        op = None
        queued: list[Any] = []
        only: type | None = None
        db: tuple[str | None, str | None] = (None, None)
        with guard:
            session = args[0] if args else kwargs.get("session")
            info = getattr(session, "info", None)
            if bus.autoflush and isinstance(info, dict) and info.get(_QUEUE_KEY):
                queued = list(info[_QUEUE_KEY])
                models = list({type(row): None for row in queued})
                # One model (the usual commit): its bind is the one its sends use too, so they reuse it.
                only = models[0] if len(models) == 1 else None
                db = _db_of_bind(_bind_of(session, only))
                # Excluded (``operation:autoflush``, ``source:signalbus``, suppressed): no operation is built and
                # no scope entered; the run still counts what a failed send leaves pending. A model exclusion is
                # only known from the models: the entry scope checks that one.
                if self.engine.enabled(SOURCE, None, "autoflush", "after_commit"):
                    op = self._run_op("autoflush", "after_commit", models, db)
                else:
                    for model in models:
                        self._models(model)  # instruments a model first seen here, as _run_op does
        if not queued or _RUN.get() is not None:
            return wrapped(*args, **kwargs)
        run = _Run("autoflush", db[0])
        if only is not None:
            run.dbs[only] = db
        token = _RUN.set(run)
        try:
            with self.engine.entry(op) if op is not None else _UNTRACED as scope:
                try:
                    result = wrapped(*args, **kwargs)
                except BaseException as exc:
                    with guard:
                        self._count_left_pending(queued, run, exc)
                        run.left_pending = len(queued)
                        _set_counts(op, run)
                    raise
                with guard:
                    if run.error is not None:
                        # The library logged the failed send, rolled back and returned: every queued row stays.
                        self._count_left_pending(queued, run, run.error)
                        run.left_pending = len(queued)
                        run.sent = 0
                        _set_counts(op, run)
                        if scope is not None:
                            self.engine.end(op=scope.operation, error=run.error)
                    else:
                        run.sent = len(queued)
                        _set_counts(op, run)
                return result
        finally:
            _RUN.reset(token)

    def _chunk_wrapper(
        self, wrapped: Callable[..., Any], bus: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        guard = self.guard("chunk")
        model: Any = None
        instances: Any = ()
        with guard:
            model = args[0] if args else kwargs.get("model")
            instances = args[1] if len(args) > 1 else kwargs.get("instances", ())
            self._models(model)
        try:
            sent = wrapped(*args, **kwargs)
        except BaseException as exc:
            with guard:
                rows = list(instances) if isinstance(instances, list | tuple) else []
                run = _RUN.get()
                self._count_left_pending(rows, run, exc)
                if run is not None:
                    run.left_pending += len(rows)
            raise
        with guard:
            run = _RUN.get()
            if run is not None and isinstance(sent, int):
                run.sent += sent
        return sent

    def _count_left_pending(self, rows: Iterable[Any], run: _Run | None, error: BaseException) -> None:
        counter = self._left_pending
        if counter is None:
            return
        by_model: dict[type, int] = {}
        for row in rows:
            by_model[type(row)] = by_model.get(type(row), 0) + 1
        for model, count in by_model.items():
            attrs: dict[str, AttributeValue] = {
                semconv.SIGTRACE_SOURCE: SOURCE,
                semconv.ERROR_TYPE: error_type_of(error),
            }
            if run is not None:
                attrs[semconv.DB_OPERATION_NAME] = run.kind
                if run.db_system:
                    attrs[semconv.DB_SYSTEM_NAME] = run.db_system
            table = self._models(model).collection
            if table:
                attrs[semconv.DB_COLLECTION_NAME] = table
            counter.add(count, attrs)

    # --- sends ---

    def _send_wrapper(
        self, wrapped: Callable[..., Any], row: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        op = None
        origin: SpanContext | None = None
        # The safety net as try/except: what ``with self.guard("send")`` does, without its two calls.
        try:
            # (inside the net: even isinstance() raises on a weak proxy whose referent is gone)
            if not _SENDING.get() and row is not None and not isinstance(row, type):
                db = _db_of_send(row)
                op = self._models(type(row)).operation(
                    SOURCE, "send", db_system=db[0], namespace=db[1], pk=_pk_of(row), signal=_SEND
                )
                origin = _origin_of(row)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(self._where_send, exc)
        if op is None:
            return wrapped(*args, **kwargs)
        key = identity_key(row, "send", next(self._seq))
        return self._traced_send(wrapped, args, kwargs, op, key, row, () if origin is None else (origin,))

    def _batch_wrapper(
        self, wrapped: Callable[..., Any], cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        op = None
        origins: list[SpanContext] = []
        rows: list[Any] = []
        if not _SENDING.get():
            with self.guard("send_batch"):
                if args and not isinstance(args[0], list | tuple):
                    args = (list(args[0]), *args[1:])  # an iterator: hand the library the same items
                rows = list(args[0]) if args else []
                facts = self._models(cls if isinstance(cls, type) else type(cls))
                db = _db_of_send(rows[0]) if rows else (None, None)
                pks = [_pk_of(row) for row in rows]
                batch = len(rows) != 1
                op = facts.operation(
                    SOURCE,
                    "BATCH send" if batch else "send",
                    db_system=db[0],
                    namespace=db[1],
                    pk=None if batch else pks[0],
                    signal=_SEND_BATCH,
                    audit_items=[{"pk": pk, "model": type(row).__name__} for pk, row in zip(pks, rows, strict=True)]
                    if batch
                    else None,
                )
                if batch:
                    op.attributes[semconv.DB_OPERATION_BATCH_SIZE] = len(rows)
                    op.attributes[ATTR_PKS] = [pk or "" for pk in pks[:MAX_BATCH_PKS]]
                origins = [origin for origin in map(_origin_of, rows) if origin is not None]
        if op is None:
            return wrapped(*args, **kwargs)
        key = identity_key(rows, "send_batch", next(self._seq))
        return self._traced_send(wrapped, args, kwargs, op, key, None, origins, rows[0] if rows else None)

    def _traced_send(
        self,
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        op: Operation,
        key: Any,
        row: Any,
        origins: Sequence[SpanContext],
        subject: Any = None,
    ) -> Any:
        engine = self.engine
        guard = self._guard_send
        caller = trace.get_current_span() if origins else None
        sending = _SENDING.set(True)
        try:
            with engine.entry(op, expect=key) as scope:
                with guard:
                    if scope.operation is not None:
                        # In the in-flight table: a send that never returns is reaped as an orphan.
                        # (claim: begin's cheap path for the operation of the scope just entered.)
                        engine.claim(key, obj=row)
                        if origins:
                            span = trace.get_current_span()  # the send's own span, current in its scope
                            if span is not caller:
                                _link_origins(span, origins)
                try:
                    result = wrapped(*args, **kwargs)
                except BaseException as exc:
                    run = _RUN.get()
                    if run is not None and run.error is None:
                        run.error = exc
                    raise
                with guard:
                    traced = scope.operation
                    if traced is not None:
                        _hold_on_session(traced, row if row is not None else subject)
                return result
        finally:
            _SENDING.reset(sending)


def _hold_on_session(op: Operation, row: Any) -> None:
    """A sent message is done when the session that deletes its row commits: hold its audit event on that
    session's transaction (``sigtrace/sources/kit/sa_session.py``), so a rollback (a later send of the same
    autoflush failing, a failed commit) reports it ``rolled_back``: the row stays and it will be sent again."""
    if row is None:
        return
    session = _orm.object_session(row)
    txn = TRACKER.current(session)
    if txn is not None:
        op.transaction = txn


def _restorer(owner: type, name: str, original: Any, proxy: Any) -> Callable[[], None]:
    def restore() -> None:
        if vars(owner).get(name) is proxy:  # someone wrapped it on top of us: leave their wrapper in place
            setattr(owner, name, original)

    return restore


def _bind_of(session: Any, model: type | None = None) -> Any:
    """The session's engine, or the one it uses for ``model`` (a Flask-SQLAlchemy bind key may differ)."""
    try:
        return session.get_bind() if model is None else session.get_bind(mapper=_sa.inspect(model))
    except _NO_BIND:
        return None


def _set_counts(op: Operation | None, run: _Run) -> None:
    if op is None:
        return  # an excluded run: counted, not traced
    op.attributes[ATTR_SENT] = run.sent
    op.attributes[ATTR_LEFT_PENDING] = run.left_pending


def _link_origins(span: trace.Span, origins: Iterable[SpanContext]) -> None:
    """Link the send span to the contexts that created its rows (not to its own trace: it is there already)."""
    if not span.is_recording():
        return
    own = span.get_span_context().trace_id
    seen: set[tuple[int, int]] = set()
    for origin in origins:
        if origin.trace_id == own or (origin.trace_id, origin.span_id) in seen:
            continue
        seen.add((origin.trace_id, origin.span_id))
        if len(seen) > MAX_BATCH_LINKS:
            break
        span.add_link(origin)
