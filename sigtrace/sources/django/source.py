"""The Django source: model signals as operations, Django's own entry points as their scopes.

What Django sends (docs/sources/django.md, ../shared/signal-semantics.md): ``pre_save``/``post_save``,
``pre_delete``/``post_delete`` and ``m2m_changed`` (``pre_``/``post_`` ``add``, ``remove``, ``clear``) for
every model through one :class:`~django.dispatch.Signal` each; receivers connected with
``sender=None`` see every model, also those defined later. Receivers run synchronously in the
caller's frame, and the post signal is skipped when the operation raises.

So each traced operation has two halves:

* the entry point (``Model.save_base``, ``Model.delete``, the many-to-many manager's ``add``,
  ``remove`` and ``clear``; ``asave``/``adelete``/``aadd``... go through them) is wrapped in
  :meth:`Engine.entry`: the operation's span is current during the call, so the SQL spans of the
  driver instrumentation nest under it, and an exception (``IntegrityError``, a raising receiver)
  ends it as an ERROR at once;
* the signals claim that operation (``begin``) and end it (``end``) with what only they know
  (the database alias, the pk of a new row, ``created``, the related pks).

``QuerySet.update``, ``bulk_create`` and ``bulk_update`` send no signal at all: they are wrapped
as operations of their own (one span, one audit event per call, with the row count and pks).
``QuerySet.delete`` sends ``pre_delete``/``post_delete`` for every row (no fast delete while any
delete receiver is connected, which is why delete tracing can be turned off).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from django.db import connections, router
from django.db.models import Model, signals
from django.db.models.fields import related_descriptors

from sigtrace import semconv
from sigtrace._config import ConfigError, parse_bool, warn_unknown_variables
from sigtrace.core import safety
from sigtrace.core.context import current_scope
from sigtrace.core.correlation import identity_key, weak_ref
from sigtrace.core.operation import Operation
from sigtrace.sources.base import Source

__all__ = ["ROWS_AFFECTED", "DjangoOptions", "DjangoSource", "django_options"]

SOURCE = "django"
#: Span attribute: rows a bulk operation wrote (``QuerySet.update``, ``bulk_create``, ``bulk_update``, m2m).
ROWS_AFFECTED = "sigtrace.rows_affected"
#: At most this many pks are listed in the audit event of a bulk operation (``pks_truncated`` says when cut).
MAX_AUDITED_PKS = 100
_M2M_ACTIONS: Mapping[str, tuple[str, bool]] = {
    "pre_add": ("m2m_add", True),
    "post_add": ("m2m_add", False),
    "pre_remove": ("m2m_remove", True),
    "post_remove": ("m2m_remove", False),
    "pre_clear": ("m2m_clear", True),
    "post_clear": ("m2m_clear", False),
}
_M2M_METHODS: Mapping[str, str] = {"add": "m2m_add", "remove": "m2m_remove", "clear": "m2m_clear"}
#: Django 6 routes add/remove/clear and set() through these; where they exist they are the entry points.
_M2M_BASE_METHODS: Mapping[str, str] = {
    "_add_base": "m2m_add",
    "_remove_base": "m2m_remove",
    "_clear_base": "m2m_clear",
}
#: Operations whose entry point calls other wrapped entry points (a bulk_update runs QuerySet.update,
#: an m2m add runs the through model's bulk_create): those inner calls are part of the outer one.
_COMPOSITE = frozenset({"update", "bulk_create", "bulk_update", *_M2M_METHODS.values()})


class _Unclaimable:
    """``expect`` of scopes no signal may claim (the bulk operations send none)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0


_UNCLAIMABLE = _Unclaimable()


# --- options ---


@dataclass(frozen=True, slots=True)
class DjangoOptions:
    """What the Django source traces: the ``"django"`` entry of ``settings.SIGTRACE``, or ``SIGTRACE_DJANGO_*``."""

    #: pre_save/post_save around ``Model.save_base`` (``save``, ``asave``, ``create``...).
    trace_save: bool = True
    #: pre_delete/post_delete around ``Model.delete`` and ``QuerySet.delete``. Any delete receiver makes
    #: Django give up its fast-delete path (benchmarks/django_fast_delete.py): turn it off where that costs.
    trace_delete: bool = True
    #: m2m_changed around the many-to-many managers' ``add``/``remove``/``clear`` (and ``set``).
    trace_m2m: bool = True
    #: ``QuerySet.update``, ``bulk_create``, ``bulk_update`` (no signal exists for them).
    trace_bulk: bool = True
    #: post_init as a span event (and an audit event with ``audit_reads``): one per model instance built.
    trace_init: bool = False
    #: ``callable(user) -> str | None`` naming the audit actor in ActorMiddleware (default: ``get_username()``).
    actor: Callable[[Any], str | None] | None = None


_BOOL_OPTIONS = tuple(f.name for f in fields(DjangoOptions) if f.name.startswith("trace_"))


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
    warn_unknown_variables(env, {f"SIGTRACE_DJANGO_{name.upper()}" for name in _BOOL_OPTIONS}, "SIGTRACE_DJANGO_")
    for name in _BOOL_OPTIONS:
        variable = f"SIGTRACE_DJANGO_{name.upper()}"
        raw = env.get(variable, "")
        if raw.strip():
            values[name] = parse_bool(raw, variable)
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
        values[name] = value
    return DjangoOptions(**values)


# --- describing models ---


@dataclass(frozen=True, slots=True)
class _Target:
    model: str
    collection: str
    db_system: str | None
    namespace: str | None


def _db_of(using: str | None) -> tuple[str | None, str | None]:
    if not using:
        return None, None
    connection = connections[using]
    name = connection.settings_dict.get("NAME")
    # Django reports MariaDB as "mysql" (telling them apart needs a query), and so does sigtrace.
    return semconv.db_system_name(connection.vendor), (str(name) if name else None)


def _pk(instance: Any) -> str | None:
    pk = getattr(instance, "pk", None)
    return None if pk is None else str(pk)


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def _plain(value: Any) -> Any:
    """A value for the audit log: expressions (``F("n") + 1``) as their text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class DjangoSource(Source):
    """Connects the model signals (sender=None: every model) and wraps Django's own entry points."""

    name = SOURCE

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        self.django = django_options()
        self.capture_values = bool(getattr(options, "capture_values", False))
        self._targets: dict[tuple[type[Any], str | None], _Target] = {}
        self._written: dict[type[Any], tuple[str, ...]] = {}

    # --- attach ---

    def attach(self) -> None:
        opts = self.django
        if opts.trace_save:
            self._connect(signals.pre_save, self._on_pre_save)
            self._connect(signals.post_save, self._on_post_save)
            self.patch(Model, "save_base", self._wrap_save_base)
        if opts.trace_delete:
            self._connect(signals.pre_delete, self._on_pre_delete)
            self._connect(signals.post_delete, self._on_post_delete)
            self.patch(Model, "delete", self._wrap_model_delete)
            self.patch("django.db.models.query", "QuerySet.delete", self._wrap_queryset_delete)
        if opts.trace_m2m:
            self._connect(signals.m2m_changed, self._on_m2m_changed)
            self.patch(related_descriptors, "create_forward_many_to_many_manager", self._wrap_m2m_manager_factory)
            # Managers built before now are cached on their descriptors: rebuild them (and again on detach).
            _forget_related_managers()
            self.on_detach(_forget_related_managers)
        if opts.trace_bulk:
            for method in ("update", "bulk_create", "bulk_update"):
                self.patch("django.db.models.query", f"QuerySet.{method}", self._bulk_wrapper(method))
        if opts.trace_init:
            self._connect(signals.post_init, self._on_post_init)

    def _connect(self, signal: Any, receiver: Callable[..., None]) -> None:
        """Strong reference, one connection per signal (dispatch_uid), every sender."""
        uid = f"sigtrace.django.{receiver.__name__}"
        signal.connect(receiver, weak=False, dispatch_uid=uid)
        self.on_detach(lambda: signal.disconnect(dispatch_uid=uid))

    # --- describing ---

    def _target(self, cls: type[Any], using: str | None) -> _Target:
        key = (cls, using)
        target = self._targets.get(key)
        if target is None:
            db_system, namespace = _db_of(using)
            target = _Target(cls.__name__, cls._meta.db_table, db_system, namespace)
            if len(self._targets) < 4096:
                self._targets[key] = target
        return target

    def _operation(self, name: str, cls: type[Any], using: str | None, signal: str | None, pk: str | None) -> Operation:
        target = self._target(cls, using)
        return Operation(
            source=SOURCE,
            name=name,
            model=target.model,
            collection=target.collection,
            db_system=target.db_system,
            namespace=target.namespace,
            pk=pk,
            signal=signal,
        )

    def _written_fields(self, cls: type[Any], update_fields: Iterable[str] | None) -> tuple[str, ...]:
        """What a save writes: ``update_fields``, else every concrete field but the primary key."""
        if update_fields:
            return tuple(sorted(update_fields))
        written = self._written.get(cls)
        if written is None:
            written = tuple(f.name for f in cls._meta.concrete_fields if not f.primary_key)
            self._written[cls] = written
        return written

    def _save_operation(
        self, cls: type[Any], instance: Any, using: str | None, update_fields: Any, signal: str | None
    ) -> Operation:
        op = self._operation("save", cls, using, signal, _pk(instance))
        written = self._written_fields(cls, update_fields)
        op.changed_fields = written
        if self.capture_values:
            attnames = {f.name: f.attname for f in cls._meta.concrete_fields}
            op.values = {name: _plain(getattr(instance, attnames.get(name, name), None)) for name in written}
        return op

    # --- save ---

    def _wrap_save_base(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        # The hot path of every save: try/except rather than ``with safety.guard`` (same net, fewer calls).
        op: Operation | None = None
        try:
            cls = type(instance)
            using = _arg(args, kwargs, 3, "using") or router.db_for_write(cls, instance=instance)
            op = self._save_operation(cls, instance, using, _arg(args, kwargs, 4, "update_fields"), None)
            op.ref = weak_ref(instance)
            if _arg(args, kwargs, 0, "raw"):
                op.audit["raw"] = True
            scope = self.engine.entry(op, expect=(id(instance), "save"))  # identity_key(instance, "save")
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report("source.django.save_base", exc)
            return wrapped(*args, **kwargs)
        with scope:
            return wrapped(*args, **kwargs)

    def _on_pre_save(
        self,
        sender: Any,
        instance: Any = None,
        raw: bool = False,
        using: str | None = None,
        update_fields: Any = None,
        **_: Any,
    ) -> None:
        try:
            key = identity_key(instance, "save")
            if self.engine.claim(key, obj=instance, signal="pre_save") is not None:
                return  # the save_base wrapper's operation, which already knows what this signal says
            op = self._save_operation(sender, instance, using, update_fields, "pre_save")
            if raw:
                op.audit["raw"] = True
            self.engine.begin(op, key, obj=instance)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report("source.django.pre_save", exc)

    def _on_post_save(self, sender: Any, instance: Any = None, created: bool = False, **_: Any) -> None:
        try:
            self.engine.end(
                identity_key(instance, "save"),
                obj=instance,
                pk=_pk(instance),
                signal="post_save",
                audit={"created": bool(created)},
            )
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report("source.django.post_save", exc)

    # --- delete ---

    def _wrap_model_delete(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        op: Operation | None = None
        with safety.guard("source.django.delete"):
            cls = type(instance)
            using = _arg(args, kwargs, 0, "using") or router.db_for_write(cls, instance=instance)
            op = self._operation("delete", cls, using, None, _pk(instance))
            op.ref = weak_ref(instance)
        if op is None:
            return wrapped(*args, **kwargs)
        # Cascaded rows are operations of their own (their pre_delete/post_delete), children of this one.
        with self.engine.entry(op, expect=identity_key(instance, "delete")):
            return wrapped(*args, **kwargs)

    def _wrap_queryset_delete(self, wrapped: Callable[..., Any], queryset: Any, args: Any, kwargs: Any) -> Any:
        # One operation per deleted row comes from the signals; the scope ends them at once on failure.
        with self.engine.entry(None):
            return wrapped(*args, **kwargs)

    def _on_pre_delete(self, sender: Any, instance: Any = None, using: str | None = None, **_: Any) -> None:
        with safety.guard("source.django.pre_delete"):
            op = self._operation("delete", sender, using, "pre_delete", _pk(instance))
            self.engine.begin(op, identity_key(instance, "delete"), obj=instance)

    def _on_post_delete(self, sender: Any, instance: Any = None, **_: Any) -> None:
        with safety.guard("source.django.post_delete"):
            self._end_after_commit(identity_key(instance, "delete"), instance, signal="post_delete")

    def _end_after_commit(self, key: Hashable, instance: Any, **updates: Any) -> None:
        """End at a post signal sent INSIDE Django's own ``atomic`` block (delete, m2m): where the operation
        belongs to the entry scope around that block, leave the end to the scope, which sees the commit
        fail (a deferred foreign key) as an exception; elsewhere end now."""
        scope = current_scope()
        op = self.engine.lookup(key)
        if (
            scope is not None
            and op is not None
            and (op.ref is None or op.ref() is instance)
            and (op is scope.op or op in scope.ops)
        ):
            op.update(**updates)
            return
        self.engine.end(key, obj=instance, **updates)

    # --- many-to-many ---

    def _wrap_m2m_manager_factory(self, wrapped: Callable[..., Any], _instance: Any, args: Any, kwargs: Any) -> Any:
        manager_cls = wrapped(*args, **kwargs)
        traced: Any = None
        with safety.guard("source.django.m2m_manager"):
            traced = self._traced_manager(manager_cls)
        return manager_cls if traced is None else traced

    def _traced_manager(self, manager_cls: type[Any]) -> type[Any]:
        """A subclass whose add/remove/clear run in an entry scope (``set``, ``create``, ``aadd``... call them)."""
        source = self

        def scoped(method: str, name: str) -> Callable[..., Any]:
            original = getattr(manager_cls, method)

            def call(manager: Any, *args: Any, **kwargs: Any) -> Any:
                op: Operation | None = None
                expect: Hashable = None
                with safety.guard("source.django.m2m_entry"):
                    if name == "m2m_clear" or args:  # add()/remove() of nothing send no signal
                        op, expect = source._m2m_entry(manager, name)
                if op is None:
                    return original(manager, *args, **kwargs)
                with source.engine.entry(op, expect=expect):
                    return original(manager, *args, **kwargs)

            call.__name__ = call.__qualname__ = method
            call.alters_data = True  # type: ignore[attr-defined]
            return call

        methods = _M2M_BASE_METHODS if hasattr(manager_cls, "_add_base") else _M2M_METHODS
        namespace: dict[str, Any] = {method: scoped(method, name) for method, name in methods.items()}
        namespace["__module__"] = manager_cls.__module__
        namespace["__qualname__"] = manager_cls.__qualname__
        namespace["_sigtrace_traced"] = True
        return type(manager_cls.__name__, (manager_cls,), namespace)

    def _m2m_entry(self, manager: Any, name: str) -> tuple[Operation, Hashable]:
        instance = manager.instance
        through = manager.through
        using = router.db_for_write(through, instance=instance)
        op = self._m2m_operation(name, type(instance), through, using, instance, None)
        op.ref = weak_ref(instance)
        return op, identity_key(instance, name, through)

    def _m2m_operation(
        self, name: str, cls: type[Any], through: Any, using: str | None, instance: Any, signal: str | None
    ) -> Operation:
        # The through table is what is written; the model is the side the call was made on.
        op = self._operation(name, through, using, signal, _pk(instance))
        op.model = cls.__name__
        return op

    def _on_m2m_changed(
        self,
        sender: Any,
        instance: Any = None,
        action: str | None = None,
        reverse: bool = False,
        model: Any = None,
        pk_set: Any = None,
        using: str | None = None,
        **_: Any,
    ) -> None:
        with safety.guard("source.django.m2m_changed"):
            kind = _M2M_ACTIONS.get(action) if isinstance(action, str) else None
            if kind is None:
                return
            name, is_pre = kind
            key = identity_key(instance, name, sender)
            if not is_pre:
                self._end_after_commit(key, instance)
                return
            op = self._m2m_operation(name, type(instance), sender, using, instance, "m2m_changed")
            related = sorted(str(pk) for pk in pk_set) if pk_set is not None else None
            op.audit = {"related_model": getattr(model, "__name__", None), "reverse": bool(reverse)}
            if related is not None:
                op.audit["related_pks"] = related[:MAX_AUDITED_PKS]
                op.attributes[ROWS_AFFECTED] = len(related)
            self.engine.begin(op, key, obj=instance)

    # --- init (off by default) ---

    def _on_post_init(self, sender: Any, instance: Any = None, **_: Any) -> None:
        # pre_init carries no instance (only the constructor's arguments): post_init alone marks each build.
        with safety.guard("source.django.post_init"):
            using = getattr(getattr(instance, "_state", None), "db", None)
            op = self._operation("init", sender, using, "post_init", _pk(instance))
            op.write = False
            self.engine.record_event(op)

    # --- bulk operations (no signals) ---

    def _bulk_wrapper(self, method: str) -> Callable[..., Any]:
        def wrapper(wrapped: Callable[..., Any], queryset: Any, args: Any, kwargs: Any) -> Any:
            op: Operation | None = None
            with safety.guard(f"source.django.{method}"):
                args, op = self._bulk_operation(method, queryset, args, kwargs)
            if op is None:
                return wrapped(*args, **kwargs)
            with self.engine.entry(op, expect=_UNCLAIMABLE):
                result = wrapped(*args, **kwargs)
                with safety.guard(f"source.django.{method}"):
                    _record_bulk(method, op, args, kwargs, result)
                return result

        return wrapper

    def _bulk_operation(
        self, method: str, queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], Operation | None]:
        scope = current_scope()
        if scope is not None and scope.op is not None and scope.op.source == SOURCE and scope.op.name in _COMPOSITE:
            return args, None  # part of the enclosing operation (bulk_update's updates, an m2m add's rows)
        model = queryset.model
        using = queryset._db or router.db_for_write(model, **queryset._hints)
        op = self._operation(method, model, using, None, None)
        if method == "update":
            op.changed_fields = tuple(sorted(kwargs))
            if self.capture_values:
                op.values = {name: _plain(value) for name, value in kwargs.items()}
            return args, op
        objs = _arg(args, kwargs, 0, "objs")
        if objs is not None and not isinstance(objs, list | tuple):
            objs = list(objs)  # a generator: read it once, hand the list on
            if "objs" in kwargs:
                kwargs["objs"] = objs
            else:
                args = (objs, *args[1:])
        if method == "bulk_update":
            op.changed_fields = tuple(sorted(str(f) for f in (_arg(args, kwargs, 1, "fields") or ())))
        else:
            op.changed_fields = self._written_fields(model, None)
        return args, op


def _record_bulk(method: str, op: Operation, args: Sequence[Any], kwargs: Mapping[str, Any], result: Any) -> None:
    if method == "bulk_create":
        objs = _arg(args, kwargs, 0, "objs") or ()
        rows = len(result) if isinstance(result, list) else len(objs)
        pks = [str(obj.pk) for obj in objs if getattr(obj, "pk", None) is not None]
    elif method == "bulk_update":
        objs = _arg(args, kwargs, 0, "objs") or ()
        rows = int(result or 0)
        pks = [str(obj.pk) for obj in objs]
    else:
        rows = int(result or 0)
        pks = []
    op.attributes[ROWS_AFFECTED] = rows
    op.audit["rows"] = rows
    if pks:
        op.audit["pks"] = pks[:MAX_AUDITED_PKS]
        if len(pks) > MAX_AUDITED_PKS:
            op.audit["pks_truncated"] = True


def _forget_related_managers() -> None:
    """Drop the many-to-many manager classes cached on descriptors, so they are rebuilt (traced or not)."""
    from django.apps import apps

    if not apps.models_ready:
        return
    for model in apps.get_models(include_auto_created=True):
        for attribute in vars(model).values():
            if isinstance(attribute, related_descriptors.ManyToManyDescriptor):
                attribute.__dict__.pop("related_manager_cls", None)
