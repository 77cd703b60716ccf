"""Request -> model -> SQL: sigtrace's spans under opentelemetry-instrumentation-django's request span and
over opentelemetry-instrumentation-dbapi's SQL spans; the request's user as the audit actor; the AppConfig."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import django
import psycopg
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.db import connections
from django.test import AsyncClient, Client, override_settings
from opentelemetry.instrumentation.dbapi import trace_integration, unwrap_connect
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import sigtrace
from sigtrace.django.apps import SigtraceConfig, install_from_settings
from sigtrace.django.middleware import ActorMiddleware, actor_name
from sigtrace.testing import Capture, capture
from tests.sources.django.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def traced(fresh_connections: None) -> Iterator[Capture]:
    """sigtrace + Django request spans + SQL spans, all on the capture's tracer provider."""
    with capture(sources=["django"]) as cap:
        provider = cap.tracer_provider
        trace_integration(sqlite3.dbapi2, "connect", "sqlite", tracer_provider=provider)
        trace_integration(psycopg, "connect", "postgresql", tracer_provider=provider)
        DjangoInstrumentor().instrument(tracer_provider=provider)
        try:
            yield cap
        finally:
            DjangoInstrumentor().uninstrument()
            unwrap_connect(sqlite3.dbapi2, "connect")
            unwrap_connect(psycopg, "connect")
            connections.close_all()


def sid(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def children(cap: Capture, parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in cap.spans if s.parent is not None and s.parent.span_id == sid(parent)]


def logged_in_client(client: Any, alias: str) -> Any:
    user = User.objects.create_user("alice", password="pw")
    client.force_login(user)
    return client


def assert_request_tree(cap: Capture, alias: str, statement: str, *, request_span: bool = True) -> None:
    requests = [s for s in cap.spans if s.kind == SpanKind.SERVER]
    assert len(requests) == (1 if request_span else 0), [(s.name, s.kind) for s in cap.spans]
    saves = [s for s in cap.spans if s.name.startswith("save testapp_")]
    assert [s.name for s in saves] == ["save testapp_author", "save testapp_article"]
    for save in saves:
        if request_span:
            assert save.parent is not None and save.parent.span_id == sid(requests[0]), save.name
        sql = children(cap, save)
        assert sql, f"no SQL span under {save.name}: {[(s.name, s.parent) for s in cap.spans]}"
        assert all(s.kind == SpanKind.CLIENT for s in sql)
        # (PostgreSQL: a new connection's first save also carries Django's type look-up SELECT)
        assert any(s.name.startswith(statement) for s in sql), [s.name for s in sql]
        (event,) = cap.audit_for(save)
        ctx = (requests[0] if request_span else save).get_span_context()
        assert ctx is not None
        assert event["trace_id"] == format(ctx.trace_id, "032x")
        assert event["actor"] == "alice"


def test_request_model_sql_tree(traced: Capture, alias: str) -> None:
    client = logged_in_client(Client(), alias)
    traced.clear()
    response = client.get("/articles/", {"db": alias, "author": "ada"})
    assert response.status_code == 200
    assert_request_tree(traced, alias, "INSERT")


def test_request_model_sql_tree_async(traced: Capture, alias: str) -> None:
    client = logged_in_client(AsyncClient(), alias)
    traced.clear()

    async def call() -> Any:
        response = await client.get("/articles/async/", {"db": alias})
        await sync_to_async(connections.close_all)()
        return response

    response = async_to_sync(call)()
    assert response.status_code == 200
    # On Django 6.1, opentelemetry-instrumentation-django (0.66b2) records no server span for a
    # request through Django's async handler: what sigtrace owns (model spans over SQL spans, the
    # actor from ActorMiddleware) is still checked; the request span is not there to check.
    assert_request_tree(traced, alias, "INSERT", request_span=django.VERSION < (6,))


def test_failed_save_in_a_request(traced: Capture, alias: str) -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/authors/duplicate/", {"db": alias})
    assert response.status_code == 500
    (request,) = [s for s in traced.spans if s.kind == SpanKind.SERVER]
    ok, failed = [s for s in children(traced, request) if s.name == "save testapp_author"]
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR
    (event,) = traced.audit_for(failed)
    assert event["outcome"] == "error" and "actor" not in event  # anonymous request: no actor
    assert traced.installation is not None and traced.installation.in_flight() == 0


# --- actor ---


class _User:
    def __init__(self, name: str, authenticated: bool = True) -> None:
        self.name = name
        self.is_authenticated = authenticated

    def get_username(self) -> str:
        return self.name


def test_actor_name() -> None:
    assert actor_name(None) is None
    assert actor_name(_User("bob", authenticated=False)) is None
    assert actor_name(_User("bob")) == "bob"
    assert actor_name(_User("bob"), lambda user: f"user:{user.name}") == "user:bob"


def test_actor_middleware_sets_and_restores_the_actor() -> None:
    seen: list[str | None] = []

    class Request:
        user = _User("carol")

    middleware = ActorMiddleware(lambda request: seen.append(sigtrace.current_actor()))
    middleware(Request())
    assert seen == ["carol"] and sigtrace.current_actor() is None

    class AsyncRequest:
        async def auser(self) -> _User:
            return _User("dave")

    async def get_response(request: Any) -> None:
        seen.append(sigtrace.current_actor())

    async_middleware = ActorMiddleware(get_response)
    async_to_sync(async_middleware)(AsyncRequest())
    assert seen == ["carol", "dave"] and sigtrace.current_actor() is None


def test_actor_option_from_settings() -> None:
    seen: list[str | None] = []

    class Request:
        user = _User("erin")

    with override_settings(SIGTRACE={"django": {"actor": lambda user: user.name.upper()}}):
        ActorMiddleware(lambda request: seen.append(sigtrace.current_actor()))(Request())
    assert seen == ["ERIN"]


# --- app config ---


def test_app_config_installs_from_settings(fresh_connections: None) -> None:
    import sigtrace.django as package

    cap = Capture()
    options = {
        "tracer_provider": cap.tracer_provider,
        "meter_provider": cap.meter_provider,
        "audit": cap.record_audit,
        "sources": ["django"],
        "django": {"trace_delete": False},
    }
    try:
        with override_settings(SIGTRACE=options):
            SigtraceConfig("sigtrace.django", package).ready()
        assert sigtrace.is_installed()
        Author.objects.create(name="configured")
        assert [s.name for s in cap.spans] == ["save testapp_author"]
    finally:
        sigtrace.uninstall()
    with override_settings(SIGTRACE={"enabled": False}):
        assert install_from_settings() is None
    assert not sigtrace.is_installed()


def test_app_config_bad_option_is_improperly_configured() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(SIGTRACE={"no_such_option": 1}), pytest.raises(ImproperlyConfigured, match="no_such_option"):
        install_from_settings()
    assert not sigtrace.is_installed()


def test_the_app_and_the_middleware_are_sigtrace_django() -> None:
    import subprocess
    import sys

    from django.utils.module_loading import import_string

    import sigtrace.django

    assert import_string("sigtrace.django.ActorMiddleware") is ActorMiddleware is sigtrace.django.ActorMiddleware
    assert SigtraceConfig.name == "sigtrace.django" and SigtraceConfig.label == "sigtrace"
    # Listed in INSTALLED_APPS before settings exist: importing the package imports no Django module.
    code = "import sys, sigtrace.django; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
