"""Malformed payloads fed to every source's receivers (hypothesis): nothing ever reaches the application.

The suite runs under SIGTRACE_STRICT=1, where sigtrace's internal errors raise. Here strict mode is
switched off (``safety.strict(False)``), as in production, and the payloads go through the same doors
the library uses (its signals, or the receivers the source connected): missing keyword arguments,
``None`` senders and instances, unexpected types, objects whose every attribute raises, and weak proxies
whose referent is gone. What may not happen is an exception in the caller; what sigtrace caught is
counted (``safety.error_counts()``), and strict mode turns the same payloads into raised errors, so the
net hides no bug from sigtrace's own tests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import types
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import blinker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sigtrace
from sigtrace.core import safety
from sigtrace.testing import Capture, capture


class Dead:
    pass


def dead_proxy() -> Any:
    obj = Dead()
    proxy = weakref.proxy(obj)
    del obj
    return proxy  # every use raises ReferenceError


class Hostile:
    """Every attribute, str() and repr() raise; == raises; hash works (so it can be a dict value)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"hostile {name}")

    def __str__(self) -> str:
        raise RuntimeError("hostile str")

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("hostile eq")

    __hash__ = object.__hash__


leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=50),
    st.binary(max_size=50),
    st.uuids(),
    st.builds(dead_proxy),
    st.builds(Hostile),
    st.builds(object),
    st.just(Dead),
    st.builds(lambda: types.SimpleNamespace(pk=None, id=Hostile(), meta=None, ormar_config=None)),
)
payload = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
#: Senders of blinker signals: any payload but a dead proxy, on which blinker itself raises (``send``
#: identifies the sender with isinstance checks before any receiver runs, sigtrace's or not); dead
#: proxies still reach the receivers as keyword arguments.
senders = payload.filter(lambda value: not isinstance(value, weakref.ProxyType))


def kwargs_for(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the names the library sends (missing ones included), with any values, plus strangers."""
    return st.dictionaries(st.sampled_from([*names, "unexpected", "extra_kw"]), payload, max_size=len(names) + 2)


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture
def lenient() -> Iterator[Capture]:
    """Installed on in-memory providers, strict mode off (production behaviour)."""
    with safety.strict(False), capture(sources=[]) as cap:
        yield cap


def installed(source: str) -> Any:
    installation = sigtrace._runtime.current()
    assert installation is not None
    return installation.sources[source]


def fuzzed(source: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run the decorated body with ``source`` installed, strict mode off; the body must never raise."""

    def decorate(body: Callable[..., None]) -> Callable[..., None]:
        def run(*args: Any, **kwargs: Any) -> None:
            with safety.strict(False), capture(sources=[source]):
                body(*args, **kwargs)  # an exception here fails the test: it would have reached the application

        run.__name__ = body.__name__
        return run

    return decorate


# --- blinker ---------------------------------------------------------------

bl_pre, bl_post, bl_single = (
    blinker.NamedSignal("pre_fuzz"),
    blinker.NamedSignal("post_fuzz"),
    blinker.NamedSignal("on_fuzz"),
)


@pytest.fixture(scope="module", autouse=True)
def blinker_declarations() -> Iterator[None]:
    pair = sigtrace.trace_signals(bl_pre, bl_post, key=lambda sender, **kw: kw["request"], collection="fuzz")
    by_identity = sigtrace.trace_signals(bl_pre, bl_post, collection="fuzz_identity")
    single = sigtrace.trace_signal(bl_single, attributes=lambda sender, **kw: {"n": kw["n"]})
    yield
    for declaration in (pair, by_identity, single):
        declaration.untrace()


@given(sender=senders, pre_kw=kwargs_for(["request"]), post_kw=kwargs_for(["request"]))
@FUZZ
def test_blinker_receivers(sender: Any, pre_kw: dict[str, Any], post_kw: dict[str, Any]) -> None:
    with safety.strict(False), capture(sources=["blinker"]):
        bl_pre.send(sender, **pre_kw)
        bl_single.send(sender, **post_kw)
        bl_post.send(sender, **post_kw)


def test_strict_mode_raises_what_the_net_catches() -> None:
    """The same malformed payload raises under strict mode (our test suite) and is counted without it."""
    with safety.strict(True), capture(sources=["blinker"]), pytest.raises(KeyError):
        bl_pre.send("x")  # the key function reads kw["request"]
    before = safety.error_counts().get("source.blinker.pre", 0)
    with safety.strict(False), capture(sources=["blinker"]):
        bl_pre.send("x")
    assert safety.error_counts()["source.blinker.pre"] == before + 1


# --- PynamoDB --------------------------------------------------------------

needs = {
    name: importlib.util.find_spec(name) is not None for name in ("pynamodb", "ormar", "edgy", "django", "sqlalchemy")
}


@pytest.mark.skipif(not needs["pynamodb"], reason="pynamodb is not installed")
@given(
    sender=senders,
    pre_kw=kwargs_for(["operation_name", "table_name", "req_uuid"]),
    post_kw=kwargs_for(["operation_name", "table_name", "req_uuid"]),
    same_uuid=st.booleans(),
)
@FUZZ
def test_pynamodb_receivers(sender: Any, pre_kw: dict[str, Any], post_kw: dict[str, Any], same_uuid: bool) -> None:
    from pynamodb.signals import post_dynamodb_send, pre_dynamodb_send

    if same_uuid:
        pre_kw["req_uuid"] = post_kw["req_uuid"] = uuid.uuid4()
    with safety.strict(False), capture(sources=["pynamodb"]):
        pre_dynamodb_send.send(sender, **pre_kw)
        post_dynamodb_send.send(sender, **post_kw)


# --- ormar -----------------------------------------------------------------

ORMAR_SIGNALS = [
    "pre_save", "post_save", "pre_update", "post_update", "pre_delete", "post_delete",
    "pre_relation_add", "post_relation_add", "pre_relation_remove", "post_relation_remove", "post_bulk_update",
]  # fmt: skip


@pytest.mark.skipif(not needs["ormar"], reason="ormar is not installed")
@given(
    names=st.lists(st.sampled_from(ORMAR_SIGNALS), min_size=1, max_size=4),
    instance=payload,
    kw=kwargs_for(["instance", "passed_args", "child", "relation_name", "passed_kwargs"]),
)
@FUZZ
def test_ormar_receivers(names: list[str], instance: Any, kw: dict[str, Any]) -> None:
    from ormar.signals.signal import Signal

    signals = {name: Signal() for name in ORMAR_SIGNALS}
    sender = type("FuzzModel", (), {"ormar_config": types.SimpleNamespace(signals=signals, tablename="fuzz")})
    with safety.strict(False), capture(sources=["ormar"]):

        async def send_all() -> None:
            for name in names:
                await signals[name].send(
                    sender=sender, instance=instance, **{k: v for k, v in kw.items() if k != "instance"}
                )
                await signals[name].send(sender=instance, **kw)  # a sender that is no model at all

        asyncio.run(send_all())


# --- Edgy ------------------------------------------------------------------


@pytest.mark.skipif(not needs["edgy"], reason="edgy is not installed")
@given(
    which=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4),
    sender=senders,
    kw=kwargs_for(
        ["instance", "model_instance", "values", "column_values", "queryset", "row_count", "objects", "target", "child"]
    ),
)
@FUZZ
def test_edgy_receivers(which: list[int], sender: Any, kw: dict[str, Any]) -> None:
    from edgy.core import signals as edgy_signals

    with safety.strict(False), capture(sources=["edgy"]):
        names = sorted(installed("edgy")._receivers)  # every lifecycle signal sigtrace listens to

        async def send_all() -> None:
            for index in which:
                await getattr(edgy_signals, names[index % len(names)]).send_async(sender, **kw)

        asyncio.run(send_all())
        edgy_signals.pre_migrate.send(sender, **kw)
        edgy_signals.post_migrate.send(sender, **kw)


# --- Django ----------------------------------------------------------------


def django_ready() -> bool:
    if not needs["django"]:
        return False
    from django.conf import settings as django_settings

    return bool(django_settings.configured)


@pytest.fixture
def django_configured() -> None:
    # Checked when the test runs, not at collection: tests/sources/django's conftest (collected after
    # this package) configures Django for the whole run.
    if not django_ready():
        pytest.skip("Django settings are configured by tests/sources/django (run the whole suite)")


@pytest.mark.usefixtures("django_configured")
@given(
    signal=st.sampled_from(["pre_save", "post_save", "pre_delete", "post_delete", "m2m_changed"]),
    # Django's dispatcher keys its receiver cache by sender in a WeakKeyDictionary and raises on senders
    # it cannot weak-reference, before any receiver runs: model signals are sent by classes, so the
    # senders are classes (some with no ``_meta``) and the malformed payloads go in instance and kwargs.
    sender=st.sampled_from([Dead, Hostile, object, type]),
    instance=payload,
    kw=kwargs_for(["raw", "using", "update_fields", "created", "action", "pk_set", "model", "reverse"]),
)
@FUZZ
def test_django_receivers(signal: str, sender: Any, instance: Any, kw: dict[str, Any]) -> None:
    from django.db.models import signals

    with safety.strict(False), capture(sources=["django"]):
        getattr(signals, signal).send(sender=sender, instance=instance, **kw)


# --- SQLAlchemy ORM --------------------------------------------------------

SQLALCHEMY_MAPPER_EVENTS = [
    "before_insert", "after_insert", "before_update", "after_update", "before_delete", "after_delete",
]  # fmt: skip
SQLALCHEMY_SESSION_EVENTS = {  # the session events sigtrace listens to, and how many arguments each is sent
    "after_transaction_create": 2, "after_commit": 1, "after_rollback": 1, "after_transaction_end": 2,
    "do_orm_execute": 1,  # the ORMExecuteState
}  # fmt: skip


@pytest.fixture(scope="module")
def sqlalchemy_model() -> Any:
    """One mapped class on an in-memory SQLite engine (SQLAlchemy 1.4 to 2.1), made once for every example."""
    if not needs["sqlalchemy"]:
        pytest.skip("sqlalchemy is not installed")
    import sqlalchemy as sa
    from sqlalchemy import orm

    registry = orm.registry()
    table = sa.Table(
        "fuzz_item", registry.metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.Integer)
    )

    class FuzzItem:
        pass

    registry.map_imperatively(FuzzItem, table)
    engine = sa.create_engine("sqlite://")
    registry.metadata.create_all(engine)
    return FuzzItem, engine


@given(
    events=st.lists(st.sampled_from(SQLALCHEMY_MAPPER_EVENTS), min_size=1, max_size=4),
    session_events=st.lists(st.sampled_from(sorted(SQLALCHEMY_SESSION_EVENTS)), max_size=3),
    args=st.tuples(payload, payload, payload),
)
@FUZZ
def test_sqlalchemy_events(
    sqlalchemy_model: Any, events: list[str], session_events: list[str], args: tuple[Any, ...]
) -> None:
    """Malformed mapper and session events, inside a real flush and outside one: the real write still lands.

    SQLAlchemy dispatches them as its own (the listeners sigtrace added to ``Mapper`` and ``Session`` run on
    every mapper and session), with any mapper, connection and target; a flush's events find the flush.
    """
    import sqlalchemy as sa
    from sqlalchemy import event, orm

    cls, engine = sqlalchemy_model
    mapper = orm.class_mapper(cls)

    def fire(session: Any, *_: Any) -> None:
        for name in events:
            getattr(mapper.dispatch, name)(*args)
        for name in session_events:
            getattr(session.dispatch, name)(*args[: SQLALCHEMY_SESSION_EVENTS[name]])

    with safety.strict(False), capture(sources=["sqlalchemy"]), orm.Session(engine) as session:
        fire(session)  # outside any flush
        event.listen(session, "before_flush", fire)  # inside the flush, before its batches
        event.listen(session, "after_flush", fire)  # inside it, after them
        row = cls()
        row.n = len(events)
        session.add(row)
        session.commit()
        written = session.execute(sa.select(cls.n).where(cls.id == row.id)).scalar()
        assert written == len(events)
        session.delete(row)
        session.commit()
