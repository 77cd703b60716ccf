"""sigtrace: the signals of Python ORMs and event libraries as OpenTelemetry spans, metrics and audit events.

The whole public surface::

    import sigtrace
    sigtrace.install(service_name="orders")   # idempotent; returns the Installation handle
    with sigtrace.actor("alice"):             # who acts, for the audit log
        ...
    sigtrace.uninstall()
"""

from __future__ import annotations

from sigtrace._config import ConfigError, Options
from sigtrace._runtime import Installation, MissingLibraryError, install, is_installed, scope, uninstall
from sigtrace.core.context import ActorScope, current_actor
from sigtrace.core.context import set_actor as actor
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
