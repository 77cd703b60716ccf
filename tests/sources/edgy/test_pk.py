"""``sigtrace.pk`` of Edgy operations for every kind of primary key (the source reads a plain one directly)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import edgy
import pytest

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.edgy.helpers import attrs, sqlite_url


@dataclass
class PkModels:
    Coded: Any
    Pair: Any


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["edgy"]) as cap:
        yield cap


@pytest.fixture
async def pk_models() -> AsyncIterator[PkModels]:
    database = edgy.Database(sqlite_url())
    reg = edgy.Registry(database=database)

    class Coded(edgy.Model):
        """A single primary key that is not ``id``."""

        code: str = edgy.CharField(max_length=20, primary_key=True)
        label: str = edgy.CharField(max_length=50, default="")

        class Meta:
            registry = reg

    class Pair(edgy.Model):
        """A composite primary key: ``pk`` is a mapping."""

        left: int = edgy.IntegerField(primary_key=True, autoincrement=False)
        right: int = edgy.IntegerField(primary_key=True, autoincrement=False)
        label: str = edgy.CharField(max_length=50, default="")

        class Meta:
            registry = reg

    async with database:
        await reg.create_all()
        try:
            yield PkModels(Coded, Pair)
        finally:
            await reg.drop_all()


async def test_single_pk_not_named_id(pk_models: PkModels, cap: Capture) -> None:
    item = await pk_models.Coded.query.create(code="c-1")
    item.label = "changed"
    await item.save()
    await item.delete()
    spans = [*cap.spans_named("save codeds"), cap.span("delete codeds")]
    assert len(spans) == 3
    for span in spans:
        assert attrs(span)[semconv.SIGTRACE_PK] == "c-1"


async def test_composite_pk(pk_models: PkModels, cap: Capture) -> None:
    item = await pk_models.Pair.query.create(left=1, right=2)
    item.label = "changed"
    await item.save()
    spans = cap.spans_named("save pairs")
    assert len(spans) == 2
    for span in spans:
        assert attrs(span)[semconv.SIGTRACE_PK] == "1|2"  # the columns' values joined by "|" (kit.pk_text)


async def test_fast_reads_match_the_attributes(pk_models: PkModels, tmp_path: Any) -> None:
    """The pk and the database are read past Edgy's ``__getattribute__`` (the source's hot path): the
    same answers as the attributes, also for an instance given a database of its own."""
    from sigtrace.sources.edgy import _database_of, _instance_database, _pk_of

    other = edgy.Database(f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite'}")
    coded = await pk_models.Coded.query.create(code="c-2")
    pair = await pk_models.Pair.query.create(left=3, right=4)
    unsaved = pk_models.Coded(code="c-3")
    own = pk_models.Coded(code="c-4")
    own.database = other
    for instance in (coded, pair, unsaved, own):
        model = type(instance)
        assert _instance_database(instance, model) is _database_of(instance, model) is instance.database
    assert _instance_database(own, pk_models.Coded) is other
    assert [_pk_of(x) for x in (coded, pair, unsaved, own)] == ["c-2", "3|4", "c-3", "c-4"]
