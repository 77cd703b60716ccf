"""sigtrace.testing: taking over a running installation, clear(), and what span() says when it fails."""

from __future__ import annotations

import uuid

import blinker
import pytest

import sigtrace
import sigtrace._runtime
from sigtrace import semconv
from sigtrace.testing import capture

ns = blinker.Namespace()
pre_pack, post_pack = ns.signal("pre_pack"), ns.signal("post_pack")


@pytest.fixture(autouse=True)
def traced_pack() -> object:
    pair = sigtrace.trace_signals(
        pre_pack, post_pack, key=lambda s, **kw: kw["rid"], name="pack", attributes=lambda s, **kw: {"box": kw["box"]}
    )
    yield pair
    pair.untrace()


def pack(box: int = 0) -> None:
    rid = uuid.uuid4()
    pre_pack.send("worker", rid=rid, box=box)
    post_pack.send("worker", rid=rid, box=box)


def test_capture_takes_over_a_running_installation_and_gives_it_back() -> None:
    running = sigtrace.install(sources=["blinker"], audit=False, service_name="shop", orphan_timeout=60)
    with capture(sources=["blinker"]) as cap:
        assert sigtrace._runtime.current() is cap.installation
        pack()
        assert len(cap.spans_named("pack")) == 1
        assert len(cap.audit_events) == 1
    back = sigtrace._runtime.current()
    assert back is not None and back is not running
    assert back.options == running.options and sorted(back.sources) == ["blinker"]
    assert len(pre_pack.receivers) == 1  # attached once again, not twice
    pack()
    assert len(cap.spans) == 1  # the capture's providers no longer receive anything


def test_a_bad_capture_option_leaves_the_running_installation_alone() -> None:
    running = sigtrace.install(sources=["blinker"], audit=False)
    with pytest.raises(sigtrace.ConfigError, match="orphan_timeout"), capture(orphan_timeout=-1):
        pass
    assert sigtrace._runtime.current() is running


def test_clear_clears_metric_points_too() -> None:
    with capture(sources=["blinker"]) as cap:
        pack()
        pack()
        assert cap.metric_total(semconv.METRIC_OPERATIONS) == 2
        assert cap.metric_total(semconv.METRIC_DURATION) == 2
        cap.clear()
        assert cap.metric_points(semconv.METRIC_OPERATIONS) == []
        assert cap.metric_points(semconv.METRIC_DURATION) == []
        assert cap.spans == () and cap.audit_events == []
        pack()
        assert cap.metric_total(semconv.METRIC_OPERATIONS) == 1
        assert cap.metric_total(semconv.METRIC_DURATION) == 1


def test_span_with_several_matches_lists_the_matches_only() -> None:
    with capture(sources=["blinker"]) as cap:
        pack(1)
        pack(2)
        with pytest.raises(AssertionError) as several:
            cap.span("pack")
        message = str(several.value)
        assert "found 2" in message and "'box': 1" in message and "'box': 2" in message
        with pytest.raises(AssertionError, match=r"found none; finished spans: \['pack'\]"):
            cap.span("unpack")
