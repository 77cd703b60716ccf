"""ormar source: every lifecycle, relation and bulk signal of every model, plus the writes that send none.

How it attaches (see docs/sources/ormar.md for the per-operation table):

* **Signals** — ``ormar.signals.Signal.send`` is wrapped at class level. ormar creates a fresh
  ``SignalEmitter`` per model in its metaclass and keeps no registry, so a receiver connected per
  model would miss every model defined after ``install()``; the class-level wrapper sees every send
  of every model (defined before or after install, abstract-derived, proxy) and leaves the user's
  receiver lists untouched. It runs in the caller's task, before (pre signals) or after (post
  signals) ormar gathers the user's receivers, so it never runs in one of ormar's receiver tasks.
* **Parenting and failures** — ormar's own entry points (``Model.save/update/delete``, relation
  ``add/remove/clear``, ``QuerySet.update/delete/bulk_create/bulk_update``) are wrapped in the core's
  ``Engine.entry`` scope: the operation span is a child of the caller's span, it is current for
  the whole call (the SQL spans of opentelemetry-instrumentation-sqlalchemy nest under it), the pre
  signal claims it (signal name, pk, changed fields) and an exception leaving the call — a
  constraint violation, a user receiver raising — ends it as an ERROR at once.
* **Writes without a signal** — ``QuerySet.update``/``delete`` and ``bulk_create`` send nothing; the
  entry wrappers alone give them a span and an audit event.

Correlation is by instance identity (``identity_key``), never by equality: ormar models
compare by value. Relation signals pass the owner as a ``weakref.proxy``; the wrapper and the
signal see the same proxy object, so they share a key.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.util.types import AttributeValue

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.correlation import identity_key
from sigtrace.core.engine import EntryScope
from sigtrace.core.operation import Operation
from sigtrace.sources.kit import Source
from sigtrace.sources.kit.transactions import ConnectionTransactions

__all__ = [
    "RELATED_MODEL",
    "RELATED_PK",
    "RELATION_NAME",
    "CustomSignal",
    "OrmarSource",
    "trace_custom_signal",
    "trace_custom_signals",
]

#: Span attributes of relation operations (the owner is ``sigtrace.model`` / ``sigtrace.pk``).
RELATION_NAME = "sigtrace.relation.name"
RELATED_MODEL = "sigtrace.relation.model"
RELATED_PK = "sigtrace.relation.pk"

#: pre/post signal -> operation name, for the lifecycle signals of Model.save/update/delete.
_LIFECYCLE_PRE = {"pre_save": "save", "pre_update": "update", "pre_delete": "delete"}
_LIFECYCLE_POST = {"post_save": "save", "post_update": "update", "post_delete": "delete"}
_RELATION_PRE = {"pre_relation_add": "relation_add", "pre_relation_remove": "relation_remove"}
_RELATION_POST = {"post_relation_add": "relation_add", "post_relation_remove": "relation_remove"}
_BULK_UPDATE = "post_bulk_update"
BUILTIN_SIGNALS = frozenset((*_LIFECYCLE_PRE, *_LIFECYCLE_POST, *_RELATION_PRE, *_RELATION_POST, _BULK_UPDATE))

#: At most this many primary keys are listed in the audit event of a bulk operation.
MAX_AUDIT_PKS = 100


Wrapped = Callable[..., Awaitable[Any]]
#: What an entry wrapper knows before the call: the operation and the key its pre signal will carry.
Entry = tuple[Operation, Hashable | None]
#: Builds the :data:`Entry` of one call from ``(instance, args, kwargs)`` of the wrapped method.
Build = Callable[[Any, tuple[Any, ...], dict[str, Any]], Entry]
#: Fills in what only the call's result tells: ``(operation, instance, args, kwargs, result)``.
After = Callable[[Operation, Any, tuple[Any, ...], dict[str, Any], Any], None]

_ENTRY_KINDS = (
    "save",
    "update",
    "delete",
    "relation_add",
    "relation_remove",
    "relation_clear",
    "queryset_update",
    "queryset_delete",
    "bulk_create",
    "bulk_update",
)
# Guards are stateless: one instance per kind, not one per call.
_GUARD_BUILD = {kind: safety.guard(f"source.ormar.{kind}") for kind in _ENTRY_KINDS}
_GUARD_AFTER = {kind: safety.guard(f"source.ormar.{kind}.after") for kind in _ENTRY_KINDS}
_GUARD_SIGNAL = safety.guard("source.ormar.signal")
_GUARD_TRANSACTION = safety.guard("source.ormar.transaction")


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
    _names: tuple[str, ...] = field(default=(), repr=False)

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models

    def untrace(self) -> None:
        """Stop tracing this signal."""
        with _custom_lock:
            for name in self._names:
                declared = _custom.get(name)
                if declared is not None and self in declared:
                    declared.remove(self)
                    if not declared:
                        del _custom[name]


_custom_lock = threading.Lock()
_custom: dict[str, list[CustomSignal]] = {}


def _model_names(models: Iterable[Any] | None) -> frozenset[str] | None:
    if models is None:
        return None
    return frozenset(m if isinstance(m, str) else m.__name__ for m in models)


def _declare(custom: CustomSignal) -> CustomSignal:
    names = (custom.pre,) if custom.post is None else (custom.pre, custom.post)
    for name in names:
        if name in BUILTIN_SIGNALS:
            raise ValueError(f"{name!r} is one of ormar's own signals; sigtrace traces it already")
    custom._names = names
    with _custom_lock:
        for name in names:
            _custom.setdefault(name, []).append(custom)
    return custom


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


def _custom_for(name: str) -> list[CustomSignal]:
    if name not in _custom:  # the common case, without the lock (a dict lookup is atomic)
        return []
    with _custom_lock:
        return list(_custom.get(name, ()))


# --- model facts ---


@dataclass(frozen=True, slots=True)
class _ModelInfo:
    model: str
    collection: str | None
    db_system: str | None
    namespace: str | None


_info_cache: weakref.WeakKeyDictionary[type, _ModelInfo] = weakref.WeakKeyDictionary()


def _model_info(cls: Any) -> _ModelInfo:
    try:
        return _info_cache[cls]
    except (KeyError, TypeError):
        pass
    config = getattr(cls, "ormar_config", None)
    collection = getattr(config, "tablename", None)
    schema = getattr(config, "schema", None)
    db_system: str | None = None
    namespace: str | None = None
    database = getattr(config, "database", None)
    url = getattr(database, "url", None) if database is not None else None
    if url:
        from sqlalchemy.engine import make_url

        parsed = make_url(str(url))
        backend = parsed.get_backend_name()
        db_system = semconv.db_system_name(backend)
        if db_system != "sqlite" and parsed.database:
            namespace = f"{parsed.database}|{schema}" if schema else parsed.database
    info = _ModelInfo(getattr(cls, "__name__", str(cls)), collection, db_system, namespace)
    with contextlib.suppress(TypeError):
        _info_cache[cls] = info
    return info


def _pk_text(value: Any) -> str | None:
    return None if value is None else str(value)


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


def _transaction_connection() -> Any:
    """The connection of the ``database.transaction()`` this task is in (ormar sends every query there)."""
    var = _transaction_var()
    return None if var is None else var.get()


_writable_cache: weakref.WeakKeyDictionary[type, tuple[int, frozenset[str]]] = weakref.WeakKeyDictionary()


def _writable_fields(cls: Any) -> frozenset[str]:
    """The columns an update writes: every field but the pk, virtual (reverse) and many-to-many ones.

    Cached per model and recomputed when the model's field count changes (ormar adds the reverse
    side of a relation to ``model_fields`` when a related model is declared later).
    """
    config = getattr(cls, "ormar_config", None)
    fields = getattr(config, "model_fields", None) or {}
    try:
        count, writable = _writable_cache[cls]
        if count == len(fields):
            return writable
    except (KeyError, TypeError):
        pass
    pkname = getattr(config, "pkname", None)
    writable = frozenset(
        name
        for name, spec in fields.items()
        if name != pkname and not getattr(spec, "virtual", False) and not getattr(spec, "is_multi", False)
    )
    with contextlib.suppress(TypeError):
        _writable_cache[cls] = (len(fields), writable)
    return writable


class OrmarSource(Source):
    """Traces ormar 0.26: class-level ``Signal.send`` wrapper plus entry-point scopes."""

    name = "ormar"

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        self._signal_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._transactions = ConnectionTransactions(self.name)

    @property
    def _capture_values(self) -> bool:
        return bool(getattr(self.options, "capture_values", False))

    def attach(self) -> None:
        import ormar  # noqa: F401 - fails early if the library is missing

        self.patch("ormar.signals.signal", "Signal.send", self._wrap_send)
        self.patch("ormar.models.model", "Model.save", self._wrap_save)
        self.patch("ormar.models.model", "Model.update", self._wrap_update)
        self.patch("ormar.models.model", "Model.delete", self._wrap_delete)
        self.patch("ormar.relations.relation_proxy", "RelationProxy.add", self._wrap_relation_add)
        self.patch("ormar.relations.relation_proxy", "RelationProxy.remove", self._wrap_relation_remove)
        self.patch("ormar.relations.querysetproxy", "QuerysetProxy.clear", self._wrap_relation_clear)
        self.patch("ormar.queryset.queryset", "QuerySet.update", self._wrap_queryset_update)
        self.patch("ormar.queryset.queryset", "QuerySet.delete", self._wrap_queryset_delete)
        self.patch("ormar.queryset.queryset", "QuerySet.bulk_create", self._wrap_bulk_create)
        self.patch("ormar.queryset.queryset", "QuerySet.bulk_update", self._wrap_bulk_update)
        self.patch("ormar.databases.transaction", "Transaction.__aenter__", self._wrap_transaction_enter)
        self.patch("ormar.databases.transaction", "Transaction.__aexit__", self._wrap_transaction_exit)

    # --- transactions (ormar.databases.transaction.Transaction: one connection, savepoints inside) ---

    async def _wrap_transaction_enter(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = await wrapped(*args, **kwargs)
        with _GUARD_TRANSACTION:
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
        with _GUARD_TRANSACTION:
            # What ormar's own __aexit__ decides: an exception, or force_rollback, rolls back.
            exc_type = args[0] if args else kwargs.get("exc_type")
            rollback = exc_type is not None or bool(instance._force_rollback)
            if instance._depth == 0:
                connection = instance._connection  # closed by ormar at the outermost exit
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            with _GUARD_TRANSACTION:
                self._transactions.failed(instance, exc, committing=not rollback)
                if connection is not None:
                    self._transactions.close(connection)
            raise
        with _GUARD_TRANSACTION:
            self._transactions.end(instance, committed=not rollback)
            if connection is not None:
                self._transactions.close(connection)  # anything still open on it never ended
        return result

    # --- building operations ---

    def _operation(
        self,
        name: str,
        cls: Any,
        *,
        pk: Any = None,
        signal: str | None = None,
        write: bool = True,
        attributes: dict[str, AttributeValue] | None = None,
        audit: dict[str, Any] | None = None,
    ) -> Operation:
        info = _model_info(cls)
        op = Operation(
            source=self.name,
            name=name,
            model=info.model,
            collection=info.collection,
            db_system=info.db_system,
            namespace=info.namespace,
            pk=_pk_text(pk),
            signal=signal,
            write=write,
            attributes=attributes or {},
            audit=audit or {},
        )
        connection = _transaction_connection()
        if connection is not None:
            # Reported when that transaction ends: ``ok`` at the outermost commit, else ``rolled_back``.
            op.transaction = self._transactions.current(connection)
        return op

    async def _scoped(
        self,
        kind: str,
        build: Build,
        wrapped: Wrapped,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        after: After | None = None,
    ) -> Any:
        """Run ``wrapped`` inside an entry scope for the operation ``build`` describes.

        The wrappers are plain functions returning this coroutine (no ``async def`` of their own):
        one coroutine frame fewer between the caller and ormar, resumed at every await of the call.
        """
        scope: EntryScope | None = None
        with _GUARD_BUILD[kind]:
            # Built when the call runs, not when its coroutine is created.
            op, key = build(instance, args, kwargs)
            scope = self.engine.entry(op, expect=key)
        if scope is None:
            return await wrapped(*args, **kwargs)
        async with scope:
            result = await wrapped(*args, **kwargs)
            operation = scope.operation
            if after is not None and operation is not None and not operation.done:
                with _GUARD_AFTER[kind]:
                    after(operation, instance, args, kwargs, result)
        return result

    # --- Model entry points ---

    def _wrap_save(self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._scoped("save", self._save_entry, wrapped, instance, args, kwargs)

    def _wrap_update(self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._scoped("update", self._update_entry, wrapped, instance, args, kwargs)

    def _wrap_delete(self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._scoped("delete", self._delete_entry, wrapped, instance, args, kwargs)

    def _save_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        op = self._operation("save", _class_of(instance), pk=instance.pk, signal="pre_save")
        return op, identity_key(instance, "save")

    def _update_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        op = self._operation("update", _class_of(instance), pk=instance.pk, signal="pre_update")
        columns = args[0] if args else kwargs.get("_columns")
        passed = {k: v for k, v in kwargs.items() if k != "_columns"}
        self._describe_update(op, instance, passed, columns)
        return op, identity_key(instance, "update")

    def _delete_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        op = self._operation("delete", _class_of(instance), pk=instance.pk, signal="pre_delete")
        return op, identity_key(instance, "delete")

    def _describe_update(
        self, op: Operation, instance: Any, passed: Mapping[str, Any], columns: Iterable[str] | None
    ) -> None:
        """Changed fields (and values, if captured) of an instance update."""
        op.changed_fields = _changed_fields(instance, passed, columns)
        if _inferred(instance, passed):
            op.audit["changed_fields_inferred"] = True
        if self._capture_values:
            op.values = _values_of(instance, op.changed_fields, passed)

    # --- relations ---

    def _relation_operation(
        self, name: str, owner: Any, child: Any, relation_name: str, signal: str | None
    ) -> Operation:
        child_cls = _class_of(child)
        child_pk = _pk_text(getattr(child, "pk", None))
        attributes: dict[str, AttributeValue] = {
            RELATION_NAME: relation_name,
            RELATED_MODEL: getattr(child_cls, "__name__", str(child_cls)),
        }
        audit: dict[str, Any] = {"relation": relation_name, "related_model": attributes[RELATED_MODEL]}
        if child_pk is not None:
            attributes[RELATED_PK] = child_pk
            audit["related_pk"] = child_pk
        return self._operation(name, _class_of(owner), pk=owner.pk, signal=signal, attributes=attributes, audit=audit)

    def _wrap_relation_add(self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._scoped("relation_add", self._relation_add_entry, wrapped, instance, args, kwargs, _after_add)

    def _wrap_relation_remove(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return self._scoped("relation_remove", self._relation_remove_entry, wrapped, instance, args, kwargs)

    def _relation_add_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        return self._relation_entry("relation_add", instance, _item(args, kwargs))

    def _relation_remove_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        return self._relation_entry("relation_remove", instance, _item(args, kwargs))

    def _relation_entry(self, name: str, proxy: Any, item: Any) -> Entry:
        owner = proxy._owner
        op = self._relation_operation(name, owner, item, proxy.field_name, f"pre_{name}")
        return op, identity_key(owner, name, proxy.field_name, id(item))

    def _wrap_relation_clear(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return self._scoped("relation_clear", self._relation_clear_entry, wrapped, instance, args, kwargs, _rows_after)

    def _relation_clear_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        owner = instance._owner
        relation_name = instance.relation.field_name
        related = getattr(instance.to, "__name__", str(instance.to))
        op = self._operation(
            "relation_clear",
            _class_of(owner),
            pk=owner.pk,
            attributes={RELATION_NAME: relation_name, RELATED_MODEL: related},
            audit={"relation": relation_name, "related_model": related},
        )
        return op, None

    # --- query-set writes (no signal, or only post_bulk_update) ---

    def _wrap_queryset_update(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return self._scoped(
            "queryset_update", self._queryset_update_entry, wrapped, instance, args, kwargs, _rows_after
        )

    def _queryset_update_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        model = instance.model
        own = set(model.extract_db_own_fields()) | set(model.extract_related_names())
        passed = {k: v for k, v in kwargs.items() if k in own}
        op = self._operation("queryset_update", model, audit=_filter_audit(instance))
        op.changed_fields = sorted(passed)
        if self._capture_values:
            op.values = passed
        return op, None

    def _wrap_queryset_delete(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if args or any(k != "each" for k in kwargs):
            # ormar re-enters delete() on ``self.filter(*args, **kwargs)``: that inner call is traced.
            return wrapped(*args, **kwargs)
        return self._scoped(
            "queryset_delete", self._queryset_delete_entry, wrapped, instance, args, kwargs, _rows_after
        )

    def _queryset_delete_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        return self._operation("queryset_delete", instance.model, audit=_filter_audit(instance)), None

    def _wrap_bulk_create(self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._scoped("bulk_create", self._bulk_create_entry, wrapped, instance, args, kwargs, _after_bulk_create)

    def _bulk_create_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        objects = _objects(args, kwargs)
        op = self._operation(
            "bulk_create",
            instance.model,
            attributes={semconv.DB_OPERATION_BATCH_SIZE: len(objects or ())},
        )
        return op, identity_key(objects, "bulk_create")

    def _wrap_bulk_update(self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._scoped("bulk_update", self._bulk_update_entry, wrapped, instance, args, kwargs)

    def _bulk_update_entry(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        objects = _objects(args, kwargs)
        columns = args[1] if len(args) > 1 else kwargs.get("columns")
        op = self._operation(
            "bulk_update",
            instance.model,
            signal=_BULK_UPDATE,
            attributes={semconv.DB_OPERATION_BATCH_SIZE: len(objects or ())},
        )
        if columns:
            op.changed_fields = sorted(str(c) for c in columns)
        _bulk_audit(op, objects)
        return op, identity_key(objects, "bulk_update")

    # --- signals ---

    def _signal_name(self, signal: Any, sender: Any) -> str | None:
        try:
            return self._signal_names[signal]
        except KeyError:
            pass
        emitter = getattr(getattr(sender, "ormar_config", None), "signals", None)
        if not isinstance(emitter, dict):
            return None
        for name, candidate in emitter.items():
            if candidate is signal:
                self._signal_names[signal] = name
                return str(name)
        return None

    async def _wrap_send(self, wrapped: Wrapped, signal: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name: str | None = None
        sender = kwargs.get("sender", args[0] if args else None)
        payload = kwargs if "sender" in kwargs else {**kwargs, "sender": sender}
        with _GUARD_SIGNAL:
            name = self._signal_name(signal, sender)
            if name is not None:
                self._before_receivers(name, payload)
        result = await wrapped(*args, **kwargs)
        if name is not None:
            # After the user's receivers returned: a raising receiver fails the call (and the
            # operation, through the entry scope) instead of being reported as a success.
            with _GUARD_SIGNAL:
                self._after_receivers(name, payload)
        return result

    def _before_receivers(self, name: str, kw: Mapping[str, Any]) -> None:
        sender = kw["sender"]
        if name in _LIFECYCLE_PRE:
            instance = kw.get("instance")
            if instance is None or _is_parent_echo(sender, instance):
                return
            op_name = _LIFECYCLE_PRE[name]
            key = identity_key(instance, op_name)
            if self.engine.claim(key, obj=instance, signal=name) is not None:
                return  # the entry wrapper's operation: it knows the pk and the changed fields already
            op = self._operation(op_name, sender, pk=instance.pk, signal=name)
            target = self.engine.begin(op, key, obj=instance)
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
            op = self._relation_operation(op_name, instance, child, str(relation), name)
            self.engine.begin(op, key)
        elif name not in BUILTIN_SIGNALS:
            self._custom_before(name, kw)

    def _after_receivers(self, name: str, kw: Mapping[str, Any]) -> None:
        sender = kw["sender"]
        if name in _LIFECYCLE_POST:
            instance = kw.get("instance")
            if instance is None or _is_parent_echo(sender, instance):
                return
            op_name = _LIFECYCLE_POST[name]
            self.engine.end(identity_key(instance, op_name), obj=instance, signal=name, pk=_pk_text(instance.pk))
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
            op = self._operation("bulk_update", sender, signal=name)
            op.attributes[semconv.DB_OPERATION_BATCH_SIZE] = len(instances or ())
            _bulk_audit(op, instances)
            if self.engine.begin(op, key) is not None:
                self.engine.end(key, signal=name)
        elif name not in BUILTIN_SIGNALS:  # a built-in pre signal has nothing to do after its receivers
            self._custom_after(name, kw)

    def _custom_before(self, name: str, kw: Mapping[str, Any]) -> None:
        sender = kw["sender"]
        model = getattr(sender, "__name__", None)
        for custom in _custom_for(name):
            if model is not None and not custom.applies_to(model):
                continue
            instance = kw.get("instance")
            pk = getattr(instance, "pk", None) if instance is not None else None
            op = self._operation(custom.operation or name, sender, pk=pk, signal=name, write=custom.write)
            if custom.post is None:
                self.engine.record_event(op)
            elif name == custom.pre:
                subject = instance if instance is not None else sender
                self.engine.begin(op, (id(custom), *identity_key(subject)), obj=subject)

    def _custom_after(self, name: str, kw: Mapping[str, Any]) -> None:
        sender = kw["sender"]
        model = getattr(sender, "__name__", None)
        for custom in _custom_for(name):
            if custom.post != name or (model is not None and not custom.applies_to(model)):
                continue
            instance = kw.get("instance")
            subject = instance if instance is not None else sender
            self.engine.end((id(custom), *identity_key(subject)), obj=subject, signal=name)


# --- helpers ---


def _is_parent_echo(sender: Any, instance: Any) -> bool:
    """``emit_parent_signals`` re-sends a proxy model's signal to its ancestors: trace it once."""
    return sender is not _class_of(instance)


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
    pk = _pk_text(getattr(child, "pk", None))
    if pk is not None and RELATED_PK not in op.attributes:
        op.attributes[RELATED_PK] = pk
        op.audit["related_pk"] = pk


def _bulk_audit(op: Operation, objects: Iterable[Any] | None) -> None:
    items = list(objects or ())
    pks = [_pk_text(getattr(obj, "pk", None)) for obj in items]
    known = [pk for pk in pks if pk is not None]
    op.audit["count"] = len(items)
    if known:
        op.audit["pks"] = known[:MAX_AUDIT_PKS]
        if len(known) > MAX_AUDIT_PKS:
            op.audit["pks_truncated"] = True


def _filter_audit(queryset: Any) -> dict[str, Any]:
    """The query set's WHERE clause as SQL text with placeholders (never the bound values)."""
    with safety.guard("source.ormar.filter"):
        from ormar.queryset.queries.filter_query import FilterQuery

        expr = FilterQuery(filter_clauses=queryset.filter_clauses).apply(queryset.table.delete())
        expr = FilterQuery(filter_clauses=queryset.exclude_clauses, exclude=True).apply(expr)
        where = expr.whereclause
        if where is not None:
            return {"filter": str(where)}
    return {}


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
    _bulk_audit(op, _objects(args, kwargs))


def _rows_after(op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
    """``rows``: what a query-set write or a relation clear returned (the number of rows)."""
    if isinstance(result, int) and not isinstance(result, bool):
        op.audit["rows"] = result
