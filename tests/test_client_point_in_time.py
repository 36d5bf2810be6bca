"""The client's point-in-time calls against a live `python -m app`: a spine DataFrame in, a training set out;
an export with progress; a failed job raised as the service's error class."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow.parquet as pq
import pytest

import client
from common import errors
from tests.fixtures_server import running_server
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

ROOT = Path(__file__).resolve().parent.parent
HISTORY_SQL = (ROOT / "examples" / "user_history.sql").read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[client.FeatureStore, Path]]:
    data_dir = tmp_path_factory.mktemp("pit-client") / "data"
    with running_server(data_dir) as base, client.FeatureStore(base, timeout=60) as store:
        store.publish(150, seed=9)
        yield store, data_dir


@pytest.mark.slow
def test_a_spine_dataframe_gives_every_row_its_features_as_of_its_time(served):
    store, _ = served
    history = store.query_train(HISTORY_SQL).data
    users = history.sort_values("user_id").head(20)
    # each user once before they existed and once a day after: nothing, then their history by then
    spine = pd.DataFrame({
        "user_id": list(users["user_id"]) * 2,
        "as_of": [pd.Timestamp(t - 1, unit="s", tz="UTC") for t in users["user_created"]]
        + [pd.Timestamp(t + 86400, unit="s", tz="UTC") for t in users["user_created"]],
        "churned": list(range(40))})
    answer = store.training_set(spine, "user_id", "as_of", query=HISTORY_SQL)
    assert list(answer.columns[:3]) == ["user_id", "as_of", "churned"]
    assert answer["churned"].tolist() == list(range(40)), "every spine row, in the spine's order"
    assert answer["quotes"].head(20).isna().all(), "before a user existed, nothing of them is seen"
    assert (answer["quotes"].tail(20) >= 1).all()
    scored = store.training_set(spine[["user_id"]].head(5), "user_id", query=HISTORY_SQL)  # as of now
    expected = history.set_index("user_id").loc[spine["user_id"].head(5), "quotes"].tolist()
    assert scored["quotes"].tolist() == expected


@pytest.mark.slow
def test_an_export_through_the_client_waits_for_its_job(served, tmp_path, capsys):
    store, data_dir = served
    repo = example_repo(tmp_path / "repo")
    query_id = store.query_train(FOUR_TABLE_QUERY, save=True, include_data=False).query_id
    rows = store.query_train(FOUR_TABLE_QUERY).data
    spine = pd.DataFrame({"user_id": rows["user_id"], "as_of": rows["user_created"] + 3600})
    job = store.training_set(spine, "user_id", "as_of", query_id=query_id, etl_path=repo.file("etls/quote_features.py"),
                             export={"path": "client/quotes.parquet"}, progress=True)
    assert job["status"] == "succeeded" and job["result"]["rows"] >= len(spine)
    assert "rows written" in capsys.readouterr().err
    written = pq.read_table(data_dir / "exports" / "client" / "quotes.parquet")
    assert written.num_rows == job["result"]["rows"] and "is_mobile" in written.column_names
    with pytest.raises(errors.ExportExists):
        store.training_set(spine, "user_id", "as_of", query=FOUR_TABLE_QUERY, export={"path": "client/quotes.parquet"})
    with pytest.raises(errors.InvalidInput):  # found while the job runs: the job fails and the client raises
        store.training_set(spine, "user_id", "no_such_column", query=FOUR_TABLE_QUERY, export={"path": "bad.parquet"})


@pytest.mark.slow
def test_the_cli_exports_a_spine_file_and_shows_progress(served, tmp_path):
    import subprocess
    import sys

    store, data_dir = served
    rows = store.query_train(HISTORY_SQL).data
    spine = tmp_path / "labels.csv"
    pd.DataFrame({"user_id": rows["user_id"], "as_of": rows["user_created"] + 60, "label": 1}).to_csv(spine, index=False)
    sql = tmp_path / "history.sql"
    sql.write_text(HISTORY_SQL)
    done = subprocess.run([sys.executable, "-m", "app", "export", "--query-file", str(sql), "--spine", str(spine),
                           "--index-key", "user_id", "--time", "as_of", "--path", "cli/history.parquet",
                           "--url", store.url], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rows written" in done.stderr and f"exported {len(rows)} rows to cli/history.parquet" in done.stdout
    assert pq.read_table(data_dir / "exports" / "cli" / "history.parquet").num_rows == len(rows)
