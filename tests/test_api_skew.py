"""Train/serve skew is refused with 409 and the diff: types, missing columns, query-level changes."""
from __future__ import annotations

import textwrap

import pytest

from catalog.base import QueryRecord
from sql.prepared import prepare_query
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo, train_walkthrough

# Behaves like a realtime store without booleans: one served row gets 0/1 where training had booleans.
BOOLEAN_AS_INTEGER = textwrap.dedent('''\
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            out = df[["user_id", "is_paid"]].copy()
            if len(out) == 1:
                out["is_paid"] = out["is_paid"].astype("int64")
            return out
''')
# One-hot encoding of one row: only the category present becomes a column.
ONE_HOT_ON_ONE_ROW = textwrap.dedent('''\
    import pandas as pd

    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            return pd.concat([df[["user_id"]], pd.get_dummies(df["quote_type"], prefix="type")], axis=1)
''')
# A missing value in a served integer column: pandas widens it to float, which is no skew.
NULLABLE_INTEGER = textwrap.dedent('''\
    import numpy as np

    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            out = df[["user_id", "seconds_to_bind"]].copy()
            if len(out) == 1:
                out["seconds_to_bind"] = np.nan
            return out
''')


@pytest.fixture
def repo(tmp_path):
    return example_repo(tmp_path / "etl-repo", {"etls/bool_as_int.py": BOOLEAN_AS_INTEGER,
                                                 "etls/one_hot.py": ONE_HOT_ON_ONE_ROW,
                                                 "etls/nullable_int.py": NULLABLE_INTEGER})


def refused_then_registered(api, repo, etl: str, n_flows: int = 100) -> dict:
    """The registration replay refuses these ETLs (they serve other values than they train); registered
    anyway, serving's own checks still answer for them."""
    api.put(f"/v1.0/publish?n_flows={n_flows}&seed=7")
    query_id = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})["query_id"]
    error = api.post("/v1.0/extract/train?save=true", {"query_id": query_id, "etl_path": str(repo.file(etl))}, 409)
    assert error["code"] == "train_serve_mismatch" and error["details"]["consistency"]["mismatched_columns"]
    return train_walkthrough(api, repo, etl=etl, n_flows=n_flows, allow_mismatch=True)


def serve(api, trained, user_id, status):
    return api.post("/v1.0/extract/realtime", {"query_id": trained["query_id"], "etl_id": trained["etl_id"],
                                               "index_key": "user_id", "index_value": user_id}, status)


def test_boolean_served_as_integer_is_a_type_change(api, repo):
    trained = refused_then_registered(api, repo, "etls/bool_as_int.py")
    error = serve(api, trained, next(iter(trained["features_by_user"])), 409)
    assert error["code"] == "schema_mismatch"
    assert error["details"]["stage"] == "etl" and error["details"]["etl_id"] == trained["etl_id"]
    assert error["details"]["type_changed"] == [{"name": "is_paid", "trained": "boolean", "served": "integer"}]
    assert error["details"]["missing"] == [] and error["details"]["extra"] == []


def test_one_hot_on_one_row_misses_columns(api, repo):
    trained = refused_then_registered(api, repo, "etls/one_hot.py", n_flows=200)
    trained_columns = [c["name"] for c in trained["extract"]["schema"]]
    assert len(trained_columns) == 5  # user_id + four quote types
    error = serve(api, trained, next(iter(trained["features_by_user"])), 409)
    assert len(error["details"]["missing"]) == 3
    assert set(error["details"]["missing"]) < set(trained_columns)


def test_missing_value_in_an_integer_column_is_not_skew(api, repo):
    trained = refused_then_registered(api, repo, "etls/nullable_int.py")
    assert {"name": "seconds_to_bind", "type": "integer"} in trained["extract"]["schema"]
    data = serve(api, trained, next(iter(trained["features_by_user"])), 200)["data"]
    assert data[0]["seconds_to_bind"] is None


def test_query_output_changed_since_training_is_refused(app, api, repo):
    api.put("/v1.0/publish?n_flows=50&seed=7")
    sample = api.post("/v1.0/query/train", {"query": FOUR_TABLE_QUERY})
    # The catalog holds this query from an earlier training in which is_paid came out as a string.
    prepared = prepare_query(FOUR_TABLE_QUERY, "duckdb")
    earlier = [dict(c, type="string") if c["name"] == "is_paid" else c for c in sample["schema"]]
    app.extensions["feature_service"].catalog.save_query(QueryRecord(
        query_id="q_" + prepared.sql_hash[:16], name="earlier", sql=FOUR_TABLE_QUERY, sql_hash=prepared.sql_hash,
        schema=earlier, created_by="test", created_at="2020-01-01T00:00:00+00:00"))
    query_id = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY})["query_id"]
    assert api.get(f"/v1.0/queries/{query_id}")["name"] == "earlier"
    error = api.post("/v1.0/query/realtime", {"query_id": query_id, "index_key": "user_id",
                                              "index_value": sample["data"][0]["user_id"]}, 409)
    assert error["details"]["stage"] == "query" and error["details"]["query_id"] == query_id
    assert error["details"]["type_changed"] == [{"name": "is_paid", "trained": "string", "served": "boolean"}]
