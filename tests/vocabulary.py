"""The documented vocabulary (docs/conventions.md) and the check of spans and audit events against it.

The document is parsed with plain ``re`` (the old-stack environments have no markdown library):

* the common span attributes: the ``Attribute`` table of "## Spans" (and the old names its
  ``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`` paragraph adds);
* the common audit fields: the ``Field`` table of "## Audit events";
* the shared names of "## One name per act" (its table and its bullet list);
* one subsection per source under "## Vocabulary by source", strictly in this form::

      ### <source>

      - Operations: `save`, `update`          (`*`: the user chooses the names)
      - Span attributes: `sigtrace.rows_affected`
      - Audit fields: `rows`, `filter`

  each item a comma-separated list of names in backticks (`*`: any name, the user chooses them),
  or ``none``, maybe followed by a remark in parentheses (whose names are not listed); an item may
  wrap onto indented lines. A placeholder, a missing item, another line or a missing subsection is
  a problem of that source, reported when its spans or events are checked.

A span or event is checked against its own source's subsection (``sigtrace.source``, audit
``source``): ``db.operation.name`` / ``operation`` among its operations, every attribute key in the
common table or its span attributes, every audit field in the common table or its audit fields.
:func:`assert_vocabulary` checks one capture; a :class:`Recorder` sees every span and audit event
of the captures it makes, also those a test clears (the contract suite's hook, ``tests/contract.py``).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from sigtrace import semconv
from sigtrace.testing import Capture, capture

__all__ = [
    "ANY",
    "DOC",
    "Recorder",
    "SourceVocabulary",
    "Vocabulary",
    "assert_vocabulary",
    "load",
    "parse",
    "problems_of",
]

DOC = Path(__file__).resolve().parent.parent / "docs" / "conventions.md"
#: The document as named in failure messages.
DOC_NAME = "docs/conventions.md"
PLACEHOLDER = "(filled in by the source rewrite)"
#: In a list: any name (the user chooses them).
ANY = "*"
#: Each subsection's items: the line's label -> the field of :class:`SourceVocabulary`.
ITEMS = {"Operations": "operations", "Span attributes": "span_attributes", "Audit fields": "audit_fields"}

_NAME = re.compile(r"`([^`]+)`")
#: An item's value: ``none`` or names in backticks, then maybe a remark in parentheses (its names are not listed).
_VALUE = re.compile(r"(?P<names>none|`[^`]+`(?:\s*,\s*`[^`]+`)*)(?:\s+\((?P<remark>.*)\))?\.?")
_ITEM = re.compile(r"- ([A-Z][a-z]+(?: [a-z]+)*):\s*(.*)")
#: An attribute key (``db.operation.name``, ``sigtrace.relation.pk``) and an audit field (``pks_truncated``).
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")
_FIELD = re.compile(r"[a-z][a-z0-9_]*")
_DUP_PARAGRAPH = "With `OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`"
#: At most this many distinct problems are listed in one failure.
_MAX_LISTED = 30


@dataclass(frozen=True)
class SourceVocabulary:
    """What one source may send beyond the common names."""

    name: str
    operations: frozenset[str]
    span_attributes: frozenset[str]
    audit_fields: frozenset[str]

    @property
    def any_operation(self) -> bool:
        """``*`` among its operations: the user names them (declared signals)."""
        return ANY in self.operations

    @property
    def any_span_attribute(self) -> bool:
        """``*`` among its span attributes: the user passes them (``attributes=`` of a declared signal)."""
        return ANY in self.span_attributes

    @property
    def any_audit_field(self) -> bool:
        return ANY in self.audit_fields


@dataclass(frozen=True)
class Vocabulary:
    """docs/conventions.md, parsed."""

    span_attributes: frozenset[str]
    #: Old names added beside the stable ones under ``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup``.
    dup_attributes: frozenset[str]
    audit_fields: frozenset[str]
    shared_operations: frozenset[str]
    shared_span_attributes: frozenset[str]
    shared_audit_fields: frozenset[str]
    sources: Mapping[str, SourceVocabulary]
    #: Why a source's subsection cannot be used, by source (a placeholder, a malformed item...).
    problems: Mapping[str, Sequence[str]]
    #: The sources that have a subsection, in the document's order.
    listed: tuple[str, ...]
    #: Every name in backticks anywhere in the document.
    names: frozenset[str] = field(default_factory=frozenset)

    def of(self, source: str) -> SourceVocabulary:
        """The subsection of ``source``; an AssertionError saying what to fix where there is none usable."""
        found = self.sources.get(source)
        if found is not None:
            return found
        reasons = self.problems.get(source) or [
            f"there is no '### {source}' subsection under '## Vocabulary by source'"
        ]
        raise AssertionError(_source_message(source, reasons))


def _source_message(source: str, reasons: Iterable[str]) -> str:
    listed = "\n".join(f"  - {reason}" for reason in reasons)
    return (
        f"{DOC_NAME}: the vocabulary of source {source!r} cannot be checked:\n{listed}\n"
        f"Document {source}'s names in {DOC_NAME}, '## Vocabulary by source' -> '### {source}', as\n"
        "  - Operations: `name`, ...\n  - Span attributes: `key`, ...\n  - Audit fields: `field`, ...\n"
        "(names in backticks, comma-separated, maybe followed by a remark in parentheses; `none` for an empty "
        "list; `*` where the user chooses the names)."
    )


# --- parsing ---


def _sections(lines: Sequence[str], marker: str) -> dict[str, list[str]]:
    """The lines under each heading of one level (``## `` or ``### ``), by heading text; a heading of
    a higher level ends the section."""
    level = len(marker) - 1
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        heading = re.match(r"(#+) ", line)
        if heading is not None and len(heading.group(1)) == level:
            current = found.setdefault(line[len(marker) :].strip(), [])
        elif heading is not None and len(heading.group(1)) < level:
            current = None
        elif current is not None:
            current.append(line)
    return found


def _cells(row: str) -> list[str]:
    """The cells of a table row (``|`` inside backticks is text, not a border)."""
    cells: list[str] = []
    cell: list[str] = []
    quoted = False
    for char in row.strip().strip("|"):
        if char == "`":
            quoted = not quoted
        if char == "|" and not quoted:
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(char)
    cells.append("".join(cell).strip())
    return cells


def _tables(lines: Sequence[str]) -> list[list[list[str]]]:
    """Every table of a section: its rows of cells, the header first, the ``|---|`` line left out."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in lines:
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
                current.append(_cells(line))
        else:
            current = None
    return tables


def _table(lines: Sequence[str], first_header: str, where: str) -> list[list[str]]:
    for table in _tables(lines):
        if table and table[0] and table[0][0] == first_header:
            return table
    raise AssertionError(f"{DOC_NAME}: no table whose first column is {first_header!r} in {where}")


def _column_names(table: Sequence[Sequence[str]], index: int) -> set[str]:
    return {name for row in table[1:] if len(row) > index for name in _NAME.findall(row[index])}


def _section(sections: Mapping[str, list[str]], title: str) -> list[str]:
    found = sections.get(title)
    if found is None:
        raise AssertionError(f"{DOC_NAME}: no '## {title}' section")
    return found


def _subsection(name: str, lines: Sequence[str]) -> tuple[SourceVocabulary | None, list[str]]:
    """One source's subsection: its vocabulary, or the problems that keep it from being one."""
    problems: list[str] = []
    values: dict[str, str] = {}
    label: str | None = None
    for raw in lines:
        line = raw.rstrip()
        if not line.strip():
            label = None
            continue
        match = _ITEM.fullmatch(line)
        if match is not None:
            label = match.group(1)
            if label not in ITEMS:
                problems.append(f"unexpected item {line!r} (the items are {', '.join(ITEMS)})")
                label = None
            elif label in values:
                problems.append(f"'{label}' is given twice")
                label = None
            else:
                values[label] = match.group(2).strip()
        elif label is not None and raw[:1].isspace():
            values[label] = f"{values[label]} {line.strip()}"  # an item wrapped onto the next line
        else:
            problems.append(f"unexpected line {line!r} (only the three items belong there)")
    if values and all(values.get(label) == PLACEHOLDER for label in ITEMS):
        return None, [f"'### {name}' is still the placeholder {PLACEHOLDER!r}: it is not filled in yet"]
    parsed: dict[str, frozenset[str]] = {}
    for label, attribute in ITEMS.items():
        text = values.get(label)
        if text is None:
            problems.append(f"the item '- {label}: ...' is missing")
            continue
        if text == PLACEHOLDER or not text:
            problems.append(f"'- {label}: {text}' is a placeholder: '### {name}' is not filled in yet")
            continue
        value = _VALUE.fullmatch(text)
        if value is None:
            problems.append(
                f"'- {label}: {text}' is not a comma-separated list of `names` (or `none`), "
                "maybe followed by a remark in parentheses"
            )
            continue
        names = frozenset(_NAME.findall(value.group("names")))
        shape = _ATTRIBUTE if attribute == "span_attributes" else _FIELD if attribute == "audit_fields" else None
        odd = sorted(n for n in names if shape is not None and n != ANY and not shape.fullmatch(n))
        if odd:
            problems.append(f"'- {label}': {odd} do not look like {label.lower()}")
            continue
        parsed[attribute] = names
    if problems:
        return None, problems
    return SourceVocabulary(name, parsed["operations"], parsed["span_attributes"], parsed["audit_fields"]), []


def parse(text: str, registered: Iterable[str] = ()) -> Vocabulary:
    """Parse the document's text; a registered source without a subsection is one of its problems.

    A document without the common tables or the sections fails at once (AssertionError): nothing
    could be checked against it.
    """
    lines = text.splitlines()
    chapters = _sections(lines, "## ")
    spans = _section(chapters, "Spans")
    span_attributes = _column_names(_table(spans, "Attribute", "'## Spans'"), 0)
    dup: set[str] = set()
    in_dup = False
    for line in spans:
        in_dup = line.startswith(_DUP_PARAGRAPH) or (in_dup and bool(line.strip()))  # to the paragraph's end
        if in_dup:
            dup.update(n for n in _NAME.findall(line) if _ATTRIBUTE.fullmatch(n))
    audit_fields = _column_names(_table(_section(chapters, "Audit events"), "Field", "'## Audit events'"), 0)
    acts = _section(chapters, "One name per act")
    act_table = _table(acts, "Act", "'## One name per act'")
    header = act_table[0]
    if "`db.operation.name`" not in header:
        raise AssertionError(f"{DOC_NAME}: the '## One name per act' table has no `db.operation.name` column")
    shared_operations = _column_names(act_table, header.index("`db.operation.name`"))
    shared_names = _column_names(act_table, len(header) - 1)
    for line in acts:
        if line.startswith(("- ", "  ")):
            shared_names.update(_NAME.findall(line))
    by_source = _sections(_section(chapters, "Vocabulary by source"), "### ")
    sources: dict[str, SourceVocabulary] = {}
    problems: dict[str, list[str]] = {}
    for name, body in by_source.items():
        vocabulary, found = _subsection(name, body)
        if vocabulary is not None:
            sources[name] = vocabulary
        else:
            problems[name] = found
    for name in registered:
        if name not in by_source:
            problems[name] = [f"there is no '### {name}' subsection under '## Vocabulary by source'"]
    return Vocabulary(
        span_attributes=frozenset(span_attributes),
        dup_attributes=frozenset(dup),
        audit_fields=frozenset(audit_fields),
        shared_operations=frozenset(shared_operations),
        shared_span_attributes=frozenset(n for n in shared_names if _ATTRIBUTE.fullmatch(n)),
        shared_audit_fields=frozenset(n for n in shared_names if _FIELD.fullmatch(n)),
        sources=sources,
        problems=problems,
        listed=tuple(by_source),
        names=frozenset(_NAME.findall(text)),
    )


@functools.lru_cache(maxsize=1)
def load() -> Vocabulary:
    """docs/conventions.md, parsed once per test run, with every registered source expected."""
    from sigtrace.sources import REGISTRY

    return parse(DOC.read_text(encoding="utf-8"), REGISTRY)


# --- checking ---


def _is_sigtrace(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name == semconv.SCOPE_NAME


class _Seen:
    """The names one source sent beyond the common ones (what its subsection would have to list)."""

    def __init__(self) -> None:
        self.operations: set[str] = set()
        self.span_attributes: set[str] = set()
        self.audit_fields: set[str] = set()

    def suggestion(self, source: str) -> str:
        def names(found: set[str]) -> str:
            return ", ".join(f"`{n}`" for n in sorted(found)) or "none"

        return (
            f"{source} sent, beyond the common names:\n  - Operations: {names(self.operations)}\n"
            f"  - Span attributes: {names(self.span_attributes)}\n  - Audit fields: {names(self.audit_fields)}"
        )


def _check_span(
    vocabulary: Vocabulary, what: str, attributes: Mapping[str, Any], problems: list[str], seen: dict[str, _Seen]
) -> None:
    source = attributes.get(semconv.SIGTRACE_SOURCE)
    if not isinstance(source, str):
        problems.append(f"{what}: no {semconv.SIGTRACE_SOURCE} attribute")
        return
    name = attributes.get(semconv.DB_OPERATION_NAME)
    extra = set(attributes) - vocabulary.span_attributes - vocabulary.dup_attributes
    sent = seen.setdefault(source, _Seen())
    sent.operations.add(str(name))
    sent.span_attributes.update(extra)
    own = vocabulary.sources.get(source)
    if own is None:
        return  # reported once, with what it sent
    if not own.any_operation and name not in own.operations:
        problems.append(
            f"{what} (source {source}): {semconv.DB_OPERATION_NAME} {name!r} is not one of {source}'s documented "
            f"operations {sorted(own.operations)}: document it in {DOC_NAME} under '### {source}' -> 'Operations'"
        )
    undocumented = set() if own.any_span_attribute else extra - own.span_attributes
    for key in sorted(undocumented):
        problems.append(
            f"{what} (source {source}): span attribute {key!r} is not documented: add it to '### {source}' -> "
            f"'Span attributes' in {DOC_NAME} (or to the common table of '## Spans')"
        )


def _check_event(vocabulary: Vocabulary, event: Mapping[str, Any], problems: list[str], seen: dict[str, _Seen]) -> None:
    source = event.get("source")
    operation = event.get("operation")
    what = f"audit event {operation!r} of {event.get('model') or event.get('collection')!r}"
    if not isinstance(source, str):
        problems.append(f"{what}: no 'source' field")
        return
    extra = set(event) - vocabulary.audit_fields
    sent = seen.setdefault(source, _Seen())
    sent.operations.add(str(operation))
    sent.audit_fields.update(extra)
    own = vocabulary.sources.get(source)
    if own is None:
        return
    if not own.any_operation and operation not in own.operations:
        problems.append(
            f"{what} (source {source}): operation {operation!r} is not one of {source}'s documented operations "
            f"{sorted(own.operations)}: document it in {DOC_NAME} under '### {source}' -> 'Operations'"
        )
    undocumented = set() if own.any_audit_field else extra - own.audit_fields
    for key in sorted(undocumented):
        problems.append(
            f"{what} (source {source}): audit field {key!r} is not documented: add it to '### {source}' -> "
            f"'Audit fields' in {DOC_NAME} (or to the common table of '## Audit events')"
        )


def problems_of(
    vocabulary: Vocabulary, spans: Iterable[ReadableSpan], events: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Every problem of these spans and audit events: one line each, naming the source, the span or
    event and the unknown name; a source whose subsection is unusable is reported once, with why and
    with the names it sent (what its subsection has to list)."""
    problems: list[str] = []
    seen: dict[str, _Seen] = {}
    for span in spans:
        if _is_sigtrace(span):
            _check_span(vocabulary, f"span {span.name!r}", dict(span.attributes or {}), problems, seen)
        for span_event in span.events:
            attributes = dict(span_event.attributes or {})
            if semconv.SIGTRACE_SOURCE in attributes:  # a single signal's event (record_event)
                what = f"span event {span_event.name!r} on span {span.name!r}"
                _check_span(vocabulary, what, attributes, problems, seen)
    for event in events:
        _check_event(vocabulary, event, problems, seen)
    unusable: list[str] = []
    for source in sorted(set(seen) - set(vocabulary.sources)):
        reasons = vocabulary.problems.get(source) or [f"there is no '### {source}' subsection"]
        unusable.append(f"{_source_message(source, reasons)}\n{seen[source].suggestion(source)}")
    return unusable + problems


def _raise(problems: Sequence[str]) -> None:
    if not problems:
        return
    counted: dict[str, int] = {}
    for problem in problems:
        counted[problem] = counted.get(problem, 0) + 1
    listed = [f"{p}{f' ({n} times)' if n > 1 else ''}" for p, n in counted.items()]
    more = f"\n... and {len(listed) - _MAX_LISTED} more" if len(listed) > _MAX_LISTED else ""
    raise AssertionError("vocabulary check failed:\n" + "\n".join(listed[:_MAX_LISTED]) + more)


def assert_vocabulary(cap: Capture, vocabulary: Vocabulary | None = None) -> None:
    """Every span and audit event of ``cap`` so far uses only documented names (docs/conventions.md)."""
    _raise(problems_of(vocabulary or load(), cap.spans, cap.audit_events))


class _Keep(SpanProcessor):
    def __init__(self, spans: list[ReadableSpan], lock: threading.Lock) -> None:
        self._spans = spans
        self._lock = lock

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._spans.append(span)


class Recorder:
    """Every span and audit event of the captures made through :meth:`capture`, whatever the test clears."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[ReadableSpan] = []
        self.events: list[dict[str, Any]] = []

    @contextmanager
    def capture(self, **options: Any) -> Iterator[Capture]:
        """:func:`sigtrace.testing.capture`, seen by this recorder (an ``audit=`` of the caller's is kept)."""
        made: list[Capture] = []
        if "audit" not in options:

            def audit(event: Mapping[str, Any]) -> None:
                with self._lock:
                    self.events.append(dict(event))
                made[0].record_audit(event)

            options["audit"] = audit
        with capture(**options) as cap:
            made.append(cap)
            cap.tracer_provider.add_span_processor(_Keep(self.spans, self._lock))
            yield cap

    def wrap(self, capture_function: Callable[..., Any]) -> Callable[..., Any]:
        """What a test module's ``capture`` becomes: this recorder's (``capture_function`` is the original)."""
        return self.capture if capture_function is capture else capture_function

    def check(self, vocabulary: Vocabulary | None = None) -> None:
        """Fail (AssertionError) on any undocumented name among everything recorded."""
        with self._lock:
            spans, events = list(self.spans), list(self.events)
        _raise(problems_of(vocabulary or load(), spans, events))
