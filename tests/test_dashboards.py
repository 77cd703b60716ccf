"""Static checks of ``dashboards/`` (the docker-compose stack for users): nothing of it can run here.

Each check is a function that returns the problems it finds; the tests assert there are none, and the
``test_checker_*`` tests feed a broken copy to the same function to show that it does find them.

What is checked: every YAML/JSON file parses; compose publishes ports on 127.0.0.1 only, pins its images and
mounts files that exist; every config path a container is started with is mounted; the Collector's pipelines
use only defined components and use all of them, and their exporters point at the compose services (under the
component names of the Collector release the stack runs); Jaeger is v2 (jaegertracing/jaeger) with a config of its
own whose storage, receiver and UI port fit the Collector, Grafana and compose; Prometheus
scrapes the Collector's exporter; Grafana's data source uids are those the dashboard and the cross links use;
the Loki derived field (a real audit line's trace_id) links to the Jaeger data source; every metric name and
label in the dashboard's PromQL is one sigtrace really exports (its metric sink's instruments, translated to
Prometheus naming by ``tests/dashboards_naming.py``); the shippers parse the audit fields and label streams
with service_name/source/outcome/level only (Vector's unconfined label templates only over values its remap
reduced to a safe alphabet); the READMEs give the one-container Jaeger command with the stack's Jaeger tag and list
every image the stack runs, with where its tag was checked.
"""

from __future__ import annotations

import copy
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider

from sigtrace import semconv
from sigtrace.core.operation import Operation
from sigtrace.sinks.audit import AuditSink, JsonLinesWriter
from sigtrace.sinks.redaction import Redactor
from tests.dashboards_naming import (
    MetricSpec,
    kind_from_otlp,
    prometheus_label,
    prometheus_names,
    prometheus_series,
    sigtrace_metric_catalog,
)

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
COMPOSE_FILE = DASHBOARDS / "docker-compose.yaml"
COLLECTOR_FILE = DASHBOARDS / "otel-collector" / "config.yaml"
JAEGER_FILE = DASHBOARDS / "jaeger" / "config.yaml"
PROMETHEUS_FILE = DASHBOARDS / "prometheus" / "prometheus.yml"
LOKI_FILE = DASHBOARDS / "loki" / "loki.yaml"
DATASOURCES_FILE = DASHBOARDS / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS_FILE = DASHBOARDS / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD_FILE = DASHBOARDS / "grafana" / "dashboards" / "sigtrace.json"
VECTOR_FILE = DASHBOARDS / "vector" / "vector.yaml"
FLUENT_BIT_FILE = DASHBOARDS / "fluent-bit" / "fluent-bit.yaml"
FLUENT_BIT_PARSERS_FILE = DASHBOARDS / "fluent-bit" / "parsers.conf"
README_FILE = DASHBOARDS / "README.md"
ROOT_README_FILE = DASHBOARDS.parent / "README.md"

#: The fields of an audit line (design.md, "Audit event").
AUDIT_FIELDS = frozenset(
    {
        "timestamp",
        "event",
        "service_name",
        "source",
        "operation",
        "model",
        "collection",
        "pk",
        "outcome",
        "error_type",
        "duration_ms",
        "changed_fields",
        "actor",
        "correlation_id",
        "signal",
        "trace_id",
        "span_id",
    }
)
#: The only Loki stream labels a shipper may set (never pk, trace_id ...: unbounded values).
ALLOWED_LOG_LABELS = frozenset({"service_name", "source", "outcome", "level"})
#: The metrics sigtrace defines (semconv.py), which the dashboard draws on.
SIGTRACE_METRICS = frozenset(
    {
        semconv.METRIC_DURATION,
        semconv.METRIC_OPERATIONS,
        semconv.METRIC_ORPHANS,
        semconv.METRIC_INTERNAL_ERRORS,
        semconv.METRIC_IN_FLIGHT,
    }
)
GRAFANA_BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"})
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


# --------------------------------------------------------------------------------------------------
# Loading


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load_yaml(COLLECTOR_FILE)


@pytest.fixture(scope="module")
def jaeger() -> dict[str, Any]:
    return load_yaml(JAEGER_FILE)


@pytest.fixture(scope="module")
def datasources() -> dict[str, Any]:
    return load_yaml(DATASOURCES_FILE)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_json(DASHBOARD_FILE)


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    return load_yaml(VECTOR_FILE)


@pytest.fixture(scope="module")
def fluent_bit() -> dict[str, Any]:
    return load_yaml(FLUENT_BIT_FILE)


@pytest.fixture(scope="module")
def catalog() -> list[MetricSpec]:
    return sigtrace_metric_catalog()


@pytest.fixture(scope="module")
def series(catalog: list[MetricSpec]) -> dict[str, frozenset[str]]:
    return prometheus_series(catalog)


def real_audit_event() -> dict[str, Any]:
    """An audit event built by sigtrace's own audit sink, every optional field filled."""
    provider = TracerProvider()
    span = provider.get_tracer("test").start_span("save orders")
    op = Operation(
        source="blinker",
        name="save",
        model="Order",
        collection="orders",
        db_system="sqlite",
        pk="42",
        correlation_id="c-1",
        signal="post_save",
        changed_fields=["status"],
    )
    op.span = span
    op.outcome, op.error_type, op.actor = "error", "ValueError", "alice"
    sink = AuditSink(
        [], service_name="orders", redactor=Redactor(), capture_values=False, audit_reads=False, actor=None
    )
    event = sink.make_event(op, time.time_ns(), 0.0123)
    span.end()
    return event


def real_audit_line(event: dict[str, Any] | None = None) -> str:
    """One event line exactly as sigtrace's JSON-lines writer renders it (with fixed trace/span ids)."""
    event = dict(event or real_audit_event(), trace_id=TRACE_ID, span_id=SPAN_ID)
    buffer = io.StringIO()
    JsonLinesWriter(buffer)({key: value for key, value in event.items() if value is not None})
    header, line = buffer.getvalue().splitlines()  # the stream header first (docs/audit.md)
    assert json.loads(header)["event"] == "sigtrace.audit.stream" and json.loads(line)["seq"] == 1
    return line


# --------------------------------------------------------------------------------------------------
# Compose: services, ports, images, mounts


_ENV_DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def expand_compose_vars(text: str) -> tuple[str, list[str]]:
    """``${VAR:-default}`` -> default (what a user without the variable gets); ``${VAR}`` is a problem."""
    problems: list[str] = []

    def repl(match: re.Match[str]) -> str:
        if match.group(2) is None:
            problems.append(f"{text!r}: ${{{match.group(1)}}} has no default")
            return ""
        return match.group(2)

    return _ENV_DEFAULT.sub(repl, text), problems


def service_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's volumes as dicts: type (bind/volume), source, target, read_only."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append(
                {
                    "type": entry.get("type", "volume"),
                    "source": str(entry.get("source", "")),
                    "target": str(entry["target"]),
                    "read_only": bool(entry.get("read_only", False)),
                }
            )
            continue
        parts = re.split(r":(?![^{]*\})", str(entry))  # not the ":-" of ${VAR:-default}
        if len(parts) == 1:  # anonymous volume
            mounts.append({"type": "volume", "source": "", "target": parts[0], "read_only": False})
            continue
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else "rw"
        kind = "bind" if source[:1] in (".", "/", "~", "$") else "volume"
        mounts.append({"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")})
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repo path a bind mount of ``service`` puts at ``container_path`` (longest matching target)."""
    best: tuple[int, Path] | None = None
    wanted = PurePosixPath(container_path)
    for mount in service_mounts(service):
        if mount["type"] != "bind":
            continue
        target = PurePosixPath(mount["target"])
        if wanted == target or target in wanted.parents:
            source, _ = expand_compose_vars(mount["source"])
            host = (DASHBOARDS / source / wanted.relative_to(target)).resolve()
            if best is None or len(target.parts) > best[0]:
                best = (len(target.parts), host)
    return best[1] if best else None


def check_compose(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services: dict[str, Any] = compose.get("services") or {}
    if not services:
        return ["compose: no services"]
    named_volumes = set((compose.get("volumes") or {}).keys())
    for name, service in services.items():
        image = str(service.get("image", ""))
        repo, _, tag = image.rpartition(":")
        if not image or not repo or "/" in tag or tag in ("", "latest") or not re.search(r"\d", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version tag")
        for port in service.get("ports", []):
            if isinstance(port, dict):
                if port.get("host_ip") != "127.0.0.1":
                    problems.append(f"{name}: port {port} is not bound to 127.0.0.1")
            elif not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port!r} is not bound to 127.0.0.1")
        for dep in service.get("depends_on", []):
            if dep not in services:
                problems.append(f"{name}: depends_on {dep!r}, which is no service")
        for mount in service_mounts(service):
            if mount["type"] == "bind":
                source, var_problems = expand_compose_vars(mount["source"])
                problems += [f"{name}: {p}" for p in var_problems]
                if source.startswith(("/", "~")):
                    problems.append(f"{name}: bind mount {source!r} is outside the repo")
                elif not (DASHBOARDS / source).exists():
                    problems.append(f"{name}: bind mount source {source!r} does not exist in dashboards/")
                elif not mount["read_only"]:
                    problems.append(f"{name}: bind mount {source!r} is not read-only")
            elif mount["source"] and mount["source"] not in named_volumes:
                problems.append(f"{name}: volume {mount['source']!r} is not declared under volumes:")
    return problems


_CONFIG_PATH = re.compile(r"(/[\w./-]+\.(?:ya?ml|conf|json|toml))")


def check_container_config_paths(compose: dict[str, Any]) -> list[str]:
    """Every config path in a service's command/environment is bind-mounted from a file of the repo."""
    problems: list[str] = []
    for name, service in compose["services"].items():
        command = service.get("command", [])
        words = command if isinstance(command, list) else str(command).split()
        words = [*words, *(str(v) for v in (service.get("environment") or {}).values())]
        for word in words:
            for path in _CONFIG_PATH.findall(str(word)):
                host = host_path(service, path)
                if host is None:
                    problems.append(f"{name}: {path} is not mounted into the container")
                elif not host.is_file():
                    problems.append(f"{name}: {path} is mounted from {host}, which is no file")
    return problems


def test_every_yaml_and_json_file_parses() -> None:
    files = sorted(p for p in DASHBOARDS.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    expected = {
        COMPOSE_FILE,
        COLLECTOR_FILE,
        JAEGER_FILE,
        PROMETHEUS_FILE,
        LOKI_FILE,
        DATASOURCES_FILE,
        DASHBOARD_PROVIDERS_FILE,
        DASHBOARD_FILE,
        VECTOR_FILE,
        FLUENT_BIT_FILE,
    }
    assert expected <= set(files), f"missing: {sorted(map(str, expected - set(files)))}"
    for path in files:
        data = load_json(path) if path.suffix == ".json" else load_yaml(path)
        assert isinstance(data, dict) and data, f"{path}: not a non-empty mapping"
    assert FLUENT_BIT_PARSERS_FILE.is_file() and README_FILE.is_file()


def test_compose_ports_images_and_mounts(compose: dict[str, Any]) -> None:
    assert check_compose(compose) == []


def test_compose_publishes_otlp_ports(compose: dict[str, Any]) -> None:
    ports = {str(p) for p in compose["services"]["otel-collector"]["ports"]}
    assert {"127.0.0.1:4317:4317", "127.0.0.1:4318:4318"} <= ports


def test_compose_config_paths_are_mounted(compose: dict[str, Any]) -> None:
    assert check_container_config_paths(compose) == []


def test_every_config_file_is_mounted_into_some_service(compose: dict[str, Any]) -> None:
    mounted: set[Path] = set()
    for service in compose["services"].values():
        for mount in service_mounts(service):
            if mount["type"] == "bind":
                source, _ = expand_compose_vars(mount["source"])
                root = (DASHBOARDS / source).resolve()
                mounted |= {root} | (set(root.rglob("*")) if root.is_dir() else set())
    configs = {
        p.resolve()
        for p in DASHBOARDS.rglob("*")
        if p.is_file() and p != COMPOSE_FILE and p.suffix in (".yaml", ".yml", ".json", ".conf")
    }
    assert sorted(map(str, configs - mounted)) == []


def test_checker_compose_finds_broken_mounts_ports_and_tags(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["loki"]["volumes"][0] = "./loki/no-such-file.yaml:/etc/loki/sigtrace.yaml:ro"
    broken["services"]["jaeger"]["ports"] = ["16686:16686"]
    broken["services"]["grafana"]["image"] = "grafana/grafana:latest"
    broken["services"]["vector"]["volumes"].append("undeclared:/data")
    problems = "\n".join(check_compose(broken))
    for needle in ("no-such-file.yaml", "16686:16686", "grafana/grafana:latest", "'undeclared'"):
        assert needle in problems
    broken = copy.deepcopy(compose)
    broken["services"]["prometheus"]["command"][0] = "--config.file=/etc/prometheus/other.yml"
    assert check_container_config_paths(broken) == [
        "prometheus: /etc/prometheus/other.yml is not mounted into the container"
    ]


# --------------------------------------------------------------------------------------------------
# OpenTelemetry Collector


def _endpoint(url: str) -> tuple[str, int | None, str]:
    match = re.fullmatch(r"(?:(\w+)://)?([\w.-]+)(?::(\d+))?(/.*)?", url)
    assert match, f"not an endpoint: {url!r}"
    return match.group(2), int(match.group(3)) if match.group(3) else None, match.group(4) or ""


def check_collector(config: dict[str, Any], signals: tuple[str, ...] = ("traces", "metrics", "logs")) -> list[str]:
    """Pipelines use only defined components and every defined one; a pipeline for each of ``signals``."""
    problems: list[str] = []
    service = config.get("service") or {}
    pipelines: dict[str, Any] = service.get("pipelines") or {}
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_name, pipeline in pipelines.items():
        signal = pipeline_name.split("/", 1)[0]
        if signal not in ("traces", "metrics", "logs"):
            problems.append(f"pipeline {pipeline_name!r}: unknown signal {signal!r}")
        for section in ("receivers", "exporters"):
            if not pipeline.get(section):
                problems.append(f"pipeline {pipeline_name!r} has no {section}")
        for section in used:
            for component in pipeline.get(section) or []:
                used[section].add(component)
                if component not in (config.get(section) or {}):
                    problems.append(
                        f"pipeline {pipeline_name!r} uses {section[:-1]} {component!r}, which is not defined"
                    )
        processors = pipeline.get("processors") or []
        if (
            any(p.split("/")[0] == "memory_limiter" for p in processors)
            and processors[0].split("/")[0] != "memory_limiter"
        ):
            problems.append(f"pipeline {pipeline_name!r}: memory_limiter must come first")
    for section, names in used.items():
        for component in config.get(section) or {}:
            if component not in names:
                problems.append(f"{section[:-1]} {component!r} is defined but no pipeline uses it")
    extensions = set(config.get("extensions") or {})
    enabled = set(service.get("extensions") or [])
    problems += [f"extension {e!r} is enabled but not defined" for e in sorted(enabled - extensions)]
    problems += [f"extension {e!r} is defined but not enabled" for e in sorted(extensions - enabled)]
    present = {name.split("/", 1)[0] for name in pipelines}
    problems += [f"no {s} pipeline" for s in sorted(set(signals) - present)]
    return problems


def exporters_of(config: dict[str, Any], signal: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, pipeline in config["service"]["pipelines"].items():
        if name.split("/", 1)[0] == signal:
            for exporter in pipeline["exporters"]:
                out[exporter] = config["exporters"][exporter] or {}
    return out


def image_of(compose: dict[str, Any], service: str) -> str:
    return str(compose["services"].get(service, {}).get("image", ""))


def test_collector_pipelines_are_connected(collector: dict[str, Any]) -> None:
    assert check_collector(collector) == []


def test_collector_receives_otlp_on_4317_and_4318(collector: dict[str, Any]) -> None:
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert _endpoint(protocols["grpc"]["endpoint"])[1] == 4317
    assert _endpoint(protocols["http"]["endpoint"])[1] == 4318
    for pipeline in collector["service"]["pipelines"].values():
        assert "otlp" in pipeline["receivers"]


def test_collector_exports_traces_to_jaeger_logs_to_loki_metrics_to_prometheus(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    # Collector 0.144.0 renamed otlp -> otlp_grpc and otlphttp -> otlp_http (the old names are deprecated aliases).
    traces = exporters_of(collector, "traces")
    assert any(
        name.split("/")[0] == "otlp_grpc" and "jaegertracing/" in image_of(compose, _endpoint(cfg["endpoint"])[0])
        for name, cfg in traces.items()
    ), traces
    logs = exporters_of(collector, "logs")
    loki_port = load_yaml(LOKI_FILE)["server"]["http_listen_port"]
    assert any(
        name.split("/")[0] == "otlp_http"
        and "grafana/loki" in image_of(compose, _endpoint(cfg["endpoint"])[0])
        and _endpoint(cfg["endpoint"])[1:] == (loki_port, "/otlp")
        for name, cfg in logs.items()
    ), logs
    metrics = exporters_of(collector, "metrics")
    prometheus = [cfg for name, cfg in metrics.items() if name.split("/")[0] == "prometheus"]
    assert len(prometheus) == 1, metrics
    exporter = prometheus[0]
    # tests/dashboards_naming.py assumes the exporter's default naming: underscores, suffixes on, no namespace
    # (translation_strategy replaced the deprecated add_metric_suffixes).
    assert exporter.get("translation_strategy", "UnderscoreEscapingWithSuffixes") == "UnderscoreEscapingWithSuffixes"
    assert "add_metric_suffixes" not in exporter and not exporter.get("namespace")
    assert exporter.get("resource_to_telemetry_conversion", {}).get("enabled") is True  # service_name label
    port = _endpoint(exporter["endpoint"])[1]
    scrape = load_yaml(PROMETHEUS_FILE)["scrape_configs"]
    targets = {t for job in scrape for sc in job.get("static_configs", []) for t in sc["targets"]}
    collector_service = next(n for n, s in compose["services"].items() if "opentelemetry-collector" in s["image"])
    assert f"{collector_service}:{port}" in targets


def test_loki_accepts_otlp(compose: dict[str, Any]) -> None:
    loki = load_yaml(LOKI_FILE)
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert any(c["schema"] == "v13" and c["store"] == "tsdb" for c in loki["schema_config"]["configs"])


def test_checker_collector_finds_undefined_and_unused_components(collector: dict[str, Any]) -> None:
    broken = copy.deepcopy(collector)
    broken["service"]["pipelines"]["traces"]["exporters"] = ["otlp_grpc/jeager"]
    broken["processors"]["attributes/unused"] = {"actions": []}
    problems = check_collector(broken)
    assert "pipeline 'traces' uses exporter 'otlp_grpc/jeager', which is not defined" in problems
    assert "exporter 'otlp_grpc/jaeger' is defined but no pipeline uses it" in problems
    assert "processor 'attributes/unused' is defined but no pipeline uses it" in problems
    del broken["service"]["pipelines"]["logs"]
    assert "no logs pipeline" in check_collector(broken)


# --------------------------------------------------------------------------------------------------
# Jaeger v2


#: Jaeger v1 (jaegertracing/all-in-one and the v1 binaries) reached its end of life; v2 is jaegertracing/jaeger.
JAEGER_V2_IMAGE = re.compile(r"(?:[\w.-]+/)?jaegertracing/jaeger:(2\.\d+\.\d+)")


def check_jaeger(config: dict[str, Any], compose: dict[str, Any], collector: dict[str, Any]) -> list[str]:
    """Jaeger v2's own Collector-style config: connected, its storage named where it is used, OTLP where the
    Collector sends it, the UI on the port compose publishes, started with this file."""
    problems = check_collector(config, signals=("traces",))
    service = compose["services"].get("jaeger") or {}
    if not JAEGER_V2_IMAGE.fullmatch(str(service.get("image", ""))):
        problems.append(f"jaeger: image {service.get('image')!r} is not Jaeger v2 (jaegertracing/jaeger:2.x.y)")
    command = service.get("command") or []
    config_paths = [w.split("=", 1)[1] for w in command if str(w).startswith("--config=")]
    if not config_paths or host_path(service, config_paths[0]) != JAEGER_FILE.resolve():
        problems.append("jaeger: not started with --config=<dashboards/jaeger/config.yaml, mounted>")
    extensions = config.get("extensions") or {}
    backends = set((extensions.get("jaeger_storage") or {}).get("backends") or {})
    if not backends:
        problems.append("jaeger_storage defines no backend")
    query = extensions.get("jaeger_query") or {}
    if (query.get("storage") or {}).get("traces") not in backends:
        problems.append(f"jaeger_query reads traces from {query.get('storage')!r}, no jaeger_storage backend")
    for name, exporter in (config.get("exporters") or {}).items():
        if name.split("/")[0] == "jaeger_storage_exporter" and (exporter or {}).get("trace_storage") not in backends:
            problems.append(f"exporter {name!r} writes to {exporter.get('trace_storage')!r}, no jaeger_storage backend")
    for name, backend in ((extensions.get("jaeger_storage") or {}).get("backends") or {}).items():
        memory = (backend or {}).get("memory")
        if memory is not None and not (isinstance(memory.get("max_traces"), int) and memory["max_traces"] > 0):
            problems.append(f"backend {name!r}: memory storage without a positive max_traces (unbounded memory)")
    ui_port = _endpoint(str((query.get("http") or {}).get("endpoint", ":16686")))[1]
    published = {str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])}
    if str(ui_port) not in published:
        problems.append(f"jaeger_query serves on {ui_port}, which compose does not publish ({sorted(published)})")
    grpc = (((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("grpc") or {}
    grpc_host, grpc_port, _ = _endpoint(str(grpc.get("endpoint", "localhost:4317")))
    if grpc_host in ("localhost", "127.0.0.1"):
        problems.append("jaeger's OTLP gRPC receiver listens on localhost only: the Collector cannot reach it")
    senders = [
        _endpoint(cfg["endpoint"])
        for cfg in exporters_of(collector, "traces").values()
        if _endpoint(cfg["endpoint"])[0] == "jaeger"
    ]
    if not senders:
        problems.append("the Collector sends no traces to the jaeger service")
    problems += [
        f"the Collector sends traces to jaeger:{p}, jaeger receives on {grpc_port}"
        for _, p, _ in senders
        if p != grpc_port
    ]
    return problems


def test_jaeger_is_v2_with_a_config_that_fits_the_stack(
    jaeger: dict[str, Any], compose: dict[str, Any], collector: dict[str, Any], datasources: dict[str, Any]
) -> None:
    assert check_jaeger(jaeger, compose, collector) == []
    # Grafana's Jaeger data source reads the query API on the port jaeger_query serves.
    ui = _endpoint(jaeger["extensions"]["jaeger_query"]["http"]["endpoint"])[1]
    assert _endpoint(datasource_by_type(datasources, "jaeger")["url"])[1:] == (ui, "")


def test_checker_jaeger_finds_v1_images_and_unknown_storage(
    jaeger: dict[str, Any], compose: dict[str, Any], collector: dict[str, Any]
) -> None:
    broken_compose = copy.deepcopy(compose)
    broken_compose["services"]["jaeger"]["image"] = "jaegertracing/all-in-one:1.62.0"
    broken_compose["services"]["jaeger"]["command"] = []
    broken = copy.deepcopy(jaeger)
    broken["exporters"]["jaeger_storage_exporter"]["trace_storage"] = "some_store"
    broken["extensions"]["jaeger_query"]["storage"]["traces"] = "nowhere"
    broken["extensions"]["jaeger_storage"]["backends"]["sigtrace_memory"]["memory"] = {}
    broken["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = "localhost:4317"
    problems = "\n".join(check_jaeger(broken, broken_compose, collector))
    for needle in (
        "'jaegertracing/all-in-one:1.62.0' is not Jaeger v2",
        "not started with --config",
        "writes to 'some_store'",
        "reads traces from {'traces': 'nowhere'}",
        "without a positive max_traces",
        "listens on localhost only",
    ):
        assert needle in problems
    broken_collector = copy.deepcopy(collector)
    broken_collector["exporters"]["otlp_grpc/jaeger"]["endpoint"] = "jaeger:14250"
    assert "the Collector sends traces to jaeger:14250, jaeger receives on 4317" in check_jaeger(
        jaeger, compose, broken_collector
    )


# --------------------------------------------------------------------------------------------------
# Grafana data sources and dashboard provisioning


def datasource_by_type(datasources: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [ds for ds in datasources["datasources"] if ds["type"] == kind]
    assert len(found) == 1, f"{len(found)} data sources of type {kind}"
    return found[0]


def check_datasources(datasources: dict[str, Any], compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    uids = [ds.get("uid") for ds in datasources["datasources"]]
    if len(set(uids)) != len(uids) or None in uids:
        problems.append(f"data source uids missing or repeated: {uids}")
    by_uid = {ds.get("uid"): ds for ds in datasources["datasources"]}
    kind_of = {uid: ds["type"] for uid, ds in by_uid.items()}
    for ds in datasources["datasources"]:
        host, _, _ = _endpoint(ds["url"])
        service = compose["services"].get(host)
        if service is None:
            problems.append(f"data source {ds['name']}: {host!r} is no compose service")
        wanted = {"prometheus": "prom/prometheus", "loki": "grafana/loki", "jaeger": "jaegertracing/"}[ds["type"]]
        if service is not None and wanted not in service["image"]:
            problems.append(f"data source {ds['name']}: service {host!r} runs {service['image']}, not {wanted}")
    for ds in datasources["datasources"]:
        data = ds.get("jsonData") or {}
        for field in data.get("derivedFields", []):
            if kind_of.get(field.get("datasourceUid")) != "jaeger":
                problems.append(
                    f"derived field {field.get('name')!r} links to {field.get('datasourceUid')!r}, not Jaeger"
                )
            if field.get("url") != "$${__value.raw}":
                problems.append(
                    f"derived field {field.get('name')!r}: url {field.get('url')!r} is not '$${{__value.raw}}'"
                )
        for dest in data.get("exemplarTraceIdDestinations", []):
            if kind_of.get(dest.get("datasourceUid")) != "jaeger":
                problems.append(f"exemplar link {dest.get('name')!r} does not point at Jaeger")
        logs = data.get("tracesToLogsV2")
        if logs is not None and kind_of.get(logs.get("datasourceUid")) != "loki":
            problems.append(f"{ds['name']}: traces-to-logs does not point at Loki")
    return problems


def unescaped_dollars(text: str) -> list[str]:
    """Grafana expands $VAR and ${VAR} in provisioning files; a literal $ must be written $$."""
    return re.findall(r"\$\{?\w+", text.replace("$$", ""))


def test_datasources_point_at_the_stack(datasources: dict[str, Any], compose: dict[str, Any]) -> None:
    assert check_datasources(datasources, compose) == []
    assert {ds["type"] for ds in datasources["datasources"]} == {"prometheus", "loki", "jaeger"}


def test_provisioning_files_escape_dollars() -> None:
    for path in (DATASOURCES_FILE, DASHBOARD_PROVIDERS_FILE):
        assert unescaped_dollars(path.read_text(encoding="utf-8")) == [], path


def test_loki_derived_fields_turn_a_real_audit_line_into_a_jaeger_link(datasources: dict[str, Any]) -> None:
    loki = datasource_by_type(datasources, "loki")
    jaeger = datasource_by_type(datasources, "jaeger")
    fields = loki["jsonData"]["derivedFields"]
    assert fields and all(f["datasourceUid"] == jaeger["uid"] for f in fields)
    # OTLP records: Loki keeps the record's trace id as structured metadata named trace_id.
    assert any(f.get("matcherType") == "label" and f["matcherRegex"] == "trace_id" for f in fields)
    # Shipped lines: the regex must find the id in a line exactly as sigtrace writes it.
    regexes = [f["matcherRegex"] for f in fields if f.get("matcherType", "regex") == "regex"]
    assert regexes
    line = real_audit_line()
    for regex in regexes:
        match = re.search(regex, line)
        assert match and match.group(1) == TRACE_ID, (regex, line)
        assert not re.search(regex, line.replace(TRACE_ID, "").replace(SPAN_ID, TRACE_ID)), "matched the span_id"


def test_dashboard_provider_loads_the_mounted_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert host_path(grafana, "/etc/grafana/provisioning/datasources/datasources.yaml") == DATASOURCES_FILE
    providers = load_yaml(DASHBOARD_PROVIDERS_FILE)["providers"]
    assert providers
    for provider in providers:
        folder = host_path(grafana, provider["options"]["path"])
        assert folder is not None and folder.is_dir(), provider
        assert DASHBOARD_FILE in set(folder.glob("*.json"))


def test_checker_datasources_finds_wrong_links(datasources: dict[str, Any], compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(datasources)
    datasource_by_type(broken, "loki")["jsonData"]["derivedFields"][0]["datasourceUid"] = "loki"
    datasource_by_type(broken, "loki")["jsonData"]["derivedFields"][1]["url"] = "${__value.raw}"
    datasource_by_type(broken, "jaeger")["url"] = "http://jaegar:16686"
    problems = "\n".join(check_datasources(broken, compose))
    assert "links to 'loki', not Jaeger" in problems
    assert "url '${__value.raw}'" in problems
    assert "'jaegar' is no compose service" in problems
    assert unescaped_dollars('url: "${__value.raw}"') == ["${__value"]


# --------------------------------------------------------------------------------------------------
# PromQL / LogQL in the dashboard


_PROMQL_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<braces>\{(?:"(?:\\.|[^"\\])*"|[^}"])*\})
      | (?P<range>\[[^\]]*\])
      | (?P<number>(?<![\w$])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<ident>\$?[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<other>\S)""",
    re.VERBOSE,
)
_MATCHER = re.compile(r"""([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')""")
_PROMQL_KEYWORDS = frozenset({"bool", "offset", "and", "or", "unless", "inf", "nan"})
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)


def parse_promql(expr: str) -> tuple[list[tuple[str | None, set[str]]], set[str]]:
    """(metric name or None, labels matched on it) for every selector, and every grouping label."""
    tokens = [(m.lastgroup, m.group()) for m in _PROMQL_TOKEN.finditer(expr)]
    selectors: list[tuple[str | None, set[str]]] = []
    grouping: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "ident" and text in _GROUPING and following[1] == "(":
            i += 2
            while i < len(tokens) and tokens[i][1] != ")":
                if tokens[i][0] == "ident":
                    grouping.add(tokens[i][1])
                i += 1
        elif kind == "ident" and (following[1] == "(" or (text in _AGGREGATIONS and following[1] in _GROUPING)):
            pass  # a function or an aggregation
        elif kind == "ident" and text.lower() not in _PROMQL_KEYWORDS and not text.startswith("$"):
            labels: set[str] = set()
            if following[0] == "braces":
                labels = set(_MATCHER.findall(following[1]))
                i += 1
            selectors.append((text, labels))
        elif kind == "braces":
            selectors.append((None, set(_MATCHER.findall(text))))
        i += 1
    return selectors, grouping


def check_promql(expr: str, series: dict[str, frozenset[str]], legend: str = "") -> list[str]:
    problems: list[str] = []
    selectors, grouping = parse_promql(expr)
    if not any(name for name, _ in selectors):
        problems.append(f"{expr!r}: no metric name")
    available: set[str] = set()
    for name, labels in selectors:
        if name is None:
            problems.append(f"{expr!r}: selector without a metric name")
            continue
        if name not in series:
            problems.append(f"{expr!r}: {name!r} is not a metric sigtrace exports")
            continue
        available |= series[name]
        for label in sorted(labels - series[name]):
            problems.append(f"{expr!r}: {name} has no label {label!r}")
    for label in sorted(grouping - available - {"le"} if available else set()):
        problems.append(f"{expr!r}: grouping by {label!r}, which none of its metrics has")
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
        if available and label not in available:
            problems.append(f"{expr!r}: legend uses {label!r}, which none of its metrics has")
    return problems


def iter_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, str]]:
    """(where, datasource, expression, legend) of every panel target and query variable."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource")
            yield f"panel {panel['title']!r}", ds, target.get("expr", ""), target.get("legendFormat", "")
        for inner in panel.get("panels", []):  # collapsed rows
            for target in inner.get("targets", []):
                ds = target.get("datasource") or inner.get("datasource")
                yield f"panel {inner['title']!r}", ds, target.get("expr", ""), target.get("legendFormat", "")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            yield f"variable {var['name']!r}", var["datasource"], query, ""


def check_dashboard_queries(
    dashboard: dict[str, Any], series: dict[str, frozenset[str]], uids: dict[str, str]
) -> list[str]:
    problems: list[str] = []
    variables = {var["name"] for var in dashboard.get("templating", {}).get("list", [])}
    for where, ds, expr, legend in iter_queries(dashboard):
        uid = (ds or {}).get("uid")
        if uid not in uids:
            problems.append(f"{where}: data source uid {uid!r} is not provisioned")
            continue
        if ds.get("type") not in (None, uids[uid]):
            problems.append(f"{where}: data source {uid!r} is a {uids[uid]}, not {ds.get('type')}")
        if not expr.strip():
            problems.append(f"{where}: empty query")
            continue
        for name in re.findall(r"\$\{?(\w+)", expr):
            if name not in variables and name not in GRAFANA_BUILTIN_VARIABLES:
                problems.append(f"{where}: ${name} is no dashboard variable")
        if uids[uid] == "prometheus":
            label_values = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", expr)
            if label_values:
                inner, label = label_values.groups()
                problems += [f"{where}: {p}" for p in check_promql(inner, series, f"{{{{{label}}}}}")]
            else:
                problems += [f"{where}: {p}" for p in check_promql(expr, series, legend)]
        elif uids[uid] == "loki":
            stream = re.match(r"\s*(\{[^}]*\})", expr)
            if not stream:
                problems.append(f"{where}: LogQL without a stream selector: {expr!r}")
                continue
            for label in sorted(set(_MATCHER.findall(stream.group(1))) - ALLOWED_LOG_LABELS):
                problems.append(f"{where}: stream label {label!r} is not one the shippers or Loki's OTLP ingest set")
    return problems


def provisioned_uids(datasources: dict[str, Any]) -> dict[str, str]:
    return {ds["uid"]: ds["type"] for ds in datasources["datasources"]}


def test_metric_catalog_is_what_semconv_defines(catalog: list[MetricSpec]) -> None:
    assert {spec.name for spec in catalog} == SIGTRACE_METRICS
    by_name = {spec.name: spec for spec in catalog}
    assert by_name[semconv.METRIC_DURATION].kind == "histogram" and by_name[semconv.METRIC_DURATION].unit == "s"
    assert semconv.SIGTRACE_PK not in {key for spec in catalog for key in spec.attributes}


def test_prometheus_names_of_sigtrace_metrics(catalog: list[MetricSpec]) -> None:
    names = {spec.name: spec.prometheus_names for spec in catalog}
    assert names == {
        "db.client.operation.duration": {
            "db_client_operation_duration_seconds_bucket",
            "db_client_operation_duration_seconds_sum",
            "db_client_operation_duration_seconds_count",
        },
        "sigtrace.operations": {"sigtrace_operations_total"},
        "sigtrace.orphans": {"sigtrace_orphans_total"},
        "sigtrace.internal_errors": {"sigtrace_internal_errors_total"},
        "sigtrace.operations.in_flight": {"sigtrace_operations_in_flight"},
    }
    labels = {prometheus_label(key) for spec in catalog for key in spec.attributes}
    assert labels == {
        "sigtrace_source",
        "db_system_name",
        "db_operation_name",
        "db_collection_name",
        "error_type",
        "sigtrace_outcome",
        "sigtrace_orphan_reason",
        "sigtrace_error_kind",
    }


@pytest.mark.parametrize(
    ("name", "kind", "unit", "expected"),
    [
        (
            "http.server.request.duration",
            "histogram",
            "s",
            {f"http_server_request_duration_seconds_{s}" for s in ("bucket", "sum", "count")},
        ),
        ("requests.total", "counter", "{request}", {"requests_total"}),
        ("process.cpu.time", "sum_monotonic", "s", {"process_cpu_time_seconds_total"}),
        ("queue.size", "up_down_counter", "{item}", {"queue_size"}),
        ("system.memory.utilization", "gauge", "1", {"system_memory_utilization_ratio"}),
        ("net.io", "counter", "By/s", {"net_io_bytes_per_second_total"}),
        ("latency_seconds", "gauge", "s", {"latency_seconds"}),
        ("1st.metric", "gauge", "", {"_1st_metric"}),
    ],
)
def test_prometheus_naming_rules(name: str, kind: str, unit: str, expected: set[str]) -> None:
    assert prometheus_names(name, kind, unit) == expected


def test_kind_from_otlp_matches_instrument_kinds() -> None:
    assert kind_from_otlp("sum", True) == "sum_monotonic"
    assert kind_from_otlp("sum", False) == "sum_non_monotonic"
    assert prometheus_names("a.b", kind_from_otlp("sum", True), "{x}") == prometheus_names("a.b", "counter", "{x}")
    assert prometheus_names("a.b", kind_from_otlp("sum", False), "") == prometheus_names("a.b", "up_down_counter", "")
    with pytest.raises(ValueError):
        prometheus_names("a.b", "summary", "")


def test_dashboard_queries_use_only_exported_metrics_and_labels(
    dashboard: dict[str, Any], series: dict[str, frozenset[str]], datasources: dict[str, Any]
) -> None:
    assert check_dashboard_queries(dashboard, series, provisioned_uids(datasources)) == []


def test_dashboard_covers_the_sigtrace_metrics(dashboard: dict[str, Any], series: dict[str, frozenset[str]]) -> None:
    exprs = [expr for _, ds, expr, _ in iter_queries(dashboard) if ds.get("type") == "prometheus"]
    used = {name for expr in exprs for name, _ in parse_promql(expr)[0]}
    assert {
        "sigtrace_operations_total",
        "db_client_operation_duration_seconds_bucket",
        "sigtrace_orphans_total",
        "sigtrace_operations_in_flight",
        "sigtrace_internal_errors_total",
    } <= used

    def some(pattern: str) -> bool:
        return any(re.search(pattern, " ".join(expr.split())) for expr in exprs)

    # operations per second by source and operation
    assert some(r"by \((?=[^)]*sigtrace_source)(?=[^)]*db_operation_name)[^)]*\) \(rate\(sigtrace_operations_total")
    # duration percentiles from the histogram
    assert some(r"histogram_quantile\(0\.5, sum by \(le[,)].*db_client_operation_duration_seconds_bucket")
    assert some(r"histogram_quantile\(0\.99, sum by \(le[,)].*db_client_operation_duration_seconds_bucket")
    # error rate: failed operations over all
    assert some(r'sigtrace_operations_total\{[^}]*sigtrace_outcome="error"[^}]*\}.*\) / .*sigtrace_operations_total')
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for word in ("operations / s", "percentile", "error rate", "orphans", "in flight", "audit"):
        assert word in titles


def test_dashboard_panels_are_well_formed(dashboard: dict[str, Any], datasources: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in provisioned_uids(datasources)
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_checker_promql_finds_typos_and_wrong_labels(series: dict[str, frozenset[str]]) -> None:
    assert check_promql("sum(rate(sigtrace_operations_total[5m]))", series) == []
    typo = check_promql("sum(rate(sigtrace_operation_total[5m]))", series)
    assert typo == [
        "'sum(rate(sigtrace_operation_total[5m]))': 'sigtrace_operation_total' is not a metric sigtrace exports"
    ]
    unsuffixed = check_promql(
        "histogram_quantile(0.9, sum by (le) (rate(db_client_operation_duration_bucket[5m])))", series
    )
    assert unsuffixed and "db_client_operation_duration_bucket" in unsuffixed[0]
    wrong_label = check_promql('sigtrace_internal_errors_total{sigtrace_source="x"}', series)
    assert len(wrong_label) == 1 and wrong_label[0].endswith(
        "sigtrace_internal_errors_total has no label 'sigtrace_source'"
    )
    assert check_promql("sum by (sigtrace_pk) (sigtrace_orphans_total)", series)
    assert check_promql("sum by (sigtrace_source) (sigtrace_orphans_total)", series, "{{db_operation}}")
    assert check_promql('{__name__="sigtrace_orphans_total"}', series)
    assert check_promql("vector(1)", series) == ["'vector(1)': no metric name"]


def test_checker_dashboard_finds_a_typo_in_the_real_dashboard(
    dashboard: dict[str, Any], series: dict[str, frozenset[str]], datasources: dict[str, Any]
) -> None:
    uids = provisioned_uids(datasources)
    for old, new in (
        ("sigtrace_operations_total", "sigtrace_operations"),
        ("db_client_operation_duration_seconds_bucket", "db_client_operation_duration_bucket"),
        ("sigtrace_operations_in_flight", "sigtrace_operations_in_flight_total"),
        ("sigtrace_source", "sigtrace_sources"),
    ):
        broken = json.loads(json.dumps(dashboard).replace(old, new))
        assert check_dashboard_queries(broken, series, uids), f"{old} -> {new} went unnoticed"
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["targets"][0]["datasource"] = {"type": "prometheus", "uid": "prom"}
    assert any("'prom' is not provisioned" in p for p in check_dashboard_queries(broken, series, uids))
    broken = copy.deepcopy(dashboard)
    logs = next(p for p in broken["panels"] if p["type"] == "logs")
    logs["targets"][0]["expr"] = '{service_name="x", trace_id="y"}'
    assert any("'trace_id'" in p for p in check_dashboard_queries(broken, series, uids))
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["targets"][0]["expr"] += ' + sum(sigtrace_orphans_total{service_name=~"$servce"})'
    assert any("$servce is no dashboard variable" in p for p in check_dashboard_queries(broken, series, uids))


# --------------------------------------------------------------------------------------------------
# Shippers: the audit file to Loki


def test_audit_fields_are_what_sigtrace_writes() -> None:
    event = real_audit_event()
    assert set(event) == AUDIT_FIELDS
    parsed = json.loads(real_audit_line(event))
    assert parsed["event"] == semconv.AUDIT_EVENT and parsed["trace_id"] == TRACE_ID


def _vrl_without_comments(source: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in source.splitlines())


def check_vector(config: dict[str, Any], compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    sources = config.get("sources") or {}
    transforms = config.get("transforms") or {}
    sinks = config.get("sinks") or {}
    audit_target = next(
        m["target"] for m in service_mounts(compose["services"]["vector"]) if m["target"] == "/var/log/sigtrace"
    )
    files = {name: s for name, s in sources.items() if s.get("type") == "file"}
    if not files:
        problems.append("no file source")
    for name, source in files.items():
        for pattern in source.get("include", []):
            if not pattern.startswith(audit_target + "/"):
                problems.append(f"source {name}: {pattern!r} is not in the mounted audit directory {audit_target}")
    lokis = {name: s for name, s in sinks.items() if s.get("type") == "loki"}
    if not lokis:
        problems.append("no loki sink")

    def upstream(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if name in sources:
            return {name}
        if name not in transforms or name in seen:
            problems.append(f"input {name!r} is not defined")
            return set()
        return set().union(*(upstream(i, seen | {name}) for i in transforms[name].get("inputs", [])))

    for name, sink in lokis.items():
        host, _, _ = _endpoint(sink.get("endpoint", ""))
        if "grafana/loki" not in image_of(compose, host):
            problems.append(f"sink {name}: endpoint {sink.get('endpoint')!r} is not the loki service")
        if not set().union(*(upstream(i) for i in sink.get("inputs", []))) & set(files):
            problems.append(f"sink {name} is not fed by the audit file")
        if (sink.get("encoding") or {}).get("codec") != "text":
            problems.append(
                f"sink {name}: the line must go out unchanged (codec text), for | json and the derived field"
            )
        remaps = [transforms[i] for i in sink.get("inputs", []) if transforms.get(i, {}).get("type") == "remap"]
        vrl = _vrl_without_comments("\n".join(r.get("source", "") for r in remaps))
        if "parse_json" not in vrl:
            problems.append(f"sink {name}: its input does not parse the JSON line")
        for field in sorted(set(re.findall(r"\baudit\.(\w+)", vrl)) - AUDIT_FIELDS):
            problems.append(f"VRL reads {field!r}, which is no audit field")
        if not re.search(r"^\s*\.timestamp\s*=", vrl, re.M) or "audit.timestamp" not in vrl:
            problems.append("VRL does not take the event time from the audit timestamp")
        unconfined = sink.get("dangerously_allow_unconfined_template_resolution") is True
        for label, template in (sink.get("labels") or {}).items():
            # Vector 0.57 rejects, at start-up, a template with no literal prefix (its confinement), unless the
            # sink opts out; the opt-out is acceptable only over values the remap cut to a safe alphabet.
            if re.match(r"\s*\{\{", str(template)):
                field = re.findall(r"\{\{\s*\.?(\w+)\s*\}\}", str(template))[:1]
                if not unconfined:
                    problems.append(f"sink {name}: label {label!r} has no literal prefix: Vector 0.57 refuses to start")
                elif (
                    field
                    and field[0] != "level"
                    and not re.search(rf"^\s*\.{field[0]}\s*=\s*replace\(.*'\[\^[^']*\]'", vrl, re.M)
                ):
                    problems.append(f"sink {name}: label {label!r} is unconfined over a value the remap does not clean")
            if label not in ALLOWED_LOG_LABELS:
                problems.append(f"sink {name}: label {label!r} is not a low-cardinality label")
            fields = re.findall(r"\{\{\s*\.?(\w+)\s*\}\}", str(template))
            for field in fields:
                if field not in ALLOWED_LOG_LABELS:
                    problems.append(f"sink {name}: label {label!r} takes its value from {field!r}")
                elif field == "level":
                    if not re.search(r"^\s*\.level\s*=.*\.outcome", vrl, re.M):
                        problems.append("VRL does not derive .level from the outcome")
                elif not re.search(rf"^\s*\.{field}\s*=.*\baudit\.{field}\b", vrl, re.M):
                    problems.append(f"VRL does not set .{field} from the audit field {field!r}")
    return problems


def test_vector_ships_the_audit_file_with_low_cardinality_labels(
    vector: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert check_vector(vector, compose) == []
    labels = set(vector["sinks"]["loki"]["labels"])
    assert {"service_name", "source", "outcome"} <= labels <= ALLOWED_LOG_LABELS


def test_checker_vector_finds_high_cardinality_labels_and_unknown_fields(
    vector: dict[str, Any], compose: dict[str, Any]
) -> None:
    broken = copy.deepcopy(vector)
    broken["sinks"]["loki"]["labels"]["trace_id"] = "{{ trace_id }}"
    broken["sinks"]["loki"]["labels"]["source"] = "{{ pk }}"
    broken["transforms"]["sigtrace_audit_parse"]["source"] += "\n.x = audit.primary_key\n"
    problems = check_vector(broken, compose)
    assert "sink loki: label 'trace_id' is not a low-cardinality label" in problems
    assert "sink loki: label 'source' takes its value from 'pk'" in problems
    assert "VRL reads 'primary_key', which is no audit field" in problems
    broken = copy.deepcopy(vector)
    broken["sinks"]["loki"]["inputs"] = ["sigtrace_audit_prase"]
    broken["sources"]["sigtrace_audit_file"]["include"] = ["/var/log/*.log"]
    problems = check_vector(broken, compose)
    assert "input 'sigtrace_audit_prase' is not defined" in problems
    assert any("not in the mounted audit directory" in p for p in problems)
    broken = copy.deepcopy(vector)
    del broken["sinks"]["loki"]["dangerously_allow_unconfined_template_resolution"]
    assert "sink loki: label 'source' has no literal prefix: Vector 0.57 refuses to start" in check_vector(
        broken, compose
    )
    broken = copy.deepcopy(vector)
    vrl = broken["transforms"]["sigtrace_audit_parse"]["source"]
    broken["transforms"]["sigtrace_audit_parse"]["source"] = re.sub(
        r"^(\s*)\.outcome = .*$", r'\1.outcome = string(audit.outcome) ?? "unknown"', vrl, flags=re.M
    )
    assert check_vector(broken, compose) == [
        "sink loki: label 'outcome' is unconfined over a value the remap does not clean"
    ]


def parse_fluent_bit_parsers(text: str) -> dict[str, dict[str, str]]:
    parsers: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper() == "[PARSER]":
            current = {}
            continue
        if current is None:
            raise ValueError(f"entry outside a [PARSER] section: {line!r}")
        key, _, value = line.partition(" ")
        current[key.lower()] = value.strip()
        if key.lower() == "name":
            parsers[current["name"]] = current
    return parsers


def check_fluent_bit(config: dict[str, Any], parsers: dict[str, dict[str, str]], compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    service = compose["services"]["fluent-bit"]
    parsers_file = host_path(service, config["service"]["parsers_file"])
    if parsers_file != FLUENT_BIT_PARSERS_FILE.resolve():
        problems.append(f"parsers_file {config['service']['parsers_file']} is not the repo's parsers.conf")
    inputs = [i for i in config["pipeline"]["inputs"] if i["name"] == "tail"]
    outputs = [o for o in config["pipeline"]["outputs"] if o["name"] == "loki"]
    if not inputs or not outputs:
        return [*problems, "needs a tail input and a loki output"]
    tags = set()
    for tail in inputs:
        tags.add(tail["tag"])
        if not any(tail["path"].startswith(m["target"] + "/") for m in service_mounts(service) if m["type"] == "bind"):
            problems.append(f"tail path {tail['path']} is not in a mounted directory")
        parser = parsers.get(tail.get("parser", ""))
        if parser is None:
            problems.append(f"tail uses parser {tail.get('parser')!r}, which parsers.conf does not define")
        elif parser.get("format") != "json" or parser.get("time_key") != "timestamp":
            problems.append(f"parser {parser['name']}: expected Format json and Time_Key timestamp")
    for out in outputs:
        if not any(re.fullmatch(out["match"].replace(".", r"\.").replace("*", ".*"), tag) for tag in tags):
            problems.append(f"loki output match {out['match']!r} matches no input tag")
        if "grafana/loki" not in image_of(compose, out["host"]):
            problems.append(f"loki output host {out['host']!r} is not the loki service")
        if "labels" not in out:
            problems.append("loki output without labels gets the default job=fluent-bit label")
        pairs = [p.strip() for p in str(out.get("labels", "")).split(",") if p.strip()]
        pairs += [
            f"{k.strip().lstrip('$')}=${k.strip().lstrip('$')}"
            for k in str(out.get("label_keys", "")).split(",")
            if k.strip()
        ]
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key.strip() not in ALLOWED_LOG_LABELS:
                problems.append(f"label {key.strip()!r} is not a low-cardinality label")
            field = value.strip().lstrip("$")
            if field not in AUDIT_FIELDS or field not in ALLOWED_LOG_LABELS:
                problems.append(f"label {key.strip()!r} takes its value from {value.strip()!r}")
    return problems


def test_fluent_bit_ships_the_audit_file_with_low_cardinality_labels(
    fluent_bit: dict[str, Any], compose: dict[str, Any]
) -> None:
    parsers = parse_fluent_bit_parsers(FLUENT_BIT_PARSERS_FILE.read_text(encoding="utf-8"))
    assert check_fluent_bit(fluent_bit, parsers, compose) == []
    # The parser's Time_Format reads the timestamp sigtrace writes (%L: fractional seconds, as Python's %f).
    time_format = parsers["sigtrace_audit"]["time_format"].replace("%L", "%f")
    stamp = real_audit_event()["timestamp"]
    assert datetime.strptime(stamp, time_format).utcoffset() is not None


def test_checker_fluent_bit_finds_bad_labels(fluent_bit: dict[str, Any], compose: dict[str, Any]) -> None:
    parsers = parse_fluent_bit_parsers(FLUENT_BIT_PARSERS_FILE.read_text(encoding="utf-8"))
    broken = copy.deepcopy(fluent_bit)
    broken["pipeline"]["outputs"][0]["labels"] += ", pk=$pk"
    broken["pipeline"]["outputs"][0]["label_keys"] = "$trace_id"
    broken["pipeline"]["inputs"][0]["parser"] = "json_audit"
    problems = check_fluent_bit(broken, parsers, compose)
    assert "label 'pk' is not a low-cardinality label" in problems
    assert "label 'trace_id' is not a low-cardinality label" in problems
    assert "tail uses parser 'json_audit', which parsers.conf does not define" in problems


def test_readme_gives_the_commands(compose: dict[str, Any]) -> None:
    readme = README_FILE.read_text(encoding="utf-8")
    assert "docker compose up" in readme
    assert "sigtrace demo --otlp http://127.0.0.1:4317" in readme
    for port in ("3000", "16686", "9090"):
        assert f"127.0.0.1:{port}" in readme


def test_readmes_give_the_one_container_jaeger_command_and_every_image(compose: dict[str, Any]) -> None:
    jaeger_image = image_of(compose, "jaeger")
    command = f"docker run --rm -p 16686:16686 -p 4317:4317 -p 4318:4318 {jaeger_image}"
    readme = README_FILE.read_text(encoding="utf-8")
    assert command in readme and command in ROOT_README_FILE.read_text(encoding="utf-8")
    # The version table: every image the stack runs, by its exact tag, in a row with its release and source.
    rows = {line.split("|")[1].strip(" `") for line in readme.splitlines() if line.startswith("| `")}
    images = {str(service["image"]) for service in compose["services"].values()}
    assert images <= rows, sorted(images - rows)
    assert "Checked on 2026-12-01" in readme
