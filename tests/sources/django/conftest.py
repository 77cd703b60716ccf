"""Django for this package only: settings module tests/sources/django/settings.py, set up at collection.

The rest of the suite runs in the same pytest process without Django settings: pytest-django does
nothing for it (no DJANGO_SETTINGS_MODULE at start-up, no ``django_db`` marks). Here Django is set
up when this conftest is imported (collection), and DJANGO_SETTINGS_MODULE is removed from the
environment again so that no subprocess of another package inherits it. pytest-django's own
fixtures (``django_db`` marks, test databases) then work for this package's tests.

Run alone: ``pytest tests/sources/django`` (the nox ``tests`` session runs it with the rest).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import django
import pytest

_previous = os.environ.get("DJANGO_SETTINGS_MODULE")
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.sources.django.settings"
try:
    django.setup()
finally:
    if _previous is None:
        del os.environ["DJANGO_SETTINGS_MODULE"]
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = _previous

from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402

ALIASES = ["default", "postgres"]


def skip_without(alias: str) -> None:
    if alias not in settings.DATABASES:
        pytest.skip(str(getattr(settings, "POSTGRES_SKIP_REASON", None) or f"database {alias!r} not configured"))


@pytest.fixture(params=ALIASES, ids=["sqlite", "postgresql"])
def alias(request: pytest.FixtureRequest) -> str:
    """The database a test runs on: SQLite, then PostgreSQL (skipped with the reason when absent)."""
    name: str = request.param
    skip_without(name)
    return name


def run_threads(threads: int, per_thread: int, work: Callable[[int, int], None]) -> None:
    """``threads`` real threads calling ``work(thread, i)`` ``per_thread`` times; each closes its connections."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def body(thread: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                work(thread, i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors[:3]


@pytest.fixture
def fresh_connections() -> Iterator[None]:
    """Close Django's connections before and after (driver instrumentation wraps only new connections)."""
    connections.close_all()
    yield
    connections.close_all()
