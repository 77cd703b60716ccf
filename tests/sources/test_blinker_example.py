"""The blinker example application runs and leaves the audit trail it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sigtrace.testing import audit_file_events

ROOT = Path(__file__).resolve().parents[2]


def test_example_app_audits_every_publish(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SIGTRACE_"))}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "blinker" / "app.py"), str(audit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "published 2" in out.stdout
    assert out.stdout.count('"name": "publish articles"') == 3
    events = audit_file_events(audit)
    assert [e["outcome"] for e in events] == ["ok", "error", "ok"]
    assert events[1]["error_type"] == "PermissionError"
    assert {e["actor"] for e in events} == {"editor-1"} and {e["service_name"] for e in events} == {"newsroom"}
