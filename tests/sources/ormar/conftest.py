"""Backends for the ormar tests: SQLite (aiosqlite) always, PostgreSQL (asyncpg) at 127.0.0.1:5432 when it is up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.sources.ormar.models import Models, define

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DATABASE = "sigtrace_ormar"
PG_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"


async def _ensure_pg_database() -> str | None:
    """Create our own database if needed; return why PostgreSQL is unusable, or None."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"
    try:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres", timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable ({type(exc).__name__}: {exc})"
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    finally:
        await conn.close()
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    reason = asyncio.run(_ensure_pg_database())
    if reason is not None:
        pytest.skip(reason)
    return PG_URL


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'ormar.sqlite'}"


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
