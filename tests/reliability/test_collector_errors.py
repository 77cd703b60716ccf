"""The collector stops gracefully mid-run, or answers every export with an error: the application never notices.

Same application as test_collector_faults.py (tests/reliability/apps/fault_app.py, in its own interpreter,
configured only through OTEL_* / SIGTRACE_* variables). Checked every time: every operation returned its
correct result, none raised, the in-flight table is empty, and the local JSON-lines audit record holds one
event per operation of every phase. Figures are in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.reliability.harness import app, app_env, audit_lines
from tests.reliability.test_collector_faults import (
    ADDED_P99_BOUND_MS,
    RSS_GROWTH_BOUND,
    added_p99,
    check_phase,
    report,
    spans_of_phase,
)


@pytest.mark.parametrize(
    ("protocol", "size"),
    [
        pytest.param("grpc", (500, 3_000), id="grpc-3k"),
        pytest.param("http/protobuf", (500, 3_000), id="http-3k"),
        pytest.param("grpc", (5_000, 50_000), id="grpc-50k", marks=pytest.mark.slow),
    ],
)
def test_collector_stopped_gracefully_mid_run_then_back(
    fresh_otlp_receiver: OtlpReceiver, tmp_path: Path, protocol: str, size: tuple[int, int]
) -> None:
    """rx.stop() (SIGTERM: the receiver closes its listeners and drains) while the application works on."""
    WARM, AWAY = size  # noqa: N806
    rx = fresh_otlp_receiver
    audit = tmp_path / "audit.jsonl"
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    env = app_env(endpoint, protocol, audit, OTEL_EXPORTER_OTLP_TIMEOUT="3")
    try:
        with app("fault_app", env) as proc:
            healthy = proc.run("healthy", WARM)
            proc.ask("flush 10000")
            rx.wait_for(lambda: len(spans_of_phase(rx, "healthy")) >= 1, timeout=20)
            rx.stop()  # SIGTERM: a graceful shutdown, not a crash
            assert not rx.is_alive()
            stopped = proc.run("stopped", AWAY)
            during = len(audit_lines(audit))  # read while the collector is still down (synchronous writes)
            rx.start()  # same ports
            back = proc.run("back", WARM)
            exported = rx.wait_for(lambda: spans_of_phase(rx, "back"), timeout=60)  # export resumes by itself
            bye = proc.quit()
    finally:
        if not rx.is_alive():
            rx.start()
    for answer, count in ((healthy, WARM), (stopped, AWAY), (back, WARM)):
        check_phase(answer, count)
    events = audit_lines(audit)
    report(
        f"collector stopped gracefully (SIGTERM) mid-run and restarted ({protocol})",
        operations=2 * WARM + AWAY,
        audit_events=len(events),
        audit_events_while_down=during,
        healthy_p99_ms=healthy["p99_ms"],
        stopped_p99_ms=stopped["p99_ms"],
        added_p99_ms=added_p99(healthy, stopped),
        stopped_max_ms=stopped["max_ms"],
        rss_growth_mb=round((stopped["rss"] - healthy["rss"]) / 2**20, 1),
        spans_after_restart=len(exported),
        exit_s=round(bye["exit_s"], 2),
    )
    # The local record has every event, and had those of the outage while the collector was still down.
    assert during == WARM + AWAY
    assert len(events) == 2 * WARM + AWAY
    assert len({e["span_id"] for e in events}) == len(events)
    assert all(e["operation"] == "ship" and e["outcome"] == "ok" for e in events)
    assert added_p99(healthy, stopped) < ADDED_P99_BOUND_MS
    assert stopped["rss"] - healthy["rss"] < RSS_GROWTH_BOUND
    assert rx.is_alive() and not rx.errors()


# --- a collector that answers with errors ------------------------------------------------------------


class ErrorCollector:
    """What the error collector saw: POSTs per path, and the status it answered."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self.posts: Counter[str] = Counter()
        self.bytes = 0
        self.lock = threading.Lock()


@contextlib.contextmanager
def error_collector(status: int, headers: dict[str, str] | None = None) -> Iterator[tuple[str, ErrorCollector]]:
    """An HTTP server on 127.0.0.1 (free port) answering every POST with ``status``; yields (endpoint, state)."""
    state = ErrorCollector(status, headers or {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.posts[self.path] += 1
                state.bytes += len(body)
            payload = b'{"code": 14, "message": "unavailable"}'
            self.send_response(state.status)
            for key, value in state.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


#: (status, response headers, export timeout, POSTs one failed export may make). 503 without Retry-After:
#: the SDK's first backoff (~1 s) exceeds the 0.5 s budget, so one POST per export. 429 with Retry-After: 1
#: and a 2 s budget: the SDK waits the second the collector asked for, tries once more, then gives up.
ERRORS = [
    pytest.param(503, {}, "0.5", 1, id="503"),
    pytest.param(429, {"Retry-After": "1"}, "2", 2, id="429-retry-after"),
]


@pytest.mark.parametrize(("status", "headers", "timeout", "posts_per_export"), ERRORS)
def test_collector_answers_with_errors(
    tmp_path: Path, status: int, headers: dict[str, str], timeout: str, posts_per_export: int
) -> None:
    WARM, FAULTY = 500, 3_000  # noqa: N806
    audit = tmp_path / "audit.jsonl"
    with error_collector(status, headers) as (endpoint, state):
        env = app_env(endpoint, "http/protobuf", audit, OTEL_EXPORTER_OTLP_TIMEOUT=timeout)
        with app("fault_app", env) as proc:
            warm = proc.run("warm", WARM)
            faulty = proc.run("faulty", FAULTY)
            bye = proc.quit(timeout=90)
            assert proc.proc.stderr is not None
            stderr = proc.proc.stderr.read()  # the whole of it (App.stderr() keeps the tail)
    check_phase(warm, WARM)
    check_phase(faulty, FAULTY)
    # The SDK logs each failed span and metric export (WARNING/ERROR to stderr, no handler configured); a
    # failed log-record export is not logged (the SDK does not log about its own logs pipeline).
    failed = {kind: stderr.count(f"Failed to export {kind} batch") for kind in ("spans", "metrics", "logs")}
    aborted_retries = stderr.count("aborting retry")
    # Exports still in progress when uninstall()/exit reached shutdown_timeout are abandoned, unlogged: at most
    # two per signal (the batch worker or periodic reader, and the flush or shutdown).
    abandoned = 2 if "did not finish within" in stderr else 0
    report(
        f"collector answers {status}",
        operations=WARM + FAULTY,
        posts=dict(state.posts),
        failed_exports_logged=failed,
        retries_aborted_at_shutdown=aborted_retries,
        abandoned_at_shutdown_timeout=bool(abandoned),
        warm_p99_ms=warm["p99_ms"],
        faulty_p99_ms=faulty["p99_ms"],
        faulty_max_ms=faulty["max_ms"],
        rss_growth_mb=round((faulty["rss"] - warm["rss"]) / 2**20, 1),
        exit_s=round(bye["exit_s"], 2),
    )
    # Faults were injected: spans, metrics and audit log records all met the error, and every failure was counted.
    assert {"/v1/traces", "/v1/metrics", "/v1/logs"} <= set(state.posts), state.posts
    assert failed["spans"] >= 1 and failed["metrics"] >= 1
    # Bounded: no export makes more POSTs than the SDK's retry budget allows for this answer.
    for kind, path in (("spans", "/v1/traces"), ("metrics", "/v1/metrics")):
        budget = posts_per_export * (failed[kind] + aborted_retries + abandoned)
        assert state.posts[path] <= budget, (kind, state.posts, failed, abandoned)
    assert added_p99(warm, faulty) < ADDED_P99_BOUND_MS
    assert faulty["rss"] - warm["rss"] < RSS_GROWTH_BOUND
    events = audit_lines(audit)
    assert len(events) == WARM + FAULTY
    assert len({e["span_id"] for e in events}) == len(events)
