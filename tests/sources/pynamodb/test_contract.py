"""The core contract, run by the PynamoDB source against the moto server."""

from __future__ import annotations

import socket
import uuid
from typing import ClassVar

from botocore.exceptions import EndpointConnectionError
from pynamodb.connection.base import Connection
from pynamodb.signals import post_dynamodb_send, pre_dynamodb_send

from tests.contract import SourceContract
from tests.sources.pynamodb.models import REGION, Customer


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestPynamoDBContract(SourceContract):
    source = "pynamodb"
    span_name = "PutItem sigtrace_customers"
    expected_failure: ClassVar[type[BaseException]] = EndpointConnectionError

    def succeed(self) -> None:
        Customer(str(uuid.uuid4()), name="Ada").save()

    def fail(self) -> type[BaseException]:
        # The one public call whose exception reaches the caller unwrapped is Connection.dispatch
        # (Model and Connection methods wrap it in PutError & co.; see test_failures.py for those).
        connection = Connection(region=REGION, host=f"http://127.0.0.1:{closed_port()}", max_retry_attempts=0)
        connection.dispatch("PutItem", {"TableName": "sigtrace_customers", "Item": {"id": {"S": "x"}}})
        return EndpointConnectionError

    def orphan(self) -> None:
        # A pre signal outside any dispatch call: nothing but the reaper can end it.
        pre_dynamodb_send.send(
            Customer._get_connection().connection,
            operation_name="PutItem",
            table_name="sigtrace_customers",
            req_uuid=uuid.uuid4(),
        )

    def assert_detached(self) -> None:
        assert not pre_dynamodb_send.receivers
        assert not post_dynamodb_send.receivers
        assert not hasattr(Connection.dispatch, "__wrapped__")
