"""sigtrace.testing in a Django project whose INSTALLED_APPS installs sigtrace (the documented set-up).

The capture takes the running installation over for its block and gives it back afterwards. Run as
a pytest process of its own on tests/sources/django/installed/ (a settings module with sigtrace's app),
since this package's Django is already set up with other settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sigtrace.testing import audit_file_events

ROOT = Path(__file__).resolve().parents[3]


def test_capture_and_fixture_work_where_the_app_installed_sigtrace(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DJANGO_", "SIGTRACE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.sources.django.installed.settings",
        CAPTURE_DB_DIR=str(tmp_path),
        SIGTRACE_STRICT="1",
        PYTHONPATH=str(ROOT),
    )
    tests = ROOT / "tests" / "sources" / "django" / "installed" / "project_tests.py"
    # --confcutdir: not the suite's own conftest files (they uninstall sigtrace around every test)
    command = [sys.executable, "-m", "pytest", str(tests), "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path)]
    result = subprocess.run(
        [*command, "--confcutdir", str(tests.parent)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
    events = audit_file_events(tmp_path / "audit.jsonl")
    # The project's installation audited what ran outside the captures only: carol (alice and bob went to them).
    assert len([e for e in events if e.get("model") == "Author"]) == 1
    assert all(e["service_name"] == "project" for e in events)
