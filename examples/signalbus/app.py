"""A shop whose orders leave through a Flask-SignalBus outbox, traced by sigtrace from the request to the consumer.

1. ``POST /orders`` (a Flask request) stores an order and an ``OrderPlaced`` signal row in one
   transaction; :class:`sigtrace.sources.signalbus.TraceContextMixin` stores the request's trace
   context in the row.
2. A relay flushes the outbox later (``db.signalbus.flushmany()``, what ``flask signalbus flushmany``
   runs): each ``send_signalbus_message`` publishes to the broker with the trace context in the
   message headers (:func:`sigtrace.sources.signalbus.inject_headers`); its span links to the request.
3. A consumer continues the trace from the headers.

One order cannot be sent (the broker refuses it): its span is an ERROR, its audit event says
``error``, and the row stays in the outbox.

Run (in the signalbus environment, see docs/sources/signalbus.md)::

    python examples/signalbus/app.py [audit.jsonl] [--broker rabbitmq|memory]

The broker is the RabbitMQ at 127.0.0.1:5672 (guest/guest) when it answers, else an in-process queue.
Spans go to stdout, one JSON object per line; the audit log to the file as JSON lines.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask_signalbus import SignalBusMixin
from flask_sqlalchemy import SQLAlchemy
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind

import sigtrace
from sigtrace.sources.signalbus import TraceContextMixin, extract_context, inject_headers

QUEUE = "shop.orders"


class BrokerRefusedError(Exception):
    pass


class MemoryBroker:
    """Stands in for RabbitMQ when none is running: publish/get with headers."""

    name = "memory"

    def __init__(self) -> None:
        self._messages: queue.Queue[tuple[bytes, dict[str, Any]]] = queue.Queue()

    def publish(self, body: bytes, headers: dict[str, Any]) -> None:
        self._messages.put((body, headers))

    def get(self) -> tuple[bytes, dict[str, Any]] | None:
        try:
            return self._messages.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        pass


class RabbitBroker:
    """RabbitMQ through pika, with publisher confirms: publish() returns once the broker has the message."""

    name = "rabbitmq"

    def __init__(self) -> None:
        import pika

        self._pika = pika
        params = pika.ConnectionParameters(
            "127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1
        )
        self._connection = pika.BlockingConnection(params)
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        self.queue = f"{QUEUE}.{uuid.uuid4().hex[:8]}"
        self._channel.queue_declare(queue=self.queue, auto_delete=True)

    def publish(self, body: bytes, headers: dict[str, Any]) -> None:
        properties = self._pika.BasicProperties(headers=headers, delivery_mode=2)
        self._channel.basic_publish("", self.queue, body, properties=properties, mandatory=True)

    def get(self) -> tuple[bytes, dict[str, Any]] | None:
        method, properties, body = self._channel.basic_get(queue=self.queue, auto_ack=True)
        if method is None:
            return None
        return body, dict(properties.headers or {})

    def close(self) -> None:
        self._channel.queue_delete(queue=self.queue)
        self._connection.close()


def connect_broker(choice: str | None) -> MemoryBroker | RabbitBroker:
    if choice == "memory":
        return MemoryBroker()
    try:
        return RabbitBroker()
    except Exception as exc:
        if choice == "rabbitmq":
            raise
        print(f"RabbitMQ not reachable ({exc!r}): using an in-process queue", file=sys.stderr)
        return MemoryBroker()


class ShopSQLAlchemy(SignalBusMixin, SQLAlchemy):
    pass


def create_app(database_url: str, broker: MemoryBroker | RabbitBroker) -> tuple[Flask, Any, Any]:
    app = Flask("shop")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, SQLALCHEMY_TRACK_MODIFICATIONS=False)
    db = ShopSQLAlchemy(app)
    tracer = trace.get_tracer("shop")

    class Order(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        item = db.Column(db.String(80), nullable=False)

    class OrderPlaced(TraceContextMixin, db.Model):  # type: ignore[name-defined,misc]
        """The outbox: one row per message to send."""

        id = db.Column(db.Integer, primary_key=True)
        order_id = db.Column(db.Integer, nullable=False)
        item = db.Column(db.String(80), nullable=False)
        signalbus_autoflush = False  # the relay sends, not the request

        def send_signalbus_message(self) -> None:
            if self.item == "contraband":
                raise BrokerRefusedError(f"order {self.order_id}: the broker refused the message")
            broker.publish(f"{self.order_id}:{self.item}".encode(), dict(inject_headers({})))

    @app.post("/orders")
    def place_order() -> Any:
        # opentelemetry-instrumentation-flask would make this span; here the app makes it itself.
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            order = Order(item=request.json["item"])
            db.session.add(order)
            db.session.flush()
            db.session.add(OrderPlaced(order_id=order.id, item=order.item))
            db.session.commit()
            return jsonify(id=order.id), 201

    return app, db, OrderPlaced


def consume(broker: MemoryBroker | RabbitBroker) -> list[str]:
    tracer = trace.get_tracer("shop.consumer")
    received = []
    while (message := broker.get()) is not None:
        body, headers = message
        with tracer.start_as_current_span(f"{QUEUE} process", context=extract_context(headers), kind=SpanKind.CONSUMER):
            received.append(body.decode())
    return received


def one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("audit_file", nargs="?")
    parser.add_argument("--broker", choices=["rabbitmq", "memory"])
    args = parser.parse_args(argv)

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
    trace.set_tracer_provider(provider)
    sigtrace.install(service_name="shop", tracer_provider=provider, audit_file=args.audit_file)

    broker = connect_broker(args.broker)
    with tempfile.TemporaryDirectory() as tmp:
        app, db, outbox = create_app(f"sqlite:///{Path(tmp) / 'shop.db'}", broker)
        with app.app_context():
            db.create_all()
        client = app.test_client()
        with sigtrace.actor("customer-7"):
            for item in ("teapot", "contraband", "kettle"):
                assert client.post("/orders", json={"item": item}).status_code == 201

        with app.app_context():
            try:
                db.signalbus.flushmany()  # the relay
            except BrokerRefusedError as exc:  # flushmany raises; the CLI would log it and exit 1
                print(f"relay stopped: {exc}", file=sys.stderr)
            pending = outbox.query.count()
            db.session.remove()
            db.signalbus.signal_session.remove()
            db.engine.dispose()
    received = consume(broker)
    broker.close()
    sigtrace.uninstall()
    print(f"broker {broker.name}; pending {pending}; consumed {','.join(received)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
