"""SQLAlchemy ORM source: every flush, the writes of its unit of work, and ORM-enabled DML statements.

How it attaches (SQLAlchemy 1.4, 2.0 and 2.1; see docs/sources/sqlalchemy.md for the per-operation table):

* **Flushes** — ``Session.flush`` is wrapped at class level (every ``Session``, its subclasses such as
  SQLModel's, the ``sync_session`` of every ``AsyncSession``, scoped and Flask-SQLAlchemy sessions,
  sessions made before ``install()``; autoflush and ``commit()`` call it too). A flush with work to do
  is one operation ``flush`` (span ``flush {db.namespace}``) in the core's :meth:`Engine.entry` scope:
  current while the flush runs (the driver's statement spans of opentelemetry-instrumentation-sqlalchemy
  nest under it), ended as an ERROR at once with the exception that leaves it (an ``IntegrityError``,
  a user's listener raising). A clean session's flush (each query's autoflush) costs two attribute
  checks and is not traced.
* **Batches** — inside it, one operation per (mapper, operation) batch of the unit of work (span
  ``insert orders``, ``update customers``, ``delete lines``) from the first ``before_*`` mapper event of
  the batch to its last ``after_*`` one, with ``sigtrace.rows_affected``; one audit event per object
  written (model, table, pk, changed field names, ``{field: [old, new]}`` with ``capture_values``). An
  object marked dirty without a net change to a column is not written, so not reported.
* **ORM statements** — ``update(Order).where(...)``, ``delete(...)``, ``insert(...).values([...])``,
  ``Query.update/delete`` through ``Session.execute``: a ``do_orm_execute`` listener runs the statement
  (``invoke_statement``, SQLAlchemy's own way of wrapping an execution; the application gets the same
  result) inside an entry scope: span ``update orders`` with the rows affected, one audit event with the
  filter as SQL text with placeholders (never its values). ``bulk_save_objects`` /
  ``bulk_insert_mappings`` / ``bulk_update_mappings`` (which bypass the unit of work's events): one
  operation per model and kind, with the rows and their pks. Reads (``select``) only with
  ``audit_reads``.
* **Transactions** — every write is held for its session's transaction (``sigtrace/sources/kit/sa_session.py``,
  shared with the Flask-SignalBus source): audited ``ok`` when the outermost transaction commits,
  ``rolled_back`` when it or the savepoint around it (``begin_nested``) rolls back.

Nothing here emits SQL, triggers an autoflush or a lazy load: objects are read through their
instance state only (``state.dict``, identity, committed attribute history with
``PASSIVE_NO_INITIALIZE``), and correlated by identity, never by equality (models may define ``__eq__``).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import re
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry.util.types import AttributeValue

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.engine import Engine, instrumentation_suppressed
from sigtrace.core.operation import Operation
from sigtrace.sources.kit import Source
from sigtrace.sources.kit.sa_session import TRACKER

__all__ = ["SUPPORTED_VERSIONS", "SQLAlchemySource", "attach_when_detected", "supported_version"]

SOURCE: Final = "sqlalchemy"
#: The SQLAlchemy versions this source is built and tested for (checked at install: a warning outside).
SUPPORTED_VERSIONS: Final = ">=1.4,<2.2"
_MIN: Final = (1, 4)
_MAX: Final = (2, 2)

#: Mapper events -> (operation, phase). Listened to on the ``Mapper`` class: every mapper.
_MAPPER_EVENTS: Final = (
    ("before_insert", semconv.OPERATION_INSERT, True),
    ("after_insert", semconv.OPERATION_INSERT, False),
    ("before_update", semconv.OPERATION_UPDATE, True),
    ("after_update", semconv.OPERATION_UPDATE, False),
    ("before_delete", semconv.OPERATION_DELETE, True),
    ("after_delete", semconv.OPERATION_DELETE, False),
)

_KIND_FLUSH: Final = "source.sqlalchemy.flush"
_KIND_BATCH: Final = "source.sqlalchemy.batch"
_KIND_EXECUTE: Final = "source.sqlalchemy.execute"
_KIND_BULK: Final = "source.sqlalchemy.bulk"

#: SQLAlchemy, imported once, through importlib: typed as Any, as it must work against 1.4 (no types) and 2.
_sa: Any = importlib.import_module("sqlalchemy")
_orm: Any = importlib.import_module("sqlalchemy.orm")
_attributes: Any = importlib.import_module("sqlalchemy.orm.attributes")
_instance_state: Callable[[Any], Any] = _attributes.instance_state
_get_state_history: Callable[..., Any] = _attributes.get_state_history
_PASSIVE_NO_INITIALIZE: Final[Any] = importlib.import_module("sqlalchemy.orm.base").PASSIVE_NO_INITIALIZE


def _version_tuple(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def supported_version(version: str | None = None) -> bool:
    """Whether a SQLAlchemy version (default: the installed one) is in :data:`SUPPORTED_VERSIONS`."""
    return _MIN <= _version_tuple(version or _sa.__version__) < _MAX


def attach_when_detected() -> bool:
    """Attach without being named on SQLAlchemy 2 only.

    SQLAlchemy 1.4 is, in this project, the stack of Flask-SignalBus (Flask-SQLAlchemy 2.5): there the
    source attaches only when named (``sources=["signalbus", "sqlalchemy"]``), so an application that
    traces its outbox sees no new operations until it asks for its flushes.
    """
    return _version_tuple(str(_sa.__version__)) >= (2, 0)


class _FlushOperation(Operation):
    """The flush: named after the database it writes to (``flush {db.namespace}``); it has no collection."""

    __slots__ = ()

    @property
    def span_name(self) -> str:
        return f"{self.name} {self.namespace}" if self.namespace else self.name


class _Mapper:
    """What the operations of one mapper need from it, looked up once."""

    __slots__ = ("columns", "model", "pk_keys", "table")

    def __init__(self, mapper: Any) -> None:
        self.model: str = getattr(mapper.class_, "__name__", str(mapper.class_))
        table = getattr(mapper, "local_table", None)
        name = getattr(table, "name", None)
        self.table: str | None = name if isinstance(name, str) else None
        self.columns = frozenset(prop.key for prop in mapper.column_attrs)
        keys: list[str] = []
        for column in mapper.primary_key:
            try:
                keys.append(mapper.get_property_by_column(column).key)
            except Exception:  # noqa: BLE001 - a pk column no property maps: pk from identity only
                continue
        self.pk_keys: tuple[str, ...] = tuple(keys)


class _Batch:
    """One (mapper, operation) batch of a flush: the objects begun, those written, their audit items."""

    __slots__ = ("done", "items", "op", "skipped", "started")

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.started = 0
        self.done = 0
        self.items: list[dict[str, Any]] = []
        self.skipped: set[int] = set()


class _Flush:
    """The flush running in this context: its session and its open batches."""

    __slots__ = ("batches", "db", "session")

    def __init__(self, session: Any, db: tuple[str | None, str | None]) -> None:
        self.session = session
        self.db = db
        self.batches: dict[tuple[int, str], _Batch] = {}


#: Set and reset by the flush wrapper around the flush: the mapper events of that flush find it here.
_FLUSH: ContextVar[_Flush | None] = ContextVar("sigtrace_sqlalchemy_flush", default=None)

_db_cache: weakref.WeakKeyDictionary[Any, tuple[str | None, str | None]] = weakref.WeakKeyDictionary()


def _db_of_bind(bind: Any) -> tuple[str | None, str | None]:
    """``db.system.name`` and ``db.namespace`` of an engine or connection (cached per bind)."""
    if bind is None:
        return None, None
    try:
        return _db_cache[bind]
    except (KeyError, TypeError):
        pass
    dialect = getattr(getattr(bind, "dialect", None), "name", None)
    system = semconv.db_system_name(dialect) if isinstance(dialect, str) else None
    namespace = None
    if system is not None and system != "sqlite":
        url = getattr(bind, "url", None) or getattr(getattr(bind, "engine", None), "url", None)
        database = getattr(url, "database", None)
        namespace = database if isinstance(database, str) and database else None
    db = (system, namespace)
    with contextlib.suppress(TypeError):  # a bind that takes no weak reference: not cached
        _db_cache[bind] = db
    return db


def _db_of_session(session: Any, mapper: Any = None) -> tuple[str | None, str | None]:
    bind = getattr(session, "bind", None)
    if bind is None:
        try:
            bind = session.get_bind(mapper=mapper) if mapper is not None else session.get_bind()
        except Exception:  # noqa: BLE001 - binds per mapper only, or none: the flush names no database
            return None, None
    return _db_of_bind(bind)


def _pk_text(facts: _Mapper, state: Any) -> str | None:
    """The pk of an object without loading anything: its identity, else the pk attributes it holds."""
    identity = state.identity if state.key is not None else None
    if identity is None:
        values = [state.dict.get(key) for key in facts.pk_keys]
        if not values or any(value is None for value in values):
            return None
        identity = values
    return str(identity[0]) if len(identity) == 1 else ",".join(str(part) for part in identity)


def _changes(facts: _Mapper, state: Any, with_values: bool) -> tuple[tuple[str, ...], dict[str, list[Any]] | None]:
    """The columns with a net change (committed attribute history, never loading), and ``[old, new]`` of each."""
    changed: list[str] = []
    values: dict[str, list[Any]] | None = {} if with_values else None
    columns = facts.columns
    for key in list(state.committed_state):
        if key not in columns:
            continue
        history = _get_state_history(state, key, _PASSIVE_NO_INITIALIZE)
        if not (history.added or history.deleted):
            continue
        changed.append(key)
        if values is not None:
            values[key] = [
                history.deleted[0] if history.deleted else None,
                history.added[0] if history.added else None,
            ]
    changed.sort()
    return tuple(changed), values


def _has_changes(facts: _Mapper, state: Any) -> bool:
    columns = facts.columns
    for key in list(state.committed_state):
        if key in columns:
            history = _get_state_history(state, key, _PASSIVE_NO_INITIALIZE)
            if history.added or history.deleted:
                return True
    return False


def _statement_table(statement: Any) -> str | None:
    table = getattr(statement, "table", None)
    name = getattr(table, "name", None)
    if isinstance(name, str):
        return name
    # An ORM entity as the target (``update(Order)``): its mapper's table.
    try:
        return _Mapper(_sa.inspect(table)).table
    except Exception:  # noqa: BLE001 - not an entity
        return None


def _filter_text(statement: Any) -> str | None:
    """The WHERE clause as SQL text with placeholders (bound values are never rendered)."""
    where = getattr(statement, "whereclause", None)
    if where is None:
        return None
    try:
        return str(where)
    except Exception:  # noqa: BLE001 - a construct the default dialect cannot compile: no filter
        return None


#: Filter text per compiled statement: SQLAlchemy compiles each statement shape once (its compiled cache)
#: and hands the same compiled object to every execution of that shape; compiling a WHERE clause here
#: costs more than a small UPDATE itself, so it is done once per compiled object.
_filters: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def _filter_of(statement: Any, result: Any) -> str | None:
    compiled = getattr(getattr(result, "context", None), "compiled", None)
    if compiled is None:
        return _filter_text(statement)
    try:
        return _filters[compiled]
    except KeyError:
        pass
    except TypeError:  # a compiled object that takes no weak reference
        return _filter_text(statement)
    compiled_statement = getattr(compiled, "statement", None)
    text = _filter_text(statement if compiled_statement is None else compiled_statement)
    with contextlib.suppress(TypeError):
        _filters[compiled] = text
    return text


def _rows_of(result: Any, state: Any) -> int | None:
    """Rows a statement wrote: the driver's row count, else (an INSERT whose driver gives none) its rows of values."""
    try:
        rows = result.rowcount
    except Exception:  # noqa: BLE001 - a result without a row count (an ORM bulk INSERT's)
        rows = None
    if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0:
        return rows
    if not state.is_insert:
        return None
    parameters = state.parameters
    if isinstance(parameters, list | tuple) and parameters:
        return len(parameters)  # executemany: one row per parameter set
    # ``insert(...).values([...])``: one statement, several rows (the statement's own list of them).
    multi = getattr(state.statement, "_multi_values", None)
    if isinstance(multi, tuple) and len(multi) == 1 and isinstance(multi[0], list | tuple):
        return len(multi[0])
    return None


class SQLAlchemySource(Source):
    """Traces the SQLAlchemy ORM: flushes, their batches, ORM DML statements and bulk writes."""

    name = SOURCE

    def __init__(self, engine: Engine, options: Any = None) -> None:
        super().__init__(engine, options)
        self._mappers: weakref.WeakKeyDictionary[Any, _Mapper] = weakref.WeakKeyDictionary()
        self._seq = itertools.count()

    @property
    def _capture_values(self) -> bool:
        return bool(getattr(self.options, "capture_values", False))

    @property
    def _audit_reads(self) -> bool:
        return bool(getattr(self.options, "audit_reads", False))

    def attach(self) -> None:
        version = str(_sa.__version__)
        if _version_tuple(version) < (1, 4):
            raise RuntimeError(
                f"sigtrace's sqlalchemy source needs SQLAlchemy {SUPPORTED_VERSIONS}; SQLAlchemy {version} is installed"
            )
        # Outside SUPPORTED_VERSIONS, install() warns (and attaches only when named): sigtrace/sources/__init__.py.
        session_module = importlib.import_module("sqlalchemy.orm.session")
        self.patch(session_module, "Session.flush", self._wrap_flush)
        self.patch(session_module, "Session._bulk_save_mappings", self._wrap_bulk)
        mapper_class = _orm.Mapper
        for event_name, operation, before in _MAPPER_EVENTS:
            self._listen(mapper_class, event_name, self._before(operation) if before else self._after(operation))
        self._listen(_orm.Session, "do_orm_execute", self._on_orm_execute)
        TRACKER.acquire()
        self.on_detach(TRACKER.release)

    def _listen(self, target: Any, name: str, listener: Callable[..., Any]) -> None:
        _sa.event.listen(target, name, listener)
        self.on_detach(lambda: _sa.event.remove(target, name, listener))

    def _facts(self, mapper: Any) -> _Mapper:
        facts = self._mappers.get(mapper)
        if facts is None:
            facts = self._mappers[mapper] = _Mapper(mapper)
        return facts

    # --- flushes ---

    def _wrap_flush(self, wrapped: Callable[..., Any], session: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        # The cheap path first: a clean session's flush (every query's autoflush) does nothing.
        if session._flushing or session._is_clean() or _FLUSH.get() is not None:
            return wrapped(*args, **kwargs)
        engine = self.engine
        op: Operation | None = None
        record: _Flush | None = None
        key: Hashable = None
        try:
            # An excluded flush (``operation:flush``) still runs its batches in an observing scope.
            if not instrumentation_suppressed():
                db = _db_of_session(session)
                record = _Flush(session, db)
                op = _FlushOperation(
                    source=SOURCE,
                    name=semconv.OPERATION_FLUSH,
                    db_system=db[0],
                    namespace=db[1],
                    audit_items=(),  # its objects are audited, by their batches
                )
                key = ("flush", id(record))
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(_KIND_FLUSH, exc)
        if record is None or op is None:
            return wrapped(*args, **kwargs)
        token = _FLUSH.set(record)
        try:
            with engine.entry(op, expect=key) as scope:
                if scope.operation is not None:
                    # In the in-flight table: a flush that never returns is reaped as an orphan.
                    engine.claim(key, obj=record)
                try:
                    return wrapped(*args, **kwargs)
                except BaseException as exc:
                    # The batches the failure interrupted end first, at once; the scope then ends the flush.
                    for batch in list(record.batches.values()):
                        if batch.op is not _NO_OP and not batch.op.done:
                            engine.end(op=batch.op, error=exc)
                    raise
        finally:
            _FLUSH.reset(token)

    def _before(self, operation: str) -> Callable[[Any, Any, Any], None]:
        def before(mapper: Any, connection: Any, target: Any) -> None:
            record = _FLUSH.get()
            if record is None:
                return  # a flush begun before install(), or the flush itself excluded
            try:
                self._begin_item(record, operation, mapper, target)
            except Exception as exc:  # noqa: BLE001 - the safety net
                safety.report(_KIND_BATCH, exc)

        return before

    def _after(self, operation: str) -> Callable[[Any, Any, Any], None]:
        def after(mapper: Any, connection: Any, target: Any) -> None:
            record = _FLUSH.get()
            if record is None:
                return
            try:
                self._end_item(record, operation, mapper, target)
            except Exception as exc:  # noqa: BLE001 - the safety net
                safety.report(_KIND_BATCH, exc)

        return after

    def _begin_item(self, record: _Flush, operation: str, mapper: Any, target: Any) -> None:
        facts = self._facts(mapper)
        state = _instance_state(target)
        if operation == semconv.OPERATION_UPDATE and not _has_changes(facts, state):
            batch = record.batches.get((id(mapper), operation))
            if batch is not None:
                batch.skipped.add(id(state))
            else:
                # Not written: remember it on a batch that may never begin (nothing to report).
                record.batches[(id(mapper), operation)] = batch = _Batch(_NO_OP)
                batch.skipped.add(id(state))
            return
        batch = record.batches.get((id(mapper), operation))
        if batch is None or batch.op is _NO_OP or batch.op.done:
            skipped = batch.skipped if batch is not None and batch.op is _NO_OP else set()
            op = Operation(
                source=SOURCE,
                name=operation,
                model=facts.model,
                collection=facts.table,
                db_system=record.db[0],
                namespace=record.db[1],
            )
            started = self.engine.begin(op, ("batch", next(self._seq)))
            if started is None:
                return  # excluded (model, operation) or suppressed
            batch = record.batches[(id(mapper), operation)] = _Batch(started)
            batch.skipped = skipped
            tx = TRACKER.current(record.session)
            if tx is not None:
                started.transaction = tx
        batch.started += 1

    def _end_item(self, record: _Flush, operation: str, mapper: Any, target: Any) -> None:
        batch = record.batches.get((id(mapper), operation))
        if batch is None:
            return
        state = _instance_state(target)
        if batch.skipped and id(state) in batch.skipped:
            batch.skipped.discard(id(state))
            return
        op = batch.op
        if op is _NO_OP or op.done:
            return
        facts = self._facts(mapper)
        item: dict[str, Any] = {"pk": _pk_text(facts, state)}
        if operation != semconv.OPERATION_DELETE:
            capture = self._capture_values
            changed, values = _changes(facts, state, capture)
            item["changed_fields"] = list(changed)
            if capture:
                item["values"] = values
        batch.items.append(item)
        batch.done += 1
        if batch.done >= batch.started:
            rows = len(batch.items)
            op.audit_items = batch.items
            attributes: dict[str, AttributeValue] = {semconv.SIGTRACE_ROWS_AFFECTED: rows}
            if rows > 1:
                attributes[semconv.DB_OPERATION_BATCH_SIZE] = rows
            else:
                op.pk = item["pk"]
            self.engine.end(op=op, attributes=attributes)

    # --- ORM statements through Session.execute ---

    def _on_orm_execute(self, state: Any) -> Any:
        op: Operation | None = None
        key: Hashable = None
        try:
            op = self._statement_op(state)
            key = ("execute", next(self._seq))
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(_KIND_EXECUTE, exc)
        if op is None:
            return None  # SQLAlchemy goes on as if no listener were here
        engine = self.engine
        with engine.entry(op, expect=key) as scope:
            traced = scope.operation
            if traced is not None:
                engine.claim(key)
            result = state.invoke_statement()
            if traced is not None:
                try:
                    self._statement_done(traced, state, result)
                except Exception as exc:  # noqa: BLE001 - the safety net
                    safety.report(_KIND_EXECUTE, exc)
        return result

    def _statement_op(self, state: Any) -> Operation | None:
        if state.is_update:
            name = semconv.OPERATION_UPDATE
        elif state.is_delete:
            name = semconv.OPERATION_DELETE
        elif state.is_insert:
            name = semconv.OPERATION_INSERT
        elif state.is_select and self._audit_reads:
            name = semconv.OPERATION_SELECT
        else:
            return None
        if _FLUSH.get() is not None and name == semconv.OPERATION_SELECT:
            return None  # a load inside a flush (cascades): part of the flush
        mapper = state.bind_mapper
        statement = state.statement
        model = getattr(getattr(mapper, "class_", None), "__name__", None) if mapper is not None else None
        table = self._facts(mapper).table if mapper is not None else _statement_table(statement)
        if not self.engine.enabled(SOURCE, model, name):
            return None
        db = _db_of_session(state.session, mapper)
        op = Operation(
            source=SOURCE,
            name=name,
            model=model,
            collection=table,
            db_system=db[0],
            namespace=db[1],
            write=name != semconv.OPERATION_SELECT,
        )
        return op

    def _statement_done(self, op: Operation, state: Any, result: Any) -> None:
        where = _filter_of(state.statement, result)
        if where is not None:
            op.audit[semconv.AUDIT_FILTER] = where
        if op.write:
            rows = _rows_of(result, state)
            if rows is not None:
                op.attributes[semconv.SIGTRACE_ROWS_AFFECTED] = rows
                op.audit[semconv.AUDIT_ROWS] = rows
            tx = TRACKER.current(state.session)
            if tx is not None:
                op.transaction = tx

    # --- bulk_save_objects / bulk_insert_mappings / bulk_update_mappings ---

    def _wrap_bulk(self, wrapped: Callable[..., Any], session: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        op: Operation | None = None
        mappings: list[Any] = []
        isstates = False
        facts: _Mapper | None = None
        try:
            mapper = _sa.inspect(args[0] if args else kwargs["mapper"])
            given = args[1] if len(args) > 1 else kwargs["mappings"]
            if not isinstance(given, list | tuple):
                given = list(given)  # an iterator (bulk_save_objects groups): hand the library the same items
                if len(args) > 1:
                    args = (args[0], given, *args[2:])
                else:
                    kwargs = {**kwargs, "mappings": given}
            mappings = list(given)
            isupdate = bool(args[2] if len(args) > 2 else kwargs.get("isupdate"))
            isstates = bool(args[3] if len(args) > 3 else kwargs.get("isstates"))
            facts = self._facts(mapper)
            db = _db_of_session(session, mapper)
            op = Operation(
                source=SOURCE,
                name=semconv.OPERATION_UPDATE if isupdate else semconv.OPERATION_INSERT,
                model=facts.model,
                collection=facts.table,
                db_system=db[0],
                namespace=db[1],
                signal="bulk_save_mappings",
                attributes={semconv.DB_OPERATION_BATCH_SIZE: len(mappings)},
            )
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(_KIND_BULK, exc)
        if op is None or facts is None:
            return wrapped(*args, **kwargs)
        engine = self.engine
        key = ("bulk", next(self._seq))
        with engine.entry(op, expect=key) as scope:
            traced = scope.operation
            if traced is not None:
                engine.claim(key)
            result = wrapped(*args, **kwargs)
            if traced is not None:
                try:
                    _bulk_audit(traced, facts, mappings, isstates)
                    tx = TRACKER.current(session)
                    if tx is not None:
                        traced.transaction = tx
                except Exception as exc:  # noqa: BLE001 - the safety net
                    safety.report(_KIND_BULK, exc)
        return result


#: Marks a batch key whose objects had nothing to write (an update without a net change).
_NO_OP: Final = Operation(source=SOURCE, name="none")


def _bulk_audit(op: Operation, facts: _Mapper, mappings: Iterable[Any], isstates: bool) -> None:
    pks: list[str] = []
    rows = 0
    for item in mappings:
        rows += 1
        if isstates:
            pk = _pk_text(facts, item)
        else:
            values = [item.get(key) for key in facts.pk_keys] if isinstance(item, Mapping) else []
            pk = None if not values or any(v is None for v in values) else ",".join(str(v) for v in values)
        if pk is not None:
            pks.append(pk)
    op.attributes[semconv.SIGTRACE_ROWS_AFFECTED] = rows
    op.audit[semconv.AUDIT_ROWS] = rows
    if pks:
        op.audit[semconv.AUDIT_PKS] = pks[: semconv.MAX_AUDIT_PKS]
        if len(pks) > semconv.MAX_AUDIT_PKS:
            op.audit[semconv.AUDIT_PKS_TRUNCATED] = True
