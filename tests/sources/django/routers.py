"""A database router that counts what Django asks it (the transparency tests: sigtrace must ask nothing)."""

from __future__ import annotations

from typing import Any, ClassVar


class CountingRouter:
    """Sends every read and write to ``target``; records each call (method, model label) in ``calls``."""

    target: ClassVar[str | None] = None
    calls: ClassVar[list[tuple[str, str]]] = []

    def _count(self, method: str, model: Any) -> None:
        CountingRouter.calls.append((method, getattr(getattr(model, "_meta", None), "label", repr(model))))

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        self._count("db_for_read", model)
        return CountingRouter.target

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        self._count("db_for_write", model)
        return CountingRouter.target

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        self._count("allow_relation", type(obj1))
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        return None  # asked by migrations and flushes, outside the measured calls: not counted
