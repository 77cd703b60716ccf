"""Backends for the ormar tests: SQLite (aiosqlite) always, PostgreSQL (asyncpg) at 127.0.0.1:5432 when it is up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.sources.async_orm import BACKENDS, PostgresDatabase, sqlite_url
from tests.sources.ormar.models import Models, define

POSTGRES = PostgresDatabase("sigtrace_ormar")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's database; the PostgreSQL one held alone while the test runs (other sessions share it)."""
    if request.param == "postgresql":
        url = POSTGRES.url_or_skip()
        with POSTGRES.lock():
            yield url
    else:
        yield sqlite_url(tmp_path)


@pytest.fixture
async def make_models(db_url: str) -> AsyncIterator[Callable[[], asyncio.Future[Models]]]:
    """``await make_models()`` defines fresh model classes (now: before or after install), with tables."""
    created: list[Models] = []

    async def make(**engine_options: object) -> Models:
        models = define(db_url, **engine_options)
        await models.create_all()
        created.append(models)
        return models

    yield make  # type: ignore[misc]
    for models in created:
        await models.drop_all()
