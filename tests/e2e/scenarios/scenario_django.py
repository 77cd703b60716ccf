"""E2E scenario: Django on SQLite (a file in a temporary directory), configured only through OTEL_* variables.

sigtrace is enabled the Django way, by ``"sigtrace.django"`` in ``INSTALLED_APPS`` (its AppConfig calls
``sigtrace.install()`` with no providers). opentelemetry-instrumentation-dbapi wraps ``sqlite3.dbapi2.connect``
without a provider, so its SQL spans go through the global provider sigtrace configured:
caller -> ``save e2e_players`` -> ``INSERT``. Prints one JSON line telling the test what it did.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from pathlib import Path

import django
from django.conf import settings
from opentelemetry import trace
from opentelemetry.instrumentation.dbapi import trace_integration

import sigtrace

folder = tempfile.TemporaryDirectory(prefix="sigtrace-e2e-django-")
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(Path(folder.name) / "e2e.sqlite3")}},
    INSTALLED_APPS=["django.contrib.contenttypes", "sigtrace.django"],
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    USE_TZ=True,
    SIGTRACE={"sources": ["django"]},
)
# Before the first connection: the integration wraps connections made after it.
trace_integration(sqlite3.dbapi2, "connect", "sqlite")  # type: ignore[arg-type]  # no provider: the global one
django.setup()  # SigtraceConfig.ready() installs sigtrace from the environment

from django.db import IntegrityError, connection, models  # noqa: E402


class Player(models.Model):  # type: ignore[misc]  # Django ships no type information
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        app_label = "e2e"
        db_table = "e2e_players"


assert sigtrace.is_installed(), "the AppConfig did not install sigtrace"
with connection.schema_editor() as editor:
    editor.create_model(Player)
tracer = trace.get_tracer("e2e.app")
with sigtrace.actor("alice"), tracer.start_as_current_span("POST /players"):
    Player.objects.create(name="ada")
    Player(name="bo").save()
    with contextlib.suppress(IntegrityError):
        Player.objects.create(name="ada")  # the unique constraint fails the insert
sigtrace.uninstall()
connection.close()
folder.cleanup()
print(
    json.dumps(
        {
            "caller": "POST /players",
            "operation": "save e2e_players",
            "driver": "INSERT",
            "ok": 2,
            "failed": 1,
            "error_type": "IntegrityError",
            "actor": "alice",
            "db_system": "sqlite",
        }
    )
)
