"""A sent message is kept only if the session that deletes its outbox row commits (issue 19), and the
SQLAlchemy source beside Flask-SignalBus on SQLAlchemy 1.4: flushes beside the message spans.

Each test runs on SQLite and on the real PostgreSQL (``harness`` is parametrized; PostgreSQL skips
when the server is absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

import sigtrace
from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.signalbus.harness import Harness


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["signalbus"]) as cap:
        yield cap


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def sends(cap: Capture) -> list[dict[str, Any]]:
    return [e for e in cap.audit_events if e["operation"] == "send"]


def test_a_send_whose_session_rolls_back_is_rolled_back(cap: Capture, harness: Harness) -> None:
    h = harness
    h.fail_texts.add("o2")
    for text in ("o1", "o2", "o3"):
        h.db.session.add(h.Outbox(text=text))
    h.db.session.commit()  # autoflush: o1 sent, o2 fails, the signal session rolls back (o1's delete too)
    assert h.pending(h.Outbox) == 3
    # The queue is a set: o1 and o3 are sent before o2 or not. Each sent before the failure went out,
    # but its row stayed (it will be sent again): the audit log says rolled_back, not ok.
    sent_before = {text for _kind, _id, text, _headers in h.sent}
    assert sent_before <= {"o1", "o3"}
    outcomes = sorted(e["outcome"] for e in sends(cap))
    assert outcomes == [semconv.OUTCOME_ERROR] + [semconv.OUTCOME_ROLLED_BACK] * len(sent_before)
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_a_send_whose_session_commits_is_ok(cap: Capture, harness: Harness) -> None:
    h = harness
    for text in ("a1", "a2"):
        h.db.session.add(h.Outbox(text=text))
    h.db.session.commit()
    assert h.pending(h.Outbox) == 0
    assert sorted(e["outcome"] for e in sends(cap)) == [semconv.OUTCOME_OK] * 2


def test_flushes_beside_the_message_spans_when_both_sources_are_named(harness: Harness) -> None:
    h = harness
    with capture(sources=["signalbus", "sqlalchemy"]) as cap:
        h.db.session.add(h.Outbox(text="both"))
        h.db.session.commit()
        assert h.pending(h.Outbox) == 0
        spans = {s.name: s for s in cap.spans}
        (insert,) = [s for s in cap.spans if s.name == "insert outbox"]
        (delete,) = [s for s in cap.spans if s.name == "delete outbox"]
        flushes = [s for s in cap.spans if s.name.startswith("flush")]
        assert len(flushes) == 2
        # The application's flush holds its insert; the autoflush run (after the commit) sends the
        # message, then the signal session's flush deletes its row, under the run.
        assert parent_of(insert) in {span_id(f) for f in flushes}
        run = spans["autoflush outbox"]
        delete_flush = next(f for f in flushes if span_id(f) == parent_of(delete))
        assert parent_of(delete_flush) == span_id(run)
        assert parent_of(spans["send outbox"]) == span_id(run)
        outcomes = {(e["operation"], e["outcome"]) for e in cap.audit_events}
        assert outcomes == {("insert", "ok"), ("send", "ok"), ("delete", "ok")}


def test_sqlalchemy_source_stays_out_on_1_4_unless_named(harness: Harness) -> None:
    installation = sigtrace.install(audit=False)
    try:
        assert "signalbus" in installation.sources
        assert "sqlalchemy" not in installation.sources
    finally:
        sigtrace.uninstall()


def test_a_signalbus_flush_holds_its_sends_and_the_orm_flush_deleting_their_rows(harness: Harness) -> None:
    h = harness
    for text in ("d1", "d2"):
        h.db.session.add(h.Deferred(text=text))
    h.db.session.commit()
    with capture(sources=["signalbus", "sqlalchemy"]) as cap:
        assert h.bus.flush(models=[h.Deferred], wait=0) == 2
        run = cap.span("flush deferred_outbox")
        under_run = [s for s in cap.spans if parent_of(s) == span_id(run)]
        assert sorted(s.name for s in under_run if s.name.startswith("send")) == ["send deferred_outbox"] * 2
        orm_flushes = [s for s in under_run if (s.attributes or {}).get(semconv.SIGTRACE_SOURCE) == "sqlalchemy"]
        assert orm_flushes, [s.name for s in under_run]
        deletes = cap.spans_named("delete deferred_outbox")
        assert deletes and all(parent_of(d) in {span_id(f) for f in orm_flushes} for d in deletes)
        outcomes = sorted((e["operation"], e["outcome"]) for e in cap.audit_events)
        assert outcomes == [("delete", "ok")] * 2 + [("send", "ok")] * 2


def test_spans_only_listens_to_no_session_transaction(harness: Harness) -> None:
    """Without the audit log and metrics nothing waits for a commit (``Engine.holds_writes``): no listener on
    ``Session`` mirrors its transactions; each send still has its span, the failed one an error."""
    from sigtrace.sources.kit.sa_session import TRACKER

    h = harness
    with capture(sources=["signalbus"]):
        assert TRACKER.active  # what the check below would see listening
    h.fail_texts.add("s2")
    with capture(sources=["signalbus"], audit=False, metrics=False) as spans_only:
        assert not TRACKER.active
        for text in ("s1", "s2"):
            h.db.session.add(h.Outbox(text=text))
        h.db.session.commit()
        statuses = sorted(s.status.is_ok for s in spans_only.spans_named("send outbox"))
        assert statuses in ([False], [False, True])  # s1 sent before s2 or not (the queue is a set)
        assert spans_only.installation is not None and spans_only.installation.in_flight() == 0
    assert h.pending(h.Outbox) == 2
