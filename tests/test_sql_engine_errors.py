"""DuckDB engine: the second line against server-revealing functions, and 400 vs 503 for a user's SELECT."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from common.errors import BackendUnavailable, InvalidQuery
from sql.duckdb_engine import DuckDBEngine, _DuckDBErrors
from warehouse.duckdb import DuckDBWarehouse
from tests.test_sql import SERVER_REVEALING


@pytest.fixture
def engine(tmp_path: Path):
    engine = DuckDBEngine(str(tmp_path / "w.duckdb"), "warehouse", statement_timeout=10)
    engine.execute_ddl(["CREATE TABLE users (user_id VARCHAR)"])
    yield engine
    engine.close()


@pytest.mark.parametrize("sql", [s for name, s in SERVER_REVEALING.items() if not name.startswith("pg_")],
                         ids=[n for n in SERVER_REVEALING if not n.startswith("pg_")])
def test_engine_refuses_them_on_its_own_parse(engine: DuckDBEngine, sql: str, tmp_path: Path) -> None:
    """Even SQL that never went through sqlglot's checks cannot call them (a statement, or an Arrow stream)."""
    warehouse = DuckDBWarehouse(f"duckdb:///{tmp_path / 'stream.duckdb'}")
    for run in (lambda: engine.query(sql), lambda: list(warehouse.query_batches(sql, 10)[1])):
        with pytest.raises(InvalidQuery, match="is not allowed in a query"):
            run()
    assert engine.query("SELECT 1 AS one")["one"].tolist() == [1]
    warehouse.close()


def test_repeated_failures_are_400_and_the_engine_keeps_answering(engine: DuckDBEngine) -> None:
    for _ in range(3):
        with pytest.raises(InvalidQuery):
            engine.query("SELECT * FROM which_secret('s3://x', 's3')")
    assert engine.query("SELECT count(*) AS n FROM users")["n"].tolist() == [0]


@pytest.mark.parametrize("error, expected", [
    (duckdb.Error("Secret Storage with name 'memory' already registered!"), InvalidQuery),
    (duckdb.TransactionException("Cannot FORCE CHECKPOINT"), InvalidQuery),
    (duckdb.PermissionException("file system operations are disabled"), InvalidQuery),
    (duckdb.BinderException("no such column"), InvalidQuery),
    (duckdb.IOException("disk I/O error"), BackendUnavailable),
    (duckdb.FatalException("database invalidated"), BackendUnavailable),
    (duckdb.ConnectionException("connection closed"), BackendUnavailable),
    (duckdb.OutOfMemoryException("out of memory"), BackendUnavailable),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__)
def test_a_user_select_is_503_only_for_the_servers_own_trouble(error: duckdb.Error, expected: type) -> None:
    """Security 8: a generic DuckDB error from a user's query is 400 (not retried), not backend_unavailable."""
    with pytest.raises(expected):
        with _DuckDBErrors("warehouse", user_sql=True):
            raise error


def test_the_services_own_writes_keep_503_for_transaction_trouble() -> None:
    with pytest.raises(BackendUnavailable):
        with _DuckDBErrors("warehouse"):
            raise duckdb.TransactionException("write-write conflict")


@pytest.mark.parametrize("depth", [300, 900, 3000])
def test_deeply_nested_sql_is_checked_or_refused_never_a_crash(engine: DuckDBEngine, depth: int) -> None:
    sql = "SELECT " + "abs(" * depth + "1" + ")" * depth + " AS x"
    try:
        assert engine.query(sql)["x"].tolist() == [1]
    except InvalidQuery:
        pass  # too deep for the check or for DuckDB: a 400, never a RecursionError
    nested = "SELECT " + "abs(" * depth + "(SELECT count(*) FROM duckdb_settings())" + ")" * depth + " AS x"
    with pytest.raises(InvalidQuery):
        engine.query(nested)
