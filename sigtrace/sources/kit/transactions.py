"""The open transactions of a library's connections, mirrored as the core's transactions.

ormar (``ormar.databases.transaction.Transaction``) and databasez, under Edgy
(``databasez.core.transaction.BoundTransaction``), each keep their own transaction objects; a
source wraps where they begin and end and reports each to one ``ConnectionTransactions``.
A write asks ``ConnectionTransactions.current`` for the connection it runs on and sets the
answer as ``Operation.transaction``: the engine then holds its audit event until that
transaction ends (see ``sigtrace/core/transactions.py``).

Keyed by the connection object, not by task: the connection is what the database nests
savepoints on, whichever task (or gathered child task) sends the statement. Everything is held
weakly: a library object collected while its transaction is open (a transaction started and
never ended) closes it, and its held writes are reported ``unknown``.
"""

from __future__ import annotations

import threading
from typing import Any

from sigtrace.core import safety
from sigtrace.core.transactions import Transaction, TransactionStack
from sigtrace.sources.kit.identity import WeakIdentityMap

__all__ = ["ConnectionTransactions", "rolled_back_by_server"]


def rolled_back_by_server(error: BaseException) -> bool:
    """True if a failed COMMIT / RELEASE was refused by the database (which then rolled it back).

    SQLAlchemy's ``DBAPIError`` says whether the connection was lost (``connection_invalidated``):
    then nobody knows whether the commit reached the server, and the outcome stays ``unknown``.
    """
    return getattr(error, "connection_invalidated", None) is False


class _Connection:
    """One connection's open transactions, and the finalizer that closes them if it is collected.

    Usually one ``TransactionStack``. A transaction the database begins afresh while the
    library believes it is nested (SQLite: a SAVEPOINT outside any transaction starts one, and
    its RELEASE commits) is the outermost of a new stack laid on top: what it holds is reported
    when it commits, whatever the transactions below it do.
    """

    __slots__ = ("closed", "layers")

    def __init__(self) -> None:
        self.layers: list[TransactionStack] = []
        self.closed = False

    @property
    def current(self) -> Transaction | None:
        for layer in reversed(self.layers):
            if layer.current is not None:
                return layer.current
        return None

    def begin(self, *, fresh: bool) -> tuple[Transaction, TransactionStack]:
        layers = self.layers
        while layers and layers[-1].current is None:
            layers.pop()  # a layer whose transactions all ended
        if fresh or not layers:
            layers.append(TransactionStack())
        return layers[-1].begin(), layers[-1]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for layer in reversed(self.layers):
            layer.close()


class ConnectionTransactions:
    """The library transactions open on each connection, as core ``Transaction`` objects."""

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        #: Connection -> its open transactions; a connection collected with transactions open (never
        #: committed, never closed) closes them (by identity, held weakly: kit/identity.py).
        self._connections: WeakIdentityMap[_Connection] = WeakIdentityMap(on_collected=self._collected)
        #: The library's transaction object -> its core transaction, its stack, its connection's entry.
        self._handles: WeakIdentityMap[tuple[Transaction, TransactionStack, _Connection]] = WeakIdentityMap()
        self._guard_end = safety.guard(f"source.{name}.transaction_end")
        self._guard_close = safety.guard(f"source.{name}.transaction_close")

    def current(self, connection: Any) -> Transaction | None:
        """The innermost open transaction of ``connection`` (``None``: the write is autocommitted)."""
        if connection is None:
            return None
        entry: _Connection | None = self._connections.get(connection)
        return None if entry is None or entry.closed else entry.current

    def begin(self, connection: Any, handle: Any, *, fresh: bool = False) -> Transaction:
        """``handle`` began on ``connection``: the outermost transaction, or a savepoint of its innermost.

        ``fresh``: the database began it as an outermost transaction although others are open.
        """
        with self._lock:
            entry: _Connection | None = self._connections.get(connection)
            if entry is None or entry.closed:
                entry = _Connection()
                self._connections.set(connection, entry)
            txn, stack = entry.begin(fresh=fresh)
            self._handles.set(handle, (txn, stack, entry))
            return txn

    def end(self, handle: Any, *, committed: bool) -> None:
        """``handle`` committed (its writes join its parent, or are reported ``ok``) or rolled back."""
        with self._guard_end:
            with self._lock:
                found = self._handles.pop(handle)
            if found is None:
                return
            txn, stack, _ = found
            if txn.closed:
                return
            if committed:  # also ends the savepoints still open inside it, as the database does
                stack.commit(txn)
            else:
                stack.rollback(txn)

    def failed(self, handle: Any, error: BaseException, *, committing: bool) -> None:
        """The library's commit or rollback of ``handle`` raised ``error``.

        A rollback that fails, or a commit the server refused, leaves nothing of the transaction
        in the database: ``rolled_back``. A commit that failed for any other reason (the
        connection was lost, the task cancelled) may or may not have reached the server: the
        connection's open transactions are closed and their writes reported ``unknown``.
        """
        if not committing or rolled_back_by_server(error):
            self.end(handle, committed=False)
            return
        with self._guard_close:
            with self._lock:
                found = self._handles.pop(handle)
            if found is not None:
                found[2].close()

    def forget(self, handle: Any) -> None:
        """``handle`` will not end through this table (a transaction that is not reported as one)."""
        with self._lock:
            self._handles.pop(handle)

    def close(self, connection: Any) -> None:
        """``connection`` was closed or released: what is still open on it ends ``unknown``."""
        with self._guard_close:
            with self._lock:
                entry = self._connections.pop(connection)
            if entry is not None:
                entry.close()

    def _collected(self, entry: _Connection) -> None:
        with self._guard_close:
            entry.close()
