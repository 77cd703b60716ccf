"""Every kind of DynamoDB call PynamoDB makes, against the moto server: one span per API call."""

from __future__ import annotations

import json
import uuid

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from pynamodb.connection.base import Connection
from pynamodb.signals import post_dynamodb_send, pre_dynamodb_send
from pynamodb.transactions import TransactGet, TransactWrite

from sigtrace import semconv
from sigtrace.sinks.redaction import MASK
from sigtrace.testing import Capture, capture
from tests.sources.pynamodb.helpers import attrs, new_id, reset, signal_log
from tests.sources.pynamodb.models import REGION, Customer, Order

ORDERS = Order.Meta.table_name
CUSTOMERS = Customer.Meta.table_name


@pytest.fixture
def cap() -> Capture:
    with capture(sources=["pynamodb"]) as cap:
        yield cap


def test_put_item_span_attributes_audit_and_metrics(cap: Capture) -> None:
    key = new_id()
    with signal_log() as log:
        Order(key, 7, total=12).save()
    span = cap.span(f"PutItem {ORDERS}")
    a = attrs(span)
    assert span.kind == SpanKind.CLIENT
    assert a[semconv.DB_SYSTEM_NAME] == "aws.dynamodb"
    assert a[semconv.DB_OPERATION_NAME] == "PutItem"
    assert a[semconv.DB_COLLECTION_NAME] == ORDERS
    assert a[semconv.AWS_DYNAMODB_TABLE_NAMES] == (ORDERS,)
    assert (a[semconv.RPC_SYSTEM], a[semconv.RPC_SERVICE], a[semconv.RPC_METHOD]) == ("aws-api", "DynamoDB", "PutItem")
    assert a[semconv.SIGTRACE_MODEL] == "Order"
    assert a[semconv.SIGTRACE_PK] == f"{key}|7"
    assert a["cloud.region"] == REGION
    assert a["aws.request_id"]
    assert json.loads(a["aws.dynamodb.consumed_capacity"][0])["TableName"] == ORDERS
    # correlation id = the req_uuid PynamoDB sent with both signals
    ((_, _, req_uuid, _),) = log.pre
    assert [entry[2] for entry in log.post] == [req_uuid]
    assert a[semconv.SIGTRACE_CORRELATION_ID] == str(req_uuid)
    assert a[semconv.SIGTRACE_SIGNAL] == "post_dynamodb_send"
    (event,) = cap.audit_for(span)
    assert event["operation"] == "PutItem" and event["collection"] == ORDERS and event["model"] == "Order"
    assert event["pk"] == f"{key}|7"
    assert event["key"] == {"customer_id": key, "order_id": "7"}
    assert event["outcome"] == "ok"
    assert event["correlation_id"] == str(req_uuid)
    assert set(event["changed_fields"]) == {"customer_id", "order_id", "status", "total"}
    assert "values" not in event  # item values only with capture_values
    assert (
        cap.metric_total(semconv.METRIC_DURATION, db__system__name="aws.dynamodb", db__operation__name="PutItem") == 1
    )


def test_get_update_delete(cap: Capture) -> None:
    key = new_id()
    Order(key, 1).save()
    reset(cap)
    order = Order.get(key, 1)
    order.update(actions=[Order.status.set("paid"), Order.total.add(5)])
    order.delete()
    assert [s.name for s in cap.spans] == [f"GetItem {ORDERS}", f"UpdateItem {ORDERS}", f"DeleteItem {ORDERS}"]
    assert all(attrs(s)[semconv.SIGTRACE_PK] == f"{key}|1" for s in cap.spans)
    get, update, delete = cap.spans
    assert attrs(get)["aws.dynamodb.consistent_read"] is False
    # reads are not audited by default; writes are, once each
    assert [e["operation"] for e in cap.audit_events] == ["UpdateItem", "DeleteItem"]
    assert cap.audit_for(update)[0]["changed_fields"] == ["status", "total"]
    assert cap.audit_for(delete)[0]["key"] == {"customer_id": key, "order_id": "1"}


def test_reads_are_audited_with_audit_reads() -> None:
    key = new_id()
    Customer(key).save()
    with capture(sources=["pynamodb"], audit_reads=True) as cap:
        Customer.get(key)
        (event,) = cap.audit_events
        assert event["operation"] == "GetItem" and event["pk"] == key and event["outcome"] == "ok"


def test_query_and_scan_one_span_per_page(cap: Capture) -> None:
    key = new_id()
    with Order.batch_write() as batch:
        for number in range(5):
            batch.save(Order(key, number))
    reset(cap)
    with signal_log() as log:
        found = list(Order.query(key, page_size=2))
    assert len(found) == 5
    pages = cap.spans_named(f"Query {ORDERS}")
    assert len(pages) == len(log.pre) == len(log.post) == 3  # 2 + 2 + 1 items
    assert [attrs(p)["aws.dynamodb.count"] for p in pages] == [2, 2, 1]
    assert all(attrs(p)["aws.dynamodb.limit"] == 2 for p in pages)
    assert {attrs(p)[semconv.SIGTRACE_CORRELATION_ID] for p in pages} == {str(entry[2]) for entry in log.pre}
    reset(cap)
    scanned = list(Order.scan(Order.customer_id == key, page_size=50))
    assert len(scanned) == 5
    scans = cap.spans_named(f"Scan {ORDERS}")
    assert len(scans) >= 1
    assert sum(attrs(s)["aws.dynamodb.count"] for s in scans) == 5
    assert all("aws.dynamodb.scanned_count" in attrs(s) for s in scans)
    assert cap.audit_events == []  # reads


def test_batch_write_and_batch_get_name_their_tables(cap: Capture) -> None:
    key = new_id()
    Order(key, 1).save()
    reset(cap)
    with signal_log() as log:
        with Order.batch_write() as batch:
            batch.save(Order(key, 2))
            batch.delete(Order(key, 1))
        found = list(Order.batch_get([(key, 2)]))
    assert [o.order_id for o in found] == [2]
    # the signal carries no table name for these calls ...
    assert [(op, table) for op, table, _, _ in log.pre] == [("BatchWriteItem", None), ("BatchGetItem", None)]
    # ... the span names it from the request
    write = cap.span(f"BatchWriteItem {ORDERS}")
    get = cap.span(f"BatchGetItem {ORDERS}")
    for span in (write, get):
        assert attrs(span)[semconv.AWS_DYNAMODB_TABLE_NAMES] == (ORDERS,)
        assert attrs(span)[semconv.DB_COLLECTION_NAME] == ORDERS
    assert attrs(write)[semconv.DB_OPERATION_BATCH_SIZE] == 2
    (event,) = cap.audit_events
    assert event["operation"] == "BatchWriteItem" and event["table_names"] == [ORDERS]
    assert sorted((k["action"], k["pk"]) for k in event["items"]) == [("delete", f"{key}|1"), ("put", f"{key}|2")]
    assert "pk" not in event  # several items: see "items"


def test_batch_audit_lists_the_pks_as_every_source_does(cap: Capture) -> None:
    key = new_id()
    with Order.batch_write() as batch:
        for order_id in range(3):
            batch.save(Order(key, order_id))
    (event,) = cap.audit_events
    assert event["batch_size"] == 3
    assert sorted(event["pks"]) == [f"{key}|0", f"{key}|1", f"{key}|2"]
    assert sorted(item["pk"] for item in event["items"]) == sorted(event["pks"])
    assert "pks_truncated" not in event and "keys" not in event and "keys_omitted" not in event


def test_transactions_across_two_tables(cap: Capture) -> None:
    customer, order = new_id(), new_id()
    Customer(customer).save()
    reset(cap)
    connection = Order._get_connection().connection
    with TransactWrite(connection=connection) as transaction:
        transaction.save(Order(order, 1, total=3))
        transaction.update(Customer(customer), actions=[Customer.visits.add(1)])
    with TransactGet(connection=connection) as reader:
        fetched = reader.get(Order, order, 1)
    assert fetched.get().total == 3
    write = cap.span("TransactWriteItems")  # two tables: no single collection in the name
    a = attrs(write)
    assert set(a[semconv.AWS_DYNAMODB_TABLE_NAMES]) == {ORDERS, CUSTOMERS}
    assert semconv.DB_COLLECTION_NAME not in a
    assert a[semconv.DB_OPERATION_BATCH_SIZE] == 2
    get = cap.span(f"TransactGetItems {ORDERS}")
    assert attrs(get)[semconv.AWS_DYNAMODB_TABLE_NAMES] == (ORDERS,)
    (event,) = cap.audit_events
    assert event["operation"] == "TransactWriteItems"
    assert set(event["table_names"]) == {ORDERS, CUSTOMERS}
    assert {(k["table"], k["action"], k["pk"]) for k in event["items"]} == {
        (ORDERS, "put", f"{order}|1"),
        (CUSTOMERS, "update", customer),
    }


def test_table_calls_and_create_table_polls(cap: Capture) -> None:
    assert Customer.exists()
    Customer.describe_table()
    tables = Connection(region=REGION, host=Customer.Meta.host).list_tables()
    assert CUSTOMERS in tables["TableNames"]
    assert [s.name for s in cap.spans] == [f"DescribeTable {CUSTOMERS}", f"DescribeTable {CUSTOMERS}", "ListTables"]
    assert all(s.status.status_code == StatusCode.UNSET for s in cap.spans)
    assert cap.audit_events == []
    list_tables = cap.span("ListTables")
    assert semconv.SIGTRACE_MODEL not in attrs(list_tables)  # a Connection used directly has no model


def test_capture_values_goes_through_redaction() -> None:
    key = new_id()
    with capture(sources=["pynamodb"], capture_values=True) as cap:
        Customer(key, name="Ada", api_token="s3cr3t").save()
        Customer(key).update(actions=[Customer.name.set("Grace"), Customer.api_token.set("n3w")])
        put, update = cap.audit_events
    assert put["values"]["name"] == "Ada"
    assert put["values"]["api_token"] == MASK
    assert update["values"] == {"name": "Grace", "api_token": MASK}
    assert "s3cr3t" not in json.dumps(cap.audit_events) and "n3w" not in json.dumps(cap.audit_events)


def test_signals_alone_pair_by_req_uuid(cap: Capture) -> None:
    """A Connection subclass that bypasses dispatch still sends the pair: the receivers alone make the span."""
    connection = Customer._get_connection().connection
    req = uuid.uuid4()
    pre_dynamodb_send.send(connection, operation_name="GetItem", table_name=CUSTOMERS, req_uuid=req)
    assert cap.spans == ()
    assert cap.installation is not None and cap.installation.in_flight() == 1
    post_dynamodb_send.send(connection, operation_name="GetItem", table_name=CUSTOMERS, req_uuid=req)
    span = cap.span(f"GetItem {CUSTOMERS}")
    assert attrs(span)[semconv.SIGTRACE_CORRELATION_ID] == str(req)
    assert attrs(span)[semconv.SIGTRACE_MODEL] == "Customer"
    assert cap.installation.in_flight() == 0


def test_span_is_child_of_the_callers_span(cap: Capture) -> None:
    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("handler") as handler:
        Customer(new_id()).save()
    span = cap.span(f"PutItem {CUSTOMERS}")
    assert span.parent is not None and span.parent.span_id == handler.get_span_context().span_id


def test_excluded_operation_is_not_traced() -> None:
    with capture(sources=["pynamodb"], exclude=["operation:GetItem"]) as cap:
        key = new_id()
        Customer(key).save()
        Customer.get(key)
        assert [s.name for s in cap.spans] == [f"PutItem {CUSTOMERS}"]
        assert cap.installation is not None and cap.installation.in_flight() == 0


def test_count_and_index_free_paths(cap: Capture) -> None:
    key = new_id()
    Order(key, 1).save()
    Order(key, 2).save()
    reset(cap)
    assert Order.count(key) == 2
    order = Order(key, 1)
    order.refresh(consistent_read=True)
    count, refresh = cap.spans
    assert count.name == f"Query {ORDERS}" and attrs(count)["aws.dynamodb.select"] == "COUNT"
    assert attrs(count)["aws.dynamodb.count"] == 2
    assert refresh.name == f"GetItem {ORDERS}" and attrs(refresh)["aws.dynamodb.consistent_read"] is True
    assert attrs(refresh)[semconv.SIGTRACE_PK] == f"{key}|1"


def _reported(**options: object) -> tuple[dict[str, object], dict[str, object]]:
    """Span attributes and audit event of one PutItem, without what differs between two calls."""
    with capture(sources=["pynamodb"], **options) as cap:
        Order("same-key", 7, total=12).save()
        span = cap.span(f"PutItem {ORDERS}")
        (event,) = cap.audit_for(span)
    varying = {semconv.SIGTRACE_CORRELATION_ID, "aws.request_id", "correlation_id", "timestamp", "duration_ms"}
    varying |= {"trace_id", "span_id", "request_id", "chain", "prev", "hash"}
    a = {k: v for k, v in attrs(span).items() if k not in varying}
    e = {k: v for k, v in event.items() if k not in varying}
    return a, e


def test_the_pre_signal_claims_its_dispatch_call_as_engine_begin_does() -> None:
    # The pre receiver claims the dispatch call's own operation directly (no operation built to absorb);
    # with any exclusion configured it takes Engine.begin's full path instead: both report the same.
    fast = _reported()
    full = _reported(exclude=["model:SomethingElse"])
    assert fast == full
    assert fast[0][semconv.SIGTRACE_SIGNAL] == "post_dynamodb_send"
