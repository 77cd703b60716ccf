"""Three related models (customers -> orders -> lines, cascading deletes) and one with a composite pk (stock)
for the SQLAlchemy source tests.

``Order`` defines ``__eq__`` by value, as application models may: the source must correlate by identity.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm


class Base(orm.DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "sa_customers"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)
    api_token: orm.Mapped[str | None] = orm.mapped_column(sa.String(50), nullable=True)
    orders: orm.Mapped[list[Order]] = orm.relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="Order.id"
    )


class Order(Base):
    __tablename__ = "sa_orders"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    total: orm.Mapped[int] = orm.mapped_column(default=0)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(20), default="new")
    customer_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("sa_customers.id"))
    customer: orm.Mapped[Customer] = orm.relationship(back_populates="orders")
    lines: orm.Mapped[list[Line]] = orm.relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Line.id"
    )

    def __eq__(self, other: object) -> bool:  # by value, like many application models
        return isinstance(other, Order) and (other.total, other.status) == (self.total, self.status)

    def __hash__(self) -> int:
        return hash((Order, self.total))


class Line(Base):
    __tablename__ = "sa_lines"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    sku: orm.Mapped[str] = orm.mapped_column(sa.String(20))
    quantity: orm.Mapped[int] = orm.mapped_column(default=1)
    order_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("sa_orders.id"))
    order: orm.Mapped[Order] = orm.relationship(back_populates="lines")


class Stock(Base):
    """A composite primary key: its pk text is the parts joined by ``|``."""

    __tablename__ = "sa_stock"
    warehouse: orm.Mapped[str] = orm.mapped_column(sa.String(10), primary_key=True)
    sku: orm.Mapped[str] = orm.mapped_column(sa.String(20), primary_key=True)
    quantity: orm.Mapped[int] = orm.mapped_column(default=0)


TABLES = ("sa_customers", "sa_orders", "sa_lines", "sa_stock")


def audit_by(events: list[dict[str, Any]], operation: str, model: str) -> list[dict[str, Any]]:
    return [e for e in events if e["operation"] == operation and e.get("model") == model]
