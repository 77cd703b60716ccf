"""flushmany from several threads on PostgreSQL (FOR UPDATE SKIP LOCKED): each message sent once, spans pair."""

from __future__ import annotations

import threading

import pytest

from sigtrace.sources.signalbus import ATTR_SENT
from sigtrace.testing import capture
from tests.outcomes import run_in_threads
from tests.sources.signalbus.harness import Harness

THREADS = 4
ROWS = 200


@pytest.mark.postgres
def test_parallel_flushmany_sends_each_row_once(pg_harness: Harness) -> None:
    h = pg_harness
    h.db.session.add_all([h.Deferred(text=f"d{i}") for i in range(ROWS)])
    h.db.session.commit()
    barrier = threading.Barrier(THREADS)
    with capture(sources=["signalbus"]) as cap:

        def work() -> None:
            with h.app.app_context():
                barrier.wait()
                h.bus.flushmany(models=[h.Deferred])

        run_in_threads(THREADS, work)
        assert sorted(h.texts()) == sorted(f"d{i}" for i in range(ROWS))  # each exactly once
        runs = cap.spans_named("flushmany deferred_outbox")
        assert len(runs) == THREADS
        assert sum(int((r.attributes or {})[ATTR_SENT]) for r in runs) == ROWS  # type: ignore[call-overload]
        sends = cap.spans_named("send deferred_outbox")
        assert len(sends) == ROWS
        run_ids = {r.get_span_context().span_id for r in runs}  # type: ignore[union-attr]
        assert all(s.parent is not None and s.parent.span_id in run_ids for s in sends)
        assert len({e["span_id"] for e in cap.audit_events}) == ROWS
        assert cap.installation is not None and cap.installation.in_flight() == 0
    assert h.pending(h.Deferred) == 0
