"""Training sets batch by batch (app/training_stream.py): the same features as the whole frame, or none.

A batchable ETL's Arrow training set, run batch by batch with tiny batches, equals the one computed on
the whole frame (row for row and type for type), with and without a fitted state, registered or not;
randomized row-wise ETLs and randomized query results say the same. A frame-wide ETL (one not
declaring ``batchable``) still sees the whole frame. A batch that fails after the first is the stream's
error marker (the client raises), a failing first batch the usual JSON error, an export fails without a
file, and nothing is saved.
"""
from __future__ import annotations

import textwrap
import time

import duckdb
import hypothesis.strategies as st
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

from app.arrowio import frame_batches
from app.service import EtlLocation, TrainingEtl, etl_id_of
from app.training_stream import batch_frame, convertible, kinds_from_dtypes, whole_frame_kinds
from checks.consistency import dtype_names
from client import transport
from common.errors import EtlFailed, ExpectationsFailed
from etl.source import EtlSource, FetchedEtl, code_sha256
from sql.prepared import prepare_query
from tests.conftest import JsonClient
from tests.fixtures_git import make_etl_repo
from tests.walkthrough import EXAMPLE_ETLS, FOUR_TABLE_QUERY

ARROW = "application/vnd.apache.arrow.stream"
BATCHABLE = "\nEtl.batchable = True\n"
QUOTES = EXAMPLE_ETLS["etls/quote_features.py"]

FITTED = textwrap.dedent('''\
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        batchable = True

        def fit(self, df):
            minutes = df["seconds_to_bind"].astype("float64") / 60
            return {"mean": float(minutes.mean()), "std": float(minutes.std()),
                    "types": sorted(df["quote_type"].dropna().unique().tolist())}

        def transform(self, df):
            minutes = df["seconds_to_bind"].astype("float64") / 60
            return pd.DataFrame({"user_id": df["user_id"], "row": df.index,
                                 "bind_z": (minutes - self.state["mean"]) / self.state["std"],
                                 "type_code": df["quote_type"].map({t: i for i, t in enumerate(self.state["types"])}),
                                 "amex": df["card_type"].eq("amex"), "success": df["payment_successful"],
                                 "input_dtypes": "|".join(map(str, df.dtypes))})
''')
# Frame-wide: each row against the mean of the whole frame. Declared batchable it would be wrong.
FRAME_WIDE = textwrap.dedent('''\
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            seconds = df["seconds_to_bind"].astype("float64")
            return pd.DataFrame({"user_id": df["user_id"], "above_mean": seconds - seconds.mean(),
                                 "rank": df["user_created"].rank(method="first")})
''')
# Fails on every batch but the one starting at row 0.
LATE_FAILURE = textwrap.dedent('''\
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        batchable = True

        def transform(self, df):
            if len(df) and df.index[0] > 0:
                raise ValueError("no features past the first batch")
            return pd.DataFrame({"user_id": df["user_id"]})
''')
EARLY_FAILURE = LATE_FAILURE.replace("df.index[0] > 0", "df.index[0] == 0")
# The first batch keeps to [0, 1], a later one breaks it.
LATE_VIOLATION = textwrap.dedent('''\
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        batchable = True
        expectations = {"position": {"max": 1}}

        def transform(self, df):
            return pd.DataFrame({"user_id": df["user_id"], "position": (df.index > 10).astype("int64") * 5})
''')
# Unique within every batch of SMALL_BATCHES rows, repeated across them.
UNIQUE_PER_BATCH = textwrap.dedent('''\
    import pandas as pd
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        batchable = True
        expectations = {"slot": {"unique": True}}

        def transform(self, df):
            return pd.DataFrame({"user_id": df["user_id"], "slot": df.index % 7})
''')
ETLS = {"etls/quote_batched.py": QUOTES + BATCHABLE, "etls/quote_whole.py": QUOTES, "etls/fitted.py": FITTED,
        "etls/frame_wide.py": FRAME_WIDE, "etls/late_failure.py": LATE_FAILURE,
        "etls/early_failure.py": EARLY_FAILURE, "etls/late_violation.py": LATE_VIOLATION,
        "etls/unique_per_batch.py": UNIQUE_PER_BATCH}
SMALL_BATCHES = 7


@pytest.fixture
def trained(make_app, tmp_path):
    """An app with quotes, the saved four-table join, the ETL repository, and tiny training batches."""
    app = make_app(MAX_RESPONSE_ROWS=100_000, EXPORT_DIR=str(tmp_path / "exports"))
    api = JsonClient(app.test_client())
    api.put("/v1.0/publish?n_flows=300&seed=11")
    query_id = api.post("/v1.0/query/train?save=true&include_data=false", {"query": FOUR_TABLE_QUERY})["query_id"]
    repo = make_etl_repo(tmp_path / "repo", ETLS)
    service = app.extensions["feature_service"]
    service.batched_training.batch_rows = SMALL_BATCHES
    return {"app": app, "api": api, "query_id": query_id, "repo": repo, "service": service,
            "exports": tmp_path / "exports"}


def _body(trained, etl: str) -> dict:
    return {"query_id": trained["query_id"], "etl_path": str(trained["repo"].file(etl))}


def _arrow(trained, etl: str) -> tuple[pa.Table, dict]:
    """The Arrow training set over HTTP, checked whole (its end marker says ok), and how many batches the
    stream had (the end marker's included)."""
    response = trained["api"].client.post("/v1.0/extract/train?format=arrow", json=_body(trained, etl))
    assert response.status_code == 200 and response.mimetype == ARROW, response.get_data(as_text=True)[:500]
    reader = pa.ipc.open_stream(response.get_data())
    batches = list(reader)
    return transport.read_arrow_stream(response.get_data()), {"batches": len(batches)}


def _whole(trained, etl: str) -> pa.Table:
    """The training set as the whole-frame path computes it (what `?format=arrow` answered before)."""
    service = trained["service"]
    location = EtlLocation(etl_path=str(trained["repo"].file(etl)))
    schema, batches = frame_batches(service.train_etl(trained["query_id"], location, None, False)[2])
    return pa.Table.from_batches(list(batches), schema=schema)


def _same_rows(batched: pa.Table, whole: pa.Table) -> None:
    """Equal columns, types and rows (in DuckDB's order, which neither path fixes: compared sorted)."""
    assert batched.schema.remove_metadata() == whole.schema.remove_metadata()
    keys = [(name, "ascending") for name in batched.column_names]
    assert batched.sort_by(keys).to_pylist() == whole.sort_by(keys).to_pylist()
    assert batched.to_pandas().dtypes.to_dict() == whole.to_pandas().dtypes.to_dict()


def test_batched_equals_the_whole_frame_for_a_row_wise_etl(trained):
    batched, seen = _arrow(trained, "etls/quote_batched.py")
    whole = _whole(trained, "etls/quote_whole.py")
    assert whole.num_rows > 5 * SMALL_BATCHES and seen["batches"] > 5  # many batches streamed, plus the end
    _same_rows(batched, whole)
    _same_rows(batched, _whole(trained, "etls/quote_batched.py"))


def test_registered_etl_streams_with_its_state_and_input_dtypes(trained):
    api = trained["api"]
    # "row" (a row position) differs when served, by design: accepted
    registered = api.post("/v1.0/extract/train?save=true&include_data=false&allow_mismatch=true",
                          _body(trained, "etls/fitted.py"))
    etl = api.get(f"/v1.0/etls/{registered['etl_id']}")
    assert etl["state"]["types"]
    batched, _ = _arrow(trained, "etls/fitted.py")
    _same_rows(batched, _whole(trained, "etls/fitted.py"))
    assert batched.column("row").to_pylist() == sorted(batched.column("row").to_pylist())  # whole-frame positions
    assert batched.column("row").to_pylist() == list(range(batched.num_rows))


def test_unregistered_fitted_etl_is_fitted_on_every_row_then_batched(trained):
    batched, seen = _arrow(trained, "etls/fitted.py")
    whole = _whole(trained, "etls/fitted.py")
    assert seen["batches"] > 5
    _same_rows(batched, whole)
    z = batched.column("bind_z").to_pandas()
    assert abs(z.mean()) < 1e-9  # fitted on the whole result, not on a batch


def test_a_frame_wide_etl_is_not_batched(trained):
    batched, seen = _arrow(trained, "etls/frame_wide.py")
    assert seen["batches"] <= 2  # one batch of 65,536 rows at most here, and the end marker
    _same_rows(batched, _whole(trained, "etls/frame_wide.py"))
    assert abs(batched.column("above_mean").to_pandas().mean()) < 1e-6  # the mean of the whole frame
    ranks = batched.column("rank").to_pylist()
    assert sorted(ranks) == list(range(1, batched.num_rows + 1))  # ranked over every row, not per batch


def test_a_unique_expectation_keeps_the_whole_frame(trained):
    api = trained["api"]
    response = api.client.post("/v1.0/extract/train?format=arrow", json=_body(trained, "etls/unique_per_batch.py"))
    assert response.status_code == 422 and response.get_json()["code"] == "expectations_failed"


def test_a_failing_later_batch_ends_the_stream_with_an_error(trained):
    response = trained["api"].client.post("/v1.0/extract/train?format=arrow",
                                          json=_body(trained, "etls/late_failure.py"))
    assert response.status_code == 200
    with pytest.raises(EtlFailed, match="no features past the first batch"):  # what the Python client raises
        transport.read_arrow_stream(response.get_data())
    reader = pa.ipc.open_stream(response.get_data())
    rows = sum(batch.num_rows for batch in reader)
    assert rows == SMALL_BATCHES  # the first batch was sent, nothing after it


def test_a_later_expectation_violation_ends_the_stream_with_it(trained):
    response = trained["api"].client.post("/v1.0/extract/train?format=arrow",
                                          json=_body(trained, "etls/late_violation.py"))
    with pytest.raises(ExpectationsFailed, match="batch of rows 7…13") as raised:
        transport.read_arrow_stream(response.get_data())
    assert raised.value.details["violations"][0]["rule"] == "max"


def test_a_failing_first_batch_is_a_json_error(trained):
    body = trained["api"].post("/v1.0/extract/train?format=arrow", _body(trained, "etls/early_failure.py"), 422)
    assert body["code"] == "etl_failed" and "no features past the first batch" in body["message"]


def _finished(api: JsonClient, job: dict, seconds: float = 60.0) -> dict:
    """The export job once it is no longer running."""
    deadline = time.monotonic() + seconds
    while job["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = api.get(f"/v1.0/jobs/{job['job_id']}")
    return job


def test_a_failing_export_leaves_no_file_and_saves_nothing(trained):
    api = trained["api"]
    body = {**_body(trained, "etls/late_failure.py"), "export": {"path": "late.parquet"}}
    job = _finished(api, api.post("/v1.0/extract/train", body, 202))
    assert job["status"] == "failed" and "no features past the first batch" in job["error"]["message"]
    assert not list(trained["exports"].rglob("*.parquet*"))
    assert api.get("/v1.0/etls")["total"] == 0


def test_an_export_of_a_batchable_etl_equals_the_whole_frame(trained):
    api = trained["api"]
    job = _finished(api, api.post("/v1.0/extract/train", {**_body(trained, "etls/quote_batched.py"),
                                                          "export": {"path": "quotes.parquet"}}, 202))
    assert job["status"] == "succeeded", job
    _same_rows(pq.read_table(trained["exports"] / "quotes.parquet"), _whole(trained, "etls/quote_whole.py"))


# -- randomized row-wise ETLs on the four-table join ----------------------------------------------

STEPS = {  # (output column, expression over df and self.state): each row-wise
    "is_null_card": 'df["card_type"].isna()',
    "card_or_none": 'df["card_type"].fillna("none")',
    "type_upper": 'df["quote_type"].str.upper()',
    "user_len": 'df["user_id"].str.len()',
    "bind_hours": 'df["seconds_to_bind"] / 3600',
    "bind_missing": 'df["seconds_to_bind"].isna()',
    "bind_plus_offset": 'df["seconds_to_bind"] + self.state.get("offset", 0)',
    "paid_and_binded": 'df["is_paid"] & df["is_binded"]',
    "success_filled": 'df["payment_successful"].fillna(False)',
    "success_raw": 'df["payment_successful"]',
    "created_mod": 'df["user_created"] % 7',
    "policy_code": 'df["policy_type"].map({"basic": 1, "premium": 2})',
    "position": 'pd.Series(df.index, index=df.index)',
    "input_dtypes": 'pd.Series("|".join(map(str, df.dtypes)), index=df.index)',
}


def _random_etl(names: list[str], fits: bool, filters: bool) -> str:
    """A batchable ETL computing the STEPS `names` (with a fitted offset, and keeping some rows only)."""
    columns = ", ".join(f'"{name}": {STEPS[name]}' for name in names)
    lines = ["import pandas as pd", "from extraction.etl_contract import BaseEtl", "", "", "class Etl(BaseEtl):",
             "    batchable = True", ""]
    if fits:
        lines += ["    def fit(self, df):", '        return {"offset": int(df["user_created"].min() % 1000)}', ""]
    lines += ["    def transform(self, df):", f'        out = pd.DataFrame({{"user_id": df["user_id"], {columns}}})']
    if filters:
        lines.append('        out = out[df["quote_type"].notna() & (df.index % 3 != 0)]')
    return "\n".join([*lines, "        return out", ""])


def _in_process(service, query_id: str, code: str) -> tuple[pa.Table, pa.Table]:
    """(batched, whole) for ETL `code`, straight through the service (no git repository per example)."""
    query = service.get_query(query_id)
    sha = code_sha256(code)
    fetched = FetchedEtl(EtlSource(kind="path", url="random.py"), code, sha)
    etl = TrainingEtl(query, fetched, etl_id_of(query_id, sha), {}, "reject",
                      prepare_query(query.sql, "duckdb"), None)
    streamed = service.batched_training.batches(etl)
    assert streamed is not None
    batched = pa.Table.from_batches(list(streamed[1]), schema=streamed[0])
    raw = service.warehouse.query(service._training_sql(etl.prepared))
    state = service.runner.fit(etl.etl_id, code, sha, raw)
    features = service._run_etl(etl.etl_id, code, sha, raw, state, pd.Timestamp.now(tz="UTC"))
    schema, batches = frame_batches(features)
    return batched, pa.Table.from_batches(list(batches), schema=schema)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=6, unique=True), fits=st.booleans(),
       filters=st.booleans(), batch_rows=st.integers(1, 400))
def test_randomized_row_wise_etls_batched_equal_whole(trained, names, fits, filters, batch_rows):
    names = [*names, "input_dtypes"]  # and every batch is handed the whole frame's dtypes
    trained["service"].batched_training.batch_rows = batch_rows
    batched, whole = _in_process(trained["service"], trained["query_id"], _random_etl(names, fits, filters))
    _same_rows(batched, whole)


# -- randomized query results: each batch gets the whole frame's dtypes ---------------------------

COLUMN_TYPES = ["BIGINT", "INTEGER", "SMALLINT", "UTINYINT", "DOUBLE", "FLOAT", "BOOLEAN", "VARCHAR", "TIMESTAMP",
                "TIMESTAMPTZ"]


@st.composite
def _results(draw):
    rows = draw(st.integers(0, 60))
    types = draw(st.lists(st.sampled_from(COLUMN_TYPES), min_size=1, max_size=5))
    columns = {}
    for i, kind in enumerate(types):
        values = draw(st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=rows, max_size=rows))
        columns[f"c{i}"] = (kind, values)
    return columns, draw(st.integers(1, 20))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:The inplace keyword")  # inside DuckDB's df()
@settings(max_examples=60, deadline=None)
@given(_results())
def test_batch_frames_have_the_whole_frames_dtypes_and_values(result):
    columns, batch_rows = result
    connection = duckdb.connect()
    rows = len(next(iter(columns.values()))[1])
    data = pa.table({name: pa.array(values, pa.int64()) for name, (_, values) in columns.items()}) if rows else \
        pa.table({name: pa.array([], pa.int64()) for name in columns})
    connection.register("raw", data)
    casts = ", ".join(
        f"CAST(to_timestamp({name}) AS {kind}) AS {name}" if kind.startswith("TIMESTAMP") else
        f"CAST({name} % 2 = 0 AS BOOLEAN) AS {name}" if kind == "BOOLEAN" else
        f"CAST({name} AS {kind}) AS {name}" for name, (kind, _) in columns.items())
    sql = f"SELECT {casts} FROM raw"
    whole = connection.execute(sql).df()
    reader = connection.sql(sql).to_arrow_reader(batch_rows)
    schema = reader.schema
    assert convertible(schema)
    batches = list(reader)
    counts = {name: sum(batch.column(name).null_count for batch in batches) for name in schema.names}
    kinds = whole_frame_kinds(schema, {name for name, count in counts.items() if count},
                              {name for name, count in counts.items() if count == rows})
    parts, start = [], 0
    for batch in batches or [schema.empty_table()]:
        parts.append(batch_frame(batch, kinds, start))
        start += batch.num_rows
    joined = pd.concat(parts)
    assert dtype_names(joined) == dtype_names(whole)
    pd.testing.assert_frame_equal(joined, whole)
    assert kinds_from_dtypes(schema, dtype_names(whole)) == kinds


def test_dates_and_decimals_are_not_converted_batch_by_batch():
    for kind in ("DATE", "DECIMAL(10, 2)", "INTEGER[]"):
        schema = duckdb.connect().sql(f"SELECT CAST(NULL AS {kind}) AS c").to_arrow_reader().schema
        assert not convertible(schema)
    assert convertible(pa.schema([("a", pa.int64()), ("b", pa.string())]))
    assert not convertible(pa.schema([("a", pa.int64()), ("a", pa.string())]))  # repeated names


@pytest.mark.parametrize("isolated", [False, True])
def test_the_runner_says_which_etls_are_batchable_and_fit(isolated):
    from etl.isolation import IsolatedEtlPool
    from etl.runner import EtlRunner

    runner = EtlRunner(timeout=30, isolation=IsolatedEtlPool(workers=1, memory_mb=1024) if isolated else None)
    try:
        legacy = "from etl_abc import AbstractEtl\n\n\nclass Etl(AbstractEtl):\n    batchable = 'yes'\n"
        for code, expected in ((QUOTES, {"batchable": False, "fits": False}),
                               (QUOTES + BATCHABLE, {"batchable": True, "fits": False}),
                               (FITTED, {"batchable": True, "fits": True}),
                               (legacy, {"batchable": False, "fits": False})):  # only True declares it
            assert runner.batching("e_test", code, code_sha256(code)) == expected
    finally:
        runner.close()
