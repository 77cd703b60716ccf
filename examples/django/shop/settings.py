"""Settings of the example shop. sigtrace is enabled by two lines: the app and the actor middleware."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("SHOP_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "sigtrace.django",  # installs sigtrace when Django is ready, with the SIGTRACE options below
    "orders",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "sigtrace.django.ActorMiddleware",  # request.user names the audit actor
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

# Options of sigtrace.install(); SIGTRACE_* and OTEL_* environment variables work too.
SIGTRACE = {
    "service_name": "shop",
    "audit_file": os.environ.get("SHOP_AUDIT_FILE"),  # None: the audit log goes to stderr
    "exclude": ["model:Session"],  # session writes are noise here
    "django": {
        # Delete tracing keeps Django's fast delete (no receiver); False would only leave deletes untraced.
        "trace_delete": True,
    },
}
