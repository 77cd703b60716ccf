"""A small users/teams API on Starlette + Edgy, traced end to end.

One request shows the whole tree: the HTTP server span (opentelemetry-instrumentation-asgi)
-> the Edgy operation span (sigtrace) -> the SQL spans (opentelemetry-instrumentation-sqlalchemy on
Edgy's own engine). Bulk and relation operations, whose Edgy receivers run in gathered tasks, sit
in the same tree. Every write leaves one audit event naming the user of the request (``x-user``).

Run it (SQLite file in the current directory unless USERS_DATABASE_URL says otherwise)::

    pip install "sigtrace[edgy]" starlette uvicorn aiosqlite \\
        opentelemetry-instrumentation-asgi opentelemetry-instrumentation-sqlalchemy
    OTEL_TRACES_EXPORTER=console uvicorn --factory examples.edgy.app:create_app
    curl -X POST localhost:8000/users -H 'x-user: alice' -H 'content-type: application/json' \\
        -d '{"name": "ada"}'
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import edgy
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import sigtrace

DEFAULT_URL = "sqlite+aiosqlite:///./users.sqlite"


class ActorMiddleware(BaseHTTPMiddleware):
    """Who acts, for the audit events of this request (a real app takes it from its auth layer)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        with sigtrace.actor(request.headers.get("x-user")):
            return await call_next(request)


def create_app(database_url: str | None = None, tracer_provider: Any = None, **sigtrace_options: Any) -> Any:
    """The ASGI app; ``tracer_provider`` and ``sigtrace_options`` (of ``sigtrace.install``) default to OTEL_* set-up."""
    url = database_url or os.environ.get("USERS_DATABASE_URL", DEFAULT_URL)
    database = edgy.Database(url)
    models = edgy.Registry(database=database)

    class Team(edgy.Model):
        name: str = edgy.CharField(max_length=100, unique=True)

        class Meta:
            registry = models

    class User(edgy.Model):
        name: str = edgy.CharField(max_length=100, unique=True)
        karma: int = edgy.IntegerField(default=0)
        teams = edgy.ManyToMany(Team, related_name="members")

        class Meta:
            registry = models

    def user_json(user: Any) -> dict[str, Any]:
        return {"id": user.id, "name": user.name, "karma": user.karma}

    async def create_user(request: Request) -> Response:
        body = await request.json()
        try:
            user = await User.query.create(name=body["name"])
        except IntegrityError:
            return JSONResponse({"detail": "a user with that name exists"}, status_code=409)
        return JSONResponse(user_json(user), status_code=201)

    async def import_users(request: Request) -> Response:
        names = (await request.json())["names"]
        await User.query.bulk_create([{"name": name} for name in names])
        return JSONResponse({"created": len(names)}, status_code=201)

    async def patch_user(request: Request) -> Response:
        user = await User.query.get_or_none(id=int(request.path_params["user_id"]))
        if user is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        await user.update(**await request.json())
        return JSONResponse(user_json(user))

    async def join_team(request: Request) -> Response:
        user = await User.query.get_or_none(id=int(request.path_params["user_id"]))
        if user is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        team, _ = await Team.query.get_or_create(name=(await request.json())["team"])
        await user.teams.add(team)
        return JSONResponse({"user": user.id, "team": team.id})

    async def reset_karma(request: Request) -> Response:
        return JSONResponse({"rows": await User.query.filter(karma__gt=0).update(karma=0)})

    async def delete_user(request: Request) -> Response:
        user = await User.query.get_or_none(id=int(request.path_params["user_id"]))
        if user is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        await user.delete()
        return Response(status_code=204)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sigtrace_options.setdefault("service_name", "users-api")
        sigtrace.install(sources=["edgy"], tracer_provider=tracer_provider, **sigtrace_options)
        async with models:
            # Edgy's engine exists once connected: instrument that engine (the global patch would miss it).
            SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine, tracer_provider=tracer_provider)
            await models.create_all()
            try:
                yield
            finally:
                SQLAlchemyInstrumentor().uninstrument()
        sigtrace.uninstall()

    app = Starlette(
        routes=[
            Route("/users", create_user, methods=["POST"]),
            Route("/users/import", import_users, methods=["POST"]),
            Route("/users/reset-karma", reset_karma, methods=["POST"]),
            Route("/users/{user_id:int}", patch_user, methods=["PATCH"]),
            Route("/users/{user_id:int}", delete_user, methods=["DELETE"]),
            Route("/users/{user_id:int}/teams", join_team, methods=["POST"]),
        ],
        middleware=[Middleware(ActorMiddleware)],
        lifespan=lifespan,
    )
    return OpenTelemetryMiddleware(app, tracer_provider=tracer_provider)
