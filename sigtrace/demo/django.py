"""Demo scenario of the Django source: saves, a cascade delete, many-to-many, a bulk update, an IntegrityError.

Runs on SQLite in a temporary directory when Django is not configured yet (``sigtrace demo``). In a
process whose Django settings exist already, it uses their ``default`` database: it creates its own
two tables there and drops them again at the end.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from opentelemetry import trace

import sigtrace

TITLE = "Django: model signals (save, delete, m2m) and bulk operations as spans and audit events"
LIBRARY = "django"
#: Failures the scenario causes on purpose, by error type: the demo shows why beside them.
EXPECTED_ERRORS = {"IntegrityError": "deliberate: a second customer with the same e-mail"}

_APP_LABEL = "sigtrace_demo"
_models: dict[str, Any] = {}


def _configure() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        folder = Path(tempfile.mkdtemp(prefix="sigtrace-demo-django-"))
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / "demo.sqlite3")}},
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
            USE_TZ=True,
        )
    django.setup()


def _define_models() -> dict[str, Any]:
    """Two models of an app that is not installed: declared once per process, tables made by hand."""
    if _models:
        return _models
    from django.db import models

    class Customer(models.Model):  # type: ignore[misc]  # Django ships no type information
        email = models.CharField(max_length=100, unique=True)
        name = models.CharField(max_length=100)

        class Meta:
            app_label = _APP_LABEL

    class Label(models.Model):  # type: ignore[misc]  # Django ships no type information
        text = models.CharField(max_length=30)

        class Meta:
            app_label = _APP_LABEL

    class Order(models.Model):  # type: ignore[misc]  # Django ships no type information
        customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
        total = models.IntegerField()
        status = models.CharField(max_length=20, default="new")
        labels = models.ManyToManyField(Label)

        class Meta:
            app_label = _APP_LABEL

    _models.update(Customer=Customer, Label=Label, Order=Order)
    return _models


def _register_app() -> Any:
    """Make the demo's models known to the app registry while it runs (cascades follow reverse relations
    only between registered models), without adding anything to INSTALLED_APPS."""
    import sys

    from django.apps import AppConfig, apps

    if _APP_LABEL in apps.app_configs:
        return None
    config = AppConfig(__name__, sys.modules[__name__])
    config.label = _APP_LABEL
    config.apps = apps
    config.models = apps.all_models[_APP_LABEL]
    apps.app_configs[_APP_LABEL] = config
    apps.clear_cache()
    return config


def _unregister_app(config: Any) -> None:
    from django.apps import apps

    if config is not None and apps.app_configs.get(_APP_LABEL) is config:
        del apps.app_configs[_APP_LABEL]
        apps.clear_cache()


def run() -> None:
    from django.db import IntegrityError, connection

    _configure()
    m = _define_models()
    config = _register_app()
    customer_cls, label_cls, order_cls = m["Customer"], m["Label"], m["Order"]
    tables = [customer_cls, label_cls, order_cls]  # (create_model makes the m2m table too)
    with connection.schema_editor() as editor:
        for model in tables:
            editor.create_model(model)
    tracer = trace.get_tracer("sigtrace.demo")
    try:
        with sigtrace.actor("alice"), tracer.start_as_current_span("POST /checkout"):
            ada = customer_cls.objects.create(email="ada@example.org", name="Ada")
            rush = label_cls.objects.create(text="rush")
            order = order_cls.objects.create(customer=ada, total=42)
            order.labels.add(rush)
            order.status = "paid"
            order.save(update_fields=["status"])
            order_cls.objects.bulk_create([order_cls(customer=ada, total=n) for n in (5, 7)])
            order_cls.objects.filter(customer=ada, status="new").update(status="queued")
            # The duplicate e-mail: an ERROR span at once, outcome "error" in the audit log.
            with contextlib.suppress(IntegrityError):
                customer_cls.objects.create(email="ada@example.org", name="Ada again")
        with sigtrace.actor("bob"), tracer.start_as_current_span("DELETE /customers/ada"):
            ada.delete()  # cascades to her three orders and their label rows
    finally:
        with connection.schema_editor() as editor:
            for model in reversed(tables):
                editor.delete_model(model)
        _unregister_app(config)
