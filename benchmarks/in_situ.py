"""What each piece costs inside a Django ``Model.save()``, against the same piece in a hot loop.

    python benchmarks/in_situ.py [--ops 3000]

Times, with ``perf_counter_ns`` around each call, the pieces of the floor F where they really run:
the naive bridge's SDK span start and end, histogram record and structlog line (the bridge of
``_harness.NaiveBridge`` in Django's pre/post_save receivers), and sigtrace's own sinks (span
start/end, metrics, audit) in a full installation. Beside them, each floor piece timed in a hot
loop, in the same process. Prints medians (µs). The wrapping adds a little to every in-situ
figure alike; what the table shows is how much more the same code costs inside an ORM call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import _harness as h
from bench_django import setup_django


def _timed(store: dict[str, list[int]], label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return func(*args, **kwargs)
        finally:
            store.setdefault(label, []).append(time.perf_counter_ns() - started)

    return timed


class _Stand:
    """Stands in for an SDK object of the bridge: its one method the bridge calls, timed."""

    def __init__(self, store: dict[str, list[int]], label: str, target: Any, method: str) -> None:
        setattr(self, method, _timed(store, label, getattr(target, method)))


def _hot(func: Callable[[], Any], n: int) -> float:
    for _ in range(n // 10):
        func()
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        func()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=3000)
    args = parser.parse_args()
    prov = h.providers()
    with tempfile.TemporaryDirectory(prefix="sigtrace-in-situ-") as tmp:
        _, item = setup_django(tmp)
        from django.db.models import signals

        save: Callable[[], None] = item.save  # type: ignore[attr-defined]
        times: dict[str, list[int]] = {}

        # The naive bridge, each SDK call timed where it runs.
        bridge = h.NaiveBridge(prov)
        bridge._tracer = _Stand(times, "naive: span start", bridge._tracer, "start_span")  # type: ignore[assignment]
        bridge._histogram = _Stand(times, "naive: histogram", bridge._histogram, "record")  # type: ignore[assignment]
        bridge._logger = _Stand(times, "naive: structlog line", bridge._logger, "msg")  # type: ignore[assignment]

        def pre(sender: object, instance: object = None, **_: object) -> None:
            bridge.pre(id(instance))

        def post(sender: object, instance: object = None, **_: object) -> None:
            span = bridge._open[id(instance)][0]
            span.end = _timed(times, "naive: span end", span.end)
            bridge.post(id(instance))

        signals.pre_save.connect(pre, weak=False, dispatch_uid="in_situ.pre")
        signals.post_save.connect(post, weak=False, dispatch_uid="in_situ.post")
        for _ in range(args.ops // 10):
            save()
        times.clear()
        for _ in range(args.ops):
            save()
        signals.pre_save.disconnect(dispatch_uid="in_situ.pre")
        signals.post_save.disconnect(dispatch_uid="in_situ.post")

        # sigtrace full, its sinks timed where they run.
        import sigtrace
        from sigtrace import _runtime

        sigtrace.install(
            sources=["django"],
            tracer_provider=prov.tracer_provider,
            meter_provider=prov.meter_provider,
            audit_file=os.devnull,
        )
        installation = _runtime.current()
        assert installation is not None
        spans, metric_sink, audit = installation.spans, installation.metrics, installation.audit
        assert spans is not None and metric_sink is not None and audit is not None
        # The engine calls each sink's methods through the instance: patching them there times them.
        spans.start = _timed(times, "sigtrace: span start (sink)", spans.start)  # type: ignore[method-assign]
        spans.end = _timed(times, "sigtrace: span end (sink)", spans.end)  # type: ignore[method-assign]
        metric_sink.finished = _timed(times, "sigtrace: metrics (sink)", metric_sink.finished)  # type: ignore[method-assign]
        audit.emit = _timed(times, "sigtrace: audit event + line (sink)", audit.emit)  # type: ignore[method-assign]
        for _ in range(args.ops // 10):
            save()
        for label in [key for key in times if key.startswith("sigtrace")]:
            del times[label]
        for _ in range(args.ops):
            save()
        sigtrace.uninstall()

        floor = {v.name: v.op for v in h.floor_variants(prov, lambda: None)}
        hot = {
            "span (start + end)": _hot(floor[h.FLOOR_SPAN], args.ops),
            "histogram": _hot(floor[h.FLOOR_HISTOGRAM], args.ops),
            "structlog line": _hot(floor[h.FLOOR_AUDIT], args.ops),
        }

    print("Inside Django Model.save() (UPDATE, SQLite), median µs per call:")
    for label, samples in times.items():
        print(f"  {label:<40} {statistics.median(samples) / 1000.0:7.1f}")
    print("The same floor pieces in a hot loop, median µs:")
    for label, value in hot.items():
        print(f"  {label:<40} {value:7.1f}")


if __name__ == "__main__":
    main()
