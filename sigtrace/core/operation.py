"""The library-neutral operation that sources start and finish and sinks report.

A source fills the descriptive fields (what, on which model/collection, which signal); the
engine fills the run-time ones (span, clock, outcome). Sinks read it and know nothing of ORMs.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from sigtrace.core.transactions import Transaction

__all__ = ["Operation"]


@dataclass(slots=True, eq=False)
class Operation:
    """One observed data-layer operation, from its start (pre signal or entry point) to its end."""

    source: str
    name: str
    model: str | None = None
    collection: str | None = None
    db_system: str | None = None
    namespace: str | None = None
    pk: str | None = None
    correlation_id: str | None = None
    signal: str | None = None
    #: The signal that ends the operation when it goes as expected (a pair's post signal), where the source
    #: knows it at the start: the span starts with it as ``sigtrace.signal`` (one attribute call fewer at the
    #: end, see ``sinks/spans.py``); ``signal`` stays the last signal seen, and the span says so at its end.
    post_signal: str | None = None
    #: Writes always reach the audit log; reads only with ``audit_reads``.
    write: bool = True
    #: Extra span attributes (low or high cardinality; never used as metric attributes).
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    #: Names of the fields the operation changes (always safe to log).
    changed_fields: Sequence[str] | None = None
    #: Field values; reported only with ``capture_values`` and always through redaction.
    values: Mapping[str, Any] | None = None
    #: Extra audit fields (e.g. both sides of a relation); keys never collide with the standard ones.
    audit: dict[str, Any] = field(default_factory=dict)
    #: A batch's items: one audit event per item (each mapping overrides fields such as ``pk``)
    #: instead of one for the operation; an empty sequence audits nothing (e.g. a run whose items
    #: are operations audited on their own). ``None``: one event, as usual.
    audit_items: Sequence[Mapping[str, Any]] | None = None
    #: The transaction (or savepoint) open on the connection the write runs on, set by the source
    #: (``core/transactions.py``): its audit event and count wait for that transaction's end.
    #: ``None``: autocommit, or a write that commits before it returns.
    transaction: Transaction | None = None

    # --- run time, owned by the engine ---
    key: Hashable | None = None
    span: Span | None = None
    start_ns: int = 0
    start_monotonic: float = 0.0
    token: Any = None
    outcome: str | None = None
    error: BaseException | None = None
    error_type: str | None = None
    orphaned: bool = False
    actor: str | None = None
    ref: weakref.ReferenceType[Any] | None = None
    done: bool = False
    #: Ended inside an open transaction: its final outcome waits for the transaction (the operation
    #: stays in the in-flight table until then; see ``core/transactions.py``).
    held: bool = False
    #: The audit events of a held write, built when it ended and delivered when it is resolved.
    audit_pending: list[dict[str, Any]] | None = None
    #: The attributes the span was started with (the span sink sets only what changed at the end),
    #: and the cached part of them (the same object at the end: name, model and collection unchanged).
    span_attributes: Mapping[str, AttributeValue] | None = None
    span_base: Mapping[str, AttributeValue] | None = None

    @property
    def span_name(self) -> str:
        return f"{self.name} {self.collection}" if self.collection else self.name

    def update(self, **fields: Any) -> None:
        """Fill in descriptive fields learnt later (e.g. the pk from the post signal); ``None`` keeps the old value."""
        for name, value in fields.items():
            if value is None:
                continue
            if name == "attributes":
                self.attributes.update(value)
            elif name == "audit":
                self.audit.update(value)
            else:
                setattr(self, name, value)
