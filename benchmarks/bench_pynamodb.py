"""PynamoDB: ``item.save()`` (one PutItem) against a moto server on 127.0.0.1, in its own process.

The server runs in a separate process so that its work is not timed as the client's. OTel
variant: opentelemetry-instrumentation-botocore (PynamoDB sends through botocore's
``BaseClient._make_api_call``). A round trip to moto costs milliseconds, so the paired
difference, not the ratio, is the figure to read here.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import _harness as h

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)


def build(args: argparse.Namespace, prov: h.Providers, tmp: str) -> h.Suite:
    os.environ.update(FAKE_ENV)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from pynamodb import signals
    from pynamodb.attributes import NumberAttribute, UnicodeAttribute
    from pynamodb.models import Model

    server, url = start_moto()

    class Item(Model):
        class Meta:
            table_name = "bench_items"
            region = "us-east-1"
            host = url
            billing_mode = "PAY_PER_REQUEST"

        id = UnicodeAttribute(hash_key=True)
        name = UnicodeAttribute(null=True)
        count = NumberAttribute(default=0)

    Item.create_table(wait=True)
    item = Item(id="1", name="first")
    counter = [0]

    def op() -> None:
        counter[0] += 1
        item.count = counter[0]
        item.save()

    def otel_setup() -> Any:
        BotocoreInstrumentor().instrument(tracer_provider=prov.tracer_provider)
        return BotocoreInstrumentor().uninstrument

    # PynamoDB's own signals (blinker): pre_dynamodb_send / post_dynamodb_send.
    from blinker import Namespace

    signal = Namespace().signal("bench_dynamodb_send")
    assert type(signal) is type(signals.pre_dynamodb_send)
    signal.connect(lambda sender, **kw: None, weak=False)

    def dispatch() -> None:
        signal.send(item, operation_name="PutItem", table_name="bench_items", req_uuid="x")
        signal.send(item, operation_name="PutItem", table_name="bench_items", req_uuid="x")

    variants = h.sigtrace_variants("pynamodb", op, prov, tmp)
    variants.append(h.Variant(h.OTEL, op, otel_setup))

    variants.append(
        h.NaiveBridge(prov).variant(
            op,
            signals.pre_dynamodb_send,
            signals.post_dynamodb_send,
            lambda _sender, kw: kw.get("req_uuid"),
            weak=False,
        )
    )
    variants += h.floor_variants(prov, dispatch)

    def cleanup() -> None:
        server.terminate()
        server.wait(10)

    return h.Suite(
        "pynamodb",
        "Model.save() (PutItem, moto server)",
        variants,
        notes=["OTel: opentelemetry-instrumentation-botocore", "moto server in a separate process on 127.0.0.1"],
        cleanup=cleanup,
    )


if __name__ == "__main__":
    h.main(build, ["pynamodb", "botocore", "moto", "opentelemetry-instrumentation-botocore"])
