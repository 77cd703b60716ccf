"""Load under asyncio: N concurrent tasks x M operations for ormar and for Edgy (SQLite), nothing lost or mispaired.

Each task works inside its own parent span on its own instance: create it, update it M-2 times, delete it.
Checked: one span and one audit event per operation, each span the child of its own task's parent span and
carrying its own instance's pk (the audit event the same pk and span id), in-flight table back to zero.
Default run: 100 tasks x 2 operations (create, delete); ``-m slow``: 1,000 tasks x 10. Models are the
source suites' own (tests/sources/ormar/models.py, tests/sources/edgy/models.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import resource
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sigtrace import semconv
from sigtrace.testing import Capture, capture

SIZES = [pytest.param((100, 2), id="100x2"), pytest.param((1_000, 10), id="1000x10", marks=pytest.mark.slow)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def run_tasks(
    cap: Capture, tasks: int, one: Callable[[int], Awaitable[Any]]
) -> tuple[list[tuple[int, str]], dict[str, float]]:
    """Gather ``one(i)`` for every task, each inside its own parent span; returns ((parent span id, pk), ...)."""
    tracer = cap.tracer_provider.get_tracer("load")

    async def task(i: int) -> tuple[int, str]:
        with tracer.start_as_current_span(f"task-{i}") as parent:
            pk = await one(i)
        return parent.get_span_context().span_id, str(pk)

    rss0, t0 = rss_bytes(), time.perf_counter()
    results = await asyncio.gather(*(task(i) for i in range(tasks)))
    figures = {
        "seconds": round(time.perf_counter() - t0, 1),
        "rss_growth_mb": round((rss_bytes() - rss0) / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    return list(results), figures


def check(
    cap: Capture, source: str, results: list[tuple[int, str]], names: list[str], figures: dict[str, float]
) -> None:
    tasks, per_task = len(results), len(names)
    spans = [s for s in cap.spans if (s.attributes or {}).get(semconv.SIGTRACE_SOURCE) == source]
    by_parent: dict[int | None, list[Any]] = defaultdict(list)
    for span in spans:
        by_parent[span.parent.span_id if span.parent is not None else None].append(span)
    assert len(spans) == tasks * per_task
    for parent_id, pk in results:
        mine = by_parent[parent_id]  # the spans under this task's own parent span
        assert sorted(s.name for s in mine) == sorted(names)
        assert {str((s.attributes or {})[semconv.SIGTRACE_PK]) for s in mine} == {pk}  # its own instance only
        assert all(s.status.status_code.name == "UNSET" for s in mine)
    assert len({parent for parent, _ in results}) == tasks  # (pks are not: SQLite reuses a deleted row's id)
    audit = [e for e in cap.audit_events if e["source"] == source]
    assert len(audit) == tasks * per_task
    span_pk = {
        format(s.get_span_context().span_id, "016x"): str((s.attributes or {})[semconv.SIGTRACE_PK]) for s in spans
    }
    assert len(span_pk) == len(spans)
    assert {e["span_id"] for e in audit} == set(span_pk)
    assert all(e["outcome"] == "ok" and str(e["pk"]) == span_pk[e["span_id"]] for e in audit)
    assert cap.installation is not None and cap.installation.in_flight() == 0
    print(
        f"\n[reliability] load {source}: {tasks} tasks x {per_task} = {tasks * per_task} operations, "
        f"{len(spans)} spans, {len(audit)} audit events, pairing exact, "
        + ", ".join(f"{k}={v}" for k, v in figures.items())
    )


def operation_names(per_task: int, table: str) -> list[str]:
    return [f"save {table}"] + [f"update {table}"] * (per_task - 2) + [f"delete {table}"]


@pytest.mark.skipif(importlib.util.find_spec("ormar") is None, reason="ormar is not installed")
@pytest.mark.parametrize("size", SIZES)
async def test_ormar_concurrent_tasks(tmp_path: Path, size: tuple[int, int]) -> None:
    from tests.sources.ormar.models import define

    tasks, per_task = size
    models = define(f"sqlite+aiosqlite:///{tmp_path / 'ormar.sqlite'}", pool_size=10, max_overflow=0, pool_timeout=300)
    await models.create_all()
    try:
        with capture(sources=["ormar"]) as cap:

            async def one(i: int) -> Any:
                artist = models.Artist(name=f"artist-{i}")
                await artist.save()
                for k in range(per_task - 2):
                    await artist.update(name=f"artist-{i}-{k}")
                pk = artist.pk
                await artist.delete()
                return pk

            results, figures = await run_tasks(cap, tasks, one)
            check(cap, "ormar", results, operation_names(per_task, "artists"), figures)
    finally:
        await models.drop_all()


@pytest.mark.skipif(importlib.util.find_spec("edgy") is None, reason="edgy is not installed")
@pytest.mark.parametrize("size", SIZES)
async def test_edgy_concurrent_tasks(size: tuple[int, int]) -> None:
    from tests.sources.edgy.helpers import sqlite_url
    from tests.sources.edgy.models import define_models

    tasks, per_task = size
    models = define_models(sqlite_url())
    async with models.database:
        # 1,000 tasks share Edgy's pool (5 + 10 overflow); a task's later operations queue behind the others'
        # for longer than the pool's default 30 s wait on a loaded machine. databasez passes only pool_size
        # and max_overflow from the URL, so the wait is raised on the pool itself.
        models.database.engine.pool._timeout = 600
        await models.registry.create_all()
        try:
            with capture(sources=["edgy"]) as cap:

                async def one(i: int) -> Any:
                    user = await models.User.query.create(name=f"user-{i}")
                    for k in range(per_task - 2):
                        await user.update(age=k)
                    pk = user.pk
                    await user.delete()
                    return pk

                results, figures = await run_tasks(cap, tasks, one)
                check(cap, "edgy", results, operation_names(per_task, "users"), figures)
        finally:
            await models.registry.drop_all()
