"""blinker: an application's own pre/post signal pair around a trivial operation, traced by the generic source.

The operation is ``pre.send(item); post.send(item)`` (what an application sends around its write);
the baseline sends them with no receiver. No driver-level instrumentation exists for blinker, so
there is no OTel variant here: this module shows the cost of sigtrace's core and sinks alone.
"""

from __future__ import annotations

import argparse

import _harness as h
from blinker import Namespace


class Item:
    pk = 1


def build(args: argparse.Namespace, prov: h.Providers, tmp: str) -> h.Suite:
    import sigtrace

    ns = Namespace()
    pre, post = ns.signal("pre_save"), ns.signal("post_save")
    sigtrace.trace_signals(pre, post, collection="items")
    item = Item()

    def op() -> None:
        pre.send(item)
        post.send(item)

    floor_signal = ns.signal("floor")
    floor_signal.connect(lambda sender, **kw: None, weak=False)

    def dispatch() -> None:
        floor_signal.send(item)
        floor_signal.send(item)

    variants = h.sigtrace_variants("blinker", op, prov, tmp)
    variants.append(h.NaiveBridge(prov).variant(op, pre, post, lambda sender, _kw: id(sender), weak=False))
    variants += h.floor_variants(prov, dispatch)
    return h.Suite(
        "blinker", "pre.send + post.send", variants, notes=["no driver-level OTel instrumentation exists for blinker"]
    )


if __name__ == "__main__":
    h.main(build, ["blinker"])
