"""1,000 concurrent Edgy operations under asyncio.gather, each in its own parent span (SQLite and PostgreSQL).

Saves, instance updates, deletes, query-set updates, bulk creates and relation adds: the pre/post
receivers of the last two run in gathered tasks of their own. Each operation must give exactly one
span, paired (outcome ok, audited once) and parented under its own caller span.
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.trace import StatusCode

from sigtrace.testing import capture
from tests.sources.edgy.helpers import edgy_spans, hex_id, parent_id, span_id
from tests.sources.edgy.models import Models

OPERATIONS = 1000
KINDS = ("create", "update", "delete", "qs_update", "bulk_create", "relation_add")


async def test_thousand_concurrent_operations_pair_and_parent_exactly(db: Models, backend: str) -> None:
    per_kind = -(-OPERATIONS // len(KINDS))
    users = await db.User.query.bulk_create([{"name": f"u{i}"} for i in range(3 * per_kind)])
    users = list(await db.User.query.order_by("id").all())
    tags = await db.Tag.query.bulk_create([{"name": f"t{i}"} for i in range(per_kind)])
    tags = list(await db.Tag.query.order_by("id").all())

    with capture(sources=["edgy"]) as cap:
        tracer = cap.tracer_provider.get_tracer("load")

        async def one(i: int) -> tuple[str, int, str | None]:
            kind = KINDS[i % len(KINDS)]
            n = i // len(KINDS)
            with tracer.start_as_current_span(f"caller-{i}") as caller:
                try:
                    await operation(kind, i, n)
                except Exception as exc:  # noqa: BLE001 - see below: a failed operation is one ERROR span
                    return kind, caller.get_span_context().span_id, type(exc).__qualname__
            return kind, caller.get_span_context().span_id, None

        async def operation(kind: str, i: int, n: int) -> None:
            if kind == "create":
                await db.User.query.create(name=f"new-{i}")
            elif kind == "update":
                await users[n].update(age=i)
            elif kind == "delete":
                await users[per_kind + n].delete()
            elif kind == "qs_update":
                await db.User.query.filter(name=f"u{2 * per_kind + n}").update(age=i)
            elif kind == "bulk_create":
                await db.User.query.bulk_create([{"name": f"bulk-{i}-a"}, {"name": f"bulk-{i}-b"}])
            else:
                await users[2 * per_kind + n].tags.add(tags[n])

        results = await asyncio.gather(*(one(i) for i in range(OPERATIONS)))
        assert cap.installation is not None and cap.installation.in_flight() == 0
        spans = edgy_spans(cap)
        audit = [e for e in cap.audit_events if e["source"] == "edgy"]

    expected_names = {
        "create": "save users",
        "update": "update users",
        "delete": "delete users",
        "qs_update": "update users",
        "bulk_create": "bulk_create users",
        "relation_add": "relation_add usertagsthrough",
    }
    assert len(spans) == OPERATIONS
    by_parent: dict[int | None, list[Any]] = {}
    for span in spans:
        by_parent.setdefault(parent_id(span), []).append(span)
    audit_by_span = {e["span_id"]: e for e in audit}
    failures = 0
    for kind, caller_id, error in results:
        (span,) = by_parent[caller_id]  # exactly one operation span under each caller
        assert span.name == expected_names[kind]
        assert span.end_time is not None and span.end_time >= span.start_time
        event = audit_by_span[hex_id(span)]
        if error is None:
            assert (span.attributes or {}).get("sigtrace.signal", "").startswith("post_")
            assert span.status.status_code == StatusCode.UNSET and event["outcome"] == "ok"
        else:
            # databasez runs Edgy's write transactions SERIALIZABLE: on PostgreSQL a concurrent write may
            # fail with a (retryable) SerializationError. It must be one ERROR span at once, not an orphan.
            failures += 1
            assert span.status.status_code == StatusCode.ERROR
            assert (span.attributes or {})["error.type"] == error
            assert event["outcome"] == "error" and event["error_type"] == error
    assert len(audit) == OPERATIONS
    assert {e["span_id"] for e in audit} == {hex_id(s) for s in spans}
    assert len({span_id(s) for s in spans}) == OPERATIONS
    if backend == "sqlite":
        # What failed, by kind and error type, where one did: one of the 1,000 failed once in a CI run beside
        # valgrind, and the bare count did not say which or why.
        assert failures == 0, [(kind, error) for kind, _caller, error in results if error is not None]
    assert failures < OPERATIONS // 10, failures
