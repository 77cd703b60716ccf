"""A Django project that installs sigtrace the documented way (``INSTALLED_APPS``), for
tests/sources/django/test_capture_installed.py: its own process, SQLite in ``CAPTURE_DB_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

_DIR = Path(os.environ["CAPTURE_DB_DIR"])

SECRET_KEY = "sigtrace-tests-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "sigtrace.django",
    "tests.sources.django.testapp",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_DIR / "db.sqlite3"),
        "TEST": {"NAME": str(_DIR / "test.sqlite3")},
    }
}
SIGTRACE = {"service_name": "project", "audit_file": str(_DIR / "audit.jsonl"), "exclude": ["model:Tag"]}
