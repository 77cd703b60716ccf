"""Django's transactions mirrored as sigtrace transactions (sigtrace/core/transactions.py): which writes were kept.

Where to look: every COMMIT, ROLLBACK and SAVEPOINT statement Django issues goes through a method of the
connection (``BaseDatabaseWrapper``): ``atomic()`` blocks, ``ATOMIC_REQUESTS``, ``set_autocommit(False)`` with
``commit()``/``rollback()``, ``transaction.savepoint()``. Those methods are wrapped on the class (so every backend
and every connection, also those opened later), and each call is mirrored only once it has succeeded:

* ``savepoint()`` returning an id opens a savepoint inside the connection's current transaction;
* ``savepoint_commit(sid)`` releases it (its writes join the parent: SQL's RELEASE);
* ``savepoint_rollback(sid)`` rolls back what it holds; the savepoint stays open (SQL's ROLLBACK TO), so a
  fresh one takes its place until it is released;
* ``commit()`` reports the whole transaction ``ok`` and ``rollback()`` ``rolled_back``; a COMMIT that the
  server answers with a rollback (PostgreSQL, after an error in the transaction) is a rollback;
* ``set_autocommit(True)`` while a transaction is open commits it (SQLite and MySQL do; PostgreSQL refuses);
* ``close()`` (also Atomic's, when a rollback fails) and ``connect()`` with a transaction open abandon it:
  its writes end ``unknown``, as nobody can tell what the server did with them.

The outermost transaction is opened lazily: a write that starts while the connection is out of autocommit
(inside ``atomic()``, or after ``set_autocommit(False)``) opens it. A write in autocommit gets no transaction
and is reported when it returns, as before.

Not ``transaction.on_commit``: callbacks of sigtrace's would be seen (and counted) by the application's
``captureOnCommitCallbacks`` and run among its own. ``Atomic.__enter__`` is wrapped for one thing only: Django's
``TestCase`` marks its atomic blocks ``_from_testcase``; their transaction (rolled back after each test) is
treated as autocommit, so writes directly in a test are reported at once, while ``atomic()`` blocks inside the
test behave as in production (their outermost savepoint counts as the transaction).

One state per connection object (Django's connections are per thread), in a weak dictionary.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from sigtrace.core.operation import Operation
from sigtrace.core.transactions import Transaction, TransactionStack

__all__ = ["DjangoTransactions"]

_NONE: dict[str, Any] = {}
#: ``psycopg.pq.TransactionStatus.INERROR`` and ``psycopg2.extensions.TRANSACTION_STATUS_INERROR``.
_PG_IN_ERROR = 3


class _State:
    """The mirrored transactions of one connection object."""

    __slots__ = ("entering_testcase", "savepoints", "stack", "testcase", "testcase_sids")

    def __init__(self) -> None:
        self.stack = TransactionStack()
        #: Savepoint id -> the savepoint it opened (ids are unique per connection and thread).
        self.savepoints: dict[str, Transaction] = {}
        #: Inside a transaction TestCase opened (treated as autocommit), and the savepoints its blocks made.
        self.testcase = False
        self.testcase_sids: set[str] = set()
        #: A TestCase atomic block is being entered: what it opens is TestCase's, not the application's.
        self.entering_testcase = 0

    def ended(self) -> None:
        """The outermost transaction is over (committed, rolled back, abandoned)."""
        self.savepoints.clear()
        self.testcase = False
        self.testcase_sids.clear()


class DjangoTransactions:
    """The transaction state of every Django connection, and the patches that keep it."""

    def __init__(self, guard: Callable[[str], AbstractContextManager[Any]]) -> None:
        #: The source's safety net (``Source.guard``): ``with self._guard("commit"):``.
        self._guard = guard
        self._states: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        #: This thread's connections out of autocommit, by alias (Django's connections are per thread):
        #: a write elsewhere needs no lookup at all (``connections[alias]`` alone costs ~2 us).
        self._local = threading.local()
        #: Aliases configured with ``AUTOCOMMIT: False`` (out of autocommit from their first connect on).
        self._manual: dict[str, bool] = {}
        #: Patched (:meth:`attach`): without its patches no transaction would ever end, so none is tracked.
        self._attached = False

    def attach(self, patch: Callable[[Any, str, Callable[..., Any]], None]) -> None:
        self._attached = True
        patch(BaseDatabaseWrapper, "savepoint", self._wrap_savepoint)
        patch(BaseDatabaseWrapper, "savepoint_commit", self._wrap_savepoint_commit)
        patch(BaseDatabaseWrapper, "savepoint_rollback", self._wrap_savepoint_rollback)
        patch(BaseDatabaseWrapper, "commit", self._wrap_commit)
        patch(BaseDatabaseWrapper, "rollback", self._wrap_rollback)
        patch(BaseDatabaseWrapper, "set_autocommit", self._wrap_set_autocommit)
        patch(BaseDatabaseWrapper, "close", self._wrap_close)
        patch(BaseDatabaseWrapper, "connect", self._wrap_connect)
        patch("django.db.transaction", "Atomic.__enter__", self._wrap_atomic_enter)

    # --- what the source asks ---

    def assign(self, op: Operation, using: str | None) -> None:
        """Set ``op.transaction``: the transaction open on ``connections[using]`` as the write starts."""
        if not using or not self._attached:
            return
        # The common case first, outside the guard (two dict lookups that cannot fail): a connection in
        # autocommit, on this thread, with none out of it.
        if self._manual.get(using) is False and not getattr(self._local, "open", None):
            return
        with self._guard("transaction"):  # failing, the write is reported at once
            connection = getattr(self._local, "open", _NONE).get(using)
            if connection is None:
                manual = self._manual.get(using)
                if manual is None:
                    manual = self._manual[using] = not connections.settings[using].get("AUTOCOMMIT", True)
                if not manual:
                    return  # autocommit: reported when it returns
                connection = connections[using]
            op.transaction = self.current(connection)

    def current(self, connection: Any) -> Transaction | None:
        """The innermost open transaction of ``connection``; ``None`` in autocommit (and directly in TestCase's)."""
        if connection.connection is None:
            # Not connected (yet, or again): the write opens the connection, in AUTOCOMMIT mode as configured.
            if connection.settings_dict.get("AUTOCOMMIT", True):
                return None
        elif connection.autocommit:
            return None
        state = self._state(connection)
        txn = state.stack.current
        if txn is None and not state.testcase:
            if _opened_by_testcase(connection):
                state.testcase = True  # TestCase's blocks, entered before sigtrace was installed
                return None
            txn = state.stack.begin()  # the transaction Django (or the database driver) began without a call here
        return txn

    def _out_of_autocommit(self, connection: Any, out: bool) -> None:
        """Keep this thread's alias -> connection map of connections out of autocommit."""
        open_ = getattr(self._local, "open", None)
        if out:
            if open_ is None:
                open_ = self._local.open = {}
            open_[connection.alias] = connection
        elif open_ and open_.get(connection.alias) is connection:
            del open_[connection.alias]

    def _state(self, connection: Any) -> _State:
        state = self._states.get(connection)
        if state is None:
            with self._lock:
                state = self._states.setdefault(connection, _State())
        return state

    # --- the connection's methods ---

    def _wrap_savepoint(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        sid = wrapped(*args, **kwargs)
        if sid is None:
            return sid  # no savepoint (autocommit, or a backend without them): writes stay in the outer transaction
        with self._guard("savepoint"):
            self._out_of_autocommit(connection, True)  # also where autocommit went off before install
            state = self._state(connection)
            if state.entering_testcase:
                state.testcase_sids.add(sid)
            else:
                self.current(connection)  # the outermost transaction, if this is the first thing in it
                state.savepoints[sid] = state.stack.begin()
        return sid

    def _wrap_savepoint_commit(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        with self._guard("savepoint_commit"):
            state = self._states.get(connection)
            sid = args[0] if args else kwargs.get("sid")
            if state is not None:
                txn = state.savepoints.pop(sid, None)
                if txn is not None:
                    state.stack.commit(txn)  # and every savepoint still open inside it, as RELEASE does
                else:
                    state.testcase_sids.discard(sid)
        return result

    def _wrap_savepoint_rollback(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        with self._guard("savepoint_rollback"):
            state = self._states.get(connection)
            sid = args[0] if args else kwargs.get("sid")
            if state is not None:
                txn = state.savepoints.get(sid)
                if txn is not None:
                    state.stack.rollback(txn)
                    # ROLLBACK TO keeps the savepoint: what runs in it from now on is held by a fresh one.
                    state.savepoints[sid] = state.stack.begin()
                elif sid in state.testcase_sids:
                    # TestCase rolls its test back: what the application's blocks left open goes with it.
                    while state.stack.current is not None:
                        state.stack.rollback()
        return result

    def _wrap_commit(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        state = self._states.get(connection)
        if state is None or (state.stack.current is None and not state.testcase):
            return wrapped(*args, **kwargs)
        failed = False
        with self._guard("commit"):
            failed = _postgres_in_error(connection)
        result = wrapped(*args, **kwargs)
        with self._guard("commit"):
            self._end(state, rolled_back=failed)
        return result

    def _wrap_rollback(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        with self._guard("rollback"):
            state = self._states.get(connection)
            if state is not None:
                self._end(state, rolled_back=True)
        return result

    def _wrap_set_autocommit(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        with self._guard("set_autocommit"):
            autocommit = args[0] if args else kwargs.get("autocommit")
            self._out_of_autocommit(connection, not autocommit)
            state = self._states.get(connection)
            if autocommit:
                if state is not None:
                    self._end(state, rolled_back=False)  # the driver committed what was open on switching
            elif state is not None and state.entering_testcase:
                state.testcase = True  # TestCase's own transaction: its writes are reported as in autocommit
        return result

    def _wrap_close(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            self._abandon(connection)

    def _wrap_connect(self, wrapped: Callable[..., Any], connection: Any, args: Any, kwargs: Any) -> Any:
        self._abandon(connection)  # a transaction of the connection before this one (closed without close())
        return wrapped(*args, **kwargs)

    def _abandon(self, connection: Any) -> None:
        with self._guard("close"):
            self._out_of_autocommit(connection, False)
            state = self._states.get(connection)
            if state is not None:
                state.stack.close()
                state.ended()

    @staticmethod
    def _end(state: _State, *, rolled_back: bool) -> None:
        stack = state.stack
        while stack.current is not None:
            if rolled_back:
                stack.rollback()
            else:
                stack.commit()
        state.ended()

    # --- TestCase's blocks ---

    def _wrap_atomic_enter(self, wrapped: Callable[..., Any], atomic: Any, args: Any, kwargs: Any) -> Any:
        if not getattr(atomic, "_from_testcase", False):
            return wrapped(*args, **kwargs)
        state: _State | None = None
        with self._guard("atomic"):
            from django.db.transaction import get_connection

            connection = get_connection(atomic.using)
            state = self._state(connection)
            state.entering_testcase += 1
            if connection.in_atomic_block and state.stack.current is None:
                state.testcase = True  # nested in TestCase's transaction (or in manual mode before any write)
        try:
            return wrapped(*args, **kwargs)
        finally:
            if state is not None:
                state.entering_testcase -= 1


def _opened_by_testcase(connection: Any) -> bool:
    """True when the innermost transaction or savepoint open on ``connection`` belongs to a TestCase atomic block.

    Django's ``savepoint_ids`` has one entry per nested block (``None``: no savepoint, the block shares the
    enclosing one's fate), aligned with the innermost entries of ``atomic_blocks``.
    """
    blocks = getattr(connection, "atomic_blocks", None) or ()
    sids = getattr(connection, "savepoint_ids", None) or ()
    offset = len(blocks) - len(sids)
    for index in range(len(blocks) - 1, -1, -1):
        if index >= offset and sids[index - offset] is None:
            continue
        return bool(getattr(blocks[index], "_from_testcase", False))
    return False


def _postgres_in_error(connection: Any) -> bool:
    """PostgreSQL answers COMMIT with ROLLBACK in a transaction an error aborted (psycopg 3 and 2 alike)."""
    if connection.vendor != "postgresql" or connection.connection is None:
        return False
    raw = connection.connection
    info = getattr(raw, "info", None)  # psycopg 3
    status = getattr(info, "transaction_status", None)
    if status is None and hasattr(raw, "get_transaction_status"):  # psycopg 2
        status = raw.get_transaction_status()
    return status is not None and int(status) == _PG_IN_ERROR
