"""Run an instrumented library's own test suite twice, plain and with sigtrace installed, and compare.

    python tests/peer/run.py django --db sqlite --db postgresql [--selection default|full]
    python tests/peer/run.py ormar --db sqlite --db postgresql
    python tests/peer/run.py signalbus
    python tests/peer/run.py pynamodb

The suite comes from the library's source release on PyPI, for the version installed in this environment
(``pip download --no-binary :all: --no-deps``, cached). The run "with sigtrace" puts tests/peer/site on
PYTHONPATH: its sitecustomize installs sigtrace with production settings (``SIGTRACE_STRICT`` unset) for the
whole interpreter and writes its audit log and internal-error counts to files of its own.

The session fails when a test passes plain and fails (or does not run) with sigtrace, unless
tests/peer/allowlist.toml names it with a reason; when sigtrace counted an internal error; and when it
reported an orphan. See docs/peer-suites.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SITE = HERE / "site"
DJANGO_HARNESS = HERE / "django"
ALLOWLIST = HERE / "allowlist.toml"

#: The Django test modules the issue names, plus the neighbours that exercise the same writes
#: (saves, deletes, m2m changes, bulk and queryset writes, transactions, signals).
DJANGO_DEFAULT = (
    "basic",
    "bulk_create",
    "custom_pk",
    "delete",
    "delete_regress",
    "m2m_signals",
    "m2m_through",
    "many_to_many",
    "model_inheritance",
    "multiple_database",
    "proxy_models",
    "save_delete_hooks",
    "select_for_update",
    "signals",
    "transactions",
    "update",
    # neighbours
    "dispatch",
    "force_insert_update",
    "get_or_create",
    "m2m_and_m2o",
    "m2m_intermediary",
    "m2m_multiple",
    "m2m_recursive",
    "m2m_regress",
    "m2m_through_regress",
    "many_to_one",
    "many_to_one_null",
    "model_inheritance_regress",
    "one_to_one",
    "queryset_pickle",
    "update_only_fields",
    "fixtures",
    "fixtures_regress",
    "generic_relations",
    "generic_relations_regress",
    "custom_managers",
    "async",
    "queries",
    "expressions",
)

#: PynamoDB's sdist ships tests/ without tests/data.py, tests/deep_eq.py and tests/response.py (its test data)
#: and without tests/integration: these four modules import them and cannot run from it.
PYNAMODB_NEEDS_MISSING_DATA = (
    "tests/test_base_connection.py",
    "tests/test_model.py",
    "tests/test_table_connection.py",
    "tests/test_transaction.py",
)

#: The pytest.ini of Flask-SignalBus's repository, which its sdist leaves out: 15 tests read INFO records
#: from caplog and need the log level it sets.
SIGNALBUS_PYTEST_INI = "[pytest]\naddopts = --log-level info\n"


# --- outcomes ---


@dataclass
class Outcome:
    outcome: str  # passed | failed | skipped
    detail: str = ""


@dataclass
class RunResult:
    mode: str
    outcomes: dict[str, Outcome]
    seconds: float
    returncode: int
    sigtrace: dict[str, Any] = field(default_factory=dict)
    sends: dict[str, int] = field(default_factory=dict)
    sends_by_model: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for item in self.outcomes.values() if item.outcome == outcome)


def parse_junit(path: Path) -> dict[str, Outcome]:
    """pytest's ``--junitxml``: each testcase's outcome (an error in setup or teardown counts as failed)."""
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname', '')}.{case.get('name', '')}"
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, detail = "failed", (child.get("message") or "") + "\n" + (child.text or "")
                break
            if child.tag == "skipped":
                outcome, detail = "skipped", child.get("message") or ""
        previous = outcomes.get(key)
        if previous is not None and previous.outcome == "failed":
            continue  # a teardown error is a second testcase element with the same name
        outcomes[key] = Outcome(outcome, detail[-2000:])
    return outcomes


def parse_django(path: Path) -> tuple[dict[str, Outcome], dict[str, int], dict[str, dict[str, int]]]:
    """What tests/peer/django/peer_runner.py wrote: outcomes by test id, the signal sends, the sends per model."""
    data = json.loads(path.read_text(encoding="utf-8"))
    outcomes = {key: Outcome(value["outcome"], value.get("detail", "")) for key, value in data["outcomes"].items()}
    return outcomes, dict(data.get("sends", {})), dict(data.get("sends_by_model", {}))


# --- what sigtrace recorded ---


def sigtrace_figures(directory: Path) -> dict[str, Any]:
    """Sum what every sigtrace-installed process of a run left in ``directory`` (tests/peer/site/sitecustomize.py)."""
    errors: collections.Counter[str] = collections.Counter()
    error_lines = 0
    messages: list[str] = []
    processes = 0
    in_flight = 0
    for path in sorted(directory.glob("stats-*.json")):
        stats = json.loads(path.read_text(encoding="utf-8"))
        processes += 1
        errors.update(stats.get("internal_errors", {}))
        error_lines += int(stats.get("internal_error_lines", 0))
        messages.extend(stats.get("internal_error_messages", []))
        in_flight += int(stats.get("in_flight_at_exit", 0))
    events = 0
    unreadable = 0
    operations: collections.Counter[str] = collections.Counter()
    by_model: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    orphans: collections.Counter[str] = collections.Counter()
    for path in sorted(directory.glob("audit-*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    unreadable += 1
                    continue
                if event.get("event") != "sigtrace.audit":
                    continue  # the record's own lines: stream headers, checkpoints (docs/audit.md)
                events += 1
                operation = f"{event.get('source', '?')}.{event.get('operation', '?')}"
                operations[operation] += 1
                by_model[f"{operation} {event.get('model', '?')}"] += 1
                outcomes[str(event.get("outcome", "?"))] += 1
                if event.get("orphaned"):
                    orphans[str(event.get("orphan_reason", "?"))] += 1
    return {
        "processes": processes,
        "internal_errors": dict(errors),
        "internal_error_count": sum(errors.values()),
        "internal_error_lines": error_lines,
        "internal_error_messages": messages[:10],
        "in_flight_at_exit": in_flight,
        "audit_events": events,
        "audit_unreadable": unreadable,
        "operations": dict(sorted(operations.items())),
        "operations_by_model": dict(sorted(by_model.items())),
        "outcomes": dict(outcomes),
        "orphans": dict(orphans),
        "orphan_count": sum(orphans.values()),
    }


#: Django: each send of a pre signal for a model is an operation sigtrace should have audited for it.
DJANGO_SEEN = (("pre_save", "django.save"), ("pre_delete", "django.delete"))


def unseen(
    sends_by_model: Mapping[str, Mapping[str, int]], by_model: Mapping[str, int]
) -> dict[str, dict[str, tuple[int, int]]]:
    """Per pre signal, the models Django sent it for more often than sigtrace audited the operation.

    ``{signal: {model label: (sent, audited)}}``. The audit names a model by its class name, so sends are
    compared per class name. Not every gap is a miss (docs/peer-suites.md says which are by design): Django's
    bookkeeping models are untraced by default, a delete Django refuses (``ProtectedError``) is one error event
    for the call, and the through rows an m2m call deletes are part of the m2m operation.
    """
    missed: dict[str, dict[str, tuple[int, int]]] = {}
    for signal, operation in DJANGO_SEEN:
        for label, sent in sorted(sends_by_model.get(signal, {}).items()):
            audited = by_model.get(f"{operation} {label.rsplit('.', 1)[-1]}", 0)
            if audited < sent:
                missed.setdefault(signal, {})[label] = (sent, audited)
    return missed


# --- comparison ---


@dataclass(frozen=True)
class Allowed:
    suite: str
    test: str
    reason: str
    db: str | None = None


def load_allowlist(path: Path = ALLOWLIST) -> list[Allowed]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = []
    for item in data.get("allow", []):
        if not item.get("reason", "").strip():
            raise SystemExit(f"{path.name}: {item.get('test')!r} has no reason")
        entries.append(Allowed(item["suite"], item["test"], item["reason"].strip(), item.get("db")))
    return entries


@dataclass
class Comparison:
    tests: int
    #: passed plain, failed or missing with sigtrace, and not allow-listed: these fail the session
    regressions: dict[str, Outcome]
    #: the same, but allow-listed (with the reason)
    allowed: dict[str, str]
    #: failed plain, passed with sigtrace (reported, not a failure)
    fixed: list[str]
    failed_both: int


def compare(suite: str, db: str, plain: RunResult, with_: RunResult, allow: Iterable[Allowed]) -> Comparison:
    reasons = {a.test: a.reason for a in allow if a.suite == suite and a.db in (None, db)}
    regressions: dict[str, Outcome] = {}
    allowed: dict[str, str] = {}
    fixed: list[str] = []
    failed_both = 0
    for test, before in sorted(plain.outcomes.items()):
        after = with_.outcomes.get(test, Outcome("missing", "did not run with sigtrace"))
        if before.outcome == "passed" and after.outcome in ("failed", "missing"):
            if test in reasons:
                allowed[test] = reasons[test]
            else:
                regressions[test] = after
        elif before.outcome == "failed" and after.outcome == "passed":
            fixed.append(test)
        elif before.outcome == "failed" and after.outcome == "failed":
            failed_both += 1
    for test, after in sorted(with_.outcomes.items()):  # ran only with sigtrace (e.g. an error holder)
        if test not in plain.outcomes and after.outcome == "failed":
            if test in reasons:
                allowed[test] = reasons[test]
            else:
                regressions[test] = after
    return Comparison(len(plain.outcomes), regressions, allowed, fixed, failed_both)


# --- fetching the source release ---


def sdist(package: str, cache: Path) -> Path:
    """The source release of the installed version of ``package`` (downloaded once into ``cache``)."""
    version = importlib.metadata.version(package)
    cache.mkdir(parents=True, exist_ok=True)
    normalized = package.lower().replace("-", "_")

    def cached() -> Path | None:
        for path in cache.iterdir():
            name = path.name.lower().replace("-", "_")
            if name.startswith(f"{normalized}_{version}.") and name.endswith((".tar.gz", ".zip")):
                return path
        return None

    found = cached()
    if found is None:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
        subprocess.run([*command, f"{package}=={version}", "-d", str(cache)], check=True)
        found = cached()
        if found is None:
            raise SystemExit(f"pip download left no source release of {package}=={version} in {cache}")
    return found


def extract(archive: Path, destination: Path) -> Path:
    """Unpack once; each run then works on a copy of its own (databases, caches and stray files stay apart)."""
    marker = destination / ".extracted"
    if not marker.exists():
        shutil.rmtree(destination, ignore_errors=True)
        destination.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(destination, filter="data")
        marker.touch()
    roots = [path for path in destination.iterdir() if path.is_dir()]
    if len(roots) != 1:
        raise SystemExit(f"{archive.name}: expected one top-level directory, found {len(roots)}")
    return roots[0]


def unpacked(package: str, cache: Path) -> Path:
    """The source tree of the installed version (one directory per release, beside its archive)."""
    archive = sdist(package, cache)
    return extract(archive, cache / (archive.name.removesuffix(".tar.gz").removesuffix(".zip") + "-src"))


# --- running ---


def postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def clean_environment() -> dict[str, str]:
    """The caller's environment without sigtrace's or OpenTelemetry's variables (SIGTRACE_STRICT above all)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SIGTRACE_", "OTEL_", "PYTHONPATH"))}


def pythonpath(*parts: Path) -> str:
    return os.pathsep.join(str(part) for part in parts)


def prepare(source: Path, workdir: Path, mode: str) -> tuple[Path, Path]:
    """A fresh copy of the source tree and, for the run with sigtrace, an empty directory for its files."""
    run_dir = workdir / mode
    shutil.rmtree(run_dir, ignore_errors=True)
    tree = run_dir / "src"
    shutil.copytree(source, tree, symlinks=True)
    sigtrace_dir = run_dir / "sigtrace"
    sigtrace_dir.mkdir()
    return tree, sigtrace_dir


def execute(command: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        try:
            code = subprocess.run(
                list(command), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[tests/peer/run.py] timed out after {timeout:.0f} s\n")
            code = -1
    return code, time.monotonic() - started


def run_mode(
    mode: str,
    source: Path,
    workdir: Path,
    command: Sequence[str],
    cwd_in_tree: str,
    env: Mapping[str, str],
    extra_path: Sequence[Path],
    timeout: float,
    setup: Any = None,
) -> tuple[RunResult, Path]:
    """One run (``mode`` plain or with): the command in a fresh copy of the tree, its outcomes parsed."""
    tree, sigtrace_dir = prepare(source, workdir, mode)
    if setup is not None:
        setup(tree)
    environment = {**clean_environment(), **env}
    paths = list(extra_path)
    if mode == "with":
        paths.insert(0, SITE)
        environment["SIGTRACE_PEER_DIR"] = str(sigtrace_dir)
    inherited = os.environ.get("PYTHONPATH")  # a development checkout on the path stays on it, after ours
    if inherited:
        paths.extend(Path(part) for part in inherited.split(os.pathsep) if part)
    if paths:
        environment["PYTHONPATH"] = pythonpath(*paths)
    outcomes_file = workdir / mode / "outcomes"
    resolved = [part.replace("{outcomes}", str(outcomes_file)) for part in command]
    environment = {k: v.replace("{outcomes}", str(outcomes_file)) for k, v in environment.items()}
    log = workdir / mode / "output.log"
    code, seconds = execute(resolved, tree / cwd_in_tree, environment, log, timeout)
    result = RunResult(mode, {}, seconds, code)
    if not outcomes_file.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"the {mode} run wrote no outcomes (exit status {code}); its output ends:\n{tail}")
    if "--junitxml={outcomes}" in command:
        result.outcomes = parse_junit(outcomes_file)
    else:
        result.outcomes, result.sends, result.sends_by_model = parse_django(outcomes_file)
    if mode == "with":
        result.sigtrace = sigtrace_figures(sigtrace_dir)
    return result, log


@dataclass
class SuiteRun:
    suite: str
    db: str
    version: str
    plain: RunResult
    with_: RunResult
    comparison: Comparison
    note: str = ""


def pytest_command(paths: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "-p",
        "no:sigtrace",  # sigtrace's own pytest plugin: not part of the application under test
        "-p",
        "no:cacheprovider",
        "-q",
        "-o",
        "junit_family=xunit2",
        "--junitxml={outcomes}",
        "--rootdir=.",  # test ids relative to the copy of the tree, the same in both runs
        *extra,
    ]


def run_django(db: str, selection: str, workdir: Path, cache: Path, timeout: float) -> tuple[RunResult, RunResult]:
    source = unpacked("django", cache)
    labels = [] if selection == "full" else list(DJANGO_DEFAULT)
    command = [
        sys.executable,
        "runtests.py",
        "--settings=peer_settings",
        "--parallel",
        "1",
        "--noinput",
        *labels,
    ]
    results = []
    for mode in ("plain", "with"):
        env = {
            "SIGTRACE_PEER_DB": db,
            "SIGTRACE_PEER_RUN": f"{os.getpid()}_{mode}",
            "SIGTRACE_PEER_OUTCOMES": "{outcomes}",
        }
        result, _ = run_mode(mode, source, workdir, command, "tests", env, [DJANGO_HARNESS], timeout)
        results.append(result)
    return results[0], results[1]


async def _postgres_database(name: str, create: bool) -> None:
    import asyncpg  # ormar's PostgreSQL driver, in the environment of its suite

    connection = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def run_ormar(db: str, workdir: Path, cache: Path, timeout: float) -> tuple[RunResult, RunResult]:
    source = unpacked("ormar", cache)
    results = []
    for mode in ("plain", "with"):
        env: dict[str, str] = {}
        name = f"sigtrace_peer_{os.getpid()}_ormar_{mode}"
        if db == "postgresql":
            asyncio.run(_postgres_database(name, create=True))
            env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{name}"
        else:
            env["DATABASE_URL"] = "sqlite:///test.db"  # ormar's own default, in this run's copy of the tree
        try:
            result, _ = run_mode(mode, source, workdir, pytest_command(["tests"]), ".", env, [], timeout)
        finally:
            if db == "postgresql":
                asyncio.run(_postgres_database(name, create=False))
        results.append(result)
    return results[0], results[1]


def run_signalbus(workdir: Path, cache: Path, timeout: float) -> tuple[RunResult, RunResult]:
    source = unpacked("flask-signalbus", cache)

    def setup(tree: Path) -> None:
        (tree / "pytest.ini").write_text(SIGNALBUS_PYTEST_INI, encoding="utf-8")

    results = []
    for mode in ("plain", "with"):
        command = pytest_command(["tests"])
        result, _ = run_mode(mode, source, workdir, command, ".", {}, [], timeout, setup)
        results.append(result)
    return results[0], results[1]


def run_pynamodb(workdir: Path, cache: Path, timeout: float) -> tuple[RunResult, RunResult]:
    source = unpacked("pynamodb", cache)
    ignore = [f"--ignore={path}" for path in PYNAMODB_NEEDS_MISSING_DATA]

    def setup(tree: Path) -> None:
        # Its repository's pytest.ini is not in the sdist either: an empty one keeps pytest from taking the
        # configuration of a project the tree happens to sit in.
        (tree / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")

    results = []
    for mode in ("plain", "with"):
        # Its repository's pytest.ini sets dummy AWS credentials and a region (pytest-env); the sdist has none.
        env = {"AWS_ACCESS_KEY_ID": "1", "AWS_SECRET_ACCESS_KEY": "2", "AWS_DEFAULT_REGION": "us-east-1"}
        command = pytest_command(["tests"], ignore)
        result, _ = run_mode(mode, source, workdir, command, ".", env, [], timeout, setup)
        results.append(result)
    return results[0], results[1]


# --- report ---


def table(runs: Sequence[SuiteRun]) -> str:
    header = (
        "suite",
        "db",
        "tests",
        "passed plain",
        "passed with",
        "failed only with sigtrace",
        "allowed",
        "internal errors",
        "orphans",
        "audit events",
        "s plain/with",
    )
    rows = [header]
    for run in runs:
        figures = run.with_.sigtrace
        rows.append(
            (
                f"{run.suite} {run.version}",
                run.db,
                str(run.comparison.tests),
                str(run.plain.count("passed")),
                str(run.with_.count("passed")),
                str(len(run.comparison.regressions)),
                str(len(run.comparison.allowed)),
                str(figures.get("internal_error_count", 0)),
                str(figures.get("orphan_count", 0)),
                str(figures.get("audit_events", 0)),
                f"{run.plain.seconds:.0f}/{run.with_.seconds:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def first_line(detail: str) -> str:
    """The assertion or exception line of a traceback (its last non-empty line)."""
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    assertion = [line for line in lines if line.startswith(("AssertionError", "E ")) or "Error:" in line]
    return (assertion[-1] if assertion else lines[-1] if lines else "")[:300]


def report(runs: Sequence[SuiteRun]) -> list[str]:
    """Print the details and return why the session fails (empty: it passes)."""
    failures: list[str] = []
    for run in runs:
        name = f"{run.suite} on {run.db}"
        figures = run.with_.sigtrace
        print(f"\n== {name}: {run.comparison.tests} tests, sigtrace sources {figures.get('sources', '')}".rstrip())
        print(f"   sigtrace processes: {figures.get('processes')}, audit events: {figures.get('audit_events')}")
        print(f"   operations audited: {json.dumps(figures.get('operations', {}))}")
        print(f"   audit outcomes: {json.dumps(figures.get('outcomes', {}))}")
        if run.with_.sends:
            print(f"   signals sent (plain run): {json.dumps(run.plain.sends)}")
            print(f"   signals sent (with sigtrace): {json.dumps(run.with_.sends)}")
            operations = figures.get("operations", {})
            for signal, operation in DJANGO_SEEN:
                sent, audited = run.with_.sends.get(signal, 0), operations.get(operation, 0)
                print(f"   sigtrace saw every operation? {signal} sent {sent}, {operation} audited {audited}")
            for signal, models in unseen(run.with_.sends_by_model, figures.get("operations_by_model", {})).items():
                gaps = ", ".join(f"{label} {sent}/{audited}" for label, (sent, audited) in models.items())
                print(f"   {signal} sent/audited where the audit has fewer: {gaps}")
        if run.comparison.failed_both:
            print(f"   failing plain and with sigtrace alike (not sigtrace's): {run.comparison.failed_both}")
        for test in run.comparison.fixed:
            print(f"   failed plain, passed with sigtrace (flaky?): {test}")
        for test, reason in run.comparison.allowed.items():
            print(f"   allowed: {test}: {reason}")
        for test, outcome in run.comparison.regressions.items():
            print(f"   FAILED ONLY WITH SIGTRACE: {test}: {first_line(outcome.detail)}")
        if not figures.get("processes"):
            failures.append(f"{name}: sigtrace was not installed in the run with sigtrace (no stats file)")
        if run.comparison.regressions:
            failures.append(f"{name}: {len(run.comparison.regressions)} test(s) fail only with sigtrace")
        if figures.get("internal_error_count") or figures.get("internal_error_lines"):
            failures.append(f"{name}: sigtrace internal errors {json.dumps(figures.get('internal_errors'))}")
            for message in figures.get("internal_error_messages", []):
                print(f"   internal error: {message}")
        if figures.get("orphan_count"):
            failures.append(f"{name}: sigtrace orphans {json.dumps(figures.get('orphans'))}")
        if figures.get("audit_unreadable"):
            failures.append(f"{name}: {figures['audit_unreadable']} unreadable audit line(s)")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=("django", "ormar", "signalbus", "pynamodb"))
    parser.add_argument("--db", action="append", choices=("sqlite", "postgresql"), help="default: sqlite")
    parser.add_argument("--selection", choices=("default", "full"), default="default", help="Django: which modules")
    parser.add_argument("--work", type=Path, default=Path(".nox") / "peer-work", help="where runs happen")
    parser.add_argument("--cache", type=Path, default=Path(".nox") / "peer-cache", help="source releases")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--summary", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    allow = load_allowlist()
    dbs = args.db or ["sqlite"]
    if args.suite in ("signalbus", "pynamodb"):
        dbs = ["sqlite" if args.suite == "signalbus" else "mocked"]  # PynamoDB: its unit tests mock botocore
    runs: list[SuiteRun] = []
    skipped: list[str] = []
    package = {"django": "django", "ormar": "ormar", "signalbus": "flask-signalbus", "pynamodb": "pynamodb"}
    version = importlib.metadata.version(package[args.suite])
    cache = args.cache.resolve()
    for db in dbs:
        if db == "postgresql" and not postgres_up():
            skipped.append(f"{args.suite} on postgresql: skipped, no PostgreSQL server at 127.0.0.1:5432")
            continue
        workdir = (args.work / f"{args.suite}-{db}").resolve()
        print(f"[peer] {args.suite} {version} on {db}: running plain, then with sigtrace ...", flush=True)
        if args.suite == "django":
            plain, with_ = run_django(db, args.selection, workdir, cache, args.timeout)
        elif args.suite == "ormar":
            plain, with_ = run_ormar(db, workdir, cache, args.timeout)
        elif args.suite == "signalbus":
            plain, with_ = run_signalbus(workdir, cache, args.timeout)
        else:
            plain, with_ = run_pynamodb(workdir, cache, args.timeout)
        with_.sigtrace["sources"] = _sources(workdir / "with" / "sigtrace")
        runs.append(SuiteRun(args.suite, db, version, plain, with_, compare(args.suite, db, plain, with_, allow)))
    print()
    if runs:
        print(table(runs))
    for line in skipped:
        print(line)
    failures = report(runs)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps([_summary(run) for run in runs], indent=2) + "\n", encoding="utf-8")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nOK: no test fails only with sigtrace, no internal error, no orphan")
    return 0


def _sources(directory: Path) -> list[str]:
    names: set[str] = set()
    for path in directory.glob("stats-*.json"):
        names.update(json.loads(path.read_text(encoding="utf-8")).get("sources", []))
    return sorted(names)


def _summary(run: SuiteRun) -> dict[str, Any]:
    return {
        "suite": run.suite,
        "version": run.version,
        "db": run.db,
        "tests": run.comparison.tests,
        "passed_plain": run.plain.count("passed"),
        "passed_with": run.with_.count("passed"),
        "failed_only_with_sigtrace": {t: first_line(o.detail) for t, o in run.comparison.regressions.items()},
        "allowed": run.comparison.allowed,
        "seconds_plain": round(run.plain.seconds, 1),
        "seconds_with": round(run.with_.seconds, 1),
        "sigtrace": run.with_.sigtrace,
        "sends_plain": run.plain.sends,
        "sends_with": run.with_.sends,
    }


if __name__ == "__main__":
    sys.exit(main())
