"""sigtrace installed for a whole run of a library's own test suite (tests/peer/run.py puts this on PYTHONPATH).

Production settings: ``SIGTRACE_STRICT`` unset, every source whose library is importable, the audit log to a file
of this process. At exit: uninstall (in-flight operations become orphans with reason ``uninstall``) and write what
sigtrace counted (internal errors by kind, the "sigtrace internal error" log lines) beside the audit file.
Does nothing unless ``SIGTRACE_PEER_DIR`` is set, so a child interpreter of the plain run stays plain.
"""

from __future__ import annotations

import atexit
import json
import logging
import os

_DIR = os.environ.get("SIGTRACE_PEER_DIR")


class _InternalErrorLines(logging.Handler):
    """Counts the warnings sigtrace's safety net logs (sigtrace/core/safety.py)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "sigtrace internal error" in message:
            self.count += 1
            if len(self.first) < 5:
                self.first.append(message[:500])


def _start(directory: str) -> None:
    os.environ.pop("SIGTRACE_STRICT", None)  # production behaviour: the safety net swallows and counts
    pid = os.getpid()
    lines = _InternalErrorLines()
    logging.getLogger("sigtrace").addHandler(lines)
    import sigtrace
    from sigtrace.core import safety

    installation = sigtrace.install(
        service_name="sigtrace-peer", audit_file=os.path.join(directory, f"audit-{pid}.jsonl")
    )
    sources = sorted(installation.sources)

    def finish() -> None:
        in_flight = installation.in_flight()
        try:
            sigtrace.uninstall()
        finally:
            stats = {
                "pid": pid,
                "sources": sources,
                "in_flight_at_exit": in_flight,
                "internal_errors": safety.error_counts(),
                "internal_error_lines": lines.count,
                "internal_error_messages": lines.first,
            }
            with open(os.path.join(directory, f"stats-{pid}.json"), "w", encoding="utf-8") as out:
                json.dump(stats, out)

    atexit.register(finish)


if _DIR:
    _start(_DIR)
