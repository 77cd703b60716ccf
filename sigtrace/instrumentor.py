"""sigtrace as an OpenTelemetry instrumentor, so ``opentelemetry-instrument python app.py`` enables it.

``opentelemetry-instrument`` configures the SDK first (its distro) and then calls
``instrument()`` on every instrumentor registered under the ``opentelemetry_instrumentor``
entry point group; sigtrace then uses the providers it finds, and ``SIGTRACE_*`` variables
carry its options.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from sigtrace._config import Options
from sigtrace._runtime import install, uninstall

__all__ = ["SigtraceInstrumentor"]

_OPTION_NAMES = frozenset(Options.__dataclass_fields__)


class SigtraceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``SigtraceInstrumentor().instrument(**options)`` is ``sigtrace.install(**options)``."""

    def instrumentation_dependencies(self) -> Collection[str]:
        # Every source is optional: sigtrace attaches to whichever supported library is importable.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        install(**{name: value for name, value in kwargs.items() if name in _OPTION_NAMES})

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall()
