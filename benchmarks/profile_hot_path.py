"""Profile sigtrace's hot path (begin/end/_start/_finish and the sinks) on the blinker source.

    python benchmarks/profile_hot_path.py                 # pyinstrument tree (pip install pyinstrument)
    python benchmarks/profile_hot_path.py --cprofile      # cProfile, sorted by own time
    python benchmarks/profile_hot_path.py --by-file       # cProfile's own time summed per file, full vs naive bridge
    python benchmarks/profile_hot_path.py --pieces        # each piece alone, CPU µs per call (thread time)
    py-spy record -o profile.svg -- python benchmarks/profile_hot_path.py --ops 200000 --bare

sigtrace full (span + metrics + audit line to /dev/null) on an application's own blinker pair.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _harness as h
from blinker import Namespace


class Item:
    pk = 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=50_000)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--bare", action="store_true", help="no in-process profiler (for py-spy)")
    parser.add_argument("--spans-only", action="store_true")
    parser.add_argument("--by-file", action="store_true")
    parser.add_argument("--pieces", action="store_true")
    args = parser.parse_args()
    if args.pieces:
        pieces()
        return

    import sigtrace

    prov = h.providers()
    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    sigtrace.trace_signals(pre, post, collection="items")
    options = {"audit": False, "metrics": False} if args.spans_only else {"audit_file": os.devnull}
    sigtrace.install(
        sources=["blinker"], tracer_provider=prov.tracer_provider, meter_provider=prov.meter_provider, **options
    )
    item = Item()

    def run(n: int) -> None:
        for _ in range(n):
            pre.send(item)
            post.send(item)

    run(1000)
    if args.by_file:
        by_file(run, args.ops, h.NaiveBridge(prov), pre, post)
    elif args.bare:
        run(args.ops)
    elif args.cprofile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(run, args.ops)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(35)
    else:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        run(args.ops)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    sigtrace.uninstall()


def _thread_us(fn: Callable[[], object], n: int = 2000, repeat: int = 15) -> float:
    """CPU µs per call of ``fn``, best of ``repeat``: this thread's CPU time (a shared machine's other work is
    not counted, though it still slows the caches)."""
    clock = time.thread_time_ns
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        for _ in range(n):
            fn()
        best = min(best, (clock() - t0) / n / 1000.0)
    return best


def pieces() -> None:
    """Each piece of the hot path alone, and the floor piece it stands for: where sigtrace's cost is."""
    import structlog
    from opentelemetry.trace import SpanKind

    from sigtrace.core.operation import Operation
    from sigtrace.sinks.audit import AuditSink, JsonLinesWriter
    from sigtrace.sinks.metrics import MetricSink
    from sigtrace.sinks.redaction import Redactor
    from sigtrace.sinks.spans import SpanSink

    prov = h.providers()
    tracer = prov.tracer_provider.get_tracer("floor")
    histogram = prov.meter_provider.get_meter("floor").create_histogram("floor", unit="s")
    logger = structlog.wrap_logger(
        structlog.WriteLogger(open(os.devnull, "w")),  # noqa: SIM115
        processors=[structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer()],
        cache_logger_on_first_use=True,
    )
    spans = SpanSink(prov.tracer_provider, 256)
    metrics = MetricSink(prov.meter_provider)
    writer = JsonLinesWriter(os.devnull, service_name="bench")
    audit = AuditSink(
        [("jsonl", writer)],
        service_name="bench",
        redactor=Redactor(),
        capture_values=False,
        audit_reads=False,
        actor=None,
    )

    def operation() -> Operation:
        op = Operation("blinker", "save", model="Item", collection="items", signal="pre_save")
        op.start_ns, op.start_monotonic = time.time_ns(), time.monotonic()
        return op

    def span_sink() -> None:
        op = operation()
        spans.started(op)
        op.signal, op.outcome = "post_save", "ok"
        spans.finished(op, time.time_ns(), 0.001, False)

    def metric_sink() -> None:
        op = operation()
        metrics.started(op)
        op.outcome = "ok"
        metrics.finished(op, 0, 0.001, False)

    def audit_sink() -> None:
        op = operation()
        op.outcome = "ok"
        audit.finished(op, time.time_ns(), 0.001, False)

    rows = [
        ("Operation() + clocks (the test's own overhead)", operation, None),
        (
            "span: SpanSink start + end",
            span_sink,
            lambda: tracer.start_span("save items", kind=SpanKind.CLIENT, attributes=h.SPAN_ATTRIBUTES).end(),
        ),
        ("metrics: MetricSink started + finished", metric_sink, lambda: histogram.record(0.0012, h.METRIC_ATTRIBUTES)),
        ("audit: AuditSink.finished (event, line)", audit_sink, lambda: logger.msg("sigtrace.audit", **h.AUDIT_FIELDS)),
    ]
    rows += whole_operations(prov)
    print("CPU µs per call (thread time, best of 15 x 2,000):")
    print(f"{'piece':48s} {'sigtrace':>9s} {'floor piece':>12s}")
    for label, ours, floor in rows:
        if label.startswith("whole"):  # measured already: the callables return their figures
            print(f"{label:48s} {ours():9.2f} {floor():12.2f}")  # type: ignore[misc]
            continue
        floor_us = f"{_thread_us(floor):12.2f}" if floor is not None else f"{'-':>12s}"
        print(f"{label:48s} {_thread_us(ours):9.2f} {floor_us}")


def whole_operations(prov: h.Providers) -> list[tuple[str, Callable[[], object], Callable[[], object] | None]]:
    """The blinker pair with sigtrace full (audit to /dev/null) and with the naive bridge, as rows of :func:`pieces`.

    Measured in turns (install, time, uninstall; then the bridge): thread time, so a before/after of two
    checkouts (``BENCH_SIGTRACE_CODE``) compares CPU cost without the shared machine's other work.
    """
    from blinker import Namespace

    import sigtrace

    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    sigtrace.trace_signals(pre, post, collection="items")
    item = Item()

    def op() -> None:
        pre.send(item)
        post.send(item)

    bridge = h.NaiveBridge(prov).variant(op, pre, post, lambda sender, _kw: id(sender), weak=False)
    assert bridge.setup is not None
    results: dict[str, float] = {}
    for _ in range(3):  # alternating turns, best of each
        sigtrace.install(
            sources=["blinker"],
            tracer_provider=prov.tracer_provider,
            meter_provider=prov.meter_provider,
            audit_file=os.devnull,
        )
        results["full"] = min(results.get("full", float("inf")), _thread_us(op, 1000, 5))
        sigtrace.uninstall()
        teardown = bridge.setup()
        results["naive"] = min(results.get("naive", float("inf")), _thread_us(op, 1000, 5))
        if teardown is not None:
            teardown()
    full, naive = results["full"], results["naive"]
    return [("whole blinker pair: sigtrace full | naive bridge", lambda: full, lambda: naive)]


def by_file(run: Callable[[int], None], ops: int, bridge: h.NaiveBridge, pre: object, post: object) -> None:
    """cProfile's own time per file (µs per operation, inflated by the profiler alike), sigtrace full then naive."""
    import collections
    import cProfile
    import pstats

    import sigtrace

    def profile(label: str) -> None:
        profiler = cProfile.Profile()
        profiler.runcall(run, ops)
        stats = pstats.Stats(profiler)
        own: collections.Counter[str] = collections.Counter()
        for (path, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            tail = path.split("site-packages/")[-1]
            own["/".join((*Path(tail).parts[-3:-1], Path(tail).name)) if "/" in tail else tail] += tottime
        total = sum(own.values())
        print(f"\n{label}: {total / ops * 1e6:.1f} µs per operation under cProfile")
        for name, seconds in own.most_common(18):
            print(f"  {seconds / ops * 1e6:7.2f}  {name}")

    profile("sigtrace full")
    sigtrace.uninstall()
    variant = bridge.variant(lambda: None, pre, post, lambda sender, _kw: id(sender), weak=False)
    assert variant.setup is not None
    teardown = variant.setup()
    run(1000)
    profile("naive bridge")
    if teardown is not None:
        teardown()
    import sigtrace as again

    again.install(sources=["blinker"], audit=False)  # main() uninstalls


if __name__ == "__main__":
    main()
