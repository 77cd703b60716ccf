"""A newsroom whose articles announce publishing through their own blinker signals, traced by sigtrace.

Run: ``python examples/blinker/app.py [audit.jsonl]`` - prints the spans, writes the audit log as JSON lines.
"""

from __future__ import annotations

import sys
import uuid

import blinker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import sigtrace

newsroom = blinker.Namespace()
pre_publish = newsroom.signal("pre_publish")
post_publish = newsroom.signal("post_publish")


class Article:
    def __init__(self, slug: str, approved: bool) -> None:
        self.slug = slug
        self.approved = approved

    def publish(self) -> None:
        request_id = uuid.uuid4()
        pre_publish.send(self, request_id=request_id)
        if not self.approved:
            raise PermissionError(f"{self.slug} is not approved")
        post_publish.send(self, request_id=request_id)


def main(audit_file: str | None) -> int:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    sigtrace.trace_signals(pre_publish, post_publish, key=lambda article, **kw: kw["request_id"], collection="articles")
    sigtrace.install(service_name="newsroom", tracer_provider=provider, audit_file=audit_file)
    published = 0
    with sigtrace.actor("editor-1"):
        for article in (Article("launch", True), Article("leak", False), Article("recap", True)):
            try:
                with sigtrace.scope():  # the post signal never comes when publish() raises
                    article.publish()
                published += 1
            except PermissionError as exc:
                print(f"refused: {exc}", file=sys.stderr)
    sigtrace.uninstall()
    print(f"published {published}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else None))
