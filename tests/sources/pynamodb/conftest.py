"""A real DynamoDB HTTP endpoint for the PynamoDB tests: moto in server mode on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

pytest.importorskip("pynamodb", reason="the pynamodb extra is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (test extra)")

from tests.sources.pynamodb import models  # noqa: E402

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": models.REGION,
    "AWS_REGION": models.REGION,
}


@pytest.fixture(scope="session")
def dynamodb() -> Iterator[str]:
    """The endpoint URL of a moto server (a thread of this process, port chosen by the OS), with tables."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(name, raising=False)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        models.bind(url)
        try:
            models.Customer.create_table(wait=True)
            models.Order.create_table(wait=True)
            yield url
        finally:
            models.bind(None)
            server.stop()


@pytest.fixture(autouse=True)
def _endpoint(dynamodb: str) -> str:
    """Every test of this folder talks to the moto server."""
    return dynamodb
