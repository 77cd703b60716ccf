"""The recipe of docs/testing.md in a Django project that has sigtrace in INSTALLED_APPS.

Collected only by tests/sources/django/test_capture_installed.py, in its own pytest process
(``DJANGO_SETTINGS_MODULE=tests.sources.django.installed.settings``).
"""

from __future__ import annotations

import pytest

import sigtrace
from sigtrace.testing import Capture, capture
from tests.sources.django.testapp.models import Author

pytestmark = pytest.mark.django_db


def project_installation() -> sigtrace.Installation:
    installation = sigtrace._runtime.current()
    assert installation is not None, "the AppConfig did not install sigtrace"
    return installation


def test_fixture_captures_while_the_project_installed_sigtrace(sigtrace_capture: Capture) -> None:
    Author.objects.create(name="alice")
    assert sigtrace_capture.span("save testapp_author").status.is_ok
    (event,) = sigtrace_capture.audit_events
    assert event["operation"] == "save" and event["model"] == "Author"


def test_capture_gives_the_project_installation_back() -> None:
    before = project_installation()
    with capture(sources=["django"]) as cap:
        assert project_installation() is cap.installation
        Author.objects.create(name="bob")
        assert len(cap.spans_named("save testapp_author")) == 1
    after = project_installation()
    assert after is not before and after.options == before.options  # settings.SIGTRACE again
    assert sorted(after.sources) == sorted(before.sources)
    Author.objects.create(name="carol")  # traced by the project's installation again: into its audit file
    after.flush_audit()
