"""E2E scenario: an application's own blinker signals, configured only through OTEL_* variables.

Prints one JSON line telling the test what it did, so the test can check the receiver's view.
"""

from __future__ import annotations

import json
import uuid

import blinker
from opentelemetry import trace

import sigtrace

pre, post = blinker.NamedSignal("pre_ship"), blinker.NamedSignal("post_ship")


def ship(parcel: str, *, fail: bool = False) -> None:
    request = uuid.uuid4()
    pre.send(parcel, request=request)
    with trace.get_tracer("e2e.driver").start_as_current_span("driver call"):
        if fail:
            raise TimeoutError("carrier did not answer")
    post.send(parcel, request=request)


sigtrace.trace_signals(pre, post, key=lambda sender, **kw: kw["request"], collection="parcels")
sigtrace.install(sources=["blinker"])
tracer = trace.get_tracer("e2e.app")
with sigtrace.actor("alice"), tracer.start_as_current_span("request"):
    ship("p-1")
    try:
        with sigtrace.scope():
            ship("p-2", fail=True)
    except TimeoutError:
        pass
print(
    json.dumps(
        {
            "caller": "request",
            "operation": "ship parcels",
            "driver": "driver call",
            "ok": 1,
            "failed": 1,
            "error_type": "TimeoutError",
            "actor": "alice",
        }
    )
)
