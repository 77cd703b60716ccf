"""Documentation that must not drift from the code."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from sigtrace import semconv
from sigtrace._config import ENV_VARIABLES, Options

DOCS = Path(__file__).resolve().parents[2] / "docs"


def table_rows(text: str, header: str) -> list[list[str]]:
    lines = text[text.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_configuration_reference_lists_every_option_and_its_variable() -> None:
    rows = table_rows((DOCS / "configuration.md").read_text(), "| Option |")
    documented = {row[0].strip("`"): row[1].strip("`") for row in rows}
    assert set(documented) == {f.name for f in fields(Options)}
    for option, variable in documented.items():
        assert variable == ENV_VARIABLES.get(option, "-"), option


def test_conventions_reference_names_every_metric() -> None:
    text = (DOCS / "conventions.md").read_text()
    names = {
        semconv.METRIC_DURATION,
        semconv.METRIC_OPERATIONS,
        semconv.METRIC_ORPHANS,
        semconv.METRIC_INTERNAL_ERRORS,
        semconv.METRIC_IN_FLIGHT,
    }
    documented = {row[0].strip("`") for row in table_rows(text, "| Name | Instrument |")}
    assert documented == names
    buckets = re.search(r"buckets ([\d. ]+)", text)
    assert buckets is not None
    assert tuple(float(b) for b in buckets.group(1).split()) == semconv.DURATION_BUCKETS


def test_conventions_reference_names_every_audit_field() -> None:
    from sigtrace.core.operation import Operation
    from sigtrace.testing import capture

    text = (DOCS / "conventions.md").read_text()
    documented: set[str] = set()
    for row in table_rows(text, "| Field | Meaning |"):
        documented.update(name.strip(" `") for name in row[0].split(","))
    with capture(sources=["blinker"], capture_values=True) as cap:
        assert cap.installation is not None
        engine = cap.installation.engine
        engine.begin(
            Operation(
                "t",
                "save",
                model="M",
                collection="c",
                pk="1",
                correlation_id="r",
                signal="pre_save",
                changed_fields=["a"],
                values={"a": 1},
            ),
            "k",
        )
        engine.end("k", error=ValueError("x"))
        engine.begin(Operation("t", "save"), "orphan")
    events = cap.audit_events
    produced = set().union(*(event.keys() for event in events))
    assert produced <= documented, produced - documented
    assert {"timestamp", "event", "outcome", "error_type", "values", "orphaned", "orphan_reason"} <= produced
