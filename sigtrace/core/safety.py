"""The safety net: no exception raised inside sigtrace reaches the application.

Every receiver and sink runs under :func:`guard`. A caught error is counted and logged once per
kind, then at most once per ``LOG_INTERVAL`` seconds per kind. Under strict mode (sigtrace's own
test suite: ``SIGTRACE_STRICT=1`` or :func:`strict`) it is raised instead, so the net hides no bug.

The hot path (the engine's finish and entry scopes, the receivers of the most frequent signals)
spells the same net as ``try: ... except Exception as exc: report(kind, exc)``: a with-block costs
two Python calls each time it is entered, and inside an ORM operation every call counts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from sigtrace._config import ConfigError, parse_bool

__all__ = ["error_counts", "guard", "is_strict", "report", "set_error_listener", "strict"]

logger = logging.getLogger("sigtrace")
LOG_INTERVAL = 60.0


_strict: bool | None = None
_lock = threading.Lock()
_counts: dict[str, int] = {}
_last_logged: dict[str, float] = {}
_listener: Callable[[str, BaseException], None] | None = None


def is_strict() -> bool:
    if _strict is not None:
        return _strict
    raw = os.environ.get("SIGTRACE_STRICT", "")
    if not raw.strip():
        return False
    try:
        return parse_bool(raw, "SIGTRACE_STRICT")
    except ConfigError:  # install() rejects such a value; here, inside the safety net, it must not raise
        return False


@contextmanager
def strict(enabled: bool = True) -> Iterator[None]:
    """Raise (``enabled``) or swallow internal errors inside the block, whatever the environment says."""
    global _strict
    previous = _strict
    _strict = enabled
    try:
        yield
    finally:
        _strict = previous


def set_error_listener(listener: Callable[[str, BaseException], None] | None) -> None:
    """Called for every internal error (the metrics sink counts them)."""
    global _listener
    _listener = listener


def error_counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def report(kind: str, exc: BaseException) -> None:
    """Count and (rate-limited) log an internal error; re-raise it in strict mode."""
    now = time.monotonic()
    with _lock:
        count = _counts.get(kind, 0) + 1
        _counts[kind] = count
        last = _last_logged.get(kind)
        should_log = last is None or now - last >= LOG_INTERVAL
        if should_log:
            _last_logged[kind] = now
    if should_log:
        logger.warning(
            "sigtrace internal error in %s (%d so far; the application is not affected): %r",
            kind,
            count,
            exc,
            exc_info=exc,
        )
    listener = _listener
    if listener is not None:
        with contextlib.suppress(Exception):  # a failing counter must not fail the report
            listener(kind, exc)
    if is_strict():
        raise exc


class guard:  # noqa: N801 - used as a function: ``with guard("kind"):``
    """Run a block whose exceptions must never reach the application.

    A plain class rather than ``@contextmanager``: it runs several times per operation, and a
    generator-based context manager costs several times more to enter and leave.
    """

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        report(self.kind, exc)  # re-raises in strict mode
        return True
