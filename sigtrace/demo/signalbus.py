"""Demo scenario of the Flask-SignalBus source: an outbox on SQLite in a temporary directory.

Flask-SignalBus needs the old stack (Flask<3, Flask-SQLAlchemy 2.5, SQLAlchemy 1.4), which cannot
share an environment with ormar or Edgy (SQLAlchemy 2); install it in its own::

    pip install "sigtrace[signalbus]"   # pins flask<3, flask-sqlalchemy<3, sqlalchemy<2
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

import sigtrace

TITLE = "Flask-SignalBus: an outbox sent by autoflush, an explicit flush and a batch, with actors; one refused message"
LIBRARY = "flask_signalbus"
#: Shown by ``sigtrace demo`` where the old stack is missing: a separate environment, made on the fly.
INSTALL_HINT = 'uv run --python 3.11 --isolated --no-project --with ".[signalbus]" sigtrace demo --source signalbus'
#: Failures the scenario causes on purpose, by error type: the demo shows why beside them.
EXPECTED_ERRORS = {"BrokerRefusedError": "deliberate: the broker refuses one message; commit() still returns"}


class BrokerRefusedError(Exception):
    pass


def _scenario(url: str) -> None:
    # The old stack is imported by name: the type checker of the modern environment never sees it.
    flask: Any = importlib.import_module("flask")
    flask_signalbus: Any = importlib.import_module("flask_signalbus")
    flask_sqlalchemy: Any = importlib.import_module("flask_sqlalchemy")

    from sigtrace.sources.signalbus import TraceContextMixin, inject_headers

    class DB(flask_signalbus.SignalBusMixin, flask_sqlalchemy.SQLAlchemy):  # type: ignore[misc]
        pass

    app = flask.Flask("sigtrace-demo")
    app.config.update(SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_TRACK_MODIFICATIONS=False)
    db: Any = DB(app)
    broker: list[dict[str, Any]] = []

    class OrderPlaced(TraceContextMixin, db.Model):  # type: ignore[misc]
        """Sent right after the commit that creates it (autoflush)."""

        id = db.Column(db.Integer, primary_key=True)
        item = db.Column(db.String(80), nullable=False)

        def send_signalbus_message(self) -> None:
            if self.item == "contraband":
                raise BrokerRefusedError(f"order {self.id}: the broker refused the message")
            broker.append({"item": self.item, "headers": dict(inject_headers({}))})

    class InvoiceRequested(TraceContextMixin, db.Model):  # type: ignore[misc]
        """Sent later, one message at a time, by an explicit ``flush()``."""

        id = db.Column(db.Integer, primary_key=True)
        order = db.Column(db.String(80), nullable=False)
        signalbus_autoflush = False

        def send_signalbus_message(self) -> None:
            broker.append({"invoice": self.order, "headers": dict(inject_headers({}))})

    class StockChanged(TraceContextMixin, db.Model):  # type: ignore[misc]
        """Sent later by ``flushmany()``, ten at a time: one batch."""

        id = db.Column(db.Integer, primary_key=True)
        sku = db.Column(db.String(40), nullable=False)
        signalbus_autoflush = False
        signalbus_burst_count = 10

        def send_signalbus_message(self) -> None:
            broker.append({"sku": self.sku, "headers": dict(inject_headers({}))})

        @classmethod
        def send_signalbus_messages(cls, instances: Any) -> None:
            headers = dict(inject_headers({}))
            broker.extend({"sku": row.sku, "headers": headers} for row in instances)

    tracer = trace.get_tracer("sigtrace.demo")
    with app.app_context():
        db.create_all()
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            db.session.add(OrderPlaced(item="teapot"))
            db.session.add(InvoiceRequested(order="teapot"))
            db.session.add_all([StockChanged(sku="TEA-1"), StockChanged(sku="TEA-2"), StockChanged(sku="TEA-3")])
            db.session.commit()  # autoflush sends OrderPlaced at once; the other two wait for the relay
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            db.session.add(OrderPlaced(item="contraband"))
            db.session.commit()  # the send fails: Flask-SignalBus logs it and rolls back, commit() returns
        # The relay, later: each run in its own trace, each send linked to the request that wrote its rows.
        with sigtrace.actor("outbox-relay"):
            db.signalbus.flush(models=[InvoiceRequested], wait=0)  # one send per message
            db.signalbus.flushmany(models=[StockChanged])  # one batch send for the three rows
        db.session.remove()
        db.signalbus.signal_session.remove()
        db.engine.dispose()


def run() -> None:
    import logging

    library_logger = logging.getLogger("flask_signalbus.signalbus")
    quiet = library_logger.disabled
    library_logger.disabled = True  # it logs the refused message with a traceback; the demo shows the span
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _scenario(f"sqlite:///{Path(tmp) / 'outbox.db'}")
    finally:
        library_logger.disabled = quiet
