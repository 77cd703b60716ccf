"""install() / uninstall(): one installation per process, built from validated options."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import _logs
from opentelemetry._logs import _internal as _logs_internal
from opentelemetry.environment_variables import _OTEL_PYTHON_LOGGER_PROVIDER

from sigtrace._config import ENV_VARIABLES, ConfigError, Options, resolve_options, warn_unknown_variables
from sigtrace._otel import Providers, describe, is_proxy, resolve_providers, run_bounded, set_shutdown_timeout
from sigtrace.core import safety
from sigtrace.core.engine import Engine, EntryScope
from sigtrace.core.sinks import Sink
from sigtrace.sinks.audit import AuditOutput, AuditSink, BackgroundOutput, JsonLinesWriter, OtlpLogOutput
from sigtrace.sinks.metrics import MetricSink
from sigtrace.sinks.redaction import Redactor
from sigtrace.sinks.spans import SpanSink
from sigtrace.sources import REGISTRY, SourceSpec
from sigtrace.sources.kit import Source

__all__ = ["Installation", "MissingLibraryError", "current", "install", "install_resolved", "scope", "uninstall"]

logger = logging.getLogger("sigtrace")
_lock = threading.RLock()
_installation: Installation | None = None


class MissingLibraryError(ConfigError):
    """A source was asked for by name but its library is not installed."""


class Installation:
    """The handle ``install()`` returns: what is attached, with which providers and options."""

    def __init__(
        self,
        options: Options,
        providers: Providers,
        engine: Engine,
        writer: JsonLinesWriter | None,
        *,
        spans: SpanSink | None = None,
        audit: AuditSink | None = None,
        metrics: MetricSink | None = None,
    ) -> None:
        self.options = options
        self.providers = providers
        self.engine = engine
        self.sources: dict[str, Source] = {}
        #: The sinks wired into the engine (which knows them only by ``core/sinks.py``'s protocol).
        self.spans = spans
        self.audit = audit
        self.metrics = metrics
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

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what the providers hold (for short-lived scripts and tests); False if that did not finish.

        ``timeout_millis`` bounds the whole call, not each provider: with a collector that hangs,
        three providers must not take three times the budget (uninstall() waits for this). The
        SDK's batch processors ignore the timeout of their ``force_flush``, so the flushes run in
        daemon threads, one per provider, abandoned at the deadline (what they still held is
        counted and logged once: sigtrace._otel.run_bounded).
        """
        deadline = time.monotonic() + timeout_millis / 1000.0
        self.flush_audit(timeout_millis / 1000.0)
        providers = [p for p in dict.fromkeys(self._providers()) if callable(getattr(p, "force_flush", None))]
        if not providers:
            return True
        left = max(0.0, deadline - time.monotonic())
        calls = [lambda provider=provider: provider.force_flush(int(left * 1000.0)) for provider in providers]
        return run_bounded("flush", calls, left, providers)

    def _providers(self) -> list[Any]:
        return [p for p in (self.tracer_provider, self.meter_provider, self.logger_provider) if not is_proxy(p)]

    def flush_audit(self, timeout: float = 5.0) -> None:
        """Wait until the audit events of finished operations reached every output."""
        audit = self.audit
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


def _wanted_when_detected(spec: SourceSpec) -> bool:
    """A found source's own say on attaching when not named (``SourceSpec.detect``)."""
    if spec.detect is None:
        return True
    module_name, _, function = spec.detect.partition(":")
    with safety.guard(f"source.{spec.name}.detect"):
        return bool(getattr(importlib.import_module(module_name), function)())
    return False


def select_sources(requested: tuple[str, ...] | None, excluded: frozenset[str]) -> list[SourceSpec]:
    """The sources to attach: the requested ones (checked), else every one whose library is importable."""
    if requested is None:
        detected = []
        for candidate in REGISTRY.values():
            if candidate.name in excluded or not _library_available(candidate):
                continue
            if not _wanted_when_detected(candidate):
                continue
            problem = candidate.unsupported()
            if problem is None:
                detected.append(candidate)
            else:
                logger.warning("%s: not attached (name it in sources=[...] to attach it anyway)", problem)
        return detected
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
        problem = spec.unsupported()
        if problem is not None:
            logger.warning("%s: attached because it was named in sources=[...]; it may not work", problem)
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
        writer = _json_lines_writer(options, service_name)
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
        if is_proxy(providers.logger_provider):
            outputs.append(("otlp", _LateOtlpLogOutput()))
        else:
            outputs.append(("otlp", OtlpLogOutput(providers.logger_provider)))
    return outputs, writer


class _LateOtlpLogOutput:
    """OTLP log records to the logger provider the application sets after ``install()``; nothing before.

    Until one is set the global logger provider is OpenTelemetry's proxy, which drops every record:
    building records for it would cost each audit event for nothing.
    """

    __slots__ = ("_from_environment", "_output", "_proxy")

    def __init__(self) -> None:
        self._output: OtlpLogOutput | None = None
        #: The provider last found to be the proxy: while it is still the global one, one identity check.
        self._proxy: object = None
        #: ``get_logger_provider()`` loads a provider named by this variable; without it, the provider is
        #: whatever ``set_logger_provider`` stored, read here as the API's module global: no lookup of
        #: ``os.environ`` per event (0.5 µs of the 0.8 µs this output cost each event, by timeit).
        self._from_environment = _OTEL_PYTHON_LOGGER_PROVIDER in os.environ

    def __call__(self, event: Mapping[str, Any]) -> None:
        output = self._output
        if output is None:
            if not self._from_environment and _logs_internal._LOGGER_PROVIDER is None:
                return  # nothing set yet: get_logger_provider() would return the proxy
            provider = _logs.get_logger_provider()
            if provider is self._proxy:
                return
            if is_proxy(provider):
                self._proxy = provider
                return
            output = self._output = OtlpLogOutput(provider)
        output(event)


_STANDARD_STREAMS = frozenset({"-", "stdout", "stderr"})


def _audit_file_given(options: Options) -> str:
    """How the user wrote the audit file: ``SIGTRACE_AUDIT_FILE='...'`` when it came from there."""
    variable = ENV_VARIABLES["audit_file"]
    if os.environ.get(variable, "").strip() == options.audit_file:
        return f"{variable}={options.audit_file!r}"
    return f"audit_file={options.audit_file!r}"


def _check_audit_file(options: Options) -> None:
    """Before anything is configured: a path sigtrace cannot append to is a ConfigError naming it."""
    path = options.audit_file
    if path is None or path in _STANDARD_STREAMS or options.audit is False:
        return
    if os.path.isdir(path):
        raise ConfigError(f"{_audit_file_given(options)}: is a directory; expected the path of a file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{_audit_file_given(options)}: the directory {directory!r} does not exist")


def _json_lines_writer(options: Options, service_name: str | None) -> JsonLinesWriter:
    try:
        return JsonLinesWriter(
            options.audit_file,
            service_name=service_name,
            key=options.audit_key,
            checkpoint_lines=options.audit_checkpoint_lines,
            checkpoint_seconds=options.audit_checkpoint_seconds,
            durability=options.audit_durability,
        )
    except OSError as exc:
        raise ConfigError(
            f"{_audit_file_given(options)}: cannot open it for appending: {exc.strerror or exc}"
        ) from None


def _build(options: Options) -> Installation:
    _check_audit_file(options)
    providers = resolve_providers(
        options.tracer_provider, options.meter_provider, options.logger_provider, options.service_name
    )
    service_name = (
        options.service_name or _resource_service_name(providers.tracer_provider) or os.environ.get("OTEL_SERVICE_NAME")
    )
    outputs, writer = _audit_outputs(options, providers, service_name)  # first: a file it cannot open is a ConfigError
    metric_sink = MetricSink(providers.meter_provider) if options.metrics else None
    if metric_sink is not None:
        safety.set_error_listener(lambda kind, _exc: metric_sink.internal_error(kind))
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
    # Start order: the span first (the others read it); the engine ends them in reverse, the audit record first.
    span_sink = SpanSink(providers.tracer_provider, options.max_value_length)
    sinks: list[tuple[str, Sink]] = [("spans", span_sink)]
    if metric_sink is not None:
        sinks.append(("metrics", metric_sink))
    if audit_sink is not None:
        sinks.append(("audit", audit_sink))
    engine = Engine(
        sinks,
        max_in_flight=options.max_in_flight,
        orphan_timeout=options.orphan_timeout,
        exclude=options.exclude,
    )
    return Installation(options, providers, engine, writer, spans=span_sink, audit=audit_sink, metrics=metric_sink)


def _resource_service_name(tracer_provider: Any) -> str | None:
    resource = getattr(tracer_provider, "resource", None)
    name = getattr(resource, "attributes", {}).get("service.name") if resource is not None else None
    return str(name) if name else None


def _load(spec: SourceSpec) -> type[Source]:
    module_name, _, class_name = spec.target.partition(":")
    cls: type[Source] = getattr(importlib.import_module(module_name), class_name)
    return cls


def install(**kwargs: Any) -> Installation:
    """Attach sigtrace to every supported library that is importable (or to ``sources=[...]``).

    Idempotent and thread-safe: a second call returns the same handle and attaches nothing twice.
    Every option can also come from its ``SIGTRACE_*`` environment variable (docs/configuration.md).
    Raises ``ConfigError`` for a bad option value or an unknown source, and
    ``MissingLibraryError`` (naming the extra to install) for a source whose library is missing.
    """
    global _installation
    with _lock:
        if _installation is not None:
            if kwargs and resolve_options(kwargs) != _installation.options:
                logger.warning("sigtrace.install() called again with other options; the first installation is kept")
            return _installation
        return install_resolved(resolve_options(kwargs))


def install_resolved(options: Options) -> Installation:
    """:func:`install` from options already validated (``sigtrace.testing`` reinstalls an installation it took over)."""
    global _installation
    with _lock:
        if _installation is not None:
            return _installation
        warn_unknown_variables()
        specs = select_sources(options.sources, options.exclude.sources)
        installation = _build(options)
        set_shutdown_timeout(options.shutdown_timeout)
        for spec in specs:
            source = _load(spec)(installation.engine, options)
            source.meter = installation.metrics.meter if installation.metrics is not None else None
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
        logger.info("sigtrace: installed; %s", _destinations(installation))
        return installation


def _destinations(installation: Installation) -> str:
    """What sigtrace exports where, in one line (logged at install)."""
    options, providers = installation.options, installation.providers
    sources = ", ".join(sorted(installation.sources)) or "none"
    parts = [f"sources: {sources}"]
    for signal, provider, passed in (
        ("spans", providers.tracer_provider, options.tracer_provider is not None),
        ("metrics", providers.meter_provider if options.metrics else None, options.meter_provider is not None),
    ):
        owned = {"spans": "traces"}.get(signal, signal) in providers.owned
        parts.append(f"{signal}: " + (describe(provider, signal, owned, passed) if provider is not None else "off"))
    audit = options.audit
    targets = []
    if installation._writer is not None:
        targets.append(f"JSON lines to {options.audit_file or 'stderr'}")
    if audit is not True and audit is not False:
        targets.append("the audit= logger" if hasattr(audit, "bind") else "the audit= callable")
    if audit is not False and providers.logger_provider is not None:
        passed = options.logger_provider is not None
        where = describe(providers.logger_provider, "logs", "logs" in providers.owned, passed)
        targets.append(f"OTLP log records: {where}")
    parts.append("audit events: " + ("; ".join(targets) if targets else "off"))
    return "; ".join(parts)


def uninstall() -> None:
    """Disconnect every receiver, restore every patch, end what is still in flight. No-op if not installed.

    Operations other threads are ending are waited for (up to a second, within ``shutdown_timeout``:
    ``Engine.close``) before the audit outputs close, so that none loses its audit event.
    """
    global _installation
    with _lock:
        installation = _installation
        if installation is None:
            return
        _installation = None
        for source in reversed(list(installation.sources.values())):
            source.detach()
        budget = installation.options.shutdown_timeout
        deadline = time.monotonic() + budget
        # Its wait for operations other threads are ending is part of the same budget.
        installation.engine.close(min(1.0, budget))
        if installation.audit is not None:
            with safety.guard("installation.flush"):
                installation.audit.close(max(0.0, deadline - time.monotonic()))
        # Bounded: a collector that is down or hangs must not hold uninstall() (nor the exit after it).
        installation.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000.0))
        if installation._writer is not None:
            with safety.guard("audit.close"):  # a full disk must not make uninstall() raise
                installation._writer.close()
        safety.set_error_listener(None)


def current() -> Installation | None:
    """The running installation's handle, or ``None``."""
    return _installation


def is_installed() -> bool:
    """Whether sigtrace is installed in this process."""
    return _installation is not None


def scope() -> EntryScope | contextlib.nullcontext[None]:
    """Guard code that sends traced signals: an operation begun inside and not ended when an
    exception leaves the block ends at once as an error with that exception (libraries send no
    post signal on failure); one still open on a normal exit ends as ``ok``.

    Works as ``with`` and ``async with``. Outside an installation it does nothing.
    """
    installation = current()
    if installation is None:
        return contextlib.nullcontext()
    return installation.engine.entry(None)
