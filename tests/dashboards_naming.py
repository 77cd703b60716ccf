"""OTLP metric names as Prometheus sees them after the OpenTelemetry Collector's ``prometheus`` exporter.

One place for the translation, so that the static dashboard test (``tests/test_dashboards.py``) and any test
that looks at what a real OTLP receiver got apply the same rules. The rules are those of the Collector's
Prometheus translator with its defaults (``translation_strategy: UnderscoreEscapingWithSuffixes``, no
``namespace``), as the OpenTelemetry "Prometheus and OpenMetrics compatibility" specification describes them:

* the name is split into tokens on every character that is not a letter or a digit, and the tokens are
  joined with ``_`` (so ``db.client.operation.duration`` -> ``db_client_operation_duration``);
* the unit becomes a suffix (``s`` -> ``seconds``, ``ms`` -> ``milliseconds``, ``By`` -> ``bytes`` ...)
  unless the name already has that token; ``"{operation}"``-style annotations are dropped; ``a/b`` units
  become ``a_per_b``;
* a monotonic sum (counter) gets ``_total``; a non-monotonic sum (up-down counter) is a gauge without it;
  a gauge of unit ``1`` gets ``_ratio``;
* a histogram is exported as ``<name>_bucket`` (with ``le``), ``<name>_sum`` and ``<name>_count``;
* attribute (label) names get every character that is not a letter, digit or ``_`` replaced by ``_``.

``sigtrace_metric_catalog()`` records one operation of every kind through sigtrace's own metric sink on
an in-memory reader, so the names, kinds, units and attribute keys come from the code that exports them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "KINDS",
    "RESOURCE_LABELS",
    "MetricSpec",
    "kind_from_otlp",
    "prometheus_base_name",
    "prometheus_label",
    "prometheus_names",
    "prometheus_series",
    "sigtrace_metric_catalog",
]

#: Instrument kinds (API names) and the OTLP data type each one is exported as.
KINDS: dict[str, str] = {
    "counter": "sum_monotonic",
    "observable_counter": "sum_monotonic",
    "up_down_counter": "sum_non_monotonic",
    "observable_up_down_counter": "sum_non_monotonic",
    "gauge": "gauge",
    "observable_gauge": "gauge",
    "histogram": "histogram",
}
_OTLP_TYPES = {"sum_monotonic", "sum_non_monotonic", "gauge", "histogram"}

#: The translator's unit table (main units), from the Collector's ``pkg/translator/prometheus``.
_UNITS: dict[str, str] = {
    # time
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    # bytes
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    # SI
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    # misc
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS: dict[str, str] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}

#: Labels the Collector's exporter adds to every series whatever the metric: ``job``/``instance`` from
#: ``service.name``/``service.instance.id``, the instrumentation scope, and (with
#: ``resource_to_telemetry_conversion``) the resource attributes the Python SDK sets by default.
RESOURCE_LABELS: frozenset[str] = frozenset(
    {
        "job",
        "instance",
        "otel_scope_name",
        "otel_scope_version",
        "service_name",
        "service_namespace",
        "service_version",
        "service_instance_id",
        "deployment_environment",
        "deployment_environment_name",
        "telemetry_sdk_language",
        "telemetry_sdk_name",
        "telemetry_sdk_version",
    }
)


def _normalise_kind(kind: str) -> str:
    if kind in KINDS:
        return KINDS[kind]
    if kind in _OTLP_TYPES:
        return kind
    raise ValueError(f"unknown metric kind {kind!r}: expected one of {sorted({*KINDS, *_OTLP_TYPES})}")


def kind_from_otlp(data_type: str, is_monotonic: bool | None = None) -> str:
    """The kind of an OTLP metric as a receiver reports it (``sum`` + ``is_monotonic``, ``histogram`` ...)."""
    data_type = data_type.lower()
    if data_type == "sum":
        return "sum_monotonic" if is_monotonic else "sum_non_monotonic"
    if data_type in ("gauge", "histogram"):
        return data_type
    raise ValueError(f"no Prometheus mapping here for OTLP data type {data_type!r}")


def _tokens(text: str) -> list[str]:
    return [token for token in re.split(r"[^0-9A-Za-z]+", text) if token]


def _unit_tokens(unit: str) -> list[str]:
    main, _, per = (part.strip() for part in unit.partition("/"))
    out: list[str] = []
    if main and not any(ch in main for ch in "{}"):
        out.extend(_tokens(_UNITS.get(main, main)))
    if per and not any(ch in per for ch in "{}"):
        out.extend(["per", *_tokens(_PER_UNITS.get(per, per))])
    return out


def prometheus_base_name(metric_name: str, kind: str, unit: str) -> str:
    """The Prometheus metric name (for a histogram: the family name, without ``_bucket`` etc.)."""
    otlp_kind = _normalise_kind(kind)
    tokens = _tokens(metric_name)
    if not tokens:
        raise ValueError(f"metric name {metric_name!r} has no letters or digits")
    for token in _unit_tokens(unit):
        if token not in tokens:
            tokens.append(token)
    if otlp_kind == "sum_monotonic":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if otlp_kind == "gauge" and unit == "1":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    name = "_".join(tokens)
    return f"_{name}" if name[0].isdigit() else name


def prometheus_names(metric_name: str, kind: str, unit: str) -> set[str]:
    """Every Prometheus series name the Collector's ``prometheus`` exporter makes of one OTLP metric.

    ``kind``: an instrument kind (``counter``, ``up_down_counter``, ``histogram``, ``gauge``, observable
    variants) or an OTLP type (``sum_monotonic``, ``sum_non_monotonic``, ``gauge``, ``histogram``; see
    ``kind_from_otlp``).
    """
    base = prometheus_base_name(metric_name, kind, unit)
    if _normalise_kind(kind) == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}


def prometheus_label(attribute: str) -> str:
    """The Prometheus label name of an OpenTelemetry attribute key."""
    label = re.sub(r"[^0-9A-Za-z_]", "_", attribute)
    if label[:1].isdigit():
        label = f"key_{label}"
    elif label.startswith("_") and not label.startswith("__"):
        label = f"key{label}"
    return label


@dataclass(frozen=True)
class MetricSpec:
    """One metric sigtrace exports: its OTLP name, instrument kind, unit and attribute keys."""

    name: str
    kind: str
    unit: str
    attributes: frozenset[str]

    @property
    def prometheus_names(self) -> set[str]:
        return prometheus_names(self.name, self.kind, self.unit)

    def prometheus_labels(self, series: str) -> frozenset[str]:
        """The labels a series of this metric can carry in Prometheus."""
        labels = {prometheus_label(key) for key in self.attributes} | RESOURCE_LABELS
        if series.endswith("_bucket") and _normalise_kind(self.kind) == "histogram":
            labels.add("le")
        return frozenset(labels)


def prometheus_series(specs: Iterable[MetricSpec]) -> dict[str, frozenset[str]]:
    """Prometheus series name -> the labels it can carry, for every metric in ``specs``."""
    out: dict[str, frozenset[str]] = {}
    for spec in specs:
        for series in spec.prometheus_names:
            if series in out:
                raise ValueError(f"two metrics map to the Prometheus name {series!r}")
            out[series] = spec.prometheus_labels(series)
    return out


def sigtrace_metric_catalog() -> list[MetricSpec]:
    """The metrics sigtrace's metric sink really exports, read back from an in-memory reader.

    One operation of every shape is recorded (failed, orphaned with a reason, in flight) plus one internal
    error, so every instrument has a point with every attribute it can carry.
    """
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.sdk.metrics.export import Histogram as HistogramData
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

    from sigtrace.core.operation import Operation
    from sigtrace.sinks.metrics import MetricSink

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        sink = MetricSink(provider)
        kinds = {}
        for value in vars(sink).values():
            for cls, kind in ((Histogram, "histogram"), (Counter, "counter"), (UpDownCounter, "up_down_counter")):
                if isinstance(value, cls):
                    kinds[value.name] = kind
        failed = Operation(source="blinker", name="save", model="Order", collection="orders", db_system="sqlite")
        failed.outcome, failed.error_type = "error", "ValueError"
        orphan = Operation(source="blinker", name="save", model="Order", collection="orders", db_system="sqlite")
        orphan.outcome, orphan.orphaned = "unknown", True
        orphan.audit["orphan_reason"] = "timeout"
        still_running = Operation(source="blinker", name="save", collection="orders")
        for op in (failed, orphan, still_running):
            sink.started(op)
        sink.finished(failed, 0, 0.002, False)
        sink.finished(orphan, 0, 300.0, False)
        sink.internal_error("source.receiver")
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    specs: dict[str, MetricSpec] = {}
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = metric.data.data_points
                attributes = frozenset(key for point in points for key in (point.attributes or {}))
                if isinstance(metric.data, HistogramData):
                    kind = "histogram"
                elif isinstance(metric.data, Sum):
                    kind = "counter" if metric.data.is_monotonic else "up_down_counter"
                else:
                    kind = "gauge"
                if metric.name in kinds and kinds[metric.name] != kind:
                    raise AssertionError(f"{metric.name}: instrument is a {kinds[metric.name]}, data is a {kind}")
                specs[metric.name] = MetricSpec(metric.name, kind, metric.unit or "", attributes)
    missing = set(kinds) - set(specs)
    if missing:
        raise AssertionError(f"instruments of the metric sink that recorded nothing here: {sorted(missing)}")
    return sorted(specs.values(), key=lambda spec: spec.name)
