"""8 threads x 1,000 saves: every pre_save paired with its own post_save (the contract suite does 8 x 50)."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import connections

from sigtrace import semconv
from sigtrace.testing import capture
from tests.sources.django.conftest import run_threads
from tests.sources.django.testapp.models import Author

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]

THREADS, PER_THREAD = 8, 1_000


def test_threads_pair_exactly(alias: str) -> None:
    with capture(sources=["django"]) as cap:
        tracer = cap.tracer_provider.get_tracer("load")

        def save(thread: int, i: int) -> None:
            # Every other save runs under a caller span of its own thread: the parent must be that span.
            if i % 2:
                with tracer.start_as_current_span(f"caller-{thread}"):
                    Author(name=f"t{thread}-{i}").save(using=alias)
            else:
                Author(name=f"t{thread}-{i}").save(using=alias)

        run_threads(THREADS, PER_THREAD, save)
        assert cap.installation is not None and cap.installation.in_flight() == 0
    connections.close_all()
    total = THREADS * PER_THREAD
    spans = cap.spans_named("save testapp_author")
    assert len(spans) == total
    callers = {s.get_span_context().span_id: s.name for s in cap.spans if s.name.startswith("caller-")}  # type: ignore[union-attr]
    names = {str(pk): name for pk, name in Author.objects.using(alias).values_list("pk", "name")}
    by_id = {}
    for span in spans:
        attributes = span.attributes or {}
        name = names[str(attributes[semconv.SIGTRACE_PK])]
        thread, i = name[1:].split("-")
        if int(i) % 2:
            assert span.parent is not None and callers[span.parent.span_id] == f"caller-{thread}"
        else:
            assert span.parent is None
        assert span.status.status_code.name == "UNSET"
        by_id[span.get_span_context().span_id] = attributes[semconv.SIGTRACE_PK]  # type: ignore[union-attr]
    assert len(by_id) == total
    assert len(set(by_id.values())) == total  # one span per row
    audited = Counter(e["span_id"] for e in cap.audit_events)
    assert len(audited) == total and set(audited.values()) == {1}
    assert {int(k, 16) for k in audited} == set(by_id)
    assert all(e["outcome"] == "ok" and e["created"] is True for e in cap.audit_events)
    assert Author.objects.using(alias).count() == total
