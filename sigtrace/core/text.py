"""Text of a value that cannot fail: what sources put into pks, audit fields and span attributes.

A library hands sigtrace whatever the application defined: a primary key whose ``__str__``
returns an int, or raises, or a ``__repr__`` that raises too (Django's own ``custom_pk`` tests
have such a field). ``str()`` of those raises ``TypeError`` inside sigtrace's receivers, and the
operation loses its pk (or, for a batch, every row). :func:`safe_text` never raises and is bounded.

Trace and span ids are written in one spelling everywhere (audit events, the test helpers, the
trace tree, a row's ``traceparent`` compared): :func:`trace_id_hex` and :func:`span_id_hex`.
"""

from __future__ import annotations

__all__ = ["MAX_TEXT", "safe_text", "span_id_hex", "trace_id_hex"]

#: Longest text :func:`safe_text` returns by default (longer text is cut and ends with ``…``).
MAX_TEXT = 256


def safe_text(value: object, limit: int = MAX_TEXT) -> str:
    """``str(value)``; where that fails, ``repr(value)``; where that fails too, ``<TypeName>``; at most ``limit``."""
    if type(value) is str:
        text = value
    else:
        try:
            text = str(value)
        except Exception:  # noqa: BLE001 - any __str__ may fail; the fallbacks below cannot
            try:
                text = repr(value)
            except Exception:  # noqa: BLE001
                text = f"<{type(value).__qualname__}>"
    if len(text) > limit:
        return text[: max(limit - 1, 0)] + "…"
    return text


def trace_id_hex(trace_id: int) -> str:
    """A trace id as W3C Trace Context writes it: 32 lowercase hex digits, leading zeros kept.

    Through ``bytes.hex()``: the text of ``format(trace_id, "032x")`` without parsing a format
    spec. The audit sink's ``make_event`` spells it inline (every event; a call costs more there).
    """
    return trace_id.to_bytes(16, "big").hex()


def span_id_hex(span_id: int) -> str:
    """A span id as W3C Trace Context writes it: 16 lowercase hex digits (see :func:`trace_id_hex`)."""
    return span_id.to_bytes(8, "big").hex()
