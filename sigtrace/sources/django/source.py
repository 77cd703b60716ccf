"""The Django source: Django's own entry points as operations, model signals only where they cost nothing.

What Django sends (docs/sources/django.md): ``pre_save``/``post_save``, ``pre_delete``/``post_delete`` and
``m2m_changed`` for every model through one :class:`~django.dispatch.Signal` each. Two of them are not
free: while any ``pre_delete``/``post_delete`` receiver exists Django gives up its fast delete
(``Collector.can_fast_delete``: every row is selected, every column, before the delete), and while an
``m2m_changed`` receiver exists it gives up its fast many-to-many add (``_get_add_plan``: one SELECT
more per ``add()``). ``pre_save``/``post_save`` cost less, but each receiver takes Django's signal off its
no-receiver fast path and is a call into sigtrace per save (about 40,000 instructions of a save's 530,000:
docs/performance.md). Installing sigtrace must change nothing the application sees, so sigtrace
connects no model signal receiver by default, and

* saves: the entry point ``Model.save_base`` (``save``, ``asave``, ``create``... go through it) runs in
  the kit's entry scope (:meth:`Source.entry`), in flight from its start; what the signals would say is
  read where Django computes it: ``pre_save`` is sent first thing in ``save_base`` once the database is
  known, ``post_save`` last thing before it returns (``sigtrace.signal``), ``created`` is an INSERT of
  the model's own table compiled inside the call (:meth:`DjangoSource._resolve_from_compiler`), the pk
  of a new row is read when the call returns;
* deletes: ``Model.delete`` and ``QuerySet.delete`` are the entry points, and
  ``django.db.models.deletion.Collector.delete`` says what Django deleted: the objects it collected
  (one audit event each) and the querysets it deleted without loading a row (one event per model
  with the row count Django returns);
* many-to-many: the managers' ``add``/``remove``/``clear`` (Django 6: ``_add_base``...) as
  ``relation_add``/``relation_remove``/``relation_clear``, with the related pks Django computes itself
  (``_get_target_ids``, ``_get_missing_target_ids``);
* ``QuerySet.update``, ``bulk_create`` and ``bulk_update`` send no signal at all: they are wrapped as
  operations of their own (one span, one audit event per call, with the row count and pks).

sigtrace never calls the project's database routers: the database of an operation is the ``using``
Django was given, Django's own default where no router is configured, or else the alias Django
resolved itself (the collector's ``using``, ``_get_add_plan(db)``, the compiler of the write query:
see :meth:`DjangoSource._resolve`).

Each write gets the transaction open on its connection as it starts (``op.transaction``,
sigtrace/sources/django/transactions.py), so its audit event waits for the commit or rollback; Django's
bookkeeping models are skipped (sigtrace/sources/django/framework.py); ``audit_diff`` models report old
values (sigtrace/sources/django/diff.py).
"""

from __future__ import annotations

import dis
import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router
from django.db.models import Model, signals
from django.db.models.deletion import Collector
from django.db.models.fields import related_descriptors
from django.db.models.sql import subqueries

from sigtrace import semconv
from sigtrace._config import ConfigError, parse_bool, warn_unknown_variables
from sigtrace.core import safety
from sigtrace.core.context import current_scope
from sigtrace.core.correlation import weak_ref
from sigtrace.core.operation import Operation
from sigtrace.core.text import safe_text
from sigtrace.sources.django.diff import LoadedValues
from sigtrace.sources.django.framework import is_framework_model
from sigtrace.sources.django.transactions import DjangoTransactions
from sigtrace.sources.kit import Entry, FactsCache, ModelFacts, Source, batch_audit, pk_text

__all__ = ["DjangoOptions", "DjangoSource", "django_options"]

SOURCE = "django"
_ROWS = semconv.SIGTRACE_ROWS_AFFECTED
_ADD = semconv.OPERATION_RELATION_ADD
_REMOVE = semconv.OPERATION_RELATION_REMOVE
_CLEAR = semconv.OPERATION_RELATION_CLEAR
_M2M_METHODS: Mapping[str, str] = {"add": _ADD, "remove": _REMOVE, "clear": _CLEAR}
#: Django 6 routes add/remove/clear and set() through these; where they exist they are the entry points.
_M2M_BASE_METHODS: Mapping[str, str] = {"_add_base": _ADD, "_remove_base": _REMOVE, "_clear_base": _CLEAR}
_RELATION_NAMES = frozenset(_M2M_METHODS.values())
#: Operations whose entry point calls other wrapped entry points (a bulk_update runs QuerySet.update,
#: a relation add runs the through model's bulk_create): those inner calls are part of the outer one.
_COMPOSITE = frozenset({"update", "bulk_create", "bulk_update", *_RELATION_NAMES})
#: The write queries whose compiler names the database Django chose (see DjangoSource._resolve).
_WRITE_QUERIES = (subqueries.InsertQuery, subqueries.UpdateQuery, subqueries.DeleteQuery)


class _Unclaimable:
    """``expect`` of scopes no signal may claim (the bulk operations send none)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0


_UNCLAIMABLE = _Unclaimable()
#: ``expect`` of a many-to-many manager call's scope: the writes inside it (the through rows' bulk_create
#: and delete) are part of that operation, also where the operation itself is excluded (no operation).
_M2M_CALL = _Unclaimable()


# --- options ---


@dataclass(frozen=True, slots=True)
class DjangoOptions:
    """What the Django source traces: the ``"django"`` entry of ``settings.SIGTRACE``, or ``SIGTRACE_DJANGO_*``."""

    #: pre_save/post_save around ``Model.save_base`` (``save``, ``asave``, ``create``...).
    trace_save: bool = True
    #: ``Model.delete`` and ``QuerySet.delete``, told by Django's collector (no delete receiver: Django keeps
    #: its fast delete). Off: no span and no audit event per delete (benchmarks/django_fast_delete.py).
    trace_delete: bool = True
    #: The many-to-many managers' ``add``/``remove``/``clear`` (and ``set``); no m2m_changed receiver.
    trace_m2m: bool = True
    #: ``QuerySet.update``, ``bulk_create``, ``bulk_update`` (no signal exists for them).
    trace_bulk: bool = True
    #: post_init as a span event (and an audit event with ``audit_reads``): one per model instance built.
    trace_init: bool = False
    #: ``callable(user) -> str | None`` naming the audit actor in ActorMiddleware (default: ``get_username()``).
    actor: Callable[[Any], str | None] | None = None
    #: Django's own bookkeeping models (:data:`FRAMEWORK_MODELS`: migrations, content types, permissions,
    #: sessions, admin log) are untraced unless this is on: no span, no audit event, no metric.
    audit_framework_models: bool = False
    #: ``"app_label.Model"`` names whose loaded values sigtrace keeps, so that with ``capture_values`` an
    #: update's ``values`` are ``{field: [old, new]}`` (sigtrace/sources/django/diff.py; costs memory per row).
    audit_diff: tuple[str, ...] = ()


_BOOL_OPTIONS = tuple(f.name for f in fields(DjangoOptions) if f.type == "bool")


def _settings_section() -> Mapping[str, Any]:
    """``settings.SIGTRACE["django"]``, or nothing when Django settings are not configured."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            return {}
        value = getattr(settings, "SIGTRACE", None)
    except (ImproperlyConfigured, ImportError):
        return {}
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"settings.SIGTRACE={value!r}: expected a dict of sigtrace.install() options")
    section = value.get("django") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f'settings.SIGTRACE["django"]={section!r}: expected a dict')
    return section


def django_options(section: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> DjangoOptions:
    """Settings win over ``SIGTRACE_DJANGO_<OPTION>`` variables, which win over the defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    warn_unknown_variables(
        env, {f"SIGTRACE_DJANGO_{f.name.upper()}" for f in fields(DjangoOptions)}, "SIGTRACE_DJANGO_"
    )
    for name in _BOOL_OPTIONS:
        variable = f"SIGTRACE_DJANGO_{name.upper()}"
        raw = env.get(variable, "")
        if raw.strip():
            values[name] = parse_bool(raw, variable)
    diff_env = env.get("SIGTRACE_DJANGO_AUDIT_DIFF", "").strip()
    if diff_env:
        values["audit_diff"] = _model_labels(diff_env.split(","), "SIGTRACE_DJANGO_AUDIT_DIFF")
    given = _settings_section() if section is None else section
    known = {f.name for f in fields(DjangoOptions)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(
            f'unknown option(s) {", ".join(unknown)} in settings.SIGTRACE["django"]; known: {", ".join(sorted(known))}'
        )
    for name, value in given.items():
        if name in _BOOL_OPTIONS:
            value = parse_bool(value, f'settings.SIGTRACE["django"]["{name}"]')
        if name == "actor" and value is not None and not callable(value):
            raise ConfigError(f'settings.SIGTRACE["django"]["actor"]={value!r}: expected a callable(user)')
        if name == "audit_diff":
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ConfigError(f'settings.SIGTRACE["django"]["audit_diff"]={value!r}: expected a list of names')
            value = _model_labels(value, 'settings.SIGTRACE["django"]["audit_diff"]')
        values[name] = value
    return DjangoOptions(**values)


def _model_labels(names: Iterable[Any], where: str) -> tuple[str, ...]:
    """``"app_label.Model"`` names, as Django's ``Model._meta.label`` spells them (checked at attach)."""
    labels: list[str] = []
    for name in names:
        label = str(name).strip()
        if not label:
            continue
        app_label, dot, model = label.partition(".")
        if not (isinstance(name, str) and app_label and dot and model and "." not in model):
            raise ConfigError(f"{where}: {name!r} is not an 'app_label.Model' name")
        labels.append(label)
    return tuple(labels)


# --- describing models ---


@dataclass(frozen=True, slots=True)
class DjangoModelFacts(ModelFacts):
    """A model's facts, computed once per class (``kit.FactsCache``); the database per alias (:meth:`at`)."""

    #: ``app_label.Model``.
    label: str = ""
    #: Untraced: Django's bookkeeping (sigtrace/sources/django/framework.py) unless ``audit_framework_models``.
    skip: bool = False
    #: What a save writes without ``update_fields``: every concrete field but the primary key.
    written: tuple[str, ...] = ()
    #: The signal that ends a save: ``post_save``, except for models Django sends no save signals for
    #: (``auto_created`` many-to-many through tables).
    post_save: str | None = "post_save"
    #: Field name -> attribute name (``author`` -> ``author_id``), for the values of ``capture_values``.
    attnames: Mapping[str, str] = field(default_factory=dict, compare=False)
    _at: dict[str | None, ModelFacts] = field(default_factory=dict, compare=False, repr=False)

    def at(self, using: str | None) -> ModelFacts:
        """These facts with the database of alias ``using`` (``db.system.name``, ``db.namespace``)."""
        found = self._at.get(using)
        if found is None:
            db_system, namespace = _db_of(using)
            found = ModelFacts(self.model, self.collection, db_system, namespace)
            if len(self._at) < 64:
                self._at[using] = found
        return found


def _db_of(using: str | None) -> tuple[str | None, str | None]:
    if not using:
        return None, None
    connection = connections[using]
    name = connection.settings_dict.get("NAME")
    # Django reports MariaDB as "mysql" (telling them apart needs a query), and so does sigtrace.
    return semconv.db_system_name(connection.vendor), (str(name) if name else None)


_DEFAULT_ALIAS: str = DEFAULT_DB_ALIAS


def _known_db(instance: Any = None) -> str | None:
    """The alias Django writes to, where it is known without asking the project's routers.

    With no router configured, Django's own answer (``ConnectionRouter._router_func``): the hinted
    instance's database, else ``default``. With routers, ``None``: sigtrace never calls a router (a
    router may count, keep state or raise); the alias Django resolved is taken later (``_resolve``).
    """
    if router.routers:
        return None
    if instance is not None:
        db = getattr(getattr(instance, "_state", None), "db", None)
        if db:
            return str(db)
    return _DEFAULT_ALIAS


def _hinted_db(hints: Mapping[str, Any]) -> str | None:
    return _known_db(hints.get("instance"))


def _pk(instance: Any) -> str | None:
    return pk_text(getattr(instance, "pk", None))


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def _plain(value: Any) -> Any:
    """A value for the audit log: expressions (``F("n") + 1``) as their text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return safe_text(value)


class DjangoSource(Source):
    """Connects the model signals (sender=None: every model) and wraps Django's own entry points."""

    name = SOURCE

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        self.django = django_options()
        self._facts: FactsCache[type[Any], DjangoModelFacts] = FactsCache(self._model_facts)
        #: ``save_base``'s code and its ``post_save`` line (:meth:`_failed`), read at attach.
        self._post_save_line: tuple[Any, int] | None = None
        #: Which transaction each write runs in (sigtrace/sources/django/transactions.py).
        self._transactions = DjangoTransactions(self.guard)
        #: Old values for ``{field: [old, new]}``: only for the models in ``audit_diff``, with ``capture_values``.
        self._loaded = (
            LoadedValues(self.django.audit_diff, self.guard) if self.capture_values and self.django.audit_diff else None
        )
        if self._loaded is not None:
            self._loaded.check()  # a name that is no model: a ConfigError from install(), like a bad option

    # --- attach ---

    def attach(self) -> None:
        opts = self.django
        if self.holds_writes:  # spans only: nothing waits for a commit (Engine.holds_writes), nothing patched
            self._transactions.attach(self.patch)
        if opts.trace_save:
            # No pre_save/post_save receiver (module docstring); in flight from the start (track): a save that
            # never returns is reaped as an orphan.
            self._post_save_line = _post_save_line(Model.save_base)
            save = self.entry("save_base", self._build_save, self._saved, failed=self._failed, track=True)
            self.patch(Model, "save_base", save)
        # No pre_delete/post_delete/m2m_changed receiver: each one costs the application queries
        # (module docstring). Deletes and m2m changes are observed at Django's entry points instead.
        if opts.trace_delete or opts.trace_m2m:
            # A QuerySet.delete inside an m2m remove/clear deletes its through rows: part of that operation.
            self.patch(
                "django.db.models.query", "QuerySet.delete", self.entry("queryset_delete", self._build_qs_delete)
            )
            self.patch(Collector, "delete", self._wrap_collector_delete)
        if opts.trace_delete:
            self.patch(Model, "delete", self.entry("delete", self._build_delete))
        if opts.trace_m2m:
            self.patch(related_descriptors, "create_forward_many_to_many_manager", self._wrap_m2m_manager_factory)
            # Managers built before now are cached on their descriptors: rebuild them (and again on detach).
            _forget_related_managers()
            self.on_detach(_forget_related_managers)
        if opts.trace_bulk:
            for method in ("update", "bulk_create", "bulk_update"):
                self.patch("django.db.models.query", f"QuerySet.{method}", self._bulk_wrapper(method))
        if opts.trace_init:
            self.connect(signals.post_init, self._on_post_init, kind="post_init")
        if self._loaded is not None and opts.trace_save:
            self._loaded.attach(self)
        for query_class in _WRITE_QUERIES:
            self._resolve_from_compiler(query_class)

    def _resolve_from_compiler(self, query_class: type[Any]) -> None:
        """``query_class.get_compiler`` tells :meth:`_resolve` the alias Django compiles a write for.

        Defined on the subclass (``InsertQuery``, ``UpdateQuery``, ``DeleteQuery``) and removed on detach,
        so ``Query.get_compiler`` of every read stays untouched; it calls on to whatever the class
        inherits at call time.
        """
        own = query_class.__dict__.get("get_compiler")
        where = self.where("compiler")
        report = safety.report
        resolve = self._resolve
        inserts = query_class is subqueries.InsertQuery

        def get_compiler(query: Any, *args: Any, **kwargs: Any) -> Any:
            if own is not None:
                compiler = own(query, *args, **kwargs)
            else:
                inherited: Any = super(query_class, query)
                compiler = inherited.get_compiler(*args, **kwargs)
            scope = current_scope()  # Engine.current(), without its frame: every write query compiled
            op = scope.op if scope is not None else None
            if op is not None and op.source == SOURCE and not op.done:
                try:  # the safety net (``with self.guard``, without its two calls: every write query)
                    if op.db_system is None:
                        resolve(op, getattr(compiler, "using", None))
                    if inserts and op.name == "save" and query.model._meta.db_table == op.collection:
                        # The row of the saved model itself is inserted (not a parent's): Django's
                        # created=(not updated), without a post_save receiver.
                        op.audit["created"] = True
                except Exception as exc:  # noqa: BLE001
                    report(where, exc)
            return compiler

        get_compiler.__name__ = get_compiler.__qualname__ = "get_compiler"
        self.replace(query_class, "get_compiler", get_compiler)

    def _resolve(self, op: Operation, using: str | None) -> None:
        """The database Django chose for ``op``, where it was not known when the operation started.

        Only where routers are configured (``_known_db``): the first alias Django itself resolved
        for the operation (the collector's ``using``, ``_get_add_plan(db)``, the ``using`` Django
        passes, the compiler of its first write query). The in-flight count started without a
        database moves to the resolved one.
        """
        if op.db_system is not None or not using:
            return
        if op.transaction is None:
            self._transactions.assign(op, using)  # the alias is known only now; the write has not run yet
        db_system, namespace = _db_of(using)
        self.engine.describe(op, db_system=db_system, namespace=namespace)

    # --- describing ---

    def _model_facts(self, cls: type[Any]) -> DjangoModelFacts:
        meta = cls._meta
        concrete = meta.concrete_fields
        return DjangoModelFacts(
            model=cls.__name__,
            collection=meta.db_table,
            label=meta.label,
            skip=not self.django.audit_framework_models and is_framework_model(cls),
            written=tuple(f.name for f in concrete if not f.primary_key),
            post_save=None if meta.auto_created else "post_save",
            attnames={f.name: f.attname for f in concrete},
        )

    def _skips(self, cls: type[Any]) -> bool:
        """Untraced model classes (Django's bookkeeping, sigtrace/sources/django/framework.py), decided once each."""
        return self._facts(cls).skip

    def _operation(
        self, name: str, cls: type[Any], using: str | None, signal: str | None = None, pk: str | None = None
    ) -> Operation:
        op = self._facts(cls).at(using).operation(SOURCE, name, pk=pk, signal=signal)
        self._transactions.assign(op, using)  # the transaction open on its connection as it starts
        return op

    # --- save ---

    def _build_save(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        """The hot path of every save: the operation of ``save_base`` (one function: every call costs here)."""
        cls = type(instance)
        facts = self._facts.cached(id(cls)) or self._facts(cls)
        if facts.skip:
            return None
        # save() passes everything by keyword, with the alias it resolved.
        if args:
            raw, using, update_fields = _arg(args, kwargs, 0, "raw"), _arg(args, kwargs, 3, "using"), None
            update_fields = _arg(args, kwargs, 4, "update_fields")
        else:
            raw, using, update_fields = kwargs.get("raw"), kwargs.get("using"), kwargs.get("update_fields")
        # With its database given, save_base sends pre_save before anything that can fail (without it, it
        # asks the routers first): the last signal seen, should the call fail.
        signal = "pre_save" if using and facts.post_save else None
        if not using:
            using = _known_db(instance)
        at = facts._at.get(using) or facts.at(using)
        op = Operation(  # ModelFacts.operation spelled out (no keyword dict to fill in): every save
            SOURCE,
            "save",
            model=at.model,
            collection=at.collection,
            db_system=at.db_system,
            namespace=at.namespace,
            pk=pk_text(instance.pk),
            signal=signal,
            post_signal=facts.post_save,
            changed_fields=tuple(sorted(update_fields)) if update_fields else facts.written,
        )
        self._transactions.assign(op, using)
        if self.capture_values:
            self._capture(op, facts, instance)
        op.ref = weakref.ref(instance)  # models take weak references (correlation.weak_ref, without its frame)
        if raw:
            op.audit["raw"] = True
        return op, (id(instance), "save")  # identity_key(instance, "save")

    def _capture(self, op: Operation, facts: DjangoModelFacts, instance: Any) -> None:
        """``capture_values``: the values a save writes, or ``[old, new]`` for the models in ``audit_diff``."""
        written = op.changed_fields or ()
        attnames = facts.attnames
        loaded = self._loaded
        listed = loaded is not None and loaded.listed(type(instance))
        changes = loaded.changes(instance, written, attnames, _plain) if loaded is not None and listed else None
        if changes is None:
            op.values = {name: _plain(getattr(instance, attnames.get(name, name), None)) for name in written}
        else:
            op.values, op.audit["diff"] = changes  # the names whose value is [old, new]

    def _failed(
        self, op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], error: BaseException
    ) -> None:
        """``save_base`` raised. From a ``post_save`` receiver of the application: the row was written, the save
        is ``ok`` (what the database kept) and the error the application's. Before: nothing was created."""
        where = self._post_save_line
        tb = error.__traceback__
        while where is not None and tb is not None:
            if tb.tb_frame.f_code is where[0]:
                if tb.tb_lineno >= where[1]:
                    self._saved(op, instance, args, kwargs, None)
                    self.engine.finish(op, semconv.OUTCOME_OK, untrack=True)
                    return
                break
            tb = tb.tb_next
        op.audit.pop("created", None)  # an INSERT compiled before the failure created nothing

    def _saved(self, op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> None:
        """``save_base`` returned: what its post_save said (the pk of a new row, ``created``), read here."""
        if op.post_signal is not None:
            op.signal = op.post_signal  # sent last thing before save_base returns
        if op.pk is None:
            op.pk = _pk(instance)  # an insert has just given it one
        op.audit.setdefault("created", False)  # True where the compiler saw the row inserted
        if self._loaded is not None:
            update_fields = kwargs.get("update_fields") if not args else _arg(args, kwargs, 4, "update_fields")
            self._loaded.saved(instance, update_fields)

    # --- delete ---

    def _build_delete(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        cls = type(instance)
        if self._skips(cls):
            return None
        using = _arg(args, kwargs, 0, "using") or _known_db(instance)
        op = self._operation("delete", cls, using, None, _pk(instance))
        op.ref = weak_ref(instance)
        # What was deleted (the instance, its cascade) comes from the collector: _wrap_collector_delete.
        return op, _UNCLAIMABLE

    def _build_qs_delete(self, queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        if self.engine.expecting() is _M2M_CALL:
            return None  # the through rows of a relation remove/clear: part of that operation
        if not self.django.trace_delete:
            return None
        model = queryset.model
        if self._skips(model):
            return None
        return self._operation("delete", model, queryset._db or _hinted_db(queryset._hints)), _UNCLAIMABLE

    def _wrap_collector_delete(self, wrapped: Callable[..., Any], collector: Any, args: Any, kwargs: Any) -> Any:
        """What Django deletes, from the collector it built: no receiver, no query of sigtrace's own.

        ``collector.data`` holds the instances Django loaded (one audit event each, as Django sends
        them pre_delete/post_delete), ``collector.fast_deletes`` the querysets it deletes without
        loading a row (one event per model, with the count ``delete()`` returns); ``collector.using``
        is the database Django chose. Not :meth:`Source.entry`: the operation is often the enclosing
        call's (``Model.delete``, a relation remove), and a failed delete drops its items.
        """
        op: Operation | None = None
        own = False
        collected: list[tuple[type[Any], list[str | None]]] = []
        guard = self.guard("collector")
        with guard:
            op, own = self._collector_operation(collector)
            if op is not None:
                self._resolve(op, collector.using)
                if op.name == "delete":
                    collected = _collected(collector)  # before the call: Django sets the pks to None
                    op.audit_items = []  # this delete's collector: another one in the same call is its own
        if op is None:
            return wrapped(*args, **kwargs)
        scope: AbstractContextManager[Any] = self.engine.entry(op, expect=_UNCLAIMABLE) if own else nullcontext()
        with scope:
            try:
                result = wrapped(*args, **kwargs)
            except BaseException:
                if op.name == "delete":
                    op.audit_items = None  # it failed: one event for the call, outcome error
                raise
            with guard:
                _record_delete(op, collected, collector, result)
            return result

    def _collector_operation(self, collector: Any) -> tuple[Operation | None, bool]:
        """The operation a collector's delete belongs to, and whether it is a new one (a collector used directly)."""
        outer = self.engine.current()
        if outer is not None and outer.source == SOURCE:
            if outer.name in _RELATION_NAMES:
                return outer, False
            if outer.name == "delete" and outer.audit_items is None:
                return outer, False
        if not self.django.trace_delete or self.engine.expecting() is _M2M_CALL:
            return None, False
        origin = collector.origin
        pk: str | None = None
        if isinstance(origin, Model):
            model: Any = type(origin)
            pk = _pk(origin)
        elif getattr(origin, "model", None) is not None:
            model = origin.model
        elif collector.data:
            model = next(iter(collector.data))
        elif collector.fast_deletes:
            model = collector.fast_deletes[0].model
        else:
            return None, False
        if self._skips(model):
            return None, False  # Django's bookkeeping (a session's delete); rows it cascades to go with it
        return self._operation("delete", model, collector.using, None, pk), True

    # --- many-to-many ---

    def _wrap_m2m_manager_factory(self, wrapped: Callable[..., Any], _instance: Any, args: Any, kwargs: Any) -> Any:
        manager_cls = wrapped(*args, **kwargs)
        traced: Any = None
        with self.guard("m2m_manager"):
            rel = _arg(args, kwargs, 1, "rel")
            reverse = bool(_arg(args, kwargs, 2, "reverse"))
            relation = rel.get_accessor_name() if reverse else rel.field.name
            traced = self._traced_manager(manager_cls, safe_text(relation))
        return manager_cls if traced is None else traced

    def _traced_manager(self, manager_cls: type[Any], relation: str) -> type[Any]:
        """A subclass whose add/remove/clear run in an entry scope (``set``, ``create``, ``aadd``... call them).

        It also hears what Django computes on its own way through an add (the database in
        ``_get_add_plan``, the related pks in ``_get_target_ids``/``_get_missing_target_ids``): what an
        ``m2m_changed`` receiver was told, without being one (a receiver costs every add a SELECT).
        """
        source = self

        def scoped(method: str, name: str) -> Callable[..., Any]:
            original = getattr(manager_cls, method)

            def build(manager: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
                if name != _CLEAR and not args:
                    return None  # add()/remove() of nothing write nothing
                return source._relation_operation(manager, name, relation, args, kwargs), _M2M_CALL

            entry = source.entry("m2m_entry", build)

            def call(manager: Any, *args: Any, **kwargs: Any) -> Any:
                return entry(original.__get__(manager), manager, args, kwargs)

            call.__name__ = call.__qualname__ = method
            call.alters_data = True  # type: ignore[attr-defined]
            return call

        methods = _M2M_BASE_METHODS if hasattr(manager_cls, "_add_base") else _M2M_METHODS
        namespace: dict[str, Any] = {method: scoped(method, name) for method, name in methods.items()}
        namespace.update(_m2m_hooks(source, manager_cls))
        namespace["__module__"] = manager_cls.__module__
        namespace["__qualname__"] = manager_cls.__qualname__
        namespace["_sigtrace_traced"] = True
        return type(manager_cls.__name__, (manager_cls,), namespace)

    def _relation_operation(
        self, manager: Any, name: str, relation: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Operation:
        instance = manager.instance
        # Django 6's _add_base(..., using=db) passes the alias add() resolved; else Django's default, or later.
        using = kwargs.get("using") or _known_db(instance)
        # The through table is what is written; the model and pk are the owner's (the side of the call).
        op = self._operation(name, manager.through, using, None, _pk(instance))
        op.model = type(instance).__name__
        op.ref = weak_ref(instance)
        related_model = getattr(manager.model, "__name__", None)
        op.attributes[semconv.SIGTRACE_RELATION_NAME] = relation
        if related_model is not None:
            op.attributes[semconv.SIGTRACE_RELATION_MODEL] = related_model
        op.audit = {
            semconv.AUDIT_RELATION: relation,
            semconv.AUDIT_RELATED_MODEL: related_model,
            "reverse": bool(manager.reverse),
        }
        if name == _REMOVE:
            _related(op, _removed_ids(manager, args))
        return op

    def _m2m_heard(self, manager: Any, db: Any = None, related: Any = None, exact: bool = False) -> None:
        """What Django computed inside a relation add, for the operation of this manager's call."""
        op = self.engine.current()
        if op is None or op.source != SOURCE or op.name not in _RELATION_NAMES:
            return
        if op.ref is not None and op.ref() is not manager.instance:
            return
        if db:
            self._resolve(op, db)
        if related is not None and op.name == _ADD and (exact or semconv.AUDIT_RELATED_PKS not in op.audit):
            _related(op, related)

    # --- init (off by default) ---

    def _on_post_init(self, sender: Any, instance: Any = None, **_: Any) -> None:
        # pre_init carries no instance (only the constructor's arguments): post_init alone marks each build.
        if self._skips(sender):
            return
        using = getattr(getattr(instance, "_state", None), "db", None)
        op = self._operation("init", sender, using, "post_init", _pk(instance))
        op.write = False
        self.engine.record_event(op)

    # --- bulk operations (no signals) ---

    def _bulk_wrapper(self, method: str) -> Callable[..., Any]:
        def build(queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
            op = self._bulk_operation(method, queryset, args, kwargs)
            return None if op is None else (op, _UNCLAIMABLE)

        def after(op: Operation, _queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
            _record_bulk(method, op, args, kwargs, result)

        entry = self.entry(method, build, after)
        if method == "update":
            return entry

        def wrapper(wrapped: Callable[..., Any], queryset: Any, args: Any, kwargs: Any) -> Any:
            # A generator of objects: read once here (as Django does first thing), the list handed on.
            if "objs" in kwargs:
                if not isinstance(kwargs["objs"], list | tuple):
                    kwargs["objs"] = list(kwargs["objs"])
            elif args and not isinstance(args[0], list | tuple):
                args = (list(args[0]), *args[1:])
            return entry(wrapped, queryset, args, kwargs)

        return wrapper

    def _bulk_operation(
        self, method: str, queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Operation | None:
        engine = self.engine
        if engine.expecting() is _M2M_CALL:
            return None  # the through rows of a relation add: part of that operation
        outer = engine.current()
        if outer is not None and outer.source == SOURCE and outer.name in _COMPOSITE:
            return None  # part of the enclosing operation (bulk_update's updates)
        model = queryset.model
        if self._skips(model):
            return None
        # Not router.db_for_write: Django asks the routers itself; _resolve takes the alias it chose.
        op = self._operation(method, model, queryset._db or _hinted_db(queryset._hints))
        if method == "update":
            op.changed_fields = tuple(sorted(kwargs))
            if self.capture_values:
                op.values = {name: _plain(value) for name, value in kwargs.items()}
            return op
        if method == "bulk_update":
            op.changed_fields = tuple(sorted(safe_text(f) for f in (_arg(args, kwargs, 1, "fields") or ())))
        else:
            op.changed_fields = self._facts(model).written
        objs = _arg(args, kwargs, 0, "objs")
        if objs is not None:
            op.attributes[semconv.DB_OPERATION_BATCH_SIZE] = len(objs)
            op.audit[semconv.AUDIT_BATCH_SIZE] = len(objs)
        return op


def _post_save_line(save_base: Callable[..., Any]) -> tuple[Any, int] | None:
    """``save_base``'s code and the line where it sends ``post_save``: every write of the save is done there."""
    code = getattr(save_base, "__code__", None)
    if code is None:
        return None
    for instruction in dis.get_instructions(code):
        if instruction.opname == "LOAD_GLOBAL" and instruction.argval == "post_save":
            line = instruction.positions.lineno if instruction.positions else None
            return (code, line) if line else None
    return None


def _collected(collector: Any) -> list[tuple[type[Any], list[str | None]]]:
    """The instances a collector loaded, by model, as pk text (read before the delete, which clears the pks)."""
    return [(model, [_pk(obj) for obj in instances]) for model, instances in collector.data.items()]


def _record_delete(
    op: Operation, collected: Sequence[tuple[type[Any], Sequence[str | None]]], collector: Any, result: Any
) -> None:
    """The audit of a collector's delete: one item per collected object, one per model deleted without loading rows.

    ``result`` is what ``Collector.delete`` returns: the total and the count per model label (the
    fast-deleted rows and the collected ones together; a model with no row deleted is absent).
    """
    total, per_label = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    if not isinstance(per_label, Mapping):
        per_label = {}
    rows = int(total or 0)
    op.attributes[_ROWS] = rows
    if op.name != "delete":  # the through rows of a relation remove/clear
        op.audit[semconv.AUDIT_ROWS] = rows
        return
    items: list[dict[str, Any]] = []
    listed: dict[str, int] = {}
    models: dict[str, type[Any]] = {}
    for model, pks in collected:
        meta = model._meta
        models[meta.label] = model
        # Through rows of an auto-created m2m table get no signal from Django either: counted below.
        if meta.auto_created or not per_label.get(meta.label):
            continue
        name, table = model.__name__, meta.db_table
        items.extend({"model": name, "collection": table, "pk": pk} for pk in pks)
        listed[meta.label] = len(pks)
    for queryset in collector.fast_deletes:
        models.setdefault(queryset.model._meta.label, queryset.model)
    for label, count in per_label.items():
        rest = int(count) - listed.get(label, 0)
        if rest <= 0:
            continue
        found = models.get(label)
        items.append(
            {
                "model": found.__name__ if found is not None else safe_text(label),
                "collection": found._meta.db_table if found is not None else safe_text(label),
                "pk": None,  # no row was loaded: Django deleted them with one query
                semconv.AUDIT_ROWS: rest,
            }
        )
    op.audit_items = items


def _related(op: Operation, ids: Iterable[Any]) -> None:
    """The related rows of a relation operation: ``related_pks`` (sorted, capped), the row count, one row's pk."""
    related = sorted(text for text in (pk_text(pk) for pk in ids) if text is not None)
    audit = op.audit
    audit[semconv.AUDIT_RELATED_PKS] = related[: semconv.MAX_AUDIT_PKS]
    if len(related) > semconv.MAX_AUDIT_PKS:
        audit[semconv.AUDIT_RELATED_PKS_TRUNCATED] = True
    else:
        audit.pop(semconv.AUDIT_RELATED_PKS_TRUNCATED, None)
    op.attributes[_ROWS] = len(related)
    if len(related) == 1:
        op.attributes[semconv.SIGTRACE_RELATION_PK] = related[0]
    else:
        op.attributes.pop(semconv.SIGTRACE_RELATION_PK, None)


def _removed_ids(manager: Any, objs: Sequence[Any]) -> set[Any]:
    """The pks a remove() removes, as ``_remove_items`` computes them (attribute reads, no query, no router)."""
    ids: set[Any] = set()
    model, target_field = manager.model, manager.target_field
    for obj in objs:
        ids.add(target_field.get_foreign_related_value(obj)[0] if isinstance(obj, model) else obj)
    return ids


def _m2m_hooks(source: DjangoSource, manager_cls: type[Any]) -> dict[str, Callable[..., Any]]:
    """Overrides of the manager's add helpers that tell ``source`` what Django computed (and change nothing)."""
    hooks: dict[str, Callable[..., Any]] = {}
    plan = getattr(manager_cls, "_get_add_plan", None)
    target_ids = getattr(manager_cls, "_get_target_ids", None)
    missing = getattr(manager_cls, "_get_missing_target_ids", None)
    guard = source.guard("m2m")
    heard = source._m2m_heard
    if plan is not None:

        def _get_add_plan(manager: Any, db: Any, *args: Any, **kwargs: Any) -> Any:
            with guard:
                heard(manager, db=db)
            return plan(manager, db, *args, **kwargs)

        hooks["_get_add_plan"] = _get_add_plan
    if target_ids is not None:

        def _get_target_ids(manager: Any, *args: Any, **kwargs: Any) -> Any:
            ids = target_ids(manager, *args, **kwargs)
            with guard:
                heard(manager, related=ids)  # what add() asked for (the fast add does not say more)
            return ids

        hooks["_get_target_ids"] = _get_target_ids
    if missing is not None:

        def _get_missing_target_ids(
            manager: Any, source_field_name: Any, target_field_name: Any, db: Any, *args: Any, **kwargs: Any
        ) -> Any:
            ids = missing(manager, source_field_name, target_field_name, db, *args, **kwargs)
            if source_field_name == manager.source_field_name:  # not the mirror rows of a symmetrical relation
                with guard:
                    heard(manager, db=db, related=ids, exact=True)  # the rows Django inserts
            return ids

        hooks["_get_missing_target_ids"] = _get_missing_target_ids
    return hooks


def _record_bulk(method: str, op: Operation, args: Sequence[Any], kwargs: Mapping[str, Any], result: Any) -> None:
    pks: list[Any] | None = None
    if method == "bulk_create":
        objs = _arg(args, kwargs, 0, "objs") or ()
        rows = len(result) if isinstance(result, list) else len(objs)
        pks = [getattr(obj, "pk", None) for obj in objs]
    elif method == "bulk_update":
        objs = _arg(args, kwargs, 0, "objs") or ()
        rows = int(result or 0)
        pks = [obj.pk for obj in objs]
    else:
        rows = int(result or 0)
    op.attributes[_ROWS] = rows
    op.audit.update(batch_audit(pks, rows=rows))


def _forget_related_managers() -> None:
    """Drop the many-to-many manager classes cached on descriptors, so they are rebuilt (traced or not)."""
    from django.apps import apps

    if not apps.models_ready:
        return
    for model in apps.get_models(include_auto_created=True):
        for attribute in vars(model).values():
            if isinstance(attribute, related_descriptors.ManyToManyDescriptor):
                attribute.__dict__.pop("related_manager_cls", None)
