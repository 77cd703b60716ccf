"""An application that does some traced work and exits, configured only through OTEL_* / SIGTRACE_* variables.

    exit_app.py <operations> [uninstall]

Performs the operations (blinker pre/post pairs), prints one JSON line, then ends the way most
applications end: returning from main (``uninstall``: calling ``sigtrace.uninstall()`` first).
tests/reliability/test_shutdown_bound.py times how long the process takes to exit after that line.
"""

from __future__ import annotations

import json
import sys
import uuid

import blinker

import sigtrace

pre, post = blinker.NamedSignal("pre_ship"), blinker.NamedSignal("post_ship")


def main() -> None:
    count = int(sys.argv[1])
    sigtrace.trace_signals(pre, post, key=lambda sender, **kw: kw["request"], name="ship")
    handle = sigtrace.install(sources=["blinker"])
    for parcel in range(count):
        request = uuid.uuid4()
        pre.send("exit", request=request, parcel=parcel)
        post.send("exit", request=request, parcel=parcel)
    print(json.dumps({"operations": count, "in_flight": handle.in_flight()}), flush=True)
    if "uninstall" in sys.argv[2:]:
        sigtrace.uninstall()
        print(json.dumps({"uninstalled": True}), flush=True)


if __name__ == "__main__":
    main()
