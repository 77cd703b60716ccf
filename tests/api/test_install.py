"""install()/uninstall(): idempotent, thread-safe, clear errors, providers never replaced."""

from __future__ import annotations

import threading
import uuid

import blinker
import pytest
from opentelemetry import trace

import sigtrace
from sigtrace._runtime import select_sources
from sigtrace.sources import REGISTRY, SourceSpec
from sigtrace.testing import capture

ns = blinker.Namespace()
pre_job, post_job = ns.signal("pre_job"), ns.signal("post_job")


@pytest.fixture(autouse=True)
def traced_job() -> object:
    pair = sigtrace.trace_signals(pre_job, post_job, key=lambda s, **kw: kw["rid"])
    yield pair
    pair.untrace()


def run_job() -> None:
    rid = uuid.uuid4()
    pre_job.send("worker", rid=rid)
    post_job.send("worker", rid=rid)


def test_second_install_returns_the_same_handle_and_attaches_nothing_twice() -> None:
    with capture(sources=["blinker"]) as cap:
        assert sigtrace.is_installed()
        receivers = len(pre_job.receivers)
        assert sigtrace.install() is cap.installation
        assert sigtrace.install(sources=["blinker"]) is cap.installation
        assert len(pre_job.receivers) == receivers == 1
        run_job()
        assert len(cap.spans_named("job")) == 1
        assert len(cap.audit_events) == 1
    assert not sigtrace.is_installed()


def test_concurrent_install_from_eight_threads_yields_one_installation() -> None:
    barrier = threading.Barrier(8)
    handles: list[object] = []

    def racer() -> None:
        barrier.wait()
        handles.append(sigtrace.install(sources=["blinker"], audit=False, metrics=False))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(handles) == 8
    assert len({id(handle) for handle in handles}) == 1
    assert len(pre_job.receivers) == 1 and len(post_job.receivers) == 1
    sigtrace.uninstall()
    assert not pre_job.receivers and not post_job.receivers


def test_uninstall_restores_everything() -> None:
    with capture(sources=["blinker"]) as cap:
        run_job()
    assert not pre_job.receivers and not post_job.receivers
    before = len(cap.spans)
    run_job()
    assert len(cap.spans) == before == 1
    sigtrace.uninstall()  # a second uninstall is a no-op


def test_unknown_source_is_a_clear_error() -> None:
    with pytest.raises(sigtrace.ConfigError, match=r"unknown source 'mongo'.*supported sources: .*blinker"):
        sigtrace.install(sources=["mongo"])
    assert not sigtrace.is_installed()


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        REGISTRY, "ghost", SourceSpec("ghost", "x:Y", "library_that_is_not_there", "ghost", "ghost", ">=1")
    )
    with pytest.raises(sigtrace.MissingLibraryError, match=r'pip install "sigtrace\[ghost\]"'):
        select_sources(("ghost",), frozenset())


def test_default_sources_are_the_importable_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        REGISTRY, "ghost", SourceSpec("ghost", "x:Y", "library_that_is_not_there", "ghost", "ghost", ">=1")
    )
    names = [spec.name for spec in select_sources(None, frozenset())]
    assert "blinker" in names and "ghost" not in names
    assert "blinker" not in [spec.name for spec in select_sources(None, frozenset({"blinker"}))]


def never() -> bool:
    """A ``SourceSpec.detect`` that declines (referenced as ``tests.api.test_install:never``)."""
    return False


def test_a_detected_source_may_decline_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    shy = SourceSpec(
        "shy",
        "sigtrace.sources.blinker:BlinkerSource",
        "blinker",
        "blinker",
        "blinker",
        ">=1",
        detect=f"{__name__}:never",
    )
    monkeypatch.setitem(REGISTRY, "shy", shy)
    assert "shy" not in [spec.name for spec in select_sources(None, frozenset())]
    assert [spec.name for spec in select_sources(("shy",), frozenset())] == ["shy"]


def test_application_provider_is_never_replaced() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    mine = TracerProvider()
    handle = sigtrace.install(sources=["blinker"], tracer_provider=mine, audit=False)
    try:
        assert handle.tracer_provider is mine
        assert not handle.providers.configured_here
    finally:
        sigtrace.uninstall()


def test_suppressed_instrumentation_is_not_traced() -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with capture(sources=["blinker"]) as cap:
        with suppress_instrumentation():
            run_job()
        assert cap.spans == ()
        assert cap.audit_events == []
        run_job()
        assert len(cap.spans) == 1


def test_exclusions() -> None:
    with capture(sources=["blinker"], exclude=["operation:job"]) as cap:
        run_job()
        assert cap.spans == () and cap.audit_events == []
    with capture(sources=["blinker"], exclude={"models": ["str"]}) as cap:
        run_job()
        assert cap.spans == ()


def test_actor_reaches_audit_events_in_threads_and_tasks() -> None:
    import asyncio

    with capture(sources=["blinker"]) as cap:
        results: dict[str, str | None] = {}

        def in_thread(name: str) -> None:
            with sigtrace.actor(name):
                run_job()

        threads = [threading.Thread(target=in_thread, args=(f"user{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        async def in_task(name: str) -> None:
            sigtrace.actor(name)  # plain setter: stays set in this task only
            await asyncio.sleep(0)
            run_job()
            results[name] = sigtrace.current_actor()

        async def main() -> None:
            await asyncio.gather(*(in_task(f"task{i}") for i in range(4)))

        asyncio.run(main())
        actors = sorted(str(e.get("actor")) for e in cap.audit_events)
        assert actors == sorted([f"user{i}" for i in range(4)] + [f"task{i}" for i in range(4)])
        assert results == {f"task{i}": f"task{i}" for i in range(4)}
        assert sigtrace.current_actor() is None


def test_actor_option_is_the_fallback() -> None:
    with capture(sources=["blinker"], actor=lambda: "service-account") as cap:
        run_job()
        with sigtrace.actor("alice"):
            run_job()
        assert [e["actor"] for e in cap.audit_events] == ["service-account", "alice"]


def test_span_parent_is_the_callers_span() -> None:
    with capture(sources=["blinker"]) as cap:
        tracer = cap.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            run_job()
        job = cap.span("job")
        assert job.parent is not None and job.parent.span_id == request.get_span_context().span_id
        assert trace.get_current_span() is trace.INVALID_SPAN


def _blinker_supporting(versions: str) -> SourceSpec:
    spec = REGISTRY["blinker"]
    return SourceSpec(spec.name, spec.target, spec.library, spec.extra, spec.distribution, versions)


def test_a_detected_library_outside_the_supported_range_is_not_attached_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(REGISTRY, "blinker", _blinker_supporting("<1.0"))
    installed = REGISTRY["blinker"].installed_version()
    assert installed is not None
    with caplog.at_level("WARNING", logger="sigtrace"):
        names = [spec.name for spec in select_sources(None, frozenset())]
    assert "blinker" not in names
    assert f"source 'blinker' supports blinker <1.0, but blinker {installed} is installed" in caplog.text
    assert "not attached" in caplog.text


def test_a_source_named_explicitly_outside_the_range_is_attached_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(REGISTRY, "blinker", _blinker_supporting("<1.0"))
    with caplog.at_level("WARNING", logger="sigtrace"):
        names = [spec.name for spec in select_sources(("blinker",), frozenset())]
    assert names == ["blinker"]
    assert "attached because it was named" in caplog.text


def test_every_source_supports_the_library_version_the_test_environment_installs() -> None:
    for spec in REGISTRY.values():
        if spec.installed_version() is not None:
            assert spec.unsupported() is None, spec.unsupported()
