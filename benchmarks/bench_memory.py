"""Memory: RSS and tracemalloc over 1,000,000 operations (should stay flat), and under an orphan flood.

* ``flat``: sigtrace full (blinker pair, audit line to /dev/null) for ``--ops`` operations, sampled
  every tenth; RSS in one pass without tracemalloc (tracemalloc's own tables would count), then the
  traced Python heap in a second pass with tracemalloc on.
* ``orphans``: ``--flood`` pre signals whose post never comes, with ``max_in_flight=1,000``: the
  in-flight table stays at its bound (the oldest are ended as orphans, reason ``overflow``) and memory
  stays flat; a started SDK span held in the table costs about 3 KB.

Run as ``python benchmarks/bench_memory.py --mode flat|orphans [--tracemalloc]``; run.py runs each
pass in a fresh process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import _harness as h
from blinker import Namespace


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Item:
    pk = 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["flat", "orphans"], default="flat")
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--flood", type=int, default=100_000)
    parser.add_argument("--max-in-flight", type=int, default=1_000)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()

    import sigtrace

    prov = h.providers()
    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    if args.mode == "flat":
        sigtrace.trace_signals(pre, post, collection="items")
        total = args.ops
        options: dict[str, Any] = {}
    else:
        # Correlated by a request id: pre signals for ids whose post never comes.
        sigtrace.trace_signals(pre, post, collection="items", key=lambda sender, **kw: kw["req"])
        total = args.flood
        options = {"max_in_flight": args.max_in_flight}
    installation = sigtrace.install(
        sources=["blinker"],
        tracer_provider=prov.tracer_provider,
        meter_provider=prov.meter_provider,
        audit_file=os.devnull,
        **options,
    )
    item = Item()
    samples: list[dict[str, Any]] = []
    step = max(1, total // 10)
    warmup = min(10_000, step)

    def one(i: int) -> None:
        if args.mode == "flat":
            pre.send(item)
            post.send(item)
        else:
            pre.send(item, req=i)

    for i in range(warmup):
        one(-i - 1)
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start()

    def sample(done: int) -> None:
        gc.collect()
        entry: dict[str, Any] = {"ops": done, "rss_kib": rss_kib(), "in_flight": installation.in_flight()}
        if args.tracemalloc:
            current, peak = tracemalloc.get_traced_memory()
            entry["traced_kib"] = current // 1024
            entry["traced_peak_kib"] = peak // 1024
        samples.append(entry)
        print(f"  [memory {args.mode}] {entry}", file=sys.stderr, flush=True)

    sample(0)
    for i in range(total):
        one(i)
        if (i + 1) % step == 0:
            sample(i + 1)
    sigtrace.uninstall()
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    result: dict[str, Any] = {
        "mode": args.mode,
        "ops": total,
        "tracemalloc": args.tracemalloc,
        "max_in_flight": args.max_in_flight if args.mode == "orphans" else None,
        "samples": samples,
        # Growth from the first sample after start (caches warm) to the end.
        "rss_growth": (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"],
        "max_in_flight_seen": max(s["in_flight"] for s in samples),
    }
    if args.tracemalloc:
        result["traced_growth_kib"] = last["traced_kib"] - first["traced_kib"]
    result["machine"] = h.machine()
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
