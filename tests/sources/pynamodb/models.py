"""Models of the PynamoDB tests; their ``Meta.host`` is set to the moto server by the session fixture."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

REGION = "us-east-1"


class Customer(Model):
    """Hash key only."""

    class Meta:
        table_name = "sigtrace_customers"
        region = REGION
        host: str | None = None
        billing_mode = "PAY_PER_REQUEST"

    id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(null=True)
    api_token = UnicodeAttribute(null=True)
    visits = NumberAttribute(default=0)


class Order(Model):
    """Hash and range key."""

    class Meta:
        table_name = "sigtrace_orders"
        region = REGION
        host: str | None = None
        billing_mode = "PAY_PER_REQUEST"

    customer_id = UnicodeAttribute(hash_key=True)
    order_id = NumberAttribute(range_key=True)
    status = UnicodeAttribute(default="new")
    total = NumberAttribute(default=0)


class Ghost(Model):
    """A table that is never created (missing-table failures)."""

    class Meta:
        table_name = "sigtrace_missing"
        region = REGION
        host: str | None = None
        billing_mode = "PAY_PER_REQUEST"

    id = UnicodeAttribute(hash_key=True)


class Fresh(Model):
    """A table each test of create_table(wait=True) creates (and deletes)."""

    class Meta:
        table_name = "sigtrace_fresh"
        region = REGION
        host: str | None = None
        billing_mode = "PAY_PER_REQUEST"

    id = UnicodeAttribute(hash_key=True)


MODELS: tuple[type[Model], ...] = (Customer, Order, Ghost, Fresh)


def bind(host: str | None) -> None:
    """Point every test model at ``host`` (drops cached connections)."""
    for model in MODELS:
        model.Meta.host = host
        model._connection = None
