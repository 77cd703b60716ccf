"""One module per library; the registry names them without importing them (the core imports no ORM)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REGISTRY", "SourceSpec"]


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where a source lives, which library it needs, and the extra that installs that library."""

    name: str
    target: str  # "module:Class"
    library: str  # importable top-level module of the traced library
    extra: str


REGISTRY: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec("blinker", "sigtrace.sources.blinker:BlinkerSource", "blinker", "blinker"),
        SourceSpec("pynamodb", "sigtrace.sources.pynamodb:PynamoDBSource", "pynamodb", "pynamodb"),
        SourceSpec("ormar", "sigtrace.sources.ormar:OrmarSource", "ormar", "ormar"),
        SourceSpec("edgy", "sigtrace.sources.edgy:EdgySource", "edgy", "edgy"),
        SourceSpec("signalbus", "sigtrace.sources.signalbus:SignalBusSource", "flask_signalbus", "signalbus"),
        SourceSpec("sqlalchemy", "sigtrace.sources.sqlalchemy:SQLAlchemySource", "sqlalchemy", "sqlalchemy"),
        SourceSpec("django", "sigtrace.sources.django.source:DjangoSource", "django", "django"),
    )
}
