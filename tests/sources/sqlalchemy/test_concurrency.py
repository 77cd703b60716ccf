"""Parentage and pairing under concurrency: 1,000 ``AsyncSession`` tasks, and 8 threads with their own sessions.

Each task or thread works in its own parent span; every flush must be the child of its own
parent, every batch the child of its own flush, and every object audited once, ``ok``.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import sqlalchemy as sa
from opentelemetry import trace
from sqlalchemy import orm
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.sqlalchemy.conftest import async_url, sync_url
from tests.sources.sqlalchemy.models import Base, Customer, Order

TASKS = 1_000
THREADS = 8
PER_THREAD = 40


def check_tree(cap: Capture, count: int, parent_prefix: str) -> None:
    by_id = {s.get_span_context().span_id: s for s in cap.spans}  # type: ignore[union-attr]
    parents = {s.get_span_context().span_id: s.name for s in cap.spans if s.name.startswith(parent_prefix)}  # type: ignore[union-attr]
    assert len(parents) == count
    flushes = [s for s in cap.spans if s.name.startswith("flush")]
    assert len(flushes) == count
    for flush in flushes:
        assert flush.parent is not None and flush.parent.span_id in parents
    for name in ("insert sa_customers", "insert sa_orders"):
        batches = cap.spans_named(name)
        assert len(batches) == count
        for batch in batches:
            assert batch.parent is not None
            flush = by_id[batch.parent.span_id]
            assert flush.name.startswith("flush") and flush.parent is not None
    events = cap.audit_events
    assert len(events) == 2 * count
    assert all(e["outcome"] == semconv.OUTCOME_OK for e in events)
    assert len({(e["model"], e["pk"]) for e in events}) == 2 * count
    # Each customer's audit event carries a batch span whose flush's parent is that customer's task.
    batch_parent = {s.get_span_context().span_id: s.parent.span_id for s in cap.spans if s.parent}  # type: ignore[union-attr]
    for event in events:
        if event["model"] != "Customer":
            continue
        batch = int(event["span_id"], 16)
        task = batch_parent[batch_parent[batch]]
        assert parents[task] == f"{parent_prefix}{event['pk']}"
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def _many_tasks(url: str, cap: Capture) -> None:
    engine = create_async_engine(url, pool_size=20, max_overflow=0) if "asyncpg" in url else create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
        make = async_sessionmaker(engine, expire_on_commit=False)
        tracer = trace.get_tracer("test", tracer_provider=cap.tracer_provider)
        lock = asyncio.Semaphore(1) if "sqlite" in url else asyncio.Semaphore(20)

        async def one(i: int) -> None:
            with tracer.start_as_current_span(f"task-{i}"):
                async with lock, make() as session:
                    session.add(Customer(id=i, name=f"c{i}", orders=[Order(id=i, total=i)]))
                    await session.commit()

        await asyncio.gather(*(one(i) for i in range(TASKS)))
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
    finally:
        await engine.dispose()


def test_a_thousand_async_session_tasks(backend: str, tmp_path: Path) -> None:
    with capture(sources=["sqlalchemy"]) as cap:
        asyncio.run(_many_tasks(async_url(backend, tmp_path), cap))
        check_tree(cap, TASKS, "task-")


def test_eight_threads_with_their_own_sessions(backend: str, tmp_path: Path) -> None:
    engine = sa.create_engine(sync_url(backend, tmp_path), connect_args={"timeout": 60} if backend == "sqlite" else {})
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    errors: list[BaseException] = []
    try:
        with capture(sources=["sqlalchemy"]) as cap:
            tracer = trace.get_tracer("test", tracer_provider=cap.tracer_provider)
            barrier = threading.Barrier(THREADS)

            def work(t: int) -> None:
                barrier.wait()
                try:
                    for j in range(PER_THREAD):
                        i = t * PER_THREAD + j
                        with tracer.start_as_current_span(f"thread-{i}"), orm.Session(engine) as session:
                            session.add(Customer(id=i, name=f"c{i}", orders=[Order(id=i, total=i)]))
                            session.commit()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            assert not errors, errors
            check_tree(cap, THREADS * PER_THREAD, "thread-")
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()
