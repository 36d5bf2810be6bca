"""Named feature sets: immutable versions, stages, serving and training by name."""
from __future__ import annotations

import pytest

from tests.walkthrough import example_repo, train_walkthrough


@pytest.fixture
def trained(api, tmp_path):
    return train_walkthrough(api, example_repo(tmp_path / "etl-repo"))


def create(api, trained, status=201, **fields):
    body = {"name": "conversion", "query_id": trained["query_id"], "etl_id": trained["etl_id"], **fields}
    return api.post("/v1.0/feature-sets", body, status)


def realtime(api, user_id, status=200, **fields):
    return api.post("/v1.0/feature-sets/conversion/realtime", {"index_value": user_id, **fields}, status)


def test_versions_are_created_immutable_and_idempotent(api, trained):
    v1 = create(api, trained, features=["is_mobile", "minutes_to_bind"], description="first", tags=["demo"])
    assert (v1["version"], v1["stage"], v1["index_key"]) == (1, None, "user_id")
    assert create(api, trained, 200, features=["is_mobile", "minutes_to_bind"], description="first",
                  tags=["demo"]) == v1
    v2 = create(api, trained, features=["is_mobile", "paid_by_amex"])
    assert v2["version"] == 2
    versions = api.get("/v1.0/feature-sets/conversion")["versions"]
    assert [v["version"] for v in versions] == [1, 2] and versions[0] == v1
    listed = api.get("/v1.0/feature-sets")
    assert listed["total"] == 1 and listed["items"][0]["version"] == 2


def test_realtime_resolves_production_else_newest(api, trained):
    create(api, trained, features=["is_mobile"])
    create(api, trained, features=["is_mobile", "paid_by_amex"])
    user_id, row = next(iter(trained["features_by_user"].items()))

    newest = realtime(api, user_id)
    assert newest["version"] == 2 and newest["data"] == [{"is_mobile": row["is_mobile"],
                                                          "paid_by_amex": row["paid_by_amex"]}]
    staged = api.call("PUT", "/v1.0/feature-sets/conversion/versions/1/stage", 200, {"stage": "production"})
    assert staged["stage"] == "production"
    assert realtime(api, user_id)["data"] == [{"is_mobile": row["is_mobile"]}]
    assert realtime(api, user_id, version=2)["version"] == 2

    api.call("PUT", "/v1.0/feature-sets/conversion/versions/2/stage", 200, {"stage": "production"})
    stages = {v["version"]: v["stage"] for v in api.get("/v1.0/feature-sets/conversion")["versions"]}
    assert stages == {1: None, 2: "production"}
    api.call("PUT", "/v1.0/feature-sets/conversion/versions/1/stage", 200, {"stage": "staging"})
    api.call("PUT", "/v1.0/feature-sets/conversion/versions/2/stage", 200, {"stage": "none"})
    stages = {v["version"]: v["stage"] for v in api.get("/v1.0/feature-sets/conversion")["versions"]}
    assert stages == {1: "staging", 2: None}
    assert realtime(api, user_id)["version"] == 2  # no production version: the newest


def test_training_set_by_name(api, trained):
    create(api, trained, features=["user_id", "minutes_to_bind"])
    body = api.post("/v1.0/feature-sets/conversion/train", {})
    assert body["version"] == 1
    expected = [{"user_id": r["user_id"], "minutes_to_bind": r["minutes_to_bind"]}
                for r in trained["extract"]["data"]]
    assert sorted(body["data"], key=lambda r: r["user_id"]) == sorted(expected, key=lambda r: r["user_id"])


@pytest.mark.parametrize("fields, status, code", [
    ({"features": ["no_such_column"]}, 400, "invalid_input"),
    ({"features": ["is_mobile", "is_mobile"]}, 400, "invalid_input"),
    ({"index_key": "quote_id"}, 400, "invalid_input"),
    ({"name": "bad name!"}, 400, "invalid_input"),
    ({"etl_id": "e_0123456789abcdef"}, 404, "not_found"),
    ({"features": "is_mobile"}, 400, "invalid_input"),
    ({"stage": "production"}, 400, "invalid_input"),
])
def test_bad_feature_set_definitions(api, trained, fields, status, code):
    assert create(api, trained, status, **fields)["code"] == code
    assert api.get("/v1.0/feature-sets")["total"] == 0


def test_unknown_names_versions_and_stages(api, trained):
    create(api, trained)
    assert api.get("/v1.0/feature-sets/nope", 404)["code"] == "not_found"
    assert realtime(api, "x", 404, version=9)["code"] == "not_found"
    assert api.post("/v1.0/feature-sets/nope/realtime", {"index_value": "x"}, 404)["code"] == "not_found"
    assert api.call("PUT", "/v1.0/feature-sets/conversion/versions/7/stage", 404, {"stage": "production"})
    assert api.call("PUT", "/v1.0/feature-sets/conversion/versions/1/stage", 400, {"stage": "prod"})
    assert realtime(api, "nobody", 404)["code"] == "entity_not_found"
