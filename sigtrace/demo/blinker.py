"""Demo scenario of the generic blinker source: an app's own signals traced as operations."""

from __future__ import annotations

import uuid

import blinker
from opentelemetry import trace

import sigtrace

TITLE = "blinker: an application's own pre/post signals"
LIBRARY = "blinker"
#: Failures the scenario causes on purpose, by error type: the demo shows why beside them.
EXPECTED_ERRORS = {"PermissionError": "deliberate: publishing a draft the editor has not approved"}

signals = blinker.Namespace()
pre_publish = signals.signal("pre_publish")
post_publish = signals.signal("post_publish")
article_viewed = signals.signal("article_viewed")


class Article:
    def __init__(self, slug: str) -> None:
        self.slug = slug

    def publish(self, *, allowed: bool = True) -> None:
        request = uuid.uuid4()
        pre_publish.send(self, request=request, slug=self.slug)
        if not allowed:
            raise PermissionError(f"{self.slug}: the editor must approve first")
        post_publish.send(self, request=request, slug=self.slug)


def run() -> None:
    pair = sigtrace.trace_signals(
        pre_publish,
        post_publish,
        key=lambda sender, **kw: kw["request"],
        collection="articles",
        attributes=lambda sender, **kw: {"sigtrace.pk": kw["slug"]},
    )
    single = sigtrace.trace_signal(article_viewed, model="Article")
    tracer = trace.get_tracer("sigtrace.demo")
    try:
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /articles/publish"):
            Article("hello-world").publish()
            article_viewed.send(Article("hello-world"))
            try:
                with sigtrace.scope():  # the post signal never comes when publish() raises
                    Article("draft").publish(allowed=False)
            except PermissionError:
                pass
    finally:
        pair.untrace()
        single.untrace()
