"""HTTP-like caller span -> ormar span -> SQL spans, with opentelemetry-instrumentation-sqlalchemy on ormar's engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

from sigtrace.testing import Capture, capture
from tests.sources.async_orm import children, parent_of, span_id, spans_of
from tests.sources.ormar.models import Models


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["ormar"]) as cap:
        yield cap


def sql_spans(cap: Capture) -> list[Any]:
    return [s for s in cap.spans if s.instrumentation_scope and "sqlalchemy" in s.instrumentation_scope.name]


async def test_sql_spans_nest_under_the_ormar_span(cap: Capture, make_models: Any) -> None:
    m: Models = await make_models()
    # The global patch does not see an engine created before it: instrument ormar's own engine.
    SQLAlchemyInstrumentor().instrument(engine=m.database.engine.sync_engine, tracer_provider=cap.tracer_provider)
    try:
        tracer = cap.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("GET /albums") as request:
            album = await m.Album(name="Time Out").save()
            tag = await m.Tag(name="cool").save()
            await album.tags.add(tag)
            await m.Album.objects.filter(name="Time Out").update(play_count=1)
        found = await m.Album.objects.get(pk=album.pk)  # a read: SQL span only, no ormar span
    finally:
        SQLAlchemyInstrumentor().uninstrument()
    assert found.play_count == 1
    for span in spans_of(cap, "ormar"):
        assert span.kind.name == "CLIENT"
    for name in ("save albums", "save tags", "update albums"):
        op = cap.span(name)
        assert parent_of(op) == span_id(request)
        sql = [s for s in children(cap, op) if s in sql_spans(cap)]
        assert sql, f"no SQL span under {name}: {[(s.name, parent_of(s)) for s in cap.spans]}"
    add = cap.span("relation_add albums_tags")
    (through,) = [s for s in children(cap, add) if s.name.startswith("save ")]
    assert [s for s in children(cap, through) if s in sql_spans(cap)]
    # Every SQL span of a write sits under an ormar span; the read's sits under nothing of ours.
    ormar_ids = {span_id(s) for s in spans_of(cap, "ormar")}
    statements = [s for s in sql_spans(cap) if s.name != "connect"]  # pool connects have no caller
    orphans = [s for s in statements if parent_of(s) not in ormar_ids]
    assert [s.name.split()[0] for s in orphans] == ["SELECT"]
