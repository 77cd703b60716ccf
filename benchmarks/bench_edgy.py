"""Edgy: ``item.count = n; await item.save()`` of an existing row (one UPDATE) on SQLite through aiosqlite.

OTel variant: opentelemetry-instrumentation-sqlalchemy given Edgy's engine explicitly,
``instrument(engine=database.engine.sync_engine)``. As for ormar, aiosqlite's worker thread makes
the unpinned figures noisy: run.py adds a pinned run (``taskset -c 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import _harness as h


def build(args: argparse.Namespace, prov: h.Providers, tmp: str) -> h.Suite:
    import edgy
    from edgy.core.signals import Signal
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    database = edgy.Database(f"sqlite+aiosqlite:///{os.path.join(tmp, 'edgy.sqlite')}")
    registry = edgy.Registry(database=database)

    reg = registry

    class Item(edgy.Model):
        name: str = edgy.CharField(max_length=100)
        count: int = edgy.IntegerField(default=0)

        class Meta:
            registry = reg
            tablename = "items"

    async def prepare() -> Any:
        await registry.__aenter__()
        await registry.create_all()
        async with database.engine.begin() as conn:
            await conn.exec_driver_sql("PRAGMA synchronous=OFF")
        return await Item.query.create(name="first")

    item = loop.run_until_complete(prepare())
    counter = [0]

    async def op() -> None:
        counter[0] += 1
        item.count = counter[0]
        await item.save()

    def otel_setup() -> Any:
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine, tracer_provider=prov.tracer_provider)
        return SQLAlchemyInstrumentor().uninstrument

    signal = Signal()

    async def receiver(sender: Any, **kwargs: Any) -> None:
        return None

    signal.connect(receiver, weak=False)

    async def dispatch() -> None:
        await signal.send_async(Item, instance=item)
        await signal.send_async(Item, instance=item)

    variants = h.sigtrace_variants("edgy", op, prov, tmp, is_async=True)
    variants.append(h.Variant(h.OTEL, op, otel_setup, is_async=True))

    # send_async awaits receivers in the caller's task: the bridge's span can be current.
    model_signals = Item.meta.signals
    variants.append(
        h.NaiveBridge(prov).variant(
            op,
            model_signals.pre_save,
            model_signals.post_save,
            lambda _sender, kw: id(kw.get("instance")),
            is_async=True,
            weak=False,
        )
    )
    variants += h.floor_variants(prov, dispatch, dispatch_async=True)

    def cleanup() -> None:
        loop.run_until_complete(registry.__aexit__(None, None, None))
        loop.close()

    return h.Suite(
        "edgy",
        "await Model.save() (UPDATE, SQLite/aiosqlite)",
        variants,
        notes=["OTel: opentelemetry-instrumentation-sqlalchemy instrument(engine=database.engine.sync_engine)"],
        cleanup=cleanup,
        loop=loop,
    )


if __name__ == "__main__":
    h.main(build, ["edgy", "aiosqlite", "sqlalchemy", "opentelemetry-instrumentation-sqlalchemy"])
