"""Fixtures of the Edgy tests: the same models on SQLite and on the local PostgreSQL (own database)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.sources.async_orm import BACKENDS
from tests.sources.edgy.helpers import PG_URL, pg_lock, postgres_unavailable, sqlite_url
from tests.sources.edgy.models import Models, define_models


def backend_url(backend: str) -> str:
    if backend == "sqlite":
        return sqlite_url()
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    return PG_URL


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db(backend: str) -> AsyncIterator[Models]:
    """Fresh tables for one test, connected."""
    url = backend_url(backend)
    with pg_lock() if backend == "postgresql" else contextlib.nullcontext():
        async for models in _connected(url):
            yield models


async def _connected(url: str) -> AsyncIterator[Models]:
    models = define_models(url)
    async with models.database:
        await models.registry.drop_all()
        await models.registry.create_all()
        try:
            yield models
        finally:
            await models.registry.drop_all()
