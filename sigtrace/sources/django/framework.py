"""Django's own bookkeeping models: untraced by default (``DjangoOptions.audit_framework_models`` turns them on).

``migrate`` writes a ``Migration`` row per migration and bulk-creates ``ContentType`` and ``Permission`` rows; a
login saves and deletes ``Session`` rows; the admin writes a ``LogEntry`` per change. None of it is the
application's data, and all of it flooded the audit log. The decision is made once per model class.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FRAMEWORK_MODELS", "is_framework_model"]

#: ``Model._meta.label`` of the bookkeeping models, for the classes Django itself defines (a model of your own
#: with the same label is not possible; a subclass or proxy in your app has your app's label and stays traced).
FRAMEWORK_MODELS = frozenset(
    {
        "migrations.Migration",  # django.db.migrations.recorder.MigrationRecorder.Migration
        "contenttypes.ContentType",
        "auth.Permission",
        "sessions.Session",
        "admin.LogEntry",
    }
)


def is_framework_model(cls: Any) -> bool:
    """True for Django's own bookkeeping model classes, and for the historical models migrations build of them.

    Django's own: defined in a ``django.`` module. Historical (``apps.get_model()`` inside ``migrate``, where
    ``post_migrate`` bulk-creates content types and permissions): module ``__fake__``, of an installed app that
    is Django's (a project's own app labelled ``sessions`` stays traced).
    """
    meta = getattr(cls, "_meta", None)
    if getattr(meta, "label", None) not in FRAMEWORK_MODELS:
        return False
    module = str(getattr(cls, "__module__", ""))
    if module.startswith("django."):
        return True
    if module != "__fake__":
        return False
    from django.apps import apps

    config = apps.app_configs.get(str(getattr(meta, "app_label", "")))
    return config is not None and str(config.name).startswith("django.")
