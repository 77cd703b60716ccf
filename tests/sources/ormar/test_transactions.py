"""An audit event says what the database kept (ormar's ``database.transaction()``), on SQLite and PostgreSQL.

A write inside a transaction is audited when the outermost transaction commits (``ok``) or when
it, or the savepoint around the write, rolls back (``rolled_back``); its span ends with the call
as always. Own table (``tx_ormar_accounts``), string keys: SQLite reuses the rowid of a
rolled-back insert, which would make two events share a pk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import ormar
import pytest
import sqlalchemy

from sigtrace.testing import Capture, capture
from tests.outcomes import HELD_TIMEOUT, counted, events_of, outcomes_of, reap_past_timeout, spans_only
from tests.sources.async_orm import drop_tables, recreate_tables

TABLE = "tx_ormar_accounts"
SAVE = f"save {TABLE}"


class RollbackError(Exception):
    """Raised inside a transaction to roll it back."""


@dataclass
class Bank:
    database: ormar.DatabaseConnection
    metadata: sqlalchemy.MetaData
    Account: Any


def define(url: str, **options: Any) -> Bank:
    database = ormar.DatabaseConnection(url, **options)
    metadata = sqlalchemy.MetaData()

    class Account(ormar.Model):
        ormar_config = ormar.OrmarConfig(database=database, metadata=metadata, tablename=TABLE)
        id: str = ormar.String(primary_key=True, max_length=40)
        balance: int = ormar.Integer(default=0)

    return Bank(database, metadata, Account)


@pytest.fixture
async def bank(db_url: str) -> AsyncIterator[Bank]:
    bank = define(db_url)
    await bank.database.connect()
    await recreate_tables(bank.database.engine, bank.metadata)
    try:
        yield bank
    finally:
        await drop_tables(bank.database.engine, bank.metadata)
        await bank.database.disconnect()


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["ormar"]) as cap:
        yield cap


def events(cap: Capture) -> list[dict[str, Any]]:
    return events_of(cap, TABLE)


def outcomes(cap: Capture) -> dict[str, list[str]]:
    return outcomes_of(cap, TABLE)


async def stored(bank: Bank) -> set[str]:
    return {account.id for account in await bank.Account.objects.all()}


async def test_a_write_in_a_committed_transaction_is_audited_at_the_commit(bank: Bank, cap: Capture) -> None:
    async with bank.database.transaction():
        account = await bank.Account(id="a1", balance=1).save()
        await account.update(balance=2)
        # The spans are not delayed; the audit events and the counter wait for the commit.
        save, update = cap.span(SAVE), cap.span(f"update {TABLE}")
        assert events(cap) == []
        assert counted(cap, "ok") == 0
    assert outcomes(cap) == {"a1": ["ok", "ok"]}
    assert [e["operation"] for e in cap.audit_for(save)] == ["save"]
    assert [e["operation"] for e in cap.audit_for(update)] == ["update"]
    assert counted(cap, "ok") == 2
    assert await stored(bank) == {"a1"}
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_a_rolled_back_transaction_audits_rolled_back_and_never_ok(bank: Bank, cap: Capture) -> None:
    await bank.Account(id="kept").save()
    cap.clear()
    ok_before = counted(cap, "ok")  # 0: clear() resets the counters too
    with pytest.raises(RollbackError):
        async with bank.database.transaction():
            await bank.Account(id="r1").save()
            kept = await bank.Account.objects.get(id="kept")
            await kept.update(balance=9)
            await kept.delete()
            assert events(cap) == []
            raise RollbackError
    assert outcomes(cap) == {"r1": ["rolled_back"], "kept": ["rolled_back", "rolled_back"]}
    for name in (SAVE, f"update {TABLE}", f"delete {TABLE}"):
        (event,) = cap.audit_for(cap.span(name))  # the same trace_id/span_id as the span
        assert event["outcome"] == "rolled_back"
    assert counted(cap, "rolled_back") == 3 and counted(cap, "ok") == ok_before == 0
    assert await stored(bank) == {"kept"}
    assert (await bank.Account.objects.get(id="kept")).balance == 0


async def test_force_rollback_transaction_of_the_application_is_rolled_back(bank: Bank, cap: Capture) -> None:
    # database.transaction(force_rollback=True): ormar always rolls it back.
    async with bank.database.transaction(force_rollback=True):
        await bank.Account(id="never").save()
    assert outcomes(cap) == {"never": ["rolled_back"]}
    assert await stored(bank) == set()


async def test_a_rolled_back_savepoint_inside_a_committed_transaction(bank: Bank, cap: Capture) -> None:
    async with bank.database.transaction():
        await bank.Account(id="outer").save()
        with pytest.raises(RollbackError):
            async with bank.database.transaction():
                await bank.Account(id="inner").save()
                raise RollbackError
        async with bank.database.transaction():
            await bank.Account(id="released").save()  # a savepoint released: joins the outer transaction
        assert "outer" not in outcomes(cap) and "released" not in outcomes(cap)
    assert outcomes(cap) == {"outer": ["ok"], "inner": ["rolled_back"], "released": ["ok"]}
    assert await stored(bank) == {"outer", "released"}


async def test_a_released_savepoint_of_a_rolled_back_transaction_is_rolled_back(bank: Bank, cap: Capture) -> None:
    with pytest.raises(RollbackError):
        async with bank.database.transaction():
            async with bank.database.transaction():
                await bank.Account(id="released").save()
            raise RollbackError
    assert outcomes(cap) == {"released": ["rolled_back"]}
    assert await stored(bank) == set()


async def test_autocommit_writes_are_audited_when_they_return(bank: Bank, cap: Capture) -> None:
    account = await bank.Account(id="auto").save()
    assert outcomes(cap) == {"auto": ["ok"]}
    await account.update(balance=4)
    assert outcomes(cap) == {"auto": ["ok", "ok"]}
    await bank.Account.objects.filter(id="auto").update(balance=5)
    assert [e["operation"] for e in events(cap)] == ["save", "update", "update"]
    await account.delete()
    assert [e["outcome"] for e in events(cap)] == ["ok"] * 4


async def test_a_hundred_concurrent_transactions_half_rolled_back(bank: Bank, cap: Capture) -> None:
    """Each task in its own transaction (its own connection): every event matches what the table holds."""
    failures: dict[str, BaseException] = {}

    async def transfer(i: int) -> None:
        try:
            async with bank.database.transaction():
                account = await bank.Account(id=f"c{i:03}", balance=i).save()
                await asyncio.sleep(0)  # let the others interleave inside their transactions
                await account.update(balance=i + 1)
                if i % 2:
                    raise RollbackError
        except RollbackError:
            pass
        except Exception as exc:  # noqa: BLE001 - a database refusing a concurrent write is counted below
            failures[f"c{i:03}"] = exc

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
    assert len(failures) < 10, failures
    assert rows == {f"c{i:03}" for i in range(0, 100, 2)} - set(failures)
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_force_rollback_database_reports_top_level_writes_as_they_return(bank: Bank, db_url: str) -> None:
    """A test database (``force_rollback=True``): its whole-run transaction is not reported as one.

    Top-level writes are audited when they return, transactions inside it as usual, and the
    rollback at disconnect adds nothing: a user's test sees what production would report.
    """
    test_db = define(db_url, force_rollback=True)
    with capture(sources=["ormar"]) as cap:
        await test_db.database.connect()
        try:
            await test_db.Account(id="top").save()
            assert outcomes(cap) == {"top": ["ok"]}
            async with test_db.database.transaction():
                await test_db.Account(id="committed").save()
                assert "committed" not in outcomes(cap)
            with pytest.raises(RollbackError):
                async with test_db.database.transaction():
                    await test_db.Account(id="rolled").save()
                    raise RollbackError
            assert outcomes(cap) == {"top": ["ok"], "committed": ["ok"], "rolled": ["rolled_back"]}
            assert {a.id for a in await test_db.Account.objects.all()} == {"top", "committed"}
        finally:
            await test_db.database.disconnect()
        assert outcomes(cap) == {"top": ["ok"], "committed": ["ok"], "rolled": ["rolled_back"]}
        assert cap.installation is not None and cap.installation.in_flight() == 0
    assert await stored(bank) == set()  # the database kept nothing of the test run, as force_rollback promises


async def test_a_transaction_that_never_ends_is_reported_unknown_after_orphan_timeout(bank: Bank) -> None:
    """Held writes are bounded: a transaction left open (a lost connection, a forgotten commit)."""
    with capture(sources=["ormar"], orphan_timeout=HELD_TIMEOUT) as cap:
        transaction = bank.database.transaction()
        await transaction.__aenter__()
        try:
            await bank.Account(id="lost").save()
            assert events(cap) == []  # held for the transaction
            reap_past_timeout(cap)
            (event,) = events(cap)
            assert event["outcome"] == "unknown" and event["orphan_reason"] == "transaction_timeout"
        finally:
            await transaction.__aexit__(None, None, None)  # commits: reported once, already
        assert outcomes(cap) == {"lost": ["unknown"]}
        assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_a_task_gathered_inside_a_transaction_shares_its_connection(bank: Bank, cap: Capture) -> None:
    """ormar's child tasks copy the caller's context, and with it the transaction's connection."""
    with pytest.raises(RollbackError):
        async with bank.database.transaction():
            await asyncio.gather(bank.Account(id="child").save())
            await bank.Account(id="parent").save()
            raise RollbackError
    assert outcomes(cap) == {"child": ["rolled_back"], "parent": ["rolled_back"]}
    assert await stored(bank) == set()


async def test_a_commit_the_database_refuses_is_rolled_back(bank: Bank, cap: Capture, db_url: str) -> None:
    """A deferred foreign key fails at COMMIT: the database kept nothing, and says so (no lost connection)."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite keeps a transaction open after a COMMIT refused by a deferred foreign key")
    parent = bank.Account.ormar_config.tablename
    async with bank.database.engine.begin() as conn:
        await conn.exec_driver_sql("DROP TABLE IF EXISTS tx_ormar_transfers")
        await conn.exec_driver_sql(
            "CREATE TABLE tx_ormar_transfers (id INTEGER PRIMARY KEY, account VARCHAR(40) "
            f"REFERENCES {parent} (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    class Transfer(ormar.Model):
        ormar_config = bank.Account.ormar_config.copy(tablename="tx_ormar_transfers")
        id: int = ormar.Integer(primary_key=True, autoincrement=False)
        account: str = ormar.String(max_length=40)

    try:
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            async with bank.database.transaction():
                await Transfer(id=1, account="nobody").save()  # checked only at COMMIT
                assert cap.spans_named("save tx_ormar_transfers") and events(cap) == []
        (event,) = (e for e in cap.audit_events if e["collection"] == "tx_ormar_transfers")
        assert event["outcome"] == "rolled_back"
        assert await Transfer.objects.count() == 0
    finally:
        async with bank.database.engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE tx_ormar_transfers")


async def test_spans_only_mirrors_no_transaction(bank: Bank) -> None:
    """Without the audit log and metrics nothing waits for a commit (``Engine.holds_writes``): ormar's
    ``Transaction`` stays unpatched; the write's span ends with the call as always."""
    from ormar.databases.transaction import Transaction

    with spans_only("ormar", Transaction, "__aenter__", "__aexit__") as cap:
        with pytest.raises(RollbackError):
            async with bank.database.transaction():
                await bank.Account(id="s1", balance=1).save()
                raise RollbackError
        assert cap.span(SAVE).status.is_ok
    assert await stored(bank) == set()
