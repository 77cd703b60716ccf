"""The core contract suite on Edgy, on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import ClassVar

import edgy
import pytest
from edgy.core import signals
from edgy.core.db.models.mixins.db import DatabaseMixin
from edgy.core.db.querysets.queryset import QuerySet
from sqlalchemy.exc import IntegrityError

from tests.contract import SourceContract
from tests.sources.edgy.helpers import PG_URL, LoopThread, pg_lock, postgres_unavailable, sqlite_url
from tests.sources.edgy.models import LIFECYCLE, Models, define_models

_names = itertools.count()


class _EdgyHarness(SourceContract):
    source = "edgy"
    span_name = "save users"
    expected_failure: ClassVar[type[BaseException]] = IntegrityError
    url: ClassVar[str]
    env: tuple[LoopThread, Models]

    @pytest.fixture(scope="class")
    @classmethod
    def class_env(cls) -> Iterator[tuple[LoopThread, Models]]:
        url = cls.url_for_class()
        with pg_lock() if url == PG_URL else contextlib.nullcontext():
            yield from cls._env_for(url)

    @classmethod
    def _env_for(cls, url: str) -> Iterator[tuple[LoopThread, Models]]:
        loop = LoopThread()
        models = define_models(url)
        loop.run(models.database.connect())
        loop.run(models.registry.drop_all())
        loop.run(models.registry.create_all())
        yield loop, models
        loop.run(models.registry.drop_all())
        loop.run(models.database.disconnect())
        loop.close()

    @pytest.fixture(autouse=True)
    def _env(self, class_env: tuple[LoopThread, Models]) -> None:
        self.env = class_env

    @classmethod
    def url_for_class(cls) -> str:
        return cls.url

    # --- harness ---

    def succeed(self) -> None:
        loop, models = self.env
        loop.run(models.User.query.create(name=f"user-{next(_names)}"))

    def fail(self) -> type[BaseException]:
        loop, models = self.env
        name = f"dup-{next(_names)}"
        loop.run(models.User.query.create(name=name))  # succeeds; the second one violates the unique name
        loop.run(models.User.query.create(name=name))
        return IntegrityError

    def orphan(self) -> None:
        loop, models = self.env
        user = models.User(name="orphan")
        self._kept = user
        loop.run(
            signals.pre_save.send_async(
                models.User,
                instance=user,
                model_instance=user,
                values={},
                column_values={},
                is_update=False,
                is_migration=False,
            )
        )

    def run_concurrently(self, threads: int, per_thread: int) -> int:
        loop, models = self.env
        count = threads * per_thread

        async def many() -> None:
            await asyncio.gather(*(models.User.query.create(name=f"c-{next(_names)}") for _ in range(count)))

        loop.run(many())
        return count

    def assert_detached(self) -> None:
        for name in (*LIFECYCLE, "pre_migrate", "post_migrate"):
            receivers = getattr(signals, name).receivers.values()
            assert not [r for r in receivers if "sigtrace" in getattr(r, "__name__", "") + repr(r)], name
        _, models = self.env
        for name in LIFECYCLE:
            assert not models.own_signals[name].receivers, name
        for owner, method in ((DatabaseMixin, "real_save"), (DatabaseMixin, "delete"), (QuerySet, "bulk_create")):
            assert not hasattr(owner.__dict__[method], "__wrapped__"), method
        assert not models.registry._callbacks.get(None)
        assert not hasattr(edgy.Registry.__init__, "__wrapped__")


class TestEdgyContractSQLite(_EdgyHarness):
    url = sqlite_url()


@pytest.mark.postgres
class TestEdgyContractPostgres(_EdgyHarness):
    url = PG_URL

    @classmethod
    def url_for_class(cls) -> str:
        reason = postgres_unavailable()
        if reason:
            pytest.skip(reason)
        return cls.url
