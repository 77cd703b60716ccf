"""What transaction tracking and ``audit_diff`` cost a Django application (sigtrace/sources/django/).

Three workloads, each timed in interleaved rounds against its own baseline (medians, one run):

* ``save() in autocommit``: N saves; sigtrace with its transaction hook vs. the same with the hook made a no-op
  (what finding the connection's transaction costs each write);
* ``N saves in one atomic()``: the held writes, resolved at COMMIT, vs. Django alone and vs. autocommit saves
  under sigtrace;
* ``loading N rows``: Django alone, sigtrace without ``audit_diff``, ``audit_diff`` naming another model (the
  ``from_db`` wrapper on every row), ``audit_diff`` naming this model (a dict of loaded values per row).

    python benchmarks/django_transactions.py [--rows 500] [--rounds 5]

SQLite in memory; spans to an in-memory exporter, audit events to a list.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import django
from django.conf import settings

APP = "transactions_bench"


def setup_django() -> tuple[Any, Any]:
    settings.configure(
        # In memory: a file's commit per autocommit save is disk noise larger than what is measured here.
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=[],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
    )
    django.setup()
    from django.apps import AppConfig, apps
    from django.db import connection, models

    class Row(models.Model):
        name = models.CharField(max_length=50)
        email = models.CharField(max_length=100)
        n = models.IntegerField()

        class Meta:
            app_label = APP

    class Other(models.Model):
        n = models.IntegerField()

        class Meta:
            app_label = APP

    config = AppConfig(__name__, sys.modules[__name__])
    config.label, config.apps, config.models = APP, apps, apps.all_models[APP]
    apps.app_configs[APP] = config
    apps.clear_cache()
    with connection.schema_editor() as editor:
        editor.create_model(Row)
        editor.create_model(Other)
    return Row, Other


@contextmanager
def sigtrace_installed(diff: str | None = None, hook: bool = True) -> Iterator[None]:
    from sigtrace.testing import capture

    previous = os.environ.get("SIGTRACE_DJANGO_AUDIT_DIFF")
    if diff:
        os.environ["SIGTRACE_DJANGO_AUDIT_DIFF"] = diff
    try:
        with capture(sources=["django"], capture_values=bool(diff)) as cap:
            if not hook:
                source: Any = cap.installation.sources["django"]  # type: ignore[union-attr]
                source._transactions.assign = lambda op, using: None
            yield
    finally:
        if previous is None:
            os.environ.pop("SIGTRACE_DJANGO_AUDIT_DIFF", None)
        else:
            os.environ["SIGTRACE_DJANGO_AUDIT_DIFF"] = previous


def measure(
    configs: dict[str, Callable[[], AbstractContextManager[Any]]], work: Callable[[], Any], rounds: int
) -> dict[str, float]:
    timings: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, make in configs.items():  # interleaved: every configuration in every round
            with make():
                started = time.perf_counter()
                work()
                timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def report(title: str, medians: dict[str, float], per: int) -> None:
    print(title)
    base = next(iter(medians.values()))
    for name, median in medians.items():
        print(f"  {name:<34} {median * 1e6 / per:8.1f} us per row  x{median / base:5.2f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    row_cls, _other = setup_django()
    from django.db import transaction

    label = f"{APP}.Row"

    def saves() -> None:
        for i in range(args.rows):
            row_cls(name="n", email="e", n=i).save()

    def saves_in_atomic() -> None:
        with transaction.atomic():
            saves()

    row_cls.objects.bulk_create(row_cls(name="n", email="e", n=i) for i in range(args.rows))

    def load() -> None:
        list(row_cls.objects.all()[: args.rows])

    print(f"Django {django.get_version()}, SQLite, {args.rounds} interleaved rounds, medians\n")
    report(
        f"save() in autocommit, {args.rows} rows",
        measure(
            {
                "sigtrace, transaction hook a no-op": lambda: sigtrace_installed(hook=False),
                "sigtrace": sigtrace_installed,
            },
            saves,
            args.rounds,
        ),
        args.rows,
    )
    report(
        f"{args.rows} saves in one atomic()",
        measure(
            {
                "Django alone": nullcontext,
                "sigtrace, hook a no-op (not held)": lambda: sigtrace_installed(hook=False),
                "sigtrace (held, resolved at COMMIT)": sigtrace_installed,
            },
            saves_in_atomic,
            args.rounds,
        ),
        args.rows,
    )
    report(
        f"loading {args.rows} rows",
        measure(
            {
                "Django alone": nullcontext,
                "sigtrace": sigtrace_installed,
                "audit_diff names another model": lambda: sigtrace_installed(f"{APP}.Other"),
                "audit_diff names this model": lambda: sigtrace_installed(label),
            },
            load,
            args.rounds,
        ),
        args.rows,
    )


if __name__ == "__main__":
    main()
