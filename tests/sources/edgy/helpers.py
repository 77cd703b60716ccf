"""Helpers of the Edgy tests: databases, span-tree assertions, a loop thread for the sync contract suite."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from opentelemetry.sdk.trace import ReadableSpan

from sigtrace.testing import Capture

T = TypeVar("T")

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DB = "sigtrace_edgy"
PG_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"


def sqlite_url() -> str:
    return f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='sigtrace-edgy-')}/test.db"


_pg_state: str | None = None  # None: unknown, "" ok, else the reason to skip


def postgres_unavailable() -> str | None:
    """Create our own database on the local server once; the reason to skip if there is none."""
    global _pg_state
    if _pg_state is None:
        try:
            import asyncpg

            async def create() -> None:
                conn = await asyncpg.connect(
                    host=PG_HOST, port=PG_PORT, user="postgres", database="postgres", timeout=5
                )
                try:
                    exists = await conn.fetchval("select 1 from pg_database where datname = $1", PG_DB)
                    if not exists:
                        await conn.execute(f'create database "{PG_DB}"')
                finally:
                    await conn.close()

            # in a thread of its own: the caller may already run an event loop (async fixtures)
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    asyncio.run(create())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    errors.append(exc)

            worker = threading.Thread(target=run)
            worker.start()
            worker.join()
            if errors:
                raise errors[0]
            _pg_state = ""
        except Exception as exc:  # noqa: BLE001 - any failure means: no server for us
            _pg_state = f"PostgreSQL at {PG_HOST}:{PG_PORT} (user postgres) not usable: {exc!r}"
    return _pg_state or None


@contextlib.contextmanager
def pg_lock() -> Iterator[None]:
    """Hold our database alone: other runs of this suite (other sessions, CI) share sigtrace_edgy."""
    with open(os.path.join(tempfile.gettempdir(), "sigtrace_edgy.pg.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def hex_id(span: ReadableSpan) -> str:
    return format(span_id(span), "016x")


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def edgy_spans(cap: Capture) -> list[ReadableSpan]:
    return [s for s in cap.spans if (s.attributes or {}).get("sigtrace.source") == "edgy"]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


class LoopThread:
    """An event loop in its own thread: the sync contract suite drives async Edgy through it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="edgy-test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
