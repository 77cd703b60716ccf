"""A message row's primary key as every source spells it: a composite key is its parts joined by ``|``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from sigtrace import semconv
from sigtrace.testing import capture
from tests.sources.signalbus.harness import SignalSQLAlchemy


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    flask_app = Flask(__name__)
    flask_app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'outbox.db'}"
    flask_app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    db = SignalSQLAlchemy(flask_app)

    class Delivery(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "delivery_outbox"
        region = db.Column(db.String(10), primary_key=True)
        seq = db.Column(db.Integer, primary_key=True)

        def send_signalbus_message(self) -> None:
            pass

    with flask_app.app_context():
        db.create_all()
        try:
            yield db, Delivery
        finally:
            db.session.remove()
            db.signalbus.signal_session.remove()
            db.drop_all()
            db.get_engine(flask_app).dispose()


def test_a_composite_pk_is_its_parts_joined_by_a_bar(app: tuple[Any, Any]) -> None:
    db, delivery = app
    with capture(sources=["signalbus"]) as cap:
        db.session.add(delivery(region="eu", seq=7))
        db.session.commit()
        send = cap.span("send delivery_outbox")
        assert (send.attributes or {})[semconv.SIGTRACE_PK] == "eu|7"
        (event,) = cap.audit_events
        assert event["pk"] == "eu|7"
