"""A mapping keyed by the identity of objects it holds weakly: one dict ``get`` per lookup.

What ``weakref.WeakKeyDictionary`` does for library objects (model classes, connections, transaction
handles), without its cost on a hot path: that one builds a weak reference and runs two Python frames
per lookup, and compares keys with ``==`` (a model may define it). Here the key is ``id(obj)`` in a
plain dict, and a weak reference per entry removes it when the object goes, from its callback, which
runs before the object's memory (so its ``id``) can be reused.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["WeakIdentityMap"]

V = TypeVar("V")
T = TypeVar("T")


class WeakIdentityMap(Generic[V]):
    """``{obj: value}`` by identity, each entry gone with its object (``on_collected(value)`` called then)."""

    __slots__ = ("__weakref__", "_on_collected", "_refs", "_values", "get_by_id")

    def __init__(self, on_collected: Callable[[V], None] | None = None) -> None:
        self._values: dict[int, V] = {}
        self._refs: dict[int, weakref.ReferenceType[Any]] = {}
        self._on_collected = on_collected
        #: ``get_by_id(id(obj))``: the value of ``obj``, or ``None`` (the dict's own ``get``: no Python frame).
        self.get_by_id: Callable[[int], V | None] = self._values.get

    def get(self, obj: object) -> V | None:
        return self._values.get(id(obj))

    def get_or(self, obj: object, default: T) -> V | T:
        """The value of ``obj``, else ``default`` (for maps whose values may be ``None``)."""
        return self._values.get(id(obj), default)

    def set(self, obj: object, value: V) -> None:
        """Keep ``value`` for ``obj``; ``TypeError`` if ``obj`` takes no weak reference."""
        ident = id(obj)
        this = weakref.ref(self)

        def drop(ref: weakref.ReferenceType[Any]) -> None:
            owner = this()
            if owner is not None and owner._refs.get(ident) is ref:
                del owner._refs[ident]
                value = owner._values.pop(ident, None)
                if value is not None and owner._on_collected is not None:
                    owner._on_collected(value)

        ref = weakref.ref(obj, drop)
        self._refs[ident] = ref
        self._values[ident] = value

    def pop(self, obj: object) -> V | None:
        """Remove and return the value of ``obj`` (its weak reference goes too: no callback later)."""
        ident = id(obj)
        self._refs.pop(ident, None)
        return self._values.pop(ident, None)

    def clear(self) -> None:
        self._refs.clear()
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)
