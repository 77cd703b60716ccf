"""Edgy source: lifecycle, query-set, bulk, relation and migrate signals as operations.

What Edgy sends (edgy 0.37; docs/sources/edgy.md, "How it attaches"):

* ``pre/post_{save,update,delete}`` (instance and ``QuerySet`` operations) are sent with
  ``send_async`` and awaited one receiver after the other IN THE CALLER'S TASK, and only the pre
  signal on a failure. ``DatabaseMixin.real_save``, ``.update``, ``.delete`` and
  ``QuerySet.update``/``.delete`` run in the engine's entry scope: the span is current for the call
  (the SQL spans nest under it), the pre receiver claims and describes it, the post receiver ends
  it, an exception leaving the call ends it as an ERROR at once.
* ``pre/post_bulk`` and ``pre/post_relation_{add,remove}`` run their receivers under
  ``asyncio.gather`` (one task each): ``QuerySet.bulk_*`` and ``ManyRelation``/``SingleRelation``
  ``add_many``/``remove_many``/``save_related`` run in the entry scope and the receivers, in child
  tasks with a copied context, claim its operation.
* ``SkipOperation`` raised by a pre receiver makes Edgy send the post with ``operation_skipped=True``:
  outcome ``skipped``.
* ``pre/post_migrate`` are sync, with string senders (``upgrade``, ``downgrade``, ``revision``);
  ``alembic.command.{upgrade,downgrade,revision}`` are wrapped so a failing migration ends at once.

Every model is covered, also one whose ``Meta.signals`` (or ``set_lifecycle_signals_from``) replaces
the global signals with its own: the source connects to each model's ``meta.signals`` through a
persistent callback on every Edgy ``Registry`` (existing models and models registered later), and
the entry points re-check the model's signals at each call (signals re-wired after install).

Writes inside a databasez transaction are held until it ends (``kit.ConnectionTransactions``).
Custom signals (``User.meta.signals.on_verify = edgy.Signal()``) are traced on request through the
generic blinker source: ``trace_model_signal`` / ``trace_model_signals``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import edgy
from edgy.core import signals as edgy_signals
from edgy.core.connection.registry import Registry
from edgy.core.db.querysets.base import BaseQuerySet
from opentelemetry.util.types import AttributeValue

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.context import current_scope
from sigtrace.core.correlation import identity_key
from sigtrace.core.operation import Operation
from sigtrace.core.transactions import Transaction
from sigtrace.sources.blinker import SignalPair, SingleSignal, trace_signal, trace_signals
from sigtrace.sources.kit import (
    ConnectionTransactions,
    Entry,
    FactsCache,
    ModelFacts,
    Source,
    batch_audit,
    database_of_url,
    pk_text,
)
from sigtrace.sources.kit.facts import PK_SEPARATOR
from sigtrace.sources.kit.identity import WeakIdentityMap

__all__ = ["EdgySource", "trace_model_signal", "trace_model_signals"]

SOURCE: Final = "edgy"

#: Span attributes only Edgy has (the shared ones are in ``sigtrace/semconv.py``).
ATTR_IS_UPDATE: Final = "sigtrace.edgy.is_update"
ATTR_QUERYSET: Final = "sigtrace.edgy.queryset"
ATTR_FILTER: Final = "sigtrace.edgy.filter"
#: Edgy's relation kind: ``many_to_many`` or ``one_to_many``.
ATTR_RELATION_KIND: Final = "sigtrace.edgy.relation.kind"
#: Edgy's relation operation: ``add`` or ``save_related``.
ATTR_RELATION_OPERATION: Final = "sigtrace.edgy.relation.operation"
ATTR_MIGRATE_DIRECTION: Final = "sigtrace.edgy.migrate.direction"
ATTR_MIGRATE_REVISION: Final = "sigtrace.edgy.migrate.revision"

#: Families of paired lifecycle signals and whether pre and post run in the caller's task.
_IN_TASK: Final = ("save", "update", "delete")
_GATHERED: Final = ("bulk", "relation_add", "relation_remove")
FAMILIES: Final = (*_IN_TASK, *_GATHERED)

_MAX_FILTER: Final = 1024

#: family -> (pre signal name, post signal name).
_FAMILY_SIGNALS: Final = {family: (f"pre_{family}", f"post_{family}") for family in FAMILIES}
#: pre signal -> the post signal that ends its operation (``Operation.post_signal``).
_POST_SIGNAL: Final = dict(_FAMILY_SIGNALS.values())


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class _Facts(ModelFacts):
    """A model's facts, and the field of a single-column pk that is a plain instance attribute."""

    #: Read from the instance's ``__dict__``: Edgy's ``pk`` property costs several µs (descriptor
    #: and context-variable round trips). ``None``: composite, or a class attribute shadows it.
    pk_name: str | None = None


def _tablename(model: Any) -> str | None:
    name = getattr(getattr(model, "meta", None), "tablename", None)
    return str(name) if name else None


def _compute_facts(model: type) -> _Facts:
    names: tuple[str, ...] = tuple(getattr(model, "pknames", None) or ())
    pk_name: str | None = names[0] if len(names) == 1 else None
    if pk_name is not None and any(pk_name in vars(klass) for klass in model.__mro__):
        pk_name = None  # a class attribute (a descriptor) would take precedence over the instance's value
    return _Facts(model.__name__, _tablename(model), pk_name=pk_name)


#: A model without a table yet (abstract, being defined) is looked up again.
_facts: FactsCache[type, _Facts] = FactsCache(_compute_facts, keep=lambda facts: facts.collection is not None)
#: ``(db.system.name, db.namespace)`` of an Edgy/databasez ``Database``, from its URL.
_database_fields: FactsCache[Any, tuple[str | None, str | None]] = FactsCache(
    lambda database: database_of_url(getattr(database, "url", None))
)

_MISSING: Final = object()


def _pk_of(instance: Any) -> str | None:
    """``kit.pk_text`` of an instance's pk (a composite one is a mapping: ``"a|b"``)."""
    if instance is None:
        return None
    cls = type(instance)
    name = (_facts.cached(id(cls)) or _facts(cls)).pk_name
    pk = _MISSING
    if name is not None:
        try:  # the __dict__ past Edgy's __getattribute__ (a Python frame per attribute read)
            state = object.__getattribute__(instance, "__dict__")
        except AttributeError:
            state = None
        if isinstance(state, dict):
            pk = state.get(name, _MISSING)
    if pk is _MISSING:
        try:
            pk = instance.pk
        except Exception:  # noqa: BLE001 - not loaded / deleted: no pk to show
            return None
    return pk_text(pk)


def _model_class(sender: Any) -> Any:
    return sender if isinstance(sender, type) else type(sender)


def _database_of(subject: Any, model: Any) -> Any:
    """The ``Database`` a call's queries go to: the instance's or query set's (``using``), else the model's."""
    database = getattr(subject, "database", None)
    return database if database is not None else getattr(model, "database", None)


def _instance_database(instance: Any, model: Any) -> Any:
    """:func:`_database_of` a model instance, its own read where Edgy keeps it (its private namespace).

    Its ``database`` attribute runs Edgy's ``__getattribute__`` and pydantic's ``__getattr__``, which
    read that same namespace (about 4 µs per read here). An instance laid out otherwise (another Edgy
    version) is read through the attribute.
    """
    try:
        database = object.__getattribute__(instance, "__pydantic_private__")["_edgy_namespace"]["database"]
    except Exception:  # noqa: BLE001 - not this layout: the attribute says
        return _database_of(instance, model)
    return database if database is not None else getattr(model, "database", None)


def _related_pks(raw: Any, target: Any, owner: Any) -> Iterator[str | None]:
    """The related rows' pks of a relation call: its children's, or those of the related side of its through rows."""
    if not isinstance(raw, list):
        return
    for item in raw:
        row = item[0] if isinstance(item, tuple) and item else item
        if row is None:
            continue
        if isinstance(target, type) and not isinstance(row, target):
            state = getattr(row, "__dict__", {})
            names = getattr(getattr(row, "meta", None), "foreign_key_fields", ())
            row = next((v for n in names if isinstance(v := state.get(n), target) and v is not owner), None)
        yield _pk_of(row)


def _describe_relation(op: Operation, params: Mapping[str, Any]) -> None:
    """A relation operation's names from Edgy's signal parameters (the relation's field, kind and sides)."""
    field, kind = params.get("field"), params.get("relation")
    source = getattr(params.get("source"), "__name__", None)
    target = getattr(params.get("target"), "__name__", None)
    if field:
        op.attributes[semconv.SIGTRACE_RELATION_NAME] = str(field)
        op.audit[semconv.AUDIT_RELATION] = str(field)
    if target:
        op.attributes[semconv.SIGTRACE_RELATION_MODEL] = target
        op.audit[semconv.AUDIT_RELATED_MODEL] = target
        op.audit["relation_target"] = target
    if source:
        op.audit["relation_source"] = source
    if kind:
        op.attributes[ATTR_RELATION_KIND] = str(kind)
        op.audit["relation_kind"] = str(kind)
    if params.get("operation"):
        op.attributes[ATTR_RELATION_OPERATION] = str(params["operation"])


# --------------------------------------------------------------------------- databasez internals


def _connection_of(database: Any) -> Any:
    """The databasez ``Connection`` this task's queries to ``database`` use (``Database.connection()``
    without creating one): the task's own, or the shared one of a force_rollback database."""
    if database is None or not getattr(database, "is_connected", False):
        return None
    loop = asyncio.get_running_loop()
    if database._loop is not loop:
        database = database._databases_map.get(loop, database)  # a sub-database of another event loop
    if database.force_rollback:
        return database._global_connection
    task = asyncio.current_task()
    return None if task is None else database._connection_map.get(task)


def _savepoint_begins_transaction(connection: Any) -> bool:
    """True if the SAVEPOINT SQLAlchemy is about to issue starts a transaction of its own.

    databasez opens its outer transactions on SQLite without a BEGIN (the driver defers it to the
    first INSERT/UPDATE/DELETE); a SAVEPOINT sent before that starts a transaction in SQLite, and
    its RELEASE commits it, whatever the outer transaction does later. Edgy wraps every save and
    update in such a savepoint. (ormar sends its own BEGIN and is not concerned.)
    """
    sync = None if connection is None else connection.sync_connection
    # Not in a transaction (the outermost start, most often) first; then the dialect (no Python frame).
    if sync is None or not sync.in_transaction() or sync.dialect.name != "sqlite":
        return False
    driver = sync.connection.driver_connection
    return getattr(driver, "in_transaction", None) is False


def _op_key(instance: Any, family: str, tag: int | None) -> Hashable:
    return identity_key(instance, SOURCE, family, tag)


def _names(values: Any) -> tuple[str, ...] | None:
    """The names of the fields a write sets, sorted; a tuple, which the audit sink clips once per tuple."""
    if isinstance(values, Mapping):
        return tuple(sorted(map(str, values)))
    return None


def _rows(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- the source


class EdgySource(Source):
    """Connects to Edgy's lifecycle, bulk, relation and migrate signals and wraps its entry points."""

    name = SOURCE

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        self._lock = threading.RLock()
        #: id(signal) -> signal, for every lifecycle signal this source is connected to (strong refs).
        self._watched: dict[int, Any] = {}
        self._registries: dict[int, Registry] = {}
        self._receivers: dict[str, Callable[..., Any]] = {}
        self._transactions = ConnectionTransactions(SOURCE)
        #: databasez backend transaction -> its mirror, for those mirrored (a write is held in it or
        #: inside it); by identity, held weakly.
        self._mirrors: WeakIdentityMap[Transaction] = WeakIdentityMap()
        #: databasez Connections with mirrored transactions: their release is watched.
        self._mirrored_connections: WeakIdentityMap[bool] = WeakIdentityMap()
        #: The transactions of ``_fresh`` savepoints (weakly: they end with their connection's stack).
        self._fresh_transactions: weakref.WeakSet[Transaction] = weakref.WeakSet()
        #: id(Connection) -> commits/rollbacks under way on it; ids released during one of them.
        self._finishing: dict[int, int] = {}
        self._released: set[int] = set()
        #: databasez backend transactions that are a SAVEPOINT to SQLAlchemy but a transaction of their
        #: own to SQLite: issued while the driver was in autocommit, so their RELEASE commits.
        self._fresh: WeakIdentityMap[bool] = WeakIdentityMap()
        #: Made once (each transaction hook enters it, several times per write).
        self._transaction_guard = self.guard("transaction")
        self._transaction_where = self.where("transaction")

    # --- attach ---

    def attach(self) -> None:
        for family in FAMILIES:
            self._receivers[f"pre_{family}"] = self._make_pre(family)
            self._receivers[f"post_{family}"] = self._make_post(family)
        for signal_name in self._receivers:
            self._watch(getattr(edgy_signals, signal_name), signal_name)
        self.connect(edgy_signals.pre_migrate, self._on_pre_migrate, kind="pre_migrate")
        self.connect(edgy_signals.post_migrate, self._on_post_migrate, kind="post_migrate")
        self._patch_entry_points()
        if self.holds_writes:  # spans only: nothing waits for a commit (Engine.holds_writes), nothing mirrored
            self._patch_transactions()
        # Every model, also those with their own Broadcaster and those registered after install().
        self.patch("edgy.core.connection.registry", "Registry.__init__", self._wrap_registry_init)
        for registry in self._known_registries():
            self._hook_registry(registry)

    def _watch(self, signal: Any, signal_name: str) -> None:
        """Connect this source's receiver for ``signal_name`` to ``signal`` (once per signal object)."""
        if signal is None or id(signal) in self._watched:
            return
        with self._lock:
            if id(signal) in self._watched:
                return
            self._watched[id(signal)] = signal
            # The receivers are their own safety net (``source.edgy.<signal name>``): no coroutine of the kit's.
            self.connect(signal, self._receivers[signal_name], kind=signal_name, guard=False)
            self.on_detach(lambda: self._watched.pop(id(signal), None))

    def watch_model(self, model: Any) -> None:
        """Connect to the lifecycle signals of one model's ``meta.signals`` (a registry callback)."""
        with self.guard("watch_model"):
            signals = getattr(getattr(model, "meta", None), "signals", None)
            if not isinstance(signals, dict):
                return
            for signal_name in self._receivers:
                self._watch(signals.get(signal_name), signal_name)

    def _ensure(self, model: Any, family: str) -> None:
        """At an entry point: the model's signals may have been re-wired after install."""
        signals = getattr(getattr(model, "meta", None), "signals", None)
        if not isinstance(signals, dict):
            return
        for signal_name in _FAMILY_SIGNALS[family]:
            signal = signals.get(signal_name)
            if signal is not None and id(signal) not in self._watched:
                self._watch(signal, signal_name)

    def _known_registries(self) -> Iterator[Registry]:
        seen: set[int] = set()
        stack: list[type[Any]] = [edgy.Model]
        with self.guard("registries"):
            from edgy.core.db.models.base import EdgyBaseModel

            stack.append(EdgyBaseModel)
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            registry = getattr(getattr(cls, "meta", None), "registry", None)
            if isinstance(registry, Registry) and id(registry) not in seen:
                seen.add(id(registry))
                yield registry
            elif getattr(cls, "meta", None) is not None:
                # A model outside any registry (abstract): still connect to its own signals.
                self.watch_model(cls)

    def _hook_registry(self, registry: Registry) -> None:
        with self._lock:
            if id(registry) in self._registries:
                return
            self._registries[id(registry)] = registry
        callback = self.watch_model
        registry.register_callback(None, callback, one_time=False)

        def unhook() -> None:
            callbacks = registry._callbacks.get(None)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
            self._registries.pop(id(registry), None)

        self.on_detach(unhook)

    def _wrap_registry_init(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        with self.guard("registry_init"):
            self._hook_registry(instance)
        return result

    # --- operations ---

    def _new(
        self, name: str, model: Any, database: Any, signal: str, *, table: Any = None, pk: str | None = None
    ) -> Operation:
        """Every operation of this source: the model's facts, the database's, the connection's open transaction.

        ``table``: the model whose table the rows are written in, if not ``model`` (a relation's). Built in
        one constructor call (not ``ModelFacts.operation``'s setattr loop), the facts read without a Python
        frame, and the post signal of the pre ``signal`` named at the start (the span's end then sets no
        attribute when it comes).
        """
        db_system, namespace = _database_fields.cached(id(database)) or _database_fields(database)
        facts = _facts.cached(id(model)) or _facts(model)
        return Operation(
            SOURCE,
            name,
            model=facts.model,
            collection=facts.collection if table is None else _facts(table).collection,
            db_system=db_system,
            namespace=namespace,
            pk=pk,
            signal=signal,
            post_signal=_POST_SIGNAL.get(signal),
            transaction=self._transaction_of(database) if self.holds_writes else None,
        )

    def _tag(self) -> int | None:
        """Identifies the entry call we are in (same in pre and post, also in gathered child tasks)."""
        op = self.current_entry()
        return None if op is None else id(op)

    def _from_signal(self, family: str, sender: Any, kwargs: Mapping[str, Any], signal: str) -> tuple[Operation, Any]:
        """The operation a signal describes, and the object its key is built on."""
        model = _model_class(sender)
        instance = kwargs.get("instance")
        if family in _IN_TASK:
            model_instance = kwargs.get("model_instance")
            subject = model_instance if model_instance is not None else instance
            database = _instance_database(subject, model) if subject is model_instance else _database_of(subject, model)
            op = self._new(family, model, database, signal, pk=_pk_of(model_instance))
            if model_instance is None and isinstance(instance, BaseQuerySet):
                op.attributes[ATTR_QUERYSET] = True  # a query set's write: its filter, no pk
            if family != "delete":
                op.changed_fields = _names(kwargs.get("values"))
                is_update = kwargs.get("is_update")
                if family == "save" and isinstance(is_update, bool):
                    op.attributes[ATTR_IS_UPDATE] = is_update
                    op.audit["is_update"] = is_update
                if self.capture_values:
                    op.values = self._values(model_instance, kwargs.get("values"), family)
            return op, subject
        raw = kwargs.get("raw_values")
        size = len(raw) if isinstance(raw, list) else None
        if family == "bulk":
            op = self._new(str(kwargs.get("operation") or "bulk"), model, _database_of(instance, model), signal)
            if size is not None and size > 1:
                op.attributes[semconv.DB_OPERATION_BATCH_SIZE] = size
        else:
            # The owner is the model and pk; the sender (through or child model) owns the table written.
            owner = _model_class(instance) if instance is not None else model
            op = self._new(family, owner, _database_of(instance, model), signal, table=model, pk=_pk_of(instance))
            _describe_relation(op, kwargs)
            listed = batch_audit(_related_pks(raw, kwargs.get("target"), instance))
            related = listed.get(semconv.AUDIT_PKS)
            if related:
                op.audit[semconv.AUDIT_RELATED_PKS] = related
                if len(related) == 1:
                    op.attributes[semconv.SIGTRACE_RELATION_PK] = related[0]
            if listed.get(semconv.AUDIT_PKS_TRUNCATED):
                op.audit[semconv.AUDIT_RELATED_PKS_TRUNCATED] = True
        if size is not None:
            op.audit[semconv.AUDIT_BATCH_SIZE] = size
        return op, instance

    def _values(self, model_instance: Any, new: Any, family: str) -> dict[str, Any] | None:
        """``{field: [old, new]}`` where the old value is known (instance update), else ``{field: new}``."""
        if not isinstance(new, Mapping):
            return None
        old_state = getattr(model_instance, "__dict__", None) if family == "update" else None
        # Fields assigned since the instance was loaded or written hold the new value, not the old.
        private = getattr(model_instance, "__pydantic_private__", None) if old_state is not None else None
        dirty = private.get("_db_dirty") if isinstance(private, dict) else None
        out: dict[str, Any] = {}
        for field, value in new.items():
            if isinstance(old_state, dict) and field in old_state and not (dirty and field in dirty):
                out[str(field)] = [old_state[field], value]
            else:
                out[str(field)] = value
        return out

    async def _filter_shape(self, op: Operation, queryset: Any) -> None:
        """The WHERE clause of a query-set operation with bind-parameter names, never values."""
        with self.guard("filter"):
            clause = await queryset.build_where_clause()
            if clause is None:
                return
            shape = str(clause)[:_MAX_FILTER]
            op.attributes[ATTR_FILTER] = shape
            op.audit[semconv.AUDIT_FILTER] = shape
            if self.capture_values:
                params = clause.compile().params
                merged = dict(op.values or {})
                merged["filter"] = dict(params)
                op.values = merged

    # --- lifecycle receivers (connected guarded, as ``source.edgy.<signal name>``) ---

    def _make_pre(self, family: str) -> Callable[..., Any]:
        signal_name = f"pre_{family}"
        activate = family in _IN_TASK
        engine = self.engine
        where = self.where(signal_name)
        report = safety.report

        async def on_pre(sender: Any, **kwargs: Any) -> None:
            try:  # the safety net of Source.receiver, without its coroutine frame
                if activate:  # in the caller's task: the entry wrapper's operation of this very call, most often
                    model_instance = kwargs.get("model_instance")
                    scope = current_scope()
                    own = scope.op if scope is not None else None
                    if (
                        model_instance is not None
                        and own is not None
                        and own.source == SOURCE
                        and self._claim_instance_write(own, family, sender, model_instance, kwargs)
                    ):
                        return
                op, subject = self._from_signal(family, sender, kwargs, signal_name)
                if ATTR_QUERYSET in op.attributes:
                    # Not for an excluded operation: this builds the WHERE clause once more. (Anything
                    # else is checked by begin() itself.)
                    if not engine.enabled(SOURCE, op.model, op.name, signal_name):
                        return
                    await self._filter_shape(op, subject)
                engine.begin(op, _op_key(subject, family, self._tag()), obj=subject, activate=activate)
            except Exception as exc:  # noqa: BLE001 - the safety net
                report(where, exc)

        on_pre.__name__ = f"sigtrace_edgy_{signal_name}"
        return on_pre

    def _claim_instance_write(
        self, own: Operation, family: str, sender: Any, model_instance: Any, kwargs: Mapping[str, Any]
    ) -> bool:
        """The pre signal of an instance write claims the entry wrapper's operation ``own`` of the same call.

        What :meth:`_from_signal` and ``Engine.begin`` do for it, without building the operation the
        signal describes only to copy it into ``own``: for the instance the wrapper saw, sent by its own
        class (not a proxy's real class), model, table and database are those ``own`` has already, so
        only what the signal tells is added (the pk, the fields and values written, ``is_update``).
        False where this is not that case (the caller then takes the general path).
        """
        if type(model_instance) is not sender:
            return False
        key = (id(model_instance), SOURCE, family, id(own))  # _op_key(model_instance, family, self._tag())
        claimed = self.engine.claim(key, signal=f"pre_{family}")
        if claimed is None:
            return False
        if claimed is not own:
            return True  # another operation of this key in flight: begin() would have returned it as it is
        if own.pk is None:  # read by the wrapper already, from this same instance, where it had one
            own.pk = _pk_of(model_instance)
        if family != "delete":
            values = kwargs.get("values")
            names = _names(values)
            if names is not None:
                own.changed_fields = names
            is_update = kwargs.get("is_update")
            if family == "save" and isinstance(is_update, bool):
                own.attributes[ATTR_IS_UPDATE] = is_update
                own.audit["is_update"] = is_update
            if self.capture_values:
                captured = self._values(model_instance, values, family)
                if captured is not None:
                    own.values = captured
        return True

    def _make_post(self, family: str) -> Callable[..., Any]:
        signal_name = f"post_{family}"
        engine = self.engine
        in_task = family in _IN_TASK
        where = self.where(signal_name)
        report = safety.report

        async def on_post(sender: Any, **kwargs: Any) -> None:
            try:  # the safety net of Source.receiver, without its coroutine frame
                instance = kwargs.get("instance")
                model_instance = kwargs.get("model_instance")
                subject = model_instance if in_task and model_instance is not None else instance
                # _op_key(subject, family, self._tag()), without their three frames
                scope = current_scope()
                own = scope.op if scope is not None else None
                if own is not None and own.source != SOURCE:
                    own = None
                key = (id(subject), SOURCE, family, None if own is None else id(own))
                skipped = bool(kwargs.get("operation_skipped"))
                outcome = semconv.OUTCOME_SKIPPED if skipped else semconv.OUTCOME_OK
                if in_task and own is not None and own.key is None:  # claim() answers None for any other
                    # The entry wrapper's operation, if its pre signal never reached us (muted).
                    claimed = engine.claim(key, obj=subject, signal=signal_name)
                    if claimed is not None and claimed.changed_fields is None and family != "delete":
                        claimed.changed_fields = _names(kwargs.get("values"))
                attributes: dict[str, AttributeValue] = {}
                audit: dict[str, Any] = {}
                rows = _rows(kwargs.get("row_count"))
                if rows is None and family == "bulk":
                    counts = [_rows(kwargs.get("row_count_create")), _rows(kwargs.get("row_count_update"))]
                    known = [c for c in counts if c is not None]
                    rows = sum(known) if known else None
                # The pk read before the write stands: a save gets one only where it had none (a composite key,
                # whose parts an insert may fill in one by one, is read again).
                claimed_pk = own is not None and own.key == key and own.pk is not None and PK_SEPARATOR not in own.pk
                pk = _pk_of(model_instance) if in_task and not claimed_pk else None
                if rows is None:
                    op = engine.end(key, obj=subject, outcome=outcome, signal=signal_name, pk=pk)
                else:
                    attributes[semconv.SIGTRACE_ROWS_AFFECTED] = rows
                    audit[semconv.AUDIT_ROWS] = rows
                    op = engine.end(
                        key, obj=subject, outcome=outcome, signal=signal_name, pk=pk, attributes=attributes, audit=audit
                    )
                if op is not None or not skipped:
                    return
                # A user's pre receiver raised SkipOperation before ours ran: record the skip anyway,
                # unless this is a second post of the same call (models with their own signals).
                own = self.current_entry()
                if own is not None and own.key == key:
                    return
                op, _ = self._from_signal(family, sender, kwargs, signal_name)
                if engine.begin(op, key, obj=subject) is not None:
                    engine.end(key, obj=subject, outcome=outcome, pk=pk, attributes=attributes, audit=audit)
            except Exception as exc:  # noqa: BLE001 - the safety net
                report(where, exc)

        on_post.__name__ = f"sigtrace_edgy_{signal_name}"
        return on_post

    # --- migrate (sync signals, string senders) ---

    def _on_pre_migrate(self, sender: Any, **kwargs: Any) -> None:
        direction = str(sender)
        revision = kwargs.get("revision") if direction != "revision" else kwargs.get("revision_id")
        attributes: dict[str, AttributeValue] = {ATTR_MIGRATE_DIRECTION: direction}
        audit: dict[str, Any] = {"direction": direction}
        if revision is not None:
            attributes[ATTR_MIGRATE_REVISION] = str(revision)
            audit["revision"] = str(revision)
        for name in ("message", "autogenerate", "sql", "tag"):
            value = kwargs.get(name)
            if value not in (None, False):
                audit[name] = value
        op = Operation(source=SOURCE, name="migrate", signal="pre_migrate", attributes=attributes, audit=audit)
        config = kwargs.get("config")
        self.engine.begin(op, _op_key(config, "migrate", None), obj=config, activate=True)

    def _on_post_migrate(self, sender: Any, **kwargs: Any) -> None:
        config = kwargs.get("config")
        self.engine.end(_op_key(config, "migrate", None), obj=config, signal="post_migrate")

    def _wrap_alembic(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """``alembic.command.*`` under an Edgy migrate signal: a failure ends the span at once."""
        config = args[0] if args else kwargs.get("config")
        key = _op_key(config, "migrate", None)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            with self.guard("migrate_failed"):
                self.engine.end(key, obj=config, error=exc)
            raise
        with self.guard("migrate_result"):
            op = self.engine.lookup(key)
            revision = getattr(result, "revision", None)
            if op is not None and isinstance(revision, str):
                op.attributes[ATTR_MIGRATE_REVISION] = revision
                op.audit["revision"] = revision
        return result

    # --- transactions (databasez: a stack of BoundTransactions per Connection) ---
    #
    # Mirrored when a write needs them, not as they begin: a write that starts on a connection with
    # open transactions mirrors that connection's stack (``_mirror``), and a savepoint SQLite begins
    # as a transaction of its own is mirrored as it starts for the write that opened it. A
    # transaction that holds no write (Edgy's own around each save outside any transaction, the
    # common case) is never mirrored: its commit, rollback and connection exit run without any
    # sigtrace code beyond one dict lookup. Mirrors are keyed by the backend transaction
    # (``BoundTransaction.transaction_db``), which databasez creates before its ``BoundTransaction``.

    def _patch_transactions(self) -> None:
        tx = "databasez.core.transaction"
        self.patch("databasez.sqlalchemy", "SQLAlchemyTransaction.start", self._wrap_backend_start)
        self.patch(tx, "BoundTransaction.commit", self._bound_end(committing=True))
        self.patch(tx, "BoundTransaction.rollback", self._bound_end(committing=False))
        self.patch("databasez.core.connection", "Connection._aexit_raw", self._wrap_connection_exit)

    def _transaction_of(self, database: Any) -> Transaction | None:
        """The transaction open on the connection this task's queries to ``database`` go to, if any."""
        try:  # the transaction guard, without its two frames
            connection = _connection_of(database)
            if connection is None or not connection._transaction_stack:
                return None  # no transaction open on it (databasez's own stack): autocommitted
            self._mirror(connection)
            return self._transactions.current(connection)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(self._transaction_where, exc)
        return None  # a failure reported: the write is reported when it returns

    def _mirror(self, connection: Any) -> None:
        """Mirror the transactions open on ``connection`` (databasez's stack, outermost first) not mirrored yet.

        In the stack's order, so each begins inside the one below it, as it did in the database; those
        mirrored before (for an earlier write) are below any that are not (the stack only grows on top).
        """
        mirrors = self._mirrors
        for bound in tuple(connection._transaction_stack):
            backend = getattr(bound, "transaction_db", None)
            if backend is None or mirrors.get_by_id(id(backend)) is not None:
                continue
            transaction = getattr(bound, "transaction", None)
            if (
                transaction is not None
                and transaction._force_rollback
                and getattr(connection, "connection_transaction", None) is transaction
            ):
                # The whole-connection transaction of a force_rollback database (a test database):
                # not reported as one (docs/sources/edgy.md, "Transactions").
                continue
            self._begin_mirror(connection, backend, fresh=self._fresh.get_by_id(id(backend)) is not None)

    def _begin_mirror(self, connection: Any, backend: Any, *, fresh: bool) -> Transaction:
        txn = self._transactions.begin(connection, backend, fresh=fresh)
        self._mirrors.set(backend, txn)
        self._mirrored_connections.set(connection, True)
        if fresh:
            self._fresh_transactions.add(txn)
        return txn

    def _wrap_backend_start(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """A savepoint the database begins as a transaction of its own (SQLite, see ``_fresh``) is noted.

        Decided by the connection's state before the start. Any other start gets the library's own
        coroutine, with no coroutine frame of sigtrace's around it (one fewer frame resumed at each
        of its awaits).
        """
        try:  # the transaction guard, without its two frames
            fresh = _savepoint_begins_transaction(instance.async_connection)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(self._transaction_where, exc)
            fresh = False
        if not fresh:
            return wrapped(*args, **kwargs)
        return self._fresh_start(wrapped, instance, args, kwargs)

    async def _fresh_start(self, wrapped: Any, backend: Any, args: Any, kwargs: Any) -> Any:
        """The start of a ``_fresh`` savepoint; once it began, the write that opened it is held in it.

        The write that opened it (Edgy wraps each save/update in a transaction) is kept or lost with
        it, not with the transaction the application opened around it. The first such transaction
        is the write's own: later ones inside the same call (a bulk insert that ignores conflicts
        rolls its own back) do not decide its fate. A start that fails begins nothing.
        """
        result = await wrapped(*args, **kwargs)
        with self._transaction_guard:
            self._fresh.set(backend, True)
            scope = current_scope()  # self.current_entry(), without its two frames
            op = scope.op if scope is not None else None
            if (
                op is not None
                and op.source == SOURCE
                and not op.done
                and (op.transaction is None or op.transaction not in self._fresh_transactions)
            ):
                connection = backend.connection.owner
                self._mirror(connection)  # those it begins on top of (its own BoundTransaction comes next)
                op.transaction = self._begin_mirror(connection, backend, fresh=True)
        return result

    def _forget_rolled_back_fresh(self) -> None:
        """A call that goes on after its own transaction rolled back (Edgy inserts that ignore a
        conflict roll theirs back, then write otherwise): what it writes next decides its fate."""
        op = self.current_entry()
        txn = op.transaction if op is not None and not op.done else None
        if txn is not None and txn in self._fresh_transactions and txn.outcome == semconv.OUTCOME_ROLLED_BACK:
            op.transaction = None  # type: ignore[union-attr]

    def _bound_end(self, *, committing: bool) -> Callable[..., Any]:
        """``BoundTransaction.commit``/``.rollback``: the library's own coroutine unless it is mirrored."""
        transactions = self._transactions
        mirrors = self._mirrors
        mirrored = mirrors.get_by_id
        finishing = self._finishing
        released = self._released
        guard = self._transaction_guard

        async def tracked(wrapped: Any, instance: Any, backend: Any, args: Any, kwargs: Any) -> Any:
            # databasez releases the connection inside the call, after the commit: what is still open
            # on it is closed only once this transaction's own end is known (below).
            connection = instance.connection
            key = id(connection)
            finishing[key] = finishing.get(key, 0) + 1
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                with guard:
                    mirrors.pop(backend)
                    transactions.failed(backend, exc, committing=committing)
                raise
            else:
                with guard:
                    mirrors.pop(backend)
                    transactions.end(backend, committed=committing)
                    if not committing:
                        self._forget_rolled_back_fresh()
            finally:
                count = finishing.pop(key, 1) - 1
                if count:
                    finishing[key] = count
                elif key in released:
                    released.discard(key)
                    self._close_connection(connection)
            return result

        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            backend = getattr(instance, "transaction_db", None)
            # Not mirrored (it holds no write), or a second commit/rollback while one is finishing
            # (refused by databasez: not an end).
            if backend is None or mirrored(id(backend)) is None or getattr(instance, "is_finalizing", True):
                return wrapped(*args, **kwargs)
            return tracked(wrapped, instance, backend, args, kwargs)

        return wrapper

    def _close_connection(self, connection: Any) -> None:
        self._mirrored_connections.pop(connection)
        self._transactions.close(connection)

    def _wrap_connection_exit(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """The connection is released once its last user left: what is still open on it never ended.

        Only a connection with mirrored transactions is watched (the others hold no write).
        """
        if self._mirrored_connections.get_by_id(id(instance)) is None:
            return wrapped(*args, **kwargs)
        return self._watched_exit(wrapped, instance, args, kwargs)

    async def _watched_exit(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            closing = await wrapped(*args, **kwargs)
        except BaseException:
            with self._transaction_guard:
                self._close_connection(instance)
            raise
        if closing:
            with self._transaction_guard:
                if id(instance) in self._finishing:
                    self._released.add(id(instance))  # closed by the commit/rollback that released it
                else:
                    self._close_connection(instance)
        return closing

    # --- entry points (the kit's entry scope: build the operation, run the call in it) ---

    def _patch_entry_points(self) -> None:
        db = "edgy.core.db.models.mixins.db"
        qs = "edgy.core.db.querysets.queryset"
        rel = "edgy.core.db.relationships.relation"
        self.patch(db, "DatabaseMixin.real_save", self._write_entry("save"))
        self.patch(db, "DatabaseMixin.update", self._write_entry("update"))
        self.patch(db, "DatabaseMixin.delete", self._write_entry("delete"))
        self.patch(qs, "QuerySet.update", self._write_entry("update", queryset=True))
        self.patch(qs, "QuerySet.delete", self._write_entry("delete", queryset=True))
        for method in ("bulk_create", "bulk_update", "bulk_update_or_create", "bulk_get_or_create"):
            self.patch(qs, f"QuerySet.{method}", self._bulk_entry(method))
        for cls in ("ManyRelation", "SingleRelation"):
            self.patch(rel, f"{cls}.add_many", self._relation_entry("relation_add"))
            self.patch(rel, f"{cls}.save_related", self._relation_entry("relation_add", staged=True))
            self.patch(rel, f"{cls}.remove_many", self._relation_entry("relation_remove"))
        for command in ("upgrade", "downgrade", "revision"):
            self.patch("alembic.command", command, self._wrap_alembic)

    def _write_entry(self, family: str, *, queryset: bool = False) -> Callable[..., Any]:
        """Instance / query-set write: the entry scope's operation, claimed and described by the pre signal.

        When no signal reaches sigtrace (``Model.meta.signals.pre_save.muted()``, a global signal
        muted) the operation still ends when the call returns: the write is audited whatever the
        application does with Edgy's signals. ``queryset``: the wrapped method is a ``QuerySet``'s.
        """
        signal_name = f"pre_{family}"
        capture_values = self.capture_values

        def build(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
            model = instance.model_class if queryset else type(instance)
            self._ensure(model, family)
            database = _database_of(instance, model) if queryset else _instance_database(instance, model)
            op = self._new(family, model, database, signal_name, pk=None if queryset else _pk_of(instance))
            if family == "update":
                op.changed_fields = sorted(map(str, kwargs))
                if capture_values:
                    op.values = dict(kwargs) if queryset else self._values(instance, kwargs, family)
            if queryset:
                op.attributes[ATTR_QUERYSET] = True
            return op, (id(instance), SOURCE, family, id(op))  # _op_key(instance, family, id(op))

        def after(op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
            # No post signal ended it (muted): what the call itself tells.
            if queryset:
                rows = _rows(result)
                if rows is not None:
                    op.attributes[semconv.SIGTRACE_ROWS_AFFECTED] = rows
                    op.audit[semconv.AUDIT_ROWS] = rows
            elif op.pk is None:
                op.pk = _pk_of(instance)

        return self.async_entry("entry", build, after)

    def _bulk_entry(self, method: str) -> Callable[..., Any]:
        """A bulk call: the span is current for the call, the gathered ``pre/post_bulk`` receivers claim it."""

        def build(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
            model = instance.model_class
            self._ensure(model, "bulk")
            op = self._new(method, model, _database_of(instance, model), "pre_bulk")
            return op, _op_key(instance, "bulk", id(op))

        return self.async_entry("entry", build)

    def _relation_entry(self, family: str, *, staged: bool = False) -> Callable[..., Any]:
        """A relation call, like a bulk call; the owner is the model and pk, the table is the one written.

        A call with nothing to do (``add_many()`` without children, ``save_related()`` without staged
        children) sends no signal and gets no span.
        """

        def build(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
            if not (instance.refs if staged else args):
                return None
            owner = instance.instance
            table = instance.through if hasattr(instance, "through") else instance.to
            params = instance._shared_relation_signals_params
            for model in (params.get("source"), params.get("target"), table):
                self._ensure(model, family)
            database = _instance_database(owner, table)
            op = self._new(family, type(owner), database, f"pre_{family}", table=table, pk=_pk_of(owner))
            _describe_relation(op, params)
            return op, _op_key(owner, family, id(op))

        return self.async_entry("entry", build)


# --------------------------------------------------------------------------- custom signals


def _key_by_instance(sender: Any, **kwargs: Any) -> Hashable:
    subject = kwargs.get("instance", sender)
    return identity_key(subject)


def trace_model_signals(
    model: Any,
    pre: str,
    post: str,
    *,
    name: str | None = None,
    asynchronous: bool = True,
    key: Callable[..., Hashable] | None = None,
) -> SignalPair:
    """Trace a pair of custom signals of a model's Broadcaster (``model.meta.signals.<pre>/<post>``).

    Delivered by the generic blinker source (install with the ``blinker`` source enabled, the
    default). Correlated by the ``instance`` keyword's identity unless ``key`` is given.
    ``asynchronous=False`` for signals the application sends with ``send`` instead of ``send_async``.
    """
    signals = model.meta.signals
    return trace_signals(
        getattr(signals, pre),
        getattr(signals, post),
        key=key or _key_by_instance,
        name=name or (pre[4:] if pre.startswith("pre_") else pre),
        model=model.__name__,
        collection=_tablename(model),
        source=SOURCE,
        asynchronous=asynchronous,
    )


def trace_model_signal(model: Any, signal: str, *, asynchronous: bool = True) -> SingleSignal:
    """Trace one custom signal of a model's Broadcaster: an event on the current span plus an audit event."""
    return trace_signal(
        getattr(model.meta.signals, signal),
        name=signal,
        model=model.__name__,
        source=SOURCE,
        asynchronous=asynchronous,
    )
