"""``sigtrace demo``: the blinker scenario drawn as a waterfall with its audit events, a metrics summary and one
raw audit line; the renderers' columns with long names; the summary's percentiles."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from sigtrace import semconv
from sigtrace.cli import main, render_audit, render_waterfall, summarize_metrics


def test_demo_draws_the_span_tree_and_the_audit_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--source", "blinker"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    request = next(i for i, line in enumerate(lines) if "POST /articles/publish" in line)
    children = [line for line in lines[request + 1 : request + 3]]
    assert all("publish articles" in line and "ms |" in line for line in children)
    assert children[0].startswith("    ") and "  publish articles" in children[0]  # indented under the request
    assert children[1].lstrip().startswith("✗")
    assert children[1].endswith("PermissionError (deliberate: publishing a draft the editor has not approved)")
    audit = [line.split() for line in lines if line.startswith("  ok ") or line.startswith("  error ")]
    assert [row[0] for row in audit] == ["ok", "ok", "error"]
    assert all("actor=alice" in " ".join(row) for row in audit)
    assert "3 audit events" in out and "kept in memory" in out


def test_demo_ends_with_a_metrics_summary_and_one_raw_audit_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--source", "blinker"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["source"])
    assert lines[header].split() == ["source", "ok", "error", "p50", "p99"]
    row = lines[header + 1].split()
    # The pair's two operations (one published, one refused); the single signal is an audit event only.
    assert row[:3] == ["blinker", "1", "1"]
    p50, p99 = float(row[3]), float(row[5])
    assert row[4] == row[6] == "ms" and 0 < p50 <= p99
    raw = lines[lines.index("one audit event as the JSON-lines record holds it:") + 1]
    event = json.loads(raw)
    assert event["event"] == "sigtrace.audit" and event["source"] == "blinker" and event["actor"] == "alice"
    traces = {line.split()[1] for line in lines if line.startswith("  trace ")}
    assert event["trace_id"] in traces and re.fullmatch(r"[0-9a-f]{16}", event["span_id"])


def test_demo_of_an_unknown_source_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match=r"no scenario for nothing-by-that-name \(scenarios: blinker, "):
        main(["demo", "--source", "nothing-by-that-name"])


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Docstrings serve as help texts: their reST markup must not reach the terminal."""
    top = help_text(["--help"], capsys)
    assert "sigtrace demo runs a short scenario" in top
    listed = re.search(r"\{([\w,-]+)\}", top)
    assert listed is not None
    subcommands = listed.group(1).split(",")
    assert "demo" in subcommands
    for text in [top, *(help_text([name, "--help"], capsys) for name in subcommands)]:
        assert "`" not in text, text
        assert not re.search(r":[a-z]+:", text), text
    from sigtrace.cli import plain

    assert plain("``sigtrace demo`` and :class:`~sigtrace.Installation`, :func:`install`") == (
        "sigtrace demo and sigtrace.Installation, install"
    )


def _spans(*names: str, failed: str | None = None) -> list[ReadableSpan]:
    """Real SDK spans, each nested in the one before; the one named ``failed`` ends with an error."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def nest(rest: tuple[str, ...]) -> None:
        if not rest:
            return
        with tracer.start_as_current_span(rest[0], record_exception=False, set_status_on_exception=False) as span:
            if rest[0] == failed:
                span.set_attribute("error.type", "BrokerDownError")
                span.set_status(Status(StatusCode.ERROR))
            nest(rest[1:])

    nest(names)
    return list(exporter.get_finished_spans())


def test_long_span_names_keep_the_columns() -> None:
    long = "relation_add a_collection_with_a_really_long_generated_table_name_for_the_through_model"
    out = io.StringIO()
    render_waterfall(_spans("POST /orders", long, "save albums", failed="save albums"), out, {}, width=120)
    rows = [line for line in out.getvalue().splitlines() if " ms |" in line]
    assert len(rows) == 3
    assert len({line.index(" ms |") for line in rows}) == 1  # the duration and the bar line up
    assert all(line.rstrip().endswith("|") for line in rows[:2]) and rows[2].endswith("|  BrokerDownError")
    assert "…" in rows[1] and len(rows[1]) <= 120  # cut to fit, not pushed out of its column


def test_short_names_get_a_narrow_column_and_the_reason_of_an_expected_failure() -> None:
    out = io.StringIO()
    render_waterfall(_spans("GET /", "send x", failed="send x"), out, {"BrokerDownError": "deliberate"}, width=200)
    rows = [line for line in out.getvalue().splitlines() if " ms |" in line]
    assert rows[1].endswith("BrokerDownError (deliberate)")
    assert rows[0].index(" ms |") < 40  # as wide as the names need, not as wide as the line allows


def test_audit_columns_fit_the_longest_operation() -> None:
    events = [
        {"outcome": "ok", "source": "django", "operation": "relation_add", "collection": "shop_order_labels", "pk": 1},
        {"outcome": "error", "source": "django", "operation": "save", "collection": "shop_customer", "error_type": "E"},
    ]
    out = io.StringIO()
    render_audit(events, out, {"E": "deliberate"})
    rows = out.getvalue().splitlines()
    assert rows[0].index("pk=1") == rows[1].index("error_type=E")
    assert rows[1].endswith("error_type=E (deliberate)  trace=")


def test_the_summary_counts_by_source_and_outcome_and_reads_percentiles_off_the_histogram() -> None:
    reader = InMemoryMetricReader(preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()})
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    duration = meter.create_histogram(semconv.METRIC_DURATION, unit="s")
    operations = meter.create_counter(semconv.METRIC_OPERATIONS)
    for ms in range(1, 101):  # 1 .. 100 ms
        duration.record(ms / 1000, {semconv.SIGTRACE_SOURCE: "ormar", "db.operation.name": "save"})
    operations.add(97, {semconv.SIGTRACE_SOURCE: "ormar", semconv.SIGTRACE_OUTCOME: "ok"})
    operations.add(3, {semconv.SIGTRACE_SOURCE: "ormar", semconv.SIGTRACE_OUTCOME: "error"})
    out = io.StringIO()
    summarize_metrics(reader, out)
    header, row = out.getvalue().splitlines()[1:3]
    assert header.split() == ["source", "ok", "error", "p50", "p99"]
    name, ok, error, p50, _, p99, _ = row.split()
    assert (name, ok, error) == ("ormar", "97", "3")
    # A bucket's upper bound: at most about 4.4% above the true percentile, never below it.
    assert 50 <= float(p50) <= 50 * 1.045 and 99 <= float(p99) <= 99 * 1.045


def test_demo_shows_a_line_of_the_audit_file_the_environment_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With SIGTRACE_AUDIT_FILE (the dashboards' shipper reads it) the demo appends there, shows a line of this run."""
    record = tmp_path / "sigtrace-audit.jsonl"
    earlier = '{"event": "sigtrace.audit", "source": "earlier-run"}\n'
    record.write_text(earlier, encoding="utf-8")
    monkeypatch.setenv("SIGTRACE_AUDIT_FILE", str(record))
    assert main(["demo", "--source", "blinker"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = f"one audit event as the JSON-lines record holds it ({record}):"
    shown = json.loads(lines[lines.index(header) + 1])
    assert shown["source"] == "blinker" and shown["actor"] == "alice"
    written = record.read_text(encoding="utf-8").splitlines()
    # appended: the stream header and the three events of this run (docs/audit.md)
    assert written[0] == earlier.strip() and len(written) == 1 + 1 + 3
    assert json.loads(written[1])["event"] == "sigtrace.audit.stream"
    assert json.dumps(shown) in {json.dumps(json.loads(line)) for line in written[1:]}
