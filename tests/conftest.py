"""Shared test set-up: sigtrace's safety net raises instead of swallowing (strict mode) in our own suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry import context, trace

os.environ.setdefault("SIGTRACE_STRICT", "1")

import sigtrace

# The real OTLP receiver (rotel), as fixtures for every test package.
from tests.otlp_receiver import fresh_otlp_receiver, otlp_receiver  # noqa: F401


@pytest.fixture(autouse=True)
def _no_installation_leaks() -> Iterator[None]:
    """Every test starts and ends with sigtrace uninstalled and no span left current in its context."""
    sigtrace.uninstall()
    yield
    sigtrace.uninstall()
    leaked = trace.get_current_span()
    if leaked is not trace.INVALID_SPAN:
        context.attach(context.Context())  # do not let it poison the tests that follow
        pytest.fail(f"a span was left current after the test: {getattr(leaked, 'name', leaked)!r}")
