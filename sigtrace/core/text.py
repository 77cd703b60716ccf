"""Text of a value that cannot fail: what sources put into pks, audit fields and span attributes.

A library hands sigtrace whatever the application defined: a primary key whose ``__str__``
returns an int, or raises, or a ``__repr__`` that raises too (Django's own ``custom_pk`` tests
have such a field). ``str()`` of those raises ``TypeError`` inside sigtrace's receivers, and the
operation loses its pk (or, for a batch, every row). :func:`safe_text` never raises and is bounded.
"""

from __future__ import annotations

__all__ = ["MAX_TEXT", "safe_text"]

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
