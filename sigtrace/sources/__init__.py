"""One module per library; the registry names them without importing them (the core imports no ORM).

Each source declares the library versions it is tested with (``supported``, a PEP 440 range, as
opentelemetry-python-contrib's ``instrumentation_dependencies`` and sentry-python's minimum
versions do). ``install()`` checks the installed distribution against it: a source found by
detection whose library is outside the range is not attached (a warning names the range); one
named in ``sources=[...]`` is attached anyway, with the same warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = ["REGISTRY", "SourceSpec"]


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where a source lives, which library it needs, the extra that installs it and the versions it supports."""

    name: str
    target: str  # "module:Class"
    library: str  # importable top-level module of the traced library
    extra: str
    distribution: str  # the library's distribution name (for its installed version)
    supported: str  # the tested versions, a PEP 440 specifier set
    #: ``"module:function"`` returning whether to attach when the source is found but not named
    #: (``None``: always). A source named in ``sources=[...]`` attaches whatever it returns.
    detect: str | None = None

    def installed_version(self) -> str | None:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None

    def unsupported(self) -> str | None:
        """Why the installed library's version is outside :attr:`supported`, or ``None`` if it is inside."""
        installed = self.installed_version()
        if installed is None:
            return None  # importable but not installed as a distribution (vendored, a checkout): trust it
        try:
            inside = Version(installed) in SpecifierSet(self.supported)
        except InvalidVersion:
            return None
        if inside:
            return None
        return (
            f"source {self.name!r} supports {self.distribution} {self.supported}, "
            f"but {self.distribution} {installed} is installed"
        )


REGISTRY: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec("blinker", "sigtrace.sources.blinker:BlinkerSource", "blinker", "blinker", "blinker", ">=1.8,<2"),
        SourceSpec(
            "pynamodb", "sigtrace.sources.pynamodb:PynamoDBSource", "pynamodb", "pynamodb", "pynamodb", ">=6.0,<7"
        ),
        SourceSpec("ormar", "sigtrace.sources.ormar:OrmarSource", "ormar", "ormar", "ormar", ">=0.26,<0.27"),
        SourceSpec("edgy", "sigtrace.sources.edgy:EdgySource", "edgy", "edgy", "edgy", ">=0.37,<0.38"),
        SourceSpec(
            "signalbus",
            "sigtrace.sources.signalbus:SignalBusSource",
            "flask_signalbus",
            "signalbus",
            "flask-signalbus",
            ">=0.5.20,<0.6",
        ),
        # On SQLAlchemy 1.4 only when named: there it is mostly Flask-SignalBus's stack, whose users ask for it.
        SourceSpec(
            "sqlalchemy",
            "sigtrace.sources.sqlalchemy:SQLAlchemySource",
            "sqlalchemy",
            "sqlalchemy",
            "sqlalchemy",
            ">=1.4,<2.2",
            detect="sigtrace.sources.sqlalchemy:attach_when_detected",
        ),
        SourceSpec("django", "sigtrace.sources.django.source:DjangoSource", "django", "django", "django", ">=5.2,<7"),
    )
}
