"""Django: ``Model.save()`` of an existing row (one UPDATE) on SQLite, in a temporary file.

OTel variant: OpenTelemetry's DB-API instrumentation of ``sqlite3`` (what
opentelemetry-instrumentation-sqlite3 does: ``dbapi.wrap_connect`` on ``sqlite3.dbapi2.connect``,
which Django's SQLite backend calls), so every statement gets a span. Django's connection is
closed when a variant starts or ends, so the next statement reconnects through (or around) it.
SQLite runs with ``synchronous=OFF`` so that the disk's flush latency does not drown the figures.
"""

from __future__ import annotations

import argparse
import os
import sqlite3

import _harness as h


def setup_django(tmp: str) -> tuple[type, object]:
    """Django on SQLite in ``tmp`` with one table and one row: the model class and that row."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tmp, "bench.sqlite3"),
                "OPTIONS": {"init_command": "PRAGMA synchronous=OFF; PRAGMA journal_mode=WAL"},
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db import connection, models

    class Item(models.Model):
        name = models.CharField(max_length=100)
        count = models.IntegerField(default=0)

        class Meta:
            app_label = "contenttypes"  # an installed app: no app module needed for one model
            db_table = "items"

    with connection.schema_editor() as editor:
        editor.create_model(Item)
    return Item, Item.objects.create(name="first")


def build(args: argparse.Namespace, prov: h.Providers, tmp: str) -> h.Suite:
    model, item = setup_django(tmp)
    from django.db import connection
    from django.db.models import signals
    from django.db.models.signals import ModelSignal
    from opentelemetry.instrumentation import dbapi

    def op() -> None:
        item.save()  # type: ignore[attr-defined]

    def otel_setup() -> object | None:
        connection.close()
        dbapi.wrap_connect(
            "bench.sqlite3", sqlite3.dbapi2, "connect", "sqlite", {}, tracer_provider=prov.tracer_provider
        )

        def teardown() -> None:
            dbapi.unwrap_connect(sqlite3.dbapi2, "connect")
            connection.close()

        return teardown

    signal = ModelSignal(use_caching=True)
    signal.connect(lambda sender, **kw: None, sender=model, weak=False)

    def dispatch() -> None:
        signal.send(sender=model, instance=item, raw=False, using="default", update_fields=None)
        signal.send(sender=model, instance=item, raw=False, using="default", update_fields=None)

    variants = h.sigtrace_variants("django", op, prov, tmp)
    variants.append(h.Variant(h.OTEL, op, otel_setup))  # type: ignore[arg-type]

    variants.append(
        h.NaiveBridge(prov).variant(
            op, signals.pre_save, signals.post_save, lambda _sender, kw: id(kw.get("instance")), weak=False
        )
    )
    variants += h.floor_variants(prov, dispatch)
    return h.Suite(
        "django",
        "Model.save() (UPDATE, SQLite)",
        variants,
        notes=["OTel: opentelemetry-instrumentation-dbapi wrap_connect on sqlite3 (as -sqlite3 does)"],
        cleanup=connection.close,
    )


if __name__ == "__main__":
    h.main(build, ["django", "opentelemetry-instrumentation-dbapi"])
