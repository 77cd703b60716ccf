"""E2E scenario: ormar on SQLite (aiosqlite, a file in a temporary directory), configured only through OTEL_*.

opentelemetry-instrumentation-sqlalchemy instruments the database's engine after ``sigtrace.install()``
without a provider, so its SQL spans go through the global provider sigtrace configured:
caller -> ``save tags`` -> ``INSERT ...``. Prints one JSON line telling the test what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path

import ormar
import sqlalchemy
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy.exc import IntegrityError

import sigtrace


async def scenario(url: str) -> None:
    database = ormar.DatabaseConnection(url)
    metadata = sqlalchemy.MetaData()

    class Tag(ormar.Model):
        ormar_config = ormar.OrmarConfig(database=database, metadata=metadata, tablename="tags")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=50, unique=True)

    await database.connect()
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        sigtrace.install(sources=["ormar"])
        # No provider: the global one sigtrace.install() configured from the environment.
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine)
        tracer = trace.get_tracer("e2e.app")
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /tags"):
            await Tag(name="jazz").save()
            await Tag(name="blues").save()
            with contextlib.suppress(IntegrityError):
                await Tag(name="jazz").save()  # the unique constraint fails the insert
    finally:
        await database.disconnect()


with tempfile.TemporaryDirectory(prefix="sigtrace-e2e-ormar-") as tmp:
    asyncio.run(scenario(f"sqlite+aiosqlite:///{Path(tmp) / 'e2e.sqlite'}"))
    sigtrace.uninstall()
print(
    json.dumps(
        {
            "caller": "POST /tags",
            "operation": "save tags",
            "driver": "INSERT",
            "ok": 2,
            "failed": 1,
            "error_type": "IntegrityError",
            "actor": "alice",
            "db_system": "sqlite",
        }
    )
)
