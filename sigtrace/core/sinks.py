"""What the engine tells a sink: one life cycle for every sink (spans, metrics, audit log).

The engine owns this protocol and knows no concrete sink: ``_runtime.py`` builds the sinks of an
installation and hands them to the engine in start order (spans first: the others read the
span), and the engine tells them an operation's end in the reverse order (the audit record
first, the span last, so the durable record is written before anything is exported).
"""

from __future__ import annotations

from typing import Protocol

from sigtrace.core.operation import Operation

__all__ = ["Labels", "Sink", "labels_of"]

#: What names an operation in the low-cardinality sense (metric attribute sets): source, system, name, collection.
Labels = tuple[str, str | None, str, str | None]


def labels_of(op: Operation) -> Labels:
    return (op.source, op.db_system, op.name, op.collection)


class Sink(Protocol):
    """A consumer of operations. Every method is called inside the engine's safety net.

    A sink whose :meth:`started` does nothing may say so with a class attribute ``wants_started = False``:
    the engine then does not call it (one call fewer per operation); without it, it is called. A sink for
    which a write's transaction changes nothing (it reports the call, as the span sink does) says
    ``wants_resolved = False``: where no sink of an installation wants :meth:`resolved`, the sources
    mirror no transaction at all (:attr:`Engine.holds_writes`).
    """

    def started(self, op: Operation) -> None:
        """``op`` began (its ``start_ns``, ``actor`` and, after the span sink, ``span`` are set)."""

    def cancelled(self, op: Operation) -> None:
        """``op`` began but turned out to be a duplicate of one already in flight: report nothing."""

    def described(self, op: Operation, before: Labels) -> None:
        """A running ``op`` learnt what it runs on (e.g. the database Django chose): its labels were ``before``."""

    def finished(self, op: Operation, end_ns: int, duration_s: float, held: bool) -> None:
        """``op`` ended with ``op.outcome``. ``held``: it is a write whose transaction is still open; its
        final outcome comes to :meth:`resolved` (a sink reports what does not depend on it now)."""

    def resolved(self, op: Operation) -> None:
        """The transaction of a held ``op`` ended: ``op.outcome`` is final (``ok``, ``rolled_back``, ``unknown``)."""

    def event(self, op: Operation, time_ns: int) -> None:
        """A single signal with no pair, on the current span (``op.span``), outcome ``ok``."""
