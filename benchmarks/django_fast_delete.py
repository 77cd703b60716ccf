"""What tracing deletes costs a Django application: queries (plain Django vs sigtrace) and time.

Django deletes rows nobody listens to with one ``DELETE ... WHERE`` (``Collector.can_fast_delete``).
Any ``pre_delete``/``post_delete`` receiver makes it load every row and send two signals per row
instead; sigtrace connects none (it reads what Django's collector did). This script measures, in one
run and in interleaved rounds:

* ``plain Django``        - no sigtrace: the fast path;
* ``sigtrace, no delete`` - sigtrace installed with ``trace_delete=False``;
* ``sigtrace``            - sigtrace with delete tracing (one span per delete call, one audit event per
  object Django loaded, one per model it deleted without loading rows);
* ``a no-op receiver``    - one empty pre_delete receiver and no sigtrace: what any delete receiver
  costs (the way sigtrace traced deletes before; for comparison);

on two workloads: a ``QuerySet.delete()`` of N rows nothing points at (fast), and a model ``delete()``
that cascades to children (collected: something points at them) and grandchildren (fast). Ratios are
against ``plain Django`` from the same rounds; the query count of each configuration is printed with
the plain count, and must be equal for sigtrace.

    python benchmarks/django_fast_delete.py [--rows 500] [--rounds 7]

SQLite in a temporary directory; spans go to an in-memory exporter, audit events to a list (export
cost is not the subject here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import django
from django.conf import settings

APP = "fastdelete_bench"


def setup_django() -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="sigtrace-bench-"))
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(folder / "bench.sqlite3"),
                "OPTIONS": {"init_command": "PRAGMA synchronous=OFF"},  # no disk flush latency in the figures
            }
        },
        INSTALLED_APPS=[],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
    )
    django.setup()
    from django.apps import AppConfig, apps
    from django.db import connection, models

    class Parent(models.Model):
        name = models.CharField(max_length=50)

        class Meta:
            app_label = APP

    class Child(models.Model):
        parent = models.ForeignKey(Parent, on_delete=models.CASCADE)
        n = models.IntegerField()

        class Meta:
            app_label = APP

    class Leaf(models.Model):
        child = models.ForeignKey(Child, on_delete=models.CASCADE)
        n = models.IntegerField()

        class Meta:
            app_label = APP

    config = AppConfig(__name__, sys.modules[__name__])
    config.label, config.apps, config.models = APP, apps, apps.all_models[APP]
    apps.app_configs[APP] = config
    apps.clear_cache()
    with connection.schema_editor() as editor:
        for model in (Parent, Child, Leaf):
            editor.create_model(model)
    return {"Parent": Parent, "Child": Child, "Leaf": Leaf}


@contextmanager
def sigtrace_installed(trace_delete: bool) -> Iterator[None]:
    from sigtrace.testing import capture

    previous = os.environ.get("SIGTRACE_DJANGO_TRACE_DELETE")
    os.environ["SIGTRACE_DJANGO_TRACE_DELETE"] = "1" if trace_delete else "0"
    try:
        with capture(sources=["django"]):
            yield
    finally:
        if previous is None:
            del os.environ["SIGTRACE_DJANGO_TRACE_DELETE"]
        else:
            os.environ["SIGTRACE_DJANGO_TRACE_DELETE"] = previous


@contextmanager
def noop_receiver() -> Iterator[None]:
    from django.db.models.signals import pre_delete

    def receiver(sender: Any, **kwargs: Any) -> None:
        return None

    pre_delete.connect(receiver, weak=False, dispatch_uid="bench-noop")
    try:
        yield
    finally:
        pre_delete.disconnect(dispatch_uid="bench-noop")


BASELINE = "plain Django"
CONFIGS: dict[str, Callable[[], Any]] = {
    BASELINE: nullcontext,
    "sigtrace, no delete": lambda: sigtrace_installed(False),
    "sigtrace": lambda: sigtrace_installed(True),
    "a no-op receiver": noop_receiver,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500, help="rows deleted per operation (default 500)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args()
    m = setup_django()
    parent_cls, child_cls, leaf_cls = m["Parent"], m["Child"], m["Leaf"]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def prepare_flat() -> Callable[[], Any]:
        parent = parent_cls.objects.create(name="p")
        child = child_cls.objects.create(parent=parent, n=0)
        leaf_cls.objects.bulk_create(leaf_cls(child=child, n=i) for i in range(args.rows))
        return lambda: leaf_cls.objects.filter(child=child).delete()

    def prepare_cascade() -> Callable[[], Any]:
        parent = parent_cls.objects.create(name="p")
        per_child = 25
        children = child_cls.objects.bulk_create(
            child_cls(parent=parent, n=i) for i in range(max(1, args.rows // per_child))
        )
        leaf_cls.objects.bulk_create(leaf_cls(child=c, n=i) for c in children for i in range(per_child))
        return lambda: parent.delete()

    workloads = {
        f"QuerySet.delete() of {args.rows} rows": prepare_flat,
        f"Model.delete() cascading to ~{args.rows} rows": prepare_cascade,
    }
    timings: dict[tuple[str, str], list[float]] = {(w, c): [] for w in workloads for c in CONFIGS}
    queries: dict[tuple[str, str], int] = {}
    deleted: dict[tuple[str, str], int] = {}
    for workload, prepare in workloads.items():  # one untimed pass: queries and rows per configuration
        for name, make in CONFIGS.items():
            delete = prepare()
            with make(), CaptureQueriesContext(connection) as captured:
                count, _ = delete()
            queries[(workload, name)] = len(captured.captured_queries)
            deleted[(workload, name)] = count
    for _ in range(args.rounds):
        for workload, prepare in workloads.items():
            for name, make in CONFIGS.items():  # interleaved: every configuration in every round
                delete = prepare()
                with make():
                    started = time.perf_counter()
                    delete()
                    timings[(workload, name)].append(time.perf_counter() - started)

    print(f"Django {django.get_version()}, SQLite, {args.rounds} interleaved rounds, median per delete\n")
    for workload in workloads:
        print(workload)
        base = statistics.median(timings[(workload, BASELINE)])
        plain_queries = queries[(workload, BASELINE)]
        for name in CONFIGS:
            median = statistics.median(timings[(workload, name)])
            count = queries[(workload, name)]
            same = "same as plain" if count == plain_queries else f"plain: {plain_queries}"
            print(
                f"  {name:<22} {median * 1000:9.2f} ms  x{median / base:6.2f}"
                f"  {count:5d} SQL queries ({same})  {deleted[(workload, name)]:5d} rows"
            )
        print()


if __name__ == "__main__":
    main()
