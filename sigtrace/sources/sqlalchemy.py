"""SQLAlchemy ORM source: every flush, the writes of its unit of work, and ORM-enabled DML statements.

How it attaches (SQLAlchemy 1.4, 2.0 and 2.1; see docs/sources/sqlalchemy.md for the per-operation table):

* **Flushes** — ``Session._flush``, what ``Session.flush`` calls when the session has work to do, is
  wrapped at class level (every ``Session``, its subclasses such as SQLModel's, the ``sync_session`` of
  every ``AsyncSession``, scoped and Flask-SQLAlchemy sessions, sessions made before ``install()``;
  autoflush and ``commit()`` call it too). A flush with work to do is one operation ``flush`` (span
  ``flush {db.namespace}``) in the kit's entry scope: current while the flush runs (the driver's
  statement spans of opentelemetry-instrumentation-sqlalchemy nest under it), ended as an ERROR at
  once, with the batches it interrupted, by the exception that leaves it.
  A clean session's flush (each query's autoflush) returns before ``_flush``: sigtrace adds nothing to it.
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

import functools
import importlib
import itertools
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.engine import Engine
from sigtrace.core.operation import Operation
from sigtrace.core.text import safe_text
from sigtrace.sources.kit import Entry, FactsCache, ModelFacts, Source, batch_audit, pk_text
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

#: SQLAlchemy, imported once, through importlib: typed as Any, as it must work against 1.4 (no types) and 2.
_sa: Any = importlib.import_module("sqlalchemy")
_orm: Any = importlib.import_module("sqlalchemy.orm")
_attributes: Any = importlib.import_module("sqlalchemy.orm.attributes")
_get_state_history: Callable[..., Any] = _attributes.get_state_history
_PASSIVE_NO_INITIALIZE: Final[Any] = importlib.import_module("sqlalchemy.orm.base").PASSIVE_NO_INITIALIZE
_UnmappedColumnError: type[Exception] = importlib.import_module("sqlalchemy.orm.exc").UnmappedColumnError


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


# --- facts, looked up once ---


@dataclass(frozen=True, slots=True)
class _MapperFacts(ModelFacts):
    """A mapper's model and table, and what its writes read from its objects: column and pk attribute keys.

    The database is the session's bind, not the mapper's: each operation names its own.
    """

    columns: frozenset[str] = frozenset()
    pk_keys: tuple[str, ...] = ()


def _mapper_facts(mapper: Any) -> _MapperFacts:
    name = getattr(getattr(mapper, "local_table", None), "name", None)
    keys: list[str] = []
    for column in mapper.primary_key:
        try:
            keys.append(mapper.get_property_by_column(column).key)
        except _UnmappedColumnError:  # a pk column no property maps: the pk from the identity only
            continue
    return _MapperFacts(
        model=getattr(mapper.class_, "__name__", str(mapper.class_)),
        collection=name if isinstance(name, str) else None,
        columns=frozenset(prop.key for prop in mapper.column_attrs),
        pk_keys=tuple(keys),
    )


_facts: FactsCache[Any, _MapperFacts] = FactsCache(_mapper_facts)


def _database_of_bind(bind: Any) -> tuple[str | None, str | None]:
    """``db.system.name`` from the dialect, ``db.namespace`` from the URL's database (never for SQLite)."""
    dialect = getattr(getattr(bind, "dialect", None), "name", None)
    system = semconv.db_system_name(dialect) if isinstance(dialect, str) else None
    if system is None or system == "sqlite":
        return system, None
    url = getattr(bind, "url", None) or getattr(getattr(bind, "engine", None), "url", None)
    database = getattr(url, "database", None)
    return system, database if isinstance(database, str) and database else None


_databases: FactsCache[Any, tuple[str | None, str | None]] = FactsCache(_database_of_bind)


def _db_of_session(session: Any, mapper: Any = None) -> tuple[str | None, str | None]:
    bind = getattr(session, "bind", None)
    if bind is None:
        try:
            bind = session.get_bind(mapper=mapper) if mapper is not None else session.get_bind()
        except Exception:  # noqa: BLE001 - binds per mapper only, or none: the flush names no database
            return None, None
    if bind is None:
        return None, None
    return _databases.cached(id(bind)) or _databases(bind)


# --- what an object's state says, without loading anything ---


def _pk_of_values(facts: _MapperFacts, values: Mapping[str, Any]) -> str | None:
    parts = [values.get(key) for key in facts.pk_keys]
    return None if not parts or any(part is None for part in parts) else pk_text(parts)


def _pk_of(facts: _MapperFacts, state: Any) -> str | None:
    """The pk of an object: its identity, else the pk attributes it holds (all of them, or none)."""
    key = state.key
    if key is not None:
        identity = key[1]  # state.identity, without its property frame
        if len(identity) == 1:
            # A one-column pk (most models): pk_text's answer for it, without its type checks and generator.
            part = identity[0]
            return None if part is None else safe_text(part)
        return pk_text(identity)
    return _pk_of_values(facts, state.dict)


def _changes(facts: _MapperFacts, state: Any, with_values: bool) -> tuple[tuple[str, ...], dict[str, list[Any]] | None]:
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


def _has_changes(facts: _MapperFacts, state: Any) -> bool:
    columns = facts.columns
    for key in list(state.committed_state):
        if key in columns:
            history = _get_state_history(state, key, _PASSIVE_NO_INITIALIZE)
            if history.added or history.deleted:
                return True
    return False


# --- what a statement says ---


def _statement_table(statement: Any) -> str | None:
    table = getattr(statement, "table", None)
    name = getattr(table, "name", None)
    if isinstance(name, str):
        return name
    # An ORM entity as the target (``update(Order)``): its mapper's table.
    mapper = getattr(_sa.inspect(table, raiseerr=False), "mapper", None)
    return _facts(mapper).collection if mapper is not None else None


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
#: costs more than a small UPDATE itself, so it is done once per compiled object. Kept as "" for a statement
#: without a filter (a WHERE clause's text is never empty), so that a hit is one ``cached`` call, no frame.
_filters: FactsCache[Any, str] = FactsCache(lambda compiled: _filter_text(compiled.statement) or "")


def _filter_of(statement: Any, result: Any) -> str | None:
    compiled = getattr(getattr(result, "context", None), "compiled", None)
    if getattr(compiled, "statement", None) is None:
        return _filter_text(statement)
    return (_filters.cached(id(compiled)) or _filters(compiled)) or None


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


def _bulk_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_MapperFacts, Any, list[Any], bool, bool]:
    """``Session._bulk_save_mappings(mapper, mappings, isupdate, isstates, ...)``: its facts, mapper and arguments."""
    mapper = _sa.inspect(args[0] if args else kwargs["mapper"])
    mappings = args[1] if len(args) > 1 else kwargs["mappings"]
    isupdate = bool(args[2] if len(args) > 2 else kwargs.get("isupdate"))
    isstates = bool(args[3] if len(args) > 3 else kwargs.get("isstates"))
    return _facts(mapper), mapper, mappings, isupdate, isstates


# --- one flush in this context ---


class _Batch:
    """One (mapper, operation) batch of a flush: its operation (``None``: nothing written yet), the objects
    begun and written, their audit items, and the objects that have nothing to write (no net change)."""

    __slots__ = ("done", "items", "op", "skipped", "started")

    def __init__(self, op: Operation | None, skipped: set[int] | None = None) -> None:
        self.op = op
        self.started = 0
        self.done = 0
        self.items: list[dict[str, Any]] = []
        self.skipped: set[int] = set() if skipped is None else skipped


class _Flush:
    """The flush running in this context: its session, its database and its batches."""

    __slots__ = ("batches", "db", "session")

    def __init__(self, session: Any, db: tuple[str | None, str | None]) -> None:
        self.session = session
        self.db = db
        self.batches: dict[tuple[int, str], _Batch] = {}


#: Set by the flush's entry and cleared when the flush returns: the mapper events of that flush find it here.
_FLUSH: ContextVar[_Flush | None] = ContextVar("sigtrace_sqlalchemy_flush", default=None)


class SQLAlchemySource(Source):
    """Traces the SQLAlchemy ORM: flushes, their batches, ORM DML statements and bulk writes."""

    name = SOURCE

    def __init__(self, engine: Engine, options: Any = None) -> None:
        super().__init__(engine, options)
        self._seq = itertools.count()
        self._flush = self.entry("flush", self._flush_entry, track=True)
        self._execute = self.entry("execute", self._statement_entry, self._statement_done, track=True)
        self._bulk = self.entry("bulk", self._bulk_entry, self._bulk_done, track=True)

    def attach(self) -> None:
        version = str(_sa.__version__)
        if _version_tuple(version) < (1, 4):
            raise RuntimeError(
                f"sigtrace's sqlalchemy source needs SQLAlchemy {SUPPORTED_VERSIONS}; SQLAlchemy {version} is installed"
            )
        # Outside SUPPORTED_VERSIONS, install() warns (and attaches only when named): sigtrace/sources/__init__.py.
        session_module = importlib.import_module("sqlalchemy.orm.session")
        # Not Session.flush: a clean session's flush (every query's autoflush) then runs no sigtrace code at all,
        # and a flush with work skips the checks Session.flush has made already (1.4 to 2.1: its only caller).
        self.patch(session_module, "Session._flush", self._wrap_flush)
        self.patch(session_module, "Session._bulk_save_mappings", self._wrap_bulk)
        for event_name, operation, before in _MAPPER_EVENTS:
            # A partial (C) of the method: one Python frame fewer per object written, twice; under the method's
            # name (what SQLAlchemy's listener list shows).
            method = self._begin_item if before else self._end_item
            hook = functools.update_wrapper(functools.partial(method, operation), method)
            # raw: the object's InstanceState as the target, which is what the hooks read; with retval, SQLAlchemy
            # calls the hook as it is instead of through its own Python wrapper (``MapperEvents._listen``: one
            # frame, a list and ``state.obj()`` per event). The return value of these events is ignored (1.4-2.1).
            self._listen(_orm.Mapper, event_name, self.receiver("batch", hook), raw=True, retval=True)
        self._listen(_orm.Session, "do_orm_execute", self._on_orm_execute)
        if self.holds_writes:  # spans only: nothing waits for a commit (Engine.holds_writes), no session listener
            TRACKER.acquire()
            self.on_detach(TRACKER.release)

    def _listen(self, target: Any, name: str, listener: Callable[..., Any], **options: bool) -> None:
        _sa.event.listen(target, name, listener, **options)
        self.on_detach(lambda: _sa.event.remove(target, name, listener))

    # --- flushes ---

    def _wrap_flush(self, wrapped: Callable[..., Any], session: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        # A session flushed inside another's flush (from its events): part of the outer flush, as its writes.
        if _FLUSH.get() is not None:
            return wrapped(*args, **kwargs)
        try:
            return self._flush(wrapped, session, args, kwargs)
        finally:
            _FLUSH.set(None)  # it was None when the flush began

    def _flush_entry(self, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        # Under suppress_instrumentation() the entry scope's own check leaves the flush untraced, and
        # Engine.begin its batches: not read here a second time.
        record = _Flush(session, _db_of_session(session))
        # Set even where the flush itself is excluded (``operation:flush``): its batches are still traced,
        # inside the entry scope, which ends those a failure interrupts at once.
        _FLUSH.set(record)
        op = _FlushOperation(
            SOURCE,
            semconv.OPERATION_FLUSH,
            db_system=record.db[0],
            namespace=record.db[1],
            audit_items=(),  # its objects are audited, by their batches
        )
        return op, ("flush", next(self._seq))

    def _begin_item(self, operation: str, mapper: Any, connection: Any, state: Any) -> None:
        """``before_insert`` / ``before_update`` / ``before_delete`` of one object (its state: ``raw``)."""
        record = _FLUSH.get()
        if record is None:  # a flush begun before install()
            return
        facts = _facts.cached(id(mapper)) or _facts(mapper)
        key = (id(mapper), operation)
        batch = record.batches.get(key)
        if operation == semconv.OPERATION_UPDATE and not _has_changes(facts, state):
            # Not written: remembered (on a batch that may never begin) so that its after event is ignored.
            if batch is None:
                batch = record.batches[key] = _Batch(None)
            batch.skipped.add(id(state))
            return
        if batch is None or batch.op is None or batch.op.done:
            op = Operation(  # the constructor with every field (not ModelFacts.operation's setattr loop)
                SOURCE,
                operation,
                model=facts.model,
                collection=facts.collection,
                db_system=record.db[0],
                namespace=record.db[1],
            )
            started = self.engine.begin(op, ("batch", next(self._seq)))
            if started is None:
                return  # excluded (model, operation) or suppressed
            skipped = batch.skipped if batch is not None and batch.op is None else None
            batch = record.batches[key] = _Batch(started, skipped)
            tx = TRACKER.current(record.session)
            if tx is not None:
                started.transaction = tx
        batch.started += 1

    def _end_item(self, operation: str, mapper: Any, connection: Any, state: Any) -> None:
        """``after_insert`` / ``after_update`` / ``after_delete`` of one object (its state: ``raw``)."""
        record = _FLUSH.get()
        if record is None:
            return
        batch = record.batches.get((id(mapper), operation))
        if batch is None:
            return
        if batch.skipped and id(state) in batch.skipped:
            batch.skipped.discard(id(state))
            return
        op = batch.op
        if op is None or op.done:
            return
        facts = _facts.cached(id(mapper)) or _facts(mapper)
        pk = _pk_of(facts, state)
        item: dict[str, Any] = {"pk": pk}
        changed: tuple[str, ...] | None = None
        values: dict[str, list[Any]] | None = None
        if operation != semconv.OPERATION_DELETE:
            capture = self.capture_values
            changed, values = _changes(facts, state, capture)
            item["changed_fields"] = list(changed)
            if capture:
                item["values"] = values
        items = batch.items
        items.append(item)
        batch.done += 1
        if batch.done >= batch.started:
            rows = len(items)
            # Set here rather than passed to Engine.end (whose ``**updates`` go through Operation.update's loop).
            attributes = op.attributes
            attributes[semconv.SIGTRACE_ROWS_AFFECTED] = rows
            if rows > 1:
                attributes[semconv.DB_OPERATION_BATCH_SIZE] = rows
                op.audit_items = items  # one audit event per object
            else:
                # One object (the usual flush): its fields are the operation's, and its one audit event is built
                # as every source's (the fields in the same order; no per-item copy and merge of the event).
                op.pk = pk
                op.changed_fields = changed
                op.values = values
            self.engine.end(op=op)

    # --- ORM statements through Session.execute ---

    def _on_orm_execute(self, state: Any) -> Any:
        # Every Session.execute (each query) comes here: ORMExecuteState's is_update / is_delete / is_insert /
        # is_select read as what those properties return (the statement's flags), without their four frames.
        # Under the safety net, which a ``try`` costs nothing on CPython 3.11 until it catches; the statement
        # itself (``_execute``) runs outside it, so that the application's own errors reach the application.
        try:
            statement = state.statement
            if statement.is_dml:
                if not (statement.is_update or statement.is_delete or statement.is_insert):
                    return None
            elif not (self.audit_reads and statement.is_select):
                return None  # SQLAlchemy goes on as if no listener were here
            invoke = state.invoke_statement
        except Exception as exc:  # noqa: BLE001 - the safety net (tests/reliability/test_fuzz.py)
            safety.report(self.where("orm_execute"), exc)
            return None  # as above: SQLAlchemy runs the statement itself
        return self._execute(invoke, state, (), {})

    def _statement_entry(self, state: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        if state.is_update:
            name = semconv.OPERATION_UPDATE
        elif state.is_delete:
            name = semconv.OPERATION_DELETE
        elif state.is_insert:
            name = semconv.OPERATION_INSERT
        elif state.is_select and self.audit_reads and _FLUSH.get() is None:  # a load inside a flush: part of it
            name = semconv.OPERATION_SELECT
        else:
            return None
        mapper = state.bind_mapper
        facts = (_facts.cached(id(mapper)) or _facts(mapper)) if mapper is not None else None
        if not self.engine.enabled(SOURCE, facts.model if facts is not None else None, name):
            return None
        db = _db_of_session(state.session, mapper)
        op = Operation(  # the constructor with every field (not ModelFacts.operation's setattr loop)
            SOURCE,
            name,
            model=facts.model if facts is not None else None,
            collection=facts.collection if facts is not None else _statement_table(state.statement),
            db_system=db[0],
            namespace=db[1],
            write=name != semconv.OPERATION_SELECT,
        )
        return op, ("execute", next(self._seq))

    def _statement_done(
        self, op: Operation, state: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
    ) -> None:
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
        # An iterator of mappings (each group of bulk_save_objects) is read once: the library gets its items
        # as a list, which the audit reads again after the call.
        if len(args) > 1:
            if not isinstance(args[1], list | tuple):
                args = (args[0], list(args[1]), *args[2:])
        elif "mappings" in kwargs and not isinstance(kwargs["mappings"], list | tuple):
            kwargs = {**kwargs, "mappings": list(kwargs["mappings"])}
        return self._bulk(wrapped, session, args, kwargs)

    def _bulk_entry(self, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        facts, mapper, mappings, isupdate, _ = _bulk_call(args, kwargs)
        db = _db_of_session(session, mapper)
        op = facts.operation(
            SOURCE,
            semconv.OPERATION_UPDATE if isupdate else semconv.OPERATION_INSERT,
            db_system=db[0],
            namespace=db[1],
            signal="bulk_save_mappings",
            attributes={semconv.DB_OPERATION_BATCH_SIZE: len(mappings)},
        )
        return op, ("bulk", next(self._seq))

    def _bulk_done(
        self, op: Operation, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
    ) -> None:
        facts, _, mappings, _, isstates = _bulk_call(args, kwargs)
        if isstates:
            pks = (_pk_of(facts, item) for item in mappings)
        else:
            pks = (_pk_of_values(facts, item) if isinstance(item, Mapping) else None for item in mappings)
        rows = len(mappings)
        op.attributes[semconv.SIGTRACE_ROWS_AFFECTED] = rows
        op.audit.update(batch_audit(pks, rows=rows))
        tx = TRACKER.current(session)
        if tx is not None:
            op.transaction = tx
