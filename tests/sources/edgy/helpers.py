"""Helpers of the Edgy tests: databases, span-tree assertions, a loop thread for the sync contract suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from opentelemetry.sdk.trace import ReadableSpan

from sigtrace.testing import Capture
from tests.sources.async_orm import PG_HOST, PG_PORT, PostgresDatabase
from tests.sources.async_orm import attrs as attrs
from tests.sources.async_orm import hex_id as hex_id
from tests.sources.async_orm import parent_of as parent_id  # noqa: F401 - the suite's name for it
from tests.sources.async_orm import span_id as span_id
from tests.sources.async_orm import sqlite_url as sqlite_url

T = TypeVar("T")

PG_DB = "sigtrace_edgy"
PG_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"


_POSTGRES = PostgresDatabase(PG_DB)
postgres_unavailable = _POSTGRES.unavailable
pg_lock = _POSTGRES.lock


def edgy_spans(cap: Capture) -> list[ReadableSpan]:
    return [s for s in cap.spans if (s.attributes or {}).get("sigtrace.source") == "edgy"]


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
