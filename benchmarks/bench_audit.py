"""The audit log as a system of record: what each durability setting costs, and how fast it verifies.

* durability: a blinker pair with sigtrace full, audit to a real file, per operation: ``write``
  (the default), ``write`` with a key (checkpoints every 1,000 lines), ``fsync`` (group commit);
  interleaved in the same rounds as the baseline, as every module here does. Then the same
  operations from 4 threads at once (throughput), where ``fsync``'s group commit shares one fsync
  between the threads' lines.
* verify: ``sigtrace.verify.verify`` over a file of lines as sigtrace writes them (the harness's
  audit fields, checkpoints every 1,000 lines), with the key, plain and gzip-compressed.

The file lives in a directory of the disk (``--dir``, default the system's temporary directory):
an fsync on tmpfs costs nothing and says nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _harness as h

KEY = b"benchmark key"
WRITE, KEYED, FSYNC = "audit write", "audit write + key", "audit fsync"
NAIVE_WRITE, NAIVE_FSYNC = "naive bridge, write", "naive bridge, fsync"
#: Each durability setting against the naive bridge writing its structlog line to a file of the same disk
#: as durably: flushed per line (``write``), flushed and fsynced per line (``fsync``).
REFERENCE = {WRITE: NAIVE_WRITE, KEYED: NAIVE_WRITE, FSYNC: NAIVE_FSYNC}
THREADS = 4


class Item:
    pk = 1


def filesystem(path: str) -> str:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.strip()


def durability(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    from blinker import Namespace

    import sigtrace

    prov = h.providers()
    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    sigtrace.trace_signals(pre, post, collection="items")

    def make_op(item: Item) -> Any:
        def op() -> None:
            pre.send(item)
            post.send(item)

        return op

    op = make_op(Item())  # threads below: one item each (the naive bridge pairs by the sender's identity)

    def installer(name: str, **options: Any) -> Any:
        def setup() -> Any:
            sigtrace.install(
                sources=["blinker"],
                tracer_provider=prov.tracer_provider,
                meter_provider=prov.meter_provider,
                audit=True,
                audit_file=os.path.join(tmp, f"{name.replace(' ', '-')}.jsonl"),
                **options,
            )
            return sigtrace.uninstall

        return setup

    configs: dict[str, dict[str, Any]] = {
        WRITE: {},
        KEYED: {"audit_key": KEY},
        FSYNC: {"audit_durability": "fsync"},
    }
    variants = [h.Variant(h.BASELINE, op, kind="baseline")]
    variants += [h.Variant(name, op, installer(name, **options)) for name, options in configs.items()]
    for name, fsync in ((NAIVE_WRITE, False), (NAIVE_FSYNC, True)):
        bridge = h.NaiveBridge(prov, os.path.join(tmp, f"{name.replace(' ', '-')}.jsonl"), fsync=fsync)
        naive = bridge.variant(op, pre, post, lambda sender, _kw: id(sender), weak=False)
        naive.name = name
        variants.append(naive)
    suite = h.Suite("audit", "pre.send + post.send", variants)
    samples = h.measure(suite, args.rounds, args.per_round, args.warmup)
    result = h.summarize(suite, samples)
    rounds = {name: [statistics.median(r) for r in runs] for name, runs in samples.items()}
    for name, reference in REFERENCE.items():
        # Paired per round: (setting - baseline) / (naive bridge at the same durability - baseline).
        ratios = [
            (rounds[name][i] - rounds[h.BASELINE][i]) / (rounds[reference][i] - rounds[h.BASELINE][i])
            for i in range(len(rounds[name]))
            if rounds[reference][i] > rounds[h.BASELINE][i]
        ]
        result["variants"][name]["over_reference"] = statistics.median(ratios) if ratios else None
        result["variants"][name]["reference"] = reference

    threads: dict[str, Any] = {}
    setups: dict[str, Any] = {name: installer(f"threads {name}", **options) for name, options in configs.items()}
    for v in variants:
        if v.name in (NAIVE_WRITE, NAIVE_FSYNC):
            setups[v.name] = v.setup
    for name, setup in setups.items():
        teardown = setup()
        barrier = threading.Barrier(THREADS + 1)

        def worker(barrier: threading.Barrier = barrier) -> None:
            own = make_op(Item())
            barrier.wait()
            for _ in range(args.per_thread):
                own()

        pool = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in pool:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - started
        teardown()
        total = THREADS * args.per_thread
        threads[name] = {"operations": total, "seconds": elapsed, "ops_per_s": total / elapsed}
    result["threads"] = {"threads": THREADS, "per_thread": args.per_thread, "variants": threads}
    return result


def verify_speed(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    from sigtrace.sinks.audit import JsonLinesWriter, _iso_timestamp
    from sigtrace.verify import verify

    path = os.path.join(tmp, "verify.jsonl")
    writer = JsonLinesWriter(path, service_name="bench", key=KEY, checkpoint_lines=1000)
    for i in range(args.lines):
        writer({"timestamp": _iso_timestamp(time.time_ns()), **h.AUDIT_FIELDS, "pk": str(i), "event": "sigtrace.audit"})
    writer.close()
    gz = path + ".gz"
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    out: dict[str, Any] = {"events": args.lines, "bytes": os.path.getsize(path), "gzip_bytes": os.path.getsize(gz)}
    for label, target in (("plain", path), ("gzip", gz)):
        times = []
        for _ in range(args.verify_rounds):
            started = time.perf_counter()
            report = verify([target], KEY)
            times.append(time.perf_counter() - started)
            assert report.ok, [str(s.broken) for s in report.streams.values()]
        lines = sum(s.lines for s in report.streams.values())
        best, median = min(times), statistics.median(times)
        out[label] = {"lines": lines, "best_s": best, "median_s": median, "lines_per_s": lines / median}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--per-thread", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=200_000, help="audit events in the verified file")
    parser.add_argument("--verify-rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="directory on the disk to measure (default: the temp dir)")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sigtrace-bench-audit-", dir=args.dir) as tmp:
        result: dict[str, Any] = {"filesystem": filesystem(tmp)}
        result["durability"] = durability(args, tmp)
        result["verify"] = verify_speed(args, tmp)
    result["machine"] = h.machine()
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    else:
        print(text)
    print(table(result), file=sys.stderr)


def table(result: dict[str, Any]) -> str:
    d = result["durability"]
    v = d["variants"]
    base = v[h.BASELINE]
    lines = [
        f"Audit log (blinker pair, sigtrace full, audit file on {result['filesystem']}); µs per operation:",
        "",
        f"| durability | added, 1 thread (median, paired) | p99 | {d['threads']['threads']} threads: operations/s |",
        "|---|---|---|---|",
    ]
    threads = d["threads"]["variants"]
    lines[2] = lines[2][:-1] + " vs naive bridge at that durability (paired ratio of added costs) |"
    lines[3] += "---|"
    lines.append(f"| baseline ({base['median_us']:.1f} µs) | - | {base['p99_us']:.1f} | - | - |")
    for name in (WRITE, KEYED, FSYNC, NAIVE_WRITE, NAIVE_FSYNC):
        entry = v.get(name)
        if entry is None:
            continue
        ratio = entry.get("over_reference")
        versus = f"{ratio:.2f} (vs {entry['reference']})" if ratio is not None else "-"
        ops = threads[name]["ops_per_s"] if name in threads else float("nan")
        lines.append(f"| {name} | {entry['added_us']:.1f} | {entry['p99_us']:.1f} | {ops:,.0f} | {versus} |")
    ver = result["verify"]
    lines += ["", f"verify ({ver['events']:,} events, {ver['bytes'] / 1e6:.1f} MB, key given):", ""]
    for label in ("plain", "gzip"):
        lines.append(f"- {label}: {ver[label]['lines_per_s']:,.0f} lines/s ({ver[label]['median_s']:.2f} s)")
    return "\n".join(lines)


def target_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Target 5: every durability setting its own row, against the naive bridge at the same durability."""
    rows = []
    v = result["durability"]["variants"]
    threads = result["durability"]["threads"]["variants"]
    for name in (WRITE, KEYED, FSYNC):
        entry = v.get(name)
        if entry is None:
            continue
        ratio = entry.get("over_reference")
        reference = entry.get("reference", "")
        detail = f"+{entry['added_us']:.1f} µs, p99 {entry['p99_us']:.0f} µs"
        if name in threads:
            detail += f"; {THREADS} threads {threads[name]['ops_per_s']:,.0f} ops/s"
        if reference in threads:
            detail += f" ({reference}: {threads[reference]['ops_per_s']:,.0f})"
        rows.append(
            {
                "target": "5. audit durability",
                "row": f"{name} vs {reference}",
                "figure": "-" if ratio is None else f"{ratio:.2f}",
                "goal": "<= 1.00",
                "met": None if ratio is None else ratio <= 1.0,
                "detail": detail,
            }
        )
    return rows


if __name__ == "__main__":
    main()
