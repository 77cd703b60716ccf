"""A Flask app with Flask-SignalBus signal models of every kind, on a given database URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import wrapt
from flask import Flask
from flask_signalbus import SignalBusMixin
from flask_sqlalchemy import SQLAlchemy

from sigtrace.sources.signalbus import TraceContextMixin, inject_headers

WRAPPER = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)


def is_wrapped(value: object) -> bool:
    """A wrapt wrapper (wrapt 2's FunctionWrapper is no ObjectProxy)."""
    return isinstance(value, WRAPPER)


class BrokerDownError(Exception):
    """What a failing send raises."""


class SignalSQLAlchemy(SignalBusMixin, SQLAlchemy):
    pass


@dataclass
class Harness:
    app: Flask
    db: Any
    Outbox: Any  # autoflush (default), TraceContextMixin
    Deferred: Any  # autoflush off, burst 1, TraceContextMixin
    Batch: Any  # autoflush off, burst 10, send_signalbus_messages
    Ordered: Any  # autoflush off, signalbus_order_by, no mixin
    sent: list[tuple[str, Any, str, dict[str, Any]]] = field(default_factory=list)
    batches: list[list[Any]] = field(default_factory=list)
    fail_texts: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bus(self) -> Any:
        return self.db.signalbus

    def record(self, kind: str, row: Any) -> None:
        if row.text in self.fail_texts:
            raise BrokerDownError(f"broker refused {kind} {row.text}")
        with self.lock:
            self.sent.append((kind, row.id, row.text, dict(inject_headers({}))))

    def pending(self, model: Any) -> int:
        return int(model.query.count())

    def texts(self) -> list[str]:
        return [text for _kind, _id, text, _headers in self.sent]


@contextmanager
def make_harness(url: str) -> Iterator[Harness]:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    db = SignalSQLAlchemy(app)
    holder: dict[str, Harness] = {}

    class Outbox(TraceContextMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "outbox"
        id = db.Column(db.Integer, primary_key=True, autoincrement=True)
        text = db.Column(db.String(100), nullable=False)

        def send_signalbus_message(self) -> None:
            holder["h"].record("outbox", self)

    class Deferred(TraceContextMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "deferred_outbox"
        id = db.Column(db.Integer, primary_key=True, autoincrement=True)
        text = db.Column(db.String(100), nullable=False)
        signalbus_autoflush = False

        def send_signalbus_message(self) -> None:
            holder["h"].record("deferred", self)

    class Batch(TraceContextMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "batch_outbox"
        id = db.Column(db.Integer, primary_key=True, autoincrement=True)
        text = db.Column(db.String(100), nullable=False)
        signalbus_autoflush = False
        signalbus_burst_count = 10

        def send_signalbus_message(self) -> None:
            holder["h"].record("batch-single", self)

        @classmethod
        def send_signalbus_messages(cls, instances: Any) -> None:
            h = holder["h"]
            rows = list(instances)
            for row in rows:
                if row.text in h.fail_texts:
                    raise BrokerDownError(f"broker refused a batch with {row.text}")
            with h.lock:
                h.batches.append([row.id for row in rows])
            for row in rows:
                with h.lock:
                    h.sent.append(("batch", row.id, row.text, dict(inject_headers({}))))

    class Ordered(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "ordered_outbox"
        id = db.Column(db.Integer, primary_key=True, autoincrement=True)
        text = db.Column(db.String(100), nullable=False)
        rank = db.Column(db.Integer, nullable=False)
        signalbus_autoflush = False
        signalbus_order_by = (rank, db.desc(id))

        def send_signalbus_message(self) -> None:
            holder["h"].record("ordered", self)

    h = holder["h"] = Harness(app, db, Outbox, Deferred, Batch, Ordered)
    with app.app_context():
        db.drop_all()
        db.create_all()
        try:
            yield h
        finally:
            db.session.remove()
            h.bus.signal_session.remove()
            db.drop_all()
            db.session.remove()
            db.engine.dispose()
