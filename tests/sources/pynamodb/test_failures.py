"""Calls that fail: PynamoDB sends no post signal, so the dispatch scope ends them as ERROR at once.

Each check runs with the default orphan timeout (300 s): a span that exists right after the call
returned or raised was ended by the call itself, not by the reaper; the span processor also
records the thread that ended it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import EndpointConnectionError
from opentelemetry.trace import StatusCode
from pynamodb.attributes import UnicodeAttribute
from pynamodb.exceptions import GetError, PutError, TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.pynamodb.helpers import EndThreads, attrs, new_id, reset, signal_log
from tests.sources.pynamodb.models import REGION, Customer, Fresh, Ghost, Order


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["pynamodb"]) as cap:
        cap.ends = EndThreads()  # type: ignore[attr-defined]
        cap.tracer_provider.add_span_processor(cap.ends)  # type: ignore[attr-defined]
        yield cap


def only_error_span(cap: Capture) -> object:
    failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == 1, [(s.name, s.status) for s in cap.spans]
    return failed[0]


def assert_ended_here(cap: Capture, span: object) -> None:
    assert cap.ends.thread_of(span) == threading.get_ident()  # type: ignore[attr-defined]
    assert not attrs(span).get(semconv.SIGTRACE_ORPHANED)  # type: ignore[arg-type]
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_conditional_check_failed(cap: Capture) -> None:
    key = new_id()
    Customer(key).save()
    with signal_log() as log, pytest.raises(PutError) as raised:
        Customer(key).save(condition=Customer.id.does_not_exist())
    assert (len(log.pre), len(log.post)) == (1, 0)  # no post signal for a failed call
    span = only_error_span(cap)
    a = attrs(span)  # type: ignore[arg-type]
    assert span.name == f"PutItem {Customer.Meta.table_name}"  # type: ignore[attr-defined]
    assert a[semconv.ERROR_TYPE] == "ConditionalCheckFailedException" == raised.value.cause_response_code
    assert a["db.response.status_code"] == "ConditionalCheckFailedException"
    assert a[semconv.SIGTRACE_CORRELATION_ID] == str(log.pre[0][2])
    assert a[semconv.SIGTRACE_SIGNAL] == "pre_dynamodb_send"
    assert a["aws.request_id"]
    (exception,) = [e for e in span.events if e.name == "exception"]  # type: ignore[attr-defined]
    assert exception.attributes is not None
    assert exception.attributes["exception.type"].endswith("VerboseClientError")
    assert_ended_here(cap, span)
    (event,) = [e for e in cap.audit_events if e["outcome"] != "ok"]
    assert event["outcome"] == "error" and event["error_type"] == "ConditionalCheckFailedException"
    assert event["pk"] == key
    assert cap.metric_total(semconv.METRIC_DURATION, error__type="ConditionalCheckFailedException") == 1


def test_missing_table(cap: Capture) -> None:
    with signal_log() as log, pytest.raises(GetError):
        Ghost.get("nobody")
    assert (len(log.pre), len(log.post)) == (1, 0)
    span = only_error_span(cap)
    assert span.name == f"GetItem {Ghost.Meta.table_name}"  # type: ignore[attr-defined]
    assert attrs(span)[semconv.ERROR_TYPE] == "ResourceNotFoundException"  # type: ignore[arg-type]
    assert_ended_here(cap, span)


def test_exists_on_missing_table_returns_false_and_leaks_nothing(cap: Capture) -> None:
    with signal_log() as log:
        assert Ghost.exists() is False  # the exception is swallowed by PynamoDB
    assert (len(log.pre), len(log.post)) == (1, 0)
    span = only_error_span(cap)
    assert span.name == f"DescribeTable {Ghost.Meta.table_name}"  # type: ignore[attr-defined]
    assert attrs(span)[semconv.ERROR_TYPE] == "ResourceNotFoundException"  # type: ignore[arg-type]
    assert_ended_here(cap, span)


def test_create_table_wait_first_describe_fails_quietly(cap: Capture) -> None:
    try:
        with signal_log() as log:
            Fresh.create_table(wait=True)
        assert (len(log.pre), len(log.post)) == (3, 2)
        table = Fresh.Meta.table_name
        assert [(s.name, s.status.status_code) for s in cap.spans] == [
            (f"DescribeTable {table}", StatusCode.ERROR),
            (f"CreateTable {table}", StatusCode.UNSET),
            (f"DescribeTable {table}", StatusCode.UNSET),
        ]
        assert [attrs(s)[semconv.SIGTRACE_CORRELATION_ID] for s in cap.spans] == [str(e[2]) for e in log.pre]
        assert not any(attrs(s).get(semconv.SIGTRACE_ORPHANED) for s in cap.spans)
        assert cap.installation is not None and cap.installation.in_flight() == 0
        # a table change is audited like a write
        assert [e["operation"] for e in cap.audit_events] == ["CreateTable"]
    finally:
        reset(cap)
        Fresh.delete_table(wait=True)
    # wait=True polls exists() until the table is gone: the last DescribeTable fails, quietly too
    table = Fresh.Meta.table_name
    assert [(s.name, s.status.status_code) for s in cap.spans] == [
        (f"DeleteTable {table}", StatusCode.UNSET),
        (f"DescribeTable {table}", StatusCode.ERROR),
    ]
    assert [(e["operation"], e["outcome"]) for e in cap.audit_events] == [("DeleteTable", "ok")]  # a read: not audited


def test_transaction_cancelled(cap: Capture) -> None:
    key = new_id()
    connection = Order._get_connection().connection
    with pytest.raises(TransactWriteError), TransactWrite(connection=connection) as transaction:
        transaction.save(Order(key, 1))
        transaction.condition_check(Customer, key, condition=Customer.id.exists())
    span = only_error_span(cap)
    assert span.name == "TransactWriteItems"  # type: ignore[attr-defined]
    assert attrs(span)[semconv.ERROR_TYPE] == "TransactionCanceledException"  # type: ignore[arg-type]
    (event,) = cap.audit_events
    assert event["outcome"] == "error"
    assert {(k["action"], k["pk"]) for k in event["items"]} == {("put", f"{key}|1"), ("check", key)}
    assert_ended_here(cap, span)


# --- network errors and throttling: endpoints of our own on 127.0.0.1 ---


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Unreachable(Model):
    class Meta:
        table_name = "sigtrace_unreachable"
        region = REGION
        host: str | None = None
        max_retry_attempts = 0

    id = UnicodeAttribute(hash_key=True)


class Throttled(Model):
    class Meta:
        table_name = "sigtrace_throttled"
        region = REGION
        host: str | None = None
        max_retry_attempts = 1  # botocore retries once, inside the same PynamoDB call

    id = UnicodeAttribute(hash_key=True)


class _Throttling(BaseHTTPRequestHandler):
    """Answers every DynamoDB request as a throttled one, as the service does."""

    requests = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).requests += 1
        body = json.dumps(
            {
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput for the table was exceeded.",
            }
        ).encode()
        self.send_response(400)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-requestid", f"throttled-{type(self).requests}")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def throttling_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Throttling.requests = 0
    Throttled.Meta.host = f"http://127.0.0.1:{server.server_address[1]}"
    Throttled._connection = None
    try:
        yield Throttled.Meta.host
    finally:
        server.shutdown()
        server.server_close()
        Throttled._connection = None


def test_network_error(cap: Capture) -> None:
    Unreachable.Meta.host = f"http://127.0.0.1:{closed_port()}"
    Unreachable._connection = None
    with signal_log() as log, pytest.raises(PutError) as raised:
        Unreachable("x").save()
    assert isinstance(raised.value.cause, EndpointConnectionError)
    assert (len(log.pre), len(log.post)) == (1, 0)
    span = only_error_span(cap)
    a = attrs(span)  # type: ignore[arg-type]
    assert a[semconv.ERROR_TYPE] == "EndpointConnectionError"  # no service error code: the exception's class
    assert "db.response.status_code" not in a
    assert_ended_here(cap, span)


def test_throttling_after_botocore_retries(cap: Capture, throttling_endpoint: str) -> None:
    with signal_log() as log, pytest.raises(PutError):
        Throttled("x").save()
    assert _Throttling.requests == 2  # the retry happened inside one PynamoDB call ...
    assert (len(log.pre), len(log.post)) == (1, 0)
    span = only_error_span(cap)  # ... so one span
    a = attrs(span)  # type: ignore[arg-type]
    assert a[semconv.ERROR_TYPE] == "ProvisionedThroughputExceededException"
    assert a["aws.request_id"] == "throttled-2"
    assert_ended_here(cap, span)
    assert cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome="error") == 1
