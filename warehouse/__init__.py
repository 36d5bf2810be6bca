"""Warehouses: the backend is picked by the scheme of `WAREHOUSE_URL`."""
from __future__ import annotations

from typing import Any

from common.urls import backend_registry
from warehouse.base import BatchMark, Warehouse, WarehouseSnapshot, WriteReceipt

__all__ = ["BatchMark", "Warehouse", "open_warehouse"]


def _duckdb(url: str, **options: Any) -> Warehouse:
    from common.errors import InvalidInput
    from warehouse.duckdb import DuckDBWarehouse

    if options.pop("read_url", None):
        raise InvalidInput("WAREHOUSE_READ_URL is for a PostgreSQL warehouse; DuckDB runs user SQL read-only itself")
    return DuckDBWarehouse(url, **options)


def _sqlalchemy(url: str, **options: Any) -> Warehouse:
    from common.errors import InvalidInput
    from warehouse.sql import SqlAlchemyWarehouse

    if options.pop("memory_limit", None):
        raise InvalidInput("WAREHOUSE_MEMORY_LIMIT is for the DuckDB warehouse; a database server sets its own")
    return SqlAlchemyWarehouse(url, **options)


open_warehouse = backend_registry("WAREHOUSE_URL", {
    "duckdb": _duckdb, "postgresql": _sqlalchemy, "sqlite": _sqlalchemy, "mysql": _sqlalchemy})
