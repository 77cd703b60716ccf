"""E2E scenario: Edgy on SQLite (aiosqlite, a file in a temporary directory), configured only through OTEL_*.

opentelemetry-instrumentation-sqlalchemy instruments the database's engine after ``sigtrace.install()``
without a provider, so its SQL spans go through the global provider sigtrace configured:
caller -> ``save players`` -> ``INSERT ...``. Prints one JSON line telling the test what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path

import edgy
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy.exc import IntegrityError

import sigtrace


async def scenario(url: str) -> None:
    database = edgy.Database(url)
    models = edgy.Registry(database=database)

    class Player(edgy.Model):
        name = edgy.CharField(max_length=100, unique=True)

        class Meta:
            registry = models
            tablename = "players"

    async with models:
        await models.create_all()
        sigtrace.install(sources=["edgy"])
        assert database.engine is not None
        # No provider: the global one sigtrace.install() configured from the environment.
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine)
        tracer = trace.get_tracer("e2e.app")
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /players"):
            await Player.query.create(name="ada")
            await Player.query.create(name="bo")
            with contextlib.suppress(IntegrityError):
                await Player.query.create(name="ada")  # the unique constraint fails the insert


with tempfile.TemporaryDirectory(prefix="sigtrace-e2e-edgy-") as tmp:
    asyncio.run(scenario(f"sqlite+aiosqlite:///{Path(tmp) / 'e2e.sqlite'}"))
    sigtrace.uninstall()
print(
    json.dumps(
        {
            "caller": "POST /players",
            "operation": "save players",
            "driver": "INSERT",
            "ok": 2,
            "failed": 1,
            "error_type": "IntegrityError",
            "actor": "alice",
            "db_system": "sqlite",
        }
    )
)
