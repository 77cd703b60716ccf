"""A signal model on a Flask-SQLAlchemy bind key: its sends name its own database, not the app's default.

The source looks a model's database up once per run (not per row): these tests pin down that the
lookup is per model, so a run that mixes binds still names each send's database correctly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.signalbus.harness import SignalSQLAlchemy


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def db_of(span: ReadableSpan) -> tuple[Any, Any]:
    a = attrs(span)
    return a.get(semconv.DB_SYSTEM_NAME), a.get(semconv.DB_NAMESPACE)


SQLITE = ("sqlite", None)


@pytest.fixture
def app(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Any, Any, Any]]:
    """Default database SQLite; the model ``Remote`` on the bind ``pg`` (PostgreSQL)."""
    flask_app = Flask(__name__)
    flask_app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'default.db'}"
    flask_app.config["SQLALCHEMY_BINDS"] = {"pg": postgres_url}
    flask_app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    db = SignalSQLAlchemy(flask_app)

    class Local(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "local_outbox"
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(50))

        def send_signalbus_message(self) -> None:
            pass

    class Remote(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "remote_outbox"
        __bind_key__ = "pg"
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(50))

        def send_signalbus_message(self) -> None:
            pass

    with flask_app.app_context():
        db.drop_all()
        db.create_all()
        try:
            yield db, Local, Remote
        finally:
            db.session.remove()
            db.signalbus.signal_session.remove()
            db.drop_all()
            db.session.remove()
            for engine in (db.get_engine(flask_app), db.get_engine(flask_app, "pg")):
                engine.dispose()


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["signalbus"]) as cap:
        yield cap


def test_autoflush_of_a_bound_model_names_its_database(cap: Capture, app: tuple[Any, Any, Any]) -> None:
    db, _local, remote = app
    pg = ("postgresql", db.get_engine(bind="pg").url.database)
    db.session.add_all([remote(text="r1"), remote(text="r2")])
    db.session.commit()
    sends = cap.spans_named("send remote_outbox")
    assert len(sends) == 2 and {db_of(s) for s in sends} == {pg}
    # A run of that model alone works on its database: its span says so too.
    assert db_of(cap.span("autoflush remote_outbox")) == pg


def test_a_run_mixing_binds_names_each_send_database(cap: Capture, app: tuple[Any, Any, Any]) -> None:
    db, local, remote = app
    pg = ("postgresql", db.get_engine(bind="pg").url.database)
    db.session.add_all([local(text="l1"), remote(text="r1"), local(text="l2"), remote(text="r2")])
    db.session.commit()
    assert db_of(cap.span("autoflush")) == SQLITE  # several models: the session's own database
    assert {db_of(s) for s in cap.spans_named("send local_outbox")} == {SQLITE}
    assert {db_of(s) for s in cap.spans_named("send remote_outbox")} == {pg}
    assert len(cap.spans_named("send local_outbox")) == len(cap.spans_named("send remote_outbox")) == 2


def test_flush_names_each_send_database(cap: Capture, app: tuple[Any, Any, Any]) -> None:
    db, local, remote = app
    pg = ("postgresql", db.get_engine(bind="pg").url.database)
    db.signalbus.autoflush = False
    db.session.add_all([local(text="l1"), remote(text="r1"), remote(text="r2")])
    db.session.commit()
    assert db.signalbus.flush(wait=0) == 3
    assert db_of(cap.span("flush")) == SQLITE  # the bus's engine, as before
    assert {db_of(s) for s in cap.spans_named("send remote_outbox")} == {pg}
    assert {db_of(s) for s in cap.spans_named("send local_outbox")} == {SQLITE}
