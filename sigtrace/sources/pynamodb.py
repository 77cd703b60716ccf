"""PynamoDB: one span per DynamoDB API call, correlated by the ``req_uuid`` of PynamoDB's signals.

PynamoDB sends ``pre_dynamodb_send`` and ``post_dynamodb_send`` from ``Connection.dispatch``
around each API call (each Query/Scan page, each ``create_table(wait=True)`` poll), with the
sending ``Connection``, the operation name, the table name (``None`` for the multi-table calls)
and a fresh ``req_uuid``. It sends no post signal when the call raises, and some callers swallow
that exception (``Model.exists()``, the first DescribeTable of ``create_table``), so the signals
alone cannot end a failed call. sigtrace therefore also wraps ``Connection.dispatch`` in the
engine's entry scope:

* the scope starts the call's span in the caller's context and keeps it current while botocore
  runs, so a botocore span (opentelemetry-instrumentation-botocore) is its child;
* the pre receiver claims that span by ``req_uuid`` (``sigtrace.correlation_id``);
* a normal return ends it with what the response tells (consumed capacity, item counts, request
  id); an exception leaving ``dispatch`` ends it as an ERROR at once, in the calling thread, with
  the DynamoDB error code as ``error.type`` where there is one.

Without the wrapper (a ``Connection`` subclass that overrides ``dispatch``) the pre receiver starts
the span and the post receiver ends it; a call that raises there is ended by the orphan reaper.

Request items and key VALUES never leave the process unless ``capture_values`` is on (and then
through redaction); the primary key of the item a call touches is reported as ``sigtrace.pk``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from opentelemetry.semconv._incubating.attributes import aws_attributes, cloud_attributes
from opentelemetry.semconv.attributes.db_attributes import DB_RESPONSE_STATUS_CODE
from opentelemetry.util.types import AttributeValue
from pynamodb.connection.base import Connection
from pynamodb.models import Model
from pynamodb.signals import post_dynamodb_send, pre_dynamodb_send

from sigtrace import semconv
from sigtrace.core import safety
from sigtrace.core.context import current_scope
from sigtrace.core.operation import Operation
from sigtrace.sources.kit import Entry, FactsCache, Source, batch_audit, pk_text

__all__ = ["DB_SYSTEM", "WRITE_OPERATIONS", "PynamoDBSource", "error_code"]

SOURCE: Final = "pynamodb"
DB_SYSTEM: Final = "aws.dynamodb"
RPC_SYSTEM: Final = "aws-api"
RPC_SERVICE: Final = "DynamoDB"
PRE_SIGNAL: Final = str(getattr(pre_dynamodb_send, "name", "pre_dynamodb_send"))
POST_SIGNAL: Final = str(getattr(post_dynamodb_send, "name", "post_dynamodb_send"))

#: Calls that change data (always audited).
ITEM_WRITES: Final = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
#: Calls that change a table itself: audited like writes (a deleted table is the first thing an audit is asked about).
TABLE_WRITES: Final = frozenset({"CreateTable", "DeleteTable", "UpdateTable", "UpdateTimeToLive"})
WRITE_OPERATIONS: Final = ITEM_WRITES | TABLE_WRITES

#: At most this many items are listed in the audit event of a batch or transaction (``pks``, ``items``):
#: the shared cap of every source (DynamoDB allows 25 per BatchWriteItem and 100 per TransactWriteItems).
MAX_LISTED_ITEMS: Final = semconv.MAX_AUDIT_PKS

_TRANSACT_ACTIONS: Final = (("Put", "put"), ("Update", "update"), ("Delete", "delete"), ("ConditionCheck", "check"))
_BATCH_ACTIONS: Final = (("PutRequest", "Item", "put"), ("DeleteRequest", "Key", "delete"))
#: Attribute-name placeholders at the start of a document path (``#0``, not the ``#1`` of ``#0.#1``).
_PATH_HEAD = re.compile(r"(?<![.\w#])#\w+")
#: ``SET #name = :value`` assignments of an UpdateExpression (ADD's operand is an increment, not a value).
_ASSIGNMENT = re.compile(r"(?<![.\w#])(#\w+)\s*=\s*(:\w+)(?=\s*(?:,|$)|\s+(?:SET|ADD|REMOVE|DELETE)\b)")

_REQUEST_FLAGS: Final = (
    ("IndexName", aws_attributes.AWS_DYNAMODB_INDEX_NAME),
    ("ConsistentRead", aws_attributes.AWS_DYNAMODB_CONSISTENT_READ),
    ("Limit", aws_attributes.AWS_DYNAMODB_LIMIT),
    ("Select", aws_attributes.AWS_DYNAMODB_SELECT),
    ("ScanIndexForward", aws_attributes.AWS_DYNAMODB_SCAN_FORWARD),
    ("Segment", aws_attributes.AWS_DYNAMODB_SEGMENT),
    ("TotalSegments", aws_attributes.AWS_DYNAMODB_TOTAL_SEGMENTS),
)
#: ``isinstance(value, _MAPPING)`` is ``isinstance(value, Mapping)``, but a dict (what PynamoDB and botocore
#: pass) is told at once by its type: ``Mapping``'s ABC check is a Python call of its own, about ten per call here.
_MAPPING: Final = (dict, Mapping)
#: The request fields of :data:`_REQUEST_FLAGS`: a request with none of them (every item call) skips their loop.
_FLAG_FIELDS: Final = frozenset(field for field, _name in _REQUEST_FLAGS)
#: ``json.dumps(entry, sort_keys=True, default=str)`` without a new encoder per call (what ``dumps`` builds
#: for any non-default option): the same text.
_capacity_json: Final = json.JSONEncoder(sort_keys=True, default=str).encode


# --- reading DynamoDB's wire format -------------------------------------------------------------


def _key_text(value: Any) -> str:
    """A key attribute value (``{"S": ...}``, ``{"N": ...}``, ``{"B": ...}``) as text."""
    if isinstance(value, _MAPPING) and len(value) == 1:
        ((kind, raw),) = value.items()
        if kind == "B" and isinstance(raw, bytes | bytearray):
            return base64.b64encode(bytes(raw)).decode("ascii")
        return str(raw)
    return str(value)


def _plain(value: Any, depth: int = 0) -> Any:
    """An attribute value in DynamoDB's JSON as a plain value (for ``capture_values`` only)."""
    if not isinstance(value, Mapping) or len(value) != 1 or depth > 16:
        return value
    ((kind, raw),) = value.items()
    if kind == "M" and isinstance(raw, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in raw.items()}
    if kind == "L" and isinstance(raw, list):
        return [_plain(v, depth + 1) for v in raw]
    if kind == "B" and isinstance(raw, bytes | bytearray):
        return base64.b64encode(bytes(raw)).decode("ascii")
    if kind == "BS" and isinstance(raw, list):
        return [base64.b64encode(bytes(v)).decode("ascii") if isinstance(v, bytes | bytearray) else v for v in raw]
    if kind == "NULL":
        return None
    return raw


def _table_names(params: Mapping[str, Any]) -> list[str]:
    """Tables of a request: ``TableName``, else the keys of ``RequestItems``, else those of ``TransactItems``."""
    table = params.get("TableName")
    if isinstance(table, str):
        return [table]
    names: list[str] = []
    items = params.get("RequestItems")
    if isinstance(items, Mapping):
        names.extend(str(name) for name in items)
    transact = params.get("TransactItems")
    if isinstance(transact, list):
        for entry in transact:
            if not isinstance(entry, Mapping):
                continue
            for request in entry.values():
                name = request.get("TableName") if isinstance(request, Mapping) else None
                if isinstance(name, str) and name not in names:
                    names.append(name)
    return names


def error_code(error: BaseException) -> str | None:
    """DynamoDB's error code of a failed call (``ConditionalCheckFailedException``...), if the service sent one."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        err = response.get("Error")
        if isinstance(err, Mapping):
            code = err.get("Code")
            if code:
                return str(code)
    return None


def _request_id(error: BaseException) -> str | None:
    """The AWS request id of a failed call (PynamoDB's VerboseClientError keeps it on its cause)."""
    for candidate in (error, error.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, Mapping):
            meta = response.get("ResponseMetadata")
            if isinstance(meta, Mapping) and meta.get("RequestId"):
                return str(meta["RequestId"])
    return None


def _key_names_of(meta: Any) -> tuple[str, ...]:
    """Key attribute names of a table's ``MetaTable`` (from the model's schema or DescribeTable)."""
    try:
        hash_key = meta.hash_keyname
        range_key = meta.range_keyname
    except (ValueError, KeyError, AttributeError, TypeError):
        return ()
    return (hash_key, range_key) if range_key else (hash_key,)


#: MetaTable -> its key names, once per MetaTable: its ``range_keyname`` walks the key schema at every
#: call for a table with no range key. A MetaTable's schema never changes; one it has none for is asked again.
_KEY_NAMES: Final[FactsCache[Any, tuple[str, ...]]] = FactsCache(_key_names_of, keep=bool)


def _responded(op: Operation, _connection: Any, _args: Any, _kwargs: Any, data: Any) -> None:
    """``Source.entry``'s ``after``: what the response tells (consumed capacity, counts)."""
    op.attributes.update(_response_attributes(data))


def _failed(op: Operation, _connection: Any, _args: Any, _kwargs: Any, error: BaseException) -> None:
    """``Source.entry``'s ``failed``: DynamoDB's error code and request id, before the error ends the call."""
    _describe_failure(op, error)


class _Keys:
    """Key attribute names of each table a Connection knows (from the model's schema or DescribeTable)."""

    @staticmethod
    def names(connection: Any, table: str) -> tuple[str, ...]:
        tables = getattr(connection, "_tables", None)
        meta = tables.get(table) if isinstance(tables, _MAPPING) else None
        if meta is None:
            return ()
        return _KEY_NAMES.cached(id(meta)) or _KEY_NAMES(meta)

    @staticmethod
    def of(item_or_key: Any, names: tuple[str, ...], *, is_key: bool) -> dict[str, str] | None:
        """``{name: text}`` of the key attributes of an ``Item`` (by the schema's names) or of a ``Key``."""
        if item_or_key is None or not isinstance(item_or_key, _MAPPING):
            return None
        if names:
            key = {name: _key_text(item_or_key[name]) for name in names if name in item_or_key}
            return key or None
        if is_key:  # a Key holds only key attributes; PynamoDB puts the hash key first
            return {str(name): _key_text(value) for name, value in item_or_key.items()}
        return None


def _owner_of(connection: Any) -> str | None:
    """The Model class that owns a Connection (PynamoDB creates one Connection per Model class), if any."""
    for cls in _model_classes():
        if getattr(cls.__dict__.get("_connection"), "connection", None) is connection:
            return cls.__name__
    return None


class _Dispatched(Operation):
    """An operation built by the ``Connection.dispatch`` wrapper: its post signal leaves the end to the wrapper."""

    __slots__ = ()


def _model_classes() -> Iterator[type[Any]]:
    seen: set[type[Any]] = set()
    stack: list[type[Any]] = list(Model.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        stack.extend(cls.__subclasses__())


# --- the source ----------------------------------------------------------------------------------


class PynamoDBSource(Source):
    """Traces every DynamoDB API call PynamoDB makes."""

    name = "pynamodb"

    def __init__(self, engine: Any, options: Any = None) -> None:
        super().__init__(engine, options)
        #: Connection -> its model's name (one walk of Model's subclasses per Connection; "none" kept too).
        self._models: FactsCache[Any, str | None] = FactsCache(_owner_of)
        self._where_describe = self.where("describe")

    def attach(self) -> None:
        self.connect(pre_dynamodb_send, self._on_pre, kind="pre")
        self.connect(post_dynamodb_send, self._on_post, kind="post")
        # A failure is described (DynamoDB's error code) before the scope ends it; a response's attributes
        # are read when the call returns.
        dispatch = self.entry("dispatch", self._build_dispatch, _responded, failed=_failed)
        self.patch(Connection, "dispatch", dispatch)

    # --- the entry point ---

    def _build_dispatch(self, connection: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        """The operation of one ``Connection.dispatch``; its pre signal claims it by the ``req_uuid`` it makes."""
        op = self._describe(connection, args, kwargs)
        return None if op is None else (op, None)

    def _describe(self, connection: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Operation | None:
        operation = args[0] if args else kwargs.get("operation_name")
        if not isinstance(operation, str):
            return None
        write = operation in WRITE_OPERATIONS
        op: Operation | None = None
        # What the request tells: a failure here leaves a plainer span, never an untracked call.
        try:
            params = args[1] if len(args) > 1 else kwargs.get("operation_kwargs")
            if not isinstance(params, _MAPPING):
                params = {}
            tables = _table_names(params)
            attributes = _base_attributes(operation, tables)
            region = getattr(connection, "region", None)
            if isinstance(region, str):
                attributes[cloud_attributes.CLOUD_REGION] = region
            if not _FLAG_FIELDS.isdisjoint(params):
                for field, name in _REQUEST_FLAGS:
                    value = params.get(field)
                    if isinstance(value, bool | int | str):
                        attributes[name] = value
            models = self._models
            # One constructor call. The span starts with the post signal as ``sigtrace.signal`` (what the
            # call's post receiver will name), so its end sets no attribute for it when the signal comes.
            op = _Dispatched(
                source=SOURCE,
                name=operation,
                model=models.cached(id(connection)) or models(connection),
                collection=tables[0] if len(tables) == 1 else None,
                db_system=DB_SYSTEM,
                post_signal=POST_SIGNAL,
                write=write,
                attributes=attributes,
            )
            self._describe_items(op, connection, operation, params)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(self._where_describe, exc)
            if op is None:
                op = _Dispatched(
                    source=SOURCE, name=operation, db_system=DB_SYSTEM, post_signal=POST_SIGNAL, write=write
                )
        return op

    def _describe_items(self, op: Operation, connection: Any, operation: str, params: Mapping[str, Any]) -> None:
        """Key (``sigtrace.pk``), changed attribute names and, with ``capture_values``, the values."""
        table = params.get("TableName")
        if isinstance(table, str):
            names = _Keys.names(connection, table)
            item = params.get("Item")
            key = _Keys.of(params.get("Key"), names, is_key=True) or _Keys.of(item, names, is_key=False)
            op.pk = pk_text(key) if key else None  # "hash" or "hash|range"
            if key and op.write:
                op.audit["key"] = key
            if operation == "PutItem" and isinstance(item, _MAPPING):
                op.changed_fields = [str(name) for name in item]
                if self.capture_values:
                    op.values = {str(k): _plain(v) for k, v in item.items()}
            elif operation == "UpdateItem":
                op.changed_fields, values = _update_fields(params)
                if self.capture_values:
                    op.values = values
            return
        entries = _batch_entries(connection, operation, params, self.capture_values)
        if entries is None:
            return
        if len(entries) >= 2:
            op.attributes[semconv.DB_OPERATION_BATCH_SIZE] = len(entries)
        if op.write:
            listed = entries[:MAX_LISTED_ITEMS]
            op.audit["table_names"] = _table_names(params)
            op.audit[semconv.AUDIT_BATCH_SIZE] = len(entries)
            op.audit.update(batch_audit(entry.get("pk") for entry in entries))
            op.audit["items"] = [{k: v for k, v in e.items() if k != "item"} for e in listed]
            if len(entries) > MAX_LISTED_ITEMS:
                op.audit[semconv.AUDIT_PKS_TRUNCATED] = True
            if self.capture_values:
                op.values = {"items": [e for e in listed if "item" in e]}

    # --- the signals (guarded by the kit: ``source.pynamodb.pre`` / ``.post``) ---

    def _on_pre(self, sender: Any, **kwargs: Any) -> None:
        req_uuid = kwargs.get("req_uuid")
        operation = kwargs.get("operation_name")
        if req_uuid is None or not isinstance(operation, str):
            return
        scope = current_scope()
        own = scope.op if scope is not None else None
        if type(own) is _Dispatched and own.name == operation:
            # The dispatch call's own pre signal (every call but one of an overridden ``dispatch``): claimed,
            # without building the signal's operation for Engine.begin to copy into it. That one would add
            # only the req_uuid and the signal's name: the rest (model, table, attributes) it takes from the
            # same Connection and request as the dispatch call did. An excluded signal is not claimed.
            claimed = self.engine.claim(req_uuid, signal=PRE_SIGNAL, unexpected=True)
            if claimed is own:
                own.correlation_id = str(req_uuid)
            if claimed is not None:
                return
        table = kwargs.get("table_name")
        tables = [table] if isinstance(table, str) else []
        op = Operation(
            source=SOURCE,
            name=operation,
            model=self._models(sender),
            collection=table if isinstance(table, str) else None,
            db_system=DB_SYSTEM,
            correlation_id=str(req_uuid),
            signal=PRE_SIGNAL,
            post_signal=POST_SIGNAL,
            write=operation in WRITE_OPERATIONS,
            attributes=_base_attributes(operation, tables),
        )
        self.engine.begin(op, req_uuid)

    def _on_post(self, sender: Any, **kwargs: Any) -> None:
        req_uuid = kwargs.get("req_uuid")
        if req_uuid is None:
            return
        engine = self.engine
        own = engine.lookup(req_uuid)
        if isinstance(own, _Dispatched) and not own.done:
            # The dispatch wrapper's own call: it ends it with what the response tells.
            own.signal = POST_SIGNAL
            return
        engine.end(req_uuid, signal=POST_SIGNAL)


def _base_attributes(operation: str, tables: list[str]) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        semconv.RPC_SYSTEM: RPC_SYSTEM,
        semconv.RPC_SERVICE: RPC_SERVICE,
        semconv.RPC_METHOD: operation,
    }
    if tables:
        attributes[semconv.AWS_DYNAMODB_TABLE_NAMES] = list(tables)
    return attributes


def _update_fields(params: Mapping[str, Any]) -> tuple[list[str] | None, dict[str, Any] | None]:
    """Attribute names an UpdateExpression changes, and ``{name: new value}`` of its plain assignments."""
    expression = params.get("UpdateExpression")
    names = params.get("ExpressionAttributeNames")
    if not isinstance(expression, str) or not isinstance(names, Mapping):
        return None, None
    changed: list[str] = []
    for placeholder in _PATH_HEAD.findall(expression):
        name = names.get(placeholder)
        if isinstance(name, str) and name not in changed:
            changed.append(name)
    values: dict[str, Any] = {}
    raw_values = params.get("ExpressionAttributeValues")
    if isinstance(raw_values, Mapping):
        for placeholder, value_ref in _ASSIGNMENT.findall(expression):
            name = names.get(placeholder)
            if isinstance(name, str) and value_ref in raw_values:
                values[name] = _plain(raw_values[value_ref])
    return changed or None, values or None


def _batch_entries(
    connection: Any, operation: str, params: Mapping[str, Any], with_values: bool
) -> list[dict[str, Any]] | None:
    """``[{table, action, pk, key[, item]}]`` of a BatchWriteItem / BatchGetItem / Transact* request."""
    entries: list[dict[str, Any]] = []
    names_of: dict[str, tuple[str, ...]] = {}

    def names(table: str) -> tuple[str, ...]:
        if table not in names_of:
            names_of[table] = _Keys.names(connection, table)
        return names_of[table]

    def add(table: str, action: str, key: dict[str, str] | None, item: Any = None) -> None:
        entry: dict[str, Any] = {"table": table, "action": action}
        if key:
            entry["pk"] = pk_text(key)
            entry["key"] = key
        if with_values and isinstance(item, Mapping):
            entry["item"] = {str(k): _plain(v) for k, v in item.items()}
        entries.append(entry)

    request_items = params.get("RequestItems")
    transact = params.get("TransactItems")
    if isinstance(request_items, Mapping):
        for table, requests in request_items.items():
            table = str(table)
            if isinstance(requests, list):  # BatchWriteItem
                for request in requests:
                    if not isinstance(request, Mapping):
                        continue
                    for kind, field, action in _BATCH_ACTIONS:
                        body = request.get(kind)
                        if isinstance(body, Mapping):
                            add(
                                table,
                                action,
                                _Keys.of(body.get(field), names(table), is_key=field == "Key"),
                                body.get("Item"),
                            )
            elif isinstance(requests, Mapping):  # BatchGetItem
                keys = requests.get("Keys")
                for key in keys if isinstance(keys, list) else ():
                    add(table, "get", _Keys.of(key, names(table), is_key=True))
        return entries
    if isinstance(transact, list):
        for entry in transact:
            if not isinstance(entry, Mapping):
                continue
            for kind, body in entry.items():
                if not isinstance(body, Mapping):
                    continue
                action = dict(_TRANSACT_ACTIONS).get(str(kind), str(kind).lower())
                table = str(body.get("TableName"))
                item = body.get("Item")
                key = _Keys.of(body.get("Key"), names(table), is_key=True) or _Keys.of(item, names(table), is_key=False)
                add(table, action, key, item)
        return entries
    return None


def _response_attributes(data: Any) -> dict[str, AttributeValue]:
    """What a successful response adds: consumed capacity, item counts, the AWS request id."""
    attributes: dict[str, AttributeValue] = {}
    if not isinstance(data, _MAPPING):
        return attributes
    capacity = data.get("ConsumedCapacity")
    if isinstance(capacity, _MAPPING):
        capacity = [capacity]
    if isinstance(capacity, list) and capacity:
        attributes[aws_attributes.AWS_DYNAMODB_CONSUMED_CAPACITY] = [_capacity_json(entry) for entry in capacity]
    for field, name in (
        ("Count", aws_attributes.AWS_DYNAMODB_COUNT),
        ("ScannedCount", aws_attributes.AWS_DYNAMODB_SCANNED_COUNT),
    ):
        value = data.get(field)
        if isinstance(value, int):
            attributes[name] = value
    meta = data.get("ResponseMetadata")
    if isinstance(meta, _MAPPING) and meta.get("RequestId"):
        attributes[aws_attributes.AWS_REQUEST_ID] = str(meta["RequestId"])
    return attributes


def _describe_failure(op: Operation, error: BaseException) -> None:
    """``error.type`` is DynamoDB's error code where the service sent one (the semantic conventions
    ask for the code over a wrapper's class name); transport errors keep their class name."""
    code = error_code(error)
    if code is not None:
        op.error_type = code
        op.attributes[DB_RESPONSE_STATUS_CODE] = code
    request_id = _request_id(error)
    if request_id is not None:
        op.attributes[aws_attributes.AWS_REQUEST_ID] = request_id
