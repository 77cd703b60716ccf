"""The audit log says what the database kept: writes inside Django transactions, on SQLite and PostgreSQL.

A write inside ``atomic()`` (or a manual transaction) is reported when the outermost transaction commits
(``ok``), or ``rolled_back`` when it or the savepoint around it rolls back; autocommit writes at once. Every test
here commits for real (pytest-django ``transactional_db``) and checks the outcome against the rows a SELECT
finds afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import IntegrityError, connections, transaction
from django.test import Client, override_settings

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.outcomes import HELD_TIMEOUT, reap_past_timeout, spans_only
from tests.sources.django.conftest import run_threads, skip_without
from tests.sources.django.routers import CountingRouter
from tests.sources.django.testapp.models import Article, Author, Tag

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
OK, ROLLED_BACK, UNKNOWN = semconv.OUTCOME_OK, semconv.OUTCOME_ROLLED_BACK, semconv.OUTCOME_UNKNOWN
ROUTER = "tests.sources.django.routers.CountingRouter"


class BoomError(Exception):
    """The application's failure that makes ``atomic()`` roll back."""


@pytest.fixture
def cap() -> Iterator[Capture]:
    # Values name the rows: SQLite hands the pk of a rolled-back insert out again.
    with capture(sources=["django"], capture_values=True) as cap:
        yield cap
    connections.close_all()


def outcomes(cap: Capture) -> dict[str, str]:
    """Author name -> outcome of its save (fails on two events for one name)."""
    found: dict[str, str] = {}
    for event in cap.audit_events:
        if event["operation"] == "save" and event["model"] == "Author":
            name = event["values"]["name"]
            assert name not in found, cap.audit_events
            found[name] = event["outcome"]
    return found


def counted(cap: Capture, outcome: str) -> float:
    return cap.metric_total(semconv.METRIC_OPERATIONS, sigtrace__outcome=outcome)


def matches_database(cap: Capture, alias: str) -> None:
    """Every audited author's outcome is ``ok`` exactly when a SELECT finds its row now."""
    reported = outcomes(cap)
    present = set(Author.objects.using(alias).filter(name__in=reported).values_list("name", flat=True))
    assert reported == {name: OK if name in present else ROLLED_BACK for name in reported}


def create(alias: str, name: str) -> Author:
    return Author.objects.using(alias).create(name=name)


# --- commit, rollback, savepoints ---


def test_committed_transaction_reports_ok_at_commit_not_before(cap: Capture, alias: str) -> None:
    with transaction.atomic(using=alias):
        author = Author(name="author")
        author.save(using=alias)
        assert cap.spans_named("save testapp_author")  # the span is not delayed
        assert cap.audit_events == []
        assert counted(cap, OK) == 0
        assert cap.installation is not None and cap.installation.in_flight() == 1  # held, bounded
    assert outcomes(cap) == {"author": OK}
    assert counted(cap, OK) == 1
    assert cap.installation.in_flight() == 0
    matches_database(cap, alias)


def test_rolled_back_transaction_reports_rolled_back_and_no_ok(cap: Capture, alias: str) -> None:
    with pytest.raises(BoomError), transaction.atomic(using=alias):
        author = Author(name="author")
        author.save(using=alias)
        raise BoomError
    assert outcomes(cap) == {"author": ROLLED_BACK}
    assert [e["outcome"] for e in cap.audit_events] == [ROLLED_BACK]  # no ok event at all
    assert counted(cap, OK) == 0 and counted(cap, ROLLED_BACK) == 1
    (span,) = cap.spans_named("save testapp_author")
    assert span.status.is_ok  # the save itself succeeded; the transaction did not
    matches_database(cap, alias)


def test_set_rollback_is_a_rollback(cap: Capture, alias: str) -> None:
    with transaction.atomic(using=alias):
        create(alias, "author")
        transaction.set_rollback(True, using=alias)
    assert outcomes(cap) == {"author": ROLLED_BACK}
    matches_database(cap, alias)


def test_rolled_back_savepoint_inside_a_committed_transaction(cap: Capture, alias: str) -> None:
    with transaction.atomic(using=alias):
        create(alias, "before")
        with pytest.raises(BoomError), transaction.atomic(using=alias):
            create(alias, "inner")
            with transaction.atomic(using=alias):  # released into `inner`'s savepoint, rolled back with it
                create(alias, "innermost")
            raise BoomError
        with transaction.atomic(using=alias):  # released: joins the outer transaction
            create(alias, "released")
        create(alias, "after")
        assert outcomes(cap) == {"inner": ROLLED_BACK, "innermost": ROLLED_BACK}  # known at once
    assert outcomes(cap) == {
        "before": OK,
        "inner": ROLLED_BACK,
        "innermost": ROLLED_BACK,
        "released": OK,
        "after": OK,
    }
    matches_database(cap, alias)


def test_inner_block_without_savepoint_shares_the_outer_fate(cap: Capture, alias: str) -> None:
    with transaction.atomic(using=alias), transaction.atomic(using=alias, savepoint=False):
        create(alias, "committed")
    with pytest.raises(BoomError), transaction.atomic(using=alias):
        with transaction.atomic(using=alias, savepoint=False):
            create(alias, "undone")
        raise BoomError
    # An exception caught around an inner block without savepoint: Django rolls the outer one back.
    with transaction.atomic(using=alias):
        create(alias, "outer")
        try:
            with transaction.atomic(using=alias, savepoint=False):
                create(alias, "failed")
                raise BoomError
        except BoomError:
            pass
    assert outcomes(cap) == {
        "committed": OK,
        "undone": ROLLED_BACK,
        "outer": ROLLED_BACK,
        "failed": ROLLED_BACK,
    }
    matches_database(cap, alias)


def test_every_kind_of_write_in_a_rolled_back_transaction(cap: Capture, alias: str) -> None:
    author = create(alias, "author")
    article = Article.objects.using(alias).create(title="t", author=author)
    tag = Tag.objects.using(alias).create(label="red")
    article_pk = article.pk
    cap.clear()
    with pytest.raises(BoomError), transaction.atomic(using=alias):
        Author.objects.using(alias).filter(pk=author.pk).update(email="changed")
        Tag.objects.using(alias).bulk_create([Tag(label="a"), Tag(label="b")])
        article.tags.add(tag)
        article.delete(using=alias)
        raise BoomError
    events = cap.audit_events
    # (the delete audits each row it removed: the article, and its tag links Django deleted in one query)
    assert {e["operation"] for e in events} == {"bulk_create", "delete", "relation_add", "update"}, events
    assert {e["outcome"] for e in events} == {ROLLED_BACK}
    assert Article.objects.using(alias).filter(pk=article_pk).exists()
    assert Author.objects.using(alias).get(pk=author.pk).email == ""


def test_writes_whose_database_a_router_chooses(cap: Capture, alias: str) -> None:
    """sigtrace asks no router: the alias Django resolved (collector, compiler) gives the connection."""
    author = create(alias, "routed")
    cap.clear()
    CountingRouter.target = alias
    try:
        with override_settings(DATABASE_ROUTERS=[ROUTER]), pytest.raises(BoomError), transaction.atomic(using=alias):
            Author.objects.filter(pk=author.pk).update(email="changed")  # no using=: the router decides
            Tag.objects.bulk_create([Tag(label="routed")])
            Author.objects.filter(pk=author.pk).delete()
            raise BoomError
    finally:
        CountingRouter.target = None
    events = cap.audit_events
    assert {e["operation"] for e in events} == {"update", "bulk_create", "delete"}, events
    assert {e["outcome"] for e in events} == {ROLLED_BACK}
    assert Author.objects.using(alias).filter(pk=author.pk, email="").exists()


def test_a_failing_write_inside_a_transaction_is_an_error_at_once(cap: Capture, alias: str) -> None:
    Author.objects.using(alias).create(name="taken")
    cap.clear()
    with transaction.atomic(using=alias):
        with pytest.raises(IntegrityError), transaction.atomic(using=alias):
            Author.objects.using(alias).create(name="taken")
        assert [e["outcome"] for e in cap.audit_events] == [semconv.OUTCOME_ERROR]
    assert [e["outcome"] for e in cap.audit_events] == [semconv.OUTCOME_ERROR]


# --- autocommit, manual transactions, on_commit ---


def test_autocommit_writes_are_reported_at_once(cap: Capture, alias: str) -> None:
    author = create(alias, "author")
    assert outcomes(cap) == {"author": OK}
    Author.objects.using(alias).filter(pk=author.pk).update(email="e")
    assert [e["outcome"] for e in cap.audit_events] == [OK, OK]
    assert cap.installation is not None and cap.installation.in_flight() == 0


def test_manual_transactions(cap: Capture, alias: str) -> None:
    transaction.set_autocommit(False, using=alias)
    try:
        create(alias, "committed")
        assert cap.audit_events == []
        transaction.commit(using=alias)
        assert outcomes(cap) == {"committed": OK}
        create(alias, "undone")
        transaction.rollback(using=alias)
        assert outcomes(cap)["undone"] == ROLLED_BACK
        create(alias, "last")
        transaction.commit(using=alias)
    finally:
        transaction.set_autocommit(True, using=alias)
    assert outcomes(cap) == {"committed": OK, "undone": ROLLED_BACK, "last": OK}
    matches_database(cap, alias)


def test_manual_savepoints(cap: Capture, alias: str) -> None:
    with transaction.atomic(using=alias):
        create_savepoint = getattr(transaction, "savepoint_create", None) or transaction.savepoint  # Django 6.1
        sid = create_savepoint(using=alias)
        create(alias, "first")
        transaction.savepoint_rollback(sid, using=alias)  # the savepoint stays open...
        create(alias, "second")
        transaction.savepoint_rollback(sid, using=alias)  # ...and undoes what ran in it since
        create(alias, "third")
        transaction.savepoint_commit(sid, using=alias)
    assert outcomes(cap) == {"first": ROLLED_BACK, "second": ROLLED_BACK, "third": OK}
    matches_database(cap, alias)


def test_switching_autocommit_on_with_a_transaction_open(cap: Capture, alias: str) -> None:
    transaction.set_autocommit(False, using=alias)
    create(alias, "switched")
    try:
        transaction.set_autocommit(True, using=alias)  # SQLite commits on switching; psycopg refuses
    except Exception:  # noqa: BLE001 - PostgreSQL: still in the transaction, which is then rolled back
        assert alias == "postgres"
        assert cap.audit_events == []
        transaction.rollback(using=alias)
        transaction.set_autocommit(True, using=alias)
    assert outcomes(cap) == {"switched": OK if alias == "default" else ROLLED_BACK}
    matches_database(cap, alias)


def test_postgresql_commit_of_an_aborted_transaction_is_a_rollback(cap: Capture) -> None:
    skip_without("postgres")
    Author.objects.using("postgres").create(name="pg-taken")
    cap.clear()
    transaction.set_autocommit(False, using="postgres")
    try:
        first = create("postgres", "first")
        with pytest.raises(IntegrityError):
            Author.objects.using("postgres").create(name="pg-taken")  # aborts the transaction
        transaction.commit(using="postgres")  # the server answers ROLLBACK
    finally:
        transaction.set_autocommit(True, using="postgres")
    assert outcomes(cap)["first"] == ROLLED_BACK
    assert not Author.objects.using("postgres").filter(pk=first.pk).exists()


def test_on_commit_callbacks_see_the_event_and_sigtrace_adds_none(cap: Capture, alias: str) -> None:
    seen: list[list[dict[str, Any]]] = []
    with transaction.atomic(using=alias):
        author = create(alias, "author")
        assert connections[alias].run_on_commit == []  # sigtrace registers no callback of its own
        transaction.on_commit(lambda: seen.append(cap.audit_events), using=alias)
        assert len(connections[alias].run_on_commit) == 1
    (events,) = seen
    assert [(e["pk"], e["outcome"]) for e in events] == [(str(author.pk), OK)]  # reported at COMMIT, before them


def test_a_connection_closed_in_a_transaction_leaves_its_writes_unknown(cap: Capture, alias: str) -> None:
    with transaction.atomic(using=alias):
        create(alias, "author")
        connections[alias].close()
    assert outcomes(cap) == {"author": UNKNOWN}
    assert not Author.objects.using(alias).filter(name="author").exists()  # the server rolled it back


def test_a_transaction_that_never_ends_is_unknown_after_orphan_timeout(alias: str) -> None:
    with capture(sources=["django"], orphan_timeout=HELD_TIMEOUT) as cap:
        transaction.set_autocommit(False, using=alias)
        try:
            author = create(alias, "author")
            assert cap.audit_events == []  # held for the transaction
            reap_past_timeout(cap)
            (event,) = cap.audit_events
            assert event["pk"] == str(author.pk) and event["outcome"] == UNKNOWN
            assert event["orphan_reason"] == "transaction_timeout"
            transaction.rollback(using=alias)
        finally:
            transaction.set_autocommit(True, using=alias)
        assert len(cap.audit_events) == 1  # the late rollback reports nothing twice
    connections.close_all()


# --- requests, several databases, threads ---


def test_atomic_requests(cap: Capture, alias: str) -> None:
    settings_dict = connections[alias].settings_dict
    settings_dict["ATOMIC_REQUESTS"] = True
    try:
        client = Client(raise_request_exception=False)
        assert client.get(f"/authors/fail/?db={alias}&author=request-failed").status_code == 500
        assert client.get(f"/articles/?db={alias}&author=request-ok").status_code == 200
    finally:
        settings_dict["ATOMIC_REQUESTS"] = False
    saves = [e for e in cap.audit_events if e["operation"] == "save"]
    assert [(e["model"], e["outcome"]) for e in saves] == [
        ("Author", ROLLED_BACK),
        ("Author", OK),
        ("Article", OK),
    ]
    assert not Author.objects.using(alias).filter(name="request-failed").exists()
    assert Author.objects.using(alias).filter(name="request-ok").exists()


def test_two_databases() -> None:
    skip_without("postgres")
    with capture(sources=["django"], capture_values=True) as cap:  # names tell the databases' pks apart
        with transaction.atomic(using="default"):
            Author.objects.using("default").create(name="two-dbs-sqlite")
            with pytest.raises(BoomError), transaction.atomic(using="postgres"):
                Author.objects.using("postgres").create(name="two-dbs-undone")
                raise BoomError
            Author.objects.using("postgres").create(name="two-dbs-autocommit")
            # The PostgreSQL outcomes are known; the SQLite transaction is still open.
            assert by_name(cap) == {"two-dbs-undone": ROLLED_BACK, "two-dbs-autocommit": OK}
        assert by_name(cap) == {"two-dbs-undone": ROLLED_BACK, "two-dbs-autocommit": OK, "two-dbs-sqlite": OK}
    connections.close_all()
    assert list(Author.objects.using("default").values_list("name", flat=True)) == ["two-dbs-sqlite"]
    assert list(Author.objects.using("postgres").values_list("name", flat=True)) == ["two-dbs-autocommit"]


def by_name(cap: Capture) -> dict[str, str]:
    return {e["values"]["name"]: e["outcome"] for e in cap.audit_events}


@pytest.mark.postgres
def test_100_concurrent_transactions_half_rolled_back(cap: Capture) -> None:
    skip_without("postgres")
    threads, per_thread = 25, 4  # 25 connections at once: the server is shared with other test runs

    def work(thread: int, i: int) -> None:
        try:
            with transaction.atomic(using="postgres"):
                Author.objects.using("postgres").create(name=f"concurrent-{thread}-{i}")
                if (thread + i) % 2:
                    raise BoomError
        except BoomError:
            pass

    run_threads(threads, per_thread, work)
    events = [e for e in cap.audit_events if e["operation"] == "save"]
    assert len(events) == threads * per_thread
    present = {str(pk) for pk in Author.objects.using("postgres").values_list("pk", flat=True)}
    for event in events:
        assert event["outcome"] == (OK if event["pk"] in present else ROLLED_BACK), event
    assert sum(e["outcome"] == OK for e in events) == len(present) == threads * per_thread // 2
    assert counted(cap, OK) == counted(cap, ROLLED_BACK) == threads * per_thread // 2
    assert cap.installation is not None and cap.installation.in_flight() == 0


# --- spans only ---


def test_spans_only_mirrors_no_transaction_and_patches_no_connection(alias: str) -> None:
    """Without the audit log and metrics nothing waits for a commit (``Engine.holds_writes``): Django's connection
    methods stay unpatched, and the save's span is what it is with them (it says what the call did)."""
    from django.db.backends.base.base import BaseDatabaseWrapper

    methods = ("savepoint", "savepoint_rollback", "commit", "rollback", "set_autocommit", "connect")
    with spans_only("django", BaseDatabaseWrapper, *methods) as cap:
        with pytest.raises(BoomError), transaction.atomic(using=alias):
            Author(name="spans-only").save(using=alias)
            raise BoomError
        (span,) = cap.spans_named("save testapp_author")
        assert span.status.is_ok and span.attributes is not None
        assert span.attributes[semconv.SIGTRACE_SIGNAL] == "post_save"
    connections.close_all()
    assert not Author.objects.using(alias).filter(name="spans-only").exists()
