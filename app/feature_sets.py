"""Named feature sets: a stable name (and versions) over a query, an ETL and a choice of features.

Versions are immutable; creating a set whose definition equals its newest version
returns that version instead of a new one. A version is resolved by number, else by
the `production` stage, else as the newest. Serving returns only the set's features,
after the ETL's own schema and expectation checks.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from app.service import FeatureService
from catalog.base import STAGES, FeatureSetRecord, utc_now
from common.errors import InvalidInput, NotFound, ResultTooLarge


MAX_VERSION = 2**31 - 1


def _check_version(name: str, version: int | None) -> None:
    """A version outside what any catalog can hold names nothing (404)."""
    if version is not None and not 1 <= version <= MAX_VERSION:
        shown = str(version)[:30]
        raise NotFound(f"feature set {name!r} has no version {shown}", {"name": name, "version": shown})


class FeatureSets:
    """Create, resolve, stage and serve feature-set versions."""

    def __init__(self, service: FeatureService):
        self.service = service
        self.catalog = service.catalog

    def create(self, name: str, query_id: str, etl_id: str, features: list[str] | None, index_key: str | None,
               description: str, tags: list[str], created_by: str) -> tuple[FeatureSetRecord, bool]:
        """The new version (True), or the newest one when the definition is unchanged (False)."""
        etl = self.service.get_etl(etl_id)
        if etl.query_id != query_id:
            raise InvalidInput(f"ETL {etl_id} was trained on query {etl.query_id}, not {query_id}",
                               {"etl_id": etl_id, "trained_query_id": etl.query_id})
        columns = [c["name"] for c in etl.schema]
        chosen = list(features) if features else columns
        unknown = [f for f in chosen if f not in columns]
        if unknown or len(set(chosen)) != len(chosen):
            raise InvalidInput("features must be distinct output columns of the ETL",
                               {"unknown": unknown, "columns": columns})
        query_columns = [c["name"] for c in self.service.get_query(query_id).schema]
        key = query_columns[0] if index_key is None else index_key
        if key not in query_columns:
            raise InvalidInput(f"index_key {key!r} is not an output column of query {query_id}",
                               {"index_key": key, "columns": query_columns})
        while True:
            versions = self.catalog.feature_set_versions(name)
            draft = FeatureSetRecord(name=name, version=(versions[-1].version + 1) if versions else 1,
                                     query_id=query_id, etl_id=etl_id, index_key=key, features=chosen,
                                     description=description, tags=list(tags), created_by=created_by,
                                     created_at=utc_now())
            if versions and versions[-1].definition() == draft.definition():
                return versions[-1], False
            stored = self.catalog.save_feature_set(draft)
            if stored.definition() == draft.definition():
                return stored, stored.created_at == draft.created_at
            # Someone else took this version number with another definition: try the next one.

    def schema(self, record: FeatureSetRecord) -> list[dict[str, str]]:
        """The logical types of the set's features, in the set's order."""
        types = {column["name"]: column for column in self.service.get_etl(record.etl_id).schema}
        return [types[feature] for feature in record.features]

    def versions(self, name: str) -> list[FeatureSetRecord]:
        versions = self.catalog.feature_set_versions(name)
        if not versions:
            raise NotFound(f"no feature set named {name!r}", {"name": name})
        return versions

    def resolve(self, name: str, version: int | None = None) -> FeatureSetRecord:
        """The version asked for; else the one marked production; else the newest."""
        versions = self.versions(name)
        _check_version(name, version)
        if version is not None:
            for record in versions:
                if record.version == version:
                    return record
            raise NotFound(f"feature set {name!r} has no version {version}", {"name": name, "version": version})
        production = [record for record in versions if record.stage == "production"]
        return production[0] if production else versions[-1]

    def set_stage(self, name: str, version: int, stage: str | None) -> FeatureSetRecord:
        _check_version(name, version)
        if stage is not None and stage not in STAGES:
            raise InvalidInput(f"stage must be one of {list(STAGES)} or null", {"stage": stage})
        return self.catalog.set_feature_set_stage(name, version, stage)

    def realtime(self, name: str, index_value: Any, version: int | None = None, request: Any = None
                 ) -> tuple[FeatureSetRecord, pd.DataFrame, list[dict[str, Any]]]:
        """One entity's features of the set, checked as `extract/realtime` checks them (`request`: rows
        for the request sources its query reads)."""
        record = self.resolve(name, version)
        frame, warnings = self.service.realtime_etl(record.query_id, record.etl_id, record.index_key, index_value,
                                                    request)
        return record, frame[record.features], warnings

    def training_set(self, name: str, version: int | None = None, row_limit: bool = True, spine: Any = None
                     ) -> tuple[FeatureSetRecord, pd.DataFrame]:
        """The set's training set: the stored ETL and state over the warehouse, its features only (with a
        `spine`, as of each spine row, behind the spine's columns)."""
        record = self.resolve(name, version)
        if spine is not None and spine.index_key != record.index_key:
            raise InvalidInput(f"spine.index_key must be the feature set's key {record.index_key!r}",
                               {"index_key": spine.index_key, "expected": record.index_key})
        limit = self.service.options.max_response_rows if row_limit else None
        frame = self.service.etl_training_set(record.etl_id, spine, limit)
        if row_limit and len(frame) > self.service.options.max_response_rows:
            raise ResultTooLarge(f"the training set has {len(frame)} rows, more than a JSON response may carry",
                                 {"rows": len(frame), "max_rows": self.service.options.max_response_rows})
        if spine is None:
            return record, frame[record.features]
        spine_columns = frame.attrs["spine_columns"]
        return record, frame[spine_columns + [f for f in record.features if f not in spine_columns]]
