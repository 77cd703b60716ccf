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

from collections.abc import Callable, Hashable
from contextvars import ContextVar, Token
from types import TracebackType

from sigtrace.core.operation import Operation

__all__ = ["ActorScope", "Scope", "current_actor", "current_scope", "set_actor"]

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


def enter_scope(scope: Scope) -> Token[Scope | None]:
    return _SCOPE.set(scope)


def exit_scope(token: Token[Scope | None]) -> None:
    _SCOPE.reset(token)


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
    return ActorScope(None if name is None else str(name))
