"""The Django scenario of ``sigtrace demo``: in a fresh interpreter (its own SQLite) and in this one (the
test database of the settings configured here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connections

from sigtrace.testing import capture

ROOT = Path(__file__).resolve().parents[3]


def check(output: str) -> None:
    assert "scenario failed" not in output, output
    for line in (
        "save sigtrace_demo_customer",
        "relation_add sigtrace_demo_order_labels",
        "bulk_create sigtrace_demo_order",
        "update sigtrace_demo_order",
        "delete sigtrace_demo_customer",
        "delete sigtrace_demo_order",
    ):
        assert line in output, (line, output)
    assert "IntegrityError" in output
    # 8 writes of alice's, and bob's delete: the customer, her 3 orders (collected), their label rows (one count)
    assert "13 audit events" in output, output


def test_demo_in_a_fresh_interpreter(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DJANGO_", "SIGTRACE_"))}
    result = subprocess.run(
        [sys.executable, "-m", "sigtrace.cli", "demo", "--source", "django"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check(result.stdout)


@pytest.mark.django_db(transaction=True)
def test_demo_where_django_is_configured_already() -> None:
    from sigtrace.demo import django as scenario

    with capture(sources=["django"]) as cap:
        scenario.run()
    names = [s.name for s in cap.spans]
    assert names.count("delete sigtrace_demo_customer") == 1  # one operation: the cascade is in its audit
    deleted = [e for e in cap.audit_events if e["operation"] == "delete"]
    assert [e["collection"] for e in deleted].count("sigtrace_demo_order") == 3
    assert [e.get("rows") for e in deleted if e["collection"] == "sigtrace_demo_order_labels"] == [1]
    assert [e["outcome"] for e in cap.audit_events].count("error") == 1
    assert {e["actor"] for e in cap.audit_events} == {"alice", "bob"}
    assert len(cap.audit_events) == 13
    assert "sigtrace_demo_customer" not in connections["default"].introspection.table_names()
    from django.apps import apps

    assert "sigtrace_demo" not in apps.app_configs
