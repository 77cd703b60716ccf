"""ormar source: every lifecycle, relation and bulk signal of every model, plus the writes that send none.

How it attaches (see docs/sources/ormar.md for the per-operation table):

* **Signals** — ``ormar.signals.Signal.send`` is wrapped at class level. ormar creates a fresh
  ``SignalEmitter`` per model in its metaclass and keeps no registry, so a receiver connected per
  model would miss every model defined after ``install()``; the class-level wrapper sees every send
  of every model (defined before or after install, abstract-derived, proxy) and leaves the user's
  receiver lists untouched. It runs in the caller's task, before (pre signals) or after (post
  signals) ormar gathers the user's receivers, so it never runs in one of ormar's receiver tasks.
* **Parenting and failures** — ormar's own entry points (``Model.save/update/delete``, relation
  ``add/remove/clear``, ``QuerySet.update/delete/bulk_create/bulk_update``) run in the kit's entry
  wrappers: the operation span is a child of the caller's span and current for the whole call (the
  SQL spans of opentelemetry-instrumentation-sqlalchemy nest under it), the pre signal claims it
  (signal name, pk, changed fields) and an exception leaving the call ends it as an ERROR at once.
* **Writes without a signal** — ``QuerySet.update``/``delete`` and ``bulk_create`` send nothing; the
  entry wrappers alone give them a span and an audit event.

Correlation is by instance identity (``identity_key``), never by equality: ormar models
compare by value. Relation signals pass the owner as a ``weakref.proxy``; the wrapper and the
signal see the same proxy object, so they share a key.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sigtrace import semconv
from sigtrace._config import Options
from sigtrace.core.correlation import identity_key
from sigtrace.core.engine import Engine
from sigtrace.core.operation import Operation
from sigtrace.sources.kit import (
    ConnectionTransactions,
    Declarations,
    Entry,
    FactsCache,
    ModelFacts,
    Source,
    batch_audit,
    database_of_url,
    pk_text,
)

__all__ = ["CustomSignal", "OrmarSource", "trace_custom_signal", "trace_custom_signals"]

#: pre/post signal -> operation name, for the lifecycle signals of Model.save/update/delete.
_LIFECYCLE_PRE = {"pre_save": "save", "pre_update": "update", "pre_delete": "delete"}
_LIFECYCLE_POST = {"post_save": "save", "post_update": "update", "post_delete": "delete"}
#: operation name -> the post signal that ends it (``Operation.post_signal``: the span starts with it).
_POST_SIGNAL = {op_name: signal for signal, op_name in _LIFECYCLE_POST.items()}
_RELATION_PRE = {
    "pre_relation_add": semconv.OPERATION_RELATION_ADD,
    "pre_relation_remove": semconv.OPERATION_RELATION_REMOVE,
}
_RELATION_POST = {
    "post_relation_add": semconv.OPERATION_RELATION_ADD,
    "post_relation_remove": semconv.OPERATION_RELATION_REMOVE,
}
_BULK_UPDATE = "post_bulk_update"
BUILTIN_SIGNALS = frozenset((*_LIFECYCLE_PRE, *_LIFECYCLE_POST, *_RELATION_PRE, *_RELATION_POST, _BULK_UPDATE))
#: The built-in signals with nothing to do after their receivers.
_BUILTIN_PRE = frozenset((*_LIFECYCLE_PRE, *_RELATION_PRE))

Wrapped = Callable[..., Awaitable[Any]]


# --- custom signals (declared by the user; module-level so they work before or after install) ---


@dataclass(eq=False)
class CustomSignal:
    """A user-declared ormar signal (sent through a model's ``SignalEmitter``) that sigtrace traces.

    A single signal (``post is None``) becomes an event on the current span plus an audit event;
    a ``pre``/``post`` pair becomes an operation correlated by the identity of the ``instance``
    keyword argument (or the sender class when there is none).
    """

    pre: str
    post: str | None = None
    operation: str | None = None
    models: frozenset[str] | None = None
    write: bool = True

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models

    def untrace(self) -> None:
        """Stop tracing this signal."""
        _DECLARED.remove(self)


#: Every declared custom signal, by the signal names it answers to (read by the ``Signal.send`` wrapper).
_DECLARED: Declarations[CustomSignal] = Declarations()


def _declare(custom: CustomSignal) -> CustomSignal:
    names = (custom.pre,) if custom.post is None else (custom.pre, custom.post)
    for name in names:
        if name in BUILTIN_SIGNALS:
            raise ValueError(f"{name!r} is one of ormar's own signals; sigtrace traces it already")
    return _DECLARED.add(custom, names)


def _model_names(models: Iterable[Any] | None) -> frozenset[str] | None:
    if models is None:
        return None
    return frozenset(m if isinstance(m, str) else m.__name__ for m in models)


def trace_custom_signal(
    name: str, *, operation: str | None = None, models: Iterable[Any] | None = None, write: bool = True
) -> CustomSignal:
    """Trace a custom ormar signal (``Model.ormar_config.signals.<name>``) as an event plus an audit event.

    ``models`` narrows it to some model classes (or names). Works before or after ``install()``.
    """
    return _declare(CustomSignal(name, None, operation or name, _model_names(models), write))


def trace_custom_signals(
    pre: str, post: str, *, operation: str | None = None, models: Iterable[Any] | None = None, write: bool = True
) -> CustomSignal:
    """Trace a pair of custom ormar signals as one operation, from ``pre`` to ``post``."""
    default = pre[4:] if pre.startswith("pre_") else pre
    return _declare(CustomSignal(pre, post, operation or default, _model_names(models), write))


# --- model facts ---


@dataclass(frozen=True, slots=True)
class _Facts(ModelFacts):
    #: Relation name -> the facts of its operations: the owner's model, the table the rows are written in.
    relations: dict[str, ModelFacts] = field(default_factory=dict, compare=False, repr=False)


def _compute_facts(cls: Any) -> _Facts:
    config = getattr(cls, "ormar_config", None)
    database = getattr(config, "database", None)
    url = getattr(database, "url", None) if database is not None else None
    db_system, namespace = database_of_url(url, getattr(config, "schema", None)) if url else (None, None)
    return _Facts(getattr(cls, "__name__", str(cls)), getattr(config, "tablename", None), db_system, namespace)


_facts = FactsCache(_compute_facts)


def _relation_facts(owner_cls: Any, relation: str) -> ModelFacts:
    """A relation's operations: the owner's model, the table the rows are written in (through or child)."""
    facts = _facts(owner_cls)
    found = facts.relations.get(relation)
    if found is None:
        spec = getattr(getattr(owner_cls, "ormar_config", None), "model_fields", {}).get(relation)
        written = getattr(spec, "through" if getattr(spec, "is_multi", False) else "to", None)
        table = _facts(written) if written is not None else facts
        found = ModelFacts(facts.model, table.collection, table.db_system, table.namespace)
        facts.relations[relation] = found
    return found


def _compute_writable(cls: Any) -> tuple[int, frozenset[str]]:
    config = getattr(cls, "ormar_config", None)
    fields = getattr(config, "model_fields", None) or {}
    pkname = getattr(config, "pkname", None)
    writable = frozenset(
        name
        for name, spec in fields.items()
        if name != pkname and not getattr(spec, "virtual", False) and not getattr(spec, "is_multi", False)
    )
    return len(fields), writable


_writable = FactsCache(_compute_writable)


def _writable_fields(cls: Any) -> frozenset[str]:
    """The columns an update writes: every field but the pk, virtual (reverse) and many-to-many ones.

    Recomputed when the model's field count changes (ormar adds the reverse side of a relation to
    ``model_fields`` when a related model is declared later).
    """
    count, writable = _writable.cached(id(cls)) or _writable(cls)
    if count != len(getattr(getattr(cls, "ormar_config", None), "model_fields", None) or {}):
        _writable.forget(cls)
        count, writable = _writable(cls)
    return writable


def _class_of(instance: Any) -> Any:
    # ``__class__`` sees through a weakref.proxy (relation signals pass one); type() does not.
    return instance.__class__


@functools.cache
def _transaction_var() -> ContextVar[Any] | None:
    """ormar's "current transaction connection" variable, imported once (not at every operation)."""
    try:
        from ormar.databases.connection import _transaction_connection
    except ImportError:  # pragma: no cover - a future ormar
        return None
    return _transaction_connection


def _no_transaction() -> None:
    """``OrmarSource._transaction_connection`` for an ormar without the variable."""
    return None


class OrmarSource(Source):
    """Traces ormar 0.26: class-level ``Signal.send`` wrapper plus entry-point scopes."""

    name = "ormar"

    def __init__(self, engine: Engine, options: Options | None = None) -> None:
        super().__init__(engine, options)
        #: id(signal) -> its name in its model's ``SignalEmitter``, dropped with the signal (:meth:`_signal_name`):
        #: one dict ``get`` per send, where a ``WeakKeyDictionary`` ran two Python frames and built a weak reference.
        self._signal_names: dict[int, str] = {}
        self._signal_refs: dict[int, weakref.ReferenceType[Any]] = {}
        #: The connection of the ``database.transaction()`` this task is in (ormar sends every query there):
        #: the variable's own ``get`` (no Python frame).
        var = _transaction_var()
        self._transaction_connection: Callable[[], Any] = (
            var.get if var is not None and self.holds_writes else _no_transaction
        )
        self._transactions = ConnectionTransactions(self.name)
        self._signal_guard = self.guard("signal")
        self._transaction_guard = self.guard("transaction")

    def attach(self) -> None:
        import ormar  # noqa: F401 - fails early if the library is missing

        entry = self.async_entry
        model, relation, proxy, queryset = (
            "ormar.models.model",
            "ormar.relations.relation_proxy",
            "ormar.relations.querysetproxy",
            "ormar.queryset.queryset",
        )
        self.patch("ormar.signals.signal", "Signal.send", self._wrap_send)
        self.patch(model, "Model.save", entry("save", self._save_entry))
        self.patch(model, "Model.update", entry("update", self._update_entry))
        self.patch(model, "Model.delete", entry("delete", self._delete_entry))
        self.patch(relation, "RelationProxy.add", entry("relation_add", self._relation_add_entry, _after_add))
        self.patch(relation, "RelationProxy.remove", entry("relation_remove", self._relation_remove_entry))
        self.patch(proxy, "QuerysetProxy.clear", entry("relation_clear", self._relation_clear_entry, _rows_after))
        self.patch(queryset, "QuerySet.update", entry("queryset_update", self._queryset_update_entry, _rows_after))
        self.patch(queryset, "QuerySet.delete", entry("queryset_delete", self._queryset_delete_entry, _rows_after))
        self.patch(queryset, "QuerySet.bulk_create", entry("bulk_create", self._bulk_create_entry, _after_bulk_create))
        self.patch(queryset, "QuerySet.bulk_update", entry("bulk_update", self._bulk_update_entry))
        if self.holds_writes:  # spans only: nothing waits for a commit (Engine.holds_writes), nothing mirrored
            self.patch("ormar.databases.transaction", "Transaction.__aenter__", self._wrap_transaction_enter)
            self.patch("ormar.databases.transaction", "Transaction.__aexit__", self._wrap_transaction_exit)

    # --- transactions (ormar.databases.transaction.Transaction: one connection, savepoints inside) ---

    async def _wrap_transaction_enter(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = await wrapped(*args, **kwargs)
        with self._transaction_guard:
            connection = instance._connection
            database = instance._database
            if instance._force_rollback and getattr(database, "_global_transaction", None) is instance:
                # The whole-run transaction of ``DatabaseConnection(force_rollback=True)``, a test
                # database: not reported as one (docs/sources/ormar.md, "Transactions").
                pass
            elif connection is not None:
                self._transactions.begin(connection, instance)
        return result

    async def _wrap_transaction_exit(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        rollback = True
        connection: Any = None
        with self._transaction_guard:
            # What ormar's own __aexit__ decides: an exception, or force_rollback, rolls back.
            exc_type = args[0] if args else kwargs.get("exc_type")
            rollback = exc_type is not None or bool(instance._force_rollback)
            if instance._depth == 0:
                connection = instance._connection  # closed by ormar at the outermost exit
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            with self._transaction_guard:
                self._transactions.failed(instance, exc, committing=not rollback)
                if connection is not None:
                    self._transactions.close(connection)
            raise
        with self._transaction_guard:
            self._transactions.end(instance, committed=not rollback)
            if connection is not None:
                self._transactions.close(connection)  # anything still open on it never ended
        return result

    # --- building operations ---

    def _operation(self, facts: ModelFacts, name: str, **fields: Any) -> Operation:
        op = facts.operation(self.name, name, **fields)
        connection = self._transaction_connection()
        if connection is not None:
            # Reported when that transaction ends: ``ok`` at the outermost commit, else ``rolled_back``.
            op.transaction = self._transactions.current(connection)
        return op

    def _lifecycle_operation(self, instance: Any, name: str, signal: str) -> Operation:
        """The ``save``/``update``/``delete`` of one instance, as :meth:`_operation` builds it.

        Every write of every model comes here: one constructor call with every field (not
        ``ModelFacts.operation``'s setattr loop), the facts read without a Python frame, and the
        post signal that will end it named at the start (the span's end then sets no attribute).
        """
        cls = instance.__class__  # sees through a weakref.proxy, as _class_of
        facts = _facts.cached(id(cls)) or _facts(cls)
        connection = self._transaction_connection()
        return facts.operation(
            self.name,
            name,
            pk=pk_text(instance.pk),
            signal=signal,
            post_signal=_POST_SIGNAL[name],
            # Reported when that transaction ends: ``ok`` at the outermost commit, else ``rolled_back``.
            transaction=self._transactions.current(connection) if connection is not None else None,
        )

    # --- Model entry points ---

    def _save_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        return self._lifecycle_operation(instance, "save", "pre_save"), (id(instance), "save")  # identity_key

    def _update_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        op = self._lifecycle_operation(instance, "update", "pre_update")
        columns = args[0] if args else kwargs.get("_columns")
        passed = {k: v for k, v in kwargs.items() if k != "_columns"} if "_columns" in kwargs else kwargs
        self._describe_update(op, instance, passed, columns)
        return op, (id(instance), "update")  # identity_key(instance, "update")

    def _delete_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        return self._lifecycle_operation(instance, "delete", "pre_delete"), (id(instance), "delete")  # identity_key

    def _describe_update(
        self, op: Operation, instance: Any, passed: Mapping[str, Any], columns: Iterable[str] | None
    ) -> None:
        """Changed fields (and values, if captured) of an instance update."""
        op.changed_fields = _changed_fields(instance, passed, columns)
        if _inferred(instance, passed):
            op.audit["changed_fields_inferred"] = True
        if self.capture_values:
            op.values = _values_of(instance, op.changed_fields, passed)

    # --- relations (the span names the table written: the through table, or the child's) ---

    def _relation_operation(
        self, name: str, owner: Any, relation: str, related: Any, signal: str | None, child: Any = None
    ) -> Operation:
        related_model = getattr(related, "__name__", str(related))
        op = self._operation(
            _relation_facts(_class_of(owner), relation),
            name,
            pk=pk_text(owner.pk),
            signal=signal,
            attributes={semconv.SIGTRACE_RELATION_NAME: relation, semconv.SIGTRACE_RELATION_MODEL: related_model},
            audit={semconv.AUDIT_RELATION: relation, semconv.AUDIT_RELATED_MODEL: related_model},
        )
        if child is not None:
            _fill_related_pk(op, child)
        return op

    def _relation_add_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        return self._relation_entry(semconv.OPERATION_RELATION_ADD, instance, _item(args, kwargs))

    def _relation_remove_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        return self._relation_entry(semconv.OPERATION_RELATION_REMOVE, instance, _item(args, kwargs))

    def _relation_entry(self, name: str, proxy: Any, item: Any) -> Entry:
        owner, relation = proxy._owner, proxy.field_name
        op = self._relation_operation(name, owner, relation, _class_of(item), f"pre_{name}", item)
        return op, identity_key(owner, name, relation, id(item))

    def _relation_clear_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        op = self._relation_operation(
            semconv.OPERATION_RELATION_CLEAR, instance._owner, instance.relation.field_name, instance.to, None
        )
        return op, None

    # --- query-set writes (no signal, or only post_bulk_update) ---

    def _queryset_update_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        model = instance.model
        own = set(model.extract_db_own_fields()) | set(model.extract_related_names())
        passed = {k: v for k, v in kwargs.items() if k in own}
        op = self._operation(_facts(model), semconv.OPERATION_UPDATE, audit=self._filter_audit(instance))
        op.changed_fields = sorted(passed)
        if self.capture_values:
            op.values = passed
        return op, None

    def _queryset_delete_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        if args or any(k != "each" for k in kwargs):
            return None  # ormar re-enters delete() on ``self.filter(*args, **kwargs)``: that inner call is traced
        op = self._operation(_facts(instance.model), semconv.OPERATION_DELETE, audit=self._filter_audit(instance))
        return op, None

    def _bulk_create_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        objects = _objects(args, kwargs)
        op = self._bulk_operation(semconv.OPERATION_BULK_CREATE, instance.model, objects, None, pks=False)
        return op, identity_key(objects, "bulk_create")

    def _bulk_update_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        objects = _objects(args, kwargs)
        op = self._bulk_operation(semconv.OPERATION_BULK_UPDATE, instance.model, objects, _BULK_UPDATE)
        columns = args[1] if len(args) > 1 else kwargs.get("columns")
        if columns:
            op.changed_fields = sorted(str(c) for c in columns)
        return op, identity_key(objects, "bulk_update")

    def _bulk_operation(
        self, name: str, model: Any, objects: Any, signal: str | None, *, pks: bool = True
    ) -> Operation:
        items = list(objects or ())
        op = self._operation(
            _facts(model),
            name,
            signal=signal,
            attributes={semconv.DB_OPERATION_BATCH_SIZE: len(items)},
            audit={semconv.AUDIT_BATCH_SIZE: len(items)},
        )
        if pks:
            _bulk_pks(op, items)
        return op

    def _filter_audit(self, queryset: Any) -> dict[str, Any]:
        """The query set's WHERE clause as SQL text with placeholders (never the bound values)."""
        with self.guard("filter"):
            from ormar.queryset.queries.filter_query import FilterQuery

            expr = FilterQuery(filter_clauses=queryset.filter_clauses).apply(queryset.table.delete())
            expr = FilterQuery(filter_clauses=queryset.exclude_clauses, exclude=True).apply(expr)
            where = expr.whereclause
            if where is not None:
                return {semconv.AUDIT_FILTER: str(where)}
        return {}

    # --- signals ---

    def _signal_name(self, signal: Any, sender: Any) -> str | None:
        """The name of ``signal`` in ``sender``'s ``SignalEmitter`` (found once per signal; see ``_signal_names``)."""
        emitter = getattr(getattr(sender, "ormar_config", None), "signals", None)
        if not isinstance(emitter, dict):
            return None
        for name, candidate in emitter.items():
            if candidate is signal:
                self._remember_signal(signal, str(name))
                return str(name)
        return None

    def _remember_signal(self, signal: Any, name: str) -> None:
        """Keep ``signal``'s name by ``id``, dropped by a weak reference's callback before that id can be reused."""
        names, refs, ident = self._signal_names, self._signal_refs, id(signal)

        def drop(ref: weakref.ReferenceType[Any]) -> None:
            if refs.get(ident) is ref:
                del refs[ident]
                names.pop(ident, None)

        refs[ident] = weakref.ref(signal, drop)
        names[ident] = name

    def _wrap_send(self, wrapped: Wrapped, signal: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Every ``Signal.send``: a plain function returning the coroutine to await.

        A built-in pre signal is handled here, as the call is made (ormar awaits each send where it
        makes it), and the library's own coroutine is returned: no coroutine frame of sigtrace's
        around the receivers. Anything with work after the receivers (a post signal, a custom
        signal) is awaited in :meth:`_send`.
        """
        name = self._signal_names.get(id(signal))
        sender = kwargs.get("sender", args[0] if args else None)
        if name is None:
            with self._signal_guard:
                name = self._signal_name(signal, sender)
            if name is None:
                return wrapped(*args, **kwargs)
        payload = kwargs if "sender" in kwargs else {**kwargs, "sender": sender}
        if name in _BUILTIN_PRE:
            with self._signal_guard:
                self._before_receivers(name, payload)
            return wrapped(*args, **kwargs)
        if not getattr(signal, "_receivers", True) and name in BUILTIN_SIGNALS:
            # A built-in post signal nobody else receives: no receiver can fail it, so it ends the operation
            # here, where ormar makes the send it awaits at once, and the library's coroutine is returned
            # (no coroutine of :meth:`_send` around an empty gather).
            with self._signal_guard:
                self._after_receivers(name, payload)
            return wrapped(*args, **kwargs)
        return self._send(wrapped, args, kwargs, name, payload)

    async def _send(
        self, wrapped: Wrapped, args: tuple[Any, ...], kwargs: dict[str, Any], name: str, payload: Mapping[str, Any]
    ) -> Any:
        custom = name not in BUILTIN_SIGNALS  # a built-in post signal has nothing to do before its receivers
        if custom:
            with self._signal_guard:
                self._custom_before(name, payload)
        result = await wrapped(*args, **kwargs)
        # After the user's receivers returned: a raising receiver fails the call (and the
        # operation, through the entry scope) instead of being reported as a success.
        with self._signal_guard:
            if custom:
                self._custom_after(name, payload)
            else:
                self._after_receivers(name, payload)
        return result

    def _before_receivers(self, name: str, kw: Mapping[str, Any]) -> None:
        """A built-in pre signal (``_BUILTIN_PRE``), before its receivers."""
        op_name = _LIFECYCLE_PRE.get(name)
        if op_name is not None:
            instance = kw.get("instance")
            # ``emit_parent_signals`` re-sends a proxy model's signal to its ancestors: traced once.
            if instance is None or kw["sender"] is not instance.__class__:
                return
            key: Hashable = (id(instance), op_name)  # identity_key(instance, op_name)
            if self.engine.claim(key, obj=instance, signal=name) is not None:
                return  # the entry wrapper's operation: it knows the pk and the changed fields already
            target = self.engine.begin(self._lifecycle_operation(instance, op_name, name), key, obj=instance)
            if target is not None and op_name == "update" and target.changed_fields is None:
                self._describe_update(target, instance, kw.get("passed_args") or {}, None)
        elif name in _RELATION_PRE:
            instance, child, relation = kw.get("instance"), kw.get("child"), kw.get("relation_name")
            if instance is None or child is None:
                return
            op_name = _RELATION_PRE[name]
            key = identity_key(instance, op_name, relation, id(child))
            claimed = self.engine.claim(key, signal=name)
            if claimed is not None:
                _fill_related_pk(claimed, child)
                return
            self.engine.begin(
                self._relation_operation(op_name, instance, str(relation), _class_of(child), name, child), key
            )

    def _after_receivers(self, name: str, kw: Mapping[str, Any]) -> None:
        """A built-in post signal, after its receivers returned."""
        sender = kw["sender"]
        op_name = _LIFECYCLE_POST.get(name)
        if op_name is not None:
            instance = kw.get("instance")
            if instance is None or sender is not instance.__class__:  # an ancestor's echo (emit_parent_signals)
                return
            key: Hashable = (id(instance), op_name)  # identity_key(instance, op_name)
            self.engine.end(key, obj=instance, signal=name, pk=pk_text(instance.pk))
        elif name in _RELATION_POST:
            instance, child, relation = kw.get("instance"), kw.get("child"), kw.get("relation_name")
            if instance is None or child is None:
                return
            op_name = _RELATION_POST[name]
            key = identity_key(instance, op_name, relation, id(child))
            op = self.engine.lookup(key)
            if op is not None:
                _fill_related_pk(op, child)
            self.engine.end(key, signal=name)
        elif name == _BULK_UPDATE:
            instances = kw.get("instances")
            key = identity_key(instances, "bulk_update")
            op = self._bulk_operation(semconv.OPERATION_BULK_UPDATE, sender, instances, name)
            if self.engine.begin(op, key) is not None:
                self.engine.end(key, signal=name)

    def _custom_before(self, name: str, kw: Mapping[str, Any]) -> None:
        sender = kw["sender"]
        model = getattr(sender, "__name__", None)
        for custom in _DECLARED.get(name):
            if model is not None and not custom.applies_to(model):
                continue
            instance = kw.get("instance")
            pk = pk_text(getattr(instance, "pk", None)) if instance is not None else None
            op = self._operation(_facts(sender), custom.operation or name, pk=pk, signal=name, write=custom.write)
            if custom.post is None:
                self.engine.record_event(op)
            elif name == custom.pre:
                subject = instance if instance is not None else sender
                self.engine.begin(op, (id(custom), *identity_key(subject)), obj=subject)

    def _custom_after(self, name: str, kw: Mapping[str, Any]) -> None:
        sender = kw["sender"]
        model = getattr(sender, "__name__", None)
        for custom in _DECLARED.get(name):
            if custom.post != name or (model is not None and not custom.applies_to(model)):
                continue
            instance = kw.get("instance")
            subject = instance if instance is not None else sender
            self.engine.end((id(custom), *identity_key(subject)), obj=subject, signal=name)


# --- helpers ---


def _changed_fields(instance: Any, passed: Mapping[str, Any], columns: Iterable[str] | None) -> list[str]:
    """Fields an update writes that the caller changed: ``update(**kwargs)`` plus the attributes ormar
    saw being set (it tracks them only for models with ``onupdate`` fields). When neither says
    anything, ormar writes every column: those are reported (an audit marks them as inferred)."""
    writable = _writable_fields(_class_of(instance))
    explicit = (set(getattr(instance, "__setattr_fields__", ()) or ()) | set(passed)) & writable
    if not explicit:
        explicit = set(writable)
    if columns:
        explicit &= set(columns)
    return sorted(explicit)


def _inferred(instance: Any, passed: Mapping[str, Any]) -> bool:
    return not passed and not getattr(instance, "__setattr_fields__", None)


def _values_of(instance: Any, names: Iterable[str] | None, passed: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in names or ():
        values[name] = passed[name] if name in passed else getattr(instance, name, None)
    return values


def _fill_related_pk(op: Operation, child: Any) -> None:
    """The one related row of an add/remove: ``sigtrace.relation.pk``, audit ``related_pks`` (once known)."""
    pk = pk_text(getattr(child, "pk", None))
    if pk is not None and semconv.SIGTRACE_RELATION_PK not in op.attributes:
        op.attributes[semconv.SIGTRACE_RELATION_PK] = pk
        op.audit[semconv.AUDIT_RELATED_PKS] = [pk]


def _bulk_pks(op: Operation, objects: Iterable[Any]) -> None:
    op.audit.update(batch_audit(getattr(obj, "pk", None) for obj in objects))


def _item(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The child of ``RelationProxy.add/remove(item)``."""
    return args[0] if args else kwargs.get("item")


def _objects(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The models of ``QuerySet.bulk_create/bulk_update(objects, ...)``."""
    return args[0] if args else kwargs.get("objects")


def _after_add(op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
    # The child of a reverse-FK add is saved inside the call: its pk is known only now.
    _fill_related_pk(op, _item(args, kwargs))


def _after_bulk_create(
    op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
) -> None:
    # ormar sets no autoincrement key on the objects: only those the caller gave are known.
    _bulk_pks(op, _objects(args, kwargs) or ())


def _rows_after(op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
    """``rows``: what a query-set write or a relation clear returned (the number of rows)."""
    if isinstance(result, int) and not isinstance(result, bool):
        op.audit[semconv.AUDIT_ROWS] = result
        op.attributes[semconv.SIGTRACE_ROWS_AFFECTED] = result
