"""A small shop on PynamoDB (customers and their orders), traced by sigtrace.

Each DynamoDB call PynamoDB makes becomes one CLIENT span (``PutItem shop_orders``...), nested under
the application's own span, with one audit event per write naming who acted. A second payment of
the same order fails its condition: an ERROR span with ``error.type=ConditionalCheckFailedException``
and an audit event with ``outcome=error``.

Run it against any DynamoDB endpoint (DynamoDB Local, a moto server), or with moto in-process when
``DYNAMODB_ENDPOINT`` is not set::

    pip install "sigtrace[pynamodb]" "moto[dynamodb]"
    OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none python examples/pynamodb/app.py
    DYNAMODB_ENDPOINT=http://127.0.0.1:8000 python examples/pynamodb/app.py audit.jsonl
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator

from opentelemetry import trace
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import UpdateError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

import sigtrace

REGION = os.environ.get("AWS_REGION", "us-east-1")


class Customer(Model):
    class Meta:
        table_name = "shop_customers"
        region = REGION
        host = os.environ.get("DYNAMODB_ENDPOINT")
        billing_mode = "PAY_PER_REQUEST"

    email = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    order_count = NumberAttribute(default=0)


class Order(Model):
    class Meta:
        table_name = "shop_orders"
        region = REGION
        host = os.environ.get("DYNAMODB_ENDPOINT")
        billing_mode = "PAY_PER_REQUEST"

    customer_email = UnicodeAttribute(hash_key=True)
    order_id = UnicodeAttribute(range_key=True)
    total_cents = NumberAttribute()
    status = UnicodeAttribute(default="placed")


def use_endpoint(url: str | None) -> None:
    """Point both models at ``url`` (``None``: AWS itself, or moto in-process)."""
    for model in (Customer, Order):
        model.Meta.host = url
        model._connection = None


def create_tables() -> None:
    for model in (Customer, Order):
        model.create_table(wait=True)  # DescribeTable (fails: no table yet), CreateTable, DescribeTable


def register(email: str, name: str) -> Customer:
    customer = Customer(email, name=name)
    customer.save()
    return customer


def place_order(customer: Customer, total_cents: int) -> Order:
    """The order and the customer's order count in one transaction (one TransactWriteItems call)."""
    order = Order(customer.email, uuid.uuid4().hex[:12], total_cents=total_cents)
    with TransactWrite(connection=Order._get_connection().connection) as transaction:
        transaction.save(order, condition=Order.order_id.does_not_exist())
        transaction.update(customer, actions=[Customer.order_count.add(1)], condition=Customer.email.exists())
    return order


def pay(order: Order) -> None:
    """Only a placed order can be paid (a condition DynamoDB checks)."""
    order.update(actions=[Order.status.set("paid")], condition=Order.status == "placed")


def orders_of(email: str) -> list[Order]:
    return list(Order.query(email))


def checkout(email: str, tracer_provider: trace.TracerProvider | None = None) -> dict[str, int]:
    """One visit to the shop: register, order twice, pay, try to pay again, list the orders."""
    tracer = trace.get_tracer("shop", tracer_provider=tracer_provider)
    refused = 0
    with sigtrace.actor(email), tracer.start_as_current_span("checkout"):
        customer = register(email, name="Alice")
        first = place_order(customer, 1250)
        place_order(customer, 399)
        pay(first)
        try:
            pay(first)
        except UpdateError:
            refused += 1  # already paid: the condition failed
        orders = orders_of(email)
    return {"orders": len(orders), "refused": refused, "order_count": Customer.get(email).order_count}


@contextlib.contextmanager
def dynamodb() -> Iterator[None]:
    """The endpoint of DYNAMODB_ENDPOINT, else moto in-process."""
    if Customer.Meta.host:
        yield
        return
    from moto import mock_aws

    with mock_aws():
        yield


def main(audit_file: str | None = None) -> int:
    sigtrace.install(service_name="shop", sources=["pynamodb"], audit_file=audit_file)  # providers from OTEL_*
    try:
        with dynamodb():
            create_tables()
            result = checkout("alice@example.com")
    finally:
        sigtrace.uninstall()
    print(f"orders={result['orders']} refused={result['refused']} order_count={result['order_count']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
