"""The names users query by, in one place.

Stable OpenTelemetry names come from ``opentelemetry-semantic-conventions``; sigtrace's own
names live here so that sources and sinks never spell a key twice.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import aws_attributes, rpc_attributes
from opentelemetry.semconv.attributes import db_attributes, error_attributes

# --- OpenTelemetry database / AWS / RPC conventions (stable names) ---
DB_SYSTEM_NAME: Final = db_attributes.DB_SYSTEM_NAME
DB_OPERATION_NAME: Final = db_attributes.DB_OPERATION_NAME
DB_COLLECTION_NAME: Final = db_attributes.DB_COLLECTION_NAME
DB_NAMESPACE: Final = db_attributes.DB_NAMESPACE
DB_OPERATION_BATCH_SIZE: Final = db_attributes.DB_OPERATION_BATCH_SIZE
ERROR_TYPE: Final = error_attributes.ERROR_TYPE
AWS_DYNAMODB_TABLE_NAMES: Final = aws_attributes.AWS_DYNAMODB_TABLE_NAMES
RPC_SYSTEM: Final = rpc_attributes.RPC_SYSTEM
RPC_SERVICE: Final = rpc_attributes.RPC_SERVICE
RPC_METHOD: Final = rpc_attributes.RPC_METHOD

#: Driver dialect / vendor names (SQLAlchemy dialects, Django vendors) -> ``db.system.name`` values.
DB_SYSTEM_BY_DIALECT: Final = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "mssql": "microsoft.sql_server",
    "microsoft": "microsoft.sql_server",
    "oracle": "oracle.db",
    "cockroachdb": "cockroachdb",
}


def db_system_name(dialect: str | None) -> str | None:
    """The ``db.system.name`` of a driver's dialect or vendor name (unknown names pass through)."""
    if not dialect:
        return None
    name = dialect.lower()
    return DB_SYSTEM_BY_DIALECT.get(name, name)


def operation_attributes(source: str, db_system: str | None, name: str, collection: str | None) -> dict[str, str]:
    """The low-cardinality attributes that identify an operation, on its span and its metric points alike."""
    attrs = {SIGTRACE_SOURCE: source, DB_OPERATION_NAME: name}
    if db_system:
        attrs[DB_SYSTEM_NAME] = db_system
    if collection:
        attrs[DB_COLLECTION_NAME] = collection
    return attrs


# --- Old names, added beside the stable ones with OTEL_SEMCONV_STABILITY_OPT_IN=database/dup ---
OLD_DB_SYSTEM: Final = "db.system"
OLD_DB_OPERATION: Final = "db.operation"
OLD_DB_NAME: Final = "db.name"
OLD_DB_SQL_TABLE: Final = "db.sql.table"
#: Old ``db.system`` values where they differ from the stable ``db.system.name`` values.
OLD_DB_SYSTEM_VALUES: Final = {"aws.dynamodb": "dynamodb", "postgresql": "postgresql"}

# --- sigtrace's own attributes ---
SIGTRACE_SOURCE: Final = "sigtrace.source"
SIGTRACE_MODEL: Final = "sigtrace.model"
SIGTRACE_SIGNAL: Final = "sigtrace.signal"
SIGTRACE_CORRELATION_ID: Final = "sigtrace.correlation_id"
SIGTRACE_PK: Final = "sigtrace.pk"
SIGTRACE_ORPHANED: Final = "sigtrace.orphaned"
SIGTRACE_OUTCOME: Final = "sigtrace.outcome"
SIGTRACE_ERROR_KIND: Final = "sigtrace.error.kind"
SIGTRACE_ORPHAN_REASON: Final = "sigtrace.orphan.reason"
#: Rows an operation wrote (a flush batch, an ORM bulk statement), where the driver or the unit of work says.
SIGTRACE_ROWS_AFFECTED: Final = "sigtrace.rows_affected"

# --- Operation names (``db.operation.name``): one name per act in every source (docs/conventions.md) ---
#: An instance written by the ORM's save (insert or update, as the ORM decides).
OPERATION_SAVE: Final = "save"
#: Rows inserted by a statement or a flush batch (SQLAlchemy's unit of work).
OPERATION_INSERT: Final = "insert"
#: Rows updated: an instance's update, a query set's or a statement's UPDATE (``filter`` says which rows).
OPERATION_UPDATE: Final = "update"
#: Rows deleted: an instance's delete, a query set's or a statement's DELETE (``filter`` says which rows).
OPERATION_DELETE: Final = "delete"
OPERATION_SELECT: Final = "select"
OPERATION_FLUSH: Final = "flush"
OPERATION_BULK_CREATE: Final = "bulk_create"
OPERATION_BULK_UPDATE: Final = "bulk_update"
#: Links added / removed / cleared between an owner and related rows (many-to-many or reverse foreign
#: key); the span names the table the rows are written in (the through table, or the child table).
OPERATION_RELATION_ADD: Final = "relation_add"
OPERATION_RELATION_REMOVE: Final = "relation_remove"
OPERATION_RELATION_CLEAR: Final = "relation_clear"

# --- Relation operations: span attributes (the owner is ``sigtrace.model`` / ``sigtrace.pk``) ---
SIGTRACE_RELATION_NAME: Final = "sigtrace.relation.name"
SIGTRACE_RELATION_MODEL: Final = "sigtrace.relation.model"
SIGTRACE_RELATION_PK: Final = "sigtrace.relation.pk"

# --- Metrics ---
METRIC_DURATION: Final = "db.client.operation.duration"
METRIC_OPERATIONS: Final = "sigtrace.operations"
METRIC_ORPHANS: Final = "sigtrace.orphans"
METRIC_INTERNAL_ERRORS: Final = "sigtrace.internal_errors"
METRIC_IN_FLIGHT: Final = "sigtrace.operations.in_flight"
#: The semantic-convention buckets for db.client.operation.duration (the SDK defaults put
#: every fast call in the first bucket).
DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

# --- Audit ---
AUDIT_EVENT: Final = "sigtrace.audit"
AUDIT_SINGLE_EVENT: Final = "sigtrace.signal"
OUTCOME_OK: Final = "ok"
OUTCOME_ERROR: Final = "error"
OUTCOME_SKIPPED: Final = "skipped"
#: A write whose transaction (or the savepoint around it) rolled back: the database did not keep it.
OUTCOME_ROLLED_BACK: Final = "rolled_back"
OUTCOME_UNKNOWN: Final = "unknown"
OUTCOMES: Final = (OUTCOME_OK, OUTCOME_ERROR, OUTCOME_ROLLED_BACK, OUTCOME_SKIPPED, OUTCOME_UNKNOWN)
#: Audit fields of bulk writes: the rows written, the pks (at most :data:`MAX_AUDIT_PKS`, ``pks_truncated``
#: when cut) and a statement's filter as SQL text with placeholders (never the bound values).
AUDIT_ROWS: Final = "rows"
AUDIT_PKS: Final = "pks"
AUDIT_PKS_TRUNCATED: Final = "pks_truncated"
AUDIT_FILTER: Final = "filter"
MAX_AUDIT_PKS: Final = 100
#: Objects handed to a batch call (``db.operation.batch.size`` on the span).
AUDIT_BATCH_SIZE: Final = "batch_size"
#: Relation operations: the relation (field) name, the related model, the related rows' pks (capped
#: like ``pks``, ``related_pks_truncated`` when cut). ``model``/``pk`` are the owner's.
AUDIT_RELATION: Final = "relation"
AUDIT_RELATED_MODEL: Final = "related_model"
AUDIT_RELATED_PKS: Final = "related_pks"
AUDIT_RELATED_PKS_TRUNCATED: Final = "related_pks_truncated"

#: Instrumentation scope name of every tracer, meter and logger sigtrace creates.
SCOPE_NAME: Final = "sigtrace"
