"""Django's TestCase (and pytest-django's ``db`` fixture) wraps each test in a transaction it rolls back.

sigtrace treats that transaction like autocommit, so a test sees the events of its writes at once, while the
``atomic()`` blocks inside the test behave as in production: held until the block ends, ``ok`` or
``rolled_back``. Both orders are covered: sigtrace installed before TestCase opens its transaction (as with
``INSTALLED_APPS``), and installed inside the test (``capture()`` in the test body).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from django.db import connections, transaction
from django.test import TestCase

from sigtrace import semconv
from sigtrace.testing import Capture, capture
from tests.sources.django.testapp.models import Author

OK, ROLLED_BACK = semconv.OUTCOME_OK, semconv.OUTCOME_ROLLED_BACK


class BoomError(Exception):
    pass


def by_name(cap: Capture) -> dict[str, str]:
    return {e["values"]["name"]: e["outcome"] for e in cap.audit_events if e["operation"] == "save"}


def behaves_as_in_production(cap: Capture, on_commit_capture: Callable[[], AbstractContextManager[Any]]) -> None:
    Author.objects.create(name="direct")
    assert by_name(cap) == {"direct": OK}  # at once: TestCase's own transaction counts as autocommit
    with transaction.atomic():
        Author.objects.create(name="in-block")
        assert "in-block" not in by_name(cap)  # held until the block ends, as in production
    assert by_name(cap)["in-block"] == OK
    with pytest.raises(BoomError), transaction.atomic():
        Author.objects.create(name="in-failed-block")
        raise BoomError
    assert by_name(cap)["in-failed-block"] == ROLLED_BACK
    with transaction.atomic():
        Author.objects.create(name="outer")
        with pytest.raises(BoomError), transaction.atomic():
            Author.objects.create(name="savepoint")
            raise BoomError
    assert by_name(cap) == {
        "direct": OK,
        "in-block": OK,
        "in-failed-block": ROLLED_BACK,
        "outer": OK,
        "savepoint": ROLLED_BACK,
    }
    with on_commit_capture() as callbacks, transaction.atomic():
        Author.objects.create(name="with-callback")
        transaction.on_commit(lambda: None)
    assert len(callbacks) == 1  # the application's own; sigtrace adds none
    assert set(Author.objects.values_list("name", flat=True)) == {"direct", "in-block", "outer", "with-callback"}
    assert cap.installation is not None and cap.installation.in_flight() == 0


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture(sources=["django"], capture_values=True) as cap:
        yield cap
    connections.close_all()


def test_pytest_django_db_fixture(cap: Capture, db: None, django_capture_on_commit_callbacks: Any) -> None:
    """``cap`` before ``db``: installed before the test's transaction (pytest-django opens one block per test)."""
    behaves_as_in_production(cap, django_capture_on_commit_callbacks)


class InstalledBeforeTheTestSavepoint(TestCase):
    """TestCase's class-level transaction, then sigtrace, then the test's savepoint (seen being entered)."""

    def _pre_setup(self) -> None:  # type: ignore[override]
        self.capturing = capture(sources=["django"], capture_values=True)
        self.cap = self.capturing.__enter__()
        super()._pre_setup()

    def _post_teardown(self) -> None:  # type: ignore[override]
        try:
            super()._post_teardown()
        finally:
            self.capturing.__exit__(None, None, None)

    def test_behaves_as_in_production(self) -> None:
        behaves_as_in_production(self.cap, self.captureOnCommitCallbacks)


class InstalledInsideTheTest(TestCase):
    """sigtrace installed after TestCase opened its transaction and the test's savepoint."""

    def test_behaves_as_in_production(self) -> None:
        with capture(sources=["django"], capture_values=True) as cap:
            behaves_as_in_production(cap, self.captureOnCommitCallbacks)
