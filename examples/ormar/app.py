"""A small albums API on FastAPI + ormar, traced end to end.

One request shows the whole tree: the HTTP server span (opentelemetry-instrumentation-fastapi)
-> the ormar operation span (sigtrace) -> the SQL spans (opentelemetry-instrumentation-sqlalchemy),
and every write leaves one audit event naming the user of the request.

Run it (SQLite file in the current directory unless ALBUMS_DATABASE_URL says otherwise)::

    pip install "sigtrace[ormar]" fastapi uvicorn aiosqlite \\
        opentelemetry-instrumentation-fastapi opentelemetry-instrumentation-sqlalchemy
    OTEL_TRACES_EXPORTER=console uvicorn --factory examples.ormar.app:create_app
    curl -X POST localhost:8000/albums -H 'x-user: alice' -H 'content-type: application/json' \\
        -d '{"name": "Blue Train"}'
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import ormar
import sqlalchemy
from fastapi import FastAPI, HTTPException, Request, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

import sigtrace

DEFAULT_URL = "sqlite+aiosqlite:///./albums.sqlite"


class AlbumIn(BaseModel):
    name: str


class AlbumPatch(BaseModel):
    name: str | None = None
    play_count: int | None = None


def create_app(database_url: str | None = None, tracer_provider: Any = None, **sigtrace_options: Any) -> FastAPI:
    """The app; ``tracer_provider`` and ``sigtrace_options`` (of ``sigtrace.install``) default to OTEL_* set-up."""
    url = database_url or os.environ.get("ALBUMS_DATABASE_URL", DEFAULT_URL)
    database = ormar.DatabaseConnection(url)
    metadata = sqlalchemy.MetaData()
    base = ormar.OrmarConfig(database=database, metadata=metadata)

    class Album(ormar.Model):
        ormar_config = base.copy(tablename="albums")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=100, unique=True)
        play_count: int = ormar.Integer(default=0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sigtrace_options.setdefault("service_name", "albums-api")
        sigtrace.install(sources=["ormar"], tracer_provider=tracer_provider, **sigtrace_options)
        await database.connect()
        # ormar's AsyncEngine exists only now: instrument that engine (the global patch would miss it).
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine, tracer_provider=tracer_provider)
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        try:
            yield
        finally:
            SQLAlchemyInstrumentor().uninstrument()
            await database.disconnect()
            sigtrace.uninstall()

    app = FastAPI(title="albums", lifespan=lifespan)

    @app.middleware("http")
    async def audit_actor(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Who acts, for the audit events of this request (a real app takes it from its auth layer).
        with sigtrace.actor(request.headers.get("x-user")):
            return await call_next(request)

    @app.post("/albums", status_code=201)
    async def create_album(body: AlbumIn) -> dict[str, Any]:
        try:
            album = await Album(name=body.name).save()
        except IntegrityError:
            raise HTTPException(status_code=409, detail="an album with that name exists") from None
        return album.model_dump()

    @app.patch("/albums/{album_id}")
    async def patch_album(album_id: int, body: AlbumPatch) -> dict[str, Any]:
        album = await Album.objects.get_or_none(id=album_id)
        if album is None:
            raise HTTPException(status_code=404)
        await album.update(**body.model_dump(exclude_none=True))
        return album.model_dump()

    @app.post("/albums/reset-plays")
    async def reset_plays() -> dict[str, int]:
        return {"rows": await Album.objects.update(each=True, play_count=0)}

    @app.delete("/albums/{album_id}", status_code=204)
    async def delete_album(album_id: int) -> None:
        album = await Album.objects.get_or_none(id=album_id)
        if album is None:
            raise HTTPException(status_code=404)
        await album.delete()

    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    return app
