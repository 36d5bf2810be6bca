"""Serving statistics and API keys on every catalog backend."""
from __future__ import annotations

from typing import Any

import pytest

from catalog import Catalog
from common.errors import InvalidInput, NotFound
from tests.fixtures_catalog import race
from tests.test_catalog_contract import make_api_key

REVOKED_AT = "2024-06-01T00:00:00.000+00:00"


def serving_stats(writer: int, round_: int = 0) -> dict[str, Any]:
    """A complete statistics document whose every part names its writer, so a torn one would show."""
    return {"writer": writer, "round": round_, "rows": 1000 * writer + round_,
            "columns": {f"c{c}": {"mean": writer + c / 10, "nulls": writer, "top": [["FR", writer], ["ü", None]]}
                        for c in range(20)},
            "violations": {"spend_7d": {"between": writer}}, "ok": True}


# -- serving statistics ---------------------------------------------------------------


def test_serving_stats_unknown_is_none(catalog: Catalog) -> None:
    assert catalog.get_serving_stats("e0001") is None


def test_serving_stats_round_trip_and_replace(catalog: Catalog) -> None:
    first = {"rows": 3, "columns": {"spend_7d": {"mean": 1.5, "quantiles": [0.0, 1.5, None]}}, "note": "café"}
    catalog.save_serving_stats("e0001", first)
    assert catalog.get_serving_stats("e0001") == first

    second = {"rows": 4}
    catalog.save_serving_stats("e0001", second)
    assert catalog.get_serving_stats("e0001") == second  # replaced whole, not merged
    catalog.save_serving_stats("e0002", first)
    assert (catalog.get_serving_stats("e0001"), catalog.get_serving_stats("e0002")) == (second, first)


@pytest.mark.parametrize("stats", [{"columns": {"a", "b"}}, {"when": object()}, ["not", "a", "mapping"]],
                         ids=["set", "object", "list"])
def test_serving_stats_must_be_json_safe(catalog: Catalog, stats: Any) -> None:
    with pytest.raises(InvalidInput):
        catalog.save_serving_stats("e0001", stats)
    assert catalog.get_serving_stats("e0001") is None


def test_concurrent_serving_stats_upserts(catalog: Catalog) -> None:
    def upsert_rounds(writer: int) -> None:
        for round_ in range(5):
            catalog.save_serving_stats("e0001", serving_stats(writer, round_))

    race(8, upsert_rounds)  # raises if any upsert failed
    stored = catalog.get_serving_stats("e0001")
    assert stored is not None
    assert stored == serving_stats(stored["writer"], stored["round"])  # one writer's complete document
    catalog.save_serving_stats("e0001", serving_stats(99))
    assert catalog.get_serving_stats("e0001") == serving_stats(99)  # the last write wins


# -- API keys ----------------------------------------------------------------------------


def test_api_key_round_trip(catalog: Catalog) -> None:
    key = make_api_key(1, role="admin")
    assert catalog.save_api_key(key) == key
    assert catalog.find_api_key(key.key_hash) == key
    assert catalog.find_api_key("f" * 64) is None
    assert catalog.list_api_keys() == [key]


def test_api_key_saved_revoked_stays_revoked(catalog: Catalog) -> None:
    key = make_api_key(1, revoked_at=REVOKED_AT)
    catalog.save_api_key(key)
    assert catalog.find_api_key(key.key_hash) == key


@pytest.mark.parametrize("clash", ["key_id", "key_hash"])
def test_duplicate_api_key_refused(catalog: Catalog, clash: str) -> None:
    first = make_api_key(1)
    catalog.save_api_key(first)
    second = make_api_key(1, key_hash="e" * 64) if clash == "key_id" else make_api_key(2, key_hash=first.key_hash)
    with pytest.raises(InvalidInput):
        catalog.save_api_key(second)
    assert catalog.list_api_keys() == [first]
    assert catalog.find_api_key(first.key_hash) == first


def test_concurrent_saves_of_one_api_key_store_one(catalog: Catalog) -> None:
    def save(i: int) -> bool:
        try:
            catalog.save_api_key(make_api_key(1, name=f"attempt {i}"))
            return True
        except InvalidInput:
            return False

    assert race(8, save).count(True) == 1
    assert len(catalog.list_api_keys()) == 1


def test_revoke_is_idempotent(catalog: Catalog) -> None:
    key = make_api_key(1)
    catalog.save_api_key(key)
    catalog.save_api_key(make_api_key(2))

    revoked = catalog.revoke_api_key("k0001", REVOKED_AT)
    assert revoked == make_api_key(1, revoked_at=REVOKED_AT)
    assert catalog.revoke_api_key("k0001", "2030-01-01T00:00:00.000+00:00").revoked_at == REVOKED_AT  # first kept
    assert catalog.find_api_key(key.key_hash) == revoked  # still found: the caller decides what revoked means
    assert catalog.find_api_key(make_api_key(2).key_hash).revoked_at is None


def test_revoke_unknown_key_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        catalog.revoke_api_key("k9999", REVOKED_AT)


def test_api_keys_listed_oldest_first_then_by_id(catalog: Catalog) -> None:
    stamps = {3: "2024-01-03T00:00:00Z", 1: "2024-01-02T00:00:00Z", 4: "2024-01-01T00:00:00Z",
              2: "2024-01-02T00:00:00Z"}
    for n, stamp in stamps.items():
        catalog.save_api_key(make_api_key(n, created_at=stamp))
    catalog.revoke_api_key("k0003", REVOKED_AT)
    assert [(k.key_id, k.revoked_at) for k in catalog.list_api_keys()] == [
        ("k0004", None), ("k0001", None), ("k0002", None), ("k0003", REVOKED_AT)]
    assert catalog.list_api_keys()[0] == make_api_key(4, created_at=stamps[4])
