"""Installing sigtrace changes no query, no query count and no router call of any traced operation.

Each operation kind runs twice on fresh rows: without sigtrace and with it. Both runs must send
the same SQL statements (their shape: numbers and quoted values aside) and make the same calls to
the project's database router (``CountingRouter``: method and model, in order). With sigtrace the
operation must also be traced (its span, on the right database): a check that sees nothing proves
nothing. Three set-ups: no router (SQLite, the default database), and a router sending everything
to SQLite or to PostgreSQL (skipped with the reason when the server is absent).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connections, router
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from sigtrace import semconv
from sigtrace.testing import capture
from tests.sources.django.conftest import skip_without
from tests.sources.django.routers import CountingRouter
from tests.sources.django.testapp.models import Article, Author, Comment, Tag, Team

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
SYSTEMS = {"default": "sqlite", "postgres": "postgresql"}
ROUTER = "tests.sources.django.routers.CountingRouter"

Action = Callable[[], Any]


@dataclass(frozen=True)
class Kind:
    """One traced operation kind: ``prepare(run)`` makes its rows (not measured) and returns the call to measure."""

    name: str
    prepare: Callable[[int], Action]
    span: str  # the span sigtrace must record for it


def _author(run: int, name: str = "a") -> Author:
    return Author.objects.create(name=f"{name}{run}")


def _article(run: int) -> Article:
    return Article.objects.create(title=f"t{run}", author=_author(run, "writer"))


def _save_create(run: int) -> Action:
    return lambda: Author(name=f"new{run}").save()


def _save_update(run: int) -> Action:
    author = _author(run)

    def action() -> None:
        author.email = f"e{run}"
        author.save()

    return action


def _model_delete(run: int) -> Action:
    comment = Comment.objects.create(article=_article(run), body="b")  # nothing points at a comment
    return comment.delete


def _model_delete_cascade(run: int) -> Action:
    article = _article(run)
    for body in ("x", "y"):
        Comment.objects.create(article=article, body=body)
    article.tags.add(Tag.objects.create(label=f"l{run}"))
    return article.author.delete  # author -> article (collected) -> comments, tag rows (fast)


def _queryset_delete_fast(run: int) -> Action:
    article = _article(run)
    for body in ("x", "y", "z"):
        Comment.objects.create(article=article, body=body)
    return lambda: Comment.objects.filter(article=article).delete()


def _queryset_delete_collected(run: int) -> Action:
    names = [f"q{run}x", f"q{run}y"]
    for name in names:
        Author.objects.create(name=name)
    return lambda: Author.objects.filter(name__in=names).delete()  # Guarded PROTECTs authors: Django loads them


def _m2m(method: str) -> Callable[[int], Action]:
    def prepare(run: int) -> Action:
        article = _article(run)
        red, blue, green = (Tag.objects.create(label=f"{c}{run}") for c in ("red", "blue", "green"))
        if method != "add":
            article.tags.add(red, blue)
        calls: dict[str, Action] = {
            "add": lambda: article.tags.add(red, blue.pk),
            "remove": lambda: article.tags.remove(red),
            "clear": article.tags.clear,
            "set": lambda: article.tags.set([blue, green]),
        }
        return calls[method]

    return prepare


def _m2m_custom(method: str) -> Callable[[int], Action]:
    def prepare(run: int) -> Action:
        team = Team.objects.create(name=f"team{run}")
        ann, bob, cid = (_author(run, n) for n in ("ann", "bob", "cid"))
        if method != "add":
            team.members.add(ann, bob, through_defaults={"role": "lead"})
        calls: dict[str, Action] = {
            "add": lambda: team.members.add(ann, bob, through_defaults={"role": "lead"}),
            "remove": lambda: team.members.remove(ann),
            "clear": team.members.clear,
            "set": lambda: team.members.set([bob, cid], through_defaults={"role": "x"}),
        }
        return calls[method]

    return prepare


def _update(run: int) -> Action:
    _author(run)
    return lambda: Author.objects.filter(name=f"a{run}").update(email="u")


def _bulk_create(run: int) -> Action:
    return lambda: Author.objects.bulk_create([Author(name=f"b{run}{i}") for i in range(3)])


def _bulk_update(run: int) -> Action:
    authors = [_author(run, f"bu{i}") for i in range(3)]

    def action() -> None:
        for author in authors:
            author.email = "x"
        Author.objects.bulk_update(authors, ["email"])

    return action


def _get_or_create(run: int) -> Action:
    return lambda: Author.objects.get_or_create(name=f"g{run}", defaults={"email": "e"})


def _update_or_create(run: int) -> Action:
    _author(run, "u")
    return lambda: Author.objects.update_or_create(name=f"u{run}", defaults={"email": "v"})


KINDS = [
    Kind("save create", _save_create, "save testapp_author"),
    Kind("save update", _save_update, "save testapp_author"),
    Kind("Model.delete", _model_delete, "delete testapp_comment"),
    Kind("Model.delete with cascade", _model_delete_cascade, "delete testapp_author"),
    Kind("QuerySet.delete fast", _queryset_delete_fast, "delete testapp_comment"),
    Kind("QuerySet.delete collected", _queryset_delete_collected, "delete testapp_author"),
    *(
        Kind(f"m2m {m} (auto through)", _m2m(m), f"relation_{m} testapp_article_tags")
        for m in ("add", "remove", "clear")
    ),
    Kind("m2m set (auto through)", _m2m("set"), "relation_add testapp_article_tags"),
    *(Kind(f"m2m {m} (custom through)", _m2m_custom(m), f"relation_{m} testapp_membership") for m in ("add", "remove")),
    Kind("m2m clear (custom through)", _m2m_custom("clear"), "relation_clear testapp_membership"),
    Kind("m2m set (custom through)", _m2m_custom("set"), "relation_add testapp_membership"),
    Kind("QuerySet.update", _update, "update testapp_author"),
    Kind("bulk_create", _bulk_create, "bulk_create testapp_author"),
    Kind("bulk_update", _bulk_update, "bulk_update testapp_author"),
    Kind("get_or_create", _get_or_create, "save testapp_author"),
    Kind("update_or_create", _update_or_create, "save testapp_author"),
]


@dataclass(frozen=True)
class Measured:
    queries: list[str]
    router_calls: list[tuple[str, str]]


_NUMBER = re.compile(r"\d+")


def shape(sql: str) -> str:
    """A statement without the numbers that differ between runs (pks, the run number in names)."""
    return _NUMBER.sub("#", sql)


def measure(alias: str, action: Action) -> Measured:
    CountingRouter.calls.clear()
    with CaptureQueriesContext(connections[alias]) as captured:
        action()
    return Measured([shape(q["sql"]) for q in captured.captured_queries], list(CountingRouter.calls))


@pytest.fixture(params=["no router", "router to sqlite", "router to postgresql"])
def setup(request: pytest.FixtureRequest) -> Iterator[str]:
    """The alias the operations run on: without a router (Django's default), or where the counting router sends them."""
    mode: str = request.param
    if mode == "no router":
        yield "default"
        return
    alias = "postgres" if mode.endswith("postgresql") else "default"
    skip_without(alias)
    CountingRouter.target = alias
    try:
        with override_settings(DATABASE_ROUTERS=[ROUTER]):
            assert router.routers and isinstance(router.routers[0], CountingRouter)
            yield alias
    finally:
        CountingRouter.target = None
        CountingRouter.calls.clear()


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_sigtrace_changes_no_query_and_no_router_call(setup: str, kind: Kind) -> None:
    alias = setup
    plain = measure(alias, kind.prepare(0))
    with capture(sources=["django"]) as cap:
        action = kind.prepare(1)
        cap.clear()
        traced = measure(alias, action)
    assert len(traced.queries) == len(plain.queries), (traced.queries, plain.queries)
    assert traced.queries == plain.queries
    assert traced.router_calls == plain.router_calls
    spans = cap.spans_named(kind.span)
    assert spans, [s.name for s in cap.spans]
    for span in spans:  # the database Django chose, learnt without asking the router
        assert (span.attributes or {})[semconv.DB_SYSTEM_NAME] == SYSTEMS[alias], span
    assert cap.installation is not None and cap.installation.in_flight() == 0
    # The in-flight count started without a database (router set-ups) moved to the one resolved: none left.
    in_flight = {tuple(sorted(p.attributes.items())): p.value for p in cap.metric_points(semconv.METRIC_IN_FLIGHT)}
    assert set(in_flight.values()) <= {0}, in_flight
    connections.close_all()


def test_a_raising_router_is_the_applications_error_not_sigtraces() -> None:
    """A router that raises: the application sees its exception as without sigtrace, and sigtrace counts no error."""
    from sigtrace.core import safety

    author = Author.objects.create(name="routed")

    class Refusing(CountingRouter):
        def db_for_write(self, model: Any, **hints: Any) -> str | None:
            raise LookupError("no database for you")

    with override_settings(DATABASE_ROUTERS=[Refusing()]), safety.strict(False):
        before = dict(safety.error_counts())
        with capture(sources=["django"]) as cap:
            for call in (author.delete, lambda: Author.objects.filter(pk=author.pk).update(email="x")):
                with pytest.raises(LookupError, match="no database for you"):
                    call()
        assert dict(safety.error_counts()) == before
    assert Author.objects.filter(pk=author.pk).exists()
    failed = [s for s in cap.spans if (s.attributes or {}).get(semconv.ERROR_TYPE) == "LookupError"]
    assert len(failed) == 2, [s.name for s in cap.spans]


def test_sigtrace_connects_no_model_signal_receiver() -> None:
    """Django's model signals keep their no-receiver fast path: saves are read at save_base, not received."""
    from django.db.models import signals

    model_signals = (signals.pre_save, signals.post_save, signals.pre_delete, signals.post_delete, signals.m2m_changed)
    before = [list(signal.receivers) for signal in model_signals]
    with capture(sources=["django"]) as cap:
        assert [list(signal.receivers) for signal in model_signals] == before
        Author.objects.create(name="quiet")
        assert len(cap.spans_named("save testapp_author")) == 1
    connections.close_all()
