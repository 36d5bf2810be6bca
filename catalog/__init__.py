"""Catalog stores: the backend is picked by the scheme of `CATALOG_URL`."""
from __future__ import annotations

from catalog.base import (ApiKeyRecord, Catalog, EtlRecord, EtlSource, FeatureSetRecord, Page, QueryRecord,
                          SourceRecord)
from common.urls import backend_registry

__all__ = ["ApiKeyRecord", "Catalog", "EtlRecord", "EtlSource", "FeatureSetRecord", "Page", "QueryRecord",
           "SourceRecord", "open_catalog"]


def _sql_catalog(url: str) -> Catalog:
    from catalog.sql import SqlCatalog

    return SqlCatalog(url)


def _mongo_catalog(url: str) -> Catalog:
    from catalog.mongo import MongoCatalog

    return MongoCatalog(url)


open_catalog = backend_registry(
    "CATALOG_URL",
    {"sqlite": _sql_catalog, "postgresql": _sql_catalog, "mongodb": _mongo_catalog, "mongomock": _mongo_catalog},
)
