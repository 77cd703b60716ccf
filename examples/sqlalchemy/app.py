"""A small orders API on Flask + Flask-SQLAlchemy 3, traced end to end.

One request shows the whole tree: the HTTP server span (opentelemetry-instrumentation-flask) -> the
flush (sigtrace) -> one span per batch of the unit of work (``insert customers``, ``insert orders``)
-> the SQL statements (opentelemetry-instrumentation-sqlalchemy); every object written leaves one
audit event naming the user of the request, reported when the request's transaction commits (or
``rolled_back`` when it does not).

Run it (SQLite file in the current directory unless ORDERS_DATABASE_URL says otherwise)::

    pip install "sigtrace[sqlalchemy]" flask flask-sqlalchemy \\
        opentelemetry-instrumentation-flask opentelemetry-instrumentation-sqlalchemy
    OTEL_TRACES_EXPORTER=console flask --app examples/sqlalchemy/app.py run
    curl -X POST localhost:5000/orders -H 'x-user: alice' -H 'content-type: application/json' \\
        -d '{"customer": "ada", "total": 42}'
"""

# No ``from __future__ import annotations``: SQLAlchemy reads the ``Mapped[...]`` annotations of the
# models, defined inside create_app(), when their classes are made.
import os
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, g, request
from flask_sqlalchemy import SQLAlchemy
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy import orm

import sigtrace

DEFAULT_URL = "sqlite:///orders.sqlite"


class Base(orm.DeclarativeBase):
    pass


def create_app(database_url: str | None = None, tracer_provider: Any = None, **sigtrace_options: Any) -> Flask:
    """The app; ``tracer_provider`` and ``sigtrace_options`` (of ``sigtrace.install``) default to OTEL_* set-up.

    sigtrace is installed here; the caller uninstalls it (``sigtrace.uninstall()``) when done.
    """
    app = Flask("orders")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url or os.environ.get("ORDERS_DATABASE_URL", DEFAULT_URL)
    db = SQLAlchemy(app, model_class=Base)

    class Customer(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "customers"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)

    class Order(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "orders"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        total: orm.Mapped[int]
        status: orm.Mapped[str] = orm.mapped_column(sa.String(20), default="new")
        customer_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("customers.id"))
        customer: orm.Mapped[Customer] = orm.relationship()

    sigtrace_options.setdefault("service_name", "orders-api")
    sigtrace.install(sources=["sqlalchemy"], tracer_provider=tracer_provider, **sigtrace_options)
    FlaskInstrumentor().instrument_app(app, tracer_provider=tracer_provider)
    with app.app_context():
        SQLAlchemyInstrumentor().instrument(engine=db.engine, tracer_provider=tracer_provider)
        db.create_all()

    @app.before_request
    def audit_actor() -> None:
        # Who acts, for the audit events of this request (a real app takes it from its auth layer).
        g.actor = sigtrace.actor(request.headers.get("x-user"))
        g.actor.__enter__()

    @app.teardown_request
    def forget_actor(_exc: BaseException | None) -> None:
        actor = g.pop("actor", None)
        if actor is not None:
            actor.__exit__(None, None, None)

    @app.post("/orders")
    def create_order() -> tuple[dict[str, Any], int]:
        body = request.get_json()
        customer = db.session.scalar(sa.select(Customer).where(Customer.name == body["customer"]))
        if customer is None:
            customer = Customer(name=body["customer"])
        order = Order(total=int(body["total"]), customer=customer)
        db.session.add(order)
        if order.total < 0:
            db.session.flush()  # written, then refused: the transaction rolls back
            db.session.rollback()
            abort(422)
        db.session.commit()  # one flush: insert customers, insert orders
        return {"id": order.id, "customer_id": customer.id}, 201

    @app.post("/orders/ship")
    def ship_all() -> dict[str, int]:
        shipped = db.session.execute(sa.update(Order).where(Order.status == "new").values(status="shipped"))
        db.session.commit()
        return {"rows": shipped.rowcount}

    @app.delete("/orders/<int:order_id>")
    def delete_order(order_id: int) -> tuple[str, int]:
        order = db.session.get(Order, order_id)
        if order is None:
            abort(404)
        db.session.delete(order)
        db.session.commit()
        return "", 204

    app.extensions["orders_db"] = db
    return app


def shutdown(app: Flask) -> None:
    """Undo what :func:`create_app` attached (the instrumentations and sigtrace)."""
    SQLAlchemyInstrumentor().uninstrument()
    FlaskInstrumentor().uninstrument_app(app)
    sigtrace.uninstall()


if os.environ.get("FLASK_RUN_FROM_CLI"):  # ``flask --app examples/sqlalchemy/app.py run``
    app = create_app()
