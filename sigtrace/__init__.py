"""sigtrace: the signals of Python ORMs and event libraries as OpenTelemetry spans, metrics and audit events.

The whole public surface::

    import sigtrace
    sigtrace.install(service_name="orders")   # idempotent; returns the Installation handle
    with sigtrace.actor("alice"):             # who acts, for the audit log
        ...
    sigtrace.uninstall()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

from sigtrace._config import ConfigError, Options
from sigtrace._runtime import Installation, MissingLibraryError, current
from sigtrace._runtime import install as _install
from sigtrace._runtime import uninstall as _uninstall
from sigtrace.core.context import ActorScope, current_actor, set_actor
from sigtrace.core.engine import EntryScope
from sigtrace.sinks.audit import add_trace_context
from sigtrace.sources.blinker import SignalPair, SingleSignal, declare

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


def trace_signals(
    pre: Any,
    post: Any,
    *,
    key: Callable[..., Hashable] | None = None,
    name: str | Callable[..., str] | None = None,
    attributes: Mapping[str, AttributeValue] | Callable[..., Mapping[str, AttributeValue]] | None = None,
    model: str | None = None,
    collection: str | None = None,
    source: str = "blinker",
    asynchronous: bool = False,
    write: bool = True,
    activate: bool = True,
) -> SignalPair:
    """Trace a pair of blinker signals: an operation starts at ``pre`` and ends at ``post``.

    ``key(sender, **kwargs)`` correlates the two (default: the sender's identity). ``name`` and
    ``attributes`` may be values or callables of the same arguments. ``asynchronous=True`` for
    signals sent with ``send_async``. Works before or after ``install()``; returns a handle whose
    ``untrace()`` disconnects the pair.
    """
    pair = SignalPair(
        pre,
        post,
        name=name,
        attributes=attributes,
        model=model,
        collection=collection,
        source=source,
        asynchronous=asynchronous,
        write=write,
        activate=activate,
    )
    if key is not None:
        pair.key = key
    declare(pair)
    return pair


def trace_signal(
    signal: Any,
    *,
    name: str | Callable[..., str] | None = None,
    attributes: Mapping[str, AttributeValue] | Callable[..., Mapping[str, AttributeValue]] | None = None,
    model: str | None = None,
    source: str = "blinker",
    asynchronous: bool = False,
    write: bool = True,
) -> SingleSignal:
    """Trace a single signal (no pre/post pair): an event on the current span plus an audit event."""
    single = SingleSignal(
        signal, name=name, attributes=attributes, model=model, source=source, asynchronous=asynchronous, write=write
    )
    declare(single)
    return single


def scope() -> EntryScope | contextlib.nullcontext[None]:
    """Guard code that sends traced signals: an operation begun inside and not ended when an
    exception leaves the block ends at once as an error with that exception (libraries send no
    post signal on failure); one still open on a normal exit ends as ``ok``.

    Works as ``with`` and ``async with``. Outside an installation it does nothing.
    """
    installation = current()
    if installation is None:
        return contextlib.nullcontext()
    return installation.engine.entry(None)
