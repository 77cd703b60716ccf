"""The generic blinker source: the core contract, async signals, single signals, declarations."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import blinker
import pytest

import sigtrace
from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.contract import SourceContract

ns = blinker.Namespace()
pre_publish = ns.signal("pre_publish")
post_publish = ns.signal("post_publish")


class Article:
    """A stand-in for a library object that announces its own publishing through signals."""

    def publish(self, fail: bool = False) -> None:
        request = uuid.uuid4()
        pre_publish.send(self, request=request)
        if fail:
            raise PermissionError("not allowed")
        post_publish.send(self, request=request)


@pytest.fixture(scope="module", autouse=True)
def traced_pair() -> Any:
    pair = sigtrace.trace_signals(
        pre_publish, post_publish, key=lambda sender, **kw: kw["request"], collection="articles"
    )
    yield pair
    pair.untrace()


class TestBlinkerContract(SourceContract):
    source = "blinker"
    span_name = "publish articles"
    expected_failure: ClassVar[type[BaseException]] = PermissionError

    def succeed(self) -> None:
        Article().publish()

    def fail(self) -> type[BaseException]:
        with sigtrace.scope():
            Article().publish(fail=True)
        return PermissionError

    def orphan(self) -> None:
        pre_publish.send(Article(), request=uuid.uuid4())

    def assert_detached(self) -> None:
        assert not pre_publish.receivers
        assert not post_publish.receivers


def test_span_is_current_between_pre_and_post(sigtrace_capture: Capture) -> None:
    tracer = sigtrace_capture.tracer_provider.get_tracer("test")
    request = uuid.uuid4()
    with tracer.start_as_current_span("caller") as caller:
        pre_publish.send(Article(), request=request)
        with tracer.start_as_current_span("driver"):
            pass
        post_publish.send(Article(), request=request)
    driver = sigtrace_capture.span("driver")
    op = sigtrace_capture.span("publish articles")
    assert driver.parent is not None and driver.parent.span_id == op.get_span_context().span_id
    assert op.parent is not None and op.parent.span_id == caller.get_span_context().span_id


def test_async_signals() -> None:
    pre, post = blinker.NamedSignal("pre_sync"), blinker.NamedSignal("post_sync")
    pair = sigtrace.trace_signals(pre, post, key=lambda s, **kw: kw["rid"], asynchronous=True, collection="jobs")

    async def run() -> None:
        await pre.send_async("job", rid=1)
        await post.send_async("job", rid=1)

    try:
        with capture(sources=["blinker"]) as cap:
            asyncio.run(run())
            span = cap.span("sync jobs")
            assert span.attributes is not None and span.attributes[semconv.SIGTRACE_CORRELATION_ID] == "1"
    finally:
        pair.untrace()


def test_single_signal_is_a_span_event_and_an_audit_event() -> None:
    verified = blinker.NamedSignal("on_verify")
    single = sigtrace.trace_signal(verified, model="User")
    try:
        with capture(sources=["blinker"]) as cap:
            tracer = cap.tracer_provider.get_tracer("test")
            with sigtrace.actor("alice"), tracer.start_as_current_span("request"):
                verified.send("user-1")
            request = cap.span("request")
            assert [e.name for e in request.events] == ["on_verify"]
            (event,) = cap.audit_events
            assert event["operation"] == "on_verify" and event["actor"] == "alice"
            assert event["span_id"] == format(request.get_span_context().span_id, "016x")
    finally:
        single.untrace()
    assert not verified.receivers


def test_declared_after_install_is_connected_and_untrace_disconnects(sigtrace_capture: Capture) -> None:
    pre, post = blinker.NamedSignal("pre_late"), blinker.NamedSignal("post_late")
    pair = sigtrace.trace_signals(pre, post)
    assert len(pre.receivers) == 1
    pre.send("x")
    post.send("x")
    assert len(sigtrace_capture.spans_named("late")) == 1
    pair.untrace()
    assert not pre.receivers and not post.receivers


def test_receivers_are_strong() -> None:
    import gc

    pre, post = blinker.NamedSignal("pre_weak"), blinker.NamedSignal("post_weak")
    pair = sigtrace.trace_signals(pre, post)
    try:
        with capture(sources=["blinker"]) as cap:
            gc.collect()
            pre.send("x")
            post.send("x")
            assert len(cap.spans_named("weak")) == 1
    finally:
        pair.untrace()
