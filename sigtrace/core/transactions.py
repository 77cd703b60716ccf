"""Transactions: the audit outcome of a write waits for the end of the transaction around it.

An audit event says what the database kept (docs/conventions.md). A source mirrors the
transactions of each connection it observes as :class:`Transaction` objects (a
:class:`TransactionStack` per connection does the bookkeeping) and sets ``op.transaction`` on each
write that runs inside one. The engine then ends the write's span as usual, but holds its audit
event and its ``sigtrace.operations`` count on the transaction: the outermost commit reports them
``ok``, a rollback of the transaction or of a savepoint around the write reports them
``rolled_back``, a connection that goes away reports them ``unknown``. A savepoint that is
released hands what it holds to its parent, whose fate decides.

This module knows no database library: sources translate their library's transaction events
(Django's connection methods, SQLAlchemy's session and connection events) into these calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sigtrace import semconv
from sigtrace.core import safety

__all__ = ["Resolver", "Transaction", "TransactionStack"]

#: Called once with the final outcome of a held write (``ok``, ``rolled_back`` or ``unknown``).
Resolver = Callable[[str], None]


class Transaction:
    """One open transaction (``parent is None``) or savepoint of one connection, and the writes it holds."""

    __slots__ = ("__weakref__", "_held", "_lock", "closed", "outcome", "parent")

    def __init__(self, parent: Transaction | None = None) -> None:
        self.parent = parent
        #: True once committed, rolled back or abandoned: a closed transaction holds nothing more.
        self.closed = False
        #: How it ended: ``ok``, ``rolled_back``, ``unknown``; ``None`` while open and for a released
        #: savepoint (its writes share its parent's fate).
        self.outcome: str | None = None
        self._held: list[Resolver] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        kind = "savepoint" if self.parent is not None else "transaction"
        state = "closed" if self.closed else f"open, {len(self._held)} held"
        return f"<sigtrace {kind} {state}>"

    @property
    def outermost(self) -> Transaction:
        txn = self
        while txn.parent is not None:
            txn = txn.parent
        return txn

    def savepoint(self) -> Transaction:
        """A savepoint opened inside this transaction."""
        return Transaction(self)

    def hold(self, resolve: Resolver) -> bool:
        """Keep ``resolve`` until this transaction ends; False (nothing kept) if it already ended.

        A released savepoint passes it on to its parent, whose fate its writes share. Where this
        returns False, :attr:`outcome` says how the transaction ended.
        """
        with self._lock:
            if not self.closed:
                self._held.append(resolve)
                return True
            released = self.outcome is None
        if released and self.parent is not None:
            return self.parent.hold(resolve)
        return False

    @property
    def final_outcome(self) -> str | None:
        """The outcome of a closed transaction, following released savepoints to their parent."""
        txn: Transaction | None = self
        while txn is not None and txn.closed and txn.outcome is None:
            txn = txn.parent
        return txn.outcome if txn is not None else None

    def commit(self) -> None:
        """Committed (a savepoint: released). A savepoint's writes now share its parent's fate."""
        parent = self.parent
        held = self._close(semconv.OUTCOME_OK if parent is None else None)
        if not held:
            return
        if parent is None:
            _resolve_all(held, semconv.OUTCOME_OK)
            return
        with parent._lock:
            if not parent.closed:
                parent._held.extend(held)
                return
        # Released after its parent ended: nobody can tell what the database kept.
        _resolve_all(held, semconv.OUTCOME_UNKNOWN)

    def rollback(self) -> None:
        """Rolled back: every write it holds (released savepoints' included) did not happen."""
        _resolve_all(self._close(semconv.OUTCOME_ROLLED_BACK), semconv.OUTCOME_ROLLED_BACK)

    def abandon(self) -> None:
        """The connection went away (closed, broken) before the transaction ended: outcome ``unknown``."""
        _resolve_all(self._close(semconv.OUTCOME_UNKNOWN), semconv.OUTCOME_UNKNOWN)

    def _close(self, outcome: str | None) -> list[Resolver]:
        with self._lock:
            if self.closed:
                return []  # ended once: a second commit or rollback changes nothing
            self.closed = True
            self.outcome = outcome
            held, self._held = self._held, []
        return held


def _resolve_all(held: list[Resolver], outcome: str) -> None:
    for resolve in held:
        try:
            resolve(outcome)
        except Exception as exc:  # noqa: BLE001 - one failing report never keeps the others back
            safety.report("transaction.resolve", exc)


class TransactionStack:
    """The open transactions of one connection, outermost first: what most sources need to mirror one.

    Not thread-safe by itself: a connection is used by one thread or task at a time, and so is its stack.
    """

    __slots__ = ("__weakref__", "_open")

    def __init__(self) -> None:
        self._open: list[Transaction] = []

    def __len__(self) -> int:
        return len(self._open)

    def __repr__(self) -> str:
        return f"<sigtrace TransactionStack depth={len(self._open)}>"

    @property
    def current(self) -> Transaction | None:
        """The innermost open transaction or savepoint, ``None`` outside any (autocommit)."""
        return self._open[-1] if self._open else None

    def begin(self) -> Transaction:
        """A transaction begins: the outermost one, or a savepoint inside the innermost one."""
        current = self.current
        txn = Transaction() if current is None else current.savepoint()
        self._open.append(txn)
        return txn

    def commit(self, txn: Transaction | None = None) -> None:
        """Commit the innermost (or release ``txn``, and every savepoint opened inside it, as SQL does)."""
        for done in self._pop_to(txn):
            done.commit()

    def rollback(self, txn: Transaction | None = None) -> None:
        """Roll back the innermost (or ``txn``, and every savepoint opened inside it)."""
        for done in self._pop_to(txn):
            done.rollback()

    def close(self) -> None:
        """The connection went away: whatever is open ends ``unknown``, innermost first."""
        while self._open:
            self._open.pop().abandon()

    def _pop_to(self, txn: Transaction | None) -> list[Transaction]:
        """Remove the innermost transactions down to ``txn`` (default: the innermost), innermost first."""
        if not self._open:
            return []
        if txn is None:
            return [self._open.pop()]
        if txn not in self._open:
            return []
        popped: list[Transaction] = []
        while self._open:
            top = self._open.pop()
            popped.append(top)
            if top is txn:
                break
        return popped
