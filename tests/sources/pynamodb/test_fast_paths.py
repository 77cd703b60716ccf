"""The hot path's shortcuts give what their plain spellings give (``pk_text``, ``_key_text``, ``json.dumps``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sigtrace import semconv
from sigtrace.sources import pynamodb as source
from sigtrace.sources.kit import pk_text
from sigtrace.testing import capture
from tests.sources.pynamodb.helpers import attrs
from tests.sources.pynamodb.models import Customer, Order

CAPACITIES: list[Any] = [
    {"TableName": "orders", "CapacityUnits": 1.0},
    {"CapacityUnits": 1.0, "TableName": "orders"},  # the other order: the same sorted text
    {"TableName": "orders", "CapacityUnits": 0.5},
    {"TableName": 'quo"ted\u00e9', "CapacityUnits": 2.0},
    {"TableName": "orders", "CapacityUnits": -0.0},
    {"TableName": "orders", "CapacityUnits": 0.0},
    {"TableName": "orders", "CapacityUnits": 1},
    {"TableName": "orders", "CapacityUnits": float("nan")},
    {"TableName": "orders", "CapacityUnits": 3.0, "Table": {"CapacityUnits": 3.0}},
    {"TableName": "orders"},
    {"TableName": 7, "CapacityUnits": 1.0},
]


@pytest.mark.parametrize("entry", CAPACITIES)
def test_capacity_text_is_the_sorted_json_also_when_cached(entry: Any) -> None:
    plain = json.dumps(entry, sort_keys=True, default=str)
    assert source._capacity_text(entry) == plain
    assert source._capacity_text(dict(entry)) == plain  # the second time from the cache, where it keeps one


def test_capacity_text_tells_minus_zero_from_zero_and_one_from_one_point_zero() -> None:
    texts = [source._capacity_text({"TableName": "t", "CapacityUnits": units}) for units in (0.0, -0.0, 1.0, 1)]
    assert texts == [json.dumps({"CapacityUnits": u, "TableName": "t"}) for u in (0.0, -0.0, 1.0, 1)]
    assert len(set(texts)) == 4


KEY_VALUES: list[Any] = [
    {"S": "a"},
    {"N": "7"},
    {"B": b"\x00\xffbin"},
    {"B": bytearray(b"ba")},
    {"B": "already text"},
    {"S": "x" * 300},
    {"SS": ["a", "b"]},
    {"S": "a", "N": "1"},
    "not a mapping",
]


@pytest.mark.parametrize("value", KEY_VALUES)
def test_key_of_spells_key_text(value: Any) -> None:
    item = {"h": value, "r": {"N": "2"}, "other": {"S": "z"}}
    assert source._key_of(item, ("h", "r"), is_key=False) == {"h": source._key_text(value), "r": "2"}
    assert source._key_of({"h": value}, (), is_key=True) == {"h": source._key_text(value)}
    assert source._key_of(item, (), is_key=False) is None
    assert source._key_of({}, ("h",), is_key=True) is None
    assert source._key_of({}, (), is_key=True) is None


@pytest.mark.parametrize(
    ("hash_key", "range_key"),
    [("short", None), ("x" * 256, None), ("x" * 257, None), ("y" * 400, 3), ("a", 9)],
)
def test_the_pk_is_pk_text_of_the_key(hash_key: str, range_key: int | None) -> None:
    with capture(sources=["pynamodb"]) as cap:
        if range_key is None:
            Customer(hash_key).save()
            key: dict[str, str] = {"id": hash_key}
        else:
            Order(hash_key, range_key).save()
            key = {"customer_id": hash_key, "order_id": str(range_key)}
        (span,) = cap.spans
        (event,) = cap.audit_events
    assert event["key"] == key
    assert attrs(span)[semconv.SIGTRACE_PK] == pk_text(key)
    assert event["pk"] == pk_text(key)


def test_changed_fields_of_a_put_are_the_item_names_in_order() -> None:
    with capture(sources=["pynamodb"]) as cap:
        Order("c", 1, total=3).save()
        Order("c", 2, total=4).save()  # the second from the audit sink's cache of the same names
        first, second = cap.audit_events
    assert first["changed_fields"] == second["changed_fields"]
    assert set(first["changed_fields"]) == {"customer_id", "order_id", "status", "total"}
    assert isinstance(first["changed_fields"], list)
