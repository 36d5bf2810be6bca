"""Sources on every catalog backend: put-if-absent versions, newest-per-name listing, durability."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from catalog import Catalog, SourceRecord, open_catalog
from common.errors import InvalidInput
from tests.fixtures_catalog import DURABLE_BACKENDS, catalog_url, race


def make_source(name: str = "payments", version: int = 1, created_at: str = "2024-05-01T12:00:00Z",
                **changes: Any) -> SourceRecord:
    record = SourceRecord(
        name=name,
        version=version,
        table=f"raw_{name}",
        columns=[{"name": "customer_id", "type": "int64", "nullable": False},
                 {"name": "amount", "type": "float64", "nullable": True},
                 {"name": "note", "type": "string", "nullable": True},
                 {"name": "paid_at", "type": "timestamp", "nullable": False}],
        entity_keys=["customer_id"],
        event_time="paid_at",
        created_time="loaded_at",
        hot_window_seconds=7 * 86400,
        kind="table",
        description=f"{name} v{version}: card payments ☕",
        tags=["payments", "ü"],
        owner="risk-team",
        created_by="carol",
        created_at=created_at,
    )
    return dataclasses.replace(record, **changes)


def save_versions(catalog: Catalog, name: str, *versions: int) -> None:
    for version in versions:
        catalog.save_source(make_source(name, version, created_at=f"2024-05-{version:02d}T00:00:00Z"))


def names_and_versions(records: list[SourceRecord]) -> list[tuple[str, int]]:
    return [(record.name, record.version) for record in records]


# -- saving and reading ----------------------------------------------------------


def test_save_returns_the_record(catalog: Catalog) -> None:
    record = make_source()
    assert catalog.save_source(record) == record
    assert catalog.source_versions("payments") == [record]


def test_round_trip_of_every_field(catalog: Catalog) -> None:
    record = make_source()
    catalog.save_source(record)
    [fetched] = catalog.source_versions("payments")
    assert fetched.to_dict() == record.to_dict()
    assert isinstance(fetched.tags, list) and isinstance(fetched.entity_keys, list)
    assert isinstance(fetched.columns, list) and all(isinstance(c, dict) for c in fetched.columns)
    assert fetched.columns[0] == {"name": "customer_id", "type": "int64", "nullable": False}
    assert fetched.hot_window_seconds == 604800 and isinstance(fetched.hot_window_seconds, int)
    assert fetched.definition() == record.definition()
    assert fetched.column_types() == [("customer_id", "int64"), ("amount", "float64"), ("note", "string"),
                                      ("paid_at", "timestamp")]


def test_round_trip_of_none_and_request_kind(catalog: Catalog) -> None:
    record = make_source("checkout", created_time=None, hot_window_seconds=None, kind="request", tags=[],
                         description="", owner="")
    catalog.save_source(record)
    [fetched] = catalog.source_versions("checkout")
    assert fetched == record
    assert fetched.created_time is None and fetched.hot_window_seconds is None
    assert (fetched.kind, fetched.tags) == ("request", [])
    assert catalog.list_sources().items == [record]


def test_same_name_and_version_returns_first(catalog: Catalog) -> None:
    first = make_source()
    catalog.save_source(first)
    changed = make_source(table="other_table", columns=[{"name": "x", "type": "string", "nullable": True}],
                          description="changed", tags=["other"], created_by="mallory",
                          created_at="2030-01-01T00:00:00Z")
    assert changed != first
    assert catalog.save_source(changed) == first
    assert catalog.source_versions("payments") == [first]
    assert catalog.list_sources().items == [first]


def test_same_version_of_another_name_is_a_new_record(catalog: Catalog) -> None:
    payments, refunds = make_source("payments"), make_source("refunds")
    assert catalog.save_source(payments) == payments
    assert catalog.save_source(refunds) == refunds
    assert catalog.source_versions("refunds") == [refunds]


def test_concurrent_saves_of_one_version_converge(catalog: Catalog) -> None:
    saved = race(16, lambda i: catalog.save_source(make_source(created_by=f"user{i}", owner=f"team{i}")))
    assert saved[0].created_by.startswith("user")
    assert all(record == saved[0] for record in saved)
    assert catalog.source_versions("payments") == [saved[0]]
    assert catalog.list_sources().total == 1


def test_versions_oldest_first_by_number(catalog: Catalog) -> None:
    save_versions(catalog, "payments", 10, 2, 1, 9)
    save_versions(catalog, "other", 3)
    versions = catalog.source_versions("payments")
    assert [r.version for r in versions] == [1, 2, 9, 10]  # 10 after 9, not after 1
    assert versions[0] == make_source("payments", 1, created_at="2024-05-01T00:00:00Z")
    assert names_and_versions(catalog.source_versions("other")) == [("other", 3)]
    assert catalog.source_versions("unknown") == []
    assert catalog.source_versions("Payments") == []  # names are case sensitive


def test_sources_and_feature_sets_are_kept_apart(catalog: Catalog) -> None:
    save_versions(catalog, "payments", 1, 2)
    assert catalog.feature_set_versions("payments") == []
    assert catalog.list_feature_sets().total == 0
    assert catalog.list_sources().total == 1


# -- listing -----------------------------------------------------------------------


def test_list_newest_version_per_name_in_code_point_order(catalog: Catalog) -> None:
    save_versions(catalog, "a", 1, 2)
    save_versions(catalog, "B", 3, 1, 2)
    save_versions(catalog, "z", 1)
    save_versions(catalog, "_private", 10, 9)
    save_versions(catalog, "é", 1)

    page = catalog.list_sources()
    # code point order on every backend: upper case < "_" < lower case < accented
    assert names_and_versions(page.items) == [("B", 3), ("_private", 10), ("a", 2), ("z", 1), ("é", 1)]
    assert (page.total, page.offset, page.limit) == (5, 0, 50)
    assert page.items[0] == make_source("B", 3, created_at="2024-05-03T00:00:00Z")


def test_list_pages_over_names(catalog: Catalog) -> None:
    for n, name in enumerate(["a", "b", "c", "d", "e"], start=1):
        save_versions(catalog, name, *range(1, n + 1))

    pages = [catalog.list_sources(offset=offset, limit=2) for offset in (0, 2, 4)]
    assert [names_and_versions(p.items) for p in pages] == [[("a", 1), ("b", 2)], [("c", 3), ("d", 4)], [("e", 5)]]
    assert [(p.total, p.offset, p.limit) for p in pages] == [(5, 0, 2), (5, 2, 2), (5, 4, 2)]

    beyond = catalog.list_sources(offset=9, limit=2)
    assert (beyond.items, beyond.total, beyond.offset) == ([], 5, 9)


def test_limit_zero_returns_only_the_total(catalog: Catalog) -> None:
    save_versions(catalog, "a", 1, 2, 3)
    save_versions(catalog, "b", 1)
    counted = catalog.list_sources(limit=0)
    assert (counted.items, counted.total, counted.limit) == ([], 2, 0)


def test_list_empty(catalog: Catalog) -> None:
    page = catalog.list_sources()
    assert (page.items, page.total) == ([], 0)


@pytest.mark.parametrize("offset, limit", [(-1, 10), (0, -1), (-5, -5)])
def test_negative_paging_is_invalid(catalog: Catalog, offset: int, limit: int) -> None:
    with pytest.raises(InvalidInput):
        catalog.list_sources(offset=offset, limit=limit)


# -- durability --------------------------------------------------------------------


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_sources_survive_close_and_reopen(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = catalog_url(backend, request, tmp_path)
    first = open_catalog(url)
    v1 = make_source(version=1, created_time=None, hot_window_seconds=None)
    v2 = make_source(version=2, created_at="2024-06-01T00:00:00Z")
    first.save_source(v1)
    first.save_source(v2)
    first.close()

    reopened = open_catalog(url)
    try:
        assert reopened.source_versions("payments") == [v1, v2]
        assert reopened.list_sources().items == [v2]
        # the (name, version) key survived too: the stored record still wins
        assert reopened.save_source(make_source(version=1, created_by="mallory")) == v1
        assert reopened.source_versions("payments") == [v1, v2]
    finally:
        reopened.close()
