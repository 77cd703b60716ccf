"""One audit event per finished operation, rendered by structlog.

An event is a flat dict (fields of design.md). It goes to every configured output, each guarded on
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
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger
from opentelemetry.util.types import AnyValue

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.operation import Operation
from sigtrace.core.sinks import Labels
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
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
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
    """An append-only, unbuffered file that reopens itself when logrotate moves it away (checked once a second)."""

    #: Seconds between two checks for a moved file (a stat per check).
    check_interval = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the sink
        self._checked = time.monotonic()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.check_interval:
                self._checked = now
                self._reopen_if_moved()
            written = self._file.write(data)
            while written is not None and written < len(data):  # a short write (e.g. a signal): the rest
                data = data[written:]
                written = self._file.write(data)

    def _reopen_if_moved(self) -> None:
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            moved = True
        if moved:
            self._file.close()
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115

    def flush(self) -> None:
        """Nothing is buffered: each write reached the file."""

    def close(self) -> None:
        with self._lock:
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


class JsonLinesWriter:
    """The durable record: one JSON object per line, written and flushed at once.

    The line is what structlog's ``JSONRenderer`` writes for the event (``json.dumps`` with its
    fallback for other values: the fields in order, ``event`` last), rendered by one encoder made
    once rather than one per line. A file sigtrace opens is written unbuffered in append mode: one
    ``write`` system call per line, complete lines even with several processes on one file.
    """

    def __init__(self, target: str | IO[str] | None) -> None:
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
        self._lock = threading.Lock()
        self._encode = _line_encoder()

    def __call__(self, event: Mapping[str, Any]) -> None:
        if type(event) is dict and next(reversed(event), None) == "event":
            fields = event  # already in the line's order (AuditSink builds its events so)
        else:
            name = event["event"]
            fields = {key: value for key, value in event.items() if key != "event"}
            fields["event"] = name
        line = self._encode(fields) + "\n"
        owned = self._owned
        if owned is not None:
            owned.write(line)  # unbuffered: written when this returns
            return
        stream = self._stream
        with self._lock:
            stream.write(line)
            stream.flush()

    def close(self) -> None:
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
        self._guards: dict[str, safety.guard] = {}
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
        event.update(self._what(op.source, op.name, op.model, op.collection))
        if op.pk is not None:
            event["pk"] = self.redactor.clip(op.pk)
        if op.outcome is not None:
            event["outcome"] = op.outcome
        if op.error_type is not None:
            event["error_type"] = op.error_type
        event["duration_ms"] = round(duration_s * 1000.0, 3)
        if op.changed_fields:
            event["changed_fields"] = self._field_names(op.changed_fields)
        actor = self.resolve_actor(op)
        if actor is not None:
            event["actor"] = actor
        if op.correlation_id is not None:
            event["correlation_id"] = op.correlation_id
        if op.signal is not None:
            event["signal"] = op.signal
        if op.span is not None:
            ctx = op.span.get_span_context()
            if ctx.is_valid:
                event["trace_id"] = format(ctx.trace_id, "032x")
                event["span_id"] = format(ctx.span_id, "016x")
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
        """Hand an event to every output, each guarded on its own."""
        guards = self._guards
        for name, output in self.outputs:
            guard = guards.get(name)
            if guard is None:  # one guard per output name, its kind formatted once
                guard = guards[name] = safety.guard(f"audit.output.{name}")
            with guard:
                output(event)
