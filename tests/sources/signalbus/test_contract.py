"""The core contract on Flask-SignalBus: the traced operation is the model's own send (``send outbox_contract``).

The models here are mapped at import, before ``install()``: the source finds them through
SQLAlchemy's mapper registries (the harness's models are mapped after it: ``mapper_configured``).
"""

from __future__ import annotations

import threading
from typing import ClassVar

import sqlalchemy
from flask import Flask
from flask_signalbus import SignalBus
from flask_sqlalchemy import SQLAlchemy

from tests.contract import SourceContract
from tests.sources.signalbus.harness import is_wrapped

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
db = SQLAlchemy(app)
bus = SignalBus(db)
released = threading.Event()
hanging = threading.Event()


class RefusedError(Exception):
    pass


class ContractSignal(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "outbox_contract"
    id = db.Column(db.Integer, primary_key=True)
    text = db.Column(db.String(50))

    def send_signalbus_message(self) -> None:
        if self.text == "refuse":
            raise RefusedError("the broker refused the message")
        if self.text == "hang":
            hanging.set()
            released.wait(1.0)  # a broker that does not answer (bounded, so the thread ends)


class TestSignalBusContract(SourceContract):
    source = "signalbus"
    span_name = "send outbox_contract"
    expected_failure: ClassVar[type[BaseException]] = RefusedError

    def succeed(self) -> None:
        ContractSignal(id=1, text="hello").send_signalbus_message()

    def fail(self) -> type[BaseException]:
        ContractSignal(id=2, text="refuse").send_signalbus_message()
        return RefusedError

    def orphan(self) -> None:
        # A send that does not return within orphan_timeout: the reaper ends it as an orphan.
        hanging.clear()
        threading.Thread(target=ContractSignal(id=3, text="hang").send_signalbus_message, daemon=True).start()
        assert hanging.wait(5.0)  # the send is in flight

    def assert_detached(self) -> None:
        assert not is_wrapped(vars(ContractSignal)["send_signalbus_message"])
        patched = ("flush", "flushmany", "flushordered", "_after_commit_handler", "_send_and_delete_signal_instances")
        for name in patched:
            assert not is_wrapped(vars(SignalBus)[name]), name

        class LateSignal(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "outbox_late"
            id = db.Column(db.Integer, primary_key=True)

            def send_signalbus_message(self) -> None:
                pass

        sqlalchemy.orm.configure_mappers()  # no mapper_configured listener of ours is left to wrap it
        assert not is_wrapped(vars(LateSignal)["send_signalbus_message"])
