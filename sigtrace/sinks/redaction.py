"""Masking of secret values before they leave the process, and size caps on everything else.

A key that matches a pattern has its value replaced by :data:`MASK`; the mask never echoes the
matched text or the value's length. Strings are cut to a maximum length so that one huge value
cannot bloat a span or an audit line (JSON rendering escapes control characters and newlines).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_PATTERNS", "MASK", "Redactor"]

MASK = "[REDACTED]"
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"pass(word|wd|phrase)?",
    r"secret",
    r"token",
    r"api[-_ ]?key",
    r"access[-_ ]?key",
    r"private[-_ ]?key",
    r"authori[sz]ation",
    r"credit[-_ ]?card",
    r"card[-_ ]?number",
    r"\bcvv\b|\bcvc\b",
    r"\bpan\b",
    r"cookie",
    r"session[-_ ]?id",
)
_MAX_DEPTH = 8
_MAX_ITEMS = 100
# Type tuples made once: ``isinstance(v, int | float)`` builds a union object at every call (hot per event).
_AS_IS = (bool, int, float)
_BYTES = (bytes, bytearray)
_SEQUENCES = (list, tuple, set, frozenset)


class Redactor:
    """Masks values under secret-looking keys, recursively, and caps sizes."""

    def __init__(self, extra_patterns: Iterable[str] = (), max_length: int = 1024) -> None:
        patterns = [*DEFAULT_PATTERNS, *extra_patterns]
        self._regex = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        self.max_length = max_length

    def is_secret(self, key: object) -> bool:
        return bool(self._regex.search(str(key)))

    def clip(self, text: str) -> str:
        if len(text) <= self.max_length:
            return text
        return text[: self.max_length] + f"...[{len(text) - self.max_length} more]"

    def value(self, value: Any, depth: int = 0) -> Any:
        """A JSON-safe, size-capped copy of ``value`` with secret keys masked at every level."""
        if value is None or isinstance(value, _AS_IS):
            return value
        if isinstance(value, str):
            return self.clip(value)
        if isinstance(value, _BYTES):
            return self.clip(bytes(value).decode("utf-8", "backslashreplace"))
        if depth >= _MAX_DEPTH:
            return "[...]"
        if isinstance(value, Mapping):
            return self.mapping(value, depth + 1)
        if isinstance(value, _SEQUENCES):
            items = list(value)[:_MAX_ITEMS]
            return [self.value(item, depth + 1) for item in items]
        try:
            return self.clip(str(value))
        except Exception:  # noqa: BLE001 - a hostile __str__ must not break the audit line
            return f"<unprintable {type(value).__name__}>"

    def mapping(self, values: Mapping[Any, Any], depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, (key, value) in enumerate(values.items()):
            if index >= _MAX_ITEMS:
                out["..."] = f"{len(values) - _MAX_ITEMS} more"
                break
            name = self.clip(str(key))
            out[name] = MASK if self.is_secret(name) else self.value(value, depth)
        return out
