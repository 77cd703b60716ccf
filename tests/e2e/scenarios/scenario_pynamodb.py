"""E2E scenario: PynamoDB against a moto server, configured only through OTEL_* variables.

moto runs in server mode inside this process (a real HTTP endpoint on 127.0.0.1, port chosen by the OS),
and opentelemetry-instrumentation-botocore is instrumented without a provider, so its spans go through the
global provider sigtrace.install() configured from the environment: caller -> ``PutItem e2e_orders`` ->
``DynamoDB.PutItem``. Prints one JSON line telling the test what it did.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

for _name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
)

from moto.server import ThreadedMotoServer  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor  # noqa: E402
from pynamodb.attributes import UnicodeAttribute  # noqa: E402
from pynamodb.exceptions import PutError  # noqa: E402
from pynamodb.models import Model  # noqa: E402

import sigtrace  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()


class Order(Model):
    class Meta:
        table_name = "e2e_orders"
        region = "us-east-1"
        host = f"http://{host}:{port}"
        billing_mode = "PAY_PER_REQUEST"

    number = UnicodeAttribute(hash_key=True)
    status = UnicodeAttribute()


try:
    Order.create_table(wait=True)  # before install(): the test expects audit events of the scenario's calls only
    sigtrace.install(sources=["pynamodb"])
    BotocoreInstrumentor().instrument()  # type: ignore[no-untyped-call]  # no provider: the global one sigtrace configured
    tracer = trace.get_tracer("e2e.app")
    with sigtrace.actor("alice"), tracer.start_as_current_span("POST /orders"):
        Order("o-1", status="placed").save()
        Order("o-2", status="placed").save()
        # The same order again, on condition that it does not exist: ConditionalCheckFailedException.
        with contextlib.suppress(PutError):
            Order("o-1", status="placed").save(condition=Order.number.does_not_exist())
    sigtrace.uninstall()
finally:
    server.stop()
print(
    json.dumps(
        {
            "caller": "POST /orders",
            "operation": "PutItem e2e_orders",
            "driver": "DynamoDB.PutItem",
            "ok": 2,
            "failed": 1,
            "error_type": "ConditionalCheckFailedException",
            "actor": "alice",
            "db_system": "aws.dynamodb",
        }
    )
)
