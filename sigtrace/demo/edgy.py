"""Demo scenario of the Edgy source: saves, a query-set update, a bulk create, a relation, a failing insert."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

from opentelemetry import trace

import sigtrace

TITLE = "edgy: lifecycle, query-set, bulk and relation signals (SQLite)"
LIBRARY = "edgy"
#: Failures the scenario causes on purpose, by error type: the demo shows why beside them.
EXPECTED_ERRORS = {"IntegrityError": "deliberate: a second player of the same unique name"}


def run() -> None:
    asyncio.run(_scenario())


async def _scenario() -> None:
    import edgy
    from sqlalchemy.exc import IntegrityError

    with tempfile.TemporaryDirectory(prefix="sigtrace-demo-edgy-") as tmp:
        database = edgy.Database(f"sqlite+aiosqlite:///{Path(tmp) / 'demo.sqlite'}")
        models = edgy.Registry(database=database)

        class Team(edgy.Model):
            name = edgy.CharField(max_length=100, unique=True)

            class Meta:
                registry = models

        class Player(edgy.Model):
            name = edgy.CharField(max_length=100, unique=True)
            score = edgy.IntegerField(default=0)
            teams = edgy.ManyToMany(Team, related_name="players")

            class Meta:
                registry = models

        tracer = trace.get_tracer("sigtrace.demo")
        async with models:
            await models.create_all()
            with sigtrace.actor("alice"):
                with tracer.start_as_current_span("POST /players"):
                    ada = await Player.query.create(name="ada")
                with tracer.start_as_current_span("POST /players/import"):
                    await Player.query.bulk_create([{"name": "bo"}, {"name": "cy"}])
                with tracer.start_as_current_span("PATCH /players/ada"):
                    await ada.update(score=42)
                with tracer.start_as_current_span("POST /players/ada/teams"):
                    team = await Team.query.create(name="core")
                    await ada.teams.add(team)
                with tracer.start_as_current_span("POST /players/reset"):
                    await Player.query.filter(score__gt=0).update(score=0)
                # the API answers 409; sigtrace recorded an ERROR span at once
                with tracer.start_as_current_span("POST /players (duplicate)"), contextlib.suppress(IntegrityError):
                    await Player.query.create(name="ada")
                with tracer.start_as_current_span("DELETE /players/ada"):
                    await ada.delete()
