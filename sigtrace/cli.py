"""The ``sigtrace`` command: ``sigtrace demo`` runs a short scenario with every installed source
and draws what sigtrace saw: a span waterfall per trace and the audit events beside it.
``sigtrace audit verify FILE...`` checks an audit log's sequence numbers, hash chain and checkpoints."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import sigtrace
from sigtrace import demo as demo_package
from sigtrace.sources import REGISTRY

__all__ = ["main", "render_audit", "render_waterfall"]

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


def render_waterfall(spans: Sequence[ReadableSpan], out: TextIO) -> None:
    """Each trace as a tree, with a bar showing when each span ran within its trace."""
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id if span.context else 0, []).append(span)
    for trace_id, members in by_trace.items():
        ids = {s.context.span_id for s in members if s.context}
        children: dict[int | None, list[ReadableSpan]] = {}
        for span in sorted(members, key=lambda s: s.start_time or 0):
            parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
            children.setdefault(parent, []).append(span)
        start = min(s.start_time or 0 for s in members)
        total = max(max(s.end_time or 0 for s in members) - start, 1)
        out.write(f"  trace {trace_id:032x}\n")
        _draw(children, None, 0, start, total, out)


def _draw(
    children: dict[int | None, list[ReadableSpan]], parent: int | None, depth: int, start: int, total: int, out: TextIO
) -> None:
    for span in children.get(parent, []):
        began, ended = span.start_time or 0, span.end_time or 0
        offset = int((began - start) / total * BAR_WIDTH)
        width = max(1, int((ended - began) / total * BAR_WIDTH))
        bar = " " * offset + "█" * min(width, BAR_WIDTH - offset)
        failed = span.status.status_code == StatusCode.ERROR
        attrs = span.attributes or {}
        mark = "✗" if failed else ("?" if attrs.get("sigtrace.orphaned") else " ")
        label = ("  " * depth + span.name)[:44]
        detail = f"  {attrs.get('error.type')}" if failed else ""
        out.write(f"  {mark} {label:<44} {(ended - began) / 1e6:8.2f} ms |{bar:<{BAR_WIDTH}}|{detail}\n")
        if span.context:
            _draw(children, span.context.span_id, depth + 1, start, total, out)


def render_audit(events: Sequence[dict[str, Any]], out: TextIO) -> None:
    for event in events:
        outcome = str(event.get("outcome", "?"))
        where = " ".join(str(event[k]) for k in ("operation", "collection") if event.get(k))
        extras = [f"{k}={event[k]}" for k in ("model", "pk", "actor", "error_type") if event.get(k)]
        if event.get("changed_fields"):
            extras.append("changed=" + ",".join(event["changed_fields"]))
        trace_ref = str(event.get("trace_id", ""))[:8]
        out.write(f"  {outcome:<7} {event.get('source', ''):<10} {where:<32} {' '.join(extras)}  trace={trace_ref}\n")


def run_demo(otlp_endpoint: str | None, only: Sequence[str] | None, out: TextIO) -> int:
    exporters = _otlp_exporters(otlp_endpoint)
    memory = InMemorySpanExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "sigtrace-demo")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    readers: list[MetricReader] = [InMemoryMetricReader()]
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
    handle = sigtrace.install(
        service_name="sigtrace-demo",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        audit=lambda event: audit_events.append(dict(event)),
        sources=[s.__name__.rpartition(".")[2] for s in runnable if s.__name__.rpartition(".")[2] in REGISTRY],
    )
    rule = "─" * min(shutil.get_terminal_size((100, 20)).columns, 100)
    failures = 0
    try:
        for scenario in scenarios:
            out.write(f"\n{rule}\n{scenario.TITLE}\n{rule}\n")
            if isinstance(scenario, _Missing):
                out.write(f"  skipped: {scenario.LIBRARY} is not installed ({scenario.hint})\n")
                continue
            memory.clear()
            first_event = len(audit_events)
            try:
                scenario.run()
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                failures += 1
                out.write(f"  scenario failed: {exc!r}\n")
            out.write("\nspans (✗ failed, ? orphaned):\n")
            render_waterfall(memory.get_finished_spans(), out)
            handle.flush_audit()
            out.write("\naudit events:\n")
            render_audit(audit_events[first_event:], out)
    finally:
        handle.force_flush()
        sigtrace.uninstall()
        meter_provider.shutdown()
        if logger_provider is not None:
            logger_provider.shutdown()
        tracer_provider.shutdown()
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
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.otlp, args.sources, sys.stdout)
    if args.command == "audit":
        return run_verify(args.files, _verify_key(args.key, args.key_file), sys.stdout, sort=args.sort)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
