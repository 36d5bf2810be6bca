"""Train/serve consistency: fitted state, expectations on both paths, skew reports (issue: consistency)."""
from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from app import close_app
from etl.runner import EtlRunner
from etl.source import code_sha256
from tests.conftest import JsonClient
from tests.walkthrough import EXAMPLE_ETLS, example_repo, train_walkthrough

FITTED = "etls/fitted_features.py"
# Passes in training (many rows) and breaks on one serving row; the policy decides what serving does.
ROW_COUNT_ETL = textwrap.dedent('''\
    import pandas as pd

    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        expectations = {"rows_seen": {"min": 2}, "user_id": {"nullable": False}}
        serving_violations = "POLICY"

        def transform(self, df):
            return pd.DataFrame({"user_id": df["user_id"], "rows_seen": len(df)})
''')
TOO_STRICT_ETL = textwrap.dedent('''\
    import pandas as pd

    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        expectations = {"minutes": {"max": 5, "type": "float"}, "quote_type": {"allowed": ["car", "home"]},
                        "user_id": {"unique": True}, "not_there": {"nullable": True}}

        def transform(self, df):
            return pd.DataFrame({"user_id": df["user_id"], "minutes": df["seconds_to_bind"] / 60,
                                 "quote_type": df["quote_type"]})
''')


@pytest.fixture
def repo(tmp_path):
    return example_repo(tmp_path / "etl-repo", {
        "etls/reject.py": ROW_COUNT_ETL.replace("POLICY", "reject"), "etls/warn.py": ROW_COUNT_ETL.replace("POLICY", "warn"),
        "etls/too_strict.py": TOO_STRICT_ETL})


def serve(api, trained, user_id, status=200):
    return api.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                               "index_key": "user_id", "index_value": user_id}, status)


def test_fitted_state_gives_identical_features_offline_and_online(api, repo):
    trained = train_walkthrough(api, repo, etl=FITTED, n_flows=300)
    etl = api.get(f"/v1.0/etls/{trained['etl_id']}")
    assert set(etl["state"]) == {"minutes_mean", "minutes_std", "quote_types"}
    assert etl["state"]["quote_types"] == ["car", "home", "pet", "travel"]
    offline = pd.DataFrame(trained["extract"]["data"])
    assert offline["minutes_to_bind_z"].mean() == pytest.approx(0, abs=1e-9)  # standardized on training data
    assert offline["minutes_to_bind_z"].std() == pytest.approx(1, abs=1e-9)
    columns = [c["name"] for c in trained["extract"]["schema"]]
    assert columns == ["user_id", "minutes_to_bind_z", "is_mobile", "quote_type_car", "quote_type_home",
                       "quote_type_pet", "quote_type_travel"]
    for user_id, row in list(trained["features_by_user"].items())[:25]:
        online = serve(api, trained, user_id)
        assert online["data"] == [row] and online["warnings"] == []
        assert list(online["data"][0]) == columns


def test_unseen_category_maps_to_zeros_not_a_new_column():
    runner = EtlRunner()
    code = EXAMPLE_ETLS[FITTED]
    state = {"minutes_mean": 10.0, "minutes_std": 2.0, "quote_types": ["car", "home"]}
    row = pd.DataFrame({"user_id": ["u1"], "seconds_to_bind": [720], "quote_type": ["spaceship"],
                        "quote_device": ["ios"]})
    features = runner.run("e_test", code, code_sha256(code), row, state)
    assert list(features.columns) == ["user_id", "minutes_to_bind_z", "is_mobile", "quote_type_car",
                                      "quote_type_home"]
    assert features.iloc[0].to_dict() == {"user_id": "u1", "minutes_to_bind_z": 1.0, "is_mobile": True,
                                          "quote_type_car": 0, "quote_type_home": 0}


def test_fit_sees_the_training_set_and_serving_does_not_refit():
    runner = EtlRunner()
    code = EXAMPLE_ETLS[FITTED]
    training = pd.DataFrame({"user_id": ["a", "b", "c"], "seconds_to_bind": [60, 120, 180],
                             "quote_type": ["pet", "car", "pet"], "quote_device": ["web", "ios", "android"]})
    state = runner.fit("e_test", code, code_sha256(code), training)
    assert state == {"minutes_mean": 2.0, "minutes_std": 1.0, "quote_types": ["car", "pet"]}
    one = runner.run("e_test", code, code_sha256(code), training.iloc[[2]], state)
    assert one["minutes_to_bind_z"].tolist() == [1.0]  # a refit on one row would give NaN


def test_violated_expectations_fail_training_with_a_report(api, repo):
    api.put("/v1.0/publish?n_flows=100&seed=3")
    from tests.walkthrough import FOUR_TABLE_QUERY

    query_id = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})["query_id"]
    error = api.post("/v1.0/extract/train?save=true", {"query_id": query_id,
                                                       "etl_path": str(repo.file("etls/too_strict.py"))}, 422)
    assert error["code"] == "expectations_failed" and error["details"]["stage"] == "train"
    by_rule = {(v["column"], v["rule"]): v for v in error["details"]["violations"]}
    assert set(by_rule) == {("minutes", "max"), ("quote_type", "allowed"), ("not_there", "present")}
    too_long = by_rule[("minutes", "max")]
    assert too_long["failed_rows"] > 0 and too_long["expected"] == 5
    assert all(value > 5 for value in too_long["examples"]) and len(too_long["examples"]) <= 5
    assert set(by_rule[("quote_type", "allowed")]["examples"]) <= {"pet", "travel"}
    assert api.get("/v1.0/etls")["total"] == 0


def test_serving_violation_is_rejected_under_the_reject_policy(api, repo):
    trained = train_walkthrough(api, repo, etl="etls/reject.py", allow_mismatch=True)  # rows_seen: frame-wide
    error = serve(api, trained, next(iter(trained["features_by_user"])), 422)
    assert error["code"] == "expectations_failed" and error["details"]["stage"] == "serve"
    assert error["details"]["violations"] == [{"column": "rows_seen", "rule": "min", "expected": 2,
                                               "failed_rows": 1, "examples": [1]}]


def test_serving_violation_passes_with_warnings_under_the_warn_policy(api, repo):
    trained = train_walkthrough(api, repo, etl="etls/warn.py", allow_mismatch=True)
    user_id = next(iter(trained["features_by_user"]))
    body = serve(api, trained, user_id)
    assert body["data"] == [{"user_id": user_id, "rows_seen": 1}]
    assert [(w["column"], w["rule"]) for w in body["warnings"]] == [("rows_seen", "min")]
    assert api.get(f"/v1.0/etls/{trained['etl_id']}/skew")["outcomes"]["expectation_violations"] == 1


def test_skew_report_flags_the_shifted_feature_only(make_app, tmp_path, repo):
    api = JsonClient(make_app(tmp_path / "data", STATS_FLUSH_SECONDS=0.0).test_client())
    trained = train_walkthrough(api, repo, etl=FITTED, n_flows=1500)
    raw = trained["rows_by_user"]
    # A shifted serving population: only users who quoted on iOS.
    ios_users = [user for user, row in raw.items() if row["quote_device"] == "ios"][:200]
    for user_id in ios_users:
        serve(api, trained, user_id)
    report = api.get(f"/v1.0/etls/{trained['etl_id']}/skew")
    assert report["outcomes"]["served"] == len(ios_users) >= 150
    assert report["flagged"] == ["is_mobile"]
    assert "psi" in report["features"]["is_mobile"]["flags"]
    stable = report["features"]["minutes_to_bind_z"]
    assert stable["flags"] == [] and abs(stable["mean_shift_std"]) < 0.5 and stable["samples"] == len(ios_users)

    close_app(api.client.application)  # shutdown persists the window
    again = JsonClient(make_app(tmp_path / "data", STATS_FLUSH_SECONDS=0.0).test_client())
    assert again.get(f"/v1.0/etls/{trained['etl_id']}/skew")["flagged"] == ["is_mobile"]


def test_skew_report_counts_schema_mismatches_and_stays_bounded(make_app, tmp_path, repo):
    api = JsonClient(make_app(tmp_path / "data", SERVING_STATS_WINDOW=10).test_client())
    trained = train_walkthrough(api, repo, etl=FITTED)
    for user_id in list(trained["features_by_user"])[:30]:
        serve(api, trained, user_id)
    report = api.get(f"/v1.0/etls/{trained['etl_id']}/skew")
    assert report["outcomes"]["served"] == 30 and report["window_size"] == 10
    assert report["features"]["minutes_to_bind_z"]["samples"] == 10
    assert report["flagged"] == []  # fewer than SKEW_MIN_SAMPLES in the window: nothing is flagged


def test_registering_again_after_new_data_keeps_the_first_fitted_state(api, repo):
    trained = train_walkthrough(api, repo, etl=FITTED, n_flows=200)
    first_state = api.get(f"/v1.0/etls/{trained['etl_id']}")["state"]
    api.put("/v1.0/publish?n_flows=300&seed=99")  # more data: a refit would move the mean and std
    again = api.post("/v1.0/extract/train?save=true", {"query_id": trained["query_id"],
                                                       "etl_path": str(repo.file(FITTED))})
    assert again["etl_id"] == trained["etl_id"]
    assert api.get(f"/v1.0/etls/{trained['etl_id']}")["state"] == first_state
    rows = {row["user_id"]: row for row in again["data"]}
    for user_id, row in list(trained["features_by_user"].items())[:10]:
        assert rows[user_id] == row  # same state: same training values as the first registration
        assert serve(api, trained, user_id)["data"] == [row]
