"""The peer-suite harness itself (tests/peer/run.py): outcomes parsed, runs compared, sigtrace's figures counted.

The peer sessions run for minutes; these checks of the parts that decide whether they pass run in seconds, with
real pytest runs and a real interpreter under tests/peer/site/sitecustomize.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.peer import run

ROOT = Path(__file__).resolve().parents[2]


def _pytest_outcomes(tmp_path: Path, source: str) -> dict[str, run.Outcome]:
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(source), encoding="utf-8")
    junit = tmp_path / "junit.xml"
    command = [sys.executable, "-m", "pytest", "test_sample.py", "-p", "no:cacheprovider", "-p", "no:sigtrace"]
    subprocess.run([*command, "-q", f"--junitxml={junit}"], cwd=tmp_path, capture_output=True, check=False)
    return run.parse_junit(junit)


def test_junit_outcomes_of_a_real_pytest_run(tmp_path: Path) -> None:
    outcomes = _pytest_outcomes(
        tmp_path,
        """
        import pytest

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown")

        def test_passes(): pass
        def test_fails(): assert 1 == 2
        def test_skipped(): pytest.skip("no server")
        def test_teardown_error(broken_teardown): pass
        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n): assert n == 1
        """,
    )
    got = {key.removeprefix("test_sample."): value.outcome for key, value in outcomes.items()}
    assert got == {
        "test_passes": "passed",
        "test_fails": "failed",
        "test_skipped": "skipped",
        "test_teardown_error": "failed",
        "test_param[1]": "passed",
        "test_param[2]": "failed",
    }
    assert "assert 1 == 2" in outcomes["test_sample.test_fails"].detail


def _result(mode: str, **outcomes: str) -> run.RunResult:
    return run.RunResult(mode, {test: run.Outcome(value, f"{test} {value}") for test, value in outcomes.items()}, 1, 0)


def test_compare_fails_only_what_breaks_with_sigtrace() -> None:
    plain = _result("plain", a="passed", b="passed", c="failed", d="passed", e="failed", f="skipped", g="passed")
    with_ = _result("with", a="passed", b="failed", c="failed", e="passed", f="failed", g="failed", holder="failed")
    allow = [
        run.Allowed("django", "g", "inspects the receiver list"),
        run.Allowed("django", "a", "never used here"),
        run.Allowed("ormar", "b", "another suite's entry"),
        run.Allowed("django", "b", "another database's entry", db="postgresql"),
    ]
    comparison = run.compare("django", "sqlite", plain, with_, allow)
    # b failed and d did not run with sigtrace; "holder" (a setUpClass error) exists only with sigtrace
    assert sorted(comparison.regressions) == ["b", "d", "holder"]
    assert comparison.regressions["d"].outcome == "missing"
    assert comparison.allowed == {"g": "inspects the receiver list"}
    assert comparison.fixed == ["e"]
    assert comparison.failed_both == 1
    assert comparison.tests == 7


def test_the_allowlist_gives_a_reason_for_every_entry(tmp_path: Path) -> None:
    # The repository's list is empty now (docs/peer-suites.md); its reader still reads entries.
    sample = tmp_path / "allowlist.toml"
    sample.write_text(
        '[[allow]]\nsuite = "django"\ntest = "a.B.test_c"\nreason = "inspects the receiver list of a signal"\n'
    )
    assert [(e.suite, e.test) for e in run.load_allowlist(sample)] == [("django", "a.B.test_c")]
    for entry in run.load_allowlist():
        assert entry.suite in {"django", "ormar", "signalbus", "pynamodb"}
        assert len(entry.reason) > 20


def test_sitecustomize_installs_sigtrace_and_counts_what_it_did(tmp_path: Path) -> None:
    """A real interpreter with tests/peer/site on its path: operations audited, an internal error and an orphan."""
    script = textwrap.dedent(
        """
        import blinker, sigtrace
        from sigtrace.core import safety
        assert sigtrace.is_installed() and not safety.is_strict()
        ns = blinker.Namespace()
        pre, post = ns.signal("pre_write"), ns.signal("post_write")
        sigtrace.trace_signals(pre, post, key=lambda sender, **kw: kw["request"])
        for request in range(3):
            pre.send("app", request=request)
            post.send("app", request=request)
        pre.send("app", request="never finished")  # in flight at exit: an orphan
        bad = ns.signal("pre_bad"), ns.signal("post_bad")
        sigtrace.trace_signals(*bad, key=lambda sender, **kw: 1 / 0)
        bad[0].send("app")  # the key raises inside sigtrace: an internal error, swallowed
        print("app still running")
        """
    )
    env = {
        **os.environ,
        "SIGTRACE_STRICT": "1",  # the sitecustomize drops it: production settings
        "SIGTRACE_PEER_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(run.SITE), str(ROOT)]),
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "app still running" in done.stdout
    figures = run.sigtrace_figures(tmp_path)
    assert figures["processes"] == 1
    assert figures["audit_events"] == 4
    assert figures["operations"] == {"blinker.write": 4}
    assert figures["orphans"] == {"uninstall": 1}
    assert figures["in_flight_at_exit"] == 1
    assert figures["internal_error_count"] >= 1
    assert figures["internal_error_lines"] >= 1


def test_without_the_directory_the_sitecustomize_does_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SIGTRACE_PEER_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(run.SITE), str(ROOT)])
    script = "import sys; print('sigtrace' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_unseen_lists_the_models_sent_for_more_often_than_audited() -> None:
    sends = {"pre_save": {"shop.Order": 3, "sessions.Session": 2}, "pre_delete": {"shop.Order": 1}}
    audited = {"django.save Order": 3, "django.delete Order": 1}
    assert run.unseen(sends, audited) == {"pre_save": {"sessions.Session": (2, 0)}}
    assert run.unseen({"pre_delete": {"shop.Order": 2}}, audited) == {"pre_delete": {"shop.Order": (2, 1)}}
    assert run.unseen(sends, {**audited, "django.save Session": 2}) == {}


def test_the_docs_list_every_allowlist_entry_and_no_other() -> None:
    text = (ROOT / "docs" / "peer-suites.md").read_text(encoding="utf-8")
    section = text[text.index("## The allow-list") : text.index("## What cannot run here")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    documented = {(row.split("|")[1].strip(), row.split("|")[2].strip(" `")) for row in rows}
    assert documented == {(entry.suite, entry.test) for entry in run.load_allowlist()}
