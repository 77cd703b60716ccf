"""OTEL_* configuration and the instrumentor entry point, each in a fresh interpreter
(OpenTelemetry's global providers can be set once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, blinker, sigtrace
    from opentelemetry import trace, metrics, _logs
    pre, post = blinker.NamedSignal("pre_save"), blinker.NamedSignal("post_save")
    sigtrace.trace_signals(pre, post, collection="orders")
    handle = sigtrace.install(sources=["blinker"], audit=False)
    pre.send("x"); post.send("x")
    tp = handle.tracer_provider
    processors = getattr(getattr(tp, "_active_span_processor", None), "_span_processors", ())
    exporters = [type(getattr(p, "span_exporter", None)).__module__ for p in processors]
    print(json.dumps({
        "tracer_provider": type(tp).__name__,
        "configured_here": handle.providers.configured_here,
        "exporters": exporters,
        "endpoint": [getattr(getattr(p, "span_exporter", None), "_endpoint", None) for p in processors],
        "service": tp.resource.attributes.get("service.name") if hasattr(tp, "resource") else None,
        "global_is_ours": trace.get_tracer_provider() is tp,
        "logger_provider": type(handle.logger_provider).__name__,
        "meter_provider": type(handle.meter_provider).__name__,
        "owned": sorted(handle.providers.owned),
    }))
    """
)


def run(env: dict[str, str], script: str = SCRIPT) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    clean.update(env)
    out = subprocess.run(
        [sys.executable, "-c", script], env=clean, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_no_otel_variables_claims_no_global_provider() -> None:
    """Nothing configured: sigtrace keeps the API's proxies instead of an SDK provider that exports nothing."""
    result = run({})
    assert result["tracer_provider"] == "ProxyTracerProvider"
    assert result["configured_here"] is False and result["global_is_ours"] is True
    assert result["logger_provider"] == "ProxyLoggerProvider"


def test_only_the_signals_with_an_exporter_are_configured() -> None:
    """A traces endpoint alone: sigtrace configures tracing, and leaves metrics and logs to the application."""
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4999/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "SIGTRACE_SHUTDOWN_TIMEOUT": "1",
    }
    result = run(env)
    assert result["tracer_provider"] == "TracerProvider" and result["owned"] == ["traces"]
    assert result["meter_provider"] == "_ProxyMeterProvider"
    assert result["logger_provider"] == "ProxyLoggerProvider"


LATE_PROVIDERS = textwrap.dedent(
    """
    import json, logging, blinker, sigtrace
    from opentelemetry import trace, metrics, _logs
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    pre, post = blinker.NamedSignal("pre_save"), blinker.NamedSignal("post_save")
    sigtrace.trace_signals(pre, post, collection="orders")
    sigtrace.install(sources=["blinker"], audit_file="-")      # AppConfig.ready(): before the application's OTel

    spans, reader, logs = InMemorySpanExporter(), InMemoryMetricReader(), InMemoryLogRecordExporter()
    tracer_provider = TracerProvider(); tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider = LoggerProvider(); logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    trace.set_tracer_provider(tracer_provider)                 # the application configures OpenTelemetry
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    _logs.set_logger_provider(logger_provider)

    with trace.get_tracer("app").start_as_current_span("request"):
        pre.send("x"); post.send("x")
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = sum(
                    getattr(p, "value", getattr(p, "count", 0)) for p in metric.data.data_points
                )
    print(json.dumps({
        "spans": sorted(s.name for s in spans.get_finished_spans()),
        "points": points,
        "logs": [str(r.log_record.body) for r in logs.get_finished_logs()],
    }))
    """
)


def test_a_provider_the_application_sets_after_install_gets_sigtraces_telemetry() -> None:
    """install() first, then the application's own providers: spans, metric points (the observable counters
    too, created on the proxy meter) and audit log records all reach them; nothing is refused."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    out = subprocess.run(
        [sys.executable, "-c", LATE_PROVIDERS], env=clean, capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["spans"] == ["request", "save orders"]
    assert result["points"]["sigtrace.operations"] == 1
    assert result["points"]["db.client.operation.duration"] == 1
    assert result["points"]["sigtrace.operations.in_flight"] == 0
    assert result["logs"] == ["save orders"]
    assert "Overriding" not in out.stderr
    (line,) = [line for line in out.stderr.splitlines() if "sigtrace: installed" in line]
    assert "spans: the provider the application sets later" in line
    assert "JSON lines to -" in line


@pytest.mark.parametrize(
    ("protocol", "exporter"),
    [
        ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    ],
)
def test_otlp_endpoint_and_protocol_are_honoured(protocol: str, exporter: str) -> None:
    result = run(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4999",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "orders",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
        }
    )
    assert result["exporters"] == [exporter]
    endpoint = str(result["endpoint"][0])  # type: ignore[index]
    assert endpoint.endswith("127.0.0.1:4999" if protocol == "grpc" else "127.0.0.1:4999/v1/traces")
    assert result["service"] == "orders"
    assert result["logger_provider"] == "LoggerProvider"


def test_service_name_option_names_the_resource() -> None:
    script = SCRIPT.replace("audit=False)", 'audit=False, service_name="billing")')
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4999"}
    assert run({**env, "OTEL_BSP_SCHEDULE_DELAY": "60000", "SIGTRACE_SHUTDOWN_TIMEOUT": "1"}, script)["service"] == (
        "billing"
    )


def test_sdk_disabled_turns_everything_off() -> None:
    result = run({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4999"})
    assert result["configured_here"] is False
    assert result["tracer_provider"] in {"ProxyTracerProvider", "NoOpTracerProvider"}


def test_provider_set_by_the_application_is_kept() -> None:
    script = (
        "from opentelemetry import trace\nfrom opentelemetry.sdk.trace import TracerProvider\n"
        "mine = TracerProvider(); trace.set_tracer_provider(mine)\n" + SCRIPT
    )
    result = run({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4999"}, script)
    assert result["configured_here"] is False and result["global_is_ours"] is True
    assert result["exporters"] == []


def test_sigtrace_environment_variables_are_validated() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    clean["SIGTRACE_MAX_IN_FLIGHT"] = "lots"
    out = subprocess.run(
        [sys.executable, "-c", "import sigtrace; sigtrace.install()"], env=clean, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "SIGTRACE_MAX_IN_FLIGHT='lots': expected an integer" in out.stderr


def test_registered_as_an_opentelemetry_instrumentor() -> None:
    (ep,) = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "sigtrace"]
    from sigtrace.instrumentor import SigtraceInstrumentor

    assert ep.load() is SigtraceInstrumentor
    (plugin,) = [ep for ep in entry_points(group="pytest11") if ep.name == "sigtrace"]
    assert plugin.value == "sigtrace.testing"


def test_opentelemetry_instrument_enables_sigtrace_with_no_code_change(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    audit = tmp_path / "audit.jsonl"
    app.write_text(
        textwrap.dedent(
            """
            import blinker, sigtrace
            pre, post = blinker.NamedSignal("pre_ship"), blinker.NamedSignal("post_ship")
            sigtrace.trace_signals(pre, post, collection="parcels")
            pre.send("p"); post.send("p")
            print("installed", sigtrace.is_installed())
            """
        )
    )
    tool = Path(sys.executable).with_name("opentelemetry-instrument")
    if not tool.exists():
        pytest.skip("opentelemetry-instrument is not installed in this environment (opentelemetry-distro)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    clean.update(
        {"SIGTRACE_AUDIT_FILE": str(audit), "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}
    )
    out = subprocess.run([str(tool), sys.executable, str(app)], env=clean, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "installed True" in out.stdout
    assert '"name": "ship parcels"' in out.stdout
    header, event = [json.loads(line) for line in audit.read_text().splitlines()]
    assert header["event"] == "sigtrace.audit.stream" and event["seq"] == 1
    assert event["operation"] == "ship" and event["collection"] == "parcels"
