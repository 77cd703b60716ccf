"""What the suites of the async ORMs (ormar, Edgy) share: span-tree helpers, their two backends, fresh tables.

Each suite runs on SQLite (aiosqlite, a file of its own) and on the local PostgreSQL (asyncpg at
127.0.0.1:5432, user ``postgres``) in a database of its own that :class:`PostgresDatabase` creates
once; the PostgreSQL tests skip when the server is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from sigtrace.testing import Capture

PG_HOST = "127.0.0.1"
PG_PORT = 5432

#: ``@pytest.fixture(params=BACKENDS)``: every test once per backend, the PostgreSQL one marked ``postgres``.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


# --- span trees ---


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def hex_id(span: ReadableSpan) -> str:
    """The span id as the audit event's ``span_id`` spells it."""
    return format(span_id(span), "016x")


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def children(cap: Capture, span: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in cap.spans if parent_of(s) == span_id(span)]


def spans_of(cap: Capture, source: str) -> list[ReadableSpan]:
    """The operation spans of one sigtrace source (not the caller's, not the SQL ones)."""
    return [s for s in cap.spans if (s.attributes or {}).get("sigtrace.source") == source]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- databases ---


def sqlite_url(directory: str | os.PathLike[str] | None = None) -> str:
    """A SQLite file in ``directory`` (default: a new temporary directory), through aiosqlite."""
    where = directory if directory is not None else tempfile.mkdtemp(prefix="sigtrace-")
    return f"sqlite+aiosqlite:///{os.path.join(where, 'test.db')}"


def _run_alone(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on a loop of its own, in a thread: the caller may already run one (async fixtures)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


class PostgresDatabase:
    """One suite's own database on the local server, created on first use, held alone by :meth:`lock`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
        self._state: str | None = None  # None: not tried yet, "": usable, else why not

    def unavailable(self) -> str | None:
        """Create the database if it is missing (once); the reason to skip if there is no server for it."""
        if self._state is None:
            try:
                _run_alone(self._create())
                self._state = ""
            except Exception as exc:  # noqa: BLE001 - any failure means: no server for us
                self._state = f"PostgreSQL at {PG_HOST}:{PG_PORT} (user postgres) not usable: {exc!r}"
        return self._state or None

    def url_or_skip(self) -> str:
        reason = self.unavailable()
        if reason:
            pytest.skip(reason)
        return self.url

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the database alone: other runs of the suite (other sessions, CI) share it."""
        with open(os.path.join(tempfile.gettempdir(), f"{self.name}.pg.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def _create(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres", timeout=5)
        try:
            if not await conn.fetchval("select 1 from pg_database where datname = $1", self.name):
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # another session was quicker
                    await conn.execute(f'create database "{self.name}"')
        finally:
            await conn.close()


# --- tables ---


async def recreate_tables(engine: Any, metadata: Any) -> None:
    """Drop and create ``metadata``'s tables on a SQLAlchemy ``AsyncEngine`` (a failed run may have left them)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)


async def drop_tables(engine: Any, metadata: Any) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
