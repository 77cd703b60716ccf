"""The core contract on ormar (SQLite), driven from sync tests through one event loop owned by the harness.

The models are defined at import time, before any ``install()``. The concurrency check runs
``threads * per_thread`` saves as tasks under ``asyncio.gather``, each in its own parent span.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import ormar
import pytest
from opentelemetry import trace
from sqlalchemy.exc import IntegrityError

from tests.contract import SourceContract
from tests.sources.ormar.models import Models, define

T = TypeVar("T")


class LoopHarness:
    """An event loop and a SQLite database, reused by every sync contract test of the module."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.models: Models = define(f"sqlite+aiosqlite:///{path}")
        self.names = itertools.count()
        self.kept: list[Any] = []
        self.run(self.models.create_all())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.models.drop_all())
        self.loop.close()


_harness: LoopHarness | None = None


@pytest.fixture(scope="module", autouse=True)
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopHarness]:
    global _harness
    _harness = LoopHarness(tmp_path_factory.mktemp("ormar-contract") / "contract.sqlite")
    yield _harness
    _harness.close()
    _harness = None


def _h() -> LoopHarness:
    assert _harness is not None
    return _harness


class TestOrmarContract(SourceContract):
    source = "ormar"
    span_name = "save artists"
    expected_failure: ClassVar[type[BaseException]] = IntegrityError

    def succeed(self) -> None:
        h = _h()
        h.run(h.models.Artist(name=f"artist-{next(h.names)}").save())

    def fail(self) -> type[BaseException]:
        h = _h()
        name = f"dup-{next(h.names)}"
        h.run(h.models.Artist(name=name).save())
        h.run(h.models.Artist(name=name).save())
        return IntegrityError

    def orphan(self) -> None:
        # A pre_save sent by hand, outside Model.save(): no post, no entry point to fail it.
        h = _h()
        artist = h.models.Artist(name="never-saved")
        h.kept.append(artist)
        h.run(h.models.Artist.ormar_config.signals.pre_save.send(sender=h.models.Artist, instance=artist))

    def run_concurrently(self, threads: int, per_thread: int) -> int:
        h = _h()
        total = threads * per_thread
        tracer = trace.get_tracer("contract")

        async def one(i: int) -> None:
            with tracer.start_as_current_span(f"task-{i}"):
                await h.models.Artist(name=f"concurrent-{next(h.names)}").save()

        async def all_of_them() -> None:
            await asyncio.gather(*(one(i) for i in range(total)))

        h.run(all_of_them())
        return total

    def assert_detached(self) -> None:
        from ormar.queryset.queryset import QuerySet
        from ormar.relations.querysetproxy import QuerysetProxy
        from ormar.relations.relation_proxy import RelationProxy
        from ormar.signals.signal import Signal

        for owner, name in (
            (Signal, "send"),
            (ormar.Model, "save"),
            (ormar.Model, "update"),
            (ormar.Model, "delete"),
            (RelationProxy, "add"),
            (RelationProxy, "remove"),
            (QuerysetProxy, "clear"),
            (QuerySet, "update"),
            (QuerySet, "delete"),
            (QuerySet, "bulk_create"),
            (QuerySet, "bulk_update"),
        ):
            assert not hasattr(vars(owner)[name], "__wrapped__"), f"{owner.__name__}.{name} is still patched"
        # sigtrace never connects receivers to ormar's emitters.
        for signal in _h().models.Artist.ormar_config.signals.values():
            assert not signal._receivers
