"""One Connection per model, shared by every thread: pre/post pairing stays exact under 8 threads x 1,000 calls."""

from __future__ import annotations

import collections
import threading

from opentelemetry.trace import StatusCode

from sigtrace import semconv
from sigtrace.testing import capture
from tests.sources.pynamodb.helpers import attrs, new_id, signal_log
from tests.sources.pynamodb.models import Customer

THREADS = 8
CALLS = 1_000  # per thread: 500 PutItem + 500 GetItem


def test_threads_share_one_connection_and_pair_exactly() -> None:
    run = new_id()
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)
    table = Customer.Meta.table_name

    def work(thread: int) -> None:
        barrier.wait()
        try:
            for i in range(CALLS // 2):
                key = f"{run}-{thread}-{i}"
                Customer(key, name=str(thread)).save()
                assert Customer.get(key).name == str(thread)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with capture(sources=["pynamodb"]) as cap, signal_log() as log:
        workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors, errors[:3]
        assert cap.installation is not None and cap.installation.in_flight() == 0
        spans = [s for s in cap.spans if s.name in (f"PutItem {table}", f"GetItem {table}")]
        audit = list(cap.audit_events)
        operations = cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome="ok")

    total = THREADS * CALLS
    assert len(log.pre) == len(log.post) == total
    assert len(spans) == total
    assert all(s.status.status_code == StatusCode.UNSET for s in spans)
    # each span carries the req_uuid of exactly one pre/post pair, and every pair has its span
    ids = [attrs(s)[semconv.SIGTRACE_CORRELATION_ID] for s in spans]
    assert len(set(ids)) == total
    assert set(ids) == {str(e[2]) for e in log.pre} == {str(e[2]) for e in log.post}
    # pre and post of one call ran in the same thread
    pre_thread = {e[2]: e[3] for e in log.pre}
    assert all(pre_thread[e[2]] == e[3] for e in log.post)
    # the right key on the right span: every key once as PutItem and once as GetItem
    per_key = collections.Counter((s.name.split()[0], attrs(s)[semconv.SIGTRACE_PK]) for s in spans)
    expected = {f"{run}-{t}-{i}" for t in range(THREADS) for i in range(CALLS // 2)}
    assert set(per_key) == {(op, key) for op in ("PutItem", "GetItem") for key in expected}
    assert set(per_key.values()) == {1}
    # one audit event per write, on its own span
    writes = [e for e in audit if e["operation"] == "PutItem"]
    assert len(writes) == total // 2
    assert len({e["span_id"] for e in writes}) == total // 2
    assert {e["pk"] for e in writes} == expected
    assert operations == total
