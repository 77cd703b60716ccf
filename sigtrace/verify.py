"""``sigtrace audit verify``: recompute an audit log's sequence, hash chain and checkpoints.

The files are read in the order given (a rotated set oldest first, gzip or not) as one record;
every stream (one per process start, several can share a file) is checked on its own: ``seq``
contiguous, each ``prev`` the hash of the stream's line before, each checkpoint's MAC (with the
key). The first break of a stream is reported with its file, line number and kind. The line format
and the hashing are sigtrace/sinks/chain.py's, the same code the writer uses; docs/audit.md explains
what a result means.
"""

from __future__ import annotations

import gzip
import hmac
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from sigtrace.sinks.chain import CHECKPOINT_EVENT, CONTROL_PREFIX, EVENT_PREFIX, STREAM_EVENT, checkpoint_mac, line_hash

__all__ = [
    "BAD_CHECKPOINT",
    "CHANGED",
    "GAP",
    "REORDERED",
    "TRUNCATED",
    "Break",
    "Report",
    "StreamResult",
    "print_report",
    "verify",
]

GAP = "gap"
CHANGED = "changed"
REORDERED = "reordered"
TRUNCATED = "truncated"
BAD_CHECKPOINT = "bad checkpoint"

#: How far ahead a seq that came too early is looked for before the break is called a gap, not a reordering.
LOOKAHEAD = 10_000
#: Lines a stream may have after its last checkpoint, when no header of the stream says how many.
DEFAULT_CHECKPOINT_LINES = 1000
#: The stream a line (or what is left of it) belongs to.
_STREAM_OF = re.compile(rb'\{(?:"seq": \d+, )?"stream": "([0-9A-Za-z_-]+)"')


@dataclass
class Break:
    """Where a stream's record stops verifying: ``file:line``, the kind of break, and what was found."""

    file: str
    line: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.detail}"


@dataclass
class StreamResult:
    stream: str
    lines: int = 0
    events: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    files: list[str] = field(default_factory=list)
    checkpoints: int = 0
    notes: list[str] = field(default_factory=list)
    broken: Break | None = None
    # chain state
    head: str | None = None
    head_at: tuple[str, int] = ("", 0)
    expected: int = 1
    seen: bool = False
    keyed_lines: int | None = None
    uncovered: int = 0

    @property
    def ok(self) -> bool:
        return self.broken is None

    def summary(self, key_given: bool) -> str:
        seqs = f"seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else "no events"
        text = (
            f"stream {self.stream}: {'ok' if self.ok else 'BROKEN'}: {self.lines} lines, {self.events} events, {seqs}"
        )
        if key_given:
            text += f", {self.checkpoints} checkpoints verified"
        elif self.checkpoints:
            text += f", {self.checkpoints} checkpoints not checked (no key)"
        text += f" [{', '.join(self.files)}]"
        for note in self.notes:
            text += f"\n  note: {note}"
        if self.broken is not None:
            text += f"\n  {self.broken}"
        return text


@dataclass
class Report:
    streams: dict[str, StreamResult] = field(default_factory=dict)
    errors: list[Break] = field(default_factory=list)  # lines of no stream, unreadable files

    @property
    def ok(self) -> bool:
        return not self.errors and all(s.ok for s in self.streams.values())


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (EOFError, OSError, zlib.error):  # a cut-off .gz: what it still holds
            out = zlib.decompressobj(wbits=31)
            return out.decompress(data)
    return data


class _Verifier:
    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.report = Report()
        self.origin: list[tuple[str, int]] | None = None

    def stream(self, stream_id: str, file: str) -> StreamResult:
        result = self.report.streams.get(stream_id)
        if result is None:
            result = self.report.streams[stream_id] = StreamResult(stream_id)
        if not result.files or result.files[-1] != file:
            result.files.append(file)
        return result

    def where(self, file: str, line: int) -> tuple[str, int]:
        """A line's file and number as given (with ``sort``, the lines were checked in another order)."""
        if self.origin is not None and file == _SORTED and 0 < line <= len(self.origin):
            return self.origin[line - 1]
        return file, line

    def fail(self, result: StreamResult, file: str, line: int, kind: str, detail: str) -> None:
        if result.broken is None:
            result.broken = Break(*self.where(file, line), kind, detail)

    def file(self, name: str, data: bytes) -> None:
        lines = data.split(b"\n")
        tail = lines.pop()  # what follows the last newline: empty unless the file was cut mid-line
        event_prefix = EVENT_PREFIX.match
        hash_of = line_hash
        streams = self.report.streams
        for number, raw in enumerate(lines, 1):
            match = event_prefix(raw)
            if match is not None:
                stream_id = match[2].decode()
                result = streams.get(stream_id)
                if result is None or result.files[-1] != name:
                    result = self.stream(stream_id, name)
                result.lines += 1
                if result.broken is not None:
                    continue
                seq = int(match[1])
                prev = match[3].decode()
                if not result.seen:
                    result.seen = True
                    result.expected = seq
                    result.head = prev
                    result.notes.append(f"starts mid-stream at seq {seq}: its earlier lines are not in these files")
                if seq != result.expected:
                    self.out_of_order(result, name, number, seq, lines)
                    continue
                if prev != result.head:
                    self.changed(result, name, number)
                    continue
                if result.first_seq is None:
                    result.first_seq = seq
                result.events += 1
                result.last_seq = seq
                result.expected = seq + 1
                result.uncovered += 1
                result.head = hash_of(raw)
                result.head_at = (name, number)
            else:
                self.control(name, number, raw)
        if tail:
            self.truncated(name, len(lines) + 1, tail)

    def truncated(self, name: str, number: int, tail: bytes) -> None:
        match = _STREAM_OF.match(tail)
        detail = f"the file ends inside a line ({len(tail)} bytes, no newline)"
        if match is None:
            self.report.errors.append(Break(name, number, TRUNCATED, detail))
            return
        result = self.stream(match[1].decode(), name)
        result.lines += 1
        self.fail(result, name, number, TRUNCATED, detail)

    def out_of_order(self, result: StreamResult, name: str, number: int, seq: int, lines: Sequence[bytes]) -> None:
        expected = result.expected
        if seq < expected:
            self.fail(result, name, number, REORDERED, f"seq {seq} after seq {expected - 1}")
            return
        wanted = f'{{"seq": {expected}, "stream": "{result.stream}", '.encode()
        for ahead in range(number, min(len(lines), number + LOOKAHEAD)):
            if lines[ahead].startswith(wanted):
                self.fail(result, name, number, REORDERED, f"seq {seq} where seq {expected} was due (it comes later)")
                return
        missing = seq - expected
        self.fail(
            result,
            name,
            number,
            GAP,
            f"seq {seq} where seq {expected} was due ({missing} line{'s' * (missing > 1)} missing)",
        )

    def changed(self, result: StreamResult, name: str, number: int) -> None:
        at_file, at_line = result.head_at
        if at_line:
            self.fail(
                result,
                at_file,
                at_line,
                CHANGED,
                f"its hash is not the prev of the stream's next line, {':'.join(map(str, self.where(name, number)))} "
                "(this line was changed, "
                "or a line between them removed)",
            )
        else:
            self.fail(result, name, number, CHANGED, "prev does not match the stream's line before")

    def control(self, name: str, number: int, raw: bytes) -> None:
        match = CONTROL_PREFIX.match(raw)
        fields: dict[str, Any] | None = None
        if match is not None:
            try:
                loaded = json.loads(raw)
            except ValueError:
                loaded = None
            if isinstance(loaded, dict) and loaded.get("event") in (STREAM_EVENT, CHECKPOINT_EVENT):
                fields = loaded
        if fields is None or match is None:
            self.report.errors.append(Break(name, number, CHANGED, "not a sigtrace audit line"))
            return
        result = self.stream(str(fields["stream"]), name)
        result.lines += 1
        if result.broken is not None:
            return
        prev = fields.get("prev")
        last_seq = fields.get("last_seq")
        if not isinstance(last_seq, int):
            self.fail(result, name, number, CHANGED, "a control line without last_seq")
            return
        header = fields["event"] == STREAM_EVENT
        if header and "checkpoint_lines" in fields:
            result.keyed_lines = int(fields["checkpoint_lines"])
        elif header:
            result.keyed_lines = 0
        if not result.seen:
            result.seen = True
            result.expected = last_seq + 1
            result.head = prev
            if prev is not None:
                result.notes.append(
                    f"starts mid-stream after seq {last_seq}: its earlier lines are in a file not given (rotated)"
                )
            elif not header:
                result.notes.append("starts mid-stream at a checkpoint")
        if last_seq != result.expected - 1:
            if last_seq >= result.expected:
                missing = last_seq - result.expected + 1
                self.fail(
                    result,
                    name,
                    number,
                    GAP,
                    f"{'header' if header else 'checkpoint'} after seq {last_seq}, the stream's last line seen is "
                    f"seq {result.expected - 1} ({missing} lines missing: a missing file?)",
                )
            else:
                self.fail(
                    result,
                    name,
                    number,
                    REORDERED,
                    f"a control line after seq {last_seq} follows seq {result.expected - 1}",
                )
            return
        if prev != result.head:
            self.changed(result, name, number)
            return
        if not header:
            if self.key is not None:
                mac = checkpoint_mac(self.key, result.stream, last_seq, prev)
                if not hmac.compare_digest(mac, str(fields.get("mac", ""))):
                    self.fail(
                        result,
                        name,
                        number,
                        BAD_CHECKPOINT,
                        "the MAC does not match (the lines before it were changed, or the checkpoint forged)",
                    )
                    return
            result.checkpoints += 1
            result.uncovered = 0
        result.head = line_hash(raw)
        result.head_at = (name, number)

    def finish(self) -> Report:
        if self.key is not None:
            for result in self.report.streams.values():
                if result.broken is not None:
                    continue
                if result.keyed_lines == 0:
                    self.fail(
                        result, *result.head_at, BAD_CHECKPOINT, "the stream was written without a key: no checkpoints"
                    )
                    continue
                allowed = result.keyed_lines or DEFAULT_CHECKPOINT_LINES
                if result.uncovered > allowed:
                    self.fail(
                        result,
                        *result.head_at,
                        BAD_CHECKPOINT,
                        f"{result.uncovered} events after the last checkpoint, the writer makes one every {allowed}",
                    )
                elif result.uncovered:
                    result.notes.append(
                        f"the last {result.uncovered} events come after the last checkpoint: not covered by a MAC"
                    )
        return self.report


def verify(paths: Iterable[str], key: bytes | None = None, *, sort: bool = False) -> Report:
    """Check the files as one record, in the order given (oldest first).

    ``sort``: order each stream's lines by ``seq`` first, for an export from a log store that
    orders lines by time (threads' timestamps and seq order can differ by microseconds). A line
    that is missing, edited or forged is found all the same; only a reordering is not.
    """
    verifier = _Verifier(key)
    loaded: list[tuple[str, bytes]] = []
    for path in paths:
        try:
            data = _read(path)
        except OSError as exc:
            verifier.report.errors.append(Break(path, 0, "unreadable", str(exc)))
            continue
        if sort:
            loaded.append((path, data))
        else:
            verifier.file(path, data)
    if sort:
        _verify_sorted(verifier, loaded)
    return verifier.finish()


_SORTED = "(sorted)"


def _verify_sorted(verifier: _Verifier, loaded: list[tuple[str, bytes]]) -> None:
    entries: list[tuple[tuple[str, int, int, int], str, int, bytes]] = []
    files: dict[str, list[str]] = {}
    tails: list[tuple[str, int, bytes]] = []
    for path, data in loaded:
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            tails.append((path, len(lines) + 1, tail))
        for number, raw in enumerate(lines, 1):
            order: tuple[str, int, int, int] = ("", -1, 0, 0)  # lines of no stream first: reported as such
            match = EVENT_PREFIX.match(raw)
            if match is not None:
                order = (match[2].decode(), int(match[1]), 0, 0)
            elif CONTROL_PREFIX.match(raw) is not None:
                try:
                    fields = json.loads(raw)
                    # after the event of its last_seq; a file's last checkpoint before the next file's header
                    order = (str(fields["stream"]), int(fields["last_seq"]), 1, fields["event"] == STREAM_EVENT)
                except (ValueError, KeyError, TypeError):
                    pass
            if order[0] and path not in files.setdefault(order[0], []):
                files[order[0]].append(path)
            entries.append((order, path, number, raw))
    entries.sort(key=lambda entry: entry[0])
    verifier.origin = [(path, number) for _, path, number, _ in entries]
    verifier.file(_SORTED, b"".join(raw + b"\n" for *_, raw in entries))
    for path, number, tail in tails:
        verifier.truncated(path, number, tail)
    for stream_id, names in files.items():
        if stream_id in verifier.report.streams:
            verifier.report.streams[stream_id].files = names


def print_report(report: Report, key_given: bool, out: TextIO) -> None:
    for result in report.streams.values():
        out.write(result.summary(key_given) + "\n")
    for error in report.errors:
        out.write(f"{error}\n")
    if not report.streams and not report.errors:
        out.write("no audit lines\n")
