"""The transactions of every SQLAlchemy ``Session``, mirrored as the core's ``Transaction`` objects.

One piece of code for the two sources that write through SQLAlchemy sessions: the SQLAlchemy ORM
source (``sigtrace/sources/sqlalchemy.py``: flushes and ORM statements) and the Flask-SignalBus
source (``sigtrace/sources/signalbus.py``: a send is kept only if the session that deletes the
message row commits). It works on SQLAlchemy 1.4, 2.0 and 2.1: only session events and public
accessors, listened to on the ``Session`` class (every session and subclass, also sessions made
before ``install()``, ``AsyncSession`` through its ``sync_session``, scoped sessions, Flask-SQLAlchemy
and SQLModel sessions).

Mapping (one core ``Transaction`` per outermost or nested ``SessionTransaction``; the session's
internal subtransactions, e.g. the one around each flush, belong to their parent):

* ``after_transaction_create``: an outermost one opens a core transaction, a nested one
  (``begin_nested``, ``SessionTransaction.nested``) a savepoint of its nearest tracked parent;
* ``after_commit`` / ``after_rollback``: the innermost open one (the session's nested transaction,
  else its root: the one SQLAlchemy is committing or rolling back at that moment) commits / rolls back;
* ``after_transaction_end``: one still open was closed without a commit (``Session.close()``, a
  connection given back): the database discarded its writes, so it rolls back.

A transaction begun before ``install()`` is not known: its writes are reported when they end, as
without a transaction. A session joined to an outer ``Connection`` transaction
(``join_transaction_mode``) is reported by what the session did; the outer transaction is the
application's.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, Final

from sigtrace.core import safety
from sigtrace.core.transactions import Transaction
from sigtrace.sources.kit.identity import WeakIdentityMap

__all__ = ["TRACKER", "SessionTransactions"]

_KIND: Final = "source.sqlalchemy.transactions"


class SessionTransactions:
    """Session event listeners that keep a core :class:`Transaction` per open session transaction.

    Shared by the sources that need it: :meth:`acquire` on attach, :meth:`release` on detach; the
    listeners are on the ``Session`` class while at least one source holds it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._session_class: Any = None
        self._event: Any = None
        #: SQLAlchemy's transaction -> its core transaction (by identity, held weakly: kit/identity.py).
        self._by_transaction: WeakIdentityMap[Transaction] = WeakIdentityMap()
        self._listeners = (
            ("after_transaction_create", _guarded(self._on_create)),
            ("after_commit", _guarded(self._on_commit)),
            ("after_rollback", _guarded(self._on_rollback)),
            ("after_transaction_end", _guarded(self._on_end)),
        )

    # --- life cycle ---

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._event = importlib.import_module("sqlalchemy.event")
            self._session_class = importlib.import_module("sqlalchemy.orm").Session
            for name, listener in self._listeners:
                self._event.listen(self._session_class, name, listener)

    def release(self) -> None:
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users:
                return
            for name, listener in self._listeners:
                if self._event.contains(self._session_class, name, listener):
                    self._event.remove(self._session_class, name, listener)
            self._by_transaction = WeakIdentityMap()

    @property
    def active(self) -> bool:
        return self._users > 0

    # --- what sources ask ---

    def current(self, session: Any) -> Transaction | None:
        """The core transaction a write of ``session`` runs in now (innermost savepoint, else the outermost)."""
        if not self._users or session is None:
            return None
        try:
            target = _innermost(session)
            if target is None:
                return None
            tx = self._by_transaction.get(target)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(_KIND, exc)
            return None
        return tx if tx is not None and not tx.closed else None

    # --- listeners ---

    def _on_create(self, session: Any, transaction: Any) -> None:
        if transaction.nested:
            parent = self._tracked_parent(transaction)
            if parent is None or parent.closed:
                return  # its outermost transaction began before install(): not known
            tx = parent.savepoint()
        elif transaction.parent is None:
            tx = Transaction()
        else:
            return  # a subtransaction (e.g. around a flush): part of its parent
        with self._lock:
            self._by_transaction.set(transaction, tx)

    def _on_commit(self, session: Any) -> None:
        tx = self._target(session)
        if tx is not None:
            tx.commit()

    def _on_rollback(self, session: Any) -> None:
        tx = self._target(session)
        if tx is not None:
            tx.rollback()

    def _on_end(self, session: Any, transaction: Any) -> None:
        if self._by_transaction.get(transaction) is None:
            return  # untracked (a flush's subtransaction): no lock taken
        with self._lock:
            tx = self._by_transaction.pop(transaction)
        if tx is not None and not tx.closed:
            tx.rollback()  # closed without a commit: the database discarded its writes

    # --- helpers ---

    def _target(self, session: Any) -> Transaction | None:
        target = _innermost(session)
        if target is None:
            return None
        tx = self._by_transaction.get(target)
        return tx if tx is not None and not tx.closed else None

    def _tracked_parent(self, transaction: Any) -> Transaction | None:
        parent = transaction.parent
        while parent is not None:
            tx = self._by_transaction.get(parent)
            if tx is not None:
                return tx
            parent = parent.parent
        return None


def _guarded(listener: Callable[..., None]) -> Callable[..., None]:
    """A session event listener under the safety net (``source.sqlalchemy.transactions``)."""

    def guarded(*args: Any) -> None:
        try:
            listener(*args)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(_KIND, exc)

    return guarded


def _innermost(session: Any) -> Any:
    """The session's innermost nested transaction, else its outermost (public accessors, 1.4 to 2.1).

    At ``after_commit`` / ``after_rollback`` it is the transaction SQLAlchemy commits or rolls back:
    a savepoint is released or rolled back before its parent, and a failed flush rolls back the
    innermost savepoint or root around it.
    """
    nested = session.get_nested_transaction()
    return nested if nested is not None else session.get_transaction()


#: The one tracker of the process (sources share it: one set of listeners, one mirror per session).
TRACKER: Final = SessionTransactions()
