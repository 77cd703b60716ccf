"""Security: no field value leaves the process unless asked for, secrets never do, payloads cannot forge
audit lines, sizes are capped, and the environment is parsed, never evaluated.

The exported bytes checked are what the real OTLP receiver (rotel) got, as it dumped them, plus the local
JSON-lines audit record: not the Python objects before export.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import sigtrace
from sigtrace._config import ConfigError, resolve_options
from sigtrace.core.operation import Operation
from sigtrace.testing import capture
from tests.otlp_receiver import OtlpReceiver

EMAIL = "ada.lovelace.7f3a@example.org"
PASSWORD = "pw-Zq8!never-export-me"
TOKEN = "tok-4b1d-never-export-me"
NESTED_KEY = "ak-9c2e-never-export-me"
SSN = "078-05-1120-never-export-me"
SECRETS = (PASSWORD, TOKEN, NESTED_KEY, SSN)


def values() -> dict[str, Any]:
    return {
        "email": EMAIL,
        "password": [None, PASSWORD],
        "Authorization": f"Bearer {TOKEN}",
        "profile": {"nested": {"aws_access_key": NESTED_KEY}},
        "ssn": SSN,
    }


@pytest.fixture
def exporting(fresh_otlp_receiver: OtlpReceiver, tmp_path: Path) -> Iterator[Any]:
    """A function installing sigtrace that exports spans, metrics and logs to the real receiver over gRPC."""
    providers: list[Any] = []

    def install(**options: Any) -> Any:
        endpoint = fresh_otlp_receiver.grpc_endpoint
        resource = Resource.create({"service.name": "security-check"})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[
                PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True), 60_000)
            ],
        )
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
        )
        providers.extend((tracer_provider, meter_provider, logger_provider))
        return sigtrace.install(
            sources=["blinker"],
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            logger_provider=logger_provider,
            audit_file=str(tmp_path / "audit.jsonl"),
            **options,
        )

    yield install
    sigtrace.uninstall()
    for provider in providers:
        provider.shutdown()


def run_operations(handle: Any) -> None:
    engine = handle.engine
    for i in range(3):
        op = Operation(
            "blinker", "save", model="User", collection="users", pk=f"u{i}", values=values(),
            changed_fields=list(values()),
        )  # fmt: skip
        engine.begin(op, ("security", i))
        engine.end(("security", i))
    failed = Operation("blinker", "save", model="User", collection="users", values=values())
    engine.begin(failed, "failing")
    engine.end("failing", error=ValueError("constraint failed"))


def exported_bytes(rx: OtlpReceiver, audit_file: Path, expected_spans: int) -> str:
    rx.wait_for(lambda: len(rx.spans("save users")) >= expected_spans, timeout=20)
    rx.wait_for(lambda: len(rx.logs()) >= expected_spans, timeout=20)
    rx.wait_for(lambda: rx.metrics("db.client.operation.duration"), timeout=20)
    return rx.out_path.read_text() + audit_file.read_text()


def test_default_settings_export_no_field_value(
    exporting: Any, fresh_otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    handle = exporting()
    run_operations(handle)
    handle.force_flush(10_000)
    everything = exported_bytes(fresh_otlp_receiver, tmp_path / "audit.jsonl", 4)
    assert "changed_fields" in everything and "email" in everything  # field NAMES are reported
    for value in (EMAIL, *SECRETS):
        assert value not in everything
    print(f"\n[reliability] default settings: {len(everything)} exported bytes scanned, no field value in them")


def test_capture_values_never_exports_redacted_values(
    exporting: Any, fresh_otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    handle = exporting(capture_values=True, redact=[r"\bssn\b"])
    run_operations(handle)
    handle.force_flush(10_000)
    everything = exported_bytes(fresh_otlp_receiver, tmp_path / "audit.jsonl", 4)
    assert EMAIL in everything  # values ARE exported now: the scan can see them
    for secret in SECRETS:
        assert secret not in everything, secret
    print(f"\n[reliability] capture_values: {len(everything)} exported bytes scanned, 4 secret values absent")


FORGERIES = [
    'x"}\n{"event": "sigtrace.audit", "outcome": "ok", "actor": "forged"}',
    "line\r\nbreak\x00nul\x1b[31mansi\u2028sep\u2029par",
    "\\u000a",
]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_values_cannot_forge_audit_lines(forgery: str, tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.jsonl"
    with capture(sources=["blinker"], audit=True, audit_file=str(audit_file), capture_values=True) as cap:
        assert cap.installation is not None
        engine = cap.installation.engine
        with sigtrace.actor(forgery):
            op = Operation(
                "blinker", forgery, model=forgery, collection=forgery, pk=forgery, correlation_id=forgery,
                signal=forgery, changed_fields=[forgery], values={forgery: forgery}, audit={forgery: forgery},
            )  # fmt: skip
            engine.begin(op, "k")
            engine.end("k")
    header, line = audit_file.read_text().splitlines()  # one operation, one line, whatever the payload
    assert json.loads(header)["event"] == "sigtrace.audit.stream"
    lines = [line]
    record = json.loads(line)
    assert record["pk"] == forgery and record["actor"] == forgery
    assert all(ch not in lines[0] for ch in "\n\r\x00\x1b")


def test_huge_values_are_capped_in_spans_and_audit_lines(tmp_path: Path) -> None:
    huge = "A" * 5_000_000
    audit_file = tmp_path / "audit.jsonl"
    with capture(sources=["blinker"], audit=True, audit_file=str(audit_file), capture_values=True) as cap:
        assert cap.installation is not None
        engine = cap.installation.engine
        op = Operation(
            "blinker", "save", collection="users", pk=huge, changed_fields=[huge], values={"bio": huge},
            attributes={"app.note": huge}, audit={"note": huge},
        )  # fmt: skip
        engine.begin(op, "k")
        engine.end("k")
        (span,) = cap.spans
    limit = cap.installation.options.max_value_length
    assert span.attributes is not None
    assert all(len(v) <= limit for v in span.attributes.values() if isinstance(v, str))
    line = audit_file.read_text()
    print(f"\n[reliability] a 5 MB value: audit line {len(line)} bytes, span attributes <= {limit} characters")
    assert len(line) < 10 * limit


BAD_ENVIRONMENT = {
    "SIGTRACE_MAX_IN_FLIGHT": "__import__('os').getpid()",
    "SIGTRACE_ORPHAN_TIMEOUT": "-1",
    "SIGTRACE_AUDIT": "maybe",
    "SIGTRACE_EXCLUDE": "AuditLog",
    "SIGTRACE_REDACT": "(unclosed",
    "SIGTRACE_MAX_VALUE_LENGTH": "0",
    "SIGTRACE_CAPTURE_VALUES": "eval(1)",
}


@pytest.mark.parametrize(("variable", "raw"), sorted(BAD_ENVIRONMENT.items()))
def test_environment_is_validated_with_clear_errors(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_options({}, {variable: raw})
    message = str(raised.value)
    option = variable.removeprefix("SIGTRACE_").lower()
    # Names the variable, or the option it sets (range checks run after parsing, on the option).
    assert variable in message or option in message or option.rstrip("s") in message, message


def test_nothing_from_the_environment_is_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "evaluated"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    options = resolve_options(
        {}, {"SIGTRACE_SERVICE_NAME": code, "SIGTRACE_SOURCES": code, "SIGTRACE_AUDIT_FILE": code}
    )
    assert options.service_name == code  # a plain string, kept as it is
    assert not marker.exists()
    assert not os.path.exists(code)
