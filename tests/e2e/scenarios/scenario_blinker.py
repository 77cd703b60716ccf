"""E2E scenario: an application's own blinker signals, configured only through OTEL_* variables.

Prints one JSON line telling the test what it did, so the test can check the receiver's view.

With ``E2E_EVERY_METRIC=1`` it also makes sigtrace export the metrics an ordinary run does not: an orphan (a pre
signal whose post never comes, ended by ``uninstall()``) and an internal error (a key function that raises,
swallowed with strict mode off for that one send), so every metric sigtrace has reaches the receiver.
"""

from __future__ import annotations

import json
import os
import uuid

import blinker
from opentelemetry import trace

import sigtrace
from sigtrace.core import safety

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
    if os.environ.get("E2E_EVERY_METRIC") == "1":
        pre.send("p-3", request=uuid.uuid4())  # no post: an orphan once uninstall() ends what is in flight
        with safety.strict(False):
            pre.send("p-4")  # no request: the key function raises inside sigtrace, the application goes on
if os.environ.get("E2E_EVERY_METRIC") == "1":
    sigtrace.uninstall()
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
