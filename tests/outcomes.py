"""What the transaction tests of every SQL source read: audit events of one table, outcomes by pk, counts."""

from __future__ import annotations

from typing import Any

from sigtrace import semconv
from sigtrace.testing import Capture


def events_of(cap: Capture, collection: str) -> list[dict[str, Any]]:
    """The audit events of one table, in the order they were written."""
    return [e for e in cap.audit_events if e.get("collection") == collection]


def outcomes_of(cap: Capture, collection: str) -> dict[str, list[str]]:
    """Each pk's outcomes, in the order they were written (a pk written twice has two)."""
    found: dict[str, list[str]] = {}
    for event in events_of(cap, collection):
        found.setdefault(str(event.get("pk")), []).append(event["outcome"])
    return found


def counted(cap: Capture, outcome: str) -> float:
    """``sigtrace.operations`` under one outcome."""
    return cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome=outcome)
