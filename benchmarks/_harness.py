"""Shared machinery of the benchmark scripts: providers, variants, interleaved rounds, statistics.

Every figure that is compared is measured in ONE process and ONE run: each round runs every
variant once (a warm-up, then ``per_round`` operations each timed on its own), in alternating
order (A B C ... then ... C B A), so a machine that drifts in speed slows every variant alike.
Reported per variant: the median and p99 of all timed operations, and against the baseline the
PAIRED figures: per round, (variant median - baseline median) and their ratio; the median over
rounds of those is what the table shows. The floor F of a round is the sum of the floor pieces'
medians of that round, so "added / F" is paired too.

This folder is a set of scripts, not a package: ``python benchmarks/run.py`` (or ``nox -s bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The checkout whose sigtrace is measured: this one, or ``BENCH_SIGTRACE_CODE`` (another checkout,
#: e.g. the commit before a change: the same benchmark code measures both, see docs/performance.md).
CODE = Path(os.environ.get("BENCH_SIGTRACE_CODE") or ROOT).resolve()
if sys.path[:1] != [str(CODE)]:  # sigtrace from that checkout even without (or despite) an editable install
    sys.path.insert(0, str(CODE))

# Floor pieces: names shared by every source.
FLOOR_SPAN = "floor: SDK span"
FLOOR_HISTOGRAM = "floor: histogram record"
FLOOR_AUDIT = "floor: structlog JSON line"
FLOOR_DISPATCH = "floor: 2 dispatches"
FLOOR = (FLOOR_SPAN, FLOOR_HISTOGRAM, FLOOR_AUDIT, FLOOR_DISPATCH)

BASELINE = "baseline"
FULL = "sigtrace full"
SPANS_ONLY = "sigtrace spans only"
AUDIT_FILE = "sigtrace audit to file"
OTEL = "OTel driver instrumentation"
NAIVE = "naive bridge"
#: The naive bridge making the reports sigtrace's contract makes for the operation where the two differ
#: (Flask-SignalBus, SQLAlchemy: two spans and durations per unit of work, one audit line): not a target's
#: reference, the figure for the decision in docs/performance.md, "What is left".
MATCHED = "naive bridge, sigtrace's reports"

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)


class NullExporter(SpanExporter):
    """A /dev/null for spans: the processor pipeline runs, nothing is kept."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Providers:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    reader: InMemoryMetricReader


def providers() -> Providers:
    """The SDK pipeline every variant shares: spans to a null exporter, metrics to an in-memory reader."""
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(NullExporter()))
    reader = InMemoryMetricReader()
    return Providers(tp, MeterProvider(metric_readers=[reader]), reader)


@dataclass
class Variant:
    """One thing timed per round: ``op`` (a callable, or an ``async def`` when ``is_async``)."""

    name: str
    op: Callable[[], Any]
    setup: Callable[[], Callable[[], None] | None] | None = None
    is_async: bool = False
    kind: str = "variant"  # baseline | variant | floor


@dataclass
class Suite:
    """What one source module measures."""

    source: str
    operation: str
    variants: list[Variant]
    notes: list[str] = field(default_factory=list)
    cleanup: Callable[[], None] | None = None
    loop: asyncio.AbstractEventLoop | None = None


# --- variants every source builds the same way ---


def sigtrace_variants(
    source: str, op: Callable[[], Any], prov: Providers, tmp: str, *, is_async: bool = False, **extra: Any
) -> list[Variant]:
    """The baseline of ``op`` and sigtrace's variants of it: full, spans only, audit to a file."""
    import sigtrace

    def installer(**options: Any) -> Callable[[], Callable[[], None]]:
        def setup() -> Callable[[], None]:
            sigtrace.install(
                sources=[source],
                tracer_provider=prov.tracer_provider,
                meter_provider=prov.meter_provider,
                **extra,
                **options,
            )
            return sigtrace.uninstall

        return setup

    audit_path = os.path.join(tmp, "audit.jsonl")
    return [
        Variant(BASELINE, op, is_async=is_async, kind="baseline"),
        Variant(FULL, op, installer(audit=True, audit_file=os.devnull, metrics=True), is_async=is_async),
        Variant(SPANS_ONLY, op, installer(audit=False, metrics=False), is_async=is_async),
        Variant(AUDIT_FILE, op, installer(audit=True, audit_file=audit_path, metrics=True), is_async=is_async),
    ]


AUDIT_FIELDS: dict[str, Any] = {
    "service_name": "bench",
    "source": "bench",
    "operation": "save",
    "model": "Item",
    "collection": "items",
    "pk": "1",
    "outcome": "ok",
    "duration_ms": 0.123,
    "changed_fields": ["name", "count"],
    "correlation_id": "1",
    "signal": "pre_save",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
}
SPAN_ATTRIBUTES = {
    "sigtrace.source": "bench",
    "db.operation.name": "save",
    "db.system.name": "sqlite",
    "db.collection.name": "items",
    "db.namespace": "main",
    "sigtrace.model": "Item",
    "sigtrace.signal": "pre_save",
    "sigtrace.pk": "1",
}
METRIC_ATTRIBUTES = {
    "sigtrace.source": "bench",
    "db.operation.name": "save",
    "db.system.name": "sqlite",
    "db.collection.name": "items",
}


def floor_variants(prov: Providers, dispatch: Callable[[], Any], dispatch_async: bool = False) -> list[Variant]:
    """The floor pieces: a bare SDK span, a histogram record, a structlog JSON line, the library's 2 dispatches."""
    import structlog

    tracer = prov.tracer_provider.get_tracer("bench.floor")
    histogram = prov.meter_provider.get_meter("bench.floor").create_histogram(
        "bench.floor.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS
    )
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    logger = structlog.wrap_logger(
        structlog.WriteLogger(devnull),
        processors=[structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer()],
        cache_logger_on_first_use=True,
    )

    def span() -> None:
        tracer.start_span("save items", kind=SpanKind.CLIENT, attributes=SPAN_ATTRIBUTES).end()

    def record() -> None:
        histogram.record(0.0012, METRIC_ATTRIBUTES)

    def line() -> None:
        logger.msg("sigtrace.audit", **AUDIT_FIELDS)

    return [
        Variant(FLOOR_SPAN, span, kind="floor"),
        Variant(FLOOR_HISTOGRAM, record, kind="floor"),
        Variant(FLOOR_AUDIT, line, kind="floor"),
        Variant(FLOOR_DISPATCH, dispatch, is_async=dispatch_async, kind="floor"),
    ]


class _FsyncLogger:
    """structlog's ``WriteLogger`` (write, flush) plus an fsync per line: the naive bridge at ``fsync`` durability."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def msg(self, message: str) -> None:
        self._file.write(message + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    info = msg


class NaiveBridge:
    """The reference the issue names: span + histogram + structlog JSON line straight in the pre/post receivers.

    ``pre(key)`` starts a span with the floor's attributes and makes it current; ``post(key)`` detaches
    it, records the histogram, writes the audit line (to /dev/null) and ends the span: the floor's
    pieces, run where a bridge runs them, with nothing else (no correlation table, no failure path).
    """

    def __init__(self, prov: Providers, path: str = os.devnull, *, fsync: bool = False) -> None:
        """``path``: where the lines go (flushed each: structlog's ``WriteLogger``); ``fsync``: and fsynced each."""
        import structlog
        from opentelemetry import context, trace

        self._tracer = prov.tracer_provider.get_tracer("bench.naive")
        self._histogram = prov.meter_provider.get_meter("bench.naive").create_histogram(
            "bench.naive.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS
        )
        out = open(path, "a")  # noqa: SIM115 - lives as long as the process
        self._logger = structlog.wrap_logger(
            _FsyncLogger(out) if fsync else structlog.WriteLogger(out),
            processors=[structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer()],
            cache_logger_on_first_use=True,
        )
        self._attach = context.attach
        self._detach = context.detach
        self._in_context = trace.set_span_in_context
        self._open: dict[Any, tuple[Any, Any, float]] = {}

    def pre(self, key: Any, current: bool = True) -> None:
        """``current=False`` where a receiver cannot change its caller's context (ormar: one task per receiver)."""
        span = self._tracer.start_span("save items", kind=SpanKind.CLIENT, attributes=SPAN_ATTRIBUTES)
        token = self._attach(self._in_context(span)) if current else None
        self._open[key] = (span, token, time.monotonic())

    def post(self, key: Any, line: bool = True) -> None:
        """``line=False``: no audit line (an operation whose audit event is another's, as sigtrace reports it)."""
        span, token, started = self._open.pop(key)
        duration = time.monotonic() - started
        # Recorded while its span is current, as sigtrace records its own: where the SDK keeps an exemplar
        # (OTEL_METRICS_EXEMPLAR_FILTER's default, trace_based), both link the measurement to that span.
        self._histogram.record(duration, METRIC_ATTRIBUTES, context=None if token else self._in_context(span))
        if token is not None:
            self._detach(token)
        if line:
            self._logger.msg("sigtrace.audit", **AUDIT_FIELDS, duration=duration)
        span.end()

    def variant(
        self,
        op: Callable[[], Any],
        pre: Any,
        post: Any,
        key: Callable[[Any, dict[str, Any]], Any],
        *,
        is_async: bool = False,
        current: bool = True,
        **connect: Any,
    ) -> Variant:
        """The variant timing ``op`` with this bridge's receivers on the library's ``pre``/``post`` signals.

        ``key(sender, kwargs)`` pairs a post with its pre; receivers are ``async def`` where the library
        needs them (``is_async``); ``connect`` goes to each ``connect()`` (e.g. ``weak=False``).
        """
        receivers: tuple[Callable[..., Any], Callable[..., Any]]
        if is_async:

            async def on_pre_async(sender: Any, **kwargs: Any) -> None:
                self.pre(key(sender, kwargs), current)

            async def on_post_async(sender: Any, **kwargs: Any) -> None:
                self.post(key(sender, kwargs))

            receivers = (on_pre_async, on_post_async)
        else:

            def on_pre(sender: Any, **kwargs: Any) -> None:
                self.pre(key(sender, kwargs), current)

            def on_post(sender: Any, **kwargs: Any) -> None:
                self.post(key(sender, kwargs))

            receivers = (on_pre, on_post)

        def setup() -> Callable[[], None]:
            pre.connect(receivers[0], **connect)
            post.connect(receivers[1], **connect)

            def teardown() -> None:
                pre.disconnect(receivers[0])
                post.disconnect(receivers[1])

            return teardown

        return Variant(NAIVE, op, setup, is_async=is_async)


# --- timing ---


def _time_sync(op: Callable[[], Any], warmup: int, n: int) -> list[int]:
    for _ in range(warmup):
        op()
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        op()
        out[i] = clock() - t0
    return out


async def _time_async(op: Callable[[], Any], warmup: int, n: int) -> list[int]:
    for _ in range(warmup):
        await op()
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        await op()
        out[i] = clock() - t0
    return out


def measure(suite: Suite, rounds: int, per_round: int, warmup: int) -> dict[str, list[list[int]]]:
    """Run every variant once per round, alternating the order; per-op nanoseconds per round."""
    samples: dict[str, list[list[int]]] = {v.name: [] for v in suite.variants}
    variants = suite.variants
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            teardown = v.setup() if v.setup is not None else None
            try:
                gc.collect()
                if v.is_async:
                    assert suite.loop is not None
                    times = suite.loop.run_until_complete(_time_async(v.op, warmup, per_round))
                else:
                    times = _time_sync(v.op, warmup, per_round)
            finally:
                if teardown is not None:
                    teardown()
            samples[v.name].append(times)
        print(f"  [{suite.source}] round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(suite: Suite, samples: dict[str, list[list[int]]]) -> dict[str, Any]:
    """Medians, p99, and paired (per-round) differences and ratios against the baseline and the floor."""
    round_medians = {name: [statistics.median(r) / 1000.0 for r in rounds] for name, rounds in samples.items()}
    n_rounds = min(len(v) for v in round_medians.values())
    floor_names = [v.name for v in suite.variants if v.kind == "floor"]
    floor_by_round = [sum(round_medians[name][r] for name in floor_names) for r in range(n_rounds)]
    base = round_medians.get(BASELINE)
    out: dict[str, Any] = {
        "source": suite.source,
        "operation": suite.operation,
        "notes": suite.notes,
        "floor_us": statistics.median(floor_by_round) if floor_names else None,
        "floor_by_round_us": floor_by_round,
        "variants": {},
    }
    for v in suite.variants:
        pooled = [t / 1000.0 for rnd in samples[v.name] for t in rnd]
        entry: dict[str, Any] = {
            "kind": v.kind,
            "median_us": statistics.median(pooled),
            "p99_us": _p(pooled, 0.99),
            "round_medians_us": round_medians[v.name],
            "n": len(pooled),
        }
        if base is not None and v.kind == "variant":
            added = [round_medians[v.name][r] - base[r] for r in range(n_rounds)]
            entry["added_us"] = statistics.median(added)
            entry["added_us_range"] = [min(added), max(added)]
            entry["ratio"] = statistics.median(round_medians[v.name][r] / base[r] for r in range(n_rounds))
            if floor_names:
                entry["added_over_floor"] = statistics.median(added[r] / floor_by_round[r] for r in range(n_rounds))
        out["variants"][v.name] = entry
    # Paired ratios of added costs (per round: variant's added / reference's added; median over rounds):
    # what the targets compare (sigtrace full against the naive bridge, spans only against OTel).
    if base is not None:
        for reference, key in ((NAIVE, "over_naive"), (OTEL, "over_otel")):
            if reference not in round_medians:
                continue
            ref_added = [round_medians[reference][r] - base[r] for r in range(n_rounds)]
            for v in suite.variants:
                if v.kind != "variant" or v.name == reference:
                    continue
                ratios = [
                    (round_medians[v.name][r] - base[r]) / ref_added[r] for r in range(n_rounds) if ref_added[r] > 0
                ]
                if ratios:
                    out["variants"][v.name][key] = statistics.median(ratios)
                    out["variants"][v.name][key + "_range"] = [min(ratios), max(ratios)]
    full = out["variants"].get(FULL)
    otel = out["variants"].get(OTEL)
    if full is not None and otel is not None:
        # Paired per round: sigtrace full's added cost minus the driver instrumentation's.
        diff = [round_medians[FULL][r] - round_medians[OTEL][r] for r in range(n_rounds)]
        out["full_minus_otel_us"] = statistics.median(diff)
    if full is not None and NAIVE in out["variants"]:
        diff = [round_medians[FULL][r] - round_medians[NAIVE][r] for r in range(n_rounds)]
        out["full_minus_naive_us"] = statistics.median(diff)
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "affinity": affinity,
        "loadavg": os.getloadavg(),
    }


def library_versions(names: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def main(build: Callable[[argparse.Namespace, Providers, str], Suite], packages: Sequence[str] = ()) -> None:
    """Entry point of a source module: build its suite, measure, print JSON (to --json or stdout)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", help="write the result here instead of stdout")
    args = parser.parse_args()
    prov = providers()
    with tempfile.TemporaryDirectory(prefix="sigtrace-bench-") as tmp:
        suite = build(args, prov, tmp)
        try:
            samples = measure(suite, args.rounds, args.per_round, args.warmup)
        finally:
            if suite.cleanup is not None:
                suite.cleanup()
        result = summarize(suite, samples)
    result["machine"] = machine()
    result["versions"] = library_versions(["sigtrace", "opentelemetry-sdk", "structlog", *packages])
    result["method"] = {"rounds": args.rounds, "per_round": args.per_round, "warmup": args.warmup}
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    else:
        print(text)
