"""Run the whole benchmark suite, print the table, save the figures as JSON under benchmarks/results/.

    python benchmarks/run.py                 # everything (about 25 minutes on 2 vCPUs)
    python benchmarks/run.py --quick         # a smoke run: fewer rounds, 100,000 ops for memory
    python benchmarks/run.py --only django ormar --pinned all
    python benchmarks/run.py --only audit    # durability settings and verify speed (bench_audit.py)
    nox -s bench                             # the same, in a fresh environment

Each source module runs in its own process (sigtrace installs once per process; Django's settings
too). Inside it every variant is timed in the same rounds, interleaved (see _harness.py). The async
ORMs (ormar, Edgy) are also run pinned to one CPU with ``taskset -c 0``: aiosqlite's worker thread
makes cross-CPU wake-ups dominate their timings otherwise. Flask-SignalBus needs its own stack
(Flask<3, SQLAlchemy 1.4): its module runs with ``--signalbus-python`` (default: .venv-signalbus).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402  (puts the measured checkout, h.CODE, first on sys.path)

#: source -> (library module, timed operations per round, pinned by default)
SOURCES: dict[str, tuple[str, int, bool]] = {
    "blinker": ("blinker", 1000, False),
    "django": ("django", 300, False),
    "ormar": ("ormar", 150, True),
    "edgy": ("edgy", 150, True),
    "pynamodb": ("pynamodb", 200, False),
    "signalbus": ("flask_signalbus", 300, False),
    "sqlalchemy": ("sqlalchemy", 300, False),
}
TARGET_IN_FLIGHT = 1.10
TARGET_MODELS = 1.10
TARGET_RSS = 0.05
#: Sources whose row must show sigtrace full <= the naive bridge (paired ratio of added costs).
NAIVE_TARGET = ("blinker", "django", "ormar", "edgy", "pynamodb", "signalbus", "sqlalchemy")
#: Sources whose row must show sigtrace spans only <= OpenTelemetry's driver-level instrumentation.
OTEL_TARGET = ("django", "ormar", "edgy", "pynamodb")


def _registered(source: str) -> bool:
    from sigtrace.sources import REGISTRY

    return source in REGISTRY


def _python_for(source: str, args: argparse.Namespace) -> str | None:
    if source == "signalbus":
        python = args.signalbus_python
        # Absolute (the benchmark runs from the repository root) but not resolved: a venv's python is a symlink.
        return os.path.abspath(python) if python and Path(python).exists() else None
    return sys.executable


def _run(cmd: list[str], pinned: bool) -> None:
    if pinned:
        if shutil.which("taskset") is None:
            raise RuntimeError("taskset not found (util-linux)")
        cmd = ["taskset", "-c", "0", *cmd]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def run_source(source: str, args: argparse.Namespace, pinned: bool, tmp: str) -> dict[str, Any]:
    library, per_round, _ = SOURCES[source]
    script = HERE / f"bench_{source}.py"
    python = _python_for(source, args)
    if not script.exists():
        return {"source": source, "skipped": f"no benchmarks/bench_{source}.py yet"}
    if python is None:
        return {"source": source, "skipped": f"no interpreter with {library} ({args.signalbus_python})"}
    if python == sys.executable:
        if not _registered(source):
            return {"source": source, "skipped": f"sigtrace has no {source} source yet"}
        if importlib.util.find_spec(library) is None:
            return {"source": source, "skipped": f"{library} is not installed"}
    out = Path(tmp) / f"{source}{'-pinned' if pinned else ''}.json"  # names assemble() reads
    per_round = max(10, int(per_round * args.scale))
    cmd = [python, str(script), "--rounds", str(args.rounds), "--per-round", str(per_round), "--json", str(out)]
    try:
        _run(cmd, pinned)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        return {"source": source, "skipped": f"failed: {exc}"}
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result["pinned"] = pinned
    return result


def run_module(name: str, extra: list[str], out: str, tmp: str) -> dict[str, Any]:
    path = Path(tmp) / f"{out}.json"
    _run([sys.executable, str(HERE / f"bench_{name}.py"), *extra, "--json", str(path)], False)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def assemble(directory: Path) -> dict[str, Any]:
    """Results from the per-module JSON files a run leaves in its work directory (``--keep``)."""
    results: dict[str, Any] = {"machine": h.machine(), "command": f"assembled from {directory}", "sources": []}
    for source in SOURCES:
        for pinned in (False, True):
            path = directory / f"{source}{'-pinned' if pinned else ''}.json"
            if path.exists():
                data = json.loads(path.read_text(encoding="utf-8"))
                data["pinned"] = pinned
                results["sources"].append(data)
    for name in ("scaling", "audit", "server"):
        if (directory / f"{name}.json").exists():
            results[name] = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    memory = {}
    for key, name in MEMORY_RUNS.items():
        if (directory / f"{name}.json").exists():
            memory[key] = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    if memory:
        results["memory"] = memory
    return results


MEMORY_RUNS = {"flat (RSS)": "memory-rss", "flat (tracemalloc)": "memory-tm", "orphan flood": "memory-orphans"}


# --- the table ---


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _added(v: dict[str, Any] | None) -> str:
    if v is None:
        return "-"
    xf = v.get("added_over_floor")
    return f"{_f(v['added_us'])} ({_f(xf, 2)} F)" if xf is not None else _f(v["added_us"])


def table(results: dict[str, Any]) -> str:
    if not results["sources"]:  # a run of the other modules only (e.g. --only server)
        return _other_tables(results)
    lines = [
        "Per operation, µs: median of all timed operations (p99); added = paired per-round median difference "
        "to the baseline, and in units of the floor F measured in the same rounds; full / naive and "
        "spans only / OTel = paired per-round ratios of added costs (median over rounds).",
        "",
        "| source | operation | baseline (p99) | F | sigtrace full: added | spans only: added | audit to file: added "
        "| OTel driver: added | naive bridge: added | full / naive | spans only / OTel |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["sources"]:
        name = r["source"] + (" (pinned)" if r.get("pinned") else "")
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} ||||||||||")
            continue
        v = r["variants"]
        base = v[h.BASELINE]
        full = v.get(h.FULL)
        lines.append(
            f"| {name} | {r['operation']} | {_f(base['median_us'])} ({_f(base['p99_us'], 0)}) | {_f(r['floor_us'])} "
            f"| {_added(full)} | {_added(v.get(h.SPANS_ONLY))} | {_added(v.get(h.AUDIT_FILE))} "
            f"| {_added(v.get(h.OTEL))} | {_added(v.get(h.NAIVE))} | {_f(full and full.get('over_naive'), 2)} "
            f"| {_f(v.get(h.SPANS_ONLY, {}).get('over_otel'), 2)} |"
        )
    lines += ["", "Floor pieces (median µs, same rounds):", ""]
    lines.append("| source | SDK span | histogram record | structlog JSON line | 2 dispatches | F |")
    lines.append("|---|---|---|---|---|---|")
    for r in results["sources"]:
        if "skipped" in r:
            continue
        v = r["variants"]
        name = r["source"] + (" (pinned)" if r.get("pinned") else "")
        lines.append(
            f"| {name} | {_f(v[h.FLOOR_SPAN]['median_us'])} | {_f(v[h.FLOOR_HISTOGRAM]['median_us'])} "
            f"| {_f(v[h.FLOOR_AUDIT]['median_us'])} | {_f(v[h.FLOOR_DISPATCH]['median_us'])} | {_f(r['floor_us'])} |"
        )
    return "\n".join(lines) + "\n" + _other_tables(results)


def _other_tables(results: dict[str, Any]) -> str:
    """Scaling, memory, audit, server, and the targets: the tables after the sources'."""
    lines: list[str] = []
    s = results.get("scaling")
    if s:
        v = s["variants"]
        lines += ["", "Scaling (blinker pair, sigtrace full; median µs per operation):", ""]
        lines.append("| case | median | p99 | paired ratio |")
        lines.append("|---|---|---|---|")
        for a, b, key in (
            ("1 in flight", "10,000 in flight", "in_flight_ratio"),
            ("1 model", "1,000 models", "models_ratio"),
        ):
            lines.append(f"| {a} | {_f(v[a]['median_us'])} | {_f(v[a]['p99_us'])} | 1 |")
            lines.append(f"| {b} | {_f(v[b]['median_us'])} | {_f(v[b]['p99_us'])} | {_f(s[key], 3)} |")
        for n, t in s["threads"].items():
            naive = (
                f"; naive bridge {_f(t['naive_median_us'])} µs, {_f(t['naive_vs_1_thread'], 3)} (vs 1 thread)"
                if "naive_median_us" in t
                else ""
            )
            lines.append(
                f"| {n} thread(s) x 1,000: baseline {_f(t['baseline_median_us'], 2)}, full | "
                f"{_f(t['full_median_us'])} | - | {_f(t['full_vs_1_thread'], 3)} (vs 1 thread){naive} |"
            )
    m = results.get("memory")
    if m:
        lines += ["", "Memory (blinker pair, sigtrace full):", ""]
        lines.append("| run | operations | RSS first → last (KiB) | growth | tracemalloc growth | max in flight |")
        lines.append("|---|---|---|---|---|---|")
        for key, run in m.items():
            first = run["samples"][1] if len(run["samples"]) > 1 else run["samples"][0]
            last = run["samples"][-1]
            traced = f"{run['traced_growth_kib']:+,} KiB" if run.get("tracemalloc") else "-"
            lines.append(
                f"| {key} | {run['ops']:,} | {first['rss_kib']:,} → {last['rss_kib']:,} | {run['rss_growth']:+.2%} "
                f"| {traced} | {run['max_in_flight_seen']:,} |"
            )
    if results.get("audit"):
        import bench_audit

        lines += ["", bench_audit.table(results["audit"])]
    if results.get("server"):
        import bench_server

        lines += ["", bench_server.table(results["server"])]
    lines += ["", "Targets (issue 20; shown, not asserted; ratios are paired per round):", ""]
    lines.append(targets_table(results))
    return "\n".join(lines)


def _row_name(r: dict[str, Any]) -> str:
    return r["source"] + (" (pinned)" if r.get("pinned") else "")


def _met(ratio: float, reference: dict[str, Any]) -> bool | None:
    """``ratio <= 1``; ``None`` (not measurable) where the reference itself added nothing measurable: its
    paired added cost was not positive in most rounds (the run's noise is larger than the reference)."""
    low, _high = reference.get("added_us_range", [1.0, 1.0])
    if reference["added_us"] <= 0 or (low <= 0 and reference["added_us"] < abs(low)):
        return None
    return ratio <= 1.0


def target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 20 as a row: what, the figure, the target, met or not (``None``: not measured)."""
    rows: list[dict[str, Any]] = []

    def add(target: str, row: str, figure: str, goal: str, met: bool | None, detail: str = "") -> None:
        rows.append({"target": target, "row": row, "figure": figure, "goal": goal, "met": met, "detail": detail})

    by_name = {(r["source"], bool(r.get("pinned"))): r for r in results["sources"]}
    # (target, sources, sigtrace's variant, its ratio key, the reference variant, their labels)
    comparisons = (
        ("1. full <= naive bridge", NAIVE_TARGET, h.FULL, "over_naive", h.NAIVE, "full", "naive", "naive bridge"),
        ("2. spans only <= OTel driver", OTEL_TARGET, h.SPANS_ONLY, "over_otel", h.OTEL, "spans only", "OTel", "OTel"),
    )
    for target, sources, variant, ratio_key, reference, label, ref_label, ref_name in comparisons:
        for source in sources:
            for pinned in (False, True):
                r = by_name.get((source, pinned))
                if r is None or (pinned and reference == h.NAIVE and source not in ("ormar", "edgy")):
                    continue
                name = _row_name(r)
                ours = r.get("variants", {}).get(variant, {})
                ratio = ours.get(ratio_key)
                if "skipped" in r or ratio is None:
                    why = r.get("skipped") or (
                        f"the {ref_name} variant added nothing measurable in any round"
                        if reference in r.get("variants", {})
                        else f"no {ref_name} variant"
                    )
                    add(target, name, "-", "<= 1.00", None, why)
                    continue
                ref = r["variants"][reference]
                detail = f"{label} {ours['added_us']:+.1f} µs, {ref_label} {ref['added_us']:+.1f} µs"
                add(target, name, f"{ratio:.2f}", "<= 1.00", _met(ratio, ref), detail)
    server = results.get("server")
    if server:
        import bench_server

        rows += bench_server.target_rows(server)
    s = results.get("scaling")
    if s:
        ratio = s["in_flight_ratio"]
        add("4. scaling", "10,000 in flight / 1", f"{ratio:.3f}", f"<= {TARGET_IN_FLIGHT}", ratio <= TARGET_IN_FLIGHT)
        ratio = s["models_ratio"]
        add("4. scaling", "1,000 models / 1", f"{ratio:.3f}", f"<= {TARGET_MODELS}", ratio <= TARGET_MODELS)
    m = results.get("memory", {})
    flat = m.get("flat (RSS)")
    if flat:
        growth = flat["rss_growth"]
        ok = abs(growth) <= TARGET_RSS
        add("4. memory", f"RSS over {flat['ops']:,} operations", f"{growth:+.2%}", "within 5%", ok)
    flood = m.get("orphan flood")
    if flood:
        seen, limit = flood["max_in_flight_seen"], flood["max_in_flight"]
        add("4. memory", f"orphan flood of {flood['ops']:,}", f"{seen:,} in flight", f"<= {limit:,}", seen <= limit)
    audit = results.get("audit")
    if audit:
        import bench_audit

        rows += bench_audit.target_rows(audit)
    return rows


def targets_table(results: dict[str, Any]) -> str:
    rows = target_rows(results)
    lines = ["| target | row | figure | goal | met | detail |", "|---|---|---|---|---|---|"]
    for row in rows:
        met = {True: "met", False: "**not met**", None: "not measurable"}[row["met"]]
        lines.append(f"| {row['target']} | {row['row']} | {row['figure']} | {row['goal']} | {met} | {row['detail']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="sources (and/or 'scaling', 'memory', 'audit') to run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the operations per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds, a fifth of the operations, 100,000 for memory")
    parser.add_argument(
        "--pinned", choices=["none", "default", "all"], default="default", help="default: the async ORMs also pinned"
    )
    parser.add_argument("--memory-ops", type=int, default=1_000_000, help="operations of the RSS pass")
    parser.add_argument(
        "--tracemalloc-ops",
        type=int,
        default=1_000_000,
        help="operations of the tracemalloc pass (slower: tracemalloc hooks every allocation)",
    )
    parser.add_argument("--flood", type=int, default=100_000, help="pre signals without a post (orphan flood)")
    parser.add_argument("--keep", help="keep each module's JSON in this directory (see --assemble)")
    parser.add_argument("--assemble", help="build the results from a --keep directory instead of running")
    parser.add_argument("--signalbus-python", default=str(ROOT / ".venv-signalbus" / "bin" / "python"))
    parser.add_argument("--output", help="JSON file (default: benchmarks/results/<UTC time>.json)")
    parser.add_argument("--table", help="print the table of an existing results file and exit")
    parser.add_argument("--server", action="store_true", help="also the real-server benchmark (bench_server.py)")
    parser.add_argument("--server-seconds", type=float, default=None, help="seconds per variant and round (server)")
    parser.add_argument(
        "--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="print before/after of two results files and exit"
    )
    parser.add_argument(
        "--plot", nargs="+", metavar=("RESULTS", "PNG"), help="plot a results file (to PNG, default beside it) and exit"
    )
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text(encoding="utf-8"))))
        return
    if args.compare:
        before, after = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args.compare)
        print(compare(before, after))
        return
    if args.plot:
        source = Path(args.plot[0])
        target = Path(args.plot[1]) if len(args.plot) > 1 else source.with_suffix(".png")
        print(plot(json.loads(source.read_text(encoding="utf-8")), target))
        return
    if args.assemble:
        save(assemble(Path(args.assemble)), args, dt.datetime.now(dt.UTC))
        return
    if args.quick:
        args.rounds, args.scale = 3, args.scale / 5
        args.memory_ops, args.tracemalloc_ops, args.flood = 100_000, 20_000, 10_000
    wanted = set(args.only or [*SOURCES, "scaling", "memory", "audit", *(["server"] if args.server else [])])
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": h.machine(),
        "command": " ".join(sys.argv),
        "sources": [],
    }
    tmp = args.keep or tempfile.mkdtemp(prefix="sigtrace-bench-run-")
    Path(tmp).mkdir(parents=True, exist_ok=True)
    try:
        for source, (_, _, pin_default) in SOURCES.items():
            if source not in wanted:
                continue
            if args.pinned != "all" or not pin_default:
                results["sources"].append(run_source(source, args, False, tmp))
            if args.pinned == "all" or (args.pinned == "default" and pin_default):
                results["sources"].append(run_source(source, args, True, tmp))
        if "scaling" in wanted:
            per_round = str(max(50, int(1000 * args.scale)))
            extra = ["--rounds", str(args.rounds), "--per-round", per_round]
            results["scaling"] = run_module("scaling", extra, "scaling", tmp)
        if "audit" in wanted:
            lines = "50000" if args.quick else "200000"
            extra = ["--rounds", str(min(args.rounds, 6)), "--per-round", str(max(50, int(500 * args.scale)))]
            results["audit"] = run_module("audit", [*extra, "--lines", lines], "audit", tmp)
        if "server" in wanted:
            seconds = args.server_seconds or (1.0 if args.quick else 2.5)
            extra = ["--rounds", str(min(args.rounds, 2 if args.quick else 3)), "--seconds", str(seconds)]
            results["server"] = run_module("server", extra, "server", tmp)
        if "memory" in wanted:
            ops, traced = str(args.memory_ops), str(args.tracemalloc_ops)
            flood = str(args.flood)
            runs = {
                "flat (RSS)": ["--mode", "flat", "--ops", ops],
                "flat (tracemalloc)": ["--mode", "flat", "--ops", traced, "--tracemalloc"],
                "orphan flood": ["--mode", "orphans", "--flood", flood, "--tracemalloc"],
            }
            results["memory"] = {key: run_module("memory", extra, MEMORY_RUNS[key], tmp) for key, extra in runs.items()}
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    save(results, args, started)


def git_state() -> dict[str, Any]:
    """The commit measured, and the files of sigtrace/ that differed from it (a shared working tree)."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    code = str(h.CODE)

    def code_git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=code, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "head": git("rev-parse", "HEAD"),
        "modified": git("status", "--short", "sigtrace").splitlines(),
        # The sigtrace measured (BENCH_SIGTRACE_CODE, or this checkout): the benchmark code is this checkout's.
        "code_head": code_git("rev-parse", "HEAD"),
        "code_modified": code_git("status", "--short", "sigtrace").splitlines(),
        "code_is_this_checkout": ROOT.resolve() == h.CODE,
    }


def save(results: dict[str, Any], args: argparse.Namespace, started: dt.datetime) -> None:
    results.setdefault("git", git_state())
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.output) if args.output else RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(table(results))
    print(f"\nsaved: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(plot(results, path.with_suffix(".png")))


def plot(
    results: dict[str, Any],
    path: Path,
    *,
    key: str = "added_us",
    scale: float = 1.0,
    ylabel: str = "added µs per operation (paired median)",
) -> str:
    """A bar chart of the added µs per source and variant (matplotlib, installed by the bench session only).

    ``key``/``scale``/``ylabel``: another figure of the same results shape (instructions.py: added instructions).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot: matplotlib is not installed (nox -s bench installs it)"
    rows = [r for r in results["sources"] if "skipped" not in r]
    if not rows:
        return "plot: no source rows in these results"
    palette = {
        h.NAIVE: "#9e9e9e",
        h.MATCHED: "#d0d0d0",
        h.OTEL: "#1f77b4",
        h.SPANS_ONLY: "#8fd18f",
        h.FULL: "#2ca02c",
        h.AUDIT_FILE: "#ff7f0e",
    }
    # The bridge making sigtrace's reports exists for two sources only: no empty legend entry without it.
    names = [name for name in palette if any(key in r["variants"].get(name, {}) for r in rows)]
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=110)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, ys = [], []
        for x, r in enumerate(rows):
            v = r["variants"].get(name)
            if v is not None and key in v:
                xs.append(x + (i - (len(names) - 1) / 2) * width)
                ys.append(v[key] * scale)
        ax.bar(xs, ys, width, label=name, color=palette[name], hatch="//" if name == h.MATCHED else None)
    ax.set_xticks(range(len(rows)), [_row_name(r) for r in rows], rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    code = results.get("git", {}).get("code_head", "")[:7]
    ax.set_title(f"What each variant adds to the operation (sigtrace {code}; lower is better)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.2)  # room for the legend above the tallest bar
    ax.legend(fontsize=8, ncols=3, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"plot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Before/after per row: each run's paired figures (added µs, ratios to the naive bridge and OTel)."""

    def index(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {_row_name(r): r for r in results["sources"] if "skipped" not in r}

    b, a = index(before), index(after)
    heads = [x.get("git", {}).get("code_head", "?")[:7] for x in (before, after)]
    lines = [
        f"Before ({heads[0]}) → after ({heads[1]}); each figure paired within its own run (µs added per operation).",
        "",
        "| row | full: added | full / naive | spans only: added | spans only / OTel | naive: added |",
        "|---|---|---|---|---|---|",
    ]

    def cell(rb: dict[str, Any], ra: dict[str, Any], variant: str, key: str, digits: int) -> str:
        vb, va = rb["variants"].get(variant, {}), ra["variants"].get(variant, {})
        if key not in vb or key not in va:
            return "-"
        return f"{vb[key]:,.{digits}f} → {va[key]:,.{digits}f}"

    for name in [n for n in b if n in a]:
        rb, ra = b[name], a[name]
        lines.append(
            f"| {name} | {cell(rb, ra, h.FULL, 'added_us', 1)} | {cell(rb, ra, h.FULL, 'over_naive', 2)} "
            f"| {cell(rb, ra, h.SPANS_ONLY, 'added_us', 1)} | {cell(rb, ra, h.SPANS_ONLY, 'over_otel', 2)} "
            f"| {cell(rb, ra, h.NAIVE, 'added_us', 1)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
