"""Which OpenTelemetry providers sigtrace uses, configuring the SDK from ``OTEL_*`` only where nobody has.

Order: a provider passed to ``install()``; else the one the application set globally; else the
SDK's own auto-configuration (the code ``opentelemetry-instrument`` runs), which reads the
standard variables and sets the global providers, so driver instrumentations share them.
``OTEL_SDK_DISABLED=true`` leaves the no-op providers in place. A provider the application set
itself is never replaced.

sigtrace never claims a global provider it will not export from: a signal (traces, metrics, logs)
with no exporter configured keeps OpenTelemetry's proxy, so a provider the application sets later
(``trace.set_tracer_provider(mine)`` after ``install()``, as Django apps do in ``AppConfig.ready()``)
is the one sigtrace's spans, metric points and log records go to.

The providers sigtrace configured itself are shut down at exit within ``shutdown_timeout``
(:func:`run_bounded`): a collector that is down or hangs must not keep the process from exiting
past a container's grace period. What cannot be delivered by then is abandoned, counted and logged once.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider

from sigtrace.core import safety

__all__ = ["Providers", "describe", "resolve_providers", "run_bounded", "sdk_disabled", "set_shutdown_timeout"]

logger = logging.getLogger("sigtrace")
_lock = threading.Lock()
_configured = False
#: The global providers sigtrace's auto-configuration created, by signal ("traces", "metrics", "logs").
_owned: dict[str, Any] = {}
#: Seconds the shutdown at exit may take (the ``shutdown_timeout`` of the latest installation).
_shutdown_timeout = 5.0
#: Threads of flushes or shutdowns abandoned at their deadline (still alive: still blocked on the collector).
_stuck: list[threading.Thread] = []
#: Seconds the exit waits when an abandoned flush is still blocked.
STUCK_GRACE = 0.5

_SIGNALS = ("traces", "metrics", "logs")
_EXPORTER_VARIABLES = {
    "traces": ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    "metrics": ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
    "logs": ("OTEL_LOGS_EXPORTER", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
}
#: The SDK's per-signal initialisers inside ``_initialize_components``.
_INITIALISERS = {"traces": "_init_tracing", "metrics": "_init_metrics", "logs": "_init_logging"}


@dataclass(frozen=True, slots=True)
class Providers:
    tracer_provider: Any
    meter_provider: Any
    logger_provider: Any
    #: True where sigtrace ran the SDK's auto-configuration in this process.
    configured_here: bool
    #: The signals whose global provider sigtrace's auto-configuration created (and shuts down at exit).
    owned: frozenset[str] = field(default_factory=frozenset)


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _is_set(provider: object, proxy_types: tuple[type, ...]) -> bool:
    return not isinstance(provider, proxy_types)


def _global_tracer_set() -> bool:
    return _is_set(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


#: The API's stand-ins for a provider nobody set (yet): proxies and no-ops.
_PLACEHOLDERS: tuple[type, ...] = (
    trace.ProxyTracerProvider,
    trace.NoOpTracerProvider,
    _ProxyMeterProvider,  # the API exports no name for it
    metrics.NoOpMeterProvider,
    ProxyLoggerProvider,
    _logs.NoOpLoggerProvider,
)


def is_proxy(provider: object) -> bool:
    """An API proxy or no-op provider: nobody set a real one (yet)."""
    return provider is None or isinstance(provider, _PLACEHOLDERS)


def _exporters_wanted(endpoint: str | None) -> dict[str, list[str]]:
    """Per signal, the exporters sigtrace adds (OTLP where an endpoint is set and no exporter is named) and
    whether the SDK will configure any exporter at all (``OTEL_<SIGNAL>_EXPORTER``, ``none`` meaning none)."""
    from opentelemetry.sdk._configuration import _get_exporter_entry_point

    names: dict[str, list[str]] = {}
    for signal, (exporter_variable, signal_endpoint) in _EXPORTER_VARIABLES.items():
        named = os.environ.get(exporter_variable, "").strip()
        # The distro's default: OTLP when an endpoint is configured and no exporter is named.
        wanted = bool(endpoint or os.environ.get(signal_endpoint)) and not named
        # The SDK maps "otlp" to gRPC or HTTP by OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL.
        names[signal] = [_get_exporter_entry_point("otlp", signal)] if wanted else []  # type: ignore[arg-type]
        if named and named.lower() != "none":
            names[signal].append("<named>")  # the SDK adds these itself; marks the signal as exported
    return names


def _configure_sdk(service_name: str | None) -> frozenset[str]:
    """Run the SDK's auto-configuration once per process for the signals that have an exporter.

    A signal without one is left to the application (its proxy stays), so the SDK's initialiser
    of that signal is skipped: the SDK would otherwise claim the global provider with one that
    exports nothing, and refuse the application's own later.
    """
    global _configured
    with _lock:
        if _configured:
            return frozenset(_owned)
        if _global_tracer_set():
            return frozenset()
        from opentelemetry.sdk import _configuration

        names = _exporters_wanted(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        # A meter or logger provider the application already set is kept (the SDK would only warn).
        getters = {"metrics": metrics.get_meter_provider, "logs": _logs.get_logger_provider}
        wanted = [s for s in _SIGNALS if names[s] and (s == "traces" or is_proxy(getters[s]()))]
        if not wanted:
            return frozenset()
        skipped = {s: getattr(_configuration, _INITIALISERS[s], None) for s in _SIGNALS if s not in wanted}
        if None in skipped.values():  # an SDK that renamed its initialisers: it configures every signal
            logger.warning("sigtrace: this OpenTelemetry SDK configures every signal; some export nothing")
            wanted, skipped = list(_SIGNALS), {}
        resource: dict[str, Any] = {}
        if service_name and not os.environ.get("OTEL_SERVICE_NAME"):
            resource["service.name"] = service_name
        try:
            for signal in skipped:
                setattr(_configuration, _INITIALISERS[signal], _skip)
            _configuration._initialize_components(
                trace_exporter_names=[n for n in names["traces"] if n != "<named>"],
                metric_exporter_names=[n for n in names["metrics"] if n != "<named>"],
                log_exporter_names=[n for n in names["logs"] if n != "<named>"],
                resource_attributes=resource,
            )
        finally:
            for signal, initialiser in skipped.items():
                setattr(_configuration, _INITIALISERS[signal], initialiser)
        _configured = True
        current: dict[str, Any] = {
            "traces": trace.get_tracer_provider(),
            "metrics": metrics.get_meter_provider(),
            "logs": _logs.get_logger_provider(),
        }
        for signal in wanted:
            provider = current[signal]
            _owned[signal] = provider
            # Replaced by sigtrace's own exit handler, which bounds the time shutdown may take.
            atexit.unregister(provider.shutdown)
        atexit.register(_shutdown_at_exit)
        return frozenset(_owned)


def _skip(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for the SDK's initialiser of a signal that has no exporter: its global proxy stays."""


def resolve_providers(
    tracer_provider: Any, meter_provider: Any, logger_provider: Any, service_name: str | None
) -> Providers:
    owned: frozenset[str] = frozenset()
    if tracer_provider is None and not sdk_disabled():
        owned = _configure_sdk(service_name)
    return Providers(
        tracer_provider=tracer_provider or trace.get_tracer_provider(),
        meter_provider=meter_provider or metrics.get_meter_provider(),
        logger_provider=logger_provider or (None if sdk_disabled() else _logs.get_logger_provider()),
        configured_here=bool(owned),
        owned=owned,
    )


def set_shutdown_timeout(seconds: float) -> None:
    global _shutdown_timeout
    _shutdown_timeout = seconds


# --- bounded shutdown ---


def run_bounded(what: str, calls: Iterable[Callable[[], object]], timeout: float, providers: Iterable[Any]) -> bool:
    """Run ``calls`` at once, each in a daemon thread of its own; wait at most ``timeout`` seconds for all.

    In parallel: a tracer provider stuck on a hanging collector must not eat the budget of the
    meter and logger providers. False when they did not all finish: the threads are left to
    themselves (daemon threads, so the process can still exit) and what the providers still
    hold is counted and logged once, here.
    """
    started = time.monotonic()
    threads = []
    failures: list[Exception] = []
    for index, call in enumerate(calls):
        thread = threading.Thread(
            target=_run, args=(call, failures), name=f"sigtrace-{what.replace(' ', '-')}-{index}", daemon=True
        )
        thread.start()
        threads.append(thread)
    deadline = started + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for failure in list(failures):  # in the caller's thread: counted, logged, raised in strict mode
        safety.report("installation.flush", failure)
    stuck = [thread for thread in threads if thread.is_alive()]
    if not stuck:
        return True
    _stuck.extend(stuck)
    pending = _pending(providers)
    logger.warning(
        "sigtrace: %s did not finish within %.1fs (shutdown_timeout; the collector is down or hangs): "
        "gave up on %s and any export in progress. The local JSON-lines audit record is complete.",
        what,
        time.monotonic() - started,
        ", ".join(f"{count} {kind}" for kind, count in pending.items()) or "what was not exported yet",
    )
    return False


def _run(call: Callable[[], object], failures: list[Exception]) -> None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported by run_bounded, in the thread that waits
        failures.append(exc)


def _queue_length(processor: Any) -> int:
    batch = getattr(processor, "_batch_processor", None)
    queue = getattr(batch, "_queue", None)
    return len(queue) if queue is not None else 0


def _pending(providers: Iterable[Any]) -> dict[str, int]:
    """Records still queued in the SDK's batch processors (best effort: read from their internals)."""
    counts: dict[str, int] = {}
    for provider in providers:
        spans = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
        if spans is not None:
            counts["spans"] = counts.get("spans", 0) + sum(_queue_length(p) for p in spans)
        multi = getattr(provider, "_multi_log_record_processor", None)
        records = getattr(multi, "_log_record_processors", None)
        if records is not None:
            counts["log records"] = counts.get("log records", 0) + sum(_queue_length(p) for p in records)
    return {kind: count for kind, count in counts.items() if count}


def shutdown_calls(providers: Iterable[Any], timeout: float) -> list[Callable[[], object]]:
    calls: list[Callable[[], object]] = []
    for provider in providers:
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is None:
            continue
        if isinstance(provider, metrics.MeterProvider) and hasattr(provider, "force_flush"):  # SDK: takes a timeout
            calls.append(functools.partial(shutdown, timeout_millis=timeout * 1000.0))
        else:
            calls.append(shutdown)
    return calls


def _shutdown_at_exit() -> None:
    """At interpreter exit: shut down the providers sigtrace configured, within ``shutdown_timeout``.

    When a flush abandoned earlier (``uninstall()`` just before the exit) is still blocked on the
    collector, the collector has not come back: the exit waits only a short grace, not the whole
    budget again.
    """
    providers = list(_owned.values())
    if not providers:
        return
    timeout = _shutdown_timeout
    if any(thread.is_alive() for thread in _stuck):
        timeout = min(timeout, STUCK_GRACE)
    run_bounded("shutdown at exit", shutdown_calls(providers, timeout), timeout, providers)


# --- what goes where, said once at install ---


def _exporter_of(processor: Any) -> Any:
    for attribute in ("span_exporter", "_exporter"):
        exporter = getattr(processor, attribute, None)
        if exporter is not None:
            return exporter
    return getattr(getattr(processor, "_batch_processor", None), "_exporter", None)


def _exporters(provider: Any) -> list[Any]:
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    if processors is None:
        multi = getattr(provider, "_multi_log_record_processor", None)
        processors = getattr(multi, "_log_record_processors", None)
    if processors is not None:
        return [exporter for exporter in map(_exporter_of, processors) if exporter is not None]
    readers = getattr(getattr(provider, "_sdk_config", None), "metric_readers", None)
    if readers is not None:
        return [getattr(reader, "_exporter", reader) for reader in readers]
    return []


def _exporter_text(exporter: Any) -> str:
    endpoint = getattr(exporter, "_endpoint", None)
    name = type(exporter).__name__
    return f"{name} to {endpoint}" if endpoint else name


def describe(provider: Any, signal: str, owned: bool, passed: bool) -> str:
    """Where one signal's telemetry goes, in a few words (for the line ``install()`` logs)."""
    if sdk_disabled() and not passed:
        return "nowhere (OTEL_SDK_DISABLED=true)"
    if is_proxy(provider):
        return "the provider the application sets later (none yet; no OTEL_* exporter configured)"
    origin = "configured from OTEL_*" if owned else "passed to install()" if passed else "the application's"
    exporters = _exporters(provider)
    if not exporters and hasattr(provider, "shutdown"):
        return f"{origin} {type(provider).__name__} with no exporter (nothing is exported)"
    return f"{origin} {type(provider).__name__}" + (
        f" -> {', '.join(map(_exporter_text, exporters))}" if exporters else ""
    )
