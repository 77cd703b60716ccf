"""Old values of updates: the values Django loaded from the database, kept for the models listed in ``audit_diff``.

Django keeps no loaded values (an instance holds only its current ones), so ``{field: [old, new]}`` needs a copy
of what was loaded, taken without an extra query: ``Model.from_db`` (every row a queryset loads; its
documentation suggests exactly this) is wrapped and, for the listed classes only, keeps
``dict(zip(field_names, values))`` on the instance's ``_state``. A successful save refreshes the copy with what it
wrote (so a second save of the same object diffs against the first), and ``refresh_from_db`` with what it
reloaded. Deferred fields (``only()``/``defer()``) are not in the copy: their old value is unknown.

Costs (docs/sources/django.md): one wrapper call per loaded row of every model while ``audit_diff`` is set, one
dict per loaded row of a listed model (mutable values such as JSON are deep-copied), held as long as the
instance lives.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import wrapt
from django.db.models import Model

from sigtrace._config import ConfigError
from sigtrace.sources.kit import Source

__all__ = ["LoadedValues"]

#: The attribute of ``instance._state`` that holds the loaded values (attname -> value).
_ATTRIBUTE = "_sigtrace_loaded"
_MISSING = object()
_IMMUTABLE = (str, int, float, bool, bytes, type(None))


def _kept(value: Any) -> Any:
    """The value as loaded, safe from later in-place changes (a JSON dict, an array)."""
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, dict | list | set | bytearray):
        return copy.deepcopy(value)
    return value


class LoadedValues:
    """The loaded-values copy of the models named in ``audit_diff`` (``"app_label.Model"``)."""

    def __init__(self, labels: Iterable[str], guard: Callable[[str], AbstractContextManager[Any]]) -> None:
        self.labels = frozenset(label.lower() for label in labels)
        self._listed: dict[type[Any], bool] = {}
        #: The source's safety net (``Source.guard``), one per hook.
        self._guard_from_db = guard("from_db")
        self._guard_refresh = guard("refresh_from_db")

    def check(self) -> None:
        """Every name must be a model, once the models are loaded (a typo is a ConfigError at install)."""
        from django.apps import apps

        if not apps.models_ready:
            return
        known = {model._meta.label_lower for model in apps.get_models(include_auto_created=True)}
        unknown = sorted(self.labels - known)
        if unknown:
            raise ConfigError(f'settings.SIGTRACE["django"]["audit_diff"]: no such model(s): {", ".join(unknown)}')

    def attach(self, source: Source) -> None:
        # from_db is a classmethod: wrap the descriptor itself and put it back on detach (unwrap() would
        # leave the classmethod bound to Model behind, and every model's rows would then be built as Model).
        source.replace(Model, "from_db", wrapt.FunctionWrapper(Model.__dict__["from_db"], self._wrap_from_db))
        source.patch(Model, "refresh_from_db", self._wrap_refresh_from_db)

    def listed(self, cls: type[Any]) -> bool:
        listed = self._listed.get(cls)
        if listed is None:
            meta = getattr(cls, "_meta", None)
            listed = meta is not None and meta.label_lower in self.labels
            self._listed[cls] = listed
        return listed

    # --- keeping ---

    def _wrap_from_db(self, wrapped: Callable[..., Any], _cls: Any, args: Any, kwargs: Any) -> Any:
        new = wrapped(*args, **kwargs)
        with self._guard_from_db:
            if self.listed(type(new)):
                names = kwargs.get("field_names", args[1] if len(args) > 1 else ())
                values = kwargs.get("values", args[2] if len(args) > 2 else ())
                kept = {name: _kept(value) for name, value in zip(names, values, strict=False)}
                setattr(new._state, _ATTRIBUTE, kept)
        return new

    def _wrap_refresh_from_db(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        with self._guard_refresh:
            cls = type(instance)
            if self.listed(cls):
                fields = kwargs.get("fields", args[1] if len(args) > 1 else None)
                deferred = instance.get_deferred_fields()
                attnames = self._attnames(cls, fields)
                self._keep(instance, [name for name in attnames if name not in deferred])
        return result

    def saved(self, instance: Any, update_fields: Iterable[str] | None) -> None:
        """After a successful save: what it wrote is now what the database holds."""
        cls = type(instance)
        if self.listed(cls):
            self._keep(instance, self._attnames(cls, update_fields))

    def _keep(self, instance: Any, attnames: Iterable[str]) -> None:
        state = instance._state
        loaded = getattr(state, _ATTRIBUTE, None)
        if loaded is None:
            loaded = {}
            setattr(state, _ATTRIBUTE, loaded)
        values = instance.__dict__
        for attname in attnames:
            value = values.get(attname, _MISSING)
            if value is not _MISSING:
                loaded[attname] = _kept(value)

    @staticmethod
    def _attnames(cls: type[Any], names: Iterable[str] | None) -> list[str]:
        fields = cls._meta.concrete_fields
        if names is None:
            return [f.attname for f in fields]
        wanted = set(names)
        return [f.attname for f in fields if f.name in wanted or f.attname in wanted]

    # --- reporting ---

    def changes(
        self, instance: Any, written: Sequence[str], attnames: Mapping[str, str], plain: Callable[[Any], Any]
    ) -> tuple[dict[str, Any], list[str]] | None:
        """``({field: [old, new]} for changed fields, else {field: new} where the old is unknown; the pair names)``.

        ``None`` when there is nothing to diff against: an insert, or an object that was never loaded.
        Values are read from the instance's ``__dict__`` (never a deferred attribute's query).
        """
        state = instance._state
        loaded = getattr(state, _ATTRIBUTE, None)
        if loaded is None or state.adding:
            return None
        values: dict[str, Any] = {}
        pairs: list[str] = []
        current = instance.__dict__
        for name in written:
            attname = attnames.get(name, name)
            new = current.get(attname)
            old = loaded.get(attname, _MISSING)
            if old is _MISSING:
                values[name] = plain(new)
                continue
            try:
                same = bool(old == new)
            except Exception:  # noqa: BLE001 - a value type that cannot compare: report both sides
                same = False
            if not same:
                values[name] = [plain(old), plain(new)]
                pairs.append(name)
        return values, pairs
