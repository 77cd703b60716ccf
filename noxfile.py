"""The whole test suite: ``python3 -m pip install -q uv nox && python3 -m nox`` (see README).

Sessions (each in its own uv-made environment):
- lint:      ruff check, ruff format --check, mypy --strict on sigtrace/
- tests:     pytest with coverage on the modern stack (every source but Flask-SignalBus)
- signalbus: Flask-SignalBus on its old stack (Flask<3, Flask-SQLAlchemy 2.5, SQLAlchemy 1.4),
             which cannot share an environment with ormar and Edgy (SQLAlchemy 2)
- django6:   the Django source on Django 6 (it needs Python 3.12; skipped where there is none)
- peer-django-sqlite: Django's own tests of the modules sigtrace touches, plain and with sigtrace installed,
             on SQLite (tests/peer/run.py): a test failing only with sigtrace fails the run
- docs:      the documentation site, built in strict mode
Not run by default: ``nox -s slow`` (long load/soak variants), ``nox -s bench`` and ``nox -s bench-server``
(benchmarks), ``nox -s sqlalchemy21`` (the SQLAlchemy source on SQLAlchemy 2.1), ``nox -s peer`` (the
libraries' own test suites from their source releases, plain and with sigtrace installed: peer-django,
peer-ormar, peer-signalbus, peer-pynamodb; tests/peer/run.py, docs/peer-suites.md), ``nox -s peer-django6``
(the same Django modules on Django 6, Python 3.12) and ``nox -s peer-django-full`` (Django's whole test
suite, plain and with sigtrace).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "signalbus", "django6", "peer-django-sqlite", "docs"]
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
MODERN = ".[all,demo,test,test-sources]"
# The signalbus extra pins the old stack (Flask<3, Flask-SQLAlchemy 2.5, SQLAlchemy 1.4).
SIGNALBUS = [".[signalbus,test]", "psycopg2-binary", "pika"]
LINTERS = ["ruff==0.17.6", "mypy==2.4.1"]


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("-e", MODERN, *LINTERS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "sigtrace")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", MODERN)
    # coverage runs pytest (not pytest-cov): sigtrace's pytest plugin imports sigtrace before
    # pytest-cov would start measuring, which would hide the core's module-level code.
    session.run("coverage", "erase")
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        "tests",
        "--ignore=tests/sources/signalbus",
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"SIGTRACE_STRICT": "1", "OTLP_RECEIVER_REQUIRED": "1"},
    )
    session.run("coverage", "combine", "-q")
    session.run("coverage", "report")


@nox.session(python=PYTHON)
def signalbus(session: nox.Session) -> None:
    session.install("-e", *SIGNALBUS, *LINTERS)
    # The source must type-check against the old stack it runs on, too.
    session.run("mypy", "sigtrace/sources/signalbus.py", "sigtrace/demo/signalbus.py")
    session.run("coverage", "erase", env={"COVERAGE_FILE": ".coverage-signalbus"})
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        "tests/sources/signalbus",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"SIGTRACE_STRICT": "1", "COVERAGE_FILE": ".coverage-signalbus"},
    )
    session.run("coverage", "combine", "-q", env={"COVERAGE_FILE": ".coverage-signalbus"})
    session.run(
        "coverage", "report", "--include=sigtrace/sources/signalbus.py", env={"COVERAGE_FILE": ".coverage-signalbus"}
    )


DJANGO6 = [
    ".[django,test]",
    "django>=6,<7",
    "pytest-django>=4.9",
    "psycopg[binary]>=3.1",
    "opentelemetry-instrumentation-django>=0.60b0",
    "opentelemetry-instrumentation-dbapi>=0.60b0",
]


def _python312() -> str | None:
    """A Python 3.12 interpreter: on PATH, or one pyenv installed (uv does not look there)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(root, "versions", "3.12*", "bin", "python3.12")), reverse=True)
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        probe = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return candidate
    return None


@nox.session(venv_backend="none")
def django6(session: nox.Session) -> None:
    """Django 6 needs Python 3.12: its own environment, made with uv from whatever 3.12 the machine has."""
    python = _python312()
    if python is None:
        session.skip("no Python 3.12 on this machine: Django 6 needs it")
    venv = os.path.join(".nox", "django6")
    session.run("uv", "venv", "-q", "--allow-existing", "-p", python, venv, external=True)
    session.run("uv", "pip", "install", "-q", "-p", os.path.join(venv, "bin", "python"), "-e", *DJANGO6, external=True)
    session.run(
        os.path.join(venv, "bin", "python"),
        "-m",
        "pytest",
        "tests/sources/django",
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"SIGTRACE_STRICT": "1"},
        external=True,
    )


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    # mkdocstrings reads the docstrings statically (griffe): the API reference needs no install of sigtrace.
    session.install("mkdocs==1.6.1", "mkdocs-material==9.8.2", "mkdocstrings==1.0.8", "mkdocstrings-python==2.0.11")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", session.create_tmp() + "/site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    session.install("-e", MODERN)
    session.run(
        "pytest", "tests", "--ignore=tests/sources/signalbus", "-m", "slow", "-p", "no:cacheprovider", *session.posargs
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark suite (benchmarks/run.py): prints the table, saves JSON under benchmarks/results/.

    ``nox -s bench -- --quick`` for a smoke run; ``-- --only django ormar --pinned all`` to narrow it.
    Flask-SignalBus runs on its own old stack: a second environment made here, passed to run.py.
    """
    session.install(
        "-e", MODERN, "moto[server]>=5.1", "opentelemetry-instrumentation-botocore>=0.60b0", "matplotlib>=3.8"
    )
    signalbus = session.create_tmp() + "/signalbus-venv"
    session.run("uv", "venv", "-q", "-p", PYTHON, signalbus, external=True)
    session.run("uv", "pip", "install", "-q", "-p", signalbus + "/bin/python", "-e", *SIGNALBUS, external=True)
    session.run("python", "benchmarks/run.py", "--signalbus-python", signalbus + "/bin/python", *session.posargs)


@nox.session(name="bench-instructions", python=PYTHON)
def bench_instructions(session: nox.Session) -> None:
    """Instructions per operation of every variant under valgrind (benchmarks/instructions.py, about 10 minutes).

    The figures a shared machine cannot move: same code, same inputs, same count. Needs valgrind on the PATH.
    """
    session.install("-e", MODERN, "moto[server]>=5.1", "opentelemetry-instrumentation-botocore>=0.60b0")
    signalbus = session.create_tmp() + "/signalbus-venv"
    session.run("uv", "venv", "-q", "-p", PYTHON, signalbus, external=True)
    session.run("uv", "pip", "install", "-q", "-p", signalbus + "/bin/python", "-e", *SIGNALBUS, external=True)
    python = signalbus + "/bin/python"
    session.run("python", "benchmarks/instructions.py", "--signalbus-python", python, *session.posargs)


@nox.session(name="bench-server", python=PYTHON)
def bench_server(session: nox.Session) -> None:
    """Saves on the PostgreSQL server at 127.0.0.1:5432, concurrent (benchmarks/bench_server.py, about 5 minutes).

    Django from 1 and 8 threads, ormar and Edgy from 1 and 100 tasks; baseline, OTel driver, sigtrace spans
    only, sigtrace full. Results merged into a run: ``python benchmarks/run.py --only server`` (or ``--server``).
    """
    session.install("-e", MODERN, "matplotlib>=3.8")
    session.run("python", "benchmarks/run.py", "--only", "server", *session.posargs)


@nox.session(python=PYTHON)
def sqlalchemy21(session: nox.Session) -> None:
    """The SQLAlchemy source on SQLAlchemy 2.1 (the modern env pins <2.1 for opentelemetry-instrumentation-sqlalchemy).

    Not run by default: ``nox -s sqlalchemy21``.
    """
    session.install(
        "-e", ".[sqlalchemy,test]", "sqlalchemy[asyncio]>=2.1,<2.2", "aiosqlite", "asyncpg", "psycopg[binary]"
    )
    session.run(
        "pytest",
        "tests/sources/sqlalchemy",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"SIGTRACE_STRICT": "1"},
    )


# --- the libraries' own test suites (tests/peer/run.py, docs/peer-suites.md) ---
# Each environment holds one library (and what its suite needs), so sigtrace attaches to that one alone.
# pip: tests/peer/run.py fetches the library's source release with ``pip download`` (cached under .nox/.cache).
PEER_DJANGO = [".[django]", "psycopg[binary]>=3.1", "pip"]
PEER_ORMAR = [
    ".[ormar]",
    "pip",
    # ormar's own dev dependencies (its pyproject.toml) that its tests import
    "aiosqlite>=0.19,<0.23",
    "asyncpg>=0.28,<0.32",
    "psycopg2-binary>=2.9.1",
    "psycopg[binary]>=3.1",  # five PostgreSQL tests open a sync engine with psycopg 3
    "cryptography>=44.0.1,<49",
    "pytest>=8.2,<10",
    "pytest-asyncio>=1.1,<2",
    "fastapi>=0.125",
    "httpx>=0.28",
    "asgi-lifespan>=2.1,<3",
    "pydantic-extra-types>=2.5,<3",
    "faker>=24.3,<41",
    "email-validator>=2.1.1,<3",
]
PEER_SIGNALBUS = [".[signalbus]", "pip", "pytest>=8", "mock", "pika"]
PEER_PYNAMODB = [".[pynamodb]", "pip", "pytest>=8", "pytest-mock", "freezegun"]


def _peer(session: nox.Session, suite: str, *args: str, python: str = "python") -> None:
    work = session.create_tmp()
    session.run(
        python,
        "tests/peer/run.py",
        suite,
        *args,
        "--work",
        os.path.join(work, "runs"),
        "--cache",
        os.path.join(str(session.cache_dir), "peer-sdists"),
        "--summary",
        os.path.join(work, "summary.json"),
        *session.posargs,
        external=python != "python",
    )


@nox.session(name="peer-django", python=PYTHON)
def peer_django(session: nox.Session) -> None:
    """Django's own tests of the modules sigtrace touches, on SQLite and PostgreSQL (where it is up)."""
    session.install("-e", *PEER_DJANGO)
    _peer(session, "django", "--db", "sqlite", "--db", "postgresql")


@nox.session(name="peer-django-sqlite", python=PYTHON)
def peer_django_sqlite(session: nox.Session) -> None:
    """The default run's judge of transparency: Django's own tests of the modules sigtrace touches, on SQLite."""
    session.install("-e", *PEER_DJANGO)
    _peer(session, "django", "--db", "sqlite")


@nox.session(name="peer-django-full", python=PYTHON)
def peer_django_full(session: nox.Session) -> None:
    """Django's whole test suite on SQLite (long: not in the default run)."""
    session.install("-e", *PEER_DJANGO)
    _peer(session, "django", "--selection", "full", "--db", "sqlite")


@nox.session(name="peer-django6", venv_backend="none")
def peer_django6(session: nox.Session) -> None:
    """The same Django modules on Django 6 (Python 3.12, as the django6 session): its m2m managers differ."""
    python = _python312()
    if python is None:
        session.skip("no Python 3.12 on this machine: Django 6 needs it")
    venv = os.path.join(".nox", "peer-django6")
    session.run("uv", "venv", "-q", "--allow-existing", "-p", python, venv, external=True)
    packages = [*PEER_DJANGO, "django>=6,<7"]
    session.run("uv", "pip", "install", "-q", "-p", os.path.join(venv, "bin", "python"), "-e", *packages, external=True)
    _peer(session, "django", "--db", "sqlite", "--db", "postgresql", python=os.path.join(venv, "bin", "python"))


@nox.session(name="peer-ormar", python=PYTHON)
def peer_ormar(session: nox.Session) -> None:
    """ormar's whole suite (its sdist ships it), on SQLite and PostgreSQL (where it is up)."""
    session.install("-e", *PEER_ORMAR)
    _peer(session, "ormar", "--db", "sqlite", "--db", "postgresql")


@nox.session(name="peer-signalbus", python=PYTHON)
def peer_signalbus(session: nox.Session) -> None:
    """Flask-SignalBus's suite on its old stack (like the signalbus session), with the pytest.ini its sdist lacks."""
    session.install("-e", *PEER_SIGNALBUS)
    _peer(session, "signalbus")


@nox.session(name="peer-pynamodb", python=PYTHON)
def peer_pynamodb(session: nox.Session) -> None:
    """The PynamoDB unit tests its sdist can run (it lacks their test data and the integration tests)."""
    session.install("-e", *PEER_PYNAMODB)
    _peer(session, "pynamodb")


@nox.session(venv_backend="none", requires=["peer-django", "peer-ormar", "peer-signalbus", "peer-pynamodb"])
def peer(session: nox.Session) -> None:
    """Every peer suite (each runs in the session it requires); this one only says they all ran."""
    session.log("peer suites: django, ormar, signalbus, pynamodb (edgy: its sdist has no tests, docs/peer-suites.md)")
