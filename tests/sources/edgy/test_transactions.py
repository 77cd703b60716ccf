"""An audit event says what the database kept (Edgy over databasez), on SQLite and PostgreSQL.

A write inside ``database.transaction()`` is audited when the outermost transaction commits
(``ok``) or when it, or the savepoint around the write, rolls back (``rolled_back``); its span
ends with the call. Writes are audited also when the application mutes Edgy's signals. Own
table (``tx_edgy_accounts``) with string keys, so that every event names its row.

On SQLite databasez opens a transaction without a BEGIN, and Edgy wraps each save and update
in a SAVEPOINT: sent first, that SAVEPOINT is a transaction of its own in SQLite, committed by
its RELEASE. Such writes stay in the table when the application's transaction rolls back, and
sigtrace reports them ``ok`` (what the database kept); the tests pin both backends' behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import edgy
import pytest
from edgy.core import signals as edgy_signals

from sigtrace.sinks.redaction import MASK
from sigtrace.testing import Capture, capture
from tests.outcomes import HELD_TIMEOUT, counted, events_of, outcomes_of, reap_past_timeout, spans_only
from tests.sources.edgy.conftest import backend_url
from tests.sources.edgy.helpers import pg_lock

TABLE = "tx_edgy_accounts"


class RollbackError(Exception):
    """Raised inside a transaction to roll it back."""


@dataclass
class Bank:
    database: edgy.Database
    registry: edgy.Registry
    Account: Any
    url: str


def define(url: str, **options: Any) -> Bank:
    database = edgy.Database(url, **options)
    reg = edgy.Registry(database=database)

    class Account(edgy.Model):
        id: str = edgy.CharField(max_length=40, primary_key=True)
        balance: int = edgy.IntegerField(default=0)
        api_token: str = edgy.CharField(max_length=40, default="")

        class Meta:
            registry = reg
            tablename = TABLE

    return Bank(database, reg, Account, url)


@pytest.fixture
async def bank(backend: str) -> AsyncIterator[Bank]:
    url = backend_url(backend)
    with pg_lock() if backend == "postgresql" else contextlib.nullcontext():
        bank = define(url)
        async with bank.database:
            await bank.registry.drop_all()
            await bank.registry.create_all()
            try:
                yield bank
            finally:
                await bank.registry.drop_all()


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["edgy"]) as cap:
        yield cap


def events(cap: Capture) -> list[dict[str, Any]]:
    return events_of(cap, TABLE)


def write_span(cap: Capture, label: str) -> Any:
    """The one span of ``label``: an operation name, ``(query set)`` added for a query set's write."""
    operation, _, of_queryset = label.partition(" ")
    (span,) = (
        s
        for s in cap.spans_named(f"{operation} {TABLE}")
        if bool((s.attributes or {}).get("sigtrace.edgy.queryset")) == bool(of_queryset)
    )
    return span


def outcomes(cap: Capture) -> dict[str, list[str]]:
    return outcomes_of(cap, TABLE)


async def stored(bank: Bank) -> set[str]:
    return {account.id for account in await bank.Account.query.all()}


async def test_a_write_in_a_committed_transaction_is_audited_at_the_commit(bank: Bank, cap: Capture) -> None:
    async with bank.database.transaction():
        # A first statement that is no savepoint: SQLite begins the transaction here (module docstring).
        await bank.Account.query.filter(id="nobody").delete()
        account = await bank.Account.query.create(id="a1", balance=1)
        await account.update(balance=2)
        # Spans are not delayed; audit events and the counter wait for the commit.
        save, update = cap.span(f"save {TABLE}"), cap.span(f"update {TABLE}")
        assert events(cap) == []
        assert counted(cap, "ok") == 0
    assert outcomes(cap) == {"None": ["ok"], "a1": ["ok", "ok"]}
    assert [e["operation"] for e in cap.audit_for(save)] == ["save"]
    assert [e["operation"] for e in cap.audit_for(update)] == ["update"]
    assert counted(cap, "ok") == 3
    assert await stored(bank) == {"a1"}
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_a_rolled_back_transaction_audits_what_the_database_kept(bank: Bank, cap: Capture, backend: str) -> None:
    await bank.Account.query.create(id="kept")
    cap.clear()
    ok_before = counted(cap, "ok")  # cumulative: the autocommit create above
    with pytest.raises(RollbackError):
        async with bank.database.transaction():
            await bank.Account.query.create(id="r1")
            kept = await bank.Account.query.get(id="kept")
            await kept.update(balance=9)
            await bank.Account.query.filter(id="kept").update(balance=10)
            await kept.delete()
            if backend == "postgresql":
                assert events(cap) == []
            raise RollbackError
    if backend == "sqlite":
        # create() and update() committed at their own savepoint's RELEASE (module docstring); the
        # query-set update and the delete ran in the transaction SQLite began for them: rolled back.
        expected = {"save": "ok", "update": "ok", "update (query set)": "rolled_back", "delete": "rolled_back"}
        assert await stored(bank) == {"kept", "r1"}
        assert (await bank.Account.query.get(id="kept")).balance == 9
    else:
        expected = dict.fromkeys(("save", "update", "update (query set)", "delete"), "rolled_back")
        assert await stored(bank) == {"kept"}
        assert (await bank.Account.query.get(id="kept")).balance == 0
    for operation, outcome in expected.items():
        (event,) = cap.audit_for(write_span(cap, operation))  # the same trace_id/span_id as the span
        assert event["outcome"] == outcome, operation
    assert len(events(cap)) == 4
    rolled_back = list(expected.values()).count("rolled_back")
    assert counted(cap, "rolled_back") == rolled_back and counted(cap, "ok") == ok_before + 4 - rolled_back


async def test_a_rolled_back_savepoint_inside_a_committed_transaction(bank: Bank, cap: Capture, backend: str) -> None:
    async with bank.database.transaction():
        await bank.Account.query.create(id="outer")
        with pytest.raises(RollbackError):
            async with bank.database.transaction():
                await bank.Account.query.create(id="inner")
                raise RollbackError
        async with bank.database.transaction():
            await bank.Account.query.create(id="released")  # released: joins the outer transaction
        if backend == "postgresql":  # on SQLite both committed already, at a RELEASE (module docstring)
            assert "outer" not in outcomes(cap) and "released" not in outcomes(cap)
    assert outcomes(cap) == {"outer": ["ok"], "inner": ["rolled_back"], "released": ["ok"]}
    assert await stored(bank) == {"outer", "released"}


async def test_savepoints_begun_before_the_first_write_inside_them(bank: Bank, cap: Capture) -> None:
    """sigtrace mirrors a connection's transactions when a write needs them, not as they begin
    (docs/sources/edgy.md, "Transactions"): a savepoint that held no write ended unseen, two nested
    ones opened before the write inside them are mirrored then, each inside the one below it."""
    async with bank.database.transaction():
        # A first statement that is no savepoint: SQLite begins the transaction here (module docstring).
        await bank.Account.query.filter(id="nobody").delete()
        with pytest.raises(RollbackError):
            async with bank.database.transaction():
                raise RollbackError
        async with bank.database.transaction():
            with pytest.raises(RollbackError):
                async with bank.database.transaction():
                    await bank.Account.query.create(id="inner")
                    raise RollbackError
            assert outcomes(cap) == {"inner": ["rolled_back"]}
            await bank.Account.query.create(id="middle")
        assert outcomes(cap) == {"inner": ["rolled_back"]}  # released into the outer transaction
    assert outcomes(cap) == {"None": ["ok"], "inner": ["rolled_back"], "middle": ["ok"]}
    assert await stored(bank) == {"middle"}
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_a_released_savepoint_of_a_rolled_back_transaction(bank: Bank, cap: Capture, backend: str) -> None:
    transaction = await bank.database.transaction()  # started by hand, ended by hand
    async with bank.database.transaction():
        await bank.Account.query.create(id="released")
    await transaction.rollback()
    if backend == "sqlite":  # the savepoint was SQLite's transaction, committed at its RELEASE
        assert outcomes(cap) == {"released": ["ok"]}
        assert await stored(bank) == {"released"}
    else:
        assert outcomes(cap) == {"released": ["rolled_back"]}
        assert await stored(bank) == set()


async def test_autocommit_writes_are_audited_when_they_return(bank: Bank, cap: Capture) -> None:
    account = await bank.Account.query.create(id="auto")
    assert outcomes(cap) == {"auto": ["ok"]}
    await account.update(balance=4)
    assert outcomes(cap) == {"auto": ["ok", "ok"]}
    await bank.Account.query.filter(id="auto").update(balance=5)
    await bank.Account.query.bulk_create([{"id": "b1"}, {"id": "b2"}])
    await account.delete()
    assert [e["operation"] for e in events(cap)] == ["save", "update", "update", "bulk_create", "delete"]
    assert {e["outcome"] for e in events(cap)} == {"ok"}


async def test_a_hundred_concurrent_transactions_half_rolled_back(bank: Bank, cap: Capture, backend: str) -> None:
    """Each task in its own transaction (databasez gives each task its own connection)."""
    failures: dict[str, BaseException] = {}

    async def transfer(i: int) -> None:
        pk = f"c{i:03}"
        try:
            async with bank.database.transaction():
                account = await bank.Account.query.create(id=pk, balance=i)
                await asyncio.sleep(0)  # let the others interleave inside their transactions
                await account.update(balance=i + 1)
                if i % 2:
                    raise RollbackError
        except RollbackError:
            pass
        except Exception as exc:  # noqa: BLE001 - SERIALIZABLE may refuse a concurrent write (counted)
            failures[pk] = exc

    await asyncio.gather(*(transfer(i) for i in range(100)))
    rows = await stored(bank)
    found = outcomes(cap)
    assert sorted(found) == [f"c{i:03}" for i in range(100)]
    for pk, seen in found.items():
        if pk in rows:
            assert seen == ["ok", "ok"], (pk, seen)
        else:
            assert "ok" not in seen and set(seen) <= {"rolled_back", "error"}, (pk, seen)
    assert {pk for pk, seen in found.items() if "ok" in seen} == rows
    if backend == "sqlite":  # every write committed at its own RELEASE (module docstring)
        assert not failures
        assert rows == set(found)
    else:
        assert rows == {f"c{i:03}" for i in range(0, 100, 2)} - set(failures)
    assert len(failures) < 10, failures
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_writes_with_muted_signals_are_still_audited(bank: Bank, cap: Capture) -> None:
    """``signal.muted()`` (Edgy's own tests mute the global pre signals for bulk jobs) hides nothing."""
    signals = bank.Account.meta.signals
    with signals.pre_save.muted():
        account = await bank.Account.query.create(id="m1", balance=1)
    with signals.pre_update.muted(), signals.post_update.muted():
        await account.update(balance=2)
    with edgy_signals.post_update.muted():
        await bank.Account.query.filter(id="m1").update(balance=3)
    with signals.pre_delete.muted():
        await account.delete()
    with signals.post_save.muted():
        await bank.Account.query.create(id="m2")  # claimed by pre_save, ended by the call's return
    await bank.Account.query.filter(id="m2").delete()
    ops = [(e["operation"], e.get("pk"), e["outcome"]) for e in events(cap)]
    assert ops == [
        ("save", "m1", "ok"),
        ("update", "m1", "ok"),
        ("update", None, "ok"),
        ("delete", "m1", "ok"),
        ("save", "m2", "ok"),
        ("delete", None, "ok"),
    ]
    update = next(e for e in events(cap) if e["operation"] == "update")
    assert update["changed_fields"] == ["balance"]  # from the call itself: no signal said so
    second = [e for e in events(cap) if e["operation"] == "save"][1]
    assert "id" in second["changed_fields"]  # described by its pre signal
    for name in ("save", "update", "delete"):
        for span in cap.spans_named(f"{name} {TABLE}"):
            assert len(cap.audit_for(span)) == 1
    assert cap.installation is not None and cap.installation.in_flight() == 0
    assert await stored(bank) == set()


async def test_muted_writes_in_a_rolled_back_transaction(bank: Bank, cap: Capture, backend: str) -> None:
    with pytest.raises(RollbackError), edgy_signals.pre_save.muted(), edgy_signals.post_save.muted():
        async with bank.database.transaction():
            await bank.Account.query.create(id="quiet")
            await bank.Account.query.filter(id="quiet").update(balance=1)
            raise RollbackError
    if backend == "sqlite":  # the create committed at its own RELEASE (module docstring)
        assert outcomes(cap) == {"quiet": ["ok"], "None": ["rolled_back"]}
        assert await stored(bank) == {"quiet"}
    else:
        assert outcomes(cap) == {"quiet": ["rolled_back"], "None": ["rolled_back"]}
        assert await stored(bank) == set()


async def test_force_rollback_database_reports_top_level_writes_as_they_return(bank: Bank, backend: str) -> None:
    """A test database (``force_rollback=True``): its whole-connection transaction is not reported as one.

    Top-level writes are audited when they return, transactions inside it as usual, the rollback
    at disconnect adds nothing: a user's test sees what production would report.
    """
    test_db = define(bank.url, force_rollback=True)
    with capture(sources=["edgy"]) as cap:
        async with test_db.database:
            await test_db.Account.query.create(id="top")
            assert outcomes(cap) == {"top": ["ok"]}
            async with test_db.database.transaction():
                await test_db.Account.query.create(id="committed")
                assert "committed" not in outcomes(cap)
            with pytest.raises(RollbackError):
                async with test_db.database.transaction():
                    await test_db.Account.query.create(id="rolled")
                    raise RollbackError
            assert outcomes(cap) == {"top": ["ok"], "committed": ["ok"], "rolled": ["rolled_back"]}
            assert {a.id for a in await test_db.Account.query.all()} == {"top", "committed"}
        assert outcomes(cap) == {"top": ["ok"], "committed": ["ok"], "rolled": ["rolled_back"]}
        assert cap.installation is not None and cap.installation.in_flight() == 0
    if backend == "sqlite":
        # Not isolated: Edgy's savepoints were SQLite's own transactions, committed at RELEASE
        # (module docstring); sigtrace said ``ok``, the database kept them.
        assert await stored(bank) == {"top", "committed"}
    else:
        assert await stored(bank) == set()  # the database kept nothing of the test run


async def test_updates_carry_old_and_new_values_where_the_instance_knows_the_old(bank: Bank) -> None:
    with capture(sources=["edgy"], capture_values=True) as cap:
        await bank.Account.query.create(id="v1", balance=1, api_token="old-token")
        account = await bank.Account.query.get(id="v1")
        await account.update(balance=2, api_token="new-token")
        account.balance = 5  # assigned since load: the instance no longer knows the stored value
        await account.update(balance=6)
        await bank.Account.query.filter(id="v1").update(balance=7)  # a query-set update: new values only
    first, second = (e for e in events(cap) if e["operation"] == "update" and e.get("pk"))
    assert first["values"] == {"balance": [1, 2], "api_token": MASK}  # masked on both sides
    assert second["values"] == {"balance": 6}
    (qs,) = (e for e in events(cap) if e["operation"] == "update" and not e.get("pk"))
    assert qs["values"]["balance"] == 7
    assert "old-token" not in repr(cap.audit_events) and "new-token" not in repr(cap.audit_events)


async def test_a_transaction_that_never_ends_is_reported_unknown_after_orphan_timeout(bank: Bank) -> None:
    """Held writes are bounded: a transaction left open (a lost connection, a forgotten commit)."""
    with capture(sources=["edgy"], orphan_timeout=HELD_TIMEOUT) as cap:
        transaction = await bank.database.transaction()
        try:
            await bank.Account.query.filter(id="nobody").delete()  # SQLite's BEGIN (module docstring)
            await bank.Account.query.create(id="lost")
            assert events(cap) == []  # held for the transaction
            reap_past_timeout(cap)
            assert [(e["outcome"], e["orphan_reason"]) for e in events(cap)] == [("unknown", "transaction_timeout")] * 2
        finally:
            await transaction.commit()  # reported once, already
        assert outcomes(cap) == {"None": ["unknown"], "lost": ["unknown"]}
        assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_a_task_gathered_inside_a_transaction_writes_on_its_own_connection(
    bank: Bank, cap: Capture, backend: str
) -> None:
    """databasez gives every task its own connection: the child's write is not in the caller's transaction."""
    with pytest.raises(RollbackError):
        async with bank.database.transaction():
            await asyncio.gather(bank.Account.query.create(id="child"))
            await bank.Account.query.create(id="parent")
            raise RollbackError
    parent = "ok" if backend == "sqlite" else "rolled_back"  # SQLite: committed at its RELEASE (module docstring)
    assert outcomes(cap) == {"child": ["ok"], "parent": [parent]}
    assert await stored(bank) == ({"child", "parent"} if backend == "sqlite" else {"child"})


async def test_bulk_writes_in_a_rolled_back_transaction(bank: Bank, cap: Capture, backend: str) -> None:
    """Bulk operations are the entry point's own operations: they follow the transaction the same way."""
    await bank.Account.query.bulk_create([{"id": "k1"}, {"id": "k2"}])
    cap.clear()
    with pytest.raises(RollbackError):
        async with bank.database.transaction():
            await bank.Account.query.bulk_create([{"id": "b1"}, {"id": "b2"}])
            accounts = await bank.Account.query.all()
            for account in accounts:
                account.balance = 5
            await bank.Account.query.bulk_update(accounts, update_fields=["balance"])
            raise RollbackError
    seen = [(e["operation"], e["outcome"]) for e in events(cap)]
    balances = {a.id: a.balance for a in await bank.Account.query.all()}
    if backend == "sqlite":  # each bulk call's savepoint was SQLite's transaction (module docstring)
        assert seen == [("bulk_create", "ok"), ("bulk_update", "ok")]
        assert balances == {"k1": 5, "k2": 5, "b1": 5, "b2": 5}
    else:
        assert seen == [("bulk_create", "rolled_back"), ("bulk_update", "rolled_back")]
        assert balances == {"k1": 0, "k2": 0}


async def test_spans_only_mirrors_no_transaction(bank: Bank) -> None:
    """Without the audit log and metrics nothing waits for a commit (``Engine.holds_writes``): databasez's
    transactions stay unpatched; the write's span ends with the call as always."""
    from databasez.core.transaction import BoundTransaction

    with spans_only("edgy", BoundTransaction, "commit", "rollback") as cap:
        with pytest.raises(RollbackError):
            async with bank.database.transaction():
                await bank.Account.query.filter(id="nobody").delete()
                await bank.Account.query.create(id="s1", balance=1)
                raise RollbackError
        assert cap.span(f"save {TABLE}").status.is_ok
    assert await stored(bank) == set()
