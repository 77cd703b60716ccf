"""Load: nothing lost, nothing mispaired, memory bounded.

Default run: reduced sizes. ``-m slow`` (nox -s slow): the sizes of the issue, 8 threads x 10,000
PynamoDB operations against a moto server, and an orphan flood of 1,000,000 pre signals.
"""

from __future__ import annotations

import gc
import importlib.util
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import blinker
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import sigtrace
from sigtrace import semconv
from sigtrace.testing import Capture, capture

flood_pre = blinker.NamedSignal("pre_flood")
flood_post = blinker.NamedSignal("post_flood")
#: Memory an orphan flood may hold per entry of the in-flight table, whatever the flood's size (measured:
#: ~3.8 KB per entry, a live SDK span; ~7.3 KB when the pair makes its span current, as the context a
#: token restores keeps the previous span alive). The table holds at most max_in_flight entries.
BYTES_PER_ENTRY_BOUND = 16 * 1024


def metric_total(reader: InMemoryMetricReader, name: str) -> float:
    data = reader.get_metrics_data()
    total = 0.0
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    total += sum(getattr(p, "value", 0) for p in metric.data.data_points)
    return total


@pytest.mark.parametrize(("count", "table"), [(10_000, 1_000), pytest.param(1_000_000, 10_000, marks=pytest.mark.slow)])
def test_orphan_flood_memory_is_bounded_and_every_orphan_counted(count: int, table: int) -> None:
    pair = sigtrace.trace_signals(flood_pre, flood_post, key=lambda sender, **kw: kw["request"], collection="flood")
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        sigtrace.install(
            sources=["blinker"],
            tracer_provider=TracerProvider(),  # spans are made and ended; nothing keeps them
            meter_provider=meter_provider,
            audit=False,
            max_in_flight=table,
        )
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            flood_pre.send("x", request=i)  # a pre whose post never comes
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        handle = sigtrace._runtime.current()
        assert handle is not None and handle.in_flight() == table
        overflowed = metric_total(reader, semconv.METRIC_ORPHANS)
        sigtrace.uninstall()
        every = metric_total(reader, semconv.METRIC_ORPHANS)
    finally:
        sigtrace.uninstall()
        pair.untrace()
        meter_provider.shutdown()
    print(
        f"\n[reliability] orphan flood: {count} pre signals, peak traced memory {(peak - base) / 2**20:.1f} MB, "
        f"held {(current - base) / 2**20:.1f} MB, table {table}, orphans {overflowed:.0f} + {every - overflowed:.0f}"
    )
    assert overflowed == count - table
    assert every == count
    assert peak - base < table * BYTES_PER_ENTRY_BOUND


# --- PynamoDB: 8 threads x N operations against a moto server --------------------------------------

pynamodb_missing = importlib.util.find_spec("pynamodb") is None or importlib.util.find_spec("moto") is None


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    if pynamodb_missing:
        pytest.skip("pynamodb or moto is not installed")
    from moto.server import ThreadedMotoServer

    from tests.sources.pynamodb import models

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": models.REGION,
        }.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        models.bind(f"http://{host}:{port}")
        try:
            models.Customer.create_table(wait=True)
            yield models
        finally:
            models.bind(None)
            server.stop()


@pytest.mark.parametrize("per_thread", [25, pytest.param(10_000, marks=pytest.mark.slow)])
def test_pynamodb_8_threads(dynamodb: Any, per_thread: int) -> None:
    threads = 8
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)
    with capture(sources=["pynamodb"]) as cap:
        tracer = cap.tracer_provider.get_tracer("load")

        def work(index: int) -> None:
            barrier.wait()
            try:
                for i in range(per_thread):
                    with tracer.start_as_current_span(f"request {index}"):
                        dynamodb.Customer(id=f"{index}-{i}-{uuid.uuid4().hex[:6]}", name="n").save()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors, errors[:3]
        check_pairing(cap, "PutItem", threads * per_thread)


def check_pairing(cap: Capture, operation: str, performed: int) -> None:
    """One span and one audit event per operation, each span the child of its own caller's span."""
    spans = [s for s in cap.spans if s.name.startswith(operation)]
    by_id = {s.get_span_context().span_id: s for s in cap.spans}  # type: ignore[union-attr]
    assert len(spans) == performed
    for span in spans:
        assert span.parent is not None
        parent = by_id[span.parent.span_id]
        assert parent.name.startswith("request ")
        assert parent.context is not None and span.context is not None
        assert parent.context.trace_id == span.context.trace_id
    audited = [e for e in cap.audit_events if e["operation"] == operation]
    assert len(audited) == performed
    assert {e["span_id"] for e in audited} == {format(s.get_span_context().span_id, "016x") for s in spans}  # type: ignore[union-attr]
    assert cap.installation is not None and cap.installation.in_flight() == 0
    print(f"\n[reliability] load {operation}: {performed} operations, {len(audited)} audit events, pairing exact")
