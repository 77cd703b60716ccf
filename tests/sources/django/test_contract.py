"""The core contract suite on Django: saves on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import wrapt
from django.db import IntegrityError, connections
from django.db.models import Model, QuerySet, signals
from django.db.models.deletion import Collector
from django.db.models.sql import subqueries

from tests.contract import SourceContract
from tests.sources.django.conftest import run_threads, skip_without
from tests.sources.django.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


class TestDjangoContract(SourceContract):
    source = "django"
    span_name = "save testapp_author"
    expected_failure: ClassVar[type[BaseException]] = IntegrityError
    alias: ClassVar[str] = "default"
    _orphans: ClassVar[list[Any]] = []

    @pytest.fixture(autouse=True)
    def _database(self) -> None:
        skip_without(self.alias)

    def succeed(self) -> None:
        Author(name=uuid.uuid4().hex).save(using=self.alias)

    def fail(self) -> type[BaseException]:
        Author(name=None).save(using=self.alias)  # NOT NULL violated: IntegrityError, no post_save
        return IntegrityError

    def orphan(self) -> None:
        """A save that does not return (held inside save_base by a pre_save receiver until the test is over)."""
        release, inside = threading.Event(), threading.Event()

        def hold(sender: Any, instance: Any, **_: Any) -> None:
            if instance.name == "orphan":
                inside.set()
                release.wait(30)

        def save() -> None:
            try:
                Author(name="orphan").save(using=self.alias)
            finally:
                connections.close_all()

        signals.pre_save.connect(hold, sender=Author, weak=False)
        thread = threading.Thread(target=save, daemon=True)
        thread.start()
        assert inside.wait(10)
        self._orphans.append((release, thread, hold))

    @pytest.fixture(autouse=True)
    def _release_orphans(self) -> Iterator[None]:
        yield
        while self._orphans:
            release, thread, hold = self._orphans.pop()
            release.set()
            thread.join(10)
            signals.pre_save.disconnect(hold, sender=Author)

    def run_concurrently(self, threads: int, per_thread: int) -> int:
        run_threads(threads, per_thread, lambda _t, _i: self.succeed())
        return threads * per_thread

    def assert_detached(self) -> None:
        for signal in (
            signals.pre_save,
            signals.post_save,
            signals.pre_delete,
            signals.post_delete,
            signals.m2m_changed,
        ):
            assert not signal.has_listeners(Author), signal
        assert not isinstance(Model.__dict__["save_base"], wrapt.FunctionWrapper)
        assert not isinstance(Model.__dict__["delete"], wrapt.FunctionWrapper)
        for method in ("delete", "update", "bulk_create", "bulk_update"):
            assert not isinstance(QuerySet.__dict__[method], wrapt.FunctionWrapper), method
        assert not isinstance(Collector.__dict__["delete"], wrapt.FunctionWrapper)
        for query_class in (subqueries.InsertQuery, subqueries.UpdateQuery, subqueries.DeleteQuery):
            assert "get_compiler" not in query_class.__dict__, query_class  # inherited from Query again
        connections.close_all()


class TestDjangoContractPostgres(TestDjangoContract):
    alias = "postgres"
