"""The registration replay (issue 11): every class of silent train/serve skew is refused when an ETL is
registered, naming its columns; consistent ETLs (fitted state, as-of time, row-wise code) are not.

Each test declares its own source (no hot window, so both stores hold the same rows), saves a query
over it and registers ETLs from a local git repository, as a data scientist would.
"""
from __future__ import annotations

import datetime as dt
import textwrap
from typing import Any

import pytest

from tests.conftest import JsonClient
from tests.fixtures_git import make_etl_repo

EVENTS = {
    "name": "events",
    "columns": [{"name": "user_id", "type": "integer"}, {"name": "ts", "type": "timestamp"},
                {"name": "name", "type": "string"}, {"name": "amount", "type": "float"},
                {"name": "n", "type": "integer"}, {"name": "ok", "type": "boolean"}],
    "entity_keys": ["user_id"],
    "event_time": "ts",
}
QUERY = "SELECT user_id, name, amount, n, ok FROM events"
NAMES = ["alpha", "Beta", "gamma", "délta", "Éclair", "straße"]


def event_rows(users: int = 40) -> list[dict[str, Any]]:
    """1 to 3 rows per user, with nulls in `n` and `ok`, non-ASCII names, repeated values."""
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    rows = []
    for user in range(1, users + 1):
        for i in range(1 + user % 3):
            rows.append({"user_id": user, "ts": (start + dt.timedelta(minutes=user * 10 + i)).isoformat(),
                         "name": NAMES[(user + i) % len(NAMES)], "amount": round(user * 1.25 + i * 0.5, 2),
                         "n": None if user % 7 == 0 else user % 5 + i, "ok": None if user % 11 == 0 else user % 2 == 0})
    return rows


def make_domain(make_app, tmp_path, **settings: Any) -> "Domain":
    """An app with the events source filled, the query saved, and a git repo to write ETLs into."""
    app = make_app(DEMO_SOURCES=False, CONSISTENCY_REPLAY_ENTITIES=60, **settings)
    api = JsonClient(app.test_client())
    api.post("/v1.0/sources", EVENTS, 201)
    api.post("/v1.0/sources/events/rows", {"rows": event_rows()})
    query_id = api.post("/v1.0/query/train?save=true", {"query": QUERY})["query_id"]
    return Domain(api, query_id, make_etl_repo(tmp_path / "etls", {"README": "ETLs\n"}))


@pytest.fixture
def domain(make_app, tmp_path):
    return make_domain(make_app, tmp_path)


class Domain:
    def __init__(self, api: JsonClient, query_id: str, repo: Any):
        self.api, self.query_id, self.repo = api, query_id, repo

    def save_query(self, sql: str) -> str:
        return self.api.post("/v1.0/query/train?save=true", {"query": sql})["query_id"]

    def register(self, body: str, status: int = 200, query_id: str | None = None, flags: str = "") -> Any:
        """Commit an ETL whose class body is `body` and register it on the query."""
        name = f"etls/e{abs(hash(body)) % 10**12}.py"
        code = "import numpy as np\nimport pandas as pd\nfrom extraction.etl_contract import BaseEtl\n\n\n" \
               "class Etl(BaseEtl):\n" + textwrap.indent(textwrap.dedent(body), "    ")
        if not self.repo.file(name).exists():
            self.repo.commit(name, code, f"add {name}")
        return self.api.post(f"/v1.0/extract/train?save=true{flags}",
                             {"query_id": query_id or self.query_id, "etl_path": str(self.repo.file(name))}, status)


def transform(expression: str, column: str = "f") -> str:
    return f'def transform(self, df):\n    return pd.DataFrame({{"user_id": df["user_id"], "{column}": {expression}}})\n'


def refused_columns(domain: Domain, body: str, **kwargs: Any) -> dict[str, Any]:
    error = domain.register(body, 409, **kwargs)
    assert error["code"] == "train_serve_mismatch"
    return error["details"]["consistency"]


FRAME_DEPENDENT = {
    "centring by the frame mean": 'df["amount"] - df["amount"].mean()',
    "scaling by the frame min/max": '(df["amount"] - df["amount"].min()) / (df["amount"].max() - df["amount"].min())',
    "rank within the frame": 'df["amount"].rank()',
    "percentile within the frame": 'df["amount"].rank(pct=True)',
    "quantile bins of the frame": 'pd.qcut(df["amount"], 4, labels=False, duplicates="drop")',
    "share of a category across the frame": 'df.groupby("name")["name"].transform("count") / len(df)',
    "row numbers": 'np.arange(len(df))',
    "lag across rows": 'df["amount"].shift(1)',
    "fillna with the frame median": 'df["n"].fillna(df["n"].median())',
    "label encoding learnt from the frame": 'pd.factorize(df["name"])[0]',
}


@pytest.mark.parametrize("expression", FRAME_DEPENDENT.values(), ids=FRAME_DEPENDENT.keys())
def test_frame_dependent_transforms_are_refused_naming_the_column(domain, expression):
    report = refused_columns(domain, transform(expression))
    assert report["mismatched_columns"] == ["f"] and report["mismatch_rate"]["user_id"] == 0.0
    assert report["examples"][0]["column"] == "f" and report["examples"][0]["stage"] == "features"


def test_sampling_that_drops_rows_is_refused(domain):
    report = refused_columns(domain, 'def transform(self, df):\n'
                                     '    return df[["user_id", "amount"]].sample(frac=0.5, random_state=3)\n')
    assert set(report["mismatched_columns"]) == {"user_id", "amount"}


def test_wall_clock_and_randomness_are_refused(domain):
    assert refused_columns(domain, transform('pd.Timestamp.now().value + 0 * df["n"].fillna(0)', "t"))[
        "mismatched_columns"] == ["t"]
    assert refused_columns(domain, transform('np.random.rand(len(df))', "r"))["mismatched_columns"] == ["r"]


def test_a_coarse_clock_is_caught_by_the_second_pass(make_app, tmp_path):
    """Seconds since the epoch (integer): equal in a pass within the training's second, different in the
    pass at least CONSISTENCY_REPEAT_GAP_SECONDS later."""
    app = make_app(DEMO_SOURCES=False, CONSISTENCY_REPEAT_GAP_SECONDS=1.05)
    api = JsonClient(app.test_client())
    api.post("/v1.0/sources", EVENTS, 201)
    api.post("/v1.0/sources/events/rows", {"rows": event_rows(5)})
    domain = Domain(api, api.post("/v1.0/query/train?save=true", {"query": QUERY})["query_id"],
                    make_etl_repo(tmp_path / "etls", {"README": "ETLs\n"}))
    report = refused_columns(domain, transform('int(pd.Timestamp.now().timestamp()) + 0 * df["amount"]', "sec"))
    assert "sec" in report["nondeterministic_columns"] + report["mismatched_columns"]
    assert report["entities_repeated"] >= 1 or report["mismatched_columns"]


def test_as_of_makes_time_dependent_features_consistent(domain):
    """The same feature written with `self.as_of` registers: replay runs at the training run's time."""
    body = transform('(self.as_of - pd.Timestamp("2026-01-01", tz="UTC")).total_seconds() + df["amount"]', "age")
    registered = domain.register(body)
    etl = domain.api.get(f"/v1.0/etls/{registered['etl_id']}")
    assert etl["extra"]["consistency"]["consistent"] is True
    served = domain.api.post("/v1.0/extract/realtime", {"query_id": domain.query_id, "etl_id": registered["etl_id"],
                                                        "index_key": "user_id", "index_value": 3})["data"][0]
    trained = {row["user_id"]: row for row in registered["data"]}[3]
    assert served["age"] > trained["age"]  # serving computes as of the request, later than training


def test_fitted_state_registers_and_the_report_is_kept(domain):
    registered = domain.register('''\
        def fit(self, df):
            return {"mean": float(df["amount"].mean()), "std": float(df["amount"].std()),
                    "names": sorted(df["name"].unique().tolist()), "median_n": float(df["n"].median())}

        def transform(self, df):
            return pd.DataFrame({"user_id": df["user_id"],
                                 "amount_z": (df["amount"] - self.state["mean"]) / self.state["std"],
                                 "name_code": df["name"].map({v: i for i, v in enumerate(self.state["names"])}),
                                 "n_filled": df["n"].fillna(self.state["median_n"])})
    ''')
    report = domain.api.get(f"/v1.0/etls/{registered['etl_id']}")["extra"]["consistency"]
    assert report["replayed"] and report["consistent"] and report["stores_in_sync"]
    assert report["entities_checked"] == report["entities_sampled"] == 40  # fewer users than the 60 asked
    assert report["mismatch_rate"] == {"user_id": 0.0, "amount_z": 0.0, "name_code": 0.0, "n_filled": 0.0}
    assert len(report["shadow"]["entities"]) == 40 and report["index_key"] == "user_id"


def test_engines_that_disagree_on_the_query_are_refused_naming_the_query_column(domain):
    """upper('straße') differs by engine: DuckDB gives 'STRAẞE', the realtime SQLite store (a Unicode upper
    mapping one letter to one) 'STRAßE'; no rewrite can tell from the query, so the replay catches it."""
    query_id = domain.save_query("SELECT user_id, upper(name) AS loud FROM events")
    report = refused_columns(domain, 'def transform(self, df):\n    return df\n', query_id=query_id)
    assert report["query_mismatched_columns"] == ["loud"] and report["mismatched_columns"] == []


def test_allow_mismatch_registers_and_records_it(domain):
    body = transform('df["amount"] - df["amount"].mean()')
    refused_columns(domain, body)
    registered = domain.register(body, flags="&allow_mismatch=true")
    report = domain.api.get(f"/v1.0/etls/{registered['etl_id']}")["extra"]["consistency"]
    assert report["accepted_mismatch"] is True and report["mismatched_columns"] == ["f"]


def test_serving_counts_value_mismatches_of_training_entities(domain):
    """The shadow comparison: serving a training entity whose input is unchanged compares its features
    with training; a changed input is counted as input_changed, not as a mismatch."""
    body = transform('df["amount"] - df["amount"].mean()')
    etl_id = domain.register(body, flags="&allow_mismatch=true")["etl_id"]
    consistent_id = domain.register(transform('df["amount"] * 2'))["etl_id"]

    def serve(etl: str, user: int) -> None:
        domain.api.post("/v1.0/extract/realtime", {"query_id": domain.query_id, "etl_id": etl,
                                                   "index_key": "user_id", "index_value": user})

    for user in (1, 2, 3):
        serve(etl_id, user)
        serve(consistent_id, user)
    skew = domain.api.get(f"/v1.0/etls/{etl_id}/skew")
    assert skew["value_mismatches"] == {"compared": 3, "input_changed": 0, "by_feature": {"f": 3}}
    assert "value_mismatch" in skew["features"]["f"]["flags"] and "f" in skew["flagged"]
    clean = domain.api.get(f"/v1.0/etls/{consistent_id}/skew")
    assert clean["value_mismatches"] == {"compared": 3, "input_changed": 0, "by_feature": {}}
    assert clean["features"]["f"]["value_mismatches"] == 0 and clean["flagged"] == []
    row = {"user_id": 1, "ts": "2026-11-30T00:00:00+00:00", "name": "alpha", "amount": 99.0, "n": 1, "ok": True}
    domain.api.post("/v1.0/sources/events/rows", {"rows": [row]})
    serve(consistent_id, 1)
    assert domain.api.get(f"/v1.0/etls/{consistent_id}/skew")["value_mismatches"]["input_changed"] == 1


def test_saving_again_an_accepted_mismatch_needs_the_flag_again(domain):
    body = transform('df["amount"].rank()')
    etl_id = domain.register(body, flags="&allow_mismatch=true")["etl_id"]
    again = refused_columns(domain, body)
    assert again["accepted_mismatch"] is True and again["mismatched_columns"] == ["f"]
    assert domain.register(body, flags="&allow_mismatch=true")["etl_id"] == etl_id


# Comparisons with missing values depend on the input dtype: nullable (pd.NA propagates), numpy, or
# object (PostgreSQL: None == True is False). Serving hands the ETL its training input dtypes.
MISSING_AWARE = ['(df["n"] % (df["user_id"] * 0)).fillna(-1)',  # Int64: 0, int64: nan
                 '(df["n"] // (df["user_id"] * 0)).astype("float")',  # Int64: 0, int64: inf
                 '(df["ok"] == True).astype("float")', 'df["ok"].map({True: "yes", False: "no"}).fillna("unknown")']


@pytest.mark.parametrize("expression", MISSING_AWARE)
@pytest.mark.parametrize("warehouse", ["duckdb", "postgresql"])
def test_missing_value_comparisons_agree_on_every_warehouse(make_app, tmp_path, pg_database_url, warehouse,
                                                            expression):
    settings = {"WAREHOUSE_URL": pg_database_url} if warehouse == "postgresql" else {}
    domain = make_domain(make_app, tmp_path, **settings)
    registered = domain.register(transform(expression))
    report = domain.api.get(f"/v1.0/etls/{registered['etl_id']}")["extra"]["consistency"]
    assert report["consistent"] and report["entities_checked"] == 40
    for user in (7, 11, 22):  # null n; null ok; both present
        served = domain.api.post("/v1.0/extract/realtime", {"query_id": domain.query_id, "etl_id": registered["etl_id"],
                                                            "index_key": "user_id", "index_value": user})["data"]
        trained = [row for row in registered["data"] if row["user_id"] == user]
        assert sorted(map(str, served)) == sorted(map(str, trained))


# -- randomized consistent ETLs: row-wise code, with or without fitted state, must never be refused --------

NUMERIC = ['df["amount"]', 'df["n"].astype("float")', 'df["user_id"] * 1.0', 'df["ok"].astype("float")']
ROW_WISE = [
    lambda r, a, b: f"({a} + {b})", lambda r, a, b: f"({a} - {r.randint(-3, 3)} * {b})",
    lambda r, a, b: f"({a} * {r.choice([0.5, 2, -1.25])})", lambda r, a, b: f"{a}.abs()",
    lambda r, a, b: f"{a}.clip({r.randint(-2, 2)}, {r.randint(3, 40)})", lambda r, a, b: f"{a}.round({r.randint(0, 2)})",
    lambda r, a, b: f"{a}.fillna({r.randint(-5, 5)})", lambda r, a, b: f"np.log1p({a}.abs())",
    lambda r, a, b: f"{a}.where({b} > {r.randint(0, 20)}, {r.randint(-9, 9)})",
    lambda r, a, b: f"({a} > {b}).astype('float')", lambda r, a, b: f"(({a} - self.state['mean']) / self.state['std'])",
]
TEXT = ['df["name"].str.len()', 'df["name"].str.upper().str.contains("A").astype("float")',
        'df["name"].map(lambda v: v[:2]).str.len()', 'df["name"].isin(["alpha", "gamma"]).astype("float")']


def random_expression(r, depth: int = 2) -> str:
    if depth == 0 or r.random() < 0.25:
        return f"({r.choice(NUMERIC + TEXT)})"
    return r.choice(ROW_WISE)(r, random_expression(r, depth - 1), random_expression(r, depth - 1))


def random_etl(r) -> str:
    features = ", ".join(f'"f{i}": {random_expression(r)}' for i in range(3))
    return textwrap.dedent(f'''\
        import numpy as np
        import pandas as pd
        from extraction.etl_contract import BaseEtl


        class Etl(BaseEtl):
            def fit(self, df):
                return {{"mean": float(df["amount"].mean()), "std": float(df["amount"].std()) or 1.0}}

            def transform(self, df):
                with np.errstate(all="ignore"):
                    return pd.DataFrame({{"user_id": df["user_id"], {features}}})
        ''')


@pytest.mark.parametrize("seed", range(4))
def test_randomized_row_wise_etls_are_never_refused(make_app, tmp_path, seed):
    """60 ETLs a seed (240 in all, three random row-wise features each, fitted state in some), replayed
    through the service's own replay on the events source: every one consistent."""
    import hashlib
    import random
    import time

    import pandas as pd

    from app.replay import ReplayOptions, TrainingRun
    from sql.prepared import prepare_query

    domain = make_domain(make_app, tmp_path)
    service = domain.api.client.application.extensions["feature_service"]
    service.replay.options = ReplayOptions(entities=24, repeat_entities=5, repeat_gap_seconds=0.0)
    query = service.get_query(domain.query_id)
    prepared = prepare_query(query.sql, service.warehouse.dialect)
    raw = service.warehouse.query(service._training_sql(prepared))
    r = random.Random(seed)
    for number in range(60):
        code = random_etl(r)
        sha, etl_id = hashlib.sha256(code.encode()).hexdigest(), f"e_random{seed:02d}{number:06d}"
        as_of, started = pd.Timestamp.now(tz="UTC"), time.monotonic()
        state = service.runner.fit(etl_id, code, sha, raw, as_of)
        features = service._run_etl(etl_id, code, sha, raw, state, as_of)
        report = service.replay.run(TrainingRun(etl_id, code, sha, query, prepared, raw, features, state, as_of,
                                                started))
        assert report["replayed"] and report["entities_checked"] == 24, code
        assert report["consistent"], (code, {k: v for k, v in report.items() if k != "shadow"})


def test_feature_sets_show_their_etls_consistency(domain):
    accepted = domain.register(transform('df["amount"].rank()'), flags="&allow_mismatch=true")["etl_id"]
    clean = domain.register(transform('df["amount"] * 2'))["etl_id"]
    for name, etl_id in (("ranked", accepted), ("doubled", clean)):
        domain.api.post("/v1.0/feature-sets", {"name": name, "query_id": domain.query_id, "etl_id": etl_id}, 201)
    shown = {item["name"]: item["etl_consistency"] for item in domain.api.get("/v1.0/feature-sets")["items"]}
    assert shown["ranked"] == {"consistent": False, "accepted_mismatch": True, "mismatched_columns": ["f"],
                               "entities_checked": 40}
    assert shown["doubled"]["consistent"] is True and shown["doubled"]["accepted_mismatch"] is False


@pytest.mark.parametrize("expression", ["CAST(ts AS TIMESTAMP)", "CAST(ts AS DATE)", "CAST(ts AS TIMESTAMPTZ)"])
def test_timestamps_the_realtime_store_cannot_serve_are_refused_at_save(domain, expression):
    """The SQLite realtime store has no timestamp type (its CAST reads a number) and serves stored timestamps
    UTC-aware: a cast to a timestamp, and a naive timestamp, are refused when the query is saved."""
    error = domain.api.post("/v1.0/query/train?save=true", {"query": f"SELECT user_id, {expression} AS t FROM events"},
                            400)
    assert error["code"] == "invalid_query" and error["details"]["constructs"]
    saved = domain.save_query("SELECT user_id, ts AS t FROM events WHERE ts > TIMESTAMPTZ '2026-11-01 00:20:00+00'")
    served = domain.api.post("/v1.0/query/realtime", {"query_id": saved, "index_key": "user_id", "index_value": 3})
    assert served["data"] == [{"user_id": 3, "t": "2026-11-01T00:30:00+00:00"}]


def test_a_naive_timestamp_is_refused_at_save_naming_its_column(domain):
    error = domain.api.post("/v1.0/query/train?save=true", {"query": "SELECT user_id, "
                            "timezone('UTC', ts) AS local_t FROM events"}, 400)
    assert error["code"] == "invalid_query" and error["details"]["constructs"] == [
        {"column": "local_t", "dtype": "datetime64[us]"}], error
