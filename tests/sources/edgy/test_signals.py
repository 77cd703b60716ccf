"""Every Edgy signal as a span and an audit event, on SQLite and PostgreSQL: trees, skips, failures, models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import edgy
import pytest
from edgy.core import signals
from edgy.core.signals import Broadcaster, Signal
from edgy.exceptions import SkipOperation
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.exc import IntegrityError

from sigtrace import semconv
from sigtrace.sources.edgy import trace_model_signal, trace_model_signals
from sigtrace.testing import Capture, capture
from tests.sources.edgy.helpers import attrs, edgy_spans, hex_id, parent_id, span_id
from tests.sources.edgy.models import LIFECYCLE, Models


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["edgy"]) as cap:
        yield cap


def only(cap: Capture, name: str) -> Any:
    return cap.span(name)


def audit_of(cap: Capture, span: Any) -> dict[str, Any]:
    (event,) = cap.audit_for(span)
    return event


async def test_save_insert_and_update_are_children_of_the_caller(db: Models, cap: Capture, backend: str) -> None:
    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        user = await db.User.query.create(name="ada")
        user.age = 36
        await user.save()
    spans = cap.spans_named("save users")
    assert len(spans) == 2
    insert, update = spans
    for span in spans:
        assert span.kind == SpanKind.CLIENT
        assert parent_id(span) == request.get_span_context().span_id
        a = attrs(span)
        assert a[semconv.DB_SYSTEM_NAME] == backend
        assert a[semconv.DB_COLLECTION_NAME] == "users"
        assert a[semconv.DB_OPERATION_NAME] == "save"
        assert a[semconv.SIGTRACE_MODEL] == "User"
        assert a[semconv.SIGTRACE_PK] == str(user.pk)
        assert a[semconv.SIGTRACE_SIGNAL] == "post_save"
    assert attrs(insert)["sigtrace.edgy.is_update"] is False
    assert attrs(update)["sigtrace.edgy.is_update"] is True
    event = audit_of(cap, insert)
    assert event["outcome"] == "ok" and event["pk"] == str(user.pk) and "name" in event["changed_fields"]
    assert "values" not in event  # no capture_values
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_instance_update_and_delete(db: Models, cap: Capture) -> None:
    user = await db.User.query.create(name="bob")
    cap.clear()
    await user.update(age=7)
    await user.delete()
    update = only(cap, "update users")
    assert audit_of(cap, update)["changed_fields"] == ["age"]
    assert attrs(update)[semconv.SIGTRACE_ROWS_AFFECTED] == 1
    delete = only(cap, "delete users")
    event = audit_of(cap, delete)
    assert event["outcome"] == "ok" and event["pk"] == str(user.pk) and event["rows"] == 1


async def test_queryset_update_and_delete_record_the_filter_shape_not_values(db: Models, cap: Capture) -> None:
    await db.User.query.bulk_create([{"name": "c1", "age": 1}, {"name": "c2", "age": 2}])
    cap.clear()
    assert await db.User.query.filter(age__gte=2, name="c2").update(password="hunter2") == 1
    await db.User.query.filter(name="c1").delete()
    update = only(cap, "update users")
    a = attrs(update)
    assert a["sigtrace.edgy.queryset"] is True
    shape = a["sigtrace.edgy.filter"]
    assert "users.age >=" in shape and "users.name =" in shape and ":" in shape
    assert "c2" not in shape and "2 " not in shape
    event = audit_of(cap, update)
    assert event["filter"] == shape and event["changed_fields"] == ["password"]
    assert "values" not in event and "hunter2" not in repr({k: v for k, v in event.items() if k != "trace_id"})
    delete = only(cap, "delete users")
    assert audit_of(cap, delete)["rows"] == 1
    assert "c1" not in audit_of(cap, delete)["filter"] and "values" not in audit_of(cap, delete)


async def test_capture_values_are_redacted(db: Models) -> None:
    with capture(sources=["edgy"], capture_values=True) as cap:
        user = await db.User.query.create(name="eve", password="s3cret")
        await user.update(age=3)
        await db.User.query.filter(name="eve").update(age=4)
    insert = audit_of(cap, cap.spans_named("save users")[0])
    assert insert["values"]["name"] == "eve"
    assert insert["values"]["password"] != "s3cret" and "s3cret" not in repr(cap.audit_events)
    update, qs_update = cap.spans_named("update users")
    assert audit_of(cap, update)["values"]["age"] == [0, 3]  # the old value is known for an instance update
    assert audit_of(cap, qs_update)["values"]["filter"] == {"name_1": "eve"}


@pytest.mark.parametrize(
    "method",
    ["bulk_create", "bulk_update", "bulk_update_or_create", "bulk_get_or_create"],
)
async def test_bulk_operations_are_paired_and_parented(db: Models, cap: Capture, method: str) -> None:
    users = await db.User.query.bulk_create([{"name": "b1"}, {"name": "b2"}])
    cap.clear()
    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        if method == "bulk_create":
            await db.User.query.bulk_create([{"name": "b3"}, {"name": "b4"}, {"name": "b5"}])
        elif method == "bulk_update":
            full = [await db.User.query.get(name=u.name) for u in users]
            for u in full:
                u.age = 9
            await db.User.query.bulk_update(full, update_fields=["age"])
        elif method == "bulk_update_or_create":
            await db.User.query.bulk_update_or_create(
                [{"name": "b1", "age": 5}, {"name": "b6", "age": 6}], unique_fields=["name"]
            )
        else:
            await db.User.query.bulk_get_or_create([{"name": "b1"}, {"name": "b7"}], unique_fields=["name"])
    span = only(cap, f"{method} users")
    assert parent_id(span) == request.get_span_context().span_id
    assert attrs(span)[semconv.SIGTRACE_SIGNAL] == "post_bulk"
    event = audit_of(cap, span)
    assert event["outcome"] == "ok" and event["operation"] == method
    # nothing else from edgy: the bulk signals ran in gathered tasks and still made exactly one span
    assert [s.name for s in edgy_spans(cap)] == [f"{method} users"]
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_relation_add_and_remove_many_to_many_and_one_to_many(db: Models, cap: Capture) -> None:
    user = await db.User.query.create(name="rel")
    tag = await db.Tag.query.create(name="t")
    post = await db.Post.query.create(title="p")
    cap.clear()
    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        await user.tags.add(tag)
        await user.tags.remove(tag)
        await user.posts.add(post)
        await user.posts.remove(post)
    add, remove = (only(cap, "relation_add usertagsthrough"), only(cap, "relation_remove usertagsthrough"))
    fk_add, fk_remove = (only(cap, "relation_add posts"), only(cap, "relation_remove posts"))
    for span in (add, remove, fk_add, fk_remove):
        assert parent_id(span) == request.get_span_context().span_id
        assert audit_of(cap, span)["outcome"] == "ok"
    event = audit_of(cap, add)
    assert event["relation_kind"] == "many_to_many" and event["relation"] == "tags"
    assert event["relation_source"] == "User" and event["relation_target"] == "Tag"
    assert event["pk"] == str(user.pk) and event["batch_size"] == 1 and event["rows"] == 1
    assert audit_of(cap, fk_add)["relation_kind"] == "one_to_many"
    # the owner is the model and pk, the related rows are listed (docs/conventions.md, "One name per act")
    assert event["model"] == "User" and event["related_model"] == "Tag" and event["related_pks"] == [str(tag.pk)]
    assert audit_of(cap, fk_remove)["related_pks"] == [str(post.pk)]
    a = attrs(add)
    assert a[semconv.SIGTRACE_MODEL] == "User" and a[semconv.SIGTRACE_PK] == str(user.pk)
    assert a[semconv.SIGTRACE_RELATION_NAME] == "tags" and a[semconv.SIGTRACE_RELATION_MODEL] == "Tag"
    assert a[semconv.SIGTRACE_RELATION_PK] == str(tag.pk)
    assert attrs(fk_add)[semconv.SIGTRACE_RELATION_NAME] == "posts"
    assert attrs(fk_remove)[semconv.SIGTRACE_SIGNAL] == "post_relation_remove"
    assert cap.installation is not None and cap.installation.in_flight() == 0


async def test_sql_spans_nest_under_the_operation_span(db: Models, cap: Capture) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    engine = db.database.engine
    assert engine is not None
    instrumentor.instrument(engine=engine.sync_engine, tracer_provider=cap.tracer_provider)
    try:
        user = await db.User.query.create(name="sql")
        await db.User.query.bulk_create([{"name": "sql2"}, {"name": "sql3"}])
        tag = await db.Tag.query.create(name="t")
        await user.tags.add(tag)
    finally:
        instrumentor.uninstrument()
    for name, verb in (("save users", "INSERT"), ("bulk_create users", "INSERT"), ("relation_add usertagsthrough", "")):
        op = cap.span(name)
        children = [s for s in cap.spans if parent_id(s) == span_id(op) and s.name != op.name]
        assert children, (name, [(s.name, parent_id(s)) for s in cap.spans])
        assert any(verb in s.name for s in children), [s.name for s in children]


async def test_integrity_error_is_an_error_span_at_once(db: Models, cap: Capture) -> None:
    await db.User.query.create(name="dup")
    cap.clear()
    with pytest.raises(IntegrityError):
        await db.User.query.create(name="dup")
    with pytest.raises(IntegrityError):
        await db.User.query.bulk_create([{"name": "dup"}])
    user = await db.User.query.create(name="other")
    with pytest.raises(IntegrityError):
        await user.update(name="dup")
    assert cap.installation is not None and cap.installation.in_flight() == 0
    failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
    assert sorted(s.name for s in failed) == ["bulk_create users", "save users", "update users"]
    for span in failed:
        assert attrs(span)[semconv.ERROR_TYPE] == "IntegrityError"
        assert not attrs(span).get(semconv.SIGTRACE_ORPHANED)
        assert any(e.name == "exception" for e in span.events)
        assert audit_of(cap, span)["outcome"] == "error"
    # the span made current by the failed save's pre receiver was detached: the next one is a root again
    assert parent_id(cap.spans_named("save users")[-1]) is None


@pytest.mark.parametrize("connect_first", [True, False])
async def test_skip_operation_is_skipped(db: Models, connect_first: bool) -> None:
    """A user's pre receiver raises SkipOperation (before or after ours): outcome skipped, nothing written."""

    async def skip(sender: Any, **kwargs: Any) -> None:
        raise SkipOperation()

    user = await db.User.query.create(name="skip")
    for name in ("pre_save", "pre_delete", "pre_bulk", "pre_relation_add"):
        if connect_first:
            getattr(signals, name).connect(skip, weak=False)
    try:
        with capture(sources=["edgy"]) as cap:
            if not connect_first:
                for name in ("pre_save", "pre_delete", "pre_bulk", "pre_relation_add"):
                    getattr(signals, name).connect(skip, weak=False)
            user.age = 99
            await user.save()
            await user.delete()
            await db.User.query.bulk_create([{"name": "never"}])
            tag = db.Tag(name="x")
            await user.tags.add(tag)
    finally:
        for name in ("pre_save", "pre_delete", "pre_bulk", "pre_relation_add"):
            getattr(signals, name).disconnect(skip)
    names = sorted(s.name for s in edgy_spans(cap))
    assert names == ["bulk_create users", "delete users", "relation_add usertagsthrough", "save users"]
    for span in edgy_spans(cap):
        assert attrs(span)[semconv.SIGTRACE_OUTCOME] == "skipped"
        assert span.status.status_code == StatusCode.UNSET
        assert audit_of(cap, span)["outcome"] == "skipped"
    assert await db.User.query.filter(name="never").count() == 0
    assert (await db.User.query.get(pk=user.pk)).age == 0


async def test_meta_override_model_is_traced(db: Models, cap: Capture) -> None:
    seen_globally: list[Any] = []

    async def global_receiver(sender: Any, **kwargs: Any) -> None:
        seen_globally.append(sender)

    signals.pre_save.connect(global_receiver, weak=False)
    try:
        tracer = cap.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("request") as request:
            obj = await db.Rewired.query.create(code="r1")
            await obj.update(code="r2")
            await db.Rewired.query.bulk_create([{"code": "r3"}, {"code": "r4"}])
            await obj.delete()
    finally:
        signals.pre_save.disconnect(global_receiver)
    assert db.Rewired not in seen_globally  # its signals really are its own
    names = [s.name for s in edgy_spans(cap)]
    assert sorted(names) == ["bulk_create rewireds", "delete rewireds", "save rewireds", "update rewireds"]
    for span in edgy_spans(cap):
        assert parent_id(span) == request.get_span_context().span_id
        assert audit_of(cap, span)["outcome"] == "ok"


async def test_model_registered_after_install_and_signals_rewired_after_install(db: Models, cap: Capture) -> None:
    # a new registry and a model with its own Broadcaster, both created after install()
    late_registry = edgy.Registry(database=db.database)
    own = Broadcaster({name: Signal() for name in LIFECYCLE})

    class Late(edgy.Model):
        label: str = edgy.CharField(max_length=20)

        class Meta:
            registry = late_registry
            signals = own

    # the registry callback connected us to its own signals as the class was created
    assert own["pre_save"].receivers and own["post_bulk"].receivers

    # a model of the existing registry re-wired after install (set_lifecycle_signals_from)
    class Namespace:
        pass

    ns = Namespace()
    for name in LIFECYCLE:
        setattr(ns, name, Signal())
    db.Tag.meta.signals.set_lifecycle_signals_from(ns)
    try:
        await late_registry.create_all()
        late = await Late.query.create(label="x")
        await late.delete()
        await db.Tag.query.create(name="rewired")
    finally:
        db.Tag.meta.signals.set_lifecycle_signals_from(signals)
        await late_registry.drop_all()
    assert sorted(s.name for s in edgy_spans(cap)) == ["delete lates", "save lates", "save tags"]


async def test_custom_signals_through_the_blinker_source(db: Models) -> None:
    db.User.meta.signals.on_verify = Signal()
    db.User.meta.signals.pre_notify = Signal()
    db.User.meta.signals.post_notify = Signal()
    single = trace_model_signal(db.User, "on_verify")
    pair = trace_model_signals(db.User, "pre_notify", "post_notify")
    try:
        with capture(sources=["edgy", "blinker"]) as cap:
            user = await db.User.query.create(name="custom")
            tracer = cap.tracer_provider.get_tracer("test")
            with tracer.start_as_current_span("request") as request:
                await db.User.meta.signals.on_verify.send_async(db.User, instance=user)
                await db.User.meta.signals.pre_notify.send_async(db.User, instance=user)
                await db.User.meta.signals.post_notify.send_async(db.User, instance=user)
    finally:
        single.untrace()
        pair.untrace()
    request_span = cap.span("request")
    assert [e.name for e in request_span.events] == ["on_verify"]
    verify = [e for e in cap.audit_events if e["operation"] == "on_verify"]
    assert len(verify) == 1 and verify[0]["model"] == "User" and verify[0]["source"] == "edgy"
    assert verify[0]["span_id"] == hex_id(request_span)
    notify = cap.span("notify users")
    assert parent_id(notify) == request.get_span_context().span_id
    assert audit_of(cap, notify)["outcome"] == "ok"
    assert not db.User.meta.signals.on_verify.receivers


async def test_receivers_are_async_and_strong(db: Models, cap: Capture) -> None:
    import gc
    import inspect

    gc.collect()
    for name in LIFECYCLE:
        receivers = list(getattr(signals, name).receivers.values())
        ours = [r for r in receivers if getattr(r, "__name__", "").startswith("sigtrace_edgy")]
        assert len(ours) == 1, name
        assert inspect.iscoroutinefunction(ours[0])  # send_async breaks on a sync receiver
    await db.User.query.create(name="strong")
    assert len(cap.spans_named("save users")) == 1


async def test_receiver_errors_are_reported_and_never_reach_save(
    db: Models, cap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receivers are their own safety net (``source.edgy.<signal>``, as ``Source.receiver`` names it)."""
    from sigtrace.core import safety

    assert cap.installation is not None
    engine = cap.installation.engine

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("sigtrace bug")

    before = safety.error_counts()
    monkeypatch.setattr(engine, "claim", broken)
    monkeypatch.setattr(engine, "end", broken)
    with safety.strict(False):
        user = await db.User.query.create(name="safe")
        user.name = "safer"
        await user.save()
    monkeypatch.undo()
    assert (await db.User.query.get(id=user.id)).name == "safer"
    after = safety.error_counts()
    for kind in ("source.edgy.pre_save", "source.edgy.post_save"):
        assert after.get(kind, 0) - before.get(kind, 0) == 2, kind
    with pytest.raises(RuntimeError, match="sigtrace bug"):  # strict mode: the net hides no bug
        monkeypatch.setattr(engine, "claim", broken)
        await user.save()
