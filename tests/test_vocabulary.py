"""One vocabulary (docs/conventions.md): the document parses, every registered source has its subsection, the
names of ``sigtrace/semconv.py`` are documented, and the check of spans and audit events (``tests/vocabulary.py``,
run after every contract-suite test by ``tests/contract.py``) names what is undocumented and where to document it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import orm

from sigtrace import semconv
from sigtrace.sources import REGISTRY
from tests.vocabulary import DOC, PLACEHOLDER, Recorder, Vocabulary, load, parse, problems_of

#: semconv constants that name operations, span or metric attributes, audit fields and outcomes.
_PREFIXES = ("OPERATION_", "SIGTRACE_", "DB_", "AUDIT_", "OUTCOME_", "METRIC_", "AWS_", "RPC_", "OLD_DB_")
#: Constants of that kind that no sink or source sends (so not documented).
_NOT_SENT = {"OLD_DB_SQL_TABLE"}


def _constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(semconv).items()
        if name.isupper() and isinstance(value, str) and name.startswith(_PREFIXES) and name not in _NOT_SENT
    }


# --- the document ---


def test_the_common_tables_and_shared_names_are_parsed() -> None:
    vocabulary = load()
    assert {semconv.DB_OPERATION_NAME, semconv.SIGTRACE_SOURCE, semconv.ERROR_TYPE} <= vocabulary.span_attributes
    assert {semconv.OLD_DB_SYSTEM, semconv.OLD_DB_OPERATION, semconv.OLD_DB_NAME} == vocabulary.dup_attributes
    assert {"source", "operation", "outcome", "values", "trace_id", "orphan_reason"} <= vocabulary.audit_fields
    assert {semconv.OPERATION_SAVE, semconv.OPERATION_RELATION_CLEAR, semconv.OPERATION_FLUSH} <= (
        vocabulary.shared_operations
    )
    assert {semconv.SIGTRACE_ROWS_AFFECTED, semconv.SIGTRACE_RELATION_PK} <= vocabulary.shared_span_attributes
    assert {semconv.AUDIT_PKS_TRUNCATED, semconv.AUDIT_BATCH_SIZE} <= vocabulary.shared_audit_fields


@pytest.mark.parametrize("source", sorted(REGISTRY))
def test_every_registered_source_has_its_subsection(source: str) -> None:
    own = load().of(source)  # fails naming what is wrong with it
    assert own.operations, f"{source} lists no operation"


def test_every_subsection_is_a_registered_source() -> None:
    assert set(load().listed) <= set(REGISTRY), f"subsections for sources that are not registered in {DOC}"


def test_shared_names_are_semconv_constants() -> None:
    """ "One name per act": every shared name is spelt once, in sigtrace/semconv.py (or is a common name)."""
    vocabulary = load()
    values = set(_constants().values())
    shared = vocabulary.shared_operations | vocabulary.shared_span_attributes | vocabulary.shared_audit_fields
    unknown = sorted(shared - values - vocabulary.span_attributes - vocabulary.audit_fields)
    assert not unknown, f"names of '## One name per act' that sigtrace/semconv.py does not define: {unknown}"


def test_semconv_constants_are_documented() -> None:
    vocabulary = load()
    missing = {name: value for name, value in _constants().items() if value not in vocabulary.names}
    assert not missing, (
        f"semconv constants not named in docs/conventions.md (a source's subsection, a common table or "
        f"'## One name per act'): {missing}; sources whose subsection is not usable yet: {sorted(vocabulary.problems)}"
    )


def test_sqlalchemy_lists_exactly_what_it_sends() -> None:
    own = load().of("sqlalchemy")
    assert own.operations == {"flush", "insert", "update", "delete", "select"}
    assert own.span_attributes == {semconv.SIGTRACE_ROWS_AFFECTED, semconv.DB_OPERATION_BATCH_SIZE}
    assert own.audit_fields == {semconv.AUDIT_ROWS, semconv.AUDIT_PKS, semconv.AUDIT_PKS_TRUNCATED, "filter"}


# --- strict parsing, on small documents ---

_COMMON = """# Conventions

## Spans

| Attribute | When | Example |
|---|---|---|
| `db.operation.name` | always | `save` |
| `sigtrace.source` | always | `shelf` |

With `OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`, `db.system` (`dynamodb` for DynamoDB), `db.operation` and
`db.name` are added beside the stable names.

## Audit events

| Field | Meaning |
|---|---|
| `source`, `operation`, `pk` | what was done to what |
| `event` | always `sigtrace.audit` |

## One name per act

| Act | `db.operation.name` | Span names | Audit fields beside the common ones |
|---|---|---|---|
| saved | `save` | `save {table}` | `changed_fields` |

- `rows` (`sigtrace.rows_affected` on the span): rows written; composite pks joined by `|` (`3|9`).

## Vocabulary by source

Prose before the first subsection.

"""


def _doc(subsections: str) -> Vocabulary:
    return parse(_COMMON + subsections, registered=["shelf", "crate"])


def test_a_filled_subsection_with_a_wrapped_item_and_none() -> None:
    vocabulary = _doc(
        "### shelf\n\n- Operations: `save`,\n  `put`\n"
        "- Span attributes: `sigtrace.rows_affected`\n- Audit fields: none\n"
    )
    assert vocabulary.dup_attributes == {"db.system", "db.operation", "db.name"}
    assert vocabulary.shared_span_attributes == {"sigtrace.rows_affected"}
    assert vocabulary.shared_audit_fields == {"rows", "changed_fields"}
    shelf = vocabulary.of("shelf")
    assert (shelf.operations, shelf.span_attributes, shelf.audit_fields) == (
        {"save", "put"},
        {"sigtrace.rows_affected"},
        frozenset(),
    )
    with pytest.raises(AssertionError, match=r"there is no '### crate' subsection"):
        vocabulary.of("crate")


def test_remarks_in_parentheses_and_any_name() -> None:
    vocabulary = _doc(
        "### shelf\n\n- Operations: `*` (the application names them: `name=`, else the signal's)\n"
        "- Span attributes: `*` (those the application passes as `attributes=`)\n"
        "- Audit fields: none (one event per item, with the common fields).\n"
    )
    shelf = vocabulary.of("shelf")
    assert (shelf.operations, shelf.span_attributes, shelf.audit_fields) == ({"*"}, {"*"}, frozenset())
    assert shelf.any_operation and shelf.any_span_attribute and not shelf.any_audit_field


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            f"- Operations: {PLACEHOLDER}\n- Span attributes: {PLACEHOLDER}\n- Audit fields: {PLACEHOLDER}\n",
            r"'### shelf' is still the placeholder",
        ),
        (
            f"- Operations: `put`\n- Span attributes: none\n- Audit fields: {PLACEHOLDER}\n",
            r"Audit fields.*placeholder",
        ),
        ("- Operations: `put`\n- Audit fields: none\n", r"'- Span attributes: \.\.\.' is missing"),
        ("- Operations: put, get\n- Span attributes: none\n- Audit fields: none\n", r"not a comma-separated list"),
        ("- Operations: `put`\n- Span attributes: `rows`\n- Audit fields: none\n", r"do not look like span attr"),
        ("- Operations: `put`\n- Span attributes: none\n- Audit fields: none\n- Notes: `x`\n", r"unexpected item"),
        ("- Operations: `put`\nSome prose.\n- Span attributes: none\n- Audit fields: none\n", r"unexpected line"),
        ("- Operations: `put`\n- Operations: `get`\n- Span attributes: none\n- Audit fields: none\n", r"twice"),
    ],
)
def test_a_subsection_that_is_not_in_the_form_is_a_problem_of_its_source(body: str, message: str) -> None:
    vocabulary = _doc(f"### shelf\n\n{body}")
    assert "shelf" not in vocabulary.sources
    with pytest.raises(AssertionError, match=message) as raised:
        vocabulary.of("shelf")
    assert "docs/conventions.md" in str(raised.value) and "'### shelf'" in str(raised.value)


def test_a_document_without_its_common_tables_fails_at_once() -> None:
    with pytest.raises(AssertionError, match=r"no table whose first column is 'Attribute'"):
        parse(_COMMON.replace("| Attribute |", "| Name |"))
    with pytest.raises(AssertionError, match=r"no '## One name per act' section"):
        parse(_COMMON.replace("## One name per act", "## Names"))


# --- checking spans and events ---


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _span(provider: TracerProvider, exporter: InMemorySpanExporter, name: str, **attributes: Any) -> ReadableSpan:
    exporter.clear()
    with provider.get_tracer(semconv.SCOPE_NAME).start_as_current_span(name, attributes=attributes):
        pass
    (span,) = exporter.get_finished_spans()
    return span


def test_undocumented_names_are_named_with_their_source_and_where_to_document_them(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    vocabulary = _doc("### shelf\n\n- Operations: `put`\n- Span attributes: none\n- Audit fields: `rows`\n")
    good = _span(*spans, "put shelves", **{"db.operation.name": "put", "sigtrace.source": "shelf"})
    bad = _span(*spans, "take shelves", **{"db.operation.name": "take", "sigtrace.source": "shelf", "shelf.x": 1})
    events = [
        {"source": "shelf", "operation": "put", "pk": "1", "rows": 1, "event": "sigtrace.audit"},
        {"source": "shelf", "operation": "put", "pk": "1", "count": 2, "event": "sigtrace.audit"},
    ]
    assert problems_of(vocabulary, [good], events[:1]) == []
    found = problems_of(vocabulary, [bad], events)
    assert len(found) == 3, found
    operation, attribute, field = found
    assert "span 'take shelves' (source shelf)" in operation and "'take'" in operation and "Operations" in operation
    assert "'shelf.x'" in attribute and "'### shelf' -> 'Span attributes' in docs/conventions.md" in attribute
    assert "audit event 'put'" in field and "'count'" in field and "'Audit fields'" in field
    # `*`: whatever the user chooses is documented.
    anything = _doc("### shelf\n\n- Operations: `*`\n- Span attributes: `*`\n- Audit fields: `*`\n")
    assert problems_of(anything, [bad], events) == []


def test_an_unusable_subsection_is_reported_once_with_what_the_source_sent(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    vocabulary = _doc(
        f"### shelf\n\n- Operations: {PLACEHOLDER}\n- Span attributes: {PLACEHOLDER}\n- Audit fields: {PLACEHOLDER}\n"
    )
    span = _span(*spans, "put shelves", **{"db.operation.name": "put", "sigtrace.source": "shelf", "sigtrace.x": 1})
    events = [{"source": "crate", "operation": "pack", "boxes": 3, "event": "sigtrace.audit"}] * 2
    found = problems_of(vocabulary, [span, span], events)
    assert len(found) == 2, found
    crate, shelf = found
    assert "'crate' cannot be checked" in crate and "no '### crate' subsection" in crate
    assert "Operations: `pack`" in crate and "Audit fields: `boxes`" in crate
    assert "'### shelf' is still the placeholder" in shelf
    assert "Operations: `put`" in shelf and "Span attributes: `sigtrace.x`" in shelf


# --- the recorder, on a real installation ---


class _Base(orm.DeclarativeBase):
    pass


class _Note(_Base):
    __tablename__ = "vocabulary_notes"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(20))


def test_the_recorder_checks_what_a_test_cleared() -> None:
    engine = sa.create_engine("sqlite://")
    _Base.metadata.create_all(engine)
    recorder = Recorder()
    with recorder.capture(sources=["sqlalchemy"]) as cap, orm.Session(engine) as session:
        session.add(_Note(id=1, text="a"))
        session.commit()
        session.execute(sa.update(_Note).where(_Note.id == 1).values(text="b"))
        session.commit()
        assert len(cap.audit_events) == 2
        cap.clear()
    assert cap.spans == () and cap.audit_events == []
    assert {span.name for span in recorder.spans} == {"flush", "insert vocabulary_notes", "update vocabulary_notes"}
    assert [event["operation"] for event in recorder.events] == ["insert", "update"]
    recorder.check()  # sqlalchemy's subsection lists all of it
    text = DOC.read_text(encoding="utf-8").replace("`pks_truncated`, `filter`", "`pks_truncated`")
    with pytest.raises(AssertionError, match=r"audit field 'filter' is not documented"):
        recorder.check(parse(text, REGISTRY))
    engine.dispose()
