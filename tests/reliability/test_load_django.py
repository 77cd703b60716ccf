"""Load on Django: 8 threads saving at once into one SQLite file database, nothing lost or mispaired.

Default run: 8 threads x 100 saves; ``-m slow``: 8 x 10,000. Each thread saves inside its own caller span.
Checked: one span and one audit event per save, each span the child of its own thread's caller span and
carrying the pk of the row it saved (found back through the row's name), the in-flight table back to zero.
Django is set up the way tests/sources/django does it (its conftest, settings and test app are reused).
"""

from __future__ import annotations

import resource
import time
from collections import Counter

import pytest

pytest.importorskip("django")

from django.db import connections

from sigtrace import semconv
from sigtrace.testing import capture
from tests.sources.django.conftest import run_threads  # sets Django up (settings of tests/sources/django)
from tests.sources.django.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True, databases=["default"])

THREADS = 8


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.parametrize("per_thread", [100, pytest.param(10_000, marks=pytest.mark.slow)])
def test_django_8_threads_save(per_thread: int) -> None:
    connections.close_all()
    rss0, t0 = rss_bytes(), time.perf_counter()
    with capture(sources=["django"]) as cap:
        tracer = cap.tracer_provider.get_tracer("load")

        def thread_body(thread: int, _: int) -> None:
            with tracer.start_as_current_span(f"caller-{thread}"):
                for i in range(per_thread):
                    Author(name=f"t{thread}-{i}").save(using="default")

        run_threads(THREADS, 1, thread_body)
        seconds = time.perf_counter() - t0
        assert cap.installation is not None and cap.installation.in_flight() == 0
    connections.close_all()
    total = THREADS * per_thread
    spans = cap.spans_named("save testapp_author")
    callers = {s.get_span_context().span_id: s.name for s in cap.spans if s.name.startswith("caller-")}  # type: ignore[union-attr]
    assert len(callers) == THREADS
    names = {str(pk): name for pk, name in Author.objects.using("default").values_list("pk", "name")}
    assert len(names) == total
    assert len(spans) == total
    span_pk: dict[str, str] = {}
    for span in spans:
        pk = str((span.attributes or {})[semconv.SIGTRACE_PK])
        thread = names[pk][1:].split("-")[0]  # the row this span saved, and the thread that saved it
        assert span.parent is not None and callers[span.parent.span_id] == f"caller-{thread}"
        assert span.status.status_code.name == "UNSET"
        span_pk[format(span.get_span_context().span_id, "016x")] = pk  # type: ignore[union-attr]
    assert len(span_pk) == total and len(set(span_pk.values())) == total  # one span per row, one row per span
    audit = [e for e in cap.audit_events if e["source"] == "django"]
    audited = Counter(e["span_id"] for e in audit)
    assert len(audit) == total and set(audited.values()) == {1}
    assert set(audited) == set(span_pk)
    assert all(e["outcome"] == "ok" and str(e["pk"]) == span_pk[e["span_id"]] for e in audit)
    print(
        f"\n[reliability] load django: {THREADS} threads x {per_thread} = {total} saves, {len(spans)} spans, "
        f"{len(audit)} audit events, pairing exact, seconds={seconds:.1f}, "
        f"rss_growth_mb={(rss_bytes() - rss0) / 2**20:.1f}, "
        f"max_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}"
    )
