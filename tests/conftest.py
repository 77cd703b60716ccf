"""Shared test set-up: sigtrace's safety net raises instead of swallowing (strict mode) in our own suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("SIGTRACE_STRICT", "1")

import sigtrace

# The real OTLP receiver (rotel), as fixtures for every test package.
from tests.otlp_receiver import fresh_otlp_receiver, otlp_receiver  # noqa: F401


@pytest.fixture(autouse=True)
def _no_installation_leaks() -> Iterator[None]:
    """Every test starts and ends with sigtrace uninstalled."""
    sigtrace.uninstall()
    yield
    sigtrace.uninstall()
