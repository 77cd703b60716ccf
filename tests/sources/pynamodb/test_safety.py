"""sigtrace never changes what PynamoDB does: its own failures stay inside, suppression is honoured."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from pynamodb.exceptions import PutError

from sigtrace.core import safety
from sigtrace.sources import pynamodb as source
from sigtrace.testing import capture
from tests.sources.pynamodb.helpers import new_id, signal_log
from tests.sources.pynamodb.models import Customer


def _boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("sigtrace bug")


@pytest.mark.parametrize(
    "target", ["_key_of", "_response_attributes", "_capacity_text", "_base_attributes", "_describe_failure"]
)
def test_a_broken_source_step_never_reaches_the_application(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.setattr(source, target, _boom)
    key = new_id()
    before = sum(safety.error_counts().values())
    with safety.strict(False), capture(sources=["pynamodb"]) as cap:
        Customer(key, name="Ada").save()
        assert Customer.get(key).name == "Ada"
        with pytest.raises(Customer.DoesNotExist):  # the application's own exceptions, unchanged
            Customer.get(new_id())
        with pytest.raises(PutError) as raised:
            Customer(key).save(condition=Customer.id.does_not_exist())
        assert raised.value.cause_response_code == "ConditionalCheckFailedException"
        assert cap.installation is not None and cap.installation.in_flight() == 0
    assert sum(safety.error_counts().values()) > before


def test_a_broken_engine_never_reaches_the_application(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_id()
    with safety.strict(False), capture(sources=["pynamodb"]) as cap, signal_log() as log:
        assert cap.installation is not None
        monkeypatch.setattr(cap.installation.engine, "begin", _boom)
        monkeypatch.setattr(cap.installation.engine, "entry", _boom)
        Customer(key).save()
        # the user's receivers still ran: sigtrace's never raised into blinker's send
        assert len(log.pre) == len(log.post) == 1


def test_suppress_instrumentation_is_honoured() -> None:
    with capture(sources=["pynamodb"]) as cap:
        with suppress_instrumentation():
            Customer(new_id()).save()
        assert cap.spans == ()
        assert cap.audit_events == []
        assert cap.installation is not None and cap.installation.in_flight() == 0
        Customer(new_id()).save()
        assert len(cap.spans) == 1
