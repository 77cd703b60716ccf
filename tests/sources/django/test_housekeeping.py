"""Django's own bookkeeping (migrations, content types, permissions, sessions) stays out of the audit log.

``migrate`` used to print 28 audit lines (Migration rows, ContentType and Permission bulk creates), a login
audited its Session saves and deletes. Excluded by default: no span, no audit event, no metric;
``audit_framework_models`` brings them back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings

from sigtrace import semconv
from sigtrace.testing import Capture, capture

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
INCLUDED = {"django": {"audit_framework_models": True}}


def remigrate_sessions(alias: str) -> None:
    """Unapply and reapply the sessions app, with its content types and permissions created afresh."""
    call_command("migrate", "sessions", "zero", database=alias, verbosity=0)
    ContentType.objects.using(alias).filter(app_label="sessions").delete()  # and its permissions (cascade)
    ContentType.objects.clear_cache()
    call_command("migrate", "sessions", database=alias, verbosity=0)
    # It really happened: the rows sigtrace did not report are there.
    assert Permission.objects.using(alias).filter(content_type__app_label="sessions").count() == 4


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    ContentType.objects.clear_cache()
    connections.close_all()


def operations(cap: Capture) -> set[tuple[str, str]]:
    return {(e["model"], e["operation"]) for e in cap.audit_events}


def test_migrate_writes_no_audit_line(alias: str) -> None:
    with capture(sources=["django"]) as cap:
        remigrate_sessions(alias)
    assert operations(cap) == set()
    assert not cap.spans
    assert cap.metric_total(semconv.METRIC_OPERATIONS) == 0


def test_migrate_bookkeeping_audited_on_request(alias: str) -> None:
    with override_settings(SIGTRACE=INCLUDED), capture(sources=["django"]) as cap:
        remigrate_sessions(alias)
    assert {
        ("Migration", "delete"),  # unapplied
        ("ContentType", "delete"),
        ("Permission", "delete"),
        ("Migration", "save"),  # applied
        ("ContentType", "bulk_create"),
        ("Permission", "bulk_create"),
    } <= operations(cap)
    assert cap.metric_total(semconv.METRIC_OPERATIONS) >= 6  # one per operation (a delete audits each row)


def test_login_audits_the_user_not_the_session() -> None:
    User.objects.create_user("ada", password="secret-pw")
    with capture(sources=["django"]) as cap:
        client = Client()
        assert client.login(username="ada", password="secret-pw")
        client.logout()
    assert operations(cap) == {("User", "save")}  # last_login; the session rows are bookkeeping
    with override_settings(SIGTRACE=INCLUDED), capture(sources=["django"]) as cap:
        client = Client()
        assert client.login(username="ada", password="secret-pw")
        client.logout()
    assert {("Session", "save"), ("Session", "delete"), ("User", "save")} <= operations(cap)


def test_excluded_is_decided_by_the_class_not_the_name() -> None:
    from sigtrace.sources.django.framework import is_framework_model
    from tests.sources.django.testapp.models import Author

    assert is_framework_model(ContentType) and is_framework_model(Permission)
    assert not is_framework_model(User) and not is_framework_model(Author)

    class Session:  # a class of the same name elsewhere is not Django's
        class _meta:  # noqa: N801 - shaped like a model's options
            label = "sessions.Session"

    assert not is_framework_model(Session)
