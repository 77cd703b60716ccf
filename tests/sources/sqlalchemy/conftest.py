"""Back ends for the SQLAlchemy source tests: SQLite always, the real PostgreSQL at 127.0.0.1:5432 when it is up
(psycopg 3 for sync sessions, asyncpg for ``AsyncSession``), in a database of our own; and the vocabulary check
of every span and audit event these tests produce (``tests/vocabulary.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.sources.sqlalchemy.models import Base
from tests.vocabulary import Recorder

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DATABASE = "sigtrace_sqlalchemy"


def _ensure_pg_database() -> str | None:
    """Create our own database if needed; return why PostgreSQL is unusable, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg (3) is not installed"
    try:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=3, autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another run made it meanwhile
                    conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable ({exc})"
    return None


@pytest.fixture(autouse=True)
def vocabulary_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """The test module's ``capture`` seen by a recorder; after the test, everything it saw uses documented names."""
    recorder = Recorder()
    original = getattr(request.module, "capture", None)
    if original is not None:
        monkeypatch.setattr(request.module, "capture", recorder.wrap(original))
    yield recorder
    recorder.check()


@pytest.fixture(scope="session")
def postgres_ready() -> None:
    reason = _ensure_pg_database()
    if reason is not None:
        pytest.skip(reason)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def sync_url(backend: str, tmp_path: Path) -> str:
    if backend == "postgresql":
        return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"
    return f"sqlite:///{tmp_path / 'sa.sqlite'}"


def async_url(backend: str, tmp_path: Path) -> str:
    if backend == "postgresql":
        return f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"
    return f"sqlite+aiosqlite:///{tmp_path / 'sa.sqlite'}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("postgres_ready")
    return str(request.param)


@pytest.fixture
def engine(backend: str, tmp_path: Path) -> Iterator[sa.Engine]:
    """A sync engine with the three tables, dropped after the test (each test owns its tables)."""
    engine = sa.create_engine(sync_url(backend, tmp_path))
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()
