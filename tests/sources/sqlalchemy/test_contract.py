"""The core contract on the SQLAlchemy source (SQLite file, sync sessions; models mapped before ``install()``).

The traced operation is an ORM ``update()`` statement through ``Session.execute`` (one operation,
audited at the commit that follows); the failure an ORM ``insert()`` that violates a unique
constraint; the orphan a statement that never returns within the orphan timeout (a listener of
the application's own blocks it).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy import event, orm
from sqlalchemy.exc import IntegrityError

from tests.contract import SourceContract
from tests.sources.sqlalchemy.models import Base, Customer

_engine: sa.Engine | None = None
_names = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def contract_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    global _engine
    path: Path = tmp_path_factory.mktemp("sa-contract") / "contract.sqlite"
    _engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})
    Base.metadata.create_all(_engine)
    with orm.Session(_engine) as session:
        session.add(Customer(id=1, name="contract"))
        session.commit()
    yield _engine
    _engine.dispose()
    _engine = None


def _e() -> sa.Engine:
    assert _engine is not None
    return _engine


class TestSQLAlchemyContract(SourceContract):
    source = "sqlalchemy"
    span_name = "update sa_customers"
    expected_failure: ClassVar[type[BaseException]] = IntegrityError

    def succeed(self) -> None:
        with orm.Session(_e()) as session:
            session.execute(sa.update(Customer).where(Customer.id == 1).values(api_token=f"t{next(_names)}"))
            session.commit()

    def fail(self) -> type[BaseException]:
        with orm.Session(_e()) as session:
            try:
                session.execute(sa.insert(Customer).values(id=1, name="duplicate"))
            finally:
                session.rollback()
        return IntegrityError

    def orphan(self) -> None:
        release = threading.Event()
        entered = threading.Event()

        def block(state: orm.ORMExecuteState) -> None:
            # The application's own listener, after sigtrace's: the statement waits here.
            entered.set()
            release.wait(10)

        event.listen(orm.Session, "do_orm_execute", block)

        def run() -> None:
            with orm.Session(_e()) as session:
                session.execute(sa.update(Customer).where(Customer.id == 1).values(name="contract"))
                session.commit()

        worker = threading.Thread(target=run)
        worker.start()
        entered.wait(10)
        event.remove(orm.Session, "do_orm_execute", block)
        # Released once the reaper had its chance (the contract waits up to 5 s for it).
        threading.Timer(1.0, release.set).start()
        self._orphan_thread = worker

    def assert_detached(self) -> None:
        from sigtrace.sources.kit.sa_session import TRACKER
        from sigtrace.sources.sqlalchemy import _MAPPER_EVENTS

        assert not hasattr(orm.Session._flush, "__wrapped__"), "Session._flush is still patched"
        assert not hasattr(orm.Session._bulk_save_mappings, "__wrapped__")
        # An instance's dispatch joins the class-level listeners: none is left on Session or Mapper.
        session = orm.Session(_e())
        for name in (
            "do_orm_execute",
            "after_transaction_create",
            "after_commit",
            "after_rollback",
            "after_transaction_end",
        ):
            assert not getattr(session.dispatch, name), name
        session.close()
        mapper = sa.inspect(Customer)
        for name, _operation, _before in _MAPPER_EVENTS:
            assert not getattr(mapper.dispatch, name), name
        assert not TRACKER.active

    def test_orphan_is_reaped_and_counted(self) -> None:
        super().test_orphan_is_reaped_and_counted()
        thread: Any = getattr(self, "_orphan_thread", None)
        if thread is not None:
            thread.join(15)
