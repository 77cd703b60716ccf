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
    #: ``"module:function"`` returning whether to attach when the source is found but not named
    #: (``None``: always). A source named in ``sources=[...]`` attaches whatever it returns.
    detect: str | None = None


REGISTRY: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec("blinker", "sigtrace.sources.blinker:BlinkerSource", "blinker", "blinker"),
        SourceSpec("pynamodb", "sigtrace.sources.pynamodb:PynamoDBSource", "pynamodb", "pynamodb"),
        SourceSpec("ormar", "sigtrace.sources.ormar:OrmarSource", "ormar", "ormar"),
        SourceSpec("edgy", "sigtrace.sources.edgy:EdgySource", "edgy", "edgy"),
        SourceSpec("signalbus", "sigtrace.sources.signalbus:SignalBusSource", "flask_signalbus", "signalbus"),
        # On SQLAlchemy 1.4 only when named: there it is mostly Flask-SignalBus's stack, whose users ask for it.
        SourceSpec(
            "sqlalchemy",
            "sigtrace.sources.sqlalchemy:SQLAlchemySource",
            "sqlalchemy",
            "sqlalchemy",
            detect="sigtrace.sources.sqlalchemy:attach_when_detected",
        ),
        SourceSpec("django", "sigtrace.sources.django.source:DjangoSource", "django", "django"),
    )
}
