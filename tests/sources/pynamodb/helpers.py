"""Helpers of the PynamoDB tests."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from pynamodb.signals import post_dynamodb_send, pre_dynamodb_send


def new_id() -> str:
    return uuid.uuid4().hex


def attrs(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None
    return dict(span.attributes)


@dataclass
class SignalLog:
    """What PynamoDB itself sent, recorded by the test's own receivers (the library's view)."""

    pre: list[tuple[str, str | None, uuid.UUID, int]] = field(default_factory=list)
    post: list[tuple[str, str | None, uuid.UUID, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_pre(self, sender: Any, **kw: Any) -> None:
        with self.lock:
            self.pre.append((kw["operation_name"], kw["table_name"], kw["req_uuid"], threading.get_ident()))

    def on_post(self, sender: Any, **kw: Any) -> None:
        with self.lock:
            self.post.append((kw["operation_name"], kw["table_name"], kw["req_uuid"], threading.get_ident()))


@contextmanager
def signal_log() -> Iterator[SignalLog]:
    log = SignalLog()
    pre_dynamodb_send.connect(log.on_pre, weak=False)
    post_dynamodb_send.connect(log.on_post, weak=False)
    try:
        yield log
    finally:
        pre_dynamodb_send.disconnect(log.on_pre)
        post_dynamodb_send.disconnect(log.on_post)


class EndThreads(SpanProcessor):
    """Records which thread ended each span (a failure must end in the caller's thread, not the reaper's)."""

    def __init__(self) -> None:
        self.ended: dict[str, int] = {}

    def on_end(self, span: ReadableSpan) -> None:
        self.ended[span.name + "#" + format(span.context.span_id if span.context else 0, "016x")] = (
            threading.get_ident()
        )

    def thread_of(self, span: ReadableSpan) -> int:
        assert span.context is not None
        return self.ended[span.name + "#" + format(span.context.span_id, "016x")]


def reset(cap: Any) -> None:
    """Forget what was captured so far (reading the audit events first lets any queued ones arrive)."""
    _ = cap.audit_events
    cap.clear()
