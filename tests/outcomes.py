"""What the transaction tests of every SQL source read: audit events of one table, outcomes by pk, counts."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import wrapt

from sigtrace import semconv
from sigtrace.testing import Capture, capture


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


#: The orphan timeout of the held-writes tests: longer than any write takes on a loaded machine, so that
#: only :func:`reap_past_timeout` ends what they hold (a write still running is never reaped as in flight).
HELD_TIMEOUT = 60.0


def reap_past_timeout(cap: Capture) -> None:
    """Run the reaper's pass as it will run ``HELD_TIMEOUT`` from now: what is held is reported unknown.

    The same ``InFlightTable.reap`` the reaper thread runs, with its clock moved on, instead of a real wait
    that a slow write on a shared machine could outlast (and be reaped as in flight, not as held).
    """
    assert cap.installation is not None
    cap.installation.engine.table.reap(time.monotonic() + HELD_TIMEOUT + 1.0)


def run_in_threads(threads: int, work: Callable[[], None]) -> None:
    """Run ``work`` in ``threads`` real threads at once and fail with every exception any of them raised."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=guarded) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors


def _patched(owner: type, name: str) -> bool:
    return isinstance(vars(owner)[name], wrapt.FunctionWrapper)


@contextlib.contextmanager
def spans_only(source: str, owner: type, *names: str) -> Iterator[Capture]:
    """A capture of ``source`` with spans only (no audit log, no metrics: nothing waits for a commit,
    ``Engine.holds_writes``), checked to leave the transaction methods ``owner.<names>`` unpatched that a full
    installation patches; and to leave nothing in flight."""
    with capture(sources=[source]):
        assert [name for name in names if not _patched(owner, name)] == []  # what the check below would see
    with capture(sources=[source], audit=False, metrics=False) as cap:
        assert cap.installation is not None and not cap.installation.engine.holds_writes
        assert [name for name in names if _patched(owner, name)] == []
        yield cap
        assert cap.installation.in_flight() == 0
