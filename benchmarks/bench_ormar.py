"""ormar: ``await item.update(count=n)`` of an existing row (one UPDATE) on SQLite through aiosqlite.

OTel variant: opentelemetry-instrumentation-sqlalchemy given ormar's engine explicitly,
``instrument(engine=database.engine.sync_engine)`` (its global patch does not see an engine made
before it). aiosqlite runs every statement on a worker thread: unpinned, cross-CPU wake-ups
dominate the timings, hence the pinned run (``taskset -c 0``) that run.py adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import _harness as h


def build(args: argparse.Namespace, prov: h.Providers, tmp: str) -> h.Suite:
    import ormar
    import sqlalchemy
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    database = ormar.DatabaseConnection(f"sqlite+aiosqlite:///{os.path.join(tmp, 'ormar.sqlite')}")
    metadata = sqlalchemy.MetaData()
    base = ormar.OrmarConfig(database=database, metadata=metadata)

    class Item(ormar.Model):
        ormar_config = base.copy(tablename="items")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=100)
        count: int = ormar.Integer(default=0)

    async def prepare() -> Any:
        await database.connect()
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.exec_driver_sql("PRAGMA synchronous=OFF")
        return await Item(name="first").save()

    item = loop.run_until_complete(prepare())
    counter = [0]

    async def op() -> None:
        counter[0] += 1
        await item.update(count=counter[0])

    def otel_setup() -> Any:
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine, tracer_provider=prov.tracer_provider)
        return SQLAlchemyInstrumentor().uninstrument

    from ormar.signals.signal import Signal

    signal = Signal()

    async def receiver(sender: Any, **kwargs: Any) -> None:
        return None

    signal.connect(receiver)

    async def dispatch() -> None:
        await signal.send(sender=Item, instance=item)
        await signal.send(sender=Item, instance=item)

    variants = h.sigtrace_variants("ormar", op, prov, tmp, is_async=True)
    variants.append(h.Variant(h.OTEL, op, otel_setup, is_async=True))

    # ormar runs each receiver in a task of its own: the bridge's span cannot be made current.
    model_signals = Item.ormar_config.signals
    variants.append(
        h.NaiveBridge(prov).variant(
            op,
            model_signals.pre_update,
            model_signals.post_update,
            lambda _sender, kw: id(kw.get("instance")),
            is_async=True,
            current=False,
        )
    )
    variants += h.floor_variants(prov, dispatch, dispatch_async=True)

    def cleanup() -> None:
        loop.run_until_complete(database.disconnect())
        loop.close()

    return h.Suite(
        "ormar",
        "await Model.update() (UPDATE, SQLite/aiosqlite)",
        variants,
        notes=["OTel: opentelemetry-instrumentation-sqlalchemy instrument(engine=database.engine.sync_engine)"],
        cleanup=cleanup,
        loop=loop,
    )


if __name__ == "__main__":
    h.main(build, ["ormar", "aiosqlite", "sqlalchemy", "opentelemetry-instrumentation-sqlalchemy"])
