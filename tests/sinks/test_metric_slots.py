"""The metric sink's per-label slots (sigtrace/sinks/metrics.py ``_Slot``) report what plain tally keys did.

A slot caches, per (source, system, name, collection), the tallies' in-flight and ``ok`` entries and
the duration's attribute set. These tests pin the exported points to what each operation implies,
including the paths that bypass the slot (errors, other outcomes, relabelled and duplicate starts).
"""

from __future__ import annotations

from typing import Any

from sigtrace import semconv
from sigtrace.core.operation import Operation
from sigtrace.sinks import metrics
from sigtrace.testing import Capture, capture


def _points(cap: Capture, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    return {frozenset(p.attributes.items()): p.value or 0 for p in cap.metric_points(name)}


def test_counts_and_durations_per_attribute_set_are_what_the_operations_imply() -> None:
    with capture(sources=["blinker"], audit=False) as cap:
        engine = cap.installation.engine  # type: ignore[union-attr]
        for i in range(5):
            engine.begin(Operation("test", "save", collection="a"), ("ok", i))
            engine.end(("ok", i))
        for i in range(2):
            engine.begin(Operation("test", "save", collection="a"), ("err", i))
            engine.end(("err", i), error=ValueError("no"))
        engine.begin(Operation("test", "delete", collection="b"), "skipped")
        engine.end("skipped", outcome=semconv.OUTCOME_SKIPPED)
        moved = engine.begin(Operation("test", "save", collection="a"), "moved")
        engine.describe(moved, db_system="sqlite")
        first = engine.begin(Operation("test", "save", collection="a"), "dup")
        assert engine.begin(Operation("test", "save", collection="a"), "dup") is first
        left_open = engine.begin(Operation("test", "save", collection="c"), "open")
        assert left_open is not None

        base = {"sigtrace.source": "test", "db.operation.name": "save", "db.collection.name": "a"}
        operations = _points(cap, semconv.METRIC_OPERATIONS)
        assert operations[frozenset({**base, "sigtrace.outcome": "ok"}.items())] == 5
        error = {**base, "sigtrace.outcome": "error", "error.type": "ValueError"}
        assert operations[frozenset(error.items())] == 2
        deleted = {"sigtrace.source": "test", "db.operation.name": "delete", "db.collection.name": "b"}
        assert operations[frozenset({**deleted, "sigtrace.outcome": "skipped"}.items())] == 1
        assert len(operations) == 3  # nothing counted for what has not ended (no zero points either)

        in_flight = _points(cap, semconv.METRIC_IN_FLIGHT)
        assert in_flight[frozenset(base.items())] == 1  # the duplicate start is one operation
        assert in_flight[frozenset({**base, "db.system.name": "sqlite"}.items())] == 1  # moved by describe()
        assert in_flight[frozenset({**base, "db.collection.name": "c"}.items())] == 1
        assert sum(in_flight.values()) == 3

        durations = _points(cap, semconv.METRIC_DURATION)
        assert durations[frozenset(base.items())] == 5  # ok: no outcome, no error.type on the duration
        assert durations[frozenset({**base, "error.type": "ValueError"}.items())] == 2
        assert durations[frozenset(deleted.items())] == 1

        engine.end("moved")
        engine.end("dup")
        engine.end("open")
        assert _points(cap, semconv.METRIC_IN_FLIGHT).get(frozenset(base.items())) == 0
        moved_ok = {**base, "db.system.name": "sqlite", "sigtrace.outcome": "ok"}
        assert _points(cap, semconv.METRIC_OPERATIONS)[frozenset(moved_ok.items())] == 1


def test_beyond_the_attribute_set_limit_slots_count_to_the_overflow_set(monkeypatch: Any) -> None:
    monkeypatch.setattr(metrics, "MAX_ATTRIBUTE_SETS", 4)
    with capture(sources=["blinker"], audit=False) as cap:
        engine = cap.installation.engine  # type: ignore[union-attr]
        for i in range(6):
            engine.begin(Operation("test", "save", collection=f"t{i}"), i)
            engine.end(i)
        operations = _points(cap, semconv.METRIC_OPERATIONS)
        assert sum(operations.values()) == 6
        assert operations[frozenset({"otel.metric.overflow": True}.items())] >= 1
        assert sum(_points(cap, semconv.METRIC_IN_FLIGHT).values()) == 0
