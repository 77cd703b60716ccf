"""Demo scenario of the SQLAlchemy source: a unit of work, an ORM update, a savepoint and a constraint violation.

SQLite in a temporary directory; classic ``Column`` mappings, so it runs on SQLAlchemy 1.4 and 2.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from opentelemetry import trace

import sigtrace

TITLE = "SQLAlchemy ORM: flushes and their batches, an ORM update, a rolled-back savepoint, one IntegrityError"
LIBRARY = "sqlalchemy"


def _models() -> tuple[Any, Any, Any]:
    import sqlalchemy as sa
    from sqlalchemy import orm

    base: Any = orm.declarative_base()

    class Customer(base):  # type: ignore[misc]
        __tablename__ = "customers"
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(100), unique=True, nullable=False)
        orders = orm.relationship("Order", back_populates="customer", cascade="all, delete-orphan")

    class Order(base):  # type: ignore[misc]
        __tablename__ = "orders"
        id = sa.Column(sa.Integer, primary_key=True)
        total = sa.Column(sa.Integer, nullable=False)
        status = sa.Column(sa.String(20), nullable=False, default="new")
        customer_id: Any = sa.Column(sa.Integer, sa.ForeignKey("customers.id"), nullable=False)
        customer = orm.relationship(Customer, back_populates="orders")

    return base, Customer, Order


def _scenario(url: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy import orm
    from sqlalchemy.exc import IntegrityError

    base, customer_model, order_model = _models()
    engine = sa.create_engine(url)
    base.metadata.create_all(engine)
    tracer = trace.get_tracer("sigtrace.demo")
    try:
        with sigtrace.actor("alice"), orm.Session(engine) as session:
            with tracer.start_as_current_span("POST /checkout"):
                ada = customer_model(email="ada@example.com")
                ada.orders = [order_model(total=42), order_model(total=7)]
                session.add(ada)
                session.commit()  # one flush: insert customers, insert orders (2 rows)
            with tracer.start_as_current_span("POST /orders/ship"):
                session.execute(sa.update(order_model).where(order_model.total > 10).values(status="shipped"))
                ada.orders[1].total = 8  # an update of the unit of work
                savepoint = session.begin_nested()
                session.add(customer_model(email="tentative@example.com"))
                session.flush()
                savepoint.rollback()  # its insert: audited rolled_back
                session.commit()
            with tracer.start_as_current_span("POST /customers"):
                session.add(customer_model(email="ada@example.com"))
                with contextlib.suppress(IntegrityError):
                    session.commit()  # unique email: an ERROR flush, then the rollback
                session.rollback()
            with tracer.start_as_current_span("DELETE /customers/ada"):
                session.delete(ada)  # its orders go with it (cascade)
                session.commit()
    finally:
        engine.dispose()


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="sigtrace-sqlalchemy-") as tmp:
        _scenario(f"sqlite:///{Path(tmp) / 'demo.sqlite'}")
