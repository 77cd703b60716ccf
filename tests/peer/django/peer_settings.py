"""Settings for Django's own ``tests/runtests.py`` (``--settings=peer_settings``; tests/peer/run.py passes it).

SQLite: Django's own ``test_sqlite`` settings unchanged. PostgreSQL: the server on 127.0.0.1:5432 (user postgres),
with test database names of this run's own, so no other run's databases are touched. Both record each test's
outcome through :mod:`peer_runner`.
"""

from __future__ import annotations

import os

if os.environ.get("SIGTRACE_PEER_DB", "sqlite") == "postgresql":
    _RUN = os.environ.get("SIGTRACE_PEER_RUN", str(os.getpid()))

    def _database(alias: str) -> dict[str, object]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            "USER": "postgres",
            "NAME": "postgres",
            "TEST": {"NAME": f"sigtrace_peer_{_RUN}_{alias}"},
        }

    DATABASES = {"default": _database("default"), "other": _database("other")}
    SECRET_KEY = "django_tests_secret_key"
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
    USE_TZ = False
else:
    from test_sqlite import *  # noqa: F403  (Django's own, beside runtests.py)

TEST_RUNNER = "peer_runner.RecordingRunner"
