"""Which OpenTelemetry providers sigtrace uses, configuring the SDK from ``OTEL_*`` only where nobody has.

Order: a provider passed to ``install()``; else the one the application set globally; else the
SDK's own auto-configuration (the code ``opentelemetry-instrument`` runs), which reads the
standard variables and sets the global providers, so driver instrumentations share them.
``OTEL_SDK_DISABLED=true`` leaves the no-op providers in place. A provider the application set
itself is never replaced.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import _logs, metrics, trace

__all__ = ["Providers", "resolve_providers", "sdk_disabled"]

_lock = threading.Lock()
_configured = False

_EXPORTER_VARIABLES = {
    "traces": ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    "metrics": ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
    "logs": ("OTEL_LOGS_EXPORTER", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
}


@dataclass(frozen=True, slots=True)
class Providers:
    tracer_provider: Any
    meter_provider: Any
    logger_provider: Any
    #: True where sigtrace ran the SDK's auto-configuration in this process.
    configured_here: bool


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _is_set(provider: object, proxy_types: tuple[type, ...]) -> bool:
    return not isinstance(provider, proxy_types)


def _global_tracer_set() -> bool:
    return _is_set(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _global_logger_provider() -> Any:
    provider = _logs.get_logger_provider()
    if isinstance(provider, _logs.NoOpLoggerProvider) or type(provider).__name__.startswith("Proxy"):
        return None
    return provider


def _configure_sdk(service_name: str | None) -> bool:
    """Run the SDK's auto-configuration once per process, defaulting exporters to OTLP when an endpoint is set."""
    global _configured
    with _lock:
        if _configured or _global_tracer_set():
            return False
        from opentelemetry.sdk._configuration import _get_exporter_entry_point, _initialize_components

        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        names: dict[str, list[str]] = {}
        for signal, (exporter_variable, signal_endpoint) in _EXPORTER_VARIABLES.items():
            # The distro's default: OTLP when an endpoint is configured and no exporter is named.
            wanted = bool(endpoint or os.environ.get(signal_endpoint)) and not os.environ.get(exporter_variable)
            # The SDK maps "otlp" to gRPC or HTTP by OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL.
            names[signal] = [_get_exporter_entry_point("otlp", signal)] if wanted else []  # type: ignore[arg-type]
        resource: dict[str, Any] = {}
        if service_name and not os.environ.get("OTEL_SERVICE_NAME"):
            resource["service.name"] = service_name
        _initialize_components(
            trace_exporter_names=names["traces"],
            metric_exporter_names=names["metrics"],
            log_exporter_names=names["logs"],
            resource_attributes=resource,
        )
        _configured = True
        return True


def resolve_providers(
    tracer_provider: Any, meter_provider: Any, logger_provider: Any, service_name: str | None
) -> Providers:
    configured = False
    if tracer_provider is None and not sdk_disabled():
        configured = _configure_sdk(service_name)
    return Providers(
        tracer_provider=tracer_provider or trace.get_tracer_provider(),
        meter_provider=meter_provider or metrics.get_meter_provider(),
        logger_provider=logger_provider or (None if sdk_disabled() else _global_logger_provider()),
        configured_here=configured,
    )
