"""The PynamoDB scenario of ``sigtrace demo`` (moto in-process, so in its own process: moto's in-process
mock shares its state with the tests' moto server thread)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CLI = "import sys; from sigtrace.cli import main; sys.exit(main())"


def test_demo_scenario() -> None:
    pytest.importorskip("moto", reason="the demo runs DynamoDB in-process with moto")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OTEL_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sigtrace.cli import main; sys.exit(main())",
            "demo",
            "--source",
            "pynamodb",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "scenario failed" not in out
    assert "PutItem demo_customers" in out and "BatchWriteItem demo_orders" in out and "Query demo_orders" in out
    failed = [line for line in out.splitlines() if line.lstrip().startswith("✗")]
    assert [line.split()[1:3] for line in failed] == [
        ["DescribeTable", "demo_customers"],
        ["DescribeTable", "demo_orders"],
        ["UpdateItem", "demo_orders"],
    ]
    assert "error_type=ConditionalCheckFailedException" in out
    # The set-up's failures are PynamoDB's own existence checks: labelled so, not left to alarm the reader.
    assert all("(expected: create_table() first asks whether the table exists)" in line for line in failed[:2])
    assert failed[2].endswith("ConditionalCheckFailedException (deliberate: paying the same order twice)")
    assert "pynamodb" in [line.split()[0] for line in out.splitlines() if line.startswith("  ")]  # the metrics row
