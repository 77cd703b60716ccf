"""Django settings of sigtrace's Django tests only (loaded by this package's conftest, not by the rest of the suite).

SQLite: a file in a private temporary directory (threads share it; no clash with a parallel run).
PostgreSQL: alias ``postgres`` -> database ``sigtrace_django`` at 127.0.0.1:5432 (pytest-django creates and
drops ``test_sigtrace_django_<pid>``), present only when the server answers; tests on it skip otherwise.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_TMP = Path(tempfile.mkdtemp(prefix="sigtrace-django-"))
atexit.register(shutil.rmtree, _TMP, True)

SECRET_KEY = "sigtrace-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "tests.sources.django.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "sigtrace.django.ActorMiddleware",
]
ROOT_URLCONF = "tests.sources.django.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_TMP / "db.sqlite3"),
        # Threads write at once: wait for the lock, and take it at the start of each transaction.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA synchronous=OFF; PRAGMA journal_mode=WAL;",
        },
        "TEST": {"NAME": str(_TMP / "test.sqlite3")},
    }
}

POSTGRES_DB = "sigtrace_django"
POSTGRES_SKIP_REASON: str | None = None


def _probe_postgres() -> str | None:
    """Create this package's own database if the server answers; the reason to skip otherwise."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3, autocommit=True
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_DB,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{POSTGRES_DB}"')
    except Exception as exc:  # noqa: BLE001 - any failure means: no server for these tests
        return f"PostgreSQL at 127.0.0.1:5432 is not available: {exc}"
    return None


if os.environ.get("SIGTRACE_DJANGO_NO_POSTGRES"):
    POSTGRES_SKIP_REASON = "SIGTRACE_DJANGO_NO_POSTGRES is set"
else:
    POSTGRES_SKIP_REASON = _probe_postgres()
if POSTGRES_SKIP_REASON is None:
    DATABASES["postgres"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": POSTGRES_DB,
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        # One test database per pytest process: parallel runs (other helpers, CI) never share one.
        "TEST": {"NAME": f"test_{POSTGRES_DB}_{os.getpid()}"},
    }
