"""Instructions per operation, counted by valgrind's callgrind: the figures a shared machine cannot move.

    python benchmarks/instructions.py                       # every source, every variant (about 10 minutes)
    python benchmarks/instructions.py --only django blinker
    python benchmarks/instructions.py --only django --variants "sigtrace full" "naive bridge"
    python benchmarks/instructions.py --only edgy --repeat 3   # the median of three counts per variant
    python benchmarks/instructions.py --table results.json  # print the table of a saved run

Timed figures on a 2-vCPU machine shared with other work move by tens of percent between runs (see
docs/performance.md); CPU instructions do not: the same code, inputs and environment execute the same
instructions whatever else the machine does. Each variant of a source module (``bench_<source>.py``, the
same ``build()`` the timed suite uses) runs in its own process under ``valgrind --tool=callgrind`` with
counting off; after its set-up and a warm-up, the process turns counting on (``callgrind_control -i on``),
runs ``--ops`` operations, and turns it off. Instructions per operation = counted / ops. The ratios are those
of the timed targets (full / naive bridge, spans only / OTel driver), of added instructions.

What instructions do not show: cache misses, lock waits, system calls and I/O (the database's own time, a
network round trip): a proxy for CPU cost in this process, not a latency. Every thread of the process is
counted (aiosqlite's worker thread too), the moto server of PynamoDB is not (another process).
``PYTHONHASHSEED=0`` for the same dict layouts in every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402  (the measured checkout first on sys.path)

#: source -> operations counted per variant (after 100 uncounted): enough that the toggles' own few
#: thousand instructions are below 0.1% of the count.
OPS = {"blinker": 3000, "django": 400, "ormar": 200, "edgy": 200, "pynamodb": 100, "signalbus": 200, "sqlalchemy": 300}
WARMUP = 100
#: The variant name that asks a child for the list of variants instead.
LIST = "(list)"
COUNTED = re.compile(r"Collected : (\d+)")


def _toggle(on: bool) -> None:
    command = ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())]
    subprocess.run(command, capture_output=True, check=True)


def child(source: str, variant_name: str, ops: int, warmup: int) -> None:
    """In the process under callgrind: build the suite, set the variant up, warm up, count ``ops`` operations."""
    module = importlib.import_module(f"bench_{source}")
    prov = h.providers()
    with tempfile.TemporaryDirectory(prefix="sigtrace-icount-") as tmp:
        suite: h.Suite = module.build(argparse.Namespace(rounds=1, per_round=ops, warmup=warmup), prov, tmp)
        try:
            if variant_name == LIST:
                print(json.dumps([[v.name, v.kind] for v in suite.variants]))
                return
            (variant,) = [v for v in suite.variants if v.name == variant_name]
            teardown = variant.setup() if variant.setup is not None else None
            try:
                run_counted(suite, variant, ops, warmup)
            finally:
                if teardown is not None:
                    teardown()
        finally:
            if suite.cleanup is not None:
                suite.cleanup()


def run_counted(suite: h.Suite, variant: h.Variant, ops: int, warmup: int) -> None:
    """Run ``variant``'s operation ``warmup`` times uncounted, then ``ops`` times with counting on."""
    if variant.is_async:
        assert suite.loop is not None
        suite.loop.run_until_complete(_run_async(variant.op, ops, warmup))
        return
    op = variant.op
    for _ in range(warmup):
        op()
    _toggle(True)
    for _ in range(ops):
        op()
    _toggle(False)


async def _run_async(op: Any, ops: int, warmup: int) -> None:
    for _ in range(warmup):
        await op()
    _toggle(True)
    for _ in range(ops):
        await op()
    _toggle(False)


def _python_for(source: str, signalbus_python: str) -> str | None:
    if source == "signalbus":
        return os.path.abspath(signalbus_python) if Path(signalbus_python).exists() else None
    return sys.executable


def variants_of(source: str, python: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        [python, __file__, "--child", source, LIST], capture_output=True, text=True, check=True, cwd=h.ROOT
    ).stdout
    return [(name, kind) for name, kind in json.loads(out.strip().splitlines()[-1])]


def count(source: str, variant: str, python: str, ops: int) -> float:
    """Instructions per operation of one variant (its own process under callgrind)."""
    command = [python, __file__, "--child", source, variant, "--ops", str(ops)]
    return callgrind_count(command, ops, f"{source} / {variant}")


def callgrind_count(command: list[str], ops: int, what: str) -> float:
    """Instructions per operation of ``command`` (a child that counts ``ops`` operations with ``_toggle``)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory(prefix="sigtrace-callgrind-") as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/callgrind.out"]
        done = subprocess.run([*cmd, *command], capture_output=True, text=True, env=env, cwd=h.ROOT)
    found = COUNTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{what}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return int(found[-1]) / ops


def summarize(source: str, counts: dict[str, float], kinds: dict[str, str]) -> dict[str, Any]:
    """Per variant: instructions per operation, added over the baseline; the targets' ratios of added instructions."""
    base = counts.get(h.BASELINE)
    variants: dict[str, Any] = {}
    for name, per_op in counts.items():
        entry: dict[str, Any] = {"kind": kinds[name], "instructions": per_op}
        if base is not None and kinds[name] == "variant":
            entry["added"] = per_op - base
        variants[name] = entry
    out: dict[str, Any] = {"source": source, "ops": OPS.get(source), "variants": variants}
    for ours, reference, key in (
        (h.FULL, h.NAIVE, "full_over_naive"),
        (h.SPANS_ONLY, h.OTEL, "spans_over_otel"),
        (h.FULL, h.MATCHED, "full_over_matched"),
    ):
        a, b = variants.get(ours, {}).get("added"), variants.get(reference, {}).get("added")
        if a is not None and b:
            out[key] = a / b
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "Instructions per operation (callgrind; thousands), added = over the baseline; "
        "full / naive and spans only / OTel = ratios of added instructions (target: <= 1.00).",
        "",
        "| source | baseline | full: added | spans only: added | audit to file: added | OTel driver: added "
        "| naive bridge: added | full / naive | spans only / OTel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def k(v: dict[str, Any] | None, key: str = "added") -> str:
        return "-" if v is None or v.get(key) is None else f"{v[key] / 1000:,.1f}"

    def ratio(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if value <= 1.0 else f"**{value:.2f}**"

    for r in results["sources"]:
        if "skipped" in r:
            lines.append(f"| {r['source']} | skipped: {r['skipped']} ||||||||")
            continue
        v = r["variants"]
        lines.append(
            f"| {r['source']} | {k(v.get(h.BASELINE), 'instructions')} | {k(v.get(h.FULL))} | {k(v.get(h.SPANS_ONLY))} "
            f"| {k(v.get(h.AUDIT_FILE))} | {k(v.get(h.OTEL))} | {k(v.get(h.NAIVE))} "
            f"| {ratio(r.get('full_over_naive'))} | {ratio(r.get('spans_over_otel'))} |"
        )
    import run  # the sources each target names, as the timed suite has them

    lines += ["", "Targets (issue 20), by instructions:", "", "| target | row | figure | met |", "|---|---|---|---|"]
    by_source = {r["source"]: r for r in results["sources"] if "skipped" not in r}
    for target, sources, key in (
        ("1. full <= naive bridge", run.NAIVE_TARGET, "full_over_naive"),
        ("2. spans only <= OTel driver", run.OTEL_TARGET, "spans_over_otel"),
    ):
        for source in sources:
            value = by_source.get(source, {}).get(key)
            if value is not None:
                lines.append(f"| {target} | {source} | {value:.2f} | {'met' if value <= 1.0 else '**not met**'} |")
    matched = [r for r in results["sources"] if r.get("full_over_matched") is not None]
    if matched:
        lines += [
            "",
            "Against the naive bridge making sigtrace's reports (two spans and durations per unit of work; not a",
            "target: the figure for the decision in docs/performance.md, What is left):",
            "",
            "| source | naive bridge, sigtrace's reports: added | full / that bridge |",
            "|---|---|---|",
        ]
        for r in matched:
            lines.append(f"| {r['source']} | {k(r['variants'].get(h.MATCHED))} | {ratio(r['full_over_matched'])} |")
    floors = [r for r in results["sources"] if "skipped" not in r and h.FLOOR_SPAN in r["variants"]]
    if floors:
        lines += ["", "Floor pieces (thousands of instructions per call):", ""]
        lines.append("| source | SDK span | histogram record | structlog JSON line | 2 dispatches |")
        lines.append("|---|---|---|---|---|")
        for r in floors:
            v = r["variants"]
            cells = " | ".join(k(v.get(name), "instructions") for name in h.FLOOR)
            lines.append(f"| {r['source']} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="sources to count (default: all)")
    parser.add_argument("--variants", nargs="*", help="variant names to count (default: all)")
    parser.add_argument("--ops", type=int, help="operations counted per variant (default: per source)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="counts per variant, each its own process; the median is reported"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes under valgrind at once")
    parser.add_argument("--signalbus-python", default=str(h.ROOT / ".venv-signalbus" / "bin" / "python"))
    parser.add_argument("--output", help="JSON file (default: benchmarks/results/<UTC time>-instructions.json)")
    parser.add_argument("--table", help="print the table of a saved run and exit")
    parser.add_argument("--plot", nargs="+", metavar=("RESULTS", "PNG"), help="plot a saved run (to PNG) and exit")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.ops or OPS[args.child[0]], WARMUP)
        return
    if args.table:
        print(table(json.loads(Path(args.table).read_text(encoding="utf-8"))))
        return
    if args.plot:
        import run

        source = Path(args.plot[0])
        target = Path(args.plot[1]) if len(args.plot) > 1 else source.with_suffix(".png")
        results = json.loads(source.read_text(encoding="utf-8"))
        ylabel = "added thousands of instructions per operation"
        print(run.plot(results, target, key="added", scale=1 / 1000, ylabel=ylabel))
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind (with callgrind_control) is needed: apt-get install valgrind")
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "machine": h.machine()}
    results["command"] = " ".join(sys.argv)
    jobs: list[tuple[str, str, str, int]] = []
    kinds: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    for source in args.only or list(OPS):
        python = _python_for(source, args.signalbus_python)
        if python is None:
            skipped[source] = f"no interpreter for it ({args.signalbus_python})"
            continue
        try:
            listed = variants_of(source, python)
        except subprocess.CalledProcessError as exc:
            skipped[source] = f"its suite did not build: {exc.stderr.strip().splitlines()[-1:]}"
            continue
        kinds[source] = dict(listed)
        for name, _kind in listed:
            if args.variants is None or name in args.variants or name == h.BASELINE:
                jobs.append((source, name, python, args.ops or OPS[source]))
    counts: dict[str, dict[str, float]] = {source: {} for source in kinds}
    spreads: dict[str, dict[str, list[float]]] = {source: {} for source in kinds}
    repeat = max(1, args.repeat)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # Repeats interleaved (every variant once, then again): what the machine does to one count, it does
        # to the others alike. The median per variant: one count thrown off (a garbage collection landing
        # inside the counted operations, aiosqlite's thread) does not move it.
        futures = [(job, pool.submit(count, *job)) for _ in range(repeat) for job in jobs]
        for (source, name, _python, _ops), future in futures:
            spreads[source].setdefault(name, []).append(future.result())
            print(f"  [{source}] {name}: {spreads[source][name][-1]:,.0f} instructions/op", file=sys.stderr, flush=True)
    for source, by_name in spreads.items():
        counts[source] = {name: statistics.median(values) for name, values in by_name.items()}
    results["sources"] = [summarize(source, counts[source], kinds[source]) for source in kinds]
    if repeat > 1:
        for entry in results["sources"]:
            for name, variant in entry["variants"].items():
                variant["counts"] = spreads[entry["source"]][name]
    results["sources"] += [{"source": source, "skipped": why} for source, why in skipped.items()]
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    import run  # the results' git state, as the timed suite records it

    results["git"] = run.git_state()
    output = Path(args.output or h.ROOT / "benchmarks" / "results" / f"{started:%Y%m%dT%H%M%SZ}-instructions.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(table(results))
    print(f"\nsaved {output}")


if __name__ == "__main__":
    main()
