"""The ``sigtrace`` command: ``sigtrace demo`` runs a short scenario with every installed source
and draws what sigtrace saw: a span waterfall per trace and the audit events beside it.
``sigtrace audit verify FILE...`` checks an audit log's sequence numbers, hash chain and checkpoints."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pkgutil
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint,
    InMemoryMetricReader,
    MetricReader,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import sigtrace
from sigtrace import demo as demo_package
from sigtrace import semconv
from sigtrace.core.text import trace_id_hex
from sigtrace.sources import REGISTRY

__all__ = ["main", "render_audit", "render_waterfall", "summarize_metrics"]

BAR_WIDTH = 32


def _scenarios() -> list[Any]:
    """Demo modules whose library is importable, in registry order."""
    order = list(REGISTRY)
    found: list[Any] = []
    for info in pkgutil.iter_modules(demo_package.__path__):
        module = importlib.import_module(f"{demo_package.__name__}.{info.name}")
        library = getattr(module, "LIBRARY", None)
        if library and importlib.util.find_spec(library) is not None:
            found.append(module)
        elif library:
            found.append(_Missing(module))

    def position(module: Any) -> int:
        name = module.__name__.rpartition(".")[2]
        return order.index(name) if name in order else len(order)

    return sorted(found, key=position)


class _Missing:
    """A scenario whose library is not installed: shown with how to install it."""

    def __init__(self, module: Any) -> None:
        self.__name__ = module.__name__
        self.LIBRARY = module.LIBRARY
        self.TITLE = getattr(module, "TITLE", module.__name__)
        spec = REGISTRY.get(module.__name__.rpartition(".")[2])
        default = f'pip install "sigtrace[{spec.extra}]"' if spec else f"pip install {module.LIBRARY}"
        self.hint = getattr(module, "INSTALL_HINT", default)


def _otlp_exporters(endpoint: str | None) -> tuple[Any, Any, Any] | None:
    """Span, metric and log exporters for ``endpoint`` over the protocol OTEL_EXPORTER_OTLP_PROTOCOL names."""
    if not endpoint:
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return (
                OTLPSpanExporter(endpoint=endpoint, insecure=True),
                OTLPMetricExporter(endpoint=endpoint, insecure=True),
                OTLPLogExporter(endpoint=endpoint, insecure=True),
            )
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        base = endpoint.rstrip("/")
        return (
            HttpSpanExporter(endpoint=f"{base}/v1/traces"),
            HttpMetricExporter(endpoint=f"{base}/v1/metrics"),
            HttpLogExporter(endpoint=f"{base}/v1/logs"),
        )
    except ImportError:
        raise SystemExit('OTLP export needs the exporters: pip install "sigtrace[otlp]"') from None


def render_waterfall(
    spans: Sequence[ReadableSpan], out: TextIO, expected: Mapping[str, str] | None = None, width: int | None = None
) -> None:
    """Each trace as a tree, with a bar showing when each span ran within its trace.

    ``expected`` maps an ``error.type`` to why that failure is part of the scenario (shown beside it);
    ``width`` is the line width to fit (default: the terminal's). The name column is as wide as the
    longest indented name, within what the line leaves; a longer name is cut with an ellipsis.
    """
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id if span.context else 0, []).append(span)
    trees = []
    longest = 0
    for trace_id, members in by_trace.items():
        ids = {s.context.span_id for s in members if s.context}
        children: dict[int | None, list[ReadableSpan]] = {}
        for span in sorted(members, key=lambda s: s.start_time or 0):
            parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
            children.setdefault(parent, []).append(span)
        longest = max(longest, _longest_label(children, None, 0))
        trees.append((trace_id, members, children))
    # "  M " + label + " " + "99999.99 ms" + " |" + bar + "|": the label gets what the bar leaves.
    line = width if width is not None else _terminal_width()
    label_width = max(MIN_LABEL, min(longest, line - (4 + 1 + 11 + 2 + BAR_WIDTH + 1)))
    for trace_id, members, children in trees:
        start = min(s.start_time or 0 for s in members)
        total = max(max(s.end_time or 0 for s in members) - start, 1)
        out.write(f"  trace {trace_id_hex(trace_id)}\n")
        _draw(children, None, 0, start, total, label_width, expected or {}, out)


#: The narrowest name column, whatever the terminal (a narrower one wraps rather than hides the names).
MIN_LABEL = 24


def _terminal_width() -> int:
    return shutil.get_terminal_size((100, 20)).columns


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _longest_label(children: dict[int | None, list[ReadableSpan]], parent: int | None, depth: int) -> int:
    longest = 0
    for span in children.get(parent, []):
        longest = max(longest, 2 * depth + len(span.name))
        if span.context:
            longest = max(longest, _longest_label(children, span.context.span_id, depth + 1))
    return longest


def _draw(
    children: dict[int | None, list[ReadableSpan]],
    parent: int | None,
    depth: int,
    start: int,
    total: int,
    label_width: int,
    expected: Mapping[str, str],
    out: TextIO,
) -> None:
    for span in children.get(parent, []):
        began, ended = span.start_time or 0, span.end_time or 0
        offset = min(int((began - start) / total * BAR_WIDTH), BAR_WIDTH - 1)
        width = max(1, int((ended - began) / total * BAR_WIDTH))
        bar = " " * offset + "█" * min(width, BAR_WIDTH - offset)
        failed = span.status.status_code == StatusCode.ERROR
        attrs = span.attributes or {}
        mark = "✗" if failed else ("?" if attrs.get("sigtrace.orphaned") else " ")
        label = _clip("  " * depth + span.name, label_width)
        detail = ""
        if failed:
            error_type = str(attrs.get("error.type"))
            why = expected.get(error_type)
            detail = f"  {error_type}" + (f" ({why})" if why else "")
        out.write(f"  {mark} {label:<{label_width}} {(ended - began) / 1e6:8.2f} ms |{bar:<{BAR_WIDTH}}|{detail}\n")
        if span.context:
            _draw(children, span.context.span_id, depth + 1, start, total, label_width, expected, out)


#: The widest "operation collection" column of the audit table; a longer one is cut with an ellipsis.
MAX_WHERE = 48


def render_audit(events: Sequence[dict[str, Any]], out: TextIO, expected: Mapping[str, str] | None = None) -> None:
    """One line per audit event, in columns as wide as their longest value (``expected`` as in render_waterfall)."""
    rows = []
    for event in events:
        where = " ".join(str(event[k]) for k in ("operation", "collection") if event.get(k))
        extras = [f"{k}={event[k]}" for k in ("model", "pk", "actor", "error_type") if event.get(k)]
        if event.get("changed_fields"):
            extras.append("changed=" + ",".join(event["changed_fields"]))
        why = (expected or {}).get(str(event.get("error_type")))
        if why:
            extras.append(f"({why})")
        trace_ref = str(event.get("trace_id", ""))[:8]
        rows.append(
            (str(event.get("outcome", "?")), str(event.get("source", "")), _clip(where, MAX_WHERE), extras, trace_ref)
        )
    if not rows:
        return
    widths = [max(7, *(len(r[0]) for r in rows)), max(len(r[1]) for r in rows), max(len(r[2]) for r in rows)]
    for outcome, source, where, extras, trace_ref in rows:
        columns = f"{outcome:<{widths[0]}} {source:<{widths[1]}} {where:<{widths[2]}}"
        out.write(f"  {columns}  {' '.join(extras)}  trace={trace_ref}\n")


def summarize_metrics(reader: MetricReader, out: TextIO) -> None:
    """Operations by source and outcome (``sigtrace.operations``) and p50/p99 duration per source
    (``db.client.operation.duration``), from the demo's in-memory reader.

    The reader aggregates the duration histogram in exponential buckets (relative width about 4%), so
    a percentile is the upper bound of the bucket it falls in; the exported histogram keeps sigtrace's
    explicit buckets.
    """
    if not isinstance(reader, InMemoryMetricReader):
        return
    counts: dict[str, dict[str, int]] = {}
    buckets: dict[str, list[tuple[float, int]]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    source = str(point.attributes.get(semconv.SIGTRACE_SOURCE, "?")) if point.attributes else "?"
                    if metric.name == semconv.METRIC_OPERATIONS and isinstance(point, NumberDataPoint):
                        outcome = str(point.attributes.get(semconv.SIGTRACE_OUTCOME, "?")) if point.attributes else "?"
                        per_source = counts.setdefault(source, {})
                        per_source[outcome] = per_source.get(outcome, 0) + int(point.value)
                    elif metric.name == semconv.METRIC_DURATION and isinstance(point, ExponentialHistogramDataPoint):
                        buckets.setdefault(source, []).extend(_exponential_buckets(point))
    outcomes = [o for o in semconv.OUTCOMES if any(o in c for c in counts.values())]
    outcomes += sorted({o for c in counts.values() for o in c} - set(outcomes))
    sources = [s for s in REGISTRY if s in counts or s in buckets]
    sources += sorted((set(counts) | set(buckets)) - set(sources))
    if not sources:
        out.write("  (no operations recorded)\n")
        return
    name_width = max(len("source"), *(len(s) for s in sources))
    out.write(f"  operations ({semconv.METRIC_OPERATIONS}) by outcome; duration ({semconv.METRIC_DURATION}):\n")
    header = f"  {'source':<{name_width}}" + "".join(f" {o:>11}" for o in outcomes) + f" {'p50':>10} {'p99':>10}"
    out.write(header + "\n")
    for source in sources:
        row = f"  {source:<{name_width}}" + "".join(f" {counts.get(source, {}).get(o, 0):>11}" for o in outcomes)
        durations = buckets.get(source, [])
        row += f" {_percentile(durations, 0.50):>10} {_percentile(durations, 0.99):>10}"
        out.write(row + "\n")


def _exponential_buckets(point: ExponentialHistogramDataPoint) -> list[tuple[float, int]]:
    """(upper bound in seconds, count) of each non-empty bucket: bucket i holds (base**i, base**(i+1)]."""
    base = 2.0 ** (2.0**-point.scale)
    found = [(0.0, point.zero_count)] if point.zero_count else []
    offset = point.positive.offset
    found += [(base ** (offset + i + 1), n) for i, n in enumerate(point.positive.bucket_counts) if n]
    return found


def _percentile(buckets: Sequence[tuple[float, int]], q: float) -> str:
    total = sum(n for _, n in buckets)
    if not total:
        return "-"
    rank = q * total
    seen = 0
    for bound, n in sorted(buckets):
        seen += n
        if seen >= rank:
            return f"{bound * 1000:.2f} ms"
    return f"{max(b for b, _ in buckets) * 1000:.2f} ms"  # pragma: no cover - the loop always reaches the rank


def _audit_record(path: str | None, offset: int) -> list[str]:
    """The JSON lines written to ``path`` from ``offset`` on (none where the record is a stream)."""
    if path is None or path in ("stderr", "stdout", "-"):
        return []
    try:
        with open(path, encoding="utf-8") as record:
            record.seek(offset)
            return [line.rstrip("\n") for line in record if line.strip()]
    except OSError:
        return []


def _sample_line(lines: Sequence[str]) -> str | None:
    """The first event with an actor and changed fields (the fullest kind of event), else the first event
    (not the record's stream header or checkpoint lines)."""
    events: list[tuple[str, dict[str, Any]]] = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == semconv.AUDIT_EVENT:
            events.append((line, event))
    for line, event in events:
        if event.get("actor") and event.get("changed_fields"):
            return line
    return events[0][0] if events else None


def run_demo(otlp_endpoint: str | None, only: Sequence[str] | None, out: TextIO) -> int:
    exporters = _otlp_exporters(otlp_endpoint)
    memory = InMemorySpanExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "sigtrace-demo")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    # Exponential buckets for the summary's percentiles; an OTLP reader keeps sigtrace's explicit buckets.
    summary_reader = InMemoryMetricReader(preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()})
    readers: list[MetricReader] = [summary_reader]
    logger_provider = None
    if exporters is not None:
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        span_exporter, metric_exporter, log_exporter = exporters
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        readers.append(PeriodicExportingMetricReader(metric_exporter, export_interval_millis=5_000))
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)
    audit_events: list[dict[str, Any]] = []

    every = _scenarios()
    unknown = sorted(set(only or ()) - {s.__name__.rpartition(".")[2] for s in every})
    if unknown:
        known = ", ".join(s.__name__.rpartition(".")[2] for s in every)
        raise SystemExit(f"sigtrace demo: no scenario for {', '.join(unknown)} (scenarios: {known})")
    scenarios = [s for s in every if not only or s.__name__.rpartition(".")[2] in only]
    runnable = [s for s in scenarios if not isinstance(s, _Missing)]
    from opentelemetry import trace as trace_api

    trace_api.set_tracer_provider(tracer_provider)
    # The durable JSON-lines record: where SIGTRACE_AUDIT_FILE says (the dashboards' shipper reads it),
    # else a file of the demo's own, so that one raw line can be shown at the end.
    tmp = tempfile.TemporaryDirectory(prefix="sigtrace-demo-")
    record_path = os.environ.get("SIGTRACE_AUDIT_FILE") or os.path.join(tmp.name, "audit.jsonl")
    try:
        record_offset = os.path.getsize(record_path)
    except OSError:
        record_offset = 0
    handle = sigtrace.install(
        service_name="sigtrace-demo",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        audit=lambda event: audit_events.append(dict(event)),
        audit_file=record_path,
        sources=[s.__name__.rpartition(".")[2] for s in runnable if s.__name__.rpartition(".")[2] in REGISTRY],
    )
    columns = _terminal_width()
    rule = "─" * min(columns, 100)
    failures = 0
    try:
        for scenario in scenarios:
            out.write(f"\n{rule}\n{scenario.TITLE}\n{rule}\n")
            if isinstance(scenario, _Missing):
                out.write(f"  skipped: {scenario.LIBRARY} is not installed ({scenario.hint})\n")
                continue
            expected: Mapping[str, str] = getattr(scenario, "EXPECTED_ERRORS", {})
            memory.clear()
            first_event = len(audit_events)
            try:
                scenario.run()
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                failures += 1
                out.write(f"  scenario failed: {exc!r}\n")
            out.write("\nspans (✗ failed, ? orphaned; an expected failure says why):\n")
            render_waterfall(memory.get_finished_spans(), out, expected, columns)
            handle.flush_audit()
            out.write("\naudit events:\n")
            render_audit(audit_events[first_event:], out, expected)
        handle.force_flush()
        out.write(f"\n{rule}\nmetrics (in-memory reader, every scenario above):\n")
        summarize_metrics(summary_reader, out)
    finally:
        handle.force_flush()
        sigtrace.uninstall()
        meter_provider.shutdown()
        if logger_provider is not None:
            logger_provider.shutdown()
        tracer_provider.shutdown()
    sample = _sample_line(_audit_record(record_path, record_offset))
    out.write("\none audit event as the JSON-lines record holds it")
    out.write(f" ({record_path}):\n" if os.environ.get("SIGTRACE_AUDIT_FILE") else ":\n")
    out.write(f"{sample}\n" if sample else f"  (none: the record went to {record_path})\n")
    tmp.cleanup()
    out.write(f"\n{rule}\n")
    where = (
        f"exported over OTLP to {otlp_endpoint}"
        if otlp_endpoint
        else "kept in memory (set --otlp or OTEL_EXPORTER_OTLP_ENDPOINT to export)"
    )
    out.write(f"{len(audit_events)} audit events; spans, metrics and audit log records {where}\n")
    return 1 if failures else 0


def _verify_key(key: str | None, key_file: str | None) -> bytes | None:
    if key_file is not None:
        with open(key_file, "rb") as file:
            return file.read().rstrip(b"\r\n") or None
    text = key if key is not None else os.environ.get("SIGTRACE_AUDIT_KEY", "").strip()
    return text.encode("utf-8") if text else None


def run_verify(files: Sequence[str], key: bytes | None, out: TextIO, *, sort: bool = False) -> int:
    from sigtrace.verify import print_report, verify

    report = verify(files, key, sort=sort)
    print_report(report, key is not None, out)
    if key is None and any(result.checkpoints for result in report.streams.values()):
        out.write("checkpoints not checked: no key given (--key, --key-file or SIGTRACE_AUDIT_KEY)\n")
    return 0 if report.ok else 1


_REST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")
_REST_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")


def plain(text: str | None) -> str | None:
    """A docstring as a terminal shows it: no reST markup (``literal``, :class:`role`, `title`)."""
    if text is None:
        return None
    text = _REST_ROLE.sub(lambda m: m.group(1), text)
    return _REST_LITERAL.sub(lambda m: m.group(1) or m.group(2), text)


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Strip reST from the parser's, its arguments' and every subcommand's texts (docstrings serve as help)."""
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        action.help = plain(action.help) if isinstance(action.help, str) else action.help
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help) if isinstance(choice.help, str) else choice.help
            for sub in dict.fromkeys(action.choices.values()):
                _plain_help(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sigtrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run a short scenario with every installed source and show what sigtrace saw"
    )
    demo.add_argument(
        "--otlp",
        metavar="ENDPOINT",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        help="also export to this OTLP endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    demo.add_argument("--source", action="append", dest="sources", help="run only this source's scenario (repeatable)")
    audit = commands.add_parser("audit", help="work with the JSON-lines audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="check sequence numbers, hash chain and checkpoints of audit files",
        description=(
            "Check audit files as one record: give a rotated set oldest first (e.g. $(ls -tr audit.jsonl*)), "
            "gzip-compressed files included. Prints one line per stream (ok, lines, first and last seq) or its "
            "first break (file:line: gap, changed, reordered, truncated or bad checkpoint). Exit status 0 only if "
            "everything verifies. Without a key, checkpoints are linked but their MAC is not checked."
        ),
    )
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, oldest first")
    verify.add_argument(
        "--key",
        help="the audit_key the writer used, to check checkpoints (default: $SIGTRACE_AUDIT_KEY; the variable "
        "or --key-file keep it off the command line other users can see)",
    )
    verify.add_argument("--key-file", metavar="PATH", help="read the key from this file (one line, newline stripped)")
    verify.add_argument(
        "--sort",
        action="store_true",
        help="order each stream's lines by seq first: for an export from a log store that orders lines by time "
        "(a reordering is then not reported; a missing, changed or forged line still is)",
    )
    _plain_help(parser)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.otlp, args.sources, sys.stdout)
    if args.command == "audit":
        return run_verify(args.files, _verify_key(args.key, args.key_file), sys.stdout, sort=args.sort)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
