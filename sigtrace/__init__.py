"""sigtrace: the signals of Python ORMs and event libraries as OpenTelemetry spans, metrics and audit events.

The whole public surface::

    import sigtrace
    sigtrace.install(service_name="orders")   # idempotent; returns the Installation handle
    with sigtrace.actor("alice"):             # who acts, for the audit log
        ...
    sigtrace.uninstall()
"""

from __future__ import annotations

from typing import Any

from sigtrace._config import ConfigError, Options
from sigtrace._runtime import Installation, MissingLibraryError, current, scope
from sigtrace._runtime import install as _install
from sigtrace._runtime import uninstall as _uninstall
from sigtrace.core.context import ActorScope, current_actor, set_actor
from sigtrace.sinks.audit import add_trace_context
from sigtrace.sources.blinker import SignalPair, SingleSignal, trace_signal, trace_signals

__all__ = [
    "ActorScope",
    "ConfigError",
    "Installation",
    "MissingLibraryError",
    "Options",
    "SignalPair",
    "SingleSignal",
    "__version__",
    "actor",
    "add_trace_context",
    "current_actor",
    "install",
    "is_installed",
    "scope",
    "trace_signal",
    "trace_signals",
    "uninstall",
]

__version__ = "0.1.0"


def install(**options: Any) -> Installation:
    """Attach sigtrace to every supported library that is importable (or to ``sources=[...]``).

    Idempotent and thread-safe: a second call returns the same handle and attaches nothing twice.
    Every option can also come from its ``SIGTRACE_*`` environment variable (docs/configuration.md).
    Raises ``ConfigError`` for a bad option value or an unknown source, and
    ``MissingLibraryError`` (naming the extra to install) for a source whose library is missing.
    """
    return _install(**options)


def uninstall() -> None:
    """Disconnect every receiver, restore every patch, end what is still in flight. No-op if not installed."""
    _uninstall()


def is_installed() -> bool:
    return current() is not None


def actor(name: str | None) -> ActorScope:
    """Name who acts, for the audit events of the operations that follow in this thread or task.

    Use as a context manager (restored on exit) or as a plain call (stays set in this context).
    """
    return set_actor(name)
