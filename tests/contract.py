"""The contract every source must keep, run by each source's tests with its own harness.

Subclass :class:`SourceContract` in a test module (its name must start with ``Test``) and
implement the harness methods: how to perform one successful operation, one that fails, a pre
signal without a post, and many operations at once. The tests here then check spans, audit
events and metric points against the conventions of docs/conventions.md; after each test, every
span and audit event it produced is checked against the documented vocabulary (``tests/vocabulary.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import sigtrace
from sigtrace import semconv
from sigtrace.testing import Capture
from tests.outcomes import run_in_threads
from tests.vocabulary import Recorder


class SourceContract:
    """Mix into a ``Test...`` class; implement the harness methods below."""

    #: The source under test (``sources=[...]``).
    source: ClassVar[str]
    #: Extra options of install() for this source's tests.
    install_options: ClassVar[dict[str, Any]] = {}
    #: Span name of the operation :meth:`succeed` performs.
    span_name: ClassVar[str]
    #: Threads x operations per thread of the concurrency check.
    threads: ClassVar[int] = 8
    per_thread: ClassVar[int] = 50

    # --- harness (implement per source) ---

    def succeed(self) -> None:
        """Perform one successful write operation that the source traces."""
        raise NotImplementedError

    def fail(self) -> type[BaseException]:
        """Perform one operation that raises (the test expects it to propagate); return its type."""
        raise NotImplementedError

    def orphan(self) -> None:
        """Send a pre signal whose post never comes and that no failure path ends."""
        raise NotImplementedError

    def run_concurrently(self, threads: int, per_thread: int) -> int:
        """Perform ``threads * per_thread`` successful operations at once; return how many ran.

        Default: real threads calling :meth:`succeed`. Async sources override with tasks.
        """
        barrier = threading.Barrier(threads)

        def work() -> None:
            barrier.wait()
            for _ in range(per_thread):
                self.succeed()

        run_in_threads(threads, work)
        return threads * per_thread

    # --- fixtures ---

    @pytest.fixture(autouse=True)
    def vocabulary(self, request: pytest.FixtureRequest) -> Iterator[Recorder]:
        """After each test: every span and audit event of its captures uses only documented names."""
        recorder = Recorder()
        request.instance._vocabulary = recorder
        yield recorder
        recorder.check()

    def capture(self, **options: Any) -> AbstractContextManager[Capture]:
        """``sigtrace.testing.capture`` with the vocabulary recorder of the running test watching."""
        recorder: Recorder | None = getattr(self, "_vocabulary", None)
        return (recorder or Recorder()).capture(**options)

    @pytest.fixture
    def cap(self, vocabulary: Recorder) -> Iterator[Capture]:
        with vocabulary.capture(sources=[self.source], **self.install_options) as cap:
            yield cap

    # --- the contract ---

    def test_success_span_audit_metrics_agree(self, cap: Capture) -> None:
        self.succeed()
        span = cap.span(self.span_name)
        assert span.kind == SpanKind.CLIENT
        assert span.status.status_code == StatusCode.UNSET
        assert span.attributes is not None
        assert span.attributes[semconv.SIGTRACE_SOURCE] == self.source
        assert semconv.ERROR_TYPE not in span.attributes
        events = cap.audit_for(span)
        assert len(events) == 1, cap.audit_events
        assert events[0]["outcome"] == semconv.OUTCOME_OK
        assert events[0]["source"] == self.source
        assert cap.metric_total(semconv.METRIC_DURATION, sigtrace__source=self.source) == 1
        assert cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome="ok") == 1
        for point in cap.metric_points(semconv.METRIC_DURATION):
            assert semconv.ERROR_TYPE not in point.attributes
            assert tuple(point.point.explicit_bounds) == semconv.DURATION_BUCKETS
        assert cap.installation is not None and cap.installation.in_flight() == 0

    def test_failure_is_an_error_span_at_once(self, cap: Capture) -> None:
        with pytest.raises(BaseException) as raised:
            self.fail()
        expected = self.expected_failure
        assert isinstance(raised.value, expected)
        failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
        assert len(failed) == 1, [(s.name, s.status) for s in cap.spans]
        span = failed[0]
        assert span.attributes is not None
        assert span.attributes[semconv.ERROR_TYPE] == type(raised.value).__qualname__
        assert not span.attributes.get(semconv.SIGTRACE_ORPHANED)
        assert any(event.name == "exception" for event in span.events)
        (event,) = cap.audit_for(span)
        assert event["outcome"] == semconv.OUTCOME_ERROR
        assert event["error_type"] == type(raised.value).__qualname__
        assert cap.metric_total(semconv.METRIC_DURATION, error__type=type(raised.value).__qualname__) == 1, (
            cap.metric_points(semconv.METRIC_DURATION)
        )
        assert cap.installation is not None and cap.installation.in_flight() == 0

    expected_failure: ClassVar[type[BaseException]] = Exception

    def test_orphan_is_reaped_and_counted(self) -> None:
        with self.capture(sources=[self.source], orphan_timeout=0.05, **self.install_options) as cap:
            self.orphan()
            assert cap.installation is not None
            deadline = time.monotonic() + 5.0
            while cap.installation.in_flight() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert cap.installation.in_flight() == 0
            orphans = [s for s in cap.spans if s.attributes and s.attributes.get(semconv.SIGTRACE_ORPHANED)]
            assert len(orphans) == 1
            (event,) = cap.audit_for(orphans[0])
            assert event["outcome"] == semconv.OUTCOME_UNKNOWN
            assert cap.metric_total(semconv.METRIC_ORPHANS) == 1

    def test_concurrent_operations_pair_exactly(self, cap: Capture) -> None:
        performed = self.run_concurrently(self.threads, self.per_thread)
        spans = cap.spans_named(self.span_name)
        assert len(spans) == performed
        span_ids = {format(s.get_span_context().span_id, "016x") for s in spans}  # type: ignore[union-attr]
        audited = [e for e in cap.audit_events if e.get("span_id") in span_ids]
        assert len(audited) == performed
        assert len({e["span_id"] for e in audited}) == performed
        assert all(e["outcome"] == semconv.OUTCOME_OK for e in audited)
        assert cap.installation is not None and cap.installation.in_flight() == 0

    def test_install_is_idempotent(self, cap: Capture) -> None:
        again = sigtrace.install(sources=[self.source])
        assert again is cap.installation
        self.succeed()
        assert len(cap.spans_named(self.span_name)) == 1
        assert len(cap.audit_events) == 1

    def test_uninstall_leaves_nothing_attached(self) -> None:
        with self.capture(sources=[self.source], **self.install_options) as cap:
            self.succeed()
            assert len(cap.spans_named(self.span_name)) == 1
        cap.clear()
        self.succeed()
        assert cap.spans == ()
        assert cap.audit_events == []
        self.assert_detached()

    def assert_detached(self) -> None:
        """Check the library holds no sigtrace receiver or patch (implement per source)."""
        raise NotImplementedError
