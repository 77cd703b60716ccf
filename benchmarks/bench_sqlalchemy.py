"""SQLAlchemy ORM: one unit of work (an attribute change + ``commit()``: one flush, one UPDATE, one COMMIT) on SQLite.

sigtrace reports two operations per unit of work (the flush and its ``update items`` batch, one
audit event held until the commit). OTel variant: opentelemetry-instrumentation-sqlalchemy on the
engine (a span per statement: UPDATE and COMMIT). The naive bridge: span + histogram + JSON line in
``before_flush`` / ``after_flush_postexec`` listeners. The floor's dispatches: two calls of a session
event with one no-op listener. SQLite runs with ``synchronous=OFF`` so that the disk's flush latency
does not drown the figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
from typing import Any

import _harness as h


def build(args: argparse.Namespace, prov: h.Providers, tmp: str) -> h.Suite:
    import sqlalchemy as sa
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from sqlalchemy import event, orm

    base: Any = orm.declarative_base()

    class Item(base):  # type: ignore[misc,valid-type]
        __tablename__ = "items"
        id = sa.Column(sa.Integer, primary_key=True)
        name = sa.Column(sa.String(100))
        count = sa.Column(sa.Integer, default=0)

    engine = sa.create_engine(f"sqlite:///{os.path.join(tmp, 'bench.sqlite')}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    base.metadata.create_all(engine)
    session = orm.Session(engine, expire_on_commit=False)
    item = Item(id=1, name="first")
    session.add(item)
    session.commit()
    counter = itertools.count()

    def op() -> None:
        item.count = next(counter)
        session.commit()

    def otel_setup() -> Any:
        instrumentor = SQLAlchemyInstrumentor()
        instrumentor.instrument(engine=engine, tracer_provider=prov.tracer_provider)
        return instrumentor.uninstrument

    bridge = h.NaiveBridge(prov)

    def on_before_flush(flushing: Any, _context: Any, _objects: Any) -> None:
        bridge.pre(id(flushing))

    def on_after_flush(flushing: Any, _context: Any) -> None:
        bridge.post(id(flushing))

    def naive_setup() -> Any:
        event.listen(orm.Session, "before_flush", on_before_flush)
        event.listen(orm.Session, "after_flush_postexec", on_after_flush)

        def teardown() -> None:
            event.remove(orm.Session, "before_flush", on_before_flush)
            event.remove(orm.Session, "after_flush_postexec", on_after_flush)

        return teardown

    # The same bridge making sigtrace's two reports: the flush's span and duration, and its update batch's
    # (Item's before_update / after_update, nested under the flush's), with the one audit line at the batch.
    matched = h.NaiveBridge(prov)

    def on_matched_before_flush(flushing: Any, _context: Any, _objects: Any) -> None:
        matched.pre(("flush", id(flushing)))

    def on_matched_after_flush(flushing: Any, _context: Any) -> None:
        matched.post(("flush", id(flushing)), line=False)

    def on_before_update(_mapper: Any, _connection: Any, target: Any) -> None:
        matched.pre(("update", id(target)))

    def on_after_update(_mapper: Any, _connection: Any, target: Any) -> None:
        matched.post(("update", id(target)))

    matched_listeners = (
        (orm.Session, "before_flush", on_matched_before_flush),
        (orm.Session, "after_flush_postexec", on_matched_after_flush),
        (Item, "before_update", on_before_update),
        (Item, "after_update", on_after_update),
    )

    def matched_setup() -> Any:
        for target, name, listener in matched_listeners:
            event.listen(target, name, listener)

        def teardown() -> None:
            for target, name, listener in matched_listeners:
                event.remove(target, name, listener)

        return teardown

    floor_session = orm.Session()
    event.listen(floor_session, "after_soft_rollback", lambda *_args: None)
    soft_rollback = floor_session.dispatch.after_soft_rollback

    def dispatch() -> None:
        soft_rollback(floor_session, None)
        soft_rollback(floor_session, None)

    variants = h.sigtrace_variants("sqlalchemy", op, prov, tmp)
    variants.append(h.Variant(h.OTEL, op, otel_setup))
    variants.append(h.Variant(h.NAIVE, op, naive_setup))
    variants.append(h.Variant(h.MATCHED, op, matched_setup))
    variants += h.floor_variants(prov, dispatch)

    def cleanup() -> None:
        session.close()
        engine.dispose()

    return h.Suite(
        "sqlalchemy",
        "attribute change + commit() (one flush, UPDATE + COMMIT, SQLite)",
        variants,
        notes=[
            "sigtrace: 2 operations per unit of work (flush + its update batch), audit held until the commit",
            "OTel: opentelemetry-instrumentation-sqlalchemy on the engine (UPDATE and COMMIT spans)",
            "naive bridge: before_flush / after_flush_postexec listeners",
            "naive bridge, sigtrace's reports: also Item's before_update / after_update (the batch's span and line)",
        ],
        cleanup=cleanup,
    )


if __name__ == "__main__":
    h.main(build, ["sqlalchemy", "opentelemetry-instrumentation-sqlalchemy"])
