"""Signals the user declares for tracing (``trace_signals``, ormar's ``trace_custom_signals``...).

A declaration is module-level state, so that it works before or after ``install()``: one
:class:`Declarations` per kind of declaration holds them by the signal names they answer to, and
tells each installed source (a listener) about every declaration added or removed, so that it can
connect or disconnect it at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["Declarations"]

T = TypeVar("T")
#: Called with ``(declaration, added)``: ``added`` is ``False`` when it is withdrawn.
Listener = Callable[[T, bool], None]


class Declarations(Generic[T]):
    """A thread-safe registry of declarations by name, read without a lock on the hot path.

    Lookups (:meth:`get`) read an immutable tuple from a dict: a signal that nobody declared
    costs one dict lookup. Writers copy under the lock.
    """

    __slots__ = ("_by_name", "_listeners", "_lock", "_order")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, tuple[T, ...]] = {}
        self._order: list[tuple[T, tuple[str, ...]]] = []
        self._listeners: list[Listener[T]] = []

    def add(self, declaration: T, names: Iterable[str] = ()) -> T:
        """Declare ``declaration`` under ``names``; every listener is told. Returns it."""
        keys = tuple(names)
        with self._lock:
            self._order.append((declaration, keys))
            for name in keys:
                self._by_name[name] = (*self._by_name.get(name, ()), declaration)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(declaration, True)
        return declaration

    def remove(self, declaration: T) -> bool:
        """Withdraw ``declaration`` (by identity); every listener is told. False if it was not declared."""
        with self._lock:
            found = next((i for i, (item, _) in enumerate(self._order) if item is declaration), None)
            if found is None:
                return False
            _, keys = self._order.pop(found)
            for name in keys:
                left = tuple(d for d in self._by_name.get(name, ()) if d is not declaration)
                if left:
                    self._by_name[name] = left
                else:
                    self._by_name.pop(name, None)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(declaration, False)
        return True

    def get(self, name: str) -> tuple[T, ...]:
        """The declarations answering to ``name`` (none: an empty tuple), without taking the lock."""
        return self._by_name.get(name, ())

    def all(self) -> tuple[T, ...]:
        """Every declaration, oldest first."""
        with self._lock:
            return tuple(item for item, _ in self._order)

    def listen(self, listener: Listener[T]) -> Callable[[], None]:
        """Tell ``listener`` of every declaration added or removed from now on; returns the undo."""
        with self._lock:
            self._listeners.append(listener)

        def stop() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return stop

    def __len__(self) -> int:
        return len(self._order)
