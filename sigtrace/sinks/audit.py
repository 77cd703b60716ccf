"""One audit event per finished operation, as structlog-compatible JSON lines.

An event is a flat dict (the fields of docs/conventions.md). It goes to every configured output, each guarded on
its own so one failing output never stops the others:

* the durable JSON-lines record (default: stderr, or ``audit_file``), written and flushed before
  the operation's span is ended, so a collector outage loses no audit event;
* a structlog logger or a callable the application passed as ``audit=``, delivered from one
  background thread through a bounded queue (:class:`BackgroundOutput`): application code that
  blocks (a logger on a full pipe, a callable waiting on the network) cannot stall the operation;
* OTLP log records through the OpenTelemetry logs pipeline, carrying the span's trace context.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from hashlib import sha256 as _sha256
from typing import IO, Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger
from opentelemetry.util.types import AnyValue

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.operation import Operation
from sigtrace.core.sinks import Labels
from sigtrace.core.text import span_id_hex, trace_id_hex
from sigtrace.sinks.chain import CHECKPOINT_EVENT, STREAM_EVENT, checkpoint_mac, event_prefix, line_hash
from sigtrace.sinks.redaction import Redactor

__all__ = ["AuditOutput", "AuditSink", "BackgroundOutput", "JsonLinesWriter", "OtlpLogOutput", "add_trace_context"]

AuditOutput = Callable[[Mapping[str, Any]], None]
_SEVERITY = {
    semconv.OUTCOME_OK: (SeverityNumber.INFO, "INFO"),
    semconv.OUTCOME_SKIPPED: (SeverityNumber.INFO, "INFO"),
    semconv.OUTCOME_ERROR: (SeverityNumber.WARN, "WARN"),
    semconv.OUTCOME_UNKNOWN: (SeverityNumber.WARN, "WARN"),
    semconv.OUTCOME_ROLLED_BACK: (SeverityNumber.INFO, "INFO"),
}


def add_trace_context(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: add the current span's ``trace_id``/``span_id`` to an application's own log lines."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", trace_id_hex(ctx.trace_id))
        event_dict.setdefault("span_id", span_id_hex(ctx.span_id))
    return event_dict


_second_prefix: tuple[int, str] = (-1, "")


def _iso_timestamp(ns: int) -> str:
    """``ns`` (Unix epoch) as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, rounded to the microsecond.

    What ``datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="microseconds")`` writes,
    in integer arithmetic (no float rounding) and with the date and time formatted once per second.
    """
    global _second_prefix
    seconds, micros = divmod((ns + 500) // 1000, 1_000_000)
    cached = _second_prefix
    if cached[0] != seconds:
        cached = (seconds, datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _second_prefix = cached  # one tuple: threads read a consistent pair
    return f"{cached[1]}.{micros:06d}+00:00"


class _ReopeningFile:
    """An append-only, unbuffered file that notices logrotate (checked once a second, under the writer's lock).

    ``create`` mode moves the file away: :meth:`rotated` says ``"moved"`` and the writer reopens the
    path. ``copytruncate`` empties it in place: appending goes on at the new end by itself (append
    mode), and :meth:`rotated` says ``"truncated"`` when the file is smaller than at the last check.
    """

    #: Seconds between two checks for a rotated file (a stat and an fstat per check).
    check_interval = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the sink
        self._checked = time.monotonic()
        self._size = os.fstat(self._file.fileno()).st_size

    def rotated(self) -> str | None:
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return None
        self._checked = now
        own = os.fstat(self._file.fileno())
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return "moved"
        if (named.st_ino, named.st_dev) != (own.st_ino, own.st_dev):
            return "moved"
        shrunk = own.st_size < self._size
        self._size = own.st_size
        return "truncated" if shrunk else None

    def reopen(self) -> None:
        old = self._file
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = os.fstat(self._file.fileno()).st_size
        old.close()

    def write(self, data: bytes) -> None:
        written = self._file.write(data)
        while written is not None and written < len(data):  # a short write (e.g. a signal): the rest
            data = data[written:]
            written = self._file.write(data)

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def _json_fallback(value: Any) -> Any:
    """What structlog's JSON renderer writes for a value JSON cannot hold: ``__structlog__()``, else ``repr``."""
    render = getattr(value, "__structlog__", None)
    return render() if callable(render) else repr(value)


def _line_encoder() -> Callable[[Mapping[str, Any]], str]:
    """``json.dumps(fields, default=_json_fallback)``: the C encoder made once, where the interpreter has it."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(default=_json_fallback, check_circular=False).encode
    chunks = make(None, _json_fallback, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda fields: "".join(chunks(fields, 0))


#: ``audit_durability`` values: what has happened to a line when the operation returns.
DURABILITIES = ("write", "fsync")
#: Shortest time between two fsyncs of the audit file. 0: the group commit's batching comes from the
#: fsync itself (the lines written while one runs share the next one). A 2 ms pause measured 3.1 ms per
#: operation from one thread (the fsync 1.1 ms plus the wait) and, from 4 threads, a quarter of the
#: operations per second of threads each fsyncing their own line (benchmarks/bench_audit.py).
FSYNC_INTERVAL = 0.0

_WRITERS: weakref.WeakSet[JsonLinesWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        writer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class JsonLinesWriter:
    """The durable record: one JSON object per line, sequenced, hash-chained, written at once.

    The line is what structlog's ``JSONRenderer`` writes for the event with ``seq``, ``stream``
    and ``prev`` first (``json.dumps`` with its fallback for other values: the fields in order,
    ``event`` last), rendered by one encoder made once rather than one per line. Sequence number,
    hash and write happen under one lock (one SHA-256 per line); the format is sigtrace/sinks/chain.py's.
    A file sigtrace opens is written unbuffered in append mode: one ``write`` system call per line,
    complete lines even with several processes on one file (each process is a stream of its own).
    After the line is written the event dict gets ``seq`` and ``stream`` for the outputs after this one.
    """

    def __init__(
        self,
        target: str | IO[str] | None,
        *,
        service_name: str | None = None,
        key: bytes | None = None,
        checkpoint_lines: int = 1000,
        checkpoint_seconds: float = 60.0,
        durability: str = "write",
    ) -> None:
        self._owned: _ReopeningFile | None = None
        stream: Any
        if target is None or target == "stderr":
            stream = sys.stderr
        elif target == "-" or target == "stdout":
            stream = sys.stdout
        elif isinstance(target, str):
            self._owned = stream = _ReopeningFile(target)
        else:
            stream = target
        self._stream = stream
        self._encode = _line_encoder()
        self.service_name = service_name
        self._key = key
        self.checkpoint_lines = checkpoint_lines
        self.checkpoint_seconds = checkpoint_seconds
        # fsync applies to a file sigtrace opened; stderr/stdout or a stream passed in are written and flushed.
        self._fsync = durability == "fsync" and self._owned is not None
        self._init_threading()
        self._start_stream("start")
        _WRITERS.add(self)

    def _init_threading(self) -> None:
        self._lock = threading.Lock()
        self._sync = threading.Condition()
        self._written = 0  # lines written to the file, for the group commit
        self._synced = 0
        self._syncing = False
        self._last_sync = 0.0
        self._timer: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False

    def _start_stream(self, reason: str) -> None:
        self.stream = secrets.token_hex(8)
        self._seq = 0
        self._head: str | None = None
        self._uncovered = 0  # lines since the last checkpoint
        self._last_checkpoint = time.monotonic()
        self._header_due: str | None = reason  # written with the stream's first line
        self.started = _iso_timestamp(time.time_ns())

    def _forked(self) -> None:
        """In a forked child (a pre-forking server): a stream of its own, new locks, no inherited thread."""
        self._init_threading()
        self._start_stream("fork")

    def __call__(self, event: Mapping[str, Any]) -> None:
        if type(event) is dict and next(reversed(event), None) == "event":
            fields = event  # already in the line's order (AuditSink builds its events so)
        else:
            name = event["event"]
            fields = {key: value for key, value in event.items() if key != "event"}
            fields["event"] = name
        body = self._encode(fields).encode("utf-8")
        lock = self._lock
        lock.acquire()  # acquire/release, not ``with``: sigtrace/core/correlation.py says why
        try:
            owned = self._owned
            if owned is not None:
                rotated = owned.rotated()
                if rotated is not None:
                    self._rotate(owned, rotated)
            if self._header_due is not None:
                self._header(self._header_due)
            self._seq = seq = self._seq + 1  # taken even when the write fails: the loss shows as a gap
            prefix = event_prefix(seq, self.stream, self._head or "").encode("ascii")
            data = b"".join((prefix, memoryview(body)[1:], b"\n"))
            if owned is not None:
                # _put() inlined for the file sigtrace opened (one call fewer per line); the same bytes and
                # hash (chain.line_hash: SHA-256 of the line without its newline), pinned by the verify tests.
                owned.write(data)
                self._head = _sha256(memoryview(data)[:-1]).hexdigest()
            else:
                self._head = self._put(data)
            written = self._written = self._written + 1
            if self._key is not None:
                self._uncovered += 1
                if (
                    self._uncovered >= self.checkpoint_lines
                    or time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds
                ):
                    self._checkpoint()
                if self._timer is None:
                    self._start_timer()
            stream_id = self.stream
        finally:
            lock.release()
        if type(event) is dict:
            event["seq"] = seq
            event["stream"] = stream_id
        if self._fsync:
            self._wait_synced(written)

    def _put(self, data: bytes) -> str:
        """Write one line (its newline included, UTF-8) in one call; return its hash, the next line's ``prev``."""
        owned = self._owned
        if owned is not None:
            owned.write(data)  # unbuffered: written when this returns
        else:
            self._stream.write(data.decode("utf-8"))
            self._stream.flush()
        return line_hash(memoryview(data)[:-1])

    def _control(self, fields: dict[str, Any]) -> None:
        self._head = self._put((self._encode(fields) + "\n").encode("utf-8"))

    def _header(self, reason: str) -> None:
        """The stream header: who writes this stream, and the hash of its line before (the previous file's last)."""
        fields: dict[str, Any] = {"stream": self.stream, "prev": self._head, "last_seq": self._seq, "reason": reason}
        fields["timestamp"] = _iso_timestamp(time.time_ns())
        if self.service_name is not None:
            fields["service_name"] = self.service_name
        fields["host"] = socket.gethostname()
        fields["pid"] = os.getpid()
        fields["started"] = self.started
        if self._key is not None:
            fields["checkpoint_lines"] = self.checkpoint_lines
            fields["checkpoint_seconds"] = self.checkpoint_seconds
        fields["event"] = STREAM_EVENT
        self._control(fields)
        self._written += 1
        self._header_due = None

    def _checkpoint(self) -> None:
        assert self._key is not None
        self._control(
            {
                "stream": self.stream,
                "prev": self._head,
                "last_seq": self._seq,
                "timestamp": _iso_timestamp(time.time_ns()),
                "mac": checkpoint_mac(self._key, self.stream, self._seq, self._head),
                "event": CHECKPOINT_EVENT,
            }
        )
        self._written += 1
        self._uncovered = 0
        self._last_checkpoint = time.monotonic()

    def _rotate(self, owned: _ReopeningFile, how: str) -> None:
        """logrotate happened: close the old file with a checkpoint, start the new one with a header."""
        if how == "moved":
            if self._key is not None and self._uncovered:
                with safety.guard("audit.checkpoint"):
                    self._checkpoint()  # into the old file: its tail is covered too
            if self._fsync:
                with safety.guard("audit.fsync"):
                    os.fsync(owned.fileno())
            owned.reopen()
        if self._header_due is None:
            self._header_due = "rotated" if how == "moved" else "truncated"

    def _start_timer(self) -> None:
        self._timer = threading.Thread(target=self._tick, name="sigtrace-audit-checkpoint", daemon=True)
        self._timer.start()

    def _tick(self) -> None:
        """A checkpoint ``checkpoint_seconds`` after the last one when lines came since, even if no more come."""
        wake = self._wake
        while True:
            with self._lock:
                due = self._last_checkpoint + self.checkpoint_seconds - time.monotonic()
                if self._closed:
                    return
                if due <= 0 and self._uncovered:
                    with safety.guard("audit.checkpoint"):
                        self._checkpoint()
                    due = self.checkpoint_seconds
            if wake.wait(max(due, 0.05)):
                return

    def _wait_synced(self, written: int) -> None:
        """Group commit: return once an fsync that began after line ``written`` was written has completed.

        One thread at a time runs the fsync (at most one every ``FSYNC_INTERVAL``, if set); the lines
        that others write meanwhile are covered by the next one, which one of them runs.
        """
        sync = self._sync
        with sync:
            while self._synced < written:
                if not self._syncing:
                    self._syncing = True
                    break
                sync.wait()
            else:
                return
        covered = self._synced
        try:
            if FSYNC_INTERVAL > 0:
                pause = self._last_sync + FSYNC_INTERVAL - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            covered = self._written  # every line written before the fsync starts
            owned = self._owned
            if owned is not None:
                os.fsync(owned.fileno())
        finally:
            with sync:
                self._synced = max(self._synced, covered)
                self._syncing = False
                self._last_sync = time.monotonic()
                sync.notify_all()

    def close(self) -> None:
        """A last checkpoint (with a key) over the lines since the one before, then close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.set()
            try:
                if self._key is not None and self._uncovered:
                    self._checkpoint()
                if self._fsync and self._owned is not None:
                    os.fsync(self._owned.fileno())
            finally:
                if self._owned is not None:
                    self._owned.close()


class AuditQueueFullError(RuntimeError):
    """A background output fell too far behind: the event was dropped (and counted) instead of queued."""


class BackgroundOutput:
    """Delivers audit events to an output that may block, from one daemon thread, in order.

    The caller only appends to a bounded queue: an output that blocks or is slow can never stall
    the application's operation. When ``max_pending`` events wait, a new one is dropped and the
    drop counted as an internal error of the output. :meth:`flush` waits for delivery (sigtrace's
    ``force_flush``/``uninstall`` and ``sigtrace.testing`` call it). The durable JSON-lines record
    is not delivered this way: it is written before the operation's span ends.
    """

    def __init__(self, name: str, output: AuditOutput, max_pending: int = 10_000) -> None:
        self.name = name
        self.output = output
        self.max_pending = max_pending
        self._queue: deque[Mapping[str, Any]] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._idle = False

    def __call__(self, event: Mapping[str, Any]) -> None:
        with self._cond:
            if self._closed or self._pending >= self.max_pending:
                raise AuditQueueFullError(f"audit output {self.name!r} is {self._pending} events behind; event dropped")
            self._queue.append(event)
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"sigtrace-audit-{self.name}", daemon=True)
                self._thread.start()
            if self._idle:  # wake the thread only when it sleeps: no ping-pong per event under load
                self._cond.notify_all()  # (a flush() may wait on the same condition)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._closed:
                        return
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                batch = list(self._queue)  # everything queued so far, in order
                self._queue.clear()
            for event in batch:
                try:
                    with safety.guard(f"audit.output.{self.name}"):
                        self.output(event)
                except Exception as exc:  # noqa: BLE001 - strict mode re-raised it: surfaced by flush()
                    self._failure = self._failure or exc
            with self._cond:
                self._pending -= len(batch)
                self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is delivered; False on timeout. Raises, in strict mode only,
        an error the output raised meanwhile (already counted)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the thread; later events are dropped."""
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()


class OtlpLogOutput:
    """Audit events as OTLP log records with the operation span's trace and span ids."""

    def __init__(self, logger_provider: LoggerProvider | None) -> None:
        self._logger = get_logger(semconv.SCOPE_NAME + ".audit", logger_provider=logger_provider)

    def __call__(self, event: Mapping[str, Any]) -> None:
        attributes: dict[str, AnyValue] = {}
        for key, value in event.items():
            if key in ("trace_id", "span_id", "timestamp") or value is None:
                continue
            if isinstance(value, dict):
                attributes[key] = json.dumps(value, default=str)
            elif isinstance(value, list | tuple):
                attributes[key] = [str(item) for item in value]
            else:
                attributes[key] = value
        severity, text = _SEVERITY.get(str(event.get("outcome")), (SeverityNumber.INFO, "INFO"))
        trace_id = event.get("trace_id")
        span_id = event.get("span_id")
        context = None
        if trace_id and span_id:
            span_context = trace.SpanContext(
                int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=trace.TraceFlags(1)
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
        self._logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
                context=context,
                severity_number=severity,
                severity_text=text,
                body=f"{event.get('operation')} {event.get('collection') or event.get('model') or ''}".strip(),
                attributes=attributes,
                event_name=semconv.AUDIT_EVENT,
            )
        )


def _clean(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` without ``None`` fields, ``event`` last (where the JSON line has it)."""
    clean = {key: value for key, value in event.items() if value is not None and key != "event"}
    clean["event"] = event.get("event", semconv.AUDIT_EVENT)
    return clean


class AuditSink:
    """Builds the audit event of an operation and hands it to every output."""

    #: Nothing to do at a start (core/sinks.py): the engine does not call :meth:`started`.
    wants_started = False

    def __init__(
        self,
        outputs: list[tuple[str, AuditOutput]],
        *,
        service_name: str | None,
        redactor: Redactor,
        capture_values: bool,
        audit_reads: bool,
        actor: Callable[[], str | None] | None,
    ) -> None:
        self.outputs = outputs
        self.service_name = service_name
        self.redactor = redactor
        self.capture_values = capture_values
        self.audit_reads = audit_reads
        self.actor = actor
        self._clipped: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._whats: dict[tuple[str, str, str | None, str | None], Mapping[str, Any]] = {}

    def _what(self, source: str, name: str, model: str | None, collection: str | None) -> Mapping[str, Any]:
        """The fields after the timestamp (service, source, operation, model, collection), once per combination."""
        key = (source, name, model, collection)
        fields = self._whats.get(key)
        if fields is None:
            built: dict[str, Any] = {}
            if self.service_name is not None:
                built["service_name"] = self.service_name
            built["source"] = source
            built["operation"] = name
            if model is not None:
                built["model"] = model
            if collection is not None:
                built["collection"] = collection
            fields = built
            if len(self._whats) < 4096:
                self._whats[key] = built
        return fields

    def _field_names(self, names: Sequence[str]) -> list[str]:
        """The changed fields as audit values (clipped), computed once per field tuple (sources cache theirs)."""
        if type(names) is tuple:
            cached = self._clipped.get(names)
            if cached is None:
                cached = tuple(self.redactor.clip(str(name)) for name in names)
                if len(self._clipped) < 4096:
                    self._clipped[names] = cached
            return list(cached)
        clip = self.redactor.clip
        return [clip(str(name)) for name in names]

    def resolve_actor(self, op: Operation) -> str | None:
        if op.actor is not None:
            return op.actor
        if self.actor is not None:
            with safety.guard("audit.actor"):
                value = self.actor()
                return None if value is None else str(value)
        return None

    def make_event(self, op: Operation, end_ns: int, duration_s: float) -> dict[str, Any]:
        """The event of ``op``: only the fields it has (no ``None``), in the line's order, ``event`` last."""
        event: dict[str, Any] = {"timestamp": _iso_timestamp(end_ns)}
        what = self._whats.get((op.source, op.name, op.model, op.collection))
        event.update(what if what is not None else self._what(op.source, op.name, op.model, op.collection))
        if op.pk is not None:
            event["pk"] = self.redactor.clip(op.pk)
        if op.outcome is not None:
            event["outcome"] = op.outcome
        if op.error_type is not None:
            event["error_type"] = op.error_type
        event["duration_ms"] = round(duration_s * 1000.0, 3)
        if op.changed_fields:
            event["changed_fields"] = self._field_names(op.changed_fields)
        actor = op.actor if op.actor is not None or self.actor is None else self.resolve_actor(op)
        if actor is not None:
            event["actor"] = actor
        if op.correlation_id is not None:
            event["correlation_id"] = op.correlation_id
        if op.signal is not None:
            event["signal"] = op.signal
        if op.span is not None:
            ctx = op.span.get_span_context()
            if ctx.is_valid:
                # trace_id_hex() and span_id_hex() (core/text.py) inlined: two calls fewer per event.
                event["trace_id"] = ctx.trace_id.to_bytes(16, "big").hex()
                event["span_id"] = ctx.span_id.to_bytes(8, "big").hex()
        if op.orphaned:
            event["orphaned"] = True
        if op.audit:
            value_of = self.redactor.value
            for key, value in op.audit.items():
                if key not in event and value is not None:
                    event[key] = value_of(value)
        if self.capture_values and op.values is not None:
            event["values"] = self.redactor.mapping(op.values)
        # Last, where the JSON line has it (structlog renders ``event`` after the fields): the
        # writer then renders the event as it is, without reordering it into a copy.
        event["event"] = semconv.AUDIT_EVENT
        return event

    # --- the sink life cycle (core/sinks.py) ---

    def started(self, op: Operation) -> None:
        """An event is written when the operation ends."""

    def cancelled(self, op: Operation) -> None:
        """A duplicate start: nothing was written for it."""

    def described(self, op: Operation, before: Labels) -> None:
        """Read at the end: nothing to move."""

    def finished(self, op: Operation, end_ns: int, duration_s: float, held: bool) -> None:
        if held:
            # Built now (what the operation saw), delivered with the transaction's outcome in resolved().
            op.audit_pending = self.build(op, end_ns, duration_s)
        else:
            self.emit(op, end_ns, duration_s)

    def resolved(self, op: Operation) -> None:
        events, op.audit_pending = op.audit_pending, None
        if not events:
            return
        orphan_reason = op.audit.get("orphan_reason") if op.orphaned else None
        for event in events:
            event["outcome"] = op.outcome
            if orphan_reason is not None:
                name = event.pop("event")
                event["orphaned"] = True
                event["orphan_reason"] = orphan_reason
                event["event"] = name  # last, where the line has it
            self._deliver(event)

    def event(self, op: Operation, time_ns: int) -> None:
        self.emit(op, time_ns, 0.0)

    # --- events ---

    def emit(self, op: Operation, end_ns: int, duration_s: float) -> None:
        """Build the events of ``op`` and deliver them now."""
        if not self.outputs or not (op.write or self.audit_reads):
            return  # reads reach the audit log only with audit_reads
        if op.audit_items is None:
            self._deliver(self.make_event(op, end_ns, duration_s))  # the common case: one event, no list
            return
        for event in self.build(op, end_ns, duration_s):
            self._deliver(event)

    def build(self, op: Operation, end_ns: int, duration_s: float) -> list[dict[str, Any]]:
        """The events of ``op`` in delivery form: one, one per batch item, or none."""
        if not self.outputs or not (op.write or self.audit_reads):
            return []
        if op.audit_items is not None and not op.audit_items:
            return []  # a run whose items are operations audited on their own: nothing to build
        event = self.make_event(op, end_ns, duration_s)
        if op.audit_items is None:
            return [event]
        del event["event"]
        value_of = self.redactor.value
        # A batch: one event per item, whose fields override the operation's.
        return [
            _clean({**event, **{str(key): value_of(value) for key, value in item.items()}}) for item in op.audit_items
        ]

    def flush(self, timeout: float = 5.0) -> None:
        """Wait for the background outputs to deliver what they hold."""
        for _name, output in self.outputs:
            if isinstance(output, BackgroundOutput):
                output.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        for _name, output in self.outputs:
            if isinstance(output, BackgroundOutput):
                output.close(timeout)

    def publish(self, event: Mapping[str, Any]) -> None:
        """Deliver an event built elsewhere (a single signal): ``None`` fields dropped, ``event`` last."""
        self._deliver(_clean(event))

    def _deliver(self, event: dict[str, Any]) -> None:
        """Hand an event to every output, each guarded on its own.

        try/except rather than ``with safety.guard``: the same net without two calls per output and
        event (core/safety.py); the error's kind is formatted only when there is one.
        """
        for name, output in self.outputs:
            try:
                output(event)
            except Exception as exc:  # noqa: BLE001 - the safety net (re-raised in strict mode)
                safety.report(f"audit.output.{name}", exc)
