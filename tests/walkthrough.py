"""The README walkthrough as test data: the four-table join and the example ETL repository."""
from __future__ import annotations

from pathlib import Path

from tests.fixtures_git import EtlRepo, make_etl_repo

ROOT = Path(__file__).resolve().parent.parent
FOUR_TABLE_QUERY = (ROOT / "examples" / "four_table_join.sql").read_text()
EXAMPLE_ETLS = {
    str(path.relative_to(ROOT / "examples" / "etl_repo")): path.read_text()
    for path in (ROOT / "examples" / "etl_repo" / "etls").glob("*.py")
}


def example_repo(path: Path, extra: dict[str, str] | None = None) -> EtlRepo:
    """The shipped example ETL repository (plus `extra` files) as a fresh git repository."""
    return make_etl_repo(path, {**EXAMPLE_ETLS, **(extra or {})})


def train_walkthrough(api, repo: EtlRepo, etl: str = "etls/quote_features.py", n_flows: int = 100,
                      allow_mismatch: bool = False) -> dict:
    """publish → save the join → register the ETL; the ids and training rows by user. `allow_mismatch`
    registers an ETL the registration replay refuses (to test what serving does with it)."""
    api.put(f"/v1.0/publish?n_flows={n_flows}&seed=7")
    query = api.post("/v1.0/query/train?save=true", {"query": FOUR_TABLE_QUERY, "query_name": "quote_join"})
    extract = api.post("/v1.0/extract/train?save=true" + ("&allow_mismatch=true" if allow_mismatch else ""),
                       {"query_id": query["query_id"], "etl_path": str(repo.file(etl))})
    return {"query_id": query["query_id"], "etl_id": extract["etl_id"], "query": query, "extract": extract,
            "features_by_user": {row["user_id"]: row for row in extract["data"]},
            "rows_by_user": {row["user_id"]: row for row in query["data"]}}
