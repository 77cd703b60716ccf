"""Every signal Django sends for a model, on SQLite and PostgreSQL: spans, audit events, failures at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError, connections
from django.db.models import ProtectedError, signals
from django.db.models.deletion import Collector
from django.test import override_settings
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.django.testapp.models import Article, Author, Comment, Guarded, Restaurant, Tag, Ticket, WrappedPk

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
SYSTEMS = {"default": "sqlite", "postgres": "postgresql"}


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["django"]) as cap:
        yield cap
    connections.close_all()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def one_audit(cap: Capture, span: ReadableSpan) -> dict[str, Any]:
    events = cap.audit_for(span)
    assert len(events) == 1, cap.audit_events
    return events[0]


# --- save ---


def test_create_then_update(cap: Capture, alias: str) -> None:
    author = Author(name="ada", email="ada@example.org")
    author.save(using=alias)
    author.email = "ada@lovelace.org"
    author.save(using=alias, update_fields=["email"])
    created, updated = cap.spans_named("save testapp_author")
    for span in (created, updated):
        a = attrs(span)
        assert a[semconv.DB_SYSTEM_NAME] == SYSTEMS[alias]
        assert a[semconv.DB_OPERATION_NAME] == "save"
        assert a[semconv.SIGTRACE_MODEL] == "Author"
        assert a[semconv.SIGTRACE_PK] == str(author.pk)
        assert a[semconv.SIGTRACE_SIGNAL] == "post_save"
        assert span.status.status_code == StatusCode.UNSET
    first, second = one_audit(cap, created), one_audit(cap, updated)
    assert first["created"] is True and first["changed_fields"] == ["name", "email"]
    assert second["created"] is False and second["changed_fields"] == ["email"]
    assert first["pk"] == second["pk"] == str(author.pk)
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_manager_create_and_inheritance_are_one_operation_each(cap: Capture, alias: str) -> None:
    Author.objects.using(alias).create(name="grace")
    Restaurant(name="chez", stars=2).save(using=alias)  # writes testapp_place and testapp_restaurant
    assert len(cap.spans_named("save testapp_author")) == 1
    (restaurant,) = cap.spans_named("save testapp_restaurant")
    assert one_audit(cap, restaurant)["model"] == "Restaurant"
    assert [s.name for s in cap.spans] == ["save testapp_author", "save testapp_restaurant"]


def test_integrity_error_is_an_error_span_at_once(cap: Capture, alias: str) -> None:
    Author.objects.using(alias).create(name="dup")
    with pytest.raises(IntegrityError):
        Author(name="dup").save(using=alias)
    ok, failed = cap.spans_named("save testapp_author")
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR
    assert attrs(failed)[semconv.ERROR_TYPE] == "IntegrityError"
    assert attrs(failed)[semconv.SIGTRACE_SIGNAL] == "pre_save"  # post_save never came
    assert not attrs(failed).get(semconv.SIGTRACE_ORPHANED)
    event = one_audit(cap, failed)
    assert event["outcome"] == semconv.OUTCOME_ERROR and event["error_type"] == "IntegrityError"
    assert "created" not in event  # its INSERT was compiled, and failed: nothing was created
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_a_raising_receiver_fails_the_operation_at_once(cap: Capture, alias: str) -> None:
    def refuse(sender: Any, instance: Any, **kwargs: Any) -> None:
        if instance.name == "mallory":
            raise PermissionError("no")

    signals.pre_save.connect(refuse, sender=Author, weak=False)
    try:
        with pytest.raises(PermissionError):
            Author(name="mallory").save(using=alias)
    finally:
        signals.pre_save.disconnect(refuse, sender=Author)
    (span,) = cap.spans
    assert span.status.status_code == StatusCode.ERROR and attrs(span)[semconv.ERROR_TYPE] == "PermissionError"
    assert not Author.objects.using(alias).filter(name="mallory").exists()
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_a_raising_post_save_receiver_leaves_the_written_row_ok(cap: Capture, alias: str) -> None:
    """The row is written before post_save is sent: the save is what the database kept, the error the app's."""

    def complain(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        raise PermissionError("after the fact")

    signals.post_save.connect(complain, sender=Author, weak=False)
    try:
        with pytest.raises(PermissionError):
            Author(name="kept").save(using=alias)
    finally:
        signals.post_save.disconnect(complain, sender=Author)
    assert Author.objects.using(alias).filter(name="kept").exists()
    (span,) = cap.spans
    assert span.status.status_code == StatusCode.UNSET
    assert attrs(span)[semconv.SIGTRACE_SIGNAL] == "post_save"
    event = one_audit(cap, span)
    assert event["outcome"] == semconv.OUTCOME_OK and event["created"] is True
    assert event["pk"] == str(Author.objects.using(alias).get(name="kept").pk)
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_sigtrace_never_breaks_a_save(alias: str) -> None:
    from sigtrace.core import safety

    with capture(sources=["django"]) as cap, safety.strict(False):
        source: Any = cap.installation.sources["django"]  # type: ignore[union-attr]
        source._facts = None  # every receiver and wrapper now fails inside sigtrace
        Author(name="safe").save(using=alias)
    assert Author.objects.using(alias).filter(name="safe").exists()


# --- delete ---


def test_delete_with_cascade(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    Comment.objects.using(alias).create(article=article, body="b1")
    Comment.objects.using(alias).create(article=article, body="b2")
    cap.clear()
    author_pk = author.pk
    author.delete(using=alias)
    # One operation for the call; what the cascade deleted is in its audit, from Django's collector.
    (top,) = cap.spans
    assert top.name == "delete testapp_author"
    assert attrs(top)[semconv.SIGTRACE_PK] == str(author_pk)
    assert attrs(top)[semconv.DB_SYSTEM_NAME] == SYSTEMS[alias]
    assert attrs(top)[semconv.SIGTRACE_ROWS_AFFECTED] == 4
    assert semconv.SIGTRACE_SIGNAL not in attrs(top)  # no delete receiver: Django keeps its fast delete
    events = cap.audit_for(top)
    assert {e["outcome"] for e in events} == {"ok"}
    by_table = {e["collection"]: e for e in events if e["collection"] != "testapp_comment"}
    assert by_table["testapp_author"]["pk"] == str(author_pk) and by_table["testapp_author"]["model"] == "Author"
    assert by_table["testapp_article"]["pk"] == str(article.pk)
    # Nothing points at a comment: Django deletes them with one query, without loading them; one count.
    (comments,) = [e for e in events if e["collection"] == "testapp_comment"]
    assert comments["rows"] == 2 and "pk" not in comments and comments["model"] == "Comment"
    assert len(events) == 3
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_protected_delete_fails_at_once(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="kept")
    Guarded.objects.using(alias).create(author=author)
    cap.clear()
    with pytest.raises(ProtectedError):
        author.delete(using=alias)
    (span,) = cap.spans
    assert span.name == "delete testapp_author"
    assert span.status.status_code == StatusCode.ERROR and attrs(span)[semconv.ERROR_TYPE] == "ProtectedError"
    assert one_audit(cap, span)["outcome"] == "error"


def test_queryset_delete_is_one_operation_with_its_rows(cap: Capture, alias: str) -> None:
    authors = [Author.objects.using(alias).create(name=name) for name in ("a", "b", "c")]
    Guarded.objects.using(alias).create(author=authors[2])  # PROTECT: Django must load the authors it deletes
    cap.clear()
    count, _ = Author.objects.using(alias).filter(name__in=["a", "b"]).delete()
    assert count == 2
    (span,) = cap.spans
    assert span.name == "delete testapp_author" and attrs(span)[semconv.SIGTRACE_ROWS_AFFECTED] == 2
    events = cap.audit_for(span)
    assert sorted(e["pk"] for e in events) == sorted(str(a.pk) for a in authors[:2])
    assert {e.get("signal") for e in events} == {None}


def test_fast_queryset_delete_is_one_count(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    for body in ("x", "y", "z"):
        Comment.objects.using(alias).create(article=article, body=body)
    cap.clear()
    assert Comment.objects.using(alias).all().delete() == (3, {"testapp.Comment": 3})
    (span,) = cap.spans
    (event,) = cap.audit_for(span)
    assert event["rows"] == 3 and "pk" not in event and event["collection"] == "testapp_comment"
    assert Comment.objects.using(alias).none().delete() == (0, {})
    empty = cap.spans[-1]
    assert empty.name == "delete testapp_comment" and attrs(empty)[semconv.SIGTRACE_ROWS_AFFECTED] == 0
    assert cap.audit_for(empty) == []  # nothing was deleted: nothing to audit


def test_a_receiver_of_the_application_makes_django_collect_and_sigtrace_list_the_rows(
    cap: Capture, alias: str
) -> None:
    article = Article.objects.using(alias).create(title="t", author=Author.objects.using(alias).create(name="ada"))
    comments = [Comment.objects.using(alias).create(article=article, body=b) for b in ("x", "y")]
    seen: list[Any] = []

    def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance.pk)

    signals.pre_delete.connect(receiver, sender=Comment, weak=False)
    try:
        cap.clear()
        Comment.objects.using(alias).filter(article=article).delete()
    finally:
        signals.pre_delete.disconnect(receiver, sender=Comment)
    assert sorted(seen) == sorted(c.pk for c in comments)  # Django loaded them for the receiver
    (span,) = cap.spans
    assert sorted(e["pk"] for e in cap.audit_for(span)) == sorted(str(c.pk) for c in comments)


def test_no_delete_or_m2m_receiver_keeps_the_fast_paths(alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    comment = Comment.objects.using(alias).create(article=article, body="b")
    comments = Comment.objects.using(alias).all()  # nothing points at a comment: fast-deletable
    assert Collector(using=alias, origin=None).can_fast_delete(comments)
    with capture(sources=["django"]) as cap:
        for signal in (signals.pre_delete, signals.post_delete):
            assert not signal.has_listeners(Comment)
        assert not signals.m2m_changed.has_listeners(Article.tags.through)
        assert Collector(using=alias, origin=None).can_fast_delete(comments)
        comment.delete(using=alias)
    assert [s.name for s in cap.spans] == ["delete testapp_comment"]
    with override_settings(SIGTRACE={"django": {"trace_delete": False}}), capture(sources=["django"]) as cap:
        Comment.objects.using(alias).create(article=article, body="c").delete(using=alias)
        Author.objects.using(alias).create(name="still traced")
    assert [s.name for s in cap.spans] == ["save testapp_comment", "save testapp_author"]


# --- many-to-many ---


def test_m2m_add_remove_clear_set(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    red, blue, green = (Tag.objects.using(alias).create(label=c) for c in ("red", "blue", "green"))
    cap.clear()
    article.tags.add(red, blue)
    article.tags.remove(red)
    article.tags.set([green])  # remove blue, add green
    article.tags.clear()
    names = [s.name for s in cap.spans]
    assert names == [
        "relation_add testapp_article_tags",
        "relation_remove testapp_article_tags",
        "relation_remove testapp_article_tags",
        "relation_add testapp_article_tags",
        "relation_clear testapp_article_tags",
    ], names
    add = cap.spans[0]
    a = attrs(add)
    assert a[semconv.SIGTRACE_MODEL] == "Article" and a[semconv.SIGTRACE_PK] == str(article.pk)
    # No m2m_changed receiver: the fast add is kept.
    assert semconv.SIGTRACE_SIGNAL not in a and a[semconv.SIGTRACE_ROWS_AFFECTED] == 2
    assert a[semconv.DB_SYSTEM_NAME] == SYSTEMS[alias]
    assert a[semconv.SIGTRACE_RELATION_NAME] == "tags" and a[semconv.SIGTRACE_RELATION_MODEL] == "Tag"
    assert semconv.SIGTRACE_RELATION_PK not in a  # two related rows
    event = one_audit(cap, add)
    assert event["related_model"] == "Tag" and event["reverse"] is False and event["relation"] == "tags"
    assert event["related_pks"] == sorted([str(red.pk), str(blue.pk)])
    clear = one_audit(cap, cap.spans[-1])
    assert "related_pks" not in clear and clear["rows"] == 1  # clear: the through rows Django deleted
    removed = one_audit(cap, cap.spans[1])
    assert removed["related_pks"] == [str(red.pk)] and removed["rows"] == 1
    assert attrs(cap.spans[1])[semconv.SIGTRACE_RELATION_PK] == str(red.pk)  # one related row
    # The through rows are written by the m2m operation itself: no separate bulk_create operation.
    assert not cap.spans_named("bulk_create testapp_article_tags")
    assert not cap.spans_named("delete testapp_article_tags")
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_m2m_reverse_side(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    tag = Tag.objects.using(alias).create(label="red")
    cap.clear()
    tag.articles.add(article)
    (span,) = cap.spans
    event = one_audit(cap, span)
    assert event["model"] == "Tag" and event["related_model"] == "Article" and event["reverse"] is True
    assert event["relation"] == "articles" and attrs(span)[semconv.SIGTRACE_RELATION_NAME] == "articles"


def test_m2m_related_pks_are_capped_at_100(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    Tag.objects.using(alias).bulk_create(Tag(label=f"t{i}") for i in range(101))
    tags = list(Tag.objects.using(alias).filter(label__startswith="t"))
    cap.clear()
    article.tags.add(*tags)
    (span,) = cap.spans
    event = one_audit(cap, span)
    assert len(event["related_pks"]) == 100 and event["related_pks_truncated"] is True
    assert attrs(span)[semconv.SIGTRACE_ROWS_AFFECTED] == 101


def test_m2m_failure_is_an_error_at_once(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    cap.clear()
    with pytest.raises(IntegrityError):
        article.tags.add(987654)  # no such tag: the foreign key fails at commit
    (span,) = cap.spans
    assert span.name == "relation_add testapp_article_tags"
    assert span.status.status_code == StatusCode.ERROR and attrs(span)[semconv.ERROR_TYPE] == "IntegrityError"
    assert one_audit(cap, span)["outcome"] == "error"
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_an_excluded_m2m_change_leaves_no_operation_of_its_through_rows(alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    tag = Tag.objects.using(alias).create(label="red")
    excluded = ["operation:relation_add", "operation:relation_remove", "operation:relation_clear"]
    with capture(sources=["django"], exclude=excluded) as cap:
        article.tags.add(tag)
        article.tags.remove(tag)
        article.tags.add(tag)
        article.tags.clear()
        Article.tags.through.objects.using(alias).all().delete()  # outside a manager call: a delete of its own
    assert [s.name for s in cap.spans] == ["delete testapp_article_tags"]


def test_managers_cached_before_install_are_rebuilt(alias: str) -> None:
    author = Author.objects.using(alias).create(name="ada")
    article = Article.objects.using(alias).create(title="t", author=author)
    tag = Tag.objects.using(alias).create(label="x")
    assert not getattr(type(article.tags), "_sigtrace_traced", False)
    with capture(sources=["django"]) as cap:
        assert getattr(type(article.tags), "_sigtrace_traced", False)
        article.tags.add(tag)
    assert [s.name for s in cap.spans] == ["relation_add testapp_article_tags"]
    assert not getattr(type(article.tags), "_sigtrace_traced", False)


# --- bulk operations: no signals, wrapped ---


def test_bulk_operations(cap: Capture, alias: str) -> None:
    authors = Author.objects.using(alias).bulk_create(Author(name=f"n{i}") for i in range(3))
    for author in authors:
        author.email = f"{author.name}@example.org"
    updated = Author.objects.using(alias).bulk_update(authors, ["email"])
    rows = Author.objects.using(alias).filter(name__in=["n0", "n1"]).update(email="x")
    assert (updated, rows) == (3, 2)
    names = [s.name for s in cap.spans]
    assert names == ["bulk_create testapp_author", "bulk_update testapp_author", "update testapp_author"], names
    create, bulk_update, update = cap.spans
    assert (
        attrs(create)[semconv.SIGTRACE_ROWS_AFFECTED] == 3 and attrs(bulk_update)[semconv.SIGTRACE_ROWS_AFFECTED] == 3
    )
    assert attrs(update)[semconv.SIGTRACE_ROWS_AFFECTED] == 2
    created_event = one_audit(cap, create)
    assert created_event["rows"] == 3 and created_event["changed_fields"] == ["name", "email"]
    assert created_event["batch_size"] == 3 and attrs(create)[semconv.DB_OPERATION_BATCH_SIZE] == 3
    assert created_event["pks"] == [str(a.pk) for a in authors]
    assert one_audit(cap, bulk_update)["changed_fields"] == ["email"]
    update_event = one_audit(cap, update)
    assert update_event["changed_fields"] == ["email"] and update_event["rows"] == 2 and "pks" not in update_event


def test_bulk_failure_is_an_error(cap: Capture, alias: str) -> None:
    Author.objects.using(alias).create(name="taken")
    cap.clear()
    with pytest.raises(IntegrityError):
        Author.objects.using(alias).bulk_create([Author(name="free"), Author(name="taken")])
    (span,) = cap.spans
    assert span.name == "bulk_create testapp_author" and span.status.status_code == StatusCode.ERROR


def test_reverse_foreign_key_add_is_an_update(cap: Capture, alias: str) -> None:
    ada = Author.objects.using(alias).create(name="ada")
    bob = Author.objects.using(alias).create(name="bob")
    article = Article.objects.using(alias).create(title="t", author=ada)
    cap.clear()
    bob.articles.add(article)  # bulk=True: one QuerySet.update, no signal
    assert [s.name for s in cap.spans] == ["update testapp_article"]


# --- init, exclusions, suppression ---


def test_init_signals_off_by_default_and_on_by_option(alias: str) -> None:
    Author.objects.using(alias).create(name="ada")
    with capture(sources=["django"]):
        assert not signals.post_init.has_listeners(Author)
    with override_settings(SIGTRACE={"django": {"trace_init": True}}), capture(sources=["django"]) as cap:
        tracer = cap.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("load"):
            list(Author.objects.using(alias).all())
    load = cap.span("load")
    (event,) = load.events
    assert event.name == "init" and (event.attributes or {})[semconv.SIGTRACE_MODEL] == "Author"
    assert cap.audit_events == []  # a read: audited only with audit_reads


def test_exclusions_and_suppression(alias: str) -> None:
    with capture(sources=["django"], exclude=["model:Author"]) as cap:
        Author.objects.using(alias).create(name="hidden")
        Tag.objects.using(alias).create(label="shown")
        with suppress_instrumentation():
            Tag.objects.using(alias).create(label="suppressed")
    assert [s.name for s in cap.spans] == ["save testapp_tag"]


def test_bad_option_is_a_clear_error() -> None:
    from sigtrace import ConfigError
    from sigtrace.sources.django.source import django_options

    with pytest.raises(ConfigError, match="trace_everything"):
        django_options({"trace_everything": True}, {})
    with pytest.raises(ConfigError, match="SIGTRACE_DJANGO_TRACE_DELETE"):
        django_options({}, {"SIGTRACE_DJANGO_TRACE_DELETE": "perhaps"})
    assert django_options({}, {"SIGTRACE_DJANGO_TRACE_DELETE": "0"}).trace_delete is False
    assert django_options({"trace_delete": True}, {"SIGTRACE_DJANGO_TRACE_DELETE": "0"}).trace_delete is True


# --- async ORM ---


def test_async_orm(cap: Capture, alias: str) -> None:
    tracer = cap.tracer_provider.get_tracer("test")

    async def scenario() -> None:
        with tracer.start_as_current_span("task"):
            author = Author(name=uuid.uuid4().hex)
            await author.asave(using=alias)
            article = Article(title="t", author=author)
            await article.asave(using=alias)
            tag = await Tag.objects.using(alias).acreate(label="red")
            await article.tags.aadd(tag)
            await Author.objects.using(alias).filter(pk=author.pk).aupdate(email="e")
            with pytest.raises(IntegrityError):
                await Author(name=author.name).asave(using=alias)
            await author.adelete(using=alias)
        await sync_to_async(connections.close_all)()  # the ORM's worker thread holds its own connection

    asyncio.run(scenario())
    task = cap.span("task")
    children = [s for s in cap.spans if parent_id(s) == span_id(task)]
    assert [s.name for s in children] == [
        "save testapp_author",
        "save testapp_article",
        "save testapp_tag",
        "relation_add testapp_article_tags",
        "update testapp_author",
        "save testapp_author",
        "delete testapp_author",
    ]
    assert children[5].status.status_code == StatusCode.ERROR
    # The cascade to the article is in the delete's audit (Django's collector), not a span of its own.
    deleted = sorted(e["collection"] for e in cap.audit_for(children[-1]))
    assert deleted == ["testapp_article", "testapp_article_tags", "testapp_author"]
    assert cap.installation is not None and cap.installation.in_flight() == 0


# --- values whose text fails ---


def test_a_pk_whose_str_fails_is_reported_as_safe_text(cap: Capture, alias: str) -> None:
    ticket = Ticket.objects.using(alias).create(title="t")
    assert isinstance(ticket.pk, WrappedPk)
    with pytest.raises(TypeError):
        str(ticket.pk)  # what every str(pk) inside sigtrace used to meet
    (span,) = cap.spans
    assert attrs(span)[semconv.SIGTRACE_PK] == repr(ticket.pk) and attrs(span)[semconv.SIGTRACE_SIGNAL] == "post_save"
    event = one_audit(cap, span)
    assert event["pk"] == repr(ticket.pk) and event["created"] is True
    cap.clear()
    tickets = Ticket.objects.using(alias).bulk_create([Ticket(title="a"), Ticket(title="b")])
    (bulk,) = cap.spans
    bulk_event = one_audit(cap, bulk)
    assert bulk_event["rows"] == 2 and attrs(bulk)[semconv.SIGTRACE_ROWS_AFFECTED] == 2
    if all(t.pk is not None for t in tickets):  # where the backend returns the new pks
        assert bulk_event["pks"] == [repr(t.pk) for t in tickets]
    cap.clear()
    expected = repr(ticket.pk)
    ticket.delete(using=alias)
    (deleted,) = cap.audit_events
    assert deleted["pk"] == expected and deleted["operation"] == "delete"
