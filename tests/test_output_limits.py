"""Every output is bounded: JSON bodies by MAX_RESPONSE_BYTES (checked while encoding), ETL serving output by
MAX_RESPONSE_ROWS, and what ETL code prints by etl.output.MAX_OUTPUT_CHARS per call, logged, not written out."""
from __future__ import annotations

import hashlib
import logging
import textwrap
from typing import Any, Iterator

import pandas as pd
import pytest

from app import jsonio
from common.errors import ResultTooLarge
from etl import output
from etl.isolation import open_etl_runner
from tests.conftest import JsonClient
from tests.walkthrough import example_repo, train_walkthrough

# -- JSON bytes ------------------------------------------------------------------------------------------


def test_a_json_body_past_the_byte_limit_is_a_400(make_app):
    api = JsonClient(make_app(MAX_RESPONSE_BYTES=1_000_000).test_client())
    fits = api.post("/v1.0/query/train", {"query": "SELECT repeat('x', 300000) AS s FROM range(3)"})
    assert len(fits["data"]) == 3
    error = api.post("/v1.0/query/train", {"query": "SELECT repeat('x', 300000) AS s FROM range(5)"}, 400)
    assert error["code"] == "result_too_large" and error["details"] == {"max_bytes": 1_000_000}


def test_the_limit_stops_encoding_long_before_the_whole_body(monkeypatch: pytest.MonkeyPatch):
    encoded: list[int] = []
    real = jsonio.dumps

    def counting(payload: Any) -> bytes:
        body = real(payload)
        encoded.append(len(body))
        return body

    monkeypatch.setattr(jsonio, "dumps", counting)
    payload = {"schema": [], "data": [{"s": "x" * 100_000}] * 1000}  # about 100 MB as JSON
    with pytest.raises(ResultTooLarge):
        jsonio.dumps_bounded(payload, 1_000_000)
    assert sum(encoded) < 1_000_000 + jsonio.SLICE_BYTES + 200_000  # the limit, one slice, a row


@pytest.mark.parametrize("payload", [
    {"query_id": None, "schema": [{"name": "a"}], "data": [{"a": i, "t": pd.Timestamp(i, unit="s", tz="UTC"),
                                                           "f": float("nan"), "s": "é" * (i % 7)} for i in range(9000)]},
    {"data": []}, {"data": [{"a": 1}]}, [], [1, [2, 3]], "text", None, {1: "non-string key"},
])
def test_bounded_encoding_gives_the_same_bytes(payload: Any):
    assert jsonio.dumps_bounded(payload, 1 << 30) == jsonio.dumps(payload)


# -- ETL serving rows ------------------------------------------------------------------------------------

EXPLODING_ETL = textwrap.dedent('''\
    class Etl:
        """Training sees many rows and keeps them; one entity's few rows become 6,000."""

        def __init__(self, df):
            self.df = df

        def extract(self):
            features = self.df[["user_id"]]
            if len(features) > 5:
                return features
            return features.loc[features.index.repeat(6000)].reset_index(drop=True)
''')


def test_etl_serving_output_has_the_row_limit(api: JsonClient, tmp_path):
    repo = example_repo(tmp_path / "etl-repo", {"etls/exploding.py": EXPLODING_ETL})
    trained = train_walkthrough(api, repo, etl="etls/exploding.py", n_flows=30, allow_mismatch=True)  # 6000 rows/user
    user = next(iter(trained["rows_by_user"]))
    body = {"query_id": trained["query_id"], "index_key": "user_id", "index_value": user}
    assert len(api.post("/v1.0/query/realtime", body)["data"]) <= 5  # the lookup itself is small
    error = api.post("/v1.0/extract/realtime", {**body, "etl_id": trained["etl_id"]}, 400)
    assert error["code"] == "result_too_large" and error["details"]["max_rows"] == 5000  # tests' MAX_RESPONSE_ROWS
    assert error["details"]["rows"] > 5000


# -- what ETL code prints --------------------------------------------------------------------------------

PRINTING_ETL = textwrap.dedent('''\
    import sys

    print("loaded")


    class Etl:
        def __init__(self, df):
            self.df = df

        def extract(self):
            print("x" * 1_000_000)
            print("to stderr", file=sys.stderr)
            return self.df
''')


@pytest.fixture(params=["inprocess", "process"])
def runner(request: pytest.FixtureRequest) -> Iterator[Any]:
    opened = open_etl_runner(request.param, timeout=30.0, workers=1, memory_mb=None)
    yield opened
    opened.close()


def test_etl_output_is_capped_and_logged_not_written(runner, capfd, caplog):
    sha = hashlib.sha256(PRINTING_ETL.encode()).hexdigest()
    with caplog.at_level(logging.INFO, logger="featurestore.etl"):
        result = runner.run("e_printer", PRINTING_ETL, sha, pd.DataFrame({"user_id": [1]}), {})
    assert list(result["user_id"]) == [1]
    written = capfd.readouterr()
    assert "x" * 1000 not in written.out and "to stderr" not in written.err
    records = [record.getMessage() for record in caplog.records if record.name == "featurestore.etl"]
    assert records and all(len(message) < output.MAX_OUTPUT_CHARS + 200 for message in records)
    text = "\n".join(records)
    assert "e_printer" in text and "loaded" in text and "more characters dropped" in text
