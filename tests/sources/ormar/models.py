"""Model definitions for the ormar tests, built by a factory so each test (and backend) gets its own classes.

Calling :func:`define` after ``install()`` gives models defined after install: ormar creates a
fresh ``SignalEmitter`` for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ormar
import sqlalchemy

from tests.sources.async_orm import drop_tables, recreate_tables


@dataclass
class Models:
    database: ormar.DatabaseConnection
    metadata: sqlalchemy.MetaData
    Artist: Any
    Tag: Any
    Album: Any
    Track: Any
    SpecialAlbum: Any

    async def create_all(self) -> None:
        await self.database.connect()
        await recreate_tables(self.database.engine, self.metadata)

    async def drop_all(self) -> None:
        if self.database.is_connected:
            await drop_tables(self.database.engine, self.metadata)
            await self.database.disconnect()


def define(url: str, **engine_options: Any) -> Models:
    database = ormar.DatabaseConnection(url, **engine_options)
    metadata = sqlalchemy.MetaData()
    base = ormar.OrmarConfig(database=database, metadata=metadata)

    class Artist(ormar.Model):
        ormar_config = base.copy(tablename="artists")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=100, unique=True)

    class Tag(ormar.Model):
        ormar_config = base.copy(tablename="tags")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=100)

    class Album(ormar.Model):
        ormar_config = base.copy(tablename="albums")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=100)
        play_count: int = ormar.Integer(default=0)
        artist: Artist | None = ormar.ForeignKey(Artist, nullable=True)
        tags: list[Tag] | None = ormar.ManyToMany(Tag)

    class Stamped(ormar.Model):
        """Abstract base: its subclasses inherit fields, each with its own table and signals."""

        ormar_config = base.copy(abstract=True)
        id: int = ormar.Integer(primary_key=True)
        label: str = ormar.String(max_length=50, default="")

    class Track(Stamped):
        ormar_config = base.copy(tablename="tracks")
        title: str = ormar.String(max_length=100)

    class SpecialAlbum(Album):
        """Proxy of Album (same table) whose signals are also sent to Album's emitter."""

        ormar_config = Album.ormar_config.copy(proxy=True, emit_parent_signals=True)

    return Models(database, metadata, Artist, Tag, Album, Track, SpecialAlbum)
