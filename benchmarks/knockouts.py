"""Instructions per operation with pieces of sigtrace knocked out: what each piece costs on one benchmark.

    python benchmarks/knockouts.py edgy                      # full, spans only, no audit, no metrics, baseline
    python benchmarks/knockouts.py edgy --repeat 3 --edgy-unconnected
    python benchmarks/knockouts.py django --configs full "no metrics"
    python benchmarks/knockouts.py django --configs full "no hash chain"
    python benchmarks/knockouts.py signalbus --exclude operation:autoflush   # (in Flask-SignalBus's environment)

Each configuration runs the baseline operation of ``bench_<source>.py`` in its own process under valgrind's
callgrind (as ``instructions.py`` counts), with ``sigtrace.install()`` given that configuration's options. A
piece's cost is the difference of two configurations' counts, e.g. the audit line is "full" minus "no audit".
``--edgy-unconnected`` adds "spans only, receivers unconnected" (Edgy's lifecycle receivers not connected:
what the two receivers cost). "no hash chain" is full with the audit line's SHA-256 replaced by a constant
(valgrind's virtual CPU has no SHA extensions, so OpenSSL hashes there in software: this shows what that
costs in the count; the line is then not verifiable, so it is a measurement only). The differences include
what a piece does to the library's own code (CPython's caches), which no profile of sigtrace's code shows:
see docs/performance.md, "What is left".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
import instructions  # noqa: E402

#: name -> the options of ``sigtrace.install()`` (``None``: not installed).
CONFIGS: dict[str, dict[str, Any] | None] = {
    "baseline": None,
    "full": {"audit": True, "metrics": True},
    "spans only": {"audit": False, "metrics": False},
    "no audit": {"audit": False, "metrics": True},
    "no metrics": {"audit": True, "metrics": False},
}
UNCONNECTED = "spans only, receivers unconnected"


class _Unhashed:
    """What ``hashlib.sha256(line)`` returns, without hashing: a constant digest of the right shape."""

    def __init__(self, _data: object) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 64


def _unhashed() -> None:
    from sigtrace.sinks import audit

    audit._sha256 = _Unhashed  # type: ignore[assignment]


def _unconnected() -> None:
    from sigtrace.sources.edgy import EdgySource

    EdgySource._watch = lambda self, signal, signal_name: None  # type: ignore[method-assign]


#: name -> (the configuration of CONFIGS it patches, the patch applied before installing).
PATCHED: dict[str, tuple[str, Any]] = {
    "no hash chain": ("full", _unhashed),
    UNCONNECTED: ("spans only", _unconnected),
}


def child(source: str, config: str, ops: int, exclude: list[str]) -> None:
    """In the process under callgrind: the baseline operation with sigtrace installed as ``config`` says
    (and ``exclude`` given to ``install()``: e.g. one operation per unit of work)."""
    import sigtrace

    if config in PATCHED:
        configured, patch = PATCHED[config]
        patch()
        options = CONFIGS[configured]
    else:
        options = CONFIGS[config]
    module = __import__(f"bench_{source}")
    prov = h.providers()
    with tempfile.TemporaryDirectory(prefix="sigtrace-knockout-") as tmp:
        args = argparse.Namespace(rounds=1, per_round=ops, warmup=instructions.WARMUP)
        suite: h.Suite = module.build(args, prov, tmp)
        (base,) = [v for v in suite.variants if v.name == h.BASELINE]
        if options is not None:
            extra = {"audit_file": os.devnull} if options["audit"] else {}
            sigtrace.install(
                sources=[source],
                tracer_provider=prov.tracer_provider,
                meter_provider=prov.meter_provider,
                exclude=exclude,
                **options,
                **extra,
            )
        try:
            instructions.run_counted(suite, base, ops, instructions.WARMUP)
        finally:
            if options is not None:
                sigtrace.uninstall()
            if suite.cleanup is not None:
                suite.cleanup()


def count(source: str, config: str, ops: int, exclude: list[str]) -> float:
    command = [sys.executable, __file__, "--child", source, config, "--ops", str(ops)]
    command += [f"--exclude={rule}" for rule in exclude]
    return instructions.callgrind_count(command, ops, f"{source} / {config}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", choices=sorted(instructions.OPS))
    known = [*CONFIGS, *(name for name in PATCHED if name != UNCONNECTED)]
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=known, help="what to count")
    parser.add_argument("--edgy-unconnected", action="store_true", help=f"also {UNCONNECTED!r} (Edgy)")
    parser.add_argument("--repeat", type=int, default=1, help="counts per configuration (the median is shown)")
    parser.add_argument("--ops", type=int, help="operations counted (default: instructions.py's per source)")
    parser.add_argument("--exclude", action="append", default=[], help="an exclude rule for install() (repeatable)")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.ops, args.exclude)
        return
    if args.source is None:
        parser.error("name a source")
    ops = args.ops or instructions.OPS[args.source]
    configs = list(args.configs) + ([UNCONNECTED] if args.edgy_unconnected else [])
    repeat = max(1, args.repeat)
    counts: dict[str, list[float]] = {config: [] for config in configs}
    for _ in range(repeat):  # interleaved: every configuration once, then again
        for config in configs:
            counts[config].append(count(args.source, config, ops, args.exclude))
            print(f"  [{args.source}] {config}: {counts[config][-1]:,.0f}", file=sys.stderr, flush=True)
    medians = {config: statistics.median(values) for config, values in counts.items()}
    base = medians.get("baseline")
    excluding = f", excluding {', '.join(args.exclude)}" if args.exclude else ""
    print(f"{args.source}: instructions per operation (median of {repeat}){excluding}, added over the baseline")
    for config, value in medians.items():
        added = "" if base is None or config == "baseline" else f"  added {(value - base) / 1000:,.1f}k"
        print(f"  {config:34s} {value:>14,.0f}{added}")
    print(json.dumps({"source": args.source, "ops": ops, "exclude": args.exclude, "counts": counts}))


if __name__ == "__main__":
    main()
