"""The audit log's sequence and hash chain: the line format the writer produces and the verifier checks.

One piece of code for both sides (``sigtrace/sinks/audit.py`` writes, ``sigtrace/verify.py``
recomputes): what a line's hash covers, where ``seq``/``stream``/``prev`` stand in a line, and what
a checkpoint's MAC covers. docs/audit.md describes the format for people and log stores.

* An event line starts with ``{"seq": N, "stream": "ID", "prev": "HASH", `` and then has the
  event's own fields, ``event`` last: what structlog's ``JSONRenderer`` writes for the event dict
  with these three fields first.
* A control line (the stream header, a checkpoint) starts with ``{"stream": "ID", "prev": ...``
  and carries no ``seq``: ``seq`` counts audit events only, contiguous from 1 per stream.
* ``prev`` is the SHA-256 (hex) of the exact bytes of the stream's previous line, without its
  newline; ``null`` only on the header that starts a stream.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

__all__ = [
    "CHECKPOINT_EVENT",
    "CONTROL_PREFIX",
    "EVENT_PREFIX",
    "STREAM_EVENT",
    "checkpoint_mac",
    "event_prefix",
    "line_hash",
]

#: ``event`` of the line that starts a stream (process start, fork, a new file after rotation).
STREAM_EVENT: Final = "sigtrace.audit.stream"
#: ``event`` of a keyed checkpoint: an HMAC over the chain head.
CHECKPOINT_EVENT: Final = "sigtrace.audit.checkpoint"

#: The start of an event line, as bytes: seq, stream id, prev hash.
EVENT_PREFIX: Final = re.compile(rb'\{"seq": (\d+), "stream": "([0-9A-Za-z_-]+)", "prev": "([0-9a-f]{64})", ')
#: The start of a control line: stream id, prev hash or null.
CONTROL_PREFIX: Final = re.compile(rb'\{"stream": "([0-9A-Za-z_-]+)", "prev": (?:"([0-9a-f]{64})"|null), ')


def line_hash(line: bytes | memoryview) -> str:
    """The hash the next line of the stream carries as ``prev``: SHA-256 of the line's bytes, no newline."""
    return hashlib.sha256(line).hexdigest()


def event_prefix(seq: int, stream: str, prev: str) -> str:
    """What comes before the event's own fields (the ``{`` included, the first field's key not)."""
    return f'{{"seq": {seq}, "stream": "{stream}", "prev": "{prev}", '


def checkpoint_mac(key: bytes, stream: str, last_seq: int, head: str | None) -> str:
    """HMAC-SHA256 over the chain head: the hash of the line before the checkpoint commits to every
    line before it, so recomputing the chain after an edit without the key gives a MAC that fails."""
    message = f"sigtrace-audit-checkpoint\n{stream}\n{last_seq}\n{head or ''}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()
