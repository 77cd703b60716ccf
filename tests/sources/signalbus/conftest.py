"""Flask-SignalBus tests: they need the old stack (Flask<3, Flask-SQLAlchemy 2.5, SQLAlchemy 1.4) of their own venv.

    uv venv -p 3.11 .venv-signalbus
    uv pip install -p .venv-signalbus -e '.[signalbus,test]' 'flask<3' 'flask-sqlalchemy==2.5.1' \
        'sqlalchemy>=1.4,<2' pika psycopg2-binary
    .venv-signalbus/bin/python -m pytest tests/sources/signalbus -p no:cacheprovider
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.sources.signalbus.harness import Harness

try:
    import flask_signalbus  # noqa: F401
except ImportError as exc:  # the modern dev venv (SQLAlchemy 2, Flask 3): Flask-SignalBus cannot import there
    UNAVAILABLE: str | None = (
        f"flask_signalbus is not importable ({exc}); these tests run in the separate signalbus venv (nox -s signalbus)"
    )
else:
    UNAVAILABLE = None


class _Unavailable(pytest.Module):
    """A test module of this package where Flask-SignalBus cannot import: skipped whole, with the reason."""

    def collect(self) -> Any:
        pytest.skip(UNAVAILABLE or "", allow_module_level=True)


def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> Any:
    # A hook rather than a module-level skip: it works both for `pytest tests` and `pytest tests/sources/signalbus`.
    if UNAVAILABLE is not None:
        return _Unavailable.from_parent(parent, path=module_path)
    return None


PG_HOST = "127.0.0.1"
PG_DB = "sigtrace_signalbus"
RABBIT_HOST = "127.0.0.1"


def _postgres_url() -> str:
    """Create the suite's own database once; skip with the reason if the server is not there."""
    try:
        import psycopg2
    except ImportError:
        pytest.skip("psycopg2 is not installed in this venv")
    try:
        conn = psycopg2.connect(host=PG_HOST, port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:5432: {exc}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{PG_DB}"')
    conn.close()
    return f"postgresql+psycopg2://postgres@{PG_HOST}:5432/{PG_DB}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _postgres_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outbox.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def harness(backend_url: str) -> Iterator[Harness]:
    from tests.sources.signalbus.harness import make_harness

    with make_harness(backend_url) as h:
        yield h


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Iterator[Harness]:
    from tests.sources.signalbus.harness import make_harness

    with make_harness(f"sqlite:///{tmp_path / 'outbox.db'}") as h:
        yield h


@pytest.fixture
def pg_harness(postgres_url: str) -> Iterator[Harness]:
    from tests.sources.signalbus.harness import make_harness

    with make_harness(postgres_url) as h:
        yield h


@pytest.fixture(scope="session")
def rabbitmq() -> Any:
    """Connection parameters of the RabbitMQ at 127.0.0.1:5672 (guest/guest); skip if it is not there."""
    try:
        import pika
    except ImportError:
        pytest.skip("pika is not installed in this venv")
    params = pika.ConnectionParameters(
        RABBIT_HOST,
        int(os.environ.get("SIGTRACE_TEST_RABBITMQ_PORT", "5672")),
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=3,
        blocked_connection_timeout=10,
    )
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.AMQPError as exc:
        pytest.skip(f"RabbitMQ is not reachable at {RABBIT_HOST}:5672 (guest/guest): {exc!r}")
    return params
