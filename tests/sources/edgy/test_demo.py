"""The Edgy scenario of ``sigtrace demo`` runs on its embedded SQLite and shows what it claims."""

from __future__ import annotations

import os
import subprocess
import sys

from opentelemetry.trace import StatusCode

from sigtrace.demo import edgy as scenario
from sigtrace.testing import capture


def test_demo_scenario() -> None:
    with capture(sources=["edgy"]) as cap:
        scenario.run()
        ops = [(e["operation"], e["outcome"]) for e in cap.audit_events]
        for expected in ("save", "bulk_create", "update", "relation_add", "delete"):
            assert (expected, "ok") in ops, ops
        assert [e["outcome"] for e in cap.audit_events if e["operation"] == "update" and "filter" in e] == ["ok"]
        assert [e["error_type"] for e in cap.audit_events if e["outcome"] == "error"] == ["IntegrityError"]
        failed = [s for s in cap.spans if s.status.status_code == StatusCode.ERROR]
        assert [s.name for s in failed] == ["save players"]
        assert all(e["actor"] == "alice" for e in cap.audit_events)
        assert cap.installation is not None and cap.installation.in_flight() == 0


def test_sigtrace_demo_command_runs_the_edgy_scenario() -> None:
    """``sigtrace demo --source edgy`` in a process of its own (it sets the global tracer provider)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER")}
    proc = subprocess.run(
        [sys.executable, "-m", "sigtrace.cli", "demo", "--source", "edgy"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "edgy: lifecycle" in text and "bulk_create players" in text and "IntegrityError" in text
