"""Feature sets on every catalog backend: versions, newest-per-name listing, stage moves."""
from __future__ import annotations

import pytest

from catalog import Catalog, FeatureSetRecord
from catalog.base import STAGES
from common.errors import InvalidInput, NotFound
from tests.fixtures_catalog import race
from tests.test_catalog_contract import make_feature_set


def stages(catalog: Catalog, name: str = "spend") -> dict[int, str | None]:
    return {record.version: record.stage for record in catalog.feature_set_versions(name)}


def save_versions(catalog: Catalog, name: str, *versions: int) -> None:
    for version in versions:
        catalog.save_feature_set(make_feature_set(name, version, created_at=f"2024-05-{version:02d}T00:00:00Z"))


# -- saving and reading ----------------------------------------------------------


def test_round_trip(catalog: Catalog) -> None:
    record = make_feature_set()
    assert catalog.save_feature_set(record) == record
    [fetched] = catalog.feature_set_versions("spend")
    assert fetched == record
    assert isinstance(fetched.features, list) and isinstance(fetched.tags, list)
    assert fetched.definition() == record.definition()


def test_saved_without_stage_whatever_the_record_says(catalog: Catalog) -> None:
    saved = catalog.save_feature_set(make_feature_set(stage="production"))
    assert saved.stage is None
    assert stages(catalog) == {1: None}


def test_same_name_and_version_returns_first(catalog: Catalog) -> None:
    first = make_feature_set()
    catalog.save_feature_set(first)
    changed = make_feature_set(features=["other"], description="changed", created_by="mallory",
                               created_at="2030-01-01T00:00:00Z")
    assert catalog.save_feature_set(changed) == first
    assert catalog.feature_set_versions("spend") == [first]


def test_save_again_returns_the_current_stage(catalog: Catalog) -> None:
    catalog.save_feature_set(make_feature_set())
    catalog.set_feature_set_stage("spend", 1, "staging")
    assert catalog.save_feature_set(make_feature_set()).stage == "staging"


def test_versions_oldest_first_by_number(catalog: Catalog) -> None:
    save_versions(catalog, "spend", 10, 2, 1, 9)
    save_versions(catalog, "other", 3)
    assert [r.version for r in catalog.feature_set_versions("spend")] == [1, 2, 9, 10]  # 10 after 9, not after 1
    assert catalog.feature_set_versions("unknown") == []


def test_concurrent_saves_of_one_version_converge(catalog: Catalog) -> None:
    saved = race(8, lambda i: catalog.save_feature_set(make_feature_set(created_by=f"user{i}")))
    assert all(record == saved[0] for record in saved)
    assert catalog.feature_set_versions("spend") == [saved[0]]


# -- listing -----------------------------------------------------------------------


def test_list_newest_version_per_name_in_code_point_order(catalog: Catalog) -> None:
    save_versions(catalog, "beta", 1, 2)
    save_versions(catalog, "alpha", 3, 1, 2)
    save_versions(catalog, "Zeta", 1)
    save_versions(catalog, "_private", 10, 9)
    save_versions(catalog, "émile", 1)

    page = catalog.list_feature_sets()
    # code point order on every backend: upper case < "_" < lower case < accented
    assert [(r.name, r.version) for r in page.items] == [("Zeta", 1), ("_private", 10), ("alpha", 3),
                                                         ("beta", 2), ("émile", 1)]
    assert (page.total, page.offset, page.limit) == (5, 0, 50)
    assert page.items[2] == make_feature_set("alpha", 3, created_at="2024-05-03T00:00:00Z")


def test_list_pages_over_names(catalog: Catalog) -> None:
    for n, name in enumerate(["a", "b", "c", "d", "e"], start=1):
        save_versions(catalog, name, *range(1, n + 1))

    pages = [catalog.list_feature_sets(offset=offset, limit=2) for offset in (0, 2, 4)]
    assert [[(r.name, r.version) for r in p.items] for p in pages] == [
        [("a", 1), ("b", 2)], [("c", 3), ("d", 4)], [("e", 5)]]
    assert [(p.total, p.offset, p.limit) for p in pages] == [(5, 0, 2), (5, 2, 2), (5, 4, 2)]

    beyond = catalog.list_feature_sets(offset=9, limit=2)
    assert (beyond.items, beyond.total) == ([], 5)
    counted = catalog.list_feature_sets(limit=0)
    assert (counted.items, counted.total) == ([], 5)


def test_list_empty(catalog: Catalog) -> None:
    page = catalog.list_feature_sets()
    assert (page.items, page.total) == ([], 0)


def test_list_shows_the_current_stage(catalog: Catalog) -> None:
    save_versions(catalog, "spend", 1, 2)
    catalog.set_feature_set_stage("spend", 2, "staging")
    assert [r.stage for r in catalog.list_feature_sets().items] == ["staging"]


@pytest.mark.parametrize("offset, limit", [(-1, 10), (0, -1)])
def test_negative_paging_is_invalid(catalog: Catalog, offset: int, limit: int) -> None:
    with pytest.raises(InvalidInput):
        catalog.list_feature_sets(offset=offset, limit=limit)


# -- stages --------------------------------------------------------------------------


def test_production_moves_from_v1_to_v2(catalog: Catalog) -> None:
    save_versions(catalog, "spend", 1, 2, 3)
    moved = catalog.set_feature_set_stage("spend", 1, "production")
    assert moved == make_feature_set(version=1, created_at="2024-05-01T00:00:00Z", stage="production")
    assert stages(catalog) == {1: "production", 2: None, 3: None}

    assert catalog.set_feature_set_stage("spend", 2, "production").stage == "production"
    assert stages(catalog) == {1: None, 2: "production", 3: None}


def test_staging_and_production_on_different_versions(catalog: Catalog) -> None:
    save_versions(catalog, "spend", 1, 2, 3)
    catalog.set_feature_set_stage("spend", 1, "production")
    catalog.set_feature_set_stage("spend", 3, "staging")
    assert stages(catalog) == {1: "production", 2: None, 3: "staging"}

    catalog.set_feature_set_stage("spend", 3, "production")  # promoted: leaves staging, takes production
    assert stages(catalog) == {1: None, 2: None, 3: "production"}
    catalog.set_feature_set_stage("spend", 2, "staging")
    assert stages(catalog) == {1: None, 2: "staging", 3: "production"}


def test_setting_the_same_stage_again_changes_nothing(catalog: Catalog) -> None:
    save_versions(catalog, "spend", 1, 2)
    catalog.set_feature_set_stage("spend", 2, "production")
    assert catalog.set_feature_set_stage("spend", 2, "production").stage == "production"
    assert stages(catalog) == {1: None, 2: "production"}


def test_clearing_a_stage(catalog: Catalog) -> None:
    save_versions(catalog, "spend", 1, 2)
    catalog.set_feature_set_stage("spend", 1, "production")
    catalog.set_feature_set_stage("spend", 2, "staging")
    cleared = catalog.set_feature_set_stage("spend", 1, None)
    assert cleared.stage is None
    assert stages(catalog) == {1: None, 2: "staging"}
    assert catalog.set_feature_set_stage("spend", 1, None).stage is None  # clearing twice is fine


def test_stages_belong_to_one_name(catalog: Catalog) -> None:
    save_versions(catalog, "spend", 1, 2)
    save_versions(catalog, "other", 1, 2)
    catalog.set_feature_set_stage("other", 1, "production")
    catalog.set_feature_set_stage("spend", 2, "production")
    assert stages(catalog, "other") == {1: "production", 2: None}
    assert stages(catalog, "spend") == {1: None, 2: "production"}


@pytest.mark.parametrize("name, version", [("unknown", 1), ("spend", 3), ("spend", 0)])
def test_unknown_name_or_version_is_not_found_and_changes_nothing(catalog: Catalog, name: str,
                                                                  version: int) -> None:
    save_versions(catalog, "spend", 1, 2)
    catalog.set_feature_set_stage("spend", 1, "production")
    with pytest.raises(NotFound):
        catalog.set_feature_set_stage(name, version, "production")
    assert stages(catalog) == {1: "production", 2: None}


@pytest.mark.parametrize("stage", ["prod", "Production", "", "archived"])
def test_unknown_stage_is_invalid_and_changes_nothing(catalog: Catalog, stage: str) -> None:
    save_versions(catalog, "spend", 1, 2)
    catalog.set_feature_set_stage("spend", 1, "production")
    with pytest.raises(InvalidInput):
        catalog.set_feature_set_stage("spend", 2, stage)
    assert stages(catalog) == {1: "production", 2: None}


def test_concurrent_moves_leave_one_version_in_each_stage(catalog: Catalog) -> None:
    save_versions(catalog, "spend", *range(1, 9))

    def move_rounds(i: int) -> list[FeatureSetRecord]:
        return [catalog.set_feature_set_stage("spend", i + 1, STAGES[(i + round_) % 2]) for round_ in range(4)]

    moved = race(8, move_rounds)  # raises on any error, e.g. a deadlock between movers
    assert all(record.stage == STAGES[(i + round_) % 2]
               for i, records in enumerate(moved) for round_, record in enumerate(records))
    final = list(stages(catalog).values())
    assert final.count("production") <= 1 and final.count("staging") <= 1
    catalog.set_feature_set_stage("spend", 1, "production")
    assert stages(catalog)[1] == "production" and list(stages(catalog).values()).count("production") == 1
