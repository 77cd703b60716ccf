"""Saves on a real PostgreSQL server, concurrent: throughput and latency per variant (issue 20, target 3).

    python benchmarks/bench_server.py                       # Django 1 and 8 threads; ormar, Edgy 1 and 100 tasks
    python benchmarks/bench_server.py --only django --rounds 2 --seconds 1
    nox -s bench-server

* Django: ``Model.save()`` (UPDATE of the worker's own row) from 1 and 8 threads, psycopg 3; OTel
  driver variant: opentelemetry-instrumentation-dbapi wrapping ``psycopg.connect`` (a span per
  statement, as -psycopg does; that package is not installed here).
* ormar ``await item.update(count=n)`` and Edgy ``item.count = n; await item.save()`` on asyncpg,
  1 and 100 concurrent tasks (each its own row; SQLAlchemy's pool of 20 connections); OTel driver
  variant: opentelemetry-instrumentation-sqlalchemy on the engine (``instrument(engine=...)``).
* Variants: baseline, OTel driver, sigtrace spans only, sigtrace full (audit to /dev/null). Each
  round runs every variant for ``--seconds`` after a short warm-up, in alternating order (A B C D,
  then D C B A); throughput is operations over wall time, latency each save's own.
  Reported per variant: throughput (median over rounds), p50 and p99 of all saves; against OTel
  the paired figures (per round: throughput ratio, p99 ratio; median over rounds).

The server is PostgreSQL on 127.0.0.1:5432 (user postgres); the database ``sigtrace_bench_perf`` is
created for the run (``synchronous_commit=off``, as the SQLite benchmarks run with ``synchronous=OFF``)
and dropped after it. Each library runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
DATABASE = "sigtrace_bench_perf"
LIBRARIES: dict[str, tuple[int, ...]] = {"django": (1, 8), "ormar": (1, 100), "edgy": (1, 100)}
VARIANTS = (h.BASELINE, h.OTEL, h.SPANS_ONLY, h.FULL)
#: sigtrace full's throughput >= OTel's, and its p99 <= this many times OTel's.
P99_LIMIT = 1.10
POOL = 20


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql)


def _installer(prov: h.Providers, source: str, **options: Any) -> Callable[[], Callable[[], None]]:
    def setup() -> Callable[[], None]:
        import sigtrace

        sigtrace.install(
            sources=[source], tracer_provider=prov.tracer_provider, meter_provider=prov.meter_provider, **options
        )
        return sigtrace.uninstall

    return setup


def _sigtrace_setups(prov: h.Providers, source: str) -> dict[str, Callable[[], Callable[[], None]]]:
    return {
        h.SPANS_ONLY: _installer(prov, source, audit=False, metrics=False),
        h.FULL: _installer(prov, source, audit=True, audit_file=os.devnull, metrics=True),
    }


# --- Django: threads ---


def django_suite(prov: h.Providers) -> tuple[dict[str, Any], Callable[[int, float], tuple[list[int], float]]]:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.postgresql", "NAME": DATABASE, "HOST": HOST, "USER": USER}
        },
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    import psycopg
    from django.db import connection, models
    from opentelemetry.instrumentation import dbapi

    class Item(models.Model):
        name = models.CharField(max_length=100)
        count = models.IntegerField(default=0)

        class Meta:
            app_label = "contenttypes"
            db_table = "items"

    with connection.schema_editor() as editor:
        editor.create_model(Item)
    rows = [Item.objects.create(name=f"row {i}") for i in range(max(LIBRARIES["django"]))]
    connection.close()

    def otel() -> Callable[[], None]:
        dbapi.wrap_connect("bench.psycopg", psycopg, "connect", "postgresql", {}, tracer_provider=prov.tracer_provider)
        return lambda: dbapi.unwrap_connect(psycopg, "connect")

    setups: dict[str, Any] = {h.BASELINE: None, h.OTEL: otel, **_sigtrace_setups(prov, "django")}

    def run(workers: int, seconds: float) -> tuple[list[int], float]:
        from django.db import connection as thread_connection

        latencies: list[list[int]] = [[] for _ in range(workers)]
        ready = threading.Barrier(workers + 1)
        go = threading.Event()
        stop = [0.0]

        def worker(i: int) -> None:
            row, out, clock = rows[i], latencies[i], time.perf_counter_ns
            row.save()  # this thread's connection, opened under the variant's instrumentation
            ready.wait()
            go.wait()
            deadline = stop[0]
            while time.perf_counter() < deadline:
                row.count += 1
                t0 = clock()
                row.save()
                out.append(clock() - t0)
            thread_connection.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        ready.wait()  # every worker connected
        started = time.perf_counter()
        stop[0] = started + seconds
        go.set()
        for t in threads:
            t.join()
        return [x for out in latencies for x in out], time.perf_counter() - started

    return setups, run


# --- ormar and Edgy: tasks ---


retries = [0]


def _async_runner(
    loop: asyncio.AbstractEventLoop, save: Callable[[Any, int], Any], rows: list[Any]
) -> Callable[[int, float], tuple[list[int], float]]:
    def run(workers: int, seconds: float) -> tuple[list[int], float]:
        async def main() -> tuple[list[int], float]:
            latencies: list[list[int]] = [[] for _ in range(workers)]
            deadline = time.perf_counter() + seconds

            async def worker(i: int) -> None:
                row, out, clock, n = rows[i], latencies[i], time.perf_counter_ns, 0
                while time.perf_counter() < deadline:
                    n += 1
                    t0 = clock()
                    while True:
                        try:
                            await save(row, n)
                            break
                        except Exception as exc:  # a serialization failure (SERIALIZABLE): retried, counted
                            if "serializ" not in str(exc).lower():
                                raise
                            retries[0] += 1
                    out.append(clock() - t0)

            started = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(workers)))
            return [x for out in latencies for x in out], time.perf_counter() - started

        return loop.run_until_complete(main())

    return run


def ormar_suite(prov: h.Providers) -> tuple[dict[str, Any], Callable[[int, float], tuple[list[int], float]]]:
    import ormar
    import sqlalchemy
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    url = f"postgresql+asyncpg://{USER}@{HOST}:{PORT}/{DATABASE}"
    database = ormar.DatabaseConnection(url, pool_size=POOL, max_overflow=0)
    metadata = sqlalchemy.MetaData()
    base = ormar.OrmarConfig(database=database, metadata=metadata)

    class Item(ormar.Model):
        ormar_config = base.copy(tablename="ormar_items")
        id: int = ormar.Integer(primary_key=True)
        name: str = ormar.String(max_length=100)
        count: int = ormar.Integer(default=0)

    async def prepare() -> list[Any]:
        await database.connect()
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        return [await Item(name=f"row {i}").save() for i in range(max(LIBRARIES["ormar"]))]

    rows = loop.run_until_complete(prepare())

    async def save(row: Any, n: int) -> None:
        await row.update(count=n)

    def otel() -> Callable[[], None]:
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine, tracer_provider=prov.tracer_provider)
        return SQLAlchemyInstrumentor().uninstrument

    setups: dict[str, Any] = {h.BASELINE: None, h.OTEL: otel, **_sigtrace_setups(prov, "ormar")}
    return setups, _async_runner(loop, save, rows)


def edgy_suite(prov: h.Providers) -> tuple[dict[str, Any], Callable[[int, float], tuple[list[int], float]]]:
    import edgy
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    database = edgy.Database(f"postgresql+asyncpg://{USER}@{HOST}:{PORT}/{DATABASE}", pool_size=POOL, max_overflow=0)
    registry = edgy.Registry(database=database)
    reg = registry

    class Item(edgy.Model):
        name: str = edgy.CharField(max_length=100)
        count: int = edgy.IntegerField(default=0)

        class Meta:
            registry = reg
            tablename = "edgy_items"

    async def prepare() -> list[Any]:
        await registry.__aenter__()
        await registry.create_all()
        return [await Item.query.create(name=f"row {i}") for i in range(max(LIBRARIES["edgy"]))]

    rows = loop.run_until_complete(prepare())

    async def save(row: Any, n: int) -> None:
        row.count = n
        await row.save()

    def otel() -> Callable[[], None]:
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine, tracer_provider=prov.tracer_provider)
        return SQLAlchemyInstrumentor().uninstrument

    setups: dict[str, Any] = {h.BASELINE: None, h.OTEL: otel, **_sigtrace_setups(prov, "edgy")}
    return setups, _async_runner(loop, save, rows)


SUITES = {"django": django_suite, "ormar": ormar_suite, "edgy": edgy_suite}


# --- measuring ---


def measure_library(library: str, rounds: int, seconds: float, warmup: float) -> dict[str, Any]:
    prov = h.providers()
    setups, run = SUITES[library](prov)
    out: dict[str, Any] = {}
    for workers in LIBRARIES[library]:
        per_round: dict[str, list[tuple[list[int], float]]] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            for name in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                setup = setups[name]
                teardown = setup() if setup is not None else None
                try:
                    run(workers, warmup)
                    per_round[name].append(run(workers, seconds))
                finally:
                    if teardown is not None:
                        teardown()
            print(f"  [server {library} x{workers}] round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        out[str(workers)] = summarize(per_round)
        out[str(workers)]["retries"] = retries[0]
        retries[0] = 0
    return out


def summarize(per_round: dict[str, list[tuple[list[int], float]]]) -> dict[str, Any]:
    def p(values: list[int], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1000.0 if ordered else float("nan")

    variants: dict[str, Any] = {}
    for name, runs in per_round.items():
        pooled = [x for lat, _ in runs for x in lat]
        variants[name] = {
            "throughput": statistics.median(len(lat) / elapsed for lat, elapsed in runs),
            "throughput_by_round": [len(lat) / elapsed for lat, elapsed in runs],
            "p50_us": p(pooled, 0.50),
            "p99_us": p(pooled, 0.99),
            "p99_by_round_us": [p(lat, 0.99) for lat, _ in runs],
            "operations": len(pooled),
        }
    otel = variants[h.OTEL]
    for v in variants.values():
        v["throughput_vs_otel"] = statistics.median(
            a / b for a, b in zip(v["throughput_by_round"], otel["throughput_by_round"], strict=True)
        )
        v["p99_vs_otel"] = statistics.median(
            a / b for a, b in zip(v["p99_by_round_us"], otel["p99_by_round_us"], strict=True)
        )
        v["throughput_vs_baseline"] = statistics.median(
            a / b for a, b in zip(v["throughput_by_round"], variants[h.BASELINE]["throughput_by_round"], strict=True)
        )
    return {"variants": variants}


# --- output ---

UNITS = {"django": "thread", "ormar": "task", "edgy": "task"}


def _workers(library: str, workers: str) -> str:
    return f"{workers} {UNITS[library]}{'' if workers == '1' else 's'}"


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Real server (PostgreSQL on {HOST}; {result['rounds']} rounds of {result['seconds']:g} s per variant, "
        "interleaved): saves/s (median over rounds), p50 / p99 µs of every save; vs OTel = paired per-round ratios.",
        "",
        "| library | concurrency | variant | saves/s | vs baseline | vs OTel | p50 µs | p99 µs | p99 vs OTel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for library, by_workers in result["libraries"].items():
        if "skipped" in by_workers:
            lines.append(f"| {library} | skipped: {by_workers['skipped']} ||||||||")
            continue
        for workers, data in by_workers.items():
            for name, v in data["variants"].items():
                lines.append(
                    f"| {library} | {_workers(library, workers)} | {name} | {v['throughput']:,.0f} "
                    f"| {v['throughput_vs_baseline']:.2f} | {v['throughput_vs_otel']:.2f} | {v['p50_us']:,.0f} "
                    f"| {v['p99_us']:,.0f} | {v['p99_vs_otel']:.2f} |"
                )
    return "\n".join(lines)


def target_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for library, by_workers in result["libraries"].items():
        if "skipped" in by_workers:
            rows.append(
                {
                    "target": "3. real server",
                    "row": library,
                    "figure": "-",
                    "goal": "-",
                    "met": None,
                    "detail": by_workers["skipped"],
                }
            )
            continue
        for workers, data in by_workers.items():
            full = data["variants"][h.FULL]
            otel = data["variants"][h.OTEL]
            ratio, p99 = full["throughput_vs_otel"], full["p99_vs_otel"]
            rows.append(
                {
                    "target": "3. real server",
                    "row": f"{library}, {_workers(library, workers)}",
                    "figure": f"throughput {ratio:.2f}, p99 {p99:.2f}",
                    "goal": f">= 1.00, <= {P99_LIMIT:.2f} (vs OTel)",
                    "met": ratio >= 1.0 and p99 <= P99_LIMIT,
                    "detail": f"full {full['throughput']:,.0f}/s, OTel {otel['throughput']:,.0f}/s, "
                    f"baseline {data['variants'][h.BASELINE]['throughput']:,.0f}/s",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(LIBRARIES), help="libraries to run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.5, help="timed seconds per variant and round")
    parser.add_argument("--warmup", type=float, default=0.3, help="untimed seconds before each")
    parser.add_argument("--library", help=argparse.SUPPRESS)  # one library, in this process (internal)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.library:
        data = measure_library(args.library, args.rounds, args.seconds, args.warmup)
        Path(args.json).write_text(json.dumps(data), encoding="utf-8")
        return
    result: dict[str, Any] = {"rounds": args.rounds, "seconds": args.seconds, "libraries": {}}
    _admin(f"DROP DATABASE IF EXISTS {DATABASE}")
    _admin(f"CREATE DATABASE {DATABASE}")
    # As the SQLite benchmarks run with synchronous=OFF: a commit does not wait for the WAL's fsync, or
    # the disk's flush latency is all one sees. Index scans for the UPDATEs by primary key: Edgy saves
    # in SERIALIZABLE transactions, and sequential scans of a small table make concurrent saves of
    # different rows conflict (a save that fails so is retried and counted: "retries").
    _admin(f"ALTER DATABASE {DATABASE} SET synchronous_commit = off")
    _admin(f"ALTER DATABASE {DATABASE} SET enable_seqscan = off")
    try:
        with tempfile.TemporaryDirectory(prefix="sigtrace-bench-server-") as tmp:
            for library in args.only or list(LIBRARIES):
                path = os.path.join(tmp, f"{library}.json")
                cmd = [sys.executable, __file__, "--library", library, "--json", path]
                cmd += ["--rounds", str(args.rounds), "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
                try:
                    subprocess.run(cmd, check=True)
                    result["libraries"][library] = json.loads(Path(path).read_text(encoding="utf-8"))
                except (subprocess.CalledProcessError, OSError) as exc:
                    result["libraries"][library] = {"skipped": f"failed: {exc}"}
    finally:
        _admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    result["machine"] = h.machine()
    result["versions"] = h.library_versions(
        ["sigtrace", "opentelemetry-sdk", "django", "psycopg", "ormar", "edgy", "asyncpg", "sqlalchemy"]
    )
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    else:
        print(text)
    print(table(result), file=sys.stderr)


if __name__ == "__main__":
    main()
