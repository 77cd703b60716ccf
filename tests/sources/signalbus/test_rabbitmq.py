"""A real broker: send_signalbus_message publishes to RabbitMQ (127.0.0.1:5672) with the trace context in its headers.

The request that creates the row, the flush that sends it and the consumer that receives it are
three separate pieces of work: the consumer continues the send's trace from the message headers,
and the send span links to the request.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_signalbus import SignalBusMixin
from flask_sqlalchemy import SQLAlchemy
from opentelemetry.trace import SpanKind

from sigtrace.sources.signalbus import TraceContextMixin, extract_context, inject_headers
from sigtrace.testing import Capture, capture


class _DB(SignalBusMixin, SQLAlchemy):
    pass


@pytest.fixture
def queue(rabbitmq: Any) -> Iterator[tuple[Any, str]]:
    import pika

    connection = pika.BlockingConnection(rabbitmq)
    channel = connection.channel()
    name = f"sigtrace-signalbus-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue=name, auto_delete=False)
    try:
        yield channel, name
    finally:
        channel.queue_delete(queue=name)
        connection.close()


@pytest.mark.parametrize("url_kind", ["sqlite", "postgresql"])
def test_consumer_continues_the_send_trace_linked_to_the_request(
    rabbitmq: Any, queue: tuple[Any, str], url_kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    import pika

    url = f"sqlite:///{tmp_path / 'o.db'}" if url_kind == "sqlite" else request.getfixturevalue("postgres_url")
    consumer_channel, queue_name = queue
    publisher = pika.BlockingConnection(rabbitmq)
    channel = publisher.channel()
    channel.confirm_delivery()  # send_signalbus_message returns once the broker has the message

    with capture(sources=["signalbus"]) as cap:
        app = Flask(__name__)
        app.config.update(SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_TRACK_MODIFICATIONS=False)
        db = _DB(app)

        class OrderPlaced(TraceContextMixin, db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "order_placed_signal"
            id = db.Column(db.Integer, primary_key=True, autoincrement=True)
            order = db.Column(db.String(40), nullable=False)
            signalbus_autoflush = False  # sent later by a flush, as an outbox relay would

            def send_signalbus_message(self) -> None:
                channel.basic_publish(
                    exchange="",
                    routing_key=queue_name,
                    body=self.order.encode(),
                    properties=pika.BasicProperties(headers=dict(inject_headers({})), delivery_mode=2),
                    mandatory=True,
                )

        tracer = cap.tracer_provider.get_tracer("test")
        with app.app_context():
            db.drop_all()
            db.create_all()
            try:
                with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as origin:
                    db.session.add(OrderPlaced(order="order-42"))
                    db.session.commit()
                assert db.signalbus.flushmany() == 1

                method, properties, body = consumer_channel.basic_get(queue=queue_name, auto_ack=True)
                assert method is not None and body == b"order-42"
                with tracer.start_as_current_span(
                    f"{queue_name} process", context=extract_context(properties.headers), kind=SpanKind.CONSUMER
                ):
                    pass
            finally:
                db.session.remove()
                db.signalbus.signal_session.remove()
                db.drop_all()
                db.engine.dispose()
    publisher.close()

    send = cap.span("send order_placed_signal")
    consumer = cap.span(f"{queue_name} process")
    request_ctx = origin.get_span_context()
    send_ctx = send.get_span_context()
    assert send_ctx is not None and consumer.get_span_context() is not None
    # The consumer continues the send's trace, as the send span's child.
    assert consumer.get_span_context().trace_id == send_ctx.trace_id  # type: ignore[union-attr]
    assert consumer.parent is not None and consumer.parent.span_id == send_ctx.span_id
    # The send (another trace: the flush) links to the request that created the row.
    assert send_ctx.trace_id != request_ctx.trace_id
    assert [(lk.context.trace_id, lk.context.span_id) for lk in send.links] == [
        (request_ctx.trace_id, request_ctx.span_id)
    ]
    assert cap.span("flushmany order_placed_signal").status.is_ok
    (event,) = cap.audit_events
    assert event["outcome"] == "ok" and event["model"] == "OrderPlaced"


def test_publish_failure_is_an_error_and_rows_stay(rabbitmq: Any, tmp_path: Any) -> None:
    """The broker refuses the message (unroutable + mandatory + confirms): the send fails, the row stays."""
    import pika

    publisher = pika.BlockingConnection(rabbitmq)
    channel = publisher.channel()
    channel.confirm_delivery()
    missing = f"sigtrace-missing-{uuid.uuid4().hex[:8]}"
    cap: Capture
    with capture(sources=["signalbus"]) as cap:
        app = Flask(__name__)
        app.config.update(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'f.db'}", SQLALCHEMY_TRACK_MODIFICATIONS=False
        )
        db = _DB(app)

        class Unroutable(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "unroutable_signal"
            id = db.Column(db.Integer, primary_key=True, autoincrement=True)

            def send_signalbus_message(self) -> None:
                channel.basic_publish(exchange="", routing_key=missing, body=b"x", mandatory=True)

        with app.app_context():
            db.create_all()
            db.session.add(Unroutable())
            db.session.commit()  # autoflush: the publish fails, Flask-SignalBus logs it, commit() returns
            assert Unroutable.query.count() == 1
            db.session.remove()
            db.signalbus.signal_session.remove()
    publisher.close()
    send = cap.span("send unroutable_signal")
    assert not send.status.is_ok
    assert send.attributes is not None and send.attributes["error.type"] == "UnroutableError"
    assert [e["outcome"] for e in cap.audit_events] == ["error"]
