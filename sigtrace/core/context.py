"""Parenting across tasks, and who acts.

Some libraries run receivers where they cannot make a span current for the caller (ormar runs
each receiver in its own task with a copied context). For them a source wraps the library's own
entry point (``Model.save``, ``Connection.dispatch``...) in an :class:`EntryScope` from
``Engine.entry``: the scope starts the operation's span in the caller's context and makes it
current for the whole call, so driver spans nest under it; receivers started inside the call see
the scope (child tasks copy the context) and claim its operation instead of starting their own.
An exception leaving the call fails every operation of the scope at once. This is the one
mechanism every source uses; none sets a context variable in one receiver and resets it in another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace.propagation import _SPAN_KEY

from sigtrace.core.operation import Operation

__all__ = [
    "ActorScope",
    "Attachment",
    "Scope",
    "StaleAttachments",
    "attach",
    "current_actor",
    "current_context",
    "current_scope",
    "detach",
    "set_actor",
    "span_is_current",
    "with_span",
]

_SCOPE: ContextVar[Scope | None] = ContextVar("sigtrace_scope", default=None)
_ACTOR: ContextVar[str | None] = ContextVar("sigtrace_actor", default=None)


class Scope:
    """The operations started during one library call in this context (and its child tasks)."""

    __slots__ = ("expect", "op", "ops")

    def __init__(self, op: Operation | None, expect: Hashable | None) -> None:
        #: The operation whose span is current during the call (``None``: the scope only observes).
        self.op = op
        #: The correlation key the library's pre signal will carry, where the wrapper can know it.
        self.expect = expect
        #: Operations begun inside the call, ended with the call's exception if it raises.
        self.ops: list[Operation] = []

    def claimable(self, op: Operation, key: Hashable | None) -> Operation | None:
        """The scope's own operation, if this pre signal is its first sighting."""
        own = self.op
        if own is None or own.done or own.key is not None or own.source != op.source:
            return None
        if self.expect is not None and key != self.expect:
            return None
        return own


#: The scope of the library call running in this context, if any (the variable's own ``get``: no Python frame).
current_scope: Callable[[], Scope | None] = _SCOPE.get


#: Make a scope current / restore the one before: the variable's own ``set`` and ``reset`` (no Python frame).
enter_scope: Callable[[Scope], Token[Scope | None]] = _SCOPE.set
exit_scope: Callable[[Token[Scope | None]], None] = _SCOPE.reset


#: Who acts in this context (``sigtrace.actor``), if named.
current_actor: Callable[[], str | None] = _ACTOR.get


class ActorScope:
    """Names who acts: a plain setter when called, restored on exit when used with ``with``."""

    __slots__ = ("_token", "name")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._token: Token[str | None] | None = _ACTOR.set(name)

    def __enter__(self) -> ActorScope:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _ACTOR.reset(self._token)
            self._token = None

    async def __aenter__(self) -> ActorScope:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def set_actor(name: str | None) -> ActorScope:
    """Name who acts, for the audit events of the operations that follow in this thread or task.

    Use as a context manager (restored on exit) or as a plain call (stays set in this context).
    Public as ``sigtrace.actor``.
    """
    return ActorScope(None if name is None else str(name))


# --- making an operation's span current ---

#: A context made current by sigtrace: the token to reset and the context it attached.
Attachment = tuple[Token[Any], otel_context.Context]


def _runtime_context_calls() -> tuple[Callable[[], otel_context.Context], Callable[[otel_context.Context], Token[Any]]]:
    """The current context's getter and setter, bound once: the ContextVar's own ``get``/``set`` (C, no Python
    frame) under OpenTelemetry's default runtime context, else that runtime context's methods.

    The API's ``get_current``/``attach`` only forward to these, through two Python frames per call; the runtime
    context is chosen once, when ``opentelemetry.context`` is imported (``OTEL_PYTHON_CONTEXT``).
    """
    runtime = otel_context._RUNTIME_CONTEXT
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var.get, var.set
    return runtime.get_current, runtime.attach


#: ``opentelemetry.context.get_current`` and ``attach`` without their frames (see above).
current_context, _set_context = _runtime_context_calls()


def attach(span: trace.Span) -> Attachment:
    """Make ``span`` current in this context (undo with :func:`detach`).

    What ``context.attach(trace.set_span_in_context(span))`` does (a copy of the current context with the
    span under the API's own key), spelled without its five Python frames; pinned to it by tests/core.
    """
    values = current_context().copy()  # with_span(span), spelled here: one frame fewer on every attach
    values[_SPAN_KEY] = span
    ctx = otel_context.Context(values)
    return _set_context(ctx), ctx


def with_span(span: trace.Span) -> otel_context.Context:
    """The current context with ``span`` as its span: ``trace.set_span_in_context(span)`` without its frames."""
    values = current_context().copy()
    values[_SPAN_KEY] = span
    return otel_context.Context(values)


def span_is_current(span: trace.Span) -> bool:
    """``trace.get_current_span() is span``, read from the context directly."""
    return current_context().get(_SPAN_KEY) is span


def detach(attachment: Attachment, *, force: bool = False) -> bool:
    """Undo an attach, only in its own context and only while it is on top.

    ``ContextVar.reset`` accepts tokens in any order and then restores a stale context (the
    older operation's span comes back as current); so an attachment that something else
    covers is left for later (the newer one's detach uncovers it). ``force`` is for a
    with-block restoring its caller's context.
    """
    token, ctx = attachment
    if not force and current_context() is not ctx:
        return False
    try:
        token.var.reset(token)
    except (ValueError, RuntimeError):
        return False
    return True


class StaleAttachments:
    """Spans made current by operations that ended where their context could not detach them.

    An operation whose post signal came from another thread, or that the reaper ended, leaves its
    span attached in the context of its pre signal. Kept here by span id (bounded, oldest kept:
    see :meth:`close`) and detached by the next operation that begins in that context and finds
    the span current, or at uninstall.
    """

    __slots__ = ("_by_span", "_lock", "max_size", "pending")

    def __init__(self, max_size: int) -> None:
        self.max_size = max(max_size, 2)
        self._by_span: dict[int, Attachment] = {}
        #: The same dict, read-only for callers: empty when nothing is stale (never replaced, only cleared).
        self.pending: dict[int, Attachment] = self._by_span
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._by_span)

    def remember(self, span: trace.Span, attachment: Attachment) -> None:
        with self._lock:
            if len(self._by_span) >= self.max_size:
                # Keep the oldest: close() restores a context to before it.
                keys = iter(self._by_span)
                next(keys)
                self._by_span.pop(next(keys))
            self._by_span[span.get_span_context().span_id] = attachment

    def detach_current(self) -> None:
        """Detach the spans left current in this context by operations that ended elsewhere."""
        while True:
            span_id = trace.get_current_span().get_span_context().span_id
            with self._lock:
                attachment = self._by_span.pop(span_id, None)
            if attachment is None:
                return
            if not detach(attachment):
                with self._lock:
                    self._by_span[span_id] = attachment
                return

    def close(self) -> None:
        """Detach what this context can, newest first; then restore it to before its oldest remaining one."""
        with self._lock:
            stale = list(self._by_span.values())
            self._by_span.clear()
        while stale:
            detached = [attachment for attachment in reversed(stale) if detach(attachment)]
            if not detached:
                break
            stale = [attachment for attachment in stale if attachment not in detached]
        # What is left was covered by attachments the bounded table let go: restoring this
        # context to before its oldest remaining one restores it to before them all (tokens of
        # other threads' contexts cannot be reset here and are skipped).
        for attachment in stale:
            if detach(attachment, force=True):
                break
