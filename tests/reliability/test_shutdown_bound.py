"""A collector that is down or hangs must not hold the process past its deadline at exit.

Before: 2,000 operations, then a normal exit, took 37 to 50 s with the collector hanging or refusing
(the SDK's own exit handlers wait for each batch export in turn, 10 s each): longer than a container
orchestrator's grace period (30 s by default), so the process was killed. Now the providers sigtrace
configured are shut down within ``shutdown_timeout`` (default 5 s); what is not delivered by then is
abandoned, counted and logged once, and the local JSON-lines audit record stays complete.

A real process (tests/reliability/apps/exit_app.py), configured only through OTEL_* / SIGTRACE_*
variables with the SDK's default export timeout. The exit time is held to a behaviour bound with
generous slack (the budget plus 10 s), not a performance target.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.reliability.harness import APPS, app_env, audit_lines, closed_port, hanging_collector

OPERATIONS = 2_000
#: Slack over the budget: a shared 2-core machine, a fresh interpreter's teardown.
SLACK_S = 10.0


@contextmanager
def collector(kind: str) -> Iterator[str]:
    if kind == "hangs":
        with hanging_collector() as endpoint:
            yield endpoint
    else:
        yield f"http://127.0.0.1:{closed_port()}"


def exit_time(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Seconds from the application's last line of work to the end of its process, and its stderr."""
    proc = subprocess.Popen(
        [sys.executable, str(APPS / "exit_app.py"), str(OPERATIONS), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    answer = json.loads(proc.stdout.readline())
    started = time.monotonic()
    try:
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, err[-3000:]
    assert answer == {"operations": OPERATIONS, "in_flight": 0}
    return elapsed, err


@pytest.mark.parametrize("kind", ["hangs", "refuses"])
@pytest.mark.parametrize("ending", ["exit", "uninstall"])
def test_exit_is_bounded_when_the_collector_is_unreachable(tmp_path: Path, kind: str, ending: str) -> None:
    audit = tmp_path / "audit.jsonl"
    with collector(kind) as endpoint:
        env = app_env(endpoint, "grpc", audit)
        elapsed, err = exit_time(env, *(["uninstall"] if ending == "uninstall" else []))
    print(f"\n[reliability] collector {kind}, {ending}: {OPERATIONS} operations, exit took {elapsed:.2f}s")
    assert elapsed < 5.0 + SLACK_S, err[-3000:]
    gave_up = [line for line in err.splitlines() if "did not finish within" in line]
    assert gave_up, err[-3000:]
    assert "spans" in gave_up[0] and "JSON-lines audit record is complete" in gave_up[0]
    assert len(gave_up) == (2 if ending == "uninstall" else 1)  # once per abandoned step, not per batch
    assert len(audit_lines(audit)) == OPERATIONS


def test_shutdown_timeout_variable_sets_the_budget(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with collector("hangs") as endpoint:
        elapsed, err = exit_time(app_env(endpoint, "grpc", audit, SIGTRACE_SHUTDOWN_TIMEOUT="1.5"))
    print(f"\n[reliability] collector hangs, SIGTRACE_SHUTDOWN_TIMEOUT=1.5: exit took {elapsed:.2f}s")
    assert elapsed < 1.5 + SLACK_S
    assert "did not finish within 1.5s" in err
    assert len(audit_lines(audit)) == OPERATIONS
