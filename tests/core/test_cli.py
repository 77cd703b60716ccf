"""``sigtrace demo``: the blinker scenario drawn as a waterfall with its audit events."""

from __future__ import annotations

import re

import pytest

from sigtrace.cli import main


def test_demo_draws_the_span_tree_and_the_audit_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--source", "blinker"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    request = next(i for i, line in enumerate(lines) if "POST /articles/publish" in line)
    children = [line for line in lines[request + 1 : request + 3]]
    assert all("publish articles" in line and "ms |" in line for line in children)
    assert children[0].startswith("    ") and "  publish articles" in children[0]  # indented under the request
    assert children[1].lstrip().startswith("✗") and children[1].endswith("PermissionError")
    audit = [line.split() for line in lines if line.startswith("  ok ") or line.startswith("  error ")]
    assert [row[0] for row in audit] == ["ok", "ok", "error"]
    assert all("actor=alice" in " ".join(row) for row in audit)
    assert "3 audit events" in out and "kept in memory" in out


def test_demo_of_an_unknown_source_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match=r"no scenario for nothing-by-that-name \(scenarios: blinker, "):
        main(["demo", "--source", "nothing-by-that-name"])


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Docstrings serve as help texts: their reST markup must not reach the terminal."""
    top = help_text(["--help"], capsys)
    assert "sigtrace demo runs a short scenario" in top
    listed = re.search(r"\{([\w,-]+)\}", top)
    assert listed is not None
    subcommands = listed.group(1).split(",")
    assert "demo" in subcommands
    for text in [top, *(help_text([name, "--help"], capsys) for name in subcommands)]:
        assert "`" not in text, text
        assert not re.search(r":[a-z]+:", text), text
    from sigtrace.cli import plain

    assert plain("``sigtrace demo`` and :class:`~sigtrace.Installation`, :func:`install`") == (
        "sigtrace demo and sigtrace.Installation, install"
    )
