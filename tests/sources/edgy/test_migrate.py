"""A real migration run with Edgy's migration tooling (init, migrate, upgrade, downgrade, a failing upgrade)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sources.edgy.helpers import PG_URL, pg_lock, postgres_unavailable

SCRIPT = Path(__file__).with_name("migrate_run.py")
ROOT = Path(__file__).resolve().parents[3]


def run_migrations(tmp_path: Path, url: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIGTRACE_STRICT": "1"}
    env.pop("EDGY_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SIGTRACE-RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("SIGTRACE-RESULT "))
    result["tmp"] = tmp_path
    return result


def check(result: dict[str, Any]) -> None:
    migrate = [s for s in result["spans"] if s["name"] == "migrate"]
    directions = [s["attributes"]["sigtrace.edgy.migrate.direction"] for s in migrate]
    assert directions == ["revision", "upgrade", "downgrade", "upgrade"], directions
    revision, upgrade, downgrade, failed = migrate
    for span in (revision, upgrade, downgrade):
        assert span["status"] == "UNSET"
        assert span["attributes"]["sigtrace.signal"] == "post_migrate"
        assert span["attributes"]["sigtrace.source"] == "edgy"
    # the revision span carries the id of the revision file alembic wrote
    rev_id = revision["attributes"]["sigtrace.edgy.migrate.revision"]
    versions = list((result["tmp"] / "migrations" / "versions").glob("*.py"))
    assert len(versions) == 1 and rev_id in versions[0].read_text()
    assert upgrade["attributes"]["sigtrace.edgy.migrate.revision"] == "head"
    assert downgrade["attributes"]["sigtrace.edgy.migrate.revision"] == "-1"
    # a failing upgrade (no post signal) is an ERROR at once, not an orphan
    assert result["failure"]
    assert failed["status"] == "ERROR" and failed["attributes"]["error.type"] == result["failure"]
    assert not failed["attributes"].get("sigtrace.orphaned")
    assert result["in_flight"] == 0
    audit = {e["span_id"]: e for e in result["audit"]}
    assert audit[revision["span_id"]]["direction"] == "revision"
    assert audit[revision["span_id"]]["revision"] == rev_id
    assert audit[revision["span_id"]]["message"] == "create invoices"
    assert audit[upgrade["span_id"]]["direction"] == "upgrade" and audit[upgrade["span_id"]]["outcome"] == "ok"
    assert audit[downgrade["span_id"]]["direction"] == "downgrade"
    assert audit[failed["span_id"]]["outcome"] == "error"
    # the SQL work of alembic ran under the migrate spans: nothing of ours is orphaned or left over
    assert all(e["outcome"] in ("ok", "error") for e in result["audit"])


def test_migration_run_sqlite(tmp_path: Path) -> None:
    check(run_migrations(tmp_path, f"sqlite:///{tmp_path}/migrate.db"))


@pytest.mark.postgres
def test_migration_run_postgres(tmp_path: Path) -> None:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    import asyncio

    import asyncpg

    async def reset() -> None:  # a clean schema: other tests' tables and alembic_version would confuse autogenerate
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="sigtrace_edgy")
        try:
            await conn.execute("drop table if exists alembic_version, invoices cascade")
        finally:
            await conn.close()

    with pg_lock():
        asyncio.run(reset())
        check(run_migrations(tmp_path, PG_URL))
