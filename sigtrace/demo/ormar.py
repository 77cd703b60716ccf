"""Demo scenario of the ormar source: an async ORM on SQLite (aiosqlite) in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

from opentelemetry import trace

import sigtrace

TITLE = "ormar: saves, updates, relations, bulk and query-set writes, one constraint violation"
LIBRARY = "ormar"
#: Failures the scenario causes on purpose, by error type: the demo shows why beside them.
EXPECTED_ERRORS = {"IntegrityError": "deliberate: a second tag of the same unique name"}


async def _scenario(url: str) -> None:
    import ormar
    import sqlalchemy
    from sqlalchemy.exc import IntegrityError

    database = ormar.DatabaseConnection(url)
    metadata = sqlalchemy.MetaData()
    base = ormar.OrmarConfig(database=database, metadata=metadata)

    class Tag(ormar.Model):
        ormar_config = base.copy(tablename="tags")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=50, unique=True)

    class Album(ormar.Model):
        ormar_config = base.copy(tablename="albums")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=100)
        play_count: int = ormar.Integer(default=0)
        tags: list[Tag] | None = ormar.ManyToMany(Tag)

    await database.connect()
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        tracer = trace.get_tracer("sigtrace.demo")
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /albums"):
            album: Any = await Album(name="Kind of Blue").save()
            jazz = await Tag(name="jazz").save()
            await album.tags.add(jazz)  # relation_add, with the through model's save nested under it
            await album.update(play_count=1)
            await Album.objects.bulk_create([Album(name="Blue Train"), Album(name="Giant Steps")])
            await Album.objects.filter(name="Blue Train").update(play_count=3)  # sends no ormar signal
            with contextlib.suppress(IntegrityError):
                await Tag(name="jazz").save()  # unique constraint: an ERROR span and an error audit event
            await Album.objects.delete(name="Giant Steps")
    finally:
        await database.disconnect()


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="sigtrace-ormar-") as tmp:
        asyncio.run(_scenario(f"sqlite+aiosqlite:///{Path(tmp) / 'demo.sqlite'}"))
