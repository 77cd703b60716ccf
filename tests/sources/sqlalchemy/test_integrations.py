"""Flask-SQLAlchemy 3 (``db.session`` is a scoped session) and SQLModel (its ``Session`` subclasses SQLAlchemy's):
traced with no extra call; and the version check at install."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import sigtrace.sources as sources_module
from sigtrace import semconv
from sigtrace._runtime import select_sources
from sigtrace.sources import REGISTRY
from sigtrace.sources import sqlalchemy as source
from sigtrace.testing import capture


def test_flask_sqlalchemy_3(tmp_path: Path) -> None:
    flask = pytest.importorskip("flask", reason="Flask is not installed (extra test-sources)")
    flask_sqlalchemy = pytest.importorskip(
        "flask_sqlalchemy", reason="Flask-SQLAlchemy 3 is not installed (extra test-sources)"
    )
    if int(importlib.metadata.version("flask-sqlalchemy").split(".")[0]) < 3:
        pytest.skip("Flask-SQLAlchemy 3 is needed (extra test-sources); an older one is installed")
    app = flask.Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'flask.sqlite'}"
    db = flask_sqlalchemy.SQLAlchemy(app)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "fsa_notes"
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(50))

    with app.app_context():
        db.create_all()
        db.session.add(Note(id=1, text="early"))  # a session (scoped, per app context) made before install()
        with capture(sources=["sqlalchemy"]) as cap:
            db.session.commit()
            db.session.execute(sa.update(Note).values(text="late"))
            db.session.rollback()
            events = [(e["operation"], e["model"], e["outcome"]) for e in cap.audit_events]
            assert events == [("insert", "Note", semconv.OUTCOME_OK), ("update", "Note", semconv.OUTCOME_ROLLED_BACK)]
            assert cap.span("insert fsa_notes").parent is not None
        db.session.remove()


def test_sqlmodel_session() -> None:
    sqlmodel = pytest.importorskip("sqlmodel", reason="SQLModel is not installed (extra test-sources)")

    namespace: dict[str, Any] = {"SQLModel": sqlmodel.SQLModel, "Field": sqlmodel.Field}
    exec(  # a table model defined here: SQLModel's metaclass needs real annotations at class creation
        "class Hero(SQLModel, table=True):\n"
        "    __tablename__ = 'sqlmodel_heroes'\n"
        "    id: int | None = Field(default=None, primary_key=True)\n"
        "    name: str\n",
        namespace,
    )
    hero_model = namespace["Hero"]
    engine = sqlmodel.create_engine("sqlite://")
    hero_model.metadata.create_all(engine, tables=[hero_model.__table__])
    with capture(sources=["sqlalchemy"], capture_values=True) as cap, sqlmodel.Session(engine) as session:
        hero = hero_model(name="Deadpond")
        session.add(hero)
        session.commit()
        session.refresh(hero)
        hero.name = "Rusty"
        session.add(hero)
        session.commit()
        ops = [(e["operation"], e["pk"], e.get("values")) for e in cap.audit_events]
        assert ops == [
            ("insert", "1", {"id": [None, 1], "name": [None, "Deadpond"]}),
            ("update", "1", {"name": ["Deadpond", "Rusty"]}),
        ]


def test_version_range(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(source.supported_version(v) for v in ("1.4.54", "2.0.58", "2.1.0"))
    assert not source.supported_version("2.2.0") and not source.supported_version("1.3.24")
    assert source.supported_version()  # the installed one
    # A version outside the range (as if SQLAlchemy 3 were installed): install() names the range.
    spec = REGISTRY["sqlalchemy"]
    assert spec.supported == source.SUPPORTED_VERSIONS
    monkeypatch.setattr(sources_module.metadata, "version", lambda _name: "3.0.0")
    with caplog.at_level(logging.WARNING, logger="sigtrace"):
        assert "sqlalchemy" not in [s.name for s in select_sources(None, frozenset())]
        assert [s.name for s in select_sources(("sqlalchemy",), frozenset())] == ["sqlalchemy"]
    assert any(">=1.4,<2.2" in record.getMessage() for record in caplog.records)
    monkeypatch.setattr(source._sa, "__version__", "1.3.24")
    with pytest.raises(RuntimeError, match=r"needs SQLAlchemy >=1\.4,<2\.2"), capture(sources=["sqlalchemy"]):
        pass
