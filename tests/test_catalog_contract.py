"""One contract suite for every catalog backend, opened through `open_catalog`.

The `catalog` fixture comes from tests/fixtures_catalog.py; feature sets, serving
statistics and API keys have their own files over the same fixture.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

from catalog import ApiKeyRecord, Catalog, EtlRecord, EtlSource, FeatureSetRecord, QueryRecord, open_catalog
from common.errors import InvalidInput, NotFound
from tests.fixtures_catalog import DURABLE_BACKENDS, catalog_url


def make_query(n: int, created_at: str = "2024-05-01T12:00:00Z", **changes: Any) -> QueryRecord:
    record = QueryRecord(
        query_id=f"q{n:04d}",
        name=f"query {n}",
        sql=f"SELECT id, amount FROM payments WHERE note = 'café ☕ {n}'",
        sql_hash=f"hash{n:04d}",
        schema=[{"name": "id", "type": "int64"}, {"name": "amount", "type": "float64"}],
        created_by="alice",
        created_at=created_at,
    )
    return dataclasses.replace(record, **changes)


def make_etl(n: int, query_id: str = "q0001", created_at: str = "2024-05-01T12:00:00Z", **changes: Any) -> EtlRecord:
    record = EtlRecord(
        etl_id=f"e{n:04d}",
        name=f"etl {n}",
        query_id=query_id,
        source=EtlSource(kind="git", url="https://example.org/repo.git@main:etl/spend.py",
                         repo="https://example.org/repo.git", ref="main", commit="a" * 40, path="etl/spend.py"),
        code="def transform(df):\n    return df\n",
        code_sha256="c" * 64,
        schema=[{"name": "id", "type": "int64"}, {"name": "spend_7d", "type": "float64"}],
        created_by="bob",
        created_at=created_at,
        extra={"fitted": {"mean": 1.5, "bins": [0, 1, 2]}, "note": None, "ok": True, "tags": ["a", "ü"]},
    )
    return dataclasses.replace(record, **changes)


def make_feature_set(name: str = "spend", version: int = 1, created_at: str = "2024-05-01T12:00:00Z",
                     **changes: Any) -> FeatureSetRecord:
    record = FeatureSetRecord(
        name=name,
        version=version,
        query_id="q0001",
        etl_id="e0001",
        index_key="customer_id",
        features=["spend_7d", "visits_30d"],
        description=f"{name} v{version}: spend per customer ☕",
        tags=["payments", "ü"],
        created_by="carol",
        created_at=created_at,
    )
    return dataclasses.replace(record, **changes)


def make_api_key(n: int, created_at: str = "2024-05-01T12:00:00Z", **changes: Any) -> ApiKeyRecord:
    record = ApiKeyRecord(key_id=f"k{n:04d}", name=f"key {n}", role="scientist", key_hash=f"{n:064x}",
                          created_at=created_at)
    return dataclasses.replace(record, **changes)


# -- round trips --------------------------------------------------------------


def test_query_round_trip(catalog: Catalog) -> None:
    record = make_query(1)
    assert catalog.save_query(record) == record
    assert catalog.get_query("q0001") == record


@pytest.mark.parametrize("source", [
    EtlSource(kind="git", url="https://example.org/r.git@v1:f.py", repo="https://example.org/r.git",
              ref="v1", commit="b" * 40, path="f.py"),
    EtlSource(kind="http", url="https://example.org/etl.py"),
], ids=["git", "http"])
def test_etl_round_trip(catalog: Catalog, source: EtlSource) -> None:
    record = make_etl(1, source=source)
    saved = catalog.save_etl(record)
    assert saved == record
    fetched = catalog.get_etl("e0001")
    assert fetched == record
    assert isinstance(fetched.source, EtlSource)
    assert fetched.extra["fitted"]["bins"] == [0, 1, 2]


def test_etl_round_trip_with_fitted_state_expectations_and_stats(catalog: Catalog) -> None:
    record = make_etl(
        1,
        state={"mean": {"amount": 12.5}, "vocab": ["a", "b", "ü"], "bins": [[0, 1.5], [1.5, None]], "fitted": True},
        expectations={"spend_7d": {"not_null": True, "between": [0, 1e6]}, "country": {"in": ["FR", "DE"]}},
        serving_policy="warn",
        training_stats={"spend_7d": {"count": 1000, "mean": 3.25, "quantiles": {"0.5": 2.0, "0.99": 40.0},
                                     "nulls": 0}, "country": {"top": [["FR", 600], ["DE", 400]]}},
    )
    assert catalog.save_etl(record) == record
    assert catalog.get_etl("e0001") == record
    assert catalog.list_etls().items == [record]
    assert catalog.save_etl(make_etl(1, state={"other": 1}, serving_policy="reject")) == record  # first wins


def test_etl_new_fields_default(catalog: Catalog) -> None:
    catalog.save_etl(make_etl(1))
    fetched = catalog.get_etl("e0001")
    new_fields = (fetched.state, fetched.expectations, fetched.serving_policy, fetched.training_stats)
    assert new_fields == ({}, {}, "reject", {})


@pytest.mark.parametrize("get", [lambda c: c.get_query("q9999"), lambda c: c.get_etl("e9999")],
                         ids=["query", "etl"])
def test_unknown_id_is_not_found(catalog: Catalog, get: Callable[[Catalog], Any]) -> None:
    catalog.save_query(make_query(1))
    catalog.save_etl(make_etl(1))
    with pytest.raises(NotFound):
        get(catalog)


# -- put-if-absent -------------------------------------------------------------


def test_same_query_id_returns_first(catalog: Catalog) -> None:
    first = make_query(1)
    catalog.save_query(first)
    again = make_query(1, name="renamed", created_by="mallory", created_at="2030-01-01T00:00:00Z")
    assert catalog.save_query(again) == first
    assert catalog.get_query("q0001") == first
    assert catalog.list_queries().total == 1


def test_same_sql_hash_other_id_returns_first(catalog: Catalog) -> None:
    first = make_query(1)
    catalog.save_query(first)
    assert catalog.save_query(make_query(2, sql_hash=first.sql_hash)) == first
    with pytest.raises(NotFound):
        catalog.get_query("q0002")
    assert catalog.list_queries().total == 1


def test_same_etl_id_returns_first(catalog: Catalog) -> None:
    first = make_etl(1)
    catalog.save_etl(first)
    assert catalog.save_etl(make_etl(1, code="changed", extra={"x": 1})) == first
    assert catalog.get_etl("e0001") == first
    assert catalog.list_etls().total == 1


@pytest.mark.parametrize("clash", ["same_id", "same_sql_hash"])
def test_concurrent_saves_converge(catalog: Catalog, clash: str) -> None:
    threads, rounds = 16, 4
    barrier = threading.Barrier(threads)

    def save_all(i: int) -> list[QueryRecord]:
        saved = []
        for n in range(rounds):  # every round, all threads race to save query n
            record = make_query(n, created_by=f"user{i}")
            if clash == "same_sql_hash":
                record = dataclasses.replace(record, query_id=f"q{n}-{i}")
            barrier.wait(timeout=10)
            saved.append(catalog.save_query(record))
        return saved

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so check-then-insert races would show
    try:
        with ThreadPoolExecutor(threads) as pool:
            per_thread = list(pool.map(save_all, range(threads)))
    finally:
        sys.setswitchinterval(switch_interval)

    winners = per_thread[0]
    assert all(saved == winners for saved in per_thread)  # every thread got the same record each round
    assert len({r.query_id for r in winners}) == rounds
    assert [catalog.get_query(r.query_id) for r in winners] == winners
    assert catalog.list_queries().total == rounds


# -- listing -------------------------------------------------------------------


def test_queries_listed_newest_first_then_by_id(catalog: Catalog) -> None:
    stamps = {3: "2024-01-03T00:00:00Z", 1: "2024-01-01T00:00:00Z", 5: "2024-01-02T00:00:00Z",
              2: "2024-01-02T00:00:00Z", 4: "2024-01-03T00:00:00Z"}
    for n, stamp in stamps.items():
        catalog.save_query(make_query(n, created_at=stamp))

    page = catalog.list_queries()
    assert [r.query_id for r in page.items] == ["q0004", "q0003", "q0005", "q0002", "q0001"]
    assert (page.total, page.offset, page.limit) == (5, 0, 50)
    assert page.items[0] == make_query(4, created_at=stamps[4])


def test_paging(catalog: Catalog) -> None:
    for n in range(1, 8):
        catalog.save_query(make_query(n, created_at=f"2024-01-{n:02d}T00:00:00Z"))
    newest_first = [f"q{n:04d}" for n in range(7, 0, -1)]

    pages = [catalog.list_queries(offset=offset, limit=3) for offset in (0, 3, 6)]
    assert [[r.query_id for r in p.items] for p in pages] == [newest_first[0:3], newest_first[3:6], newest_first[6:]]
    assert [(p.total, p.offset, p.limit) for p in pages] == [(7, 0, 3), (7, 3, 3), (7, 6, 3)]

    beyond = catalog.list_queries(offset=10, limit=3)
    assert (beyond.items, beyond.total) == ([], 7)
    counted = catalog.list_queries(offset=0, limit=0)
    assert (counted.items, counted.total) == ([], 7)


def test_etls_filtered_by_query_and_paged(catalog: Catalog) -> None:
    for n in range(1, 6):
        catalog.save_etl(make_etl(n, query_id="qA" if n % 2 else "qB", created_at=f"2024-02-{n:02d}T00:00:00Z"))

    everything = catalog.list_etls()
    assert [r.etl_id for r in everything.items] == ["e0005", "e0004", "e0003", "e0002", "e0001"]
    assert everything.total == 5

    only_a = catalog.list_etls(query_id="qA")
    assert [r.etl_id for r in only_a.items] == ["e0005", "e0003", "e0001"]
    assert only_a.total == 3

    second = catalog.list_etls(offset=1, limit=1, query_id="qB")
    assert [r.etl_id for r in second.items] == ["e0002"]
    assert (second.total, second.offset, second.limit) == (2, 1, 1)

    none = catalog.list_etls(query_id="nope")
    assert (none.items, none.total) == ([], 0)


@pytest.mark.parametrize("offset, limit", [(-1, 10), (0, -1)])
def test_negative_paging_is_invalid(catalog: Catalog, offset: int, limit: int) -> None:
    with pytest.raises(InvalidInput):
        catalog.list_queries(offset=offset, limit=limit)
    with pytest.raises(InvalidInput):
        catalog.list_etls(offset=offset, limit=limit)


def test_ping_answers(catalog: Catalog) -> None:
    catalog.ping()


# -- durability, registry, in-memory SQLite --------------------------------------


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_records_survive_close_and_reopen(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = catalog_url(backend, request, tmp_path)
    first = open_catalog(url)
    query, etl = make_query(1), make_etl(1)
    first.save_query(query)
    first.save_etl(etl)
    first.close()

    reopened = open_catalog(url)
    try:
        assert reopened.get_query("q0001") == query
        assert reopened.get_etl("e0001") == etl
        assert reopened.save_query(make_query(2, sql_hash=query.sql_hash)) == query  # unique index survived too
        assert reopened.list_queries().total == 1
    finally:
        reopened.close()


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_feature_sets_stats_and_keys_survive_close_and_reopen(backend: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    url = catalog_url(backend, request, tmp_path)
    first = open_catalog(url)
    for version in (1, 2):
        first.save_feature_set(make_feature_set(version=version))
    first.set_feature_set_stage("spend", 1, "production")
    stats = {"rows": 3, "columns": {"spend_7d": {"mean": 1.5, "nulls": [0, 1]}}}
    first.save_serving_stats("e0001", stats)
    first.save_api_key(make_api_key(1))
    first.revoke_api_key("k0001", "2024-06-01T00:00:00.000+00:00")
    first.close()

    reopened = open_catalog(url)
    try:
        versions = reopened.feature_set_versions("spend")
        assert [(r.version, r.stage) for r in versions] == [(1, "production"), (2, None)]
        assert reopened.save_feature_set(make_feature_set(version=1, created_by="mallory")).created_by == "carol"
        assert reopened.set_feature_set_stage("spend", 2, "production").stage == "production"
        assert [r.stage for r in reopened.feature_set_versions("spend")] == [None, "production"]
        assert reopened.get_serving_stats("e0001") == stats
        revoked = make_api_key(1, revoked_at="2024-06-01T00:00:00.000+00:00")
        assert reopened.find_api_key(revoked.key_hash) == revoked
        with pytest.raises(InvalidInput):  # the unique key_hash survived too
            reopened.save_api_key(make_api_key(2, key_hash=revoked.key_hash))
    finally:
        reopened.close()


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        open_catalog("redis://localhost/0")
    message = caught.value.message
    assert "'redis'" in message
    for scheme in ("mongodb", "mongomock", "postgresql", "sqlite"):
        assert scheme in message


def test_sqlite_in_memory_works_across_threads() -> None:
    memory = open_catalog("sqlite:///:memory:")
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: memory.save_query(make_query(1, created_by=f"u{i}")), range(32)))
        assert all(r == results[0] for r in results)
        memory.save_etl(make_etl(1))
        assert memory.get_query("q0001") == results[0]
        assert memory.list_etls(query_id="q0001").total == 1
    finally:
        memory.close()
