"""install() / uninstall(): one installation per process, built from validated options."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from sigtrace._config import ConfigError, Options, resolve_options
from sigtrace._otel import Providers, resolve_providers
from sigtrace.core import safety
from sigtrace.core.engine import Engine
from sigtrace.sinks.audit import AuditOutput, AuditSink, BackgroundOutput, JsonLinesWriter, OtlpLogOutput
from sigtrace.sinks.metrics import MetricSink
from sigtrace.sinks.redaction import Redactor
from sigtrace.sinks.spans import SpanSink
from sigtrace.sources import REGISTRY, SourceSpec
from sigtrace.sources.base import Source

__all__ = ["Installation", "MissingLibraryError", "current", "install", "uninstall"]

logger = logging.getLogger("sigtrace")
_lock = threading.RLock()
_installation: Installation | None = None


class MissingLibraryError(ConfigError):
    """A source was asked for by name but its library is not installed."""


class Installation:
    """The handle ``install()`` returns: what is attached, with which providers and options."""

    def __init__(self, options: Options, providers: Providers, engine: Engine, writer: JsonLinesWriter | None) -> None:
        self.options = options
        self.providers = providers
        self.engine = engine
        self.sources: dict[str, Source] = {}
        self._writer = writer

    @property
    def tracer_provider(self) -> Any:
        return self.providers.tracer_provider

    @property
    def meter_provider(self) -> Any:
        return self.providers.meter_provider

    @property
    def logger_provider(self) -> Any:
        return self.providers.logger_provider

    def in_flight(self) -> int:
        """Operations started and not yet ended."""
        return len(self.engine.table)

    def force_flush(self, timeout_millis: int = 30_000) -> None:
        """Export what the providers hold (for short-lived scripts and tests).

        ``timeout_millis`` bounds the whole call, not each provider: with a collector that hangs,
        three providers must not take three times the budget (uninstall() waits for this).
        """
        deadline = time.monotonic() + timeout_millis / 1000.0
        self.flush_audit(timeout_millis / 1000.0)
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is None:
                continue
            left = int((deadline - time.monotonic()) * 1000.0)
            if left <= 0:
                break
            with safety.guard("installation.flush"):
                flush(left)

    def flush_audit(self, timeout: float = 5.0) -> None:
        """Wait until the audit events of finished operations reached every output."""
        audit = self.engine.audit
        if audit is not None:
            with safety.guard("installation.flush"):
                audit.flush(timeout)

    def uninstall(self) -> None:
        uninstall()

    def __repr__(self) -> str:
        return f"<sigtrace.Installation sources={sorted(self.sources)}>"


def _library_available(spec: SourceSpec) -> bool:
    try:
        return importlib.util.find_spec(spec.library) is not None
    except (ImportError, ValueError):
        return False


def select_sources(requested: tuple[str, ...] | None, excluded: frozenset[str]) -> list[SourceSpec]:
    """The sources to attach: the requested ones (checked), else every one whose library is importable."""
    if requested is None:
        return [spec for spec in REGISTRY.values() if spec.name not in excluded and _library_available(spec)]
    chosen = []
    for name in requested:
        spec = REGISTRY.get(name)
        if spec is None:
            raise ConfigError(f"unknown source {name!r}; supported sources: {', '.join(sorted(REGISTRY))}")
        if not _library_available(spec):
            raise MissingLibraryError(
                f"source {name!r} needs the {spec.library!r} library, which is not installed: "
                f'pip install "sigtrace[{spec.extra}]"'
            )
        if name not in excluded:
            chosen.append(spec)
    return chosen


def _audit_outputs(
    options: Options, providers: Providers, service_name: str | None
) -> tuple[list[tuple[str, AuditOutput]], JsonLinesWriter | None]:
    outputs: list[tuple[str, AuditOutput]] = []
    writer: JsonLinesWriter | None = None
    audit = options.audit
    if audit is False:
        return outputs, None
    if audit is True or options.audit_file is not None:
        writer = JsonLinesWriter(
            options.audit_file,
            service_name=service_name,
            key=options.audit_key,
            checkpoint_lines=options.audit_checkpoint_lines,
            checkpoint_seconds=options.audit_checkpoint_seconds,
            durability=options.audit_durability,
        )
        outputs.append(("jsonl", writer))
    if audit is not True:
        if hasattr(audit, "info") and hasattr(audit, "bind"):
            structlog_logger = audit

            def to_logger(event: Mapping[str, Any]) -> None:
                fields = dict(event)
                structlog_logger.info(fields.pop("event"), **fields)

            # The application's own code may block: delivered from a background thread.
            outputs.append(("structlog", BackgroundOutput("structlog", to_logger)))
        else:
            outputs.append(("callable", BackgroundOutput("callable", audit)))
    if providers.logger_provider is not None:
        outputs.append(("otlp", OtlpLogOutput(providers.logger_provider)))
    return outputs, writer


def _build(options: Options) -> Installation:
    providers = resolve_providers(
        options.tracer_provider, options.meter_provider, options.logger_provider, options.service_name
    )
    metric_sink = MetricSink(providers.meter_provider) if options.metrics else None
    if metric_sink is not None:
        safety.set_error_listener(lambda kind, _exc: metric_sink.internal_error(kind))
    service_name = options.service_name or _resource_service_name(providers.tracer_provider)
    outputs, writer = _audit_outputs(options, providers, service_name)
    audit_sink = (
        AuditSink(
            outputs,
            service_name=service_name,
            redactor=Redactor(options.redact, options.max_value_length),
            capture_values=options.capture_values,
            audit_reads=options.audit_reads,
            actor=options.actor,
        )
        if outputs
        else None
    )
    engine = Engine(
        SpanSink(providers.tracer_provider, options.max_value_length),
        metric_sink,
        audit_sink,
        max_in_flight=options.max_in_flight,
        orphan_timeout=options.orphan_timeout,
        exclude=options.exclude,
    )
    return Installation(options, providers, engine, writer)


def _resource_service_name(tracer_provider: Any) -> str | None:
    resource = getattr(tracer_provider, "resource", None)
    name = getattr(resource, "attributes", {}).get("service.name") if resource is not None else None
    return str(name) if name else None


def _load(spec: SourceSpec) -> type[Source]:
    module_name, _, class_name = spec.target.partition(":")
    cls: type[Source] = getattr(importlib.import_module(module_name), class_name)
    return cls


def install(**kwargs: Any) -> Installation:
    """Attach sigtrace to every selected source; idempotent and thread-safe. See ``sigtrace.install``."""
    global _installation
    with _lock:
        if _installation is not None:
            if kwargs and resolve_options(kwargs) != _installation.options:
                logger.warning("sigtrace.install() called again with other options; the first installation is kept")
            return _installation
        options = resolve_options(kwargs)
        specs = select_sources(options.sources, options.exclude.sources)
        installation = _build(options)
        for spec in specs:
            source = _load(spec)(installation.engine, options)
            try:
                source.attach()
            except Exception as exc:  # noqa: BLE001 - a broken source must not stop the application
                source.detach()
                try:
                    safety.report(f"source.{spec.name}.attach", exc)
                except Exception:
                    for attached in reversed(installation.sources.values()):
                        attached.detach()
                    installation.engine.close()
                    raise
                continue
            installation.sources[spec.name] = source
        installation.engine.start_reaper()
        _installation = installation
        return installation


def uninstall() -> None:
    """Disconnect every receiver, remove every patch, end what is in flight; a no-op when not installed."""
    global _installation
    with _lock:
        installation = _installation
        if installation is None:
            return
        _installation = None
        for source in reversed(list(installation.sources.values())):
            source.detach()
        installation.engine.close()
        if installation.engine.audit is not None:
            with safety.guard("installation.flush"):
                installation.engine.audit.close(5.0)
        installation.force_flush(5_000)
        if installation._writer is not None:
            with safety.guard("audit.close"):  # a full disk must not make uninstall() raise
                installation._writer.close()
        safety.set_error_listener(None)


def current() -> Installation | None:
    return _installation
