"""Facts a source looks up once and reuses at every operation: per model, per database, per bind.

:class:`FactsCache` holds them weakly (a model class or an engine that goes away takes its facts
with it); :class:`ModelFacts` is what every operation of a model reports about the model, and
builds that operation (:meth:`ModelFacts.operation`). The small functions below are the one
spelling of what every source needs: the database of a URL, the text of a primary key, and the
audit fields of a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sigtrace import semconv
from sigtrace.core.operation import Operation
from sigtrace.core.text import MAX_TEXT, safe_text
from sigtrace.sources.kit.identity import WeakIdentityMap

__all__ = ["FactsCache", "ModelFacts", "batch_audit", "database_of_url", "pk_text"]

K = TypeVar("K")
V = TypeVar("V")


_MISSING: Any = object()


class FactsCache(Generic[K, V]):
    """``compute(key)`` once per key, held weakly by the key; thread-safe enough (a race computes twice).

    ``keep(value)`` decides whether an answer is final: a model whose table is not known yet
    (abstract, being defined) is asked again next time. A key that takes no weak reference is
    computed every time. Keys are told apart by identity (a model class, a mapper, an engine), in a
    :class:`~sigtrace.sources.kit.identity.WeakIdentityMap`: one dict ``get`` per lookup, and none
    at all for hot paths that read :attr:`cached`.
    """

    __slots__ = ("_compute", "_keep", "_values", "cached")

    def __init__(self, compute: Callable[[K], V], *, keep: Callable[[V], bool] | None = None) -> None:
        self._compute = compute
        self._keep = keep
        self._values: WeakIdentityMap[V] = WeakIdentityMap()
        #: ``cached(id(key))``: the value kept for ``key``, or ``None`` (for values that are never falsy:
        #: ``cache.cached(id(cls)) or cache(cls)``).
        self.cached: Callable[[int], V | None] = self._values.get_by_id

    def __call__(self, key: K) -> V:
        found = self._values.get_or(key, _MISSING)
        if found is not _MISSING:
            return found
        value = self._compute(key)
        if self._keep is None or self._keep(value):
            with contextlib.suppress(TypeError):  # no weak reference to it: computed every time
                self._values.set(key, value)
        return value

    def __len__(self) -> int:
        return len(self._values)

    def forget(self, key: K) -> None:
        self._values.pop(key)

    def clear(self) -> None:
        self._values.clear()


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What every operation of one model reports about it. Sources subclass it for facts of their own."""

    #: ``sigtrace.model`` / audit ``model``: the class name.
    model: str
    #: ``db.collection.name`` / audit ``collection``: the table.
    collection: str | None = None
    #: ``db.system.name``, where the model says which database it lives in.
    db_system: str | None = None
    #: ``db.namespace``: the database name (never for SQLite, whose "name" is a file path).
    namespace: str | None = None

    def operation(self, source: str, name: str, **fields: Any) -> Operation:
        """A new operation ``name`` of this model; ``fields`` set or override any :class:`Operation` field.

        One constructor call (the facts filled in as keyword defaults): what every write of a source costs.
        """
        fields.setdefault("model", self.model)
        fields.setdefault("collection", self.collection)
        fields.setdefault("db_system", self.db_system)
        fields.setdefault("namespace", self.namespace)
        return Operation(source, name, **fields)


def database_of_url(url: object, schema: str | None = None) -> tuple[str | None, str | None]:
    """``(db.system.name, db.namespace)`` of a database URL (``postgresql+asyncpg://u@h:5432/shop``).

    Parsed as text, so that any library's URL object does (SQLAlchemy's, databasez's, a string).
    SQLite gets no namespace. ``schema`` (a model's schema) is added as ``database|schema``.
    """
    text = str(url) if url is not None else ""
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme:
        return None, None
    system = semconv.db_system_name(scheme.split("+", 1)[0])
    if system == "sqlite":
        return system, None
    path = rest.partition("?")[0]
    database = path.partition("/")[2] if "/" in path else ""
    if not database:
        return system, None
    return system, f"{database}|{schema}" if schema else database


#: Ints below this bound in size have a short text (``str`` of a longer one may be cut or refused: safe_text).
_LONG_INT = 10**18

#: Joins the parts of a composite primary key (and PynamoDB's hash and range keys).
PK_SEPARATOR = "|"


def pk_text(value: Any) -> str | None:
    """The text of a primary key for ``sigtrace.pk`` and the audit ``pk``: ``None`` when it has none yet.

    A composite key (a tuple, a list, or a mapping of its columns) is its parts joined by ``|``;
    one whose parts are all ``None`` has no key yet. Never raises (``core/text.py``).
    """
    if value is None:
        return None
    kind = type(value)
    if kind is int and -_LONG_INT < value < _LONG_INT:  # the common pk, spelled without safe_text's frame
        return str(value)
    if kind is str and len(value) <= MAX_TEXT:
        text: str = value
        return text
    if isinstance(value, Mapping):
        value = tuple(value.values())
    if isinstance(value, (tuple, list)):
        if all(part is None for part in value):
            return None
        if len(value) == 1:
            return safe_text(value[0])
        return PK_SEPARATOR.join(safe_text(part) for part in value)
    return safe_text(value)


def batch_audit(pks: Iterable[Any] | None = None, *, rows: int | None = None) -> dict[str, Any]:
    """The audit fields of a batch write: ``rows`` written, ``pks`` (at most ``MAX_AUDIT_PKS``, as text),
    ``pks_truncated`` when the list was cut. Keys without a value (``None``) are left out."""
    fields: dict[str, Any] = {}
    if rows is not None:
        fields[semconv.AUDIT_ROWS] = rows
    if pks is not None:
        listed: list[str] = []
        truncated = False
        for pk in pks:
            text = pk if type(pk) is str else pk_text(pk)
            if text is None:
                continue
            if len(listed) == semconv.MAX_AUDIT_PKS:
                truncated = True
                break
            listed.append(text)
        if listed:
            fields[semconv.AUDIT_PKS] = listed
        if truncated:
            fields[semconv.AUDIT_PKS_TRUNCATED] = True
    return fields
