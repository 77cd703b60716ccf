"""Demo scenario of the PynamoDB source: DynamoDB calls as spans, on moto in-process (no server, no AWS)."""

from __future__ import annotations

import contextlib
from typing import Any

from opentelemetry import trace

import sigtrace

TITLE = "PynamoDB: one span per DynamoDB call, correlated by req_uuid"
LIBRARY = "pynamodb"
#: Failures the scenario meets on purpose, by error type: the demo shows why beside them.
EXPECTED_ERRORS = {
    "ResourceNotFoundException": "expected: create_table() first asks whether the table exists",
    "ConditionalCheckFailedException": "deliberate: paying the same order twice",
}


def _models() -> tuple[Any, Any]:
    from pynamodb.attributes import NumberAttribute, UnicodeAttribute
    from pynamodb.models import Model

    class Customer(Model):
        class Meta:
            table_name = "demo_customers"
            region = "us-east-1"
            billing_mode = "PAY_PER_REQUEST"

        email = UnicodeAttribute(hash_key=True)
        name = UnicodeAttribute()

    class Order(Model):
        class Meta:
            table_name = "demo_orders"
            region = "us-east-1"
            billing_mode = "PAY_PER_REQUEST"

        customer_email = UnicodeAttribute(hash_key=True)
        number = NumberAttribute(range_key=True)
        status = UnicodeAttribute(default="placed")

    return Customer, Order


def run() -> None:
    try:
        from moto import mock_aws
    except ImportError:
        raise RuntimeError('this scenario runs DynamoDB in-process with moto: pip install "sigtrace[demo]"') from None
    from pynamodb.exceptions import UpdateError

    tracer = trace.get_tracer("sigtrace.demo")
    with mock_aws():
        customer_model, order_model = _models()
        with tracer.start_as_current_span("setup"):
            # exists() first: its DescribeTable fails (no table yet) and PynamoDB swallows that.
            customer_model.create_table(wait=True)
            order_model.create_table(wait=True)
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /orders"):
            customer_model("alice@example.com", name="Alice").save()
            with order_model.batch_write() as batch:
                for number in (1, 2):
                    batch.save(order_model("alice@example.com", number))
            order = order_model.get("alice@example.com", 1)
            order.update(actions=[order_model.status.set("paid")], condition=order_model.status == "placed")
            # Paying twice fails DynamoDB's condition check: an ERROR span, an audit event "error".
            with contextlib.suppress(UpdateError):
                order.update(actions=[order_model.status.set("paid")], condition=order_model.status == "placed")
            list(order_model.query("alice@example.com"))
