"""The source kit (sigtrace/sources/kit/): the safety net, entry wrappers, patches, facts, pk text, declarations.

A small library stand-in (``Shelf``) plays the library; every piece runs on a real installation.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import blinker
import pytest
from opentelemetry import trace

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.context import current_scope
from sigtrace.core.operation import Operation
from sigtrace.sources.kit import (
    Declarations,
    Entry,
    FactsCache,
    ModelFacts,
    Source,
    batch_audit,
    database_of_url,
    pk_text,
)
from sigtrace.testing import Capture, capture

pre_put = blinker.Signal("pre_put")
post_put = blinker.Signal("post_put")


class Shelf:
    """A library object whose ``put`` sends a pre and a post signal around its write."""

    def put(self, item: str, fail: bool = False) -> str:
        pre_put.send(self, item=item)
        if fail:
            raise KeyError(item)
        post_put.send(self, item=item)
        return item.upper()

    async def aput(self, item: str, fail: bool = False, pause: float = 0.0, signals: bool = True) -> str:
        await asyncio.sleep(pause)
        if signals:
            pre_put.send(self, item=item)
        if fail:
            raise KeyError(item)
        if signals:
            post_put.send(self, item=item)
        return item.upper()

    def touch(self) -> str:
        return "touched"

    def hold(self, during: Any) -> Any:
        """A call that sends no signal at all (as SQLAlchemy's flush): ``during`` runs inside it."""
        return during()


FACTS = ModelFacts("Shelf", "shelves", "sqlite")


class ShelfSource(Source):
    name = "shelf"

    def __init__(self, engine: Any, options: Any = None, *, broken: str = "") -> None:
        super().__init__(engine, options)
        self.broken = broken

    def attach(self) -> None:
        self.connect(pre_put, self._on_pre)
        self.connect(post_put, self._on_post)
        self.patch(__name__, "Shelf.put", self.entry("put", self._build, self._after))
        self.patch(__name__, "Shelf.aput", self.async_entry("aput", self._build, self._after))

    def _build(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        if self.broken == "build":
            raise RuntimeError("build broke")
        item = args[0] if args else kwargs["item"]
        if item == "untraced":
            return None
        return FACTS.operation(self.name, "put", pk=pk_text(item)), (id(instance), "put")

    def _after(self, op: Operation, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        if self.broken == "after":
            raise RuntimeError("after broke")
        op.audit["result"] = result

    def _on_pre(self, sender: Any, **kwargs: Any) -> None:
        if self.broken == "receiver":
            raise RuntimeError("receiver broke")
        self.engine.claim((id(sender), "put"), signal="pre_put")

    def _on_post(self, sender: Any, **kwargs: Any) -> None:
        self.engine.end((id(sender), "put"), signal="post_put")


def _attached(cap: Capture, **kw: Any) -> ShelfSource:
    assert cap.installation is not None
    source = ShelfSource(cap.installation.engine, cap.installation.options, **kw)
    source.attach()
    return source


def test_entry_claimed_by_pre_and_ended_by_post() -> None:
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)
        try:
            assert Shelf().put("apple") == "APPLE"
        finally:
            source.detach()
        span = cap.span("put shelves")
        assert span.attributes is not None
        assert span.attributes[semconv.SIGTRACE_SIGNAL] == "post_put"
        assert span.attributes[semconv.SIGTRACE_PK] == "apple"
        (event,) = cap.audit_events
        assert event["outcome"] == "ok"
        # ``after`` runs only while the operation is open: the post signal ended it first.
        assert "result" not in event


def test_entry_failure_is_an_error_and_reaches_the_caller() -> None:
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)
        try:
            with pytest.raises(KeyError):
                Shelf().put("pear", fail=True)
        finally:
            source.detach()
        (event,) = cap.audit_events
        assert event["outcome"] == "error"
        assert event["error_type"] == "KeyError"


def test_after_fills_in_when_no_post_signal_ends_it() -> None:
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)
        post_put.receivers.clear()  # as if the library sent no post signal (muted)
        try:
            assert Shelf().put("plum") == "PLUM"
        finally:
            source.detach()
        (event,) = cap.audit_events
        assert event["outcome"] == "ok"
        assert event["result"] == "PLUM"


def test_build_returning_none_runs_the_call_untraced() -> None:
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)
        try:
            assert Shelf().put("untraced") == "UNTRACED"
        finally:
            source.detach()
        assert cap.audit_events == []
        assert list(cap.spans) == []


@pytest.mark.parametrize("track", [True, False])
def test_tracked_entry_is_in_flight_and_reaped_if_it_never_returns(track: bool) -> None:
    with capture(sources=["blinker"], orphan_timeout=0.05) as cap:
        assert cap.installation is not None
        installation = cap.installation
        source = ShelfSource(installation.engine, installation.options)
        source.patch(
            __name__,
            "Shelf.hold",
            source.entry("hold", lambda i, a, k: (FACTS.operation("shelf", "hold"), "k"), track=track),
        )
        seen: list[int] = []

        def during() -> None:
            seen.append(installation.in_flight())
            deadline = time.monotonic() + 5.0
            while track and installation.in_flight() and time.monotonic() < deadline:
                time.sleep(0.01)  # the reaper ends a call that takes longer than orphan_timeout

        try:
            Shelf().hold(during)
        finally:
            source.detach()
        assert seen == [1 if track else 0]
        span = cap.span("hold shelves")
        assert span.attributes is not None
        assert bool(span.attributes.get(semconv.SIGTRACE_ORPHANED)) is track
        (event,) = cap.audit_events
        assert event["outcome"] == ("unknown" if track else "ok")
        assert installation.in_flight() == 0


def test_async_entry_builds_when_the_call_runs() -> None:
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)
        try:
            call = Shelf().aput("fig")  # made, not yet run: nothing started
            assert list(cap.spans) == []
            assert asyncio.run(call) == "FIG"
            with pytest.raises(KeyError):
                asyncio.run(Shelf().aput("kiwi", fail=True))
        finally:
            source.detach()
        outcomes = sorted((e["pk"], e["outcome"]) for e in cap.audit_events)
        assert outcomes == [("fig", "ok"), ("kiwi", "error")]


def test_async_entry_ends_as_entry_does_and_restores_the_context() -> None:
    """The coroutine wrapper enters and exits the entry scope itself (not ``async with``): after each call, returned,
    raised, cancelled or with a failing ``after`` hook, the caller's context has no span and no scope of it."""
    left: list[tuple[bool, object]] = []

    async def calls(source: ShelfSource) -> None:
        def note() -> None:
            left.append((trace.get_current_span().get_span_context().is_valid, current_scope()))

        assert await Shelf().aput("fig", signals=False) == "FIG"  # no post signal: ``after`` ends it
        note()
        with pytest.raises(KeyError):
            await Shelf().aput("kiwi", fail=True)
        note()
        task = asyncio.ensure_future(Shelf().aput("plum", pause=10.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        note()
        source.broken = "after"
        with safety.strict(False):
            assert await Shelf().aput("lime", signals=False) == "LIME"
        note()

    before = safety.error_counts().get("source.shelf.aput.after", 0)
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)
        try:
            asyncio.run(calls(source))
        finally:
            source.detach()
        assert cap.installation is not None and cap.installation.in_flight() == 0
    assert left == [(False, None)] * 4
    events = {e["pk"]: e for e in cap.audit_events}
    assert [(pk, e["outcome"], e.get("result"), e.get("error_type")) for pk, e in sorted(events.items())] == [
        ("fig", "ok", "FIG", None),
        ("kiwi", "error", None, "KeyError"),
        ("lime", "ok", None, None),
        ("plum", "error", None, "CancelledError"),
    ]
    assert safety.error_counts()["source.shelf.aput.after"] == before + 1


def test_current_entry_is_the_entry_calls_own_operation() -> None:
    seen: list[Operation | None] = []
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)

        def on_pre(sender: Any, **kwargs: Any) -> None:
            seen.append(source.current_entry())

        pre_put.connect(on_pre)
        try:
            Shelf().put("kiwi")
            pre_put.send(Shelf(), item="outside")  # no entry call of this source runs here
        finally:
            pre_put.disconnect(on_pre)
            source.detach()
        inside, outside = seen
        assert inside is not None and inside.source == "shelf" and inside.pk == "kiwi"
        assert outside is None
        assert source.current_entry() is None


@pytest.mark.parametrize("broken", ["build", "receiver"])
def test_a_failing_hook_never_reaches_the_application(broken: str) -> None:
    before = safety.error_counts().get(f"source.shelf.{'put' if broken == 'build' else 'on_pre'}", 0)
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap, broken=broken)
        try:
            with safety.strict(False):
                assert Shelf().put("lime") == "LIME"
        finally:
            source.detach()
    kind = "source.shelf.put" if broken == "build" else "source.shelf.on_pre"
    assert safety.error_counts()[kind] == before + 1


def test_strict_mode_raises_what_the_net_would_hide() -> None:
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap, broken="receiver")
        try:
            with safety.strict(True), pytest.raises(RuntimeError, match="receiver broke"):
                Shelf().put("lime")
        finally:
            source.detach()


def test_async_receiver_stays_a_coroutine_function() -> None:
    with capture(sources=["blinker"]) as cap:
        assert cap.installation is not None
        source = ShelfSource(cap.installation.engine)
        seen: list[str] = []

        async def on_async(sender: Any, **kwargs: Any) -> None:
            seen.append(kwargs["item"])

        signal = blinker.Signal("async_put")
        source.connect(signal, on_async)
        try:
            asyncio.run(signal.send_async(None, item="nut"))
        finally:
            source.detach()
        assert seen == ["nut"]
        assert not signal.receivers


def test_detach_undoes_everything_newest_first() -> None:
    original_put = Shelf.__dict__["put"]
    with capture(sources=["blinker"]) as cap:
        source = _attached(cap)
        source.replace(Shelf, "touch", lambda self: "replaced")
        source.replace(Shelf, "extra", "added")
        assert Shelf().touch() == "replaced"
        assert Shelf.__dict__["put"] is not original_put
        source.detach()
    assert Shelf().touch() == "touched"
    assert not hasattr(Shelf, "extra")
    assert Shelf.__dict__["put"] is original_put
    assert not pre_put.receivers
    assert not post_put.receivers


def test_options_a_source_reads() -> None:
    with capture(sources=["blinker"], capture_values=True, audit_reads=True) as cap:
        assert cap.installation is not None
        source = ShelfSource(cap.installation.engine, cap.installation.options)
        assert source.capture_values is True
        assert source.audit_reads is True
    assert ShelfSource(cap.installation.engine).capture_values is False


# --- facts ---


def test_facts_cache_computes_once_per_key_and_lets_it_go() -> None:
    calls: list[type] = []

    def compute(cls: type) -> ModelFacts:
        calls.append(cls)
        return ModelFacts(cls.__name__, getattr(cls, "table", None))

    cache: FactsCache[type, ModelFacts] = FactsCache(compute, keep=lambda facts: facts.collection is not None)

    class Order:
        table = "orders"

    class Draft:  # no table yet: asked again
        pass

    assert cache(Order) is cache(Order)
    cache(Draft)
    cache(Draft)
    assert calls == [Order, Draft, Draft]
    calls.clear()
    # A key that takes no weak reference (a plain int) is computed each time, never an error.
    ints: FactsCache[object, str] = FactsCache(lambda key: (calls.append(type(key)), str(key))[1])
    assert ints(42) == ints(42) == "42"
    assert calls == [int, int]
    del Order
    gc.collect()
    assert len(cache) == 0


def test_model_facts_build_operations() -> None:
    op = ModelFacts("Order", "orders", "postgresql", "shop").operation("ormar", "save", pk="7", write=False)
    assert (op.source, op.name, op.model, op.collection, op.db_system, op.namespace) == (
        "ormar",
        "save",
        "Order",
        "orders",
        "postgresql",
        "shop",
    )
    assert (op.pk, op.write, op.span_name) == ("7", False, "save orders")


@pytest.mark.parametrize(
    ("url", "schema", "expected"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/test", None, ("postgresql", "test")),
        ("postgresql://u:secret@127.0.0.1/shop?sslmode=disable", "sales", ("postgresql", "shop|sales")),
        ("mysql+aiomysql://root@127.0.0.1:3306/test", None, ("mysql", "test")),
        ("sqlite+aiosqlite:///var/db/app.sqlite", None, ("sqlite", None)),
        ("sqlite://", None, ("sqlite", None)),
        ("postgresql://127.0.0.1", None, ("postgresql", None)),
        ("not a url", None, (None, None)),
        (None, None, (None, None)),
    ],
)
def test_database_of_url(url: str | None, schema: str | None, expected: tuple[str | None, str | None]) -> None:
    assert database_of_url(url, schema) == expected


class _BadText:
    def __str__(self) -> str:
        raise ValueError("no text")

    def __repr__(self) -> str:
        return "<bad>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (42, "42"),
        ("a-1", "a-1"),
        ((1, "b"), "1|b"),
        ([7], "7"),
        ((None, None), None),
        ({"tenant": 3, "id": 9}, "3|9"),
        ({"id": None}, None),
        (_BadText(), "<bad>"),
    ],
)
def test_pk_text(value: Any, expected: str | None) -> None:
    assert pk_text(value) == expected


def test_batch_audit_caps_the_pks() -> None:
    assert batch_audit([1, 2, None], rows=3) == {"rows": 3, "pks": ["1", "2"]}
    many = batch_audit(range(semconv.MAX_AUDIT_PKS + 5))
    assert len(many["pks"]) == semconv.MAX_AUDIT_PKS
    assert many["pks_truncated"] is True
    assert batch_audit(None, rows=0) == {"rows": 0}
    assert batch_audit([]) == {}


# --- declarations ---


def test_declarations_by_name_with_listeners() -> None:
    registry: Declarations[str] = Declarations()
    heard: list[tuple[str, bool]] = []
    stop = registry.listen(lambda item, added: heard.append((item, added)))
    registry.add("pair", ["pre_x", "post_x"])
    registry.add("single", ["pre_x"])
    assert registry.get("pre_x") == ("pair", "single")
    assert registry.get("post_x") == ("pair",)
    assert registry.get("nothing") == ()
    assert registry.remove("pair") is True
    assert registry.remove("pair") is False
    assert registry.get("post_x") == ()
    assert registry.all() == ("single",)
    stop()
    registry.add("late", ["y"])
    assert heard == [("pair", True), ("single", True), ("pair", False)]
    assert len(registry) == 2
