"""Scaling of sigtrace's core (blinker source, full sinks): in-flight table size, model count, threads.

* in flight: cost of one operation with 1 vs 10,000 other operations in flight (started, not ended);
* models: one model vs 1,000 models (a distinct class, so a distinct attribute set, per model);
* threads: 1, 2 and 8 threads (1,000 operations each) at once, median time per operation (each timed
  in its thread: a thread switch inside an operation counts), with and without sigtrace.

Everything compared is measured in the same rounds, alternating the order, as in every module here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _harness as h
from blinker import Namespace

IN_FLIGHT = 10_000
MODELS = 1_000
THREADS = (1, 2, 8)
PER_THREAD = 1_000


class Holder:
    pk = 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()

    import sigtrace

    prov = h.providers()
    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    sigtrace.trace_signals(pre, post, collection="items")
    installation = sigtrace.install(
        sources=["blinker"],
        tracer_provider=prov.tracer_provider,
        meter_provider=prov.meter_provider,
        audit_file="/dev/null",
        max_in_flight=IN_FLIGHT * 2,
    )
    item = Holder()

    def op() -> None:
        pre.send(item)
        post.send(item)

    # --- 1 vs 10,000 in flight ---
    held = [Holder() for _ in range(IN_FLIGHT)]

    def hold() -> Any:
        for obj in held:
            pre.send(obj)
        assert installation.in_flight() == IN_FLIGHT

        def release() -> None:
            for obj in held:
                post.send(obj)
            assert installation.in_flight() == 0

        return release

    # --- 1 vs 1,000 models ---
    classes = [type(f"Model{i}", (Holder,), {}) for i in range(MODELS)]
    instances = [cls() for cls in classes]
    cursor = [0]

    def op_many_models() -> None:
        i = cursor[0] = (cursor[0] + 1) % MODELS
        obj = instances[i]
        pre.send(obj)
        post.send(obj)

    suite = h.Suite(
        "scaling",
        "blinker pair, sigtrace full",
        [
            h.Variant("1 in flight", op),
            h.Variant(f"{IN_FLIGHT:,} in flight", op, hold),
            h.Variant("1 model", op),
            h.Variant(f"{MODELS:,} models", op_many_models),
        ],
    )
    samples = h.measure(suite, args.rounds, args.per_round, args.warmup)
    result: dict[str, Any] = {"source": "scaling", "variants": {}}
    medians = {name: [statistics.median(r) / 1000.0 for r in rounds] for name, rounds in samples.items()}
    for name, rounds in samples.items():
        pooled = [t / 1000.0 for r in rounds for t in r]
        result["variants"][name] = {
            "median_us": statistics.median(pooled),
            "p99_us": h._p(pooled, 0.99),
            "round_medians_us": medians[name],
        }

    def paired(a: str, b: str) -> float:
        return statistics.median(y / x for x, y in zip(medians[a], medians[b], strict=True))

    result["in_flight_ratio"] = paired("1 in flight", f"{IN_FLIGHT:,} in flight")
    result["models_ratio"] = paired("1 model", f"{MODELS:,} models")

    # --- threads: wall time per operation, baseline (uninstalled) and full, interleaved ---
    def run_threads(n: int) -> float:
        """Median per-operation time over every operation of ``n`` threads running at once."""
        barrier = threading.Barrier(n)
        objs = [Holder() for _ in range(n)]
        times: list[list[int]] = [[] for _ in range(n)]

        def body(i: int) -> None:
            obj, out, clock = objs[i], times[i], time.perf_counter_ns
            barrier.wait()
            for _ in range(PER_THREAD):
                t0 = clock()
                pre.send(obj)
                post.send(obj)
                out.append(clock() - t0)

        threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statistics.median(t for ts in times for t in ts) / 1000.0

    sigtrace.uninstall()
    # The naive bridge on the same pair: what 8 threads of pure Python do to an operation without sigtrace's
    # locks (the GIL's share of a convoy, measured beside sigtrace's).
    bridge = h.NaiveBridge(prov).variant(lambda: None, pre, post, lambda sender, _kw: id(sender), weak=False)
    assert bridge.setup is not None
    thread_rounds: dict[str, list[float]] = {}
    for r in range(args.rounds):
        configs = [(n, mode) for n in THREADS for mode in ("baseline", "full", "naive")]
        for n, mode in configs if r % 2 == 0 else configs[::-1]:
            teardown: Any = None
            if mode == "full":
                sigtrace.install(
                    sources=["blinker"],
                    tracer_provider=prov.tracer_provider,
                    meter_provider=prov.meter_provider,
                    audit_file="/dev/null",
                )
                teardown = sigtrace.uninstall
            elif mode == "naive":
                teardown = bridge.setup()
            try:
                run_threads(n)  # warm-up
                thread_rounds.setdefault(f"{n} threads {mode}", []).append(run_threads(n))
            finally:
                if teardown is not None:
                    teardown()
        print(f"  [threads] round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    threads_out: dict[str, Any] = {}
    for n in THREADS:
        base = thread_rounds[f"{n} threads baseline"]
        full = thread_rounds[f"{n} threads full"]
        threads_out[str(n)] = {
            "baseline_median_us": statistics.median(base),
            "full_median_us": statistics.median(full),
            "added_us": statistics.median(f - b for f, b in zip(full, base, strict=True)),
        }
    for mode in ("full", "naive"):
        one = thread_rounds[f"1 threads {mode}"]
        for n in THREADS:
            runs = thread_rounds[f"{n} threads {mode}"]
            threads_out[str(n)][f"{mode}_median_us"] = statistics.median(runs)
            threads_out[str(n)][f"{mode}_vs_1_thread"] = statistics.median(
                f / o for f, o in zip(runs, one, strict=True)
            )
    result["threads"] = threads_out
    result["machine"] = h.machine()
    result["method"] = {"rounds": args.rounds, "per_round": args.per_round, "per_thread": PER_THREAD}
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
