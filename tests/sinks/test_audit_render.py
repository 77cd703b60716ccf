"""An audit line is what structlog's ``JSONRenderer`` writes, whatever the values (sigtrace/sinks/audit.py).

The writer renders with one C encoder made once and writes bytes it builds around it (the
``seq``/``stream``/``prev`` prefix, the newline): these tests pin that rendering to structlog's for
the usual event and for values that exercise every escape (separators at string edges, quotes,
backslashes, DEL, control and non-ASCII characters, NaN, big ints, nested containers).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from sigtrace.sinks.audit import JsonLinesWriter
from sigtrace.sinks.chain import line_hash

AUDIT_EVENT: dict[str, Any] = {
    "timestamp": "2026-12-02T01:20:00.123456+00:00",
    "service_name": "orders",
    "source": "django",
    "operation": "save",
    "model": "Order",
    "collection": "shop_order",
    "pk": "42",
    "outcome": "ok",
    "duration_ms": 0.731,
    "changed_fields": ["status", "total"],
    "actor": "alice",
    "signal": "post_save",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "event": "sigtrace.audit",
}

# Text that exercises every check: separators at string edges, quotes, backslashes, DEL, controls, non-ASCII.
TRICKY = [*'ab:,"\\ {}[]', "\x7f", "\x00", "\n", "é", "\u2028", "😀"]
tricky_text = st.text(alphabet=st.sampled_from(TRICKY), max_size=6)
text = st.one_of(st.text(max_size=8), tricky_text)
scalars = st.one_of(
    text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-4, max_value=1e16),
    st.none(),
)
values = st.one_of(
    scalars, st.lists(text, max_size=3), st.lists(scalars, max_size=3), st.dictionaries(text, scalars, max_size=2)
)


def test_the_usual_event_is_rendered_as_structlog_renders_it() -> None:
    line = _line(AUDIT_EVENT)
    assert line == _structlog_line(line, AUDIT_EVENT)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pk", ":starts with a colon"),
        ("pk", "ends with a comma,"),
        ("pk", 'a "quote"'),
        ("pk", "é"),
        ("pk", "\x7f"),
        ("duration_ms", 1e16),
        ("duration_ms", 5e-5),
        ("duration_ms", math.nan),
        ("pk", 2**64),
        ("values", {"n": 1}),
        ("changed_fields", ["a", 1]),
    ],
)
def test_every_escape_and_number_form_is_structlogs(field: str, value: Any) -> None:
    event = {**{k: v for k, v in AUDIT_EVENT.items() if k != "event"}, field: value, "event": "sigtrace.audit"}
    line = _line(event)
    assert line == _structlog_line(line, event)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["pk", "signal", "n", "x", "a:b,"]), values, max_size=4))
def test_a_written_line_is_structlogs_rendering_whatever_the_values(extra: dict[str, Any]) -> None:
    event = {**{k: v for k, v in AUDIT_EVENT.items() if k != "event"}, **extra, "event": "sigtrace.audit"}
    line = _line(event)
    assert line == _structlog_line(line, event)


def _line(event: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = JsonLinesWriter(buffer)
    writer(dict(event))
    _header, line = buffer.getvalue().splitlines()
    return line


def _structlog_line(line: str, event: dict[str, Any]) -> str:
    """What structlog renders for ``event`` with the seq, stream and prev ``line`` carries."""
    head = json.loads(line)
    rendered: str = structlog.processors.JSONRenderer()(
        None, "info", {"seq": head["seq"], "stream": head["stream"], "prev": head["prev"], **event}
    )
    return rendered


def test_a_file_line_carries_the_chain_hash_of_the_line_before(tmp_path: Path) -> None:
    """The writer's inlined write and hash for a file it opened (sinks/audit.py) are chain.py's line_hash."""
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(str(path))
    writer(dict(AUDIT_EVENT))
    writer(dict(AUDIT_EVENT))
    writer.close()
    header, first, second = path.read_bytes().splitlines()
    assert json.loads(first)["prev"] == line_hash(header)
    assert json.loads(second)["prev"] == line_hash(first)
    assert first.decode() == _structlog_line(first.decode(), AUDIT_EVENT)
