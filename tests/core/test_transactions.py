"""Held writes: the audit outcome and count of a write wait for its transaction (sigtrace/core/transactions.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.operation import Operation
from sigtrace.core.transactions import Transaction, TransactionStack
from sigtrace.testing import Capture, capture


def engine_of(cap: Capture) -> Any:
    assert cap.installation is not None
    return cap.installation.engine


def write(cap: Capture, pk: str, txn: Transaction | None, *, error: BaseException | None = None) -> Operation:
    """One write through the engine, as a source reports it: begin at the pre signal, end at the post."""
    engine = engine_of(cap)
    op = Operation("test", "save", model="Order", collection="orders", pk=pk)
    op.transaction = txn
    started = engine.begin(op, ("save", pk))
    assert started is op
    engine.end(("save", pk), error=error)
    return op


def outcomes(cap: Capture) -> dict[str, str]:
    return {str(event["pk"]): str(event["outcome"]) for event in cap.audit_events}


def operations_counted(cap: Capture, outcome: str) -> float:
    return cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome=outcome)


# --- Transaction and TransactionStack alone ---


def test_outermost_commit_reports_ok_and_rollback_rolled_back() -> None:
    seen: list[tuple[str, str]] = []
    committed, rolled = Transaction(), Transaction()
    assert committed.hold(lambda outcome: seen.append(("a", outcome)))
    assert rolled.hold(lambda outcome: seen.append(("b", outcome)))
    committed.commit()
    rolled.rollback()
    assert seen == [("a", "ok"), ("b", "rolled_back")]
    assert committed.closed and rolled.closed
    assert not committed.hold(lambda outcome: seen.append(("late", outcome)))  # closed: nothing kept
    assert seen == [("a", "ok"), ("b", "rolled_back")]


def test_released_savepoint_shares_its_parents_fate() -> None:
    seen: list[str] = []
    outer = Transaction()
    inner = outer.savepoint()
    inner.hold(seen.append)
    inner.commit()
    assert seen == []  # released: not yet known
    outer.rollback()
    assert seen == ["rolled_back"]


def test_rolled_back_savepoint_inside_committed_transaction() -> None:
    seen: list[tuple[str, str]] = []
    stack = TransactionStack()
    outer = stack.begin()
    outer.hold(lambda o: seen.append(("outer", o)))
    inner = stack.begin()
    assert inner.parent is outer and stack.current is inner
    inner.hold(lambda o: seen.append(("inner", o)))
    stack.rollback()
    assert stack.current is outer
    stack.commit()
    assert stack.current is None and len(stack) == 0
    assert seen == [("inner", "rolled_back"), ("outer", "ok")]


def test_releasing_an_outer_savepoint_releases_the_inner_ones() -> None:
    seen: list[str] = []
    stack = TransactionStack()
    stack.begin()
    middle = stack.begin()
    stack.begin().hold(seen.append)
    stack.commit(middle)  # RELEASE SAVEPOINT of the middle one releases the newer one too
    assert len(stack) == 1
    stack.rollback()
    assert seen == ["rolled_back"]


def test_rolling_back_to_an_outer_savepoint_rolls_back_the_inner_ones() -> None:
    seen: list[str] = []
    stack = TransactionStack()
    outer = stack.begin()
    middle = stack.begin()
    stack.begin().hold(seen.append)
    stack.rollback(middle)
    assert stack.current is outer
    assert seen == ["rolled_back"]


def test_closed_connection_reports_unknown() -> None:
    seen: list[str] = []
    stack = TransactionStack()
    stack.begin().hold(seen.append)
    stack.begin().hold(seen.append)
    stack.close()
    assert seen == ["unknown", "unknown"]
    assert stack.current is None


def test_a_raising_resolver_keeps_the_others() -> None:
    seen: list[str] = []
    txn = Transaction()

    def broken(_outcome: str) -> None:
        raise RuntimeError("boom")

    txn.hold(broken)
    txn.hold(seen.append)
    before = safety.error_counts().get("transaction.resolve", 0)
    with safety.strict(False):
        txn.commit()
    assert seen == ["ok"]
    assert safety.error_counts().get("transaction.resolve", 0) == before + 1


# --- through the engine ---


def test_write_in_a_transaction_is_audited_at_commit_not_before() -> None:
    with capture(sources=["blinker"]) as cap:
        txn = Transaction()
        write(cap, "1", txn)
        assert len(cap.spans) == 1  # the span is not delayed
        assert cap.span("save orders").status.is_ok
        assert cap.audit_events == []
        assert operations_counted(cap, "ok") == 0
        txn.commit()
        assert outcomes(cap) == {"1": "ok"}
        assert operations_counted(cap, "ok") == 1
        event = cap.audit_events[0]
        span = cap.span("save orders")
        assert event["span_id"] == format(span.context.span_id, "016x")


def test_rolled_back_write_is_audited_rolled_back_with_its_trace_ids_and_counted() -> None:
    with capture(sources=["blinker"]) as cap:
        txn = Transaction()
        write(cap, "1", txn)
        txn.rollback()
        assert outcomes(cap) == {"1": "rolled_back"}
        span = cap.span("save orders")
        assert cap.audit_for(span) == cap.audit_events
        assert operations_counted(cap, "rolled_back") == 1
        assert operations_counted(cap, "ok") == 0
        # The duration was recorded when the write ended, once.
        points = cap.metric_points(semconv.METRIC_DURATION)
        assert sum(p.value for p in points) == 1


def test_savepoint_rolled_back_inside_committed_transaction_through_the_engine() -> None:
    with capture(sources=["blinker"]) as cap:
        stack = TransactionStack()
        stack.begin()
        write(cap, "outer", stack.current)
        stack.begin()
        write(cap, "inner", stack.current)
        stack.rollback()
        write(cap, "after", stack.current)
        stack.commit()
        assert outcomes(cap) == {"outer": "ok", "inner": "rolled_back", "after": "ok"}
        # Delivered in the order the database decided: the rollback first, then the commit.
        assert [e["pk"] for e in cap.audit_events] == ["inner", "outer", "after"]


def test_autocommit_and_failed_writes_are_reported_at_once() -> None:
    with capture(sources=["blinker"]) as cap:
        write(cap, "auto", None)
        txn = Transaction()
        write(cap, "failed", txn, error=ValueError("integrity"))
        assert outcomes(cap) == {"auto": "ok", "failed": "error"}
        txn.rollback()
        assert outcomes(cap) == {"auto": "ok", "failed": "error"}  # an error is not reported twice


def test_write_ending_after_its_transaction_shares_how_it_ended() -> None:
    with capture(sources=["blinker"]) as cap:
        committed, rolled = Transaction(), Transaction()
        committed.commit()
        rolled.rollback()
        write(cap, "committed", committed)
        write(cap, "rolled", rolled)
        outer = Transaction()
        released = outer.savepoint()
        released.commit()
        write(cap, "released", released)  # joins the parent, still open
        assert outcomes(cap) == {"committed": "ok", "rolled": "rolled_back"}
        outer.rollback()
        assert outcomes(cap) == {"committed": "ok", "rolled": "rolled_back", "released": "rolled_back"}


def test_a_transaction_ends_once() -> None:
    seen: list[str] = []
    txn = Transaction()
    txn.hold(seen.append)
    txn.rollback()
    txn.commit()
    assert seen == ["rolled_back"] and txn.outcome == "rolled_back"


def test_held_writes_count_as_in_flight_and_time_out_unknown() -> None:
    with capture(sources=["blinker"], orphan_timeout=0.2) as cap:
        engine = engine_of(cap)
        txn = Transaction()
        write(cap, "1", txn)
        assert cap.installation is not None and cap.installation.in_flight() == 1
        assert cap.metric_total(semconv.METRIC_IN_FLIGHT) == 0  # the operation itself ended
        deadline = time.monotonic() + 5.0
        while not cap.audit_events and time.monotonic() < deadline:
            time.sleep(0.05)
        [event] = cap.audit_events
        assert event["outcome"] == "unknown"
        assert event["orphaned"] is True and event["orphan_reason"] == "transaction_timeout"
        assert list(event)[-1] == "event"
        assert len(engine.table) == 0
        txn.commit()  # too late: reported once, as unknown
        assert len(cap.audit_events) == 1
        assert cap.metric_total(semconv.METRIC_ORPHANS, sigtrace__orphan__reason="transaction_timeout") == 1


def test_uninstall_reports_held_writes_unknown() -> None:
    with capture(sources=["blinker"]) as cap:
        txn = Transaction()
        write(cap, "1", txn)
    assert outcomes(cap) == {"1": "unknown"}
    assert cap.audit_events[0]["orphan_reason"] == "uninstall"


def test_batch_items_are_held_and_resolved_together() -> None:
    with capture(sources=["blinker"]) as cap:
        engine = engine_of(cap)
        txn = Transaction()
        op = Operation("test", "bulk_create", model="Order", collection="orders")
        op.audit_items = [{"pk": "a"}, {"pk": "b"}]
        op.transaction = txn
        engine.begin(op, "bulk")
        engine.end("bulk")
        assert cap.audit_events == []
        txn.rollback()
        assert outcomes(cap) == {"a": "rolled_back", "b": "rolled_back"}


@pytest.mark.parametrize("threads", [8])
def test_concurrent_transactions_resolve_each_write_once(threads: int) -> None:
    per_thread = 200
    with capture(sources=["blinker"]) as cap:

        def run(t: int) -> None:
            for i in range(per_thread):
                txn = Transaction()
                write(cap, f"{t}-{i}", txn)
                txn.commit() if i % 2 else txn.rollback()

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        seen = outcomes(cap)
        assert len(cap.audit_events) == threads * per_thread
        for key, outcome in seen.items():
            i = int(key.split("-")[1])
            assert outcome == ("ok" if i % 2 else "rolled_back")
        assert operations_counted(cap, "ok") == threads * per_thread / 2
        assert operations_counted(cap, "rolled_back") == threads * per_thread / 2
