"""Bugs the reliability suites found in the core, each pinned by a test that fails without its fix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import blinker
import pytest
import structlog

import sigtrace
from sigtrace._config import resolve_options
from sigtrace.core import safety
from sigtrace.testing import capture

pre, post = blinker.NamedSignal("pre_fix"), blinker.NamedSignal("post_fix")


@pytest.fixture(autouse=True)
def traced_pair() -> Iterator[Any]:
    pair = sigtrace.trace_signals(pre, post, key=lambda sender, **kw: kw["request"], collection="fixes")
    yield pair
    pair.untrace()


def test_a_stdlib_structlog_logger_is_accepted_as_audit_output() -> None:
    """structlog.stdlib.BoundLogger (and the lazy proxy get_logger returns) has info/bind but no ``msg``:
    the option check rejected what the audit sink itself accepts."""
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger)
    try:
        logger = structlog.get_logger("app")
        assert resolve_options({"audit": logger}).audit is logger
        assert resolve_options({"audit": structlog.stdlib.get_logger("app").bind()}).audit is not None
    finally:
        structlog.reset_defaults()


def test_uninstall_does_not_raise_when_the_audit_file_cannot_be_flushed() -> None:
    """/dev/full: every write fails with ENOSPC (the file is unbuffered: at the write, not at close); uninstall()
    once raised it from the close of a buffered file. The failures are counted, nothing reaches the caller."""
    with safety.strict(False), capture(sources=["blinker"], audit=True, audit_file="/dev/full") as cap:
        request = uuid.uuid4()
        pre.send("x", request=request)
        post.send("x", request=request)
        assert len(cap.spans_named("fix fixes")) == 1
    assert not sigtrace.is_installed()
    counts = safety.error_counts()
    assert counts.get("audit.output.jsonl", 0) + counts.get("audit.close", 0) >= 1


def test_the_json_lines_record_ignores_the_applications_structlog_wrapper_class(tmp_path: Any) -> None:
    """An application configuring structlog for stdlib logging (wrapper_class=stdlib.BoundLogger) broke the
    durable audit record: the writer inherited the wrapper class, which has no ``msg``."""
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger)
    audit_file = tmp_path / "audit.jsonl"
    try:
        with capture(sources=["blinker"], audit=True, audit_file=str(audit_file)):
            request = uuid.uuid4()
            pre.send("x", request=request)
            post.send("x", request=request)
    finally:
        structlog.reset_defaults()
    _header, line = audit_file.read_text().splitlines()
    assert '"outcome": "ok"' in line
