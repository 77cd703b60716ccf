"""``audit_diff``: with ``capture_values``, an update of a listed model carries ``{field: [old, new]}``.

The old values are those Django loaded (kept from ``Model.from_db``), refreshed by each save and by
``refresh_from_db``; never an extra query. Redaction masks both sides of a secret field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from sigtrace import ConfigError
from sigtrace.sinks.redaction import MASK
from sigtrace.testing import Capture, capture
from tests.sources.django.testapp.models import Author, Tag

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
LISTED = {"django": {"audit_diff": ["testapp.Author"]}}


@pytest.fixture
def cap() -> Iterator[Capture]:
    with override_settings(SIGTRACE=LISTED), capture(sources=["django"], capture_values=True) as cap:
        yield cap
    connections.close_all()


def last_save(cap: Capture) -> dict[str, Any]:
    saves = [e for e in cap.audit_events if e["operation"] == "save"]
    return saves[-1]


def test_update_of_a_loaded_object_carries_old_and_new(cap: Capture, alias: str) -> None:
    Author.objects.using(alias).create(name="ada", email="ada@old.example")
    created = last_save(cap)
    assert created["values"] == {"name": "ada", "email": "ada@old.example"} and "diff" not in created  # an insert
    author = Author.objects.using(alias).get(name="ada")
    author.email = "ada@new.example"
    author.save(using=alias)
    event = last_save(cap)
    assert event["values"] == {"email": ["ada@old.example", "ada@new.example"]}  # name did not change
    assert event["diff"] == ["email"]
    assert event["changed_fields"] == ["name", "email"]  # what the save wrote, as before
    author.email = "ada@newer.example"
    author.save(using=alias, update_fields=["email"])  # against what the first save wrote
    assert last_save(cap)["values"] == {"email": ["ada@new.example", "ada@newer.example"]}


def test_refresh_from_db_renews_the_old_values(cap: Capture, alias: str) -> None:
    author = Author.objects.using(alias).create(name="grace", email="first")
    Author.objects.using(alias).filter(pk=author.pk).update(email="second")  # behind the object's back
    author.refresh_from_db(using=alias)
    author.email = "third"
    author.save(using=alias)
    assert last_save(cap)["values"] == {"email": ["second", "third"]}


def test_unknown_old_values_are_reported_as_before(cap: Capture, alias: str) -> None:
    Author.objects.using(alias).create(name="deferred", email="kept")
    author = Author.objects.using(alias).only("name").get(name="deferred")
    author.email = "changed"
    author.save(using=alias, update_fields=["email"])  # email was never loaded: its old value is unknown
    event = last_save(cap)
    assert event["values"] == {"email": "changed"} and event["diff"] == []
    built = Author(pk=author.pk, name="deferred", email="built")  # never loaded: nothing to compare with
    built.save(using=alias)
    assert "diff" not in last_save(cap)


def test_unlisted_models_keep_nothing(cap: Capture, alias: str) -> None:
    Tag.objects.using(alias).create(label="red")
    tag = Tag.objects.using(alias).get(label="red")
    assert not hasattr(tag._state, "_sigtrace_loaded")
    tag.label = "blue"
    tag.save(using=alias)
    event = last_save(cap)
    assert event["values"] == {"label": "blue"} and "diff" not in event


def test_masked_values_stay_masked_on_both_sides(alias: str) -> None:
    with override_settings(SIGTRACE=LISTED), capture(sources=["django"], capture_values=True, redact=["email"]) as cap:
        Author.objects.using(alias).create(name="secretive", email="old-secret@example.org")
        author = Author.objects.using(alias).get(name="secretive")
        author.email = "new-secret@example.org"
        author.save(using=alias)
        event = last_save(cap)
        assert event["values"] == {"email": MASK} and event["diff"] == ["email"]
        assert "secret@example" not in json.dumps(cap.audit_events)
    connections.close_all()


def test_no_extra_query(alias: str) -> None:
    Author.objects.using(alias).create(name="counted", email="a")

    def load_change_save() -> int:
        with CaptureQueriesContext(connections[alias]) as queries:
            author = Author.objects.using(alias).get(name="counted")
            author.email = author.email + "a"
            author.save(using=alias)
            author.refresh_from_db(using=alias)
        return len(queries.captured_queries)

    plain = load_change_save()
    with override_settings(SIGTRACE=LISTED), capture(sources=["django"], capture_values=True) as cap:
        assert load_change_save() == plain
        assert last_save(cap)["diff"] == ["email"]
    connections.close_all()


def test_names_are_checked() -> None:
    from sigtrace.sources.django.source import django_options

    with pytest.raises(ConfigError, match=r"app_label\.Model"):
        django_options({"audit_diff": ["Author"]}, {})
    with pytest.raises(ConfigError, match="expected a list"):
        django_options({"audit_diff": "testapp.Author"}, {})
    assert django_options({}, {"SIGTRACE_DJANGO_AUDIT_DIFF": "testapp.Author, testapp.Tag"}).audit_diff == (
        "testapp.Author",
        "testapp.Tag",
    )
    with (
        override_settings(SIGTRACE={"django": {"audit_diff": ["testapp.Nobody"]}}),
        pytest.raises(ConfigError, match=r"testapp\.nobody"),
        capture(sources=["django"], capture_values=True),
    ):
        pass


def test_uninstall_puts_from_db_back(alias: str) -> None:
    from django.db.models import Model

    original = Model.__dict__["from_db"]
    with override_settings(SIGTRACE=LISTED), capture(sources=["django"], capture_values=True):
        assert Model.__dict__["from_db"] is not original
    assert Model.__dict__["from_db"] is original
    Tag.objects.using(alias).create(label="after")
    assert type(Tag.objects.using(alias).get(label="after")) is Tag
    connections.close_all()
