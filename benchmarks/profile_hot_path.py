"""Profile sigtrace's hot path (begin/end/_start/_finish and the sinks) on the blinker source.

    python benchmarks/profile_hot_path.py                 # pyinstrument tree (pip install pyinstrument)
    python benchmarks/profile_hot_path.py --cprofile      # cProfile, sorted by own time
    py-spy record -o profile.svg -- python benchmarks/profile_hot_path.py --ops 200000 --bare

sigtrace full (span + metrics + audit line to /dev/null) on an application's own blinker pair.
"""

from __future__ import annotations

import argparse
import os
import sys

import _harness as h
from blinker import Namespace


class Item:
    pk = 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=50_000)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--bare", action="store_true", help="no in-process profiler (for py-spy)")
    parser.add_argument("--spans-only", action="store_true")
    args = parser.parse_args()

    import sigtrace

    prov = h.providers()
    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    sigtrace.trace_signals(pre, post, collection="items")
    options = {"audit": False, "metrics": False} if args.spans_only else {"audit_file": os.devnull}
    sigtrace.install(
        sources=["blinker"], tracer_provider=prov.tracer_provider, meter_provider=prov.meter_provider, **options
    )
    item = Item()

    def run(n: int) -> None:
        for _ in range(n):
            pre.send(item)
            post.send(item)

    run(1000)
    if args.bare:
        run(args.ops)
    elif args.cprofile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(run, args.ops)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(35)
    else:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        run(args.ops)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    sigtrace.uninstall()


if __name__ == "__main__":
    main()
