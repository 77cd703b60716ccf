"""Flask-SignalBus: one outbox message sent by autoflush: ``session.add(row); session.commit()`` on SQLite.

The commit inserts the row, then SignalBus's after-commit handler loads it, calls the model's
``send_signalbus_message()`` (a trivial one here), deletes it and commits again. Runs on the old stack
this library needs (Flask<3, Flask-SQLAlchemy 2.5, SQLAlchemy 1.4): run.py starts it with
``--signalbus-python``. OTel variant: opentelemetry-instrumentation-sqlalchemy on the app's engine,
where installed in that environment. Flask-SignalBus sends no signals: its "dispatch" (floor) is the
library calling the model's ``send_signalbus_message()``, timed as two such calls.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import _harness as h


def build(args: argparse.Namespace, prov: h.Providers, tmp: str) -> h.Suite:
    from flask import Flask
    from flask_signalbus import SignalBusMixin
    from flask_sqlalchemy import SQLAlchemy

    class SignalSQLAlchemy(SignalBusMixin, SQLAlchemy):  # type: ignore[misc]
        pass

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{os.path.join(tmp, 'signalbus.sqlite')}"
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    db = SignalSQLAlchemy(app)
    sent = [0]

    class Outbox(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "outbox"
        id = db.Column(db.Integer, primary_key=True, autoincrement=True)
        text = db.Column(db.String(100), nullable=False)

        def send_signalbus_message(self) -> None:
            sent[0] += 1

    ctx = app.app_context()
    ctx.push()
    from sqlalchemy import event

    # As for the other SQLite benchmarks: no fsync per commit, or the disk's latency is all one sees.
    event.listen(db.engine, "connect", lambda conn, _record: conn.execute("PRAGMA synchronous=OFF"))
    db.create_all()

    def op() -> None:
        db.session.add(Outbox(text="hello"))
        db.session.commit()

    variants = h.sigtrace_variants("signalbus", op, prov, tmp)
    notes = ["Flask-SignalBus sends no signals: the floor's dispatch is two calls of send_signalbus_message()"]
    try:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    except ImportError:
        notes.append("OTel: opentelemetry-instrumentation-sqlalchemy not installed in this environment")
    else:

        def otel_setup() -> Any:
            SQLAlchemyInstrumentor().instrument(engine=db.engine, tracer_provider=prov.tracer_provider)
            return SQLAlchemyInstrumentor().uninstrument

        variants.append(h.Variant(h.OTEL, op, otel_setup))
        notes.append("OTel: opentelemetry-instrumentation-sqlalchemy instrument(engine=db.engine)")
    # The naive bridge where this library has no signals: around the one call it makes per message
    # (what sigtrace's send span covers), the floor's pieces and nothing else. sigtrace also reports
    # the autoflush run (2 operations per commit); the bridge reports the send only.
    bridge = h.NaiveBridge(prov)
    original_send = Outbox.send_signalbus_message

    def bridged_send(self: Any) -> None:
        bridge.pre(id(self))
        try:
            original_send(self)
        finally:
            bridge.post(id(self))

    def naive_setup() -> Any:
        Outbox.send_signalbus_message = bridged_send

        def teardown() -> None:
            Outbox.send_signalbus_message = original_send

        return teardown

    variants.append(h.Variant(h.NAIVE, op, naive_setup))
    notes.append("naive bridge: around send_signalbus_message() (sigtrace: the autoflush run and the send)")
    # The same bridge making sigtrace's two reports: also the autoflush run's span and duration, around the
    # after-commit handler where it has messages to send (the run's audit event is its sends' lines).
    from flask_signalbus import signalbus as signalbus_module

    queue_key = signalbus_module._SIGNALS_TO_FLUSH_SESSION_INFO_KEY
    original_handler = signalbus_module.SignalBus._after_commit_handler

    def bridged_handler(self: Any, session: Any) -> Any:
        if not session.info.get(queue_key):
            return original_handler(self, session)
        bridge.pre(("run", id(session)))
        try:
            return original_handler(self, session)
        finally:
            bridge.post(("run", id(session)), line=False)

    def matched_setup() -> Any:
        signalbus_module.SignalBus._after_commit_handler = bridged_handler
        Outbox.send_signalbus_message = bridged_send

        def teardown() -> None:
            signalbus_module.SignalBus._after_commit_handler = original_handler
            Outbox.send_signalbus_message = original_send

        return teardown

    variants.append(h.Variant(h.MATCHED, op, matched_setup))
    notes.append("naive bridge, sigtrace's reports: also the autoflush run's span and duration (around the handler)")
    row = Outbox(text="floor")

    def dispatch() -> None:
        row.send_signalbus_message()
        row.send_signalbus_message()

    variants += h.floor_variants(prov, dispatch)

    def cleanup() -> None:
        db.session.remove()
        ctx.pop()

    return h.Suite("signalbus", "session.add + commit (autoflush send, SQLite)", variants, notes=notes, cleanup=cleanup)


if __name__ == "__main__":
    h.main(build, ["flask-signalbus", "flask-sqlalchemy", "sqlalchemy", "opentelemetry-instrumentation-sqlalchemy"])
