"""Flushes, their batches and audit events, ORM statements, bulk writes and transactions, on SQLite and PostgreSQL.

Every test runs on both back ends (``engine`` is parametrized; PostgreSQL skips when the server is absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from sqlalchemy import event, orm
from sqlalchemy.exc import IntegrityError

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.sqlalchemy.models import Customer, Line, Order, Stock, audit_by


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["sqlalchemy"]) as cap:
        yield cap


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def flush_spans(cap: Capture) -> list[ReadableSpan]:
    return [s for s in cap.spans if s.name == "flush" or s.name.startswith("flush ")]


def seed(engine: sa.Engine) -> None:
    with orm.Session(engine) as session:
        alice = Customer(id=1, name="alice")
        alice.orders = [Order(id=10, total=5, lines=[Line(id=100, sku="tea"), Line(id=101, sku="cup")])]
        session.add_all([alice, Customer(id=2, name="bob")])
        session.commit()


def test_unit_of_work_mixed_writes_across_three_models(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        alice = session.get(Customer, 1)
        bob = session.get(Customer, 2)
        assert alice is not None and bob is not None
        order = alice.orders[0]
        assert order.lines and bob.orders == []  # (loaded now: no autoflush in the middle of the changes)
        order.total = 7  # update
        session.delete(order.lines[1])  # delete
        bob.orders.append(Order(id=11, total=3, lines=[Line(id=102, sku="pot", quantity=2)]))  # inserts
        session.add(Customer(id=3, name="carol"))
        session.commit()

    (flush,) = flush_spans(cap)
    assert flush.status.status_code == StatusCode.UNSET
    batches = {s.name: s for s in cap.spans if parent_of(s) == span_id(flush)}
    assert set(batches) == {
        "insert sa_customers",
        "insert sa_orders",
        "insert sa_lines",
        "update sa_orders",
        "delete sa_lines",
    }
    assert attrs(batches["insert sa_customers"])[semconv.SIGTRACE_ROWS_AFFECTED] == 1
    assert attrs(batches["update sa_orders"])[semconv.SIGTRACE_PK] == "10"
    events = cap.audit_events
    assert all(e["outcome"] == semconv.OUTCOME_OK for e in events)
    assert {(e["operation"], e["model"], e["collection"], e["pk"]) for e in events} == {
        ("insert", "Customer", "sa_customers", "3"),
        ("insert", "Order", "sa_orders", "11"),
        ("insert", "Line", "sa_lines", "102"),
        ("update", "Order", "sa_orders", "10"),
        ("delete", "Line", "sa_lines", "101"),
    }
    (update,) = audit_by(events, "update", "Order")
    assert update["changed_fields"] == ["total"]
    assert "values" not in update  # capture_values is off
    (inserted,) = audit_by(events, "insert", "Order")
    assert inserted["changed_fields"] == ["customer_id", "id", "total"]
    # Each object's event carries its batch span's ids.
    assert update["span_id"] == format(span_id(batches["update sa_orders"]), "016x")
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_values_are_old_and_new_from_history_and_redacted(engine: sa.Engine) -> None:
    seed(engine)
    with capture(sources=["sqlalchemy"], capture_values=True) as cap:
        with orm.Session(engine) as session:
            alice = session.get(Customer, 1)
            assert alice is not None
            alice.name = "alicia"
            alice.api_token = "s3cret"
            session.commit()
        (event,) = cap.audit_events
        assert event["changed_fields"] == ["api_token", "name"]
        assert event["values"]["name"] == ["alice", "alicia"]
        assert "s3cret" not in str(event)  # token-like keys are masked, whole


def test_dirty_without_a_net_change_is_not_written_nor_reported(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        alice = session.get(Customer, 1)
        assert alice is not None
        alice.name = "alice"  # the same value: dirty, no UPDATE
        session.commit()
    assert cap.audit_events == []
    assert not [s for s in cap.spans if s.name.startswith("update")]


def test_merge_updates_the_persistent_row(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        session.merge(Customer(id=2, name="robert"))
        session.merge(Customer(id=4, name="dave"))
        session.commit()
    ops = sorted((e["operation"], e["pk"], tuple(e.get("changed_fields") or ())) for e in cap.audit_events)
    assert ops == [("insert", "4", ("id", "name")), ("update", "2", ("name",))]


def test_cascade_deletes_are_each_audited(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        alice = session.get(Customer, 1)
        session.delete(alice)  # its order and the order's lines go with it (loaded by the unit of work)
        session.commit()
    assert sorted((e["operation"], e["model"], e["pk"]) for e in cap.audit_events) == [
        ("delete", "Customer", "1"),
        ("delete", "Line", "100"),
        ("delete", "Line", "101"),
        ("delete", "Order", "10"),
    ]
    (lines,) = cap.spans_named("delete sa_lines")
    assert attrs(lines)[semconv.SIGTRACE_ROWS_AFFECTED] == 2


def test_bulk_save_objects_and_insert_values(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        session.bulk_save_objects([Customer(id=20 + i, name=f"bulk-{i}") for i in range(3)])
        session.execute(sa.insert(Line).values([{"id": 200 + i, "sku": f"s{i}", "order_id": 10} for i in range(4)]))
        session.execute(sa.insert(Line), [{"id": 300 + i, "sku": f"m{i}", "order_id": 10} for i in range(2)])
        session.commit()
    bulk = cap.span("insert sa_customers")
    assert attrs(bulk)[semconv.SIGTRACE_ROWS_AFFECTED] == 3
    (bulk_event,) = audit_by(cap.audit_events, "insert", "Customer")
    assert bulk_event["rows"] == 3 and bulk_event["pks"] == ["20", "21", "22"]
    inserts = cap.spans_named("insert sa_lines")
    assert len(inserts) == 2
    line_events = audit_by(cap.audit_events, "insert", "Line")
    assert sorted(e.get("rows", -1) for e in line_events)[-1] == 4
    assert all(e["outcome"] == semconv.OUTCOME_OK for e in cap.audit_events)
    with orm.Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Line)) == 8


def test_a_composite_pk_is_its_parts_joined_by_a_bar(engine: sa.Engine, cap: Capture) -> None:
    with orm.Session(engine) as session:
        stock = Stock(warehouse="w1", sku="tea", quantity=3)
        session.add(stock)
        session.flush()  # pending: the pk from the attributes it holds
        stock.quantity = 4
        session.flush()  # persistent: the pk from its identity
        session.bulk_insert_mappings(Stock, [{"warehouse": "w2", "sku": f"s{i}"} for i in range(2)])
        session.commit()
    assert [(e["operation"], e.get("pk"), e.get("pks")) for e in cap.audit_events] == [
        ("insert", "w1|tea", None),
        ("update", "w1|tea", None),
        ("insert", None, ["w2|s0", "w2|s1"]),
    ]
    assert attrs(cap.span("update sa_stock"))[semconv.SIGTRACE_PK] == "w1|tea"


@pytest.mark.parametrize("mode", ["auto", "evaluate", "fetch", False])
def test_orm_update_with_each_synchronize_session_mode(engine: sa.Engine, cap: Capture, mode: Any) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        order = session.get(Order, 10)
        assert order is not None
        result = session.execute(
            sa.update(Order).where(Order.total > 3).values(status="paid"),
            execution_options={"synchronize_session": mode},
        )
        assert result.rowcount == 1  # the application's result, as without sigtrace
        if mode in ("auto", "evaluate", "fetch"):
            assert order.status == "paid"  # synchronized in the session as SQLAlchemy does
        deleted = session.query(Line).filter(Line.sku == "cup").delete(synchronize_session=mode)
        assert deleted == 1
        session.commit()
    span = cap.span("update sa_orders")
    assert attrs(span)[semconv.SIGTRACE_ROWS_AFFECTED] == 1
    (update,) = audit_by(cap.audit_events, "update", "Order")
    assert update["rows"] == 1 and update["outcome"] == semconv.OUTCOME_OK
    assert update["filter"].startswith("sa_orders.total >") and "3" not in update["filter"]  # no bound value
    (delete,) = audit_by(cap.audit_events, "delete", "Line")
    assert delete["rows"] == 1 and "cup" not in delete["filter"]


def test_a_rolled_back_session(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        session.add(Customer(id=5, name="eve"))
        session.flush()
        session.execute(sa.update(Order).values(total=0))
        assert cap.audit_events == []  # held until the transaction ends
        session.rollback()
    outcomes = sorted((e["operation"], e["outcome"]) for e in cap.audit_events)
    assert outcomes == [("insert", semconv.OUTCOME_ROLLED_BACK), ("update", semconv.OUTCOME_ROLLED_BACK)]
    # The spans are not delayed and say the writes ran.
    assert cap.span("insert sa_customers").status.status_code == StatusCode.UNSET
    assert cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome=semconv.OUTCOME_ROLLED_BACK) == 2


def test_closed_without_commit_is_rolled_back(engine: sa.Engine, cap: Capture) -> None:
    session = orm.Session(engine)
    session.add(Customer(id=6, name="frank"))
    session.flush()
    session.close()  # the connection's transaction is discarded
    assert [e["outcome"] for e in cap.audit_events] == [semconv.OUTCOME_ROLLED_BACK]


def test_a_savepoint_rolled_back_inside_a_committed_transaction(engine: sa.Engine, cap: Capture) -> None:
    with orm.Session(engine) as session:
        session.add(Customer(id=7, name="kept"))
        session.flush()
        savepoint = session.begin_nested()
        session.add(Customer(id=8, name="discarded"))
        session.flush()
        savepoint.rollback()
        with session.begin_nested():  # released: its write shares the outer transaction's fate
            session.add(Customer(id=9, name="released"))
        session.commit()
    assert sorted((e["pk"], e["outcome"]) for e in cap.audit_events) == [
        ("7", semconv.OUTCOME_OK),
        ("8", semconv.OUTCOME_ROLLED_BACK),
        ("9", semconv.OUTCOME_OK),
    ]
    with orm.Session(engine) as session:
        assert sorted(session.scalars(sa.select(Customer.id))) == [7, 9]


def test_integrity_error_fails_the_flush_at_once_and_the_rollback_is_seen(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        session.add(Customer(id=12, name="ok-before"))
        session.flush()
        session.add(Customer(id=13, name="alice"))  # unique name taken
        with pytest.raises(IntegrityError):
            session.flush()
        failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
        assert (
            sorted(s.name for s in failed) == ["flush", "insert sa_customers"]
            or sorted(s.name for s in failed) == ["flush test", "insert sa_customers"]
            or sorted(s.name for s in failed)
            == [
                "flush sigtrace_sqlalchemy",
                "insert sa_customers",
            ]
        )
        assert all(attrs(s)[semconv.ERROR_TYPE] == "IntegrityError" for s in failed)
        session.rollback()
    by_pk = {e.get("pk"): e["outcome"] for e in cap.audit_events}
    # The earlier flush of the same transaction was rolled back with it.
    assert by_pk["12"] == semconv.OUTCOME_ROLLED_BACK
    errors = [e for e in cap.audit_events if e["outcome"] == semconv.OUTCOME_ERROR]
    assert len(errors) == 1 and errors[0]["error_type"] == "IntegrityError"
    assert cap.installation is not None and cap.installation.in_flight() == 0


class ListenerError(Exception):
    pass


@pytest.mark.parametrize("where", ["before_flush", "before_insert", "after_insert"])
def test_a_user_listener_raising_fails_the_flush(engine: sa.Engine, cap: Capture, where: str) -> None:
    def boom(*_args: Any) -> None:
        raise ListenerError(where)

    target: Any = orm.Session if where == "before_flush" else Customer
    event.listen(target, where, boom)
    try:
        with orm.Session(engine) as session:
            session.add(Customer(id=14, name="listener"))
            with pytest.raises(ListenerError):
                session.flush()
            session.rollback()
    finally:
        event.remove(target, where, boom)
    failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
    assert failed and all(attrs(s)[semconv.ERROR_TYPE] == "ListenerError" for s in failed)
    assert any(s in flush_spans(cap) for s in failed)
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_driver_spans_nest_under_the_flush(engine: sa.Engine) -> None:
    instrumentation = pytest.importorskip(
        "opentelemetry.instrumentation.sqlalchemy",
        reason="opentelemetry-instrumentation-sqlalchemy is not installed (it declares SQLAlchemy <2.1)",
    )
    with capture(sources=["sqlalchemy"]) as cap:
        instrumentor = instrumentation.SQLAlchemyInstrumentor()
        instrumentor.instrument(engine=engine, tracer_provider=cap.tracer_provider)
        try:
            with orm.Session(engine) as session:
                session.add(Customer(id=15, name="nested", orders=[Order(id=15, total=1)]))
                session.commit()
        finally:
            instrumentor.uninstrument()
        (flush,) = flush_spans(cap)
        sql = [s for s in cap.spans if s.name.startswith("INSERT")]
        assert len(sql) == 2, [s.name for s in cap.spans]
        assert all(parent_of(s) == span_id(flush) for s in sql)
        assert {s.name for s in cap.spans if parent_of(s) == span_id(flush)} >= {"insert sa_customers"}


def test_no_extra_sql_and_no_lazy_load(engine: sa.Engine) -> None:
    seed(engine)
    totals = iter((99, 98))

    def statements(traced: bool) -> list[str]:
        seen: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.append(statement.split()[0])

        event.listen(engine, "before_cursor_execute", record)
        try:
            traced_or_not = capture(sources=["sqlalchemy"], capture_values=True) if traced else _nothing()
            with traced_or_not, orm.Session(engine) as session:
                order = session.get(Order, 10)
                assert order is not None
                session.expire(order, ["status"])  # an expired attribute: never loaded by sigtrace
                order.total = next(totals)
                session.delete(session.get(Line, 100))
                session.commit()
                session.execute(sa.update(Order).values(total=1))
                session.rollback()
        finally:
            event.remove(engine, "before_cursor_execute", record)
        return seen

    without = statements(traced=False)
    seed_back(engine)
    assert statements(traced=True) == without


def seed_back(engine: sa.Engine) -> None:
    with orm.Session(engine) as session:
        session.merge(Line(id=100, sku="tea", order_id=10))
        session.commit()


class _nothing:  # noqa: N801 - a context manager that does nothing, as a value
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        return None


def test_identity_not_equality(engine: sa.Engine, cap: Capture) -> None:
    seed(engine)
    cap.clear()
    with orm.Session(engine) as session:
        one, two = Order(id=40, total=1, customer_id=2), Order(id=41, total=1, customer_id=2)
        assert one == two  # the model compares by value
        session.add_all([one, two])
        session.commit()
    assert sorted(e["pk"] for e in cap.audit_events) == ["40", "41"]


def test_excluding_models_and_operations(engine: sa.Engine) -> None:
    seed(engine)
    with capture(sources=["sqlalchemy"], exclude=["model:Line", "operation:delete"]) as cap:
        with orm.Session(engine) as session:
            order = session.get(Order, 10)
            assert order is not None
            order.lines.append(Line(id=103, sku="spoon"))
            order.total = 8
            session.delete(session.get(Customer, 2))
            session.commit()
        assert [(e["operation"], e["model"]) for e in cap.audit_events] == [("update", "Order")]
        assert not [s for s in cap.spans if "sa_lines" in s.name or s.name.startswith("delete")]


def test_excluding_the_flush_keeps_its_batches(engine: sa.Engine) -> None:
    with capture(sources=["sqlalchemy"], exclude=["operation:flush"]) as cap, orm.Session(engine) as session:
        session.add(Customer(id=32, name="no-flush-span"))
        session.commit()
        assert not flush_spans(cap)
        assert cap.span("insert sa_customers").parent is None
        assert [e["outcome"] for e in cap.audit_events] == [semconv.OUTCOME_OK]


def test_suppress_instrumentation(engine: sa.Engine, cap: Capture) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation(), orm.Session(engine) as session:
        session.add(Customer(id=30, name="quiet"))
        session.commit()
        session.execute(sa.update(Customer).values(name="still-quiet"))
        session.commit()
    assert cap.spans == ()
    assert cap.audit_events == []


def test_actor_is_recorded(engine: sa.Engine, cap: Capture) -> None:
    import sigtrace

    with sigtrace.actor("alice"), orm.Session(engine) as session:
        session.add(Customer(id=31, name="acted"))
        session.commit()
    assert [e["actor"] for e in cap.audit_events] == ["alice"]


def test_a_one_object_batch_is_one_event_in_the_common_field_order(engine: sa.Engine) -> None:
    # A batch of one object takes the path of every source's event (its pk, fields and values are the
    # operation's); a batch of two is one event per object. Both carry the same fields, in the same order.
    seed(engine)
    with capture(sources=["sqlalchemy"], capture_values=True) as cap:
        with orm.Session(engine) as session:
            alice = session.get(Customer, 1)
            assert alice is not None
            alice.name = "alicia"
            session.commit()
        (single,) = cap.audit_events
        cap.clear()
        with orm.Session(engine) as session:
            customers = [session.get(Customer, 1), session.get(Customer, 2)]  # loaded first: no autoflush between
            for customer, name in zip(customers, ("alice", "robert"), strict=True):
                assert customer is not None
                customer.name = name
            session.commit()
        pair = sorted(cap.audit_events, key=lambda e: e["pk"])
    batches = [attrs(s) for s in cap.spans if s.name == "update sa_customers"]
    assert [b[semconv.SIGTRACE_ROWS_AFFECTED] for b in batches] == [2]
    assert batches[0][semconv.DB_OPERATION_BATCH_SIZE] == 2
    assert [e["pk"] for e in pair] == ["1", "2"]
    assert [e["values"]["name"] for e in pair] == [["alicia", "alice"], ["bob", "robert"]]
    assert single["pk"] == "1" and single["changed_fields"] == ["name"]
    assert single["values"] == {"name": ["alice", "alicia"]}
    order = list(single)
    assert order.index("duration_ms") < order.index("changed_fields") < order.index("span_id") < order.index("values")
    assert order[-1] == "event"
    assert set(pair[0]) == set(single)
