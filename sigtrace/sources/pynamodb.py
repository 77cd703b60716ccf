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
from sigtrace.core.text import MAX_TEXT
from sigtrace.sources.kit import Entry, FactsCache, Source, batch_audit, pk_text
from sigtrace.sources.kit.facts import PK_SEPARATOR

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


def _failed(op: Operation, _connection: Any, _args: Any, _kwargs: Any, error: BaseException) -> None:
    """``Source.entry``'s ``failed``: DynamoDB's error code and request id, before the error ends the call."""
    _describe_failure(op, error)


def _key_names(connection: Any, table: str) -> tuple[str, ...]:
    """Key attribute names of a table the Connection knows (from the model's schema or DescribeTable)."""
    tables = getattr(connection, "_tables", None)
    meta = tables.get(table) if isinstance(tables, _MAPPING) else None
    if meta is None:
        return ()
    return _KEY_NAMES.cached(id(meta)) or _KEY_NAMES(meta)


def _key_of(item_or_key: Any, names: tuple[str, ...], *, is_key: bool) -> dict[str, str] | None:
    """``{name: text}`` of the key attributes of an ``Item`` (by the schema's names) or of a ``Key``."""
    if item_or_key is None or not isinstance(item_or_key, _MAPPING):
        return None
    if names:
        key: dict[str, str] = {}
        for name in names:
            if name in item_or_key:
                value = item_or_key[name]
                # _key_text(value), without its frame for the usual ``{"S": text}`` / ``{"N": text}``.
                if type(value) is dict and len(value) == 1:
                    ((_kind, raw),) = value.items()
                    key[name] = raw if type(raw) is str else _key_text(value)
                else:
                    key[name] = _key_text(value)
        return key or None
    if is_key:  # a Key holds only key attributes; PynamoDB puts the hash key first
        return {str(name): _key_text(value) for name, value in item_or_key.items()} or None
    return None


def _owner_of(connection: Any) -> str | None:
    """The Model class that owns a Connection (PynamoDB creates one Connection per Model class), if any."""
    for cls in _model_classes():
        if getattr(cls.__dict__.get("_connection"), "connection", None) is connection:
            return cls.__name__
    return None


class _Dispatched(Operation):
    """An operation built by the ``Connection.dispatch`` wrapper: its post signal leaves the end to the wrapper.

    ``req_uuid``: the one its pre signal claimed it with, so that its post signal is told by identity.
    """

    __slots__ = ("req_uuid",)
    req_uuid: Any


class _Call:
    """What every call of one operation on one table through one Connection reports alike (built once)."""

    __slots__ = ("attributes", "collection", "model", "write")

    def __init__(
        self, *, model: str | None, collection: str | None, write: bool, attributes: dict[str, AttributeValue]
    ) -> None:
        self.model = model
        self.collection = collection
        self.write = write
        #: rpc.*, aws.dynamodb.table_names, cloud.region: copied into each operation's own attributes.
        self.attributes = attributes


#: (operation, table, region) combinations kept per Connection; beyond, a call builds its facts each time.
MAX_CALLS: Final = 256


def _new_calls(_connection: Any) -> dict[tuple[str, str, Any], _Call]:
    return {}


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
        #: Connection -> {(operation, table, region): _Call}: what every such call reports alike.
        self._calls: FactsCache[Any, dict[tuple[str, str, Any], _Call]] = FactsCache(_new_calls)
        self._where_describe = self.where("describe")

    def attach(self) -> None:
        self.connect(pre_dynamodb_send, self._on_pre, kind="pre")
        self.connect(post_dynamodb_send, self._on_post, kind="post")
        # A failure is described (DynamoDB's error code) before the scope ends it; a response's attributes
        # are read when the call returns.
        dispatch = self.entry("dispatch", self._describe, _response_attributes, failed=_failed)
        self.patch(Connection, "dispatch", dispatch)

    # --- the entry point ---

    def _call(self, connection: Any, operation: str, tables: list[str], region: Any) -> _Call:
        """What a call of ``operation`` on ``tables`` through ``connection`` reports whatever its request."""
        attributes = _base_attributes(operation, tables)
        if isinstance(region, str):
            attributes[cloud_attributes.CLOUD_REGION] = region
        return _Call(
            model=self._models(connection),
            collection=tables[0] if len(tables) == 1 else None,
            write=operation in WRITE_OPERATIONS,
            attributes=attributes,
        )

    def _describe(self, connection: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry | None:
        """The operation of one ``Connection.dispatch``; its pre signal claims it by the ``req_uuid`` it makes."""
        operation = args[0] if args else kwargs.get("operation_name")
        if not isinstance(operation, str):
            return None
        op: _Dispatched | None = None
        # What the request tells: a failure here leaves a plainer span, never an untracked call.
        try:
            params = args[1] if len(args) > 1 else kwargs.get("operation_kwargs")
            if not isinstance(params, _MAPPING):
                params = {}
            table = params.get("TableName")
            region = getattr(connection, "region", None)
            if isinstance(table, str):
                # An item or table call: what it reports beside its key is the same for every such call.
                calls = self._calls.cached(id(connection)) or self._calls(connection)
                facts = calls.get((operation, table, region))
                if facts is None:
                    facts = self._call(connection, operation, [table], region)
                    if len(calls) < MAX_CALLS:
                        calls[(operation, table, region)] = facts
            else:
                facts = self._call(connection, operation, _table_names(params), region)
            attributes = dict(facts.attributes)
            if not _FLAG_FIELDS.isdisjoint(params):
                for field, name in _REQUEST_FLAGS:
                    value = params.get(field)
                    if isinstance(value, bool | int | str):
                        attributes[name] = value
            # One constructor call. The span starts with the post signal as ``sigtrace.signal`` (what the
            # call's post receiver will name), so its end sets no attribute for it when the signal comes.
            op = _Dispatched(
                source=SOURCE,
                name=operation,
                model=facts.model,
                collection=facts.collection,
                db_system=DB_SYSTEM,
                post_signal=POST_SIGNAL,
                write=facts.write,
                attributes=attributes,
            )
            op.req_uuid = None
            if isinstance(table, str):
                self._describe_item(op, connection, operation, table, params)
            else:
                self._describe_batch(op, connection, operation, params)
        except Exception as exc:  # noqa: BLE001 - the safety net
            safety.report(self._where_describe, exc)
            if op is None:
                op = _Dispatched(
                    source=SOURCE,
                    name=operation,
                    db_system=DB_SYSTEM,
                    post_signal=POST_SIGNAL,
                    write=operation in WRITE_OPERATIONS,
                )
                op.req_uuid = None
        return op, None

    def _describe_item(
        self, op: Operation, connection: Any, operation: str, table: str, params: Mapping[str, Any]
    ) -> None:
        """A one-table call: its key (``sigtrace.pk``, audit ``key``), changed attribute names, values."""
        names = _key_names(connection, table)
        item = params.get("Item")
        found = params.get("Key")
        key = None if found is None else _key_of(found, names, is_key=True)
        if key is None and item is not None:
            key = _key_of(item, names, is_key=False)
        if key is not None:
            # pk_text(key), spelled for what _key_of returns (texts): "hash" or "hash|range".
            parts = tuple(key.values())
            for part in parts:
                if len(part) > MAX_TEXT:
                    op.pk = pk_text(key)
                    break
            else:
                op.pk = parts[0] if len(parts) == 1 else PK_SEPARATOR.join(parts)
            if op.write:
                op.audit["key"] = key
        if operation == "PutItem" and isinstance(item, _MAPPING):
            # A tuple: the audit sink clips a tuple of names once per tuple (the same text as a list's).
            op.changed_fields = tuple(item)
            if self.capture_values:
                op.values = {str(k): _plain(v) for k, v in item.items()}
        elif operation == "UpdateItem":
            op.changed_fields, values = _update_fields(params)
            if self.capture_values:
                op.values = values

    def _describe_batch(self, op: Operation, connection: Any, operation: str, params: Mapping[str, Any]) -> None:
        """A batch or transaction: its size, the tables, the items' keys and, with ``capture_values``, values."""
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

    def _on_pre(
        self, sender: Any, operation_name: Any = None, table_name: Any = None, req_uuid: Any = None, **_: Any
    ) -> None:
        if req_uuid is None or not isinstance(operation_name, str):
            return
        # The key of the call in the in-flight table is its correlation id, text: hashed once, in C (a UUID's
        # ``__hash__`` is a Python call, and the table hashes its key four times per call).
        key = str(req_uuid)
        scope = current_scope()
        own = scope.op if scope is not None else None
        if type(own) is _Dispatched and own.name == operation_name:
            # The dispatch call's own pre signal (every call but one of an overridden ``dispatch``): claimed,
            # without building the signal's operation for Engine.begin to copy into it. That one would add
            # only the req_uuid and the signal's name: the rest (model, table, attributes) it takes from the
            # same Connection and request as the dispatch call did. An excluded signal is not claimed.
            claimed = self.engine.claim(key, signal=PRE_SIGNAL, unexpected=True)
            if claimed is own:
                own.correlation_id = key
                own.req_uuid = req_uuid
            if claimed is not None:
                return
        table = table_name if isinstance(table_name, str) else None
        op = Operation(
            source=SOURCE,
            name=operation_name,
            model=self._models(sender),
            collection=table,
            db_system=DB_SYSTEM,
            correlation_id=key,
            signal=PRE_SIGNAL,
            post_signal=POST_SIGNAL,
            write=operation_name in WRITE_OPERATIONS,
            attributes=_base_attributes(operation_name, [table] if table is not None else []),
        )
        self.engine.begin(op, key)

    def _on_post(self, sender: Any, req_uuid: Any = None, **_: Any) -> None:
        if req_uuid is None:
            return
        scope = current_scope()
        if scope is not None:
            own = scope.op
            if type(own) is _Dispatched and own.req_uuid is req_uuid and not own.done:
                # The post signal of the dispatch call its pre signal claimed (this very req_uuid): the
                # wrapper ends it with what the response tells. Told by identity, without the table's lookup.
                own.signal = POST_SIGNAL
                return
        key = str(req_uuid)
        engine = self.engine
        found = engine.lookup(key)
        if isinstance(found, _Dispatched) and not found.done:
            # A dispatch call's, claimed another way (Engine.begin's path): the wrapper ends it too.
            found.signal = POST_SIGNAL
            return
        engine.end(key, signal=POST_SIGNAL)


def _base_attributes(operation: str, tables: list[str]) -> dict[str, AttributeValue]:
    """The RPC attributes of a call and its tables (a tuple: shared by the calls that cache it, as the SDK keeps it)."""
    attributes: dict[str, AttributeValue] = {
        semconv.RPC_SYSTEM: RPC_SYSTEM,
        semconv.RPC_SERVICE: RPC_SERVICE,
        semconv.RPC_METHOD: operation,
    }
    if tables:
        attributes[semconv.AWS_DYNAMODB_TABLE_NAMES] = tuple(tables)
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
            names_of[table] = _key_names(connection, table)
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
                                _key_of(body.get(field), names(table), is_key=field == "Key"),
                                body.get("Item"),
                            )
            elif isinstance(requests, Mapping):  # BatchGetItem
                keys = requests.get("Keys")
                for key in keys if isinstance(keys, list) else ():
                    add(table, "get", _key_of(key, names(table), is_key=True))
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
                key = _key_of(body.get("Key"), names(table), is_key=True) or _key_of(item, names(table), is_key=False)
                add(table, action, key, item)
        return entries
    return None


def _response_attributes(op: Operation, _connection: Any, _args: Any, _kwargs: Any, data: Any) -> None:
    """``Source.entry``'s ``after``: what a successful response adds (consumed capacity, counts, request id)."""
    if not isinstance(data, _MAPPING):
        return
    attributes = op.attributes
    capacity = data.get("ConsumedCapacity")
    if capacity is not None:
        if isinstance(capacity, _MAPPING):
            attributes[aws_attributes.AWS_DYNAMODB_CONSUMED_CAPACITY] = [_capacity_text(capacity)]
        elif isinstance(capacity, list) and capacity:
            attributes[aws_attributes.AWS_DYNAMODB_CONSUMED_CAPACITY] = [_capacity_text(entry) for entry in capacity]
    if "Count" in data:
        value = data["Count"]
        if isinstance(value, int):
            attributes[aws_attributes.AWS_DYNAMODB_COUNT] = value
    if "ScannedCount" in data:
        value = data["ScannedCount"]
        if isinstance(value, int):
            attributes[aws_attributes.AWS_DYNAMODB_SCANNED_COUNT] = value
    meta = data.get("ResponseMetadata")
    if isinstance(meta, _MAPPING):
        request_id = meta.get("RequestId")
        if request_id:
            attributes[aws_attributes.AWS_REQUEST_ID] = str(request_id)


#: The text of the usual consumed capacity (``{"TableName": t, "CapacityUnits": u}``, what ``TOTAL`` returns for
#: an item call) by ``(t, u)``: the same every call, where the JSON encoder costs a few Python frames.
_CAPACITY_TEXTS: Final[dict[tuple[str, float], str]] = {}
_MAX_CAPACITY_TEXTS: Final = 1024


def _capacity_text(entry: Any) -> str:
    """``json.dumps(entry, sort_keys=True, default=str)``: one ConsumedCapacity entry as the span lists it."""
    if type(entry) is dict and len(entry) == 2:
        table = entry.get("TableName")
        units = entry.get("CapacityUnits")
        # A positive float only: -0.0 == 0.0 (one dict key) but prints otherwise; 1 == 1.0 too.
        if type(table) is str and type(units) is float and units > 0.0:
            text = _CAPACITY_TEXTS.get((table, units))
            if text is None:
                text = _capacity_json(entry)
                if len(_CAPACITY_TEXTS) < _MAX_CAPACITY_TEXTS:
                    _CAPACITY_TEXTS[(table, units)] = text
            return text
    return _capacity_json(entry)


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
