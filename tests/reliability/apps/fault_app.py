"""An application whose collector misbehaves: configured only through OTEL_* / SIGTRACE_* variables.

Driven line by line on stdin by tests/reliability/test_collector_faults.py:

    run <phase> <n>   perform n traced operations (blinker pre/post pairs, collection = phase);
                      print one JSON line: results checked, failures, latency percentiles, memory
    flush <ms>        Installation.force_flush(ms); print how long it took
    quit              uninstall and exit (printing how long uninstall took)

Every operation returns a value the test can check; an exception from an operation is counted.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
import uuid

import blinker

import sigtrace

pre, post = blinker.NamedSignal("pre_ship"), blinker.NamedSignal("post_ship")


def ship(parcel: int, phase: str) -> int:
    request = uuid.uuid4()
    pre.send(phase, request=request, parcel=parcel)
    result = parcel * 2 + 1  # the application's own work
    post.send(phase, request=request, parcel=parcel)
    return result


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


def main() -> None:
    sigtrace.trace_signals(
        pre,
        post,
        key=lambda sender, **kw: kw["request"],
        name="ship",
        attributes=lambda sender, **kw: {"app.phase": sender},
    )
    if "--tracemalloc" in sys.argv:
        tracemalloc.start()
    started = time.perf_counter()
    handle = sigtrace.install(sources=["blinker"])
    print(json.dumps({"ready": True, "install_ms": (time.perf_counter() - started) * 1e3}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "run":
            phase, count = words[1], int(words[2])
            wrong = failures = 0
            latencies: list[int] = []
            for i in range(count):
                t0 = time.perf_counter_ns()
                try:
                    if ship(i, phase) != i * 2 + 1:
                        wrong += 1
                except Exception:  # noqa: BLE001 - counted: the test asserts there are none
                    failures += 1
                latencies.append(time.perf_counter_ns() - t0)
            latencies.sort()
            traced = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
            print(
                json.dumps(
                    {
                        "phase": phase,
                        "operations": count,
                        "wrong": wrong,
                        "failures": failures,
                        "p50_ms": percentile(latencies, 0.50),
                        "p99_ms": percentile(latencies, 0.99),
                        "max_ms": latencies[-1] / 1e6 if latencies else 0.0,
                        "total_s": sum(latencies) / 1e9,
                        "rss": rss_bytes(),
                        "traced": traced[0],
                        "in_flight": handle.in_flight(),
                    }
                ),
                flush=True,
            )
        elif words[0] == "flush":
            t0 = time.perf_counter()
            handle.force_flush(int(words[1]))
            print(json.dumps({"flush_ms": (time.perf_counter() - t0) * 1e3}), flush=True)
        elif words[0] == "quit":
            break
    t0 = time.perf_counter()
    sigtrace.uninstall()
    print(json.dumps({"uninstall_ms": (time.perf_counter() - t0) * 1e3}), flush=True)


if __name__ == "__main__":
    main()
