"""Replay at registration: serve a sample of training entities in-process and compare with training.

After ``extract/train`` has computed the training set, `RegistrationReplay` takes up to K training
entities — chosen for coverage (an entity with a null in each column that has nulls, the extremes of
each numeric column, the entity with the most rows) and then at random — and runs each through the
serving path: the point lookup on the realtime store, the ETL on that one entity's frame with the
stored state, at the training run's as-of time. Its features must equal its training rows (checks/
consistency.py). A second pass over some of them, at least `repeat_gap_seconds` after the training
run, catches features that depend on the wall clock or on randomness. The first pass hands its ETL runs
to the runner at once and compares all entities in a few frame operations (its cost is the serving path's
per entity, not the comparisons'); the second runs serving's own calls one entity at a time.

The realtime rows of an entity are compared with its warehouse rows first. When both stores hold the
same source rows (no hot window, equal row counts), a difference there is the engines disagreeing on
the query and is reported under ``query``; otherwise the entity's data simply differs (not hydrated,
evicted, newer) and it is skipped as ``input_differs``.
"""
from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from catalog.base import QueryRecord
from checks.consistency import (ReplayReport, dtype_names, equal_pairs, frame_rows, plain_value, rows_digest, same_rows,
                               with_training_dtypes)
from common.errors import FeatureStoreError
from etl.runner import named_features
from sql.prepared import PreparedQuery

if TYPE_CHECKING:
    from app.service import FeatureService

SAMPLED_ROWS = 50_000  # rows the random part of the choice reads at most
SHADOW_ENTITIES = 50  # replayed, consistent entities kept for the shadow comparison in serving


@dataclass(frozen=True)
class ReplayOptions:
    """How many entities a registration replays, and how far apart its two passes are."""

    entities: int = 200
    repeat_entities: int = 20
    repeat_gap_seconds: float = 1.0


@dataclass
class TrainingRun:
    """What a training run produced, as the replay needs it."""

    etl_id: str
    code: str
    code_sha256: str
    query: QueryRecord
    prepared: PreparedQuery
    raw: pd.DataFrame
    features: pd.DataFrame
    state: dict[str, Any]
    as_of: pd.Timestamp
    started: float  # time.monotonic() when the training run began

    @functools.cached_property
    def input_dtypes(self) -> dict[str, str]:
        return dtype_names(self.raw)


class RegistrationReplay:
    """Replays training entities of a `TrainingRun` through a service's serving path."""

    def __init__(self, service: FeatureService, options: ReplayOptions):
        self.service = service
        self.options = options

    def run(self, training: TrainingRun) -> dict[str, Any]:
        """The consistency report (``replayed`` False with a ``reason`` when the query cannot be replayed),
        with ``shadow``: digests and features of replayed entities for the shadow comparison."""
        began = time.monotonic()
        key, reason = self._replay_key(training)
        if key is None:
            return {"replayed": False, "reason": reason}
        entity_keys = self._feature_keys(training, key)
        if entity_keys is None:
            return {"replayed": False, "index_key": key, "reason": "the ETL's output has neither the key column "
                    f"{key!r} nor its input rows' index, so its rows cannot be matched to entities"}
        chosen = choose_entities(training.features, entity_keys, self.options.entities, training.etl_id)
        report = ReplayReport(columns=[str(c) for c in training.features.columns],
                              query_columns=[str(c) for c in training.raw.columns])
        in_sync = self._stores_in_sync(training.prepared)
        unchanged, served = self._first_pass(training, key, entity_keys, chosen, in_sync, report)
        waited = self._repeat(training, key, served, report)
        return {"replayed": True, "index_key": key, "stores_in_sync": in_sync, "entities_sampled": len(chosen),
                **report.to_dict(), "seconds": round(time.monotonic() - began, 4),
                "repeat_wait_seconds": round(waited, 4),
                "shadow": shadow_sample(key, unchanged)}

    def _first_pass(self, training: TrainingRun, key: str, entity_keys: pd.Series, chosen: list[Any],
                    in_sync: bool, report: ReplayReport) -> tuple[dict[Any, tuple[pd.DataFrame, pd.DataFrame]],
                                                                dict[Any, tuple[pd.DataFrame, pd.DataFrame]]]:
        """Look each entity up, compare its rows with its training input, run the ETL on the unchanged ones
        and compare with their training features. Returns the unchanged (lookup rows, training features)
        and the consistent (lookup rows, served features), by entity. Rows are compared for all entities
        at once (`equal_pairs`), in full only where that finds a difference."""
        raw_rows = _rows_by(training.raw, training.raw[key], chosen)
        feature_rows = _rows_by(training.features, entity_keys, chosen)
        looked_up = self._looked_up(training, key, chosen, report)
        trained_raw = {entity: raw_rows.get(entity, training.raw.iloc[:0]) for entity in looked_up}
        same_input = equal_pairs([(trained_raw[entity], lookup) for entity, lookup in looked_up.items()])
        unchanged: dict[Any, tuple[pd.DataFrame, pd.DataFrame]] = {}
        for (entity, lookup), same in zip(looked_up.items(), same_input):
            if same or same_rows(trained_raw[entity], lookup):
                unchanged[entity] = (lookup, feature_rows.get(entity, training.features.iloc[:0]))
            elif in_sync:
                report.add(entity, trained_raw[entity], lookup, stage="query")
            else:
                report.skip("input_differs")
        outcomes = dict(zip(unchanged, self._features_each(training, [lookup for lookup, _ in unchanged.values()])))
        for entity, error in outcomes.items():
            if isinstance(error, str):
                report.fail(entity, error)
        ran = {entity: (unchanged[entity][1], features) for entity, features in outcomes.items()
               if not isinstance(features, str)}
        consistent = _compared(ran, "features", report)
        return unchanged, {entity: (unchanged[entity][0], ran[entity][1]) for entity in consistent}

    def _replay_key(self, training: TrainingRun) -> tuple[str | None, str]:
        """The column entities are looked up by (an entity key of a source, else the first column)."""
        sources = self.service.sources
        request_sources = [name for name in training.prepared.table_names() if sources.get(name).kind != "table"]
        if request_sources:
            return None, f"the query reads request source(s) {request_sources}, whose rows come with each request"
        keys = [k for k in self.service.realtime.serving_keys(training.prepared) if k in training.raw.columns]
        if not keys:
            return None, "the query's output has no column to look an entity up by"
        return keys[0], ""

    @staticmethod
    def _feature_keys(training: TrainingRun, key: str) -> pd.Series | None:
        """Each training feature row's entity: its key column, or the input row's when rows map one to one."""
        features, raw = training.features, training.raw
        if key in features.columns:
            return features[key]
        if features.index.is_unique and raw.index.is_unique and features.index.isin(raw.index).all():
            return raw[key].reindex(features.index)  # rows kept their input's index (maybe fewer, reordered)
        return None

    def _stores_in_sync(self, prepared: PreparedQuery) -> bool:
        """True when every source the query reads keeps all its rows in the realtime store (no hot window)
        and holds as many rows there as in the warehouse."""
        service = self.service
        try:
            for name in prepared.table_names():
                source = service.sources.get(name)
                if source.hot_window_seconds is not None:
                    return False
                if service.realtime.row_count(name) != service.warehouse.table_stats(
                        source.table, source.event_time)["rows"]:
                    return False
        except FeatureStoreError:
            return False
        return True

    def _looked_up(self, training: TrainingRun, key: str, entities: list[Any], report: ReplayReport
                   ) -> dict[Any, pd.DataFrame]:
        """Each entity's rows by the serving point lookup; the ones it cannot look up are counted as skipped."""
        found = {}
        for entity in entities:
            outcome = self._lookup(training, key, entity)
            if isinstance(outcome, str):
                report.skip(outcome)
            else:
                found[entity] = outcome
        return found

    def _lookup(self, training: TrainingRun, key: str, entity: Any) -> pd.DataFrame | str:
        """The entity's rows by the serving point lookup, or why it could not be looked up."""
        try:  # with the training input's dtypes as the lookup's hint, as extract/realtime asks for them
            lookup = self.service._lookup(training.query, key, entity, dtypes=training.input_dtypes)[0]
        except FeatureStoreError:
            return "lookup_failed"
        return "not_in_realtime" if lookup.empty else lookup

    def _features_each(self, training: TrainingRun, lookups: list[pd.DataFrame]) -> list[pd.DataFrame | str]:
        """`_features` of each lookup, the ETL runs handed to the runner at once (`EtlRunner.run_each`: one
        thread hand-off, each run under the ETL time limit). Each run is still on its own one-entity frame."""
        service = self.service
        outputs = service.runner.run_each(training.etl_id, training.code, training.code_sha256,
                                          [with_training_dtypes(lookup, training.input_dtypes) for lookup in lookups],
                                          training.state, training.as_of)

        def checked(output: pd.DataFrame | FeatureStoreError) -> pd.DataFrame:
            if isinstance(output, FeatureStoreError):
                raise output
            return named_features(output)

        return [self._served_features(training, functools.partial(checked, output)) for output in outputs]

    def _features(self, training: TrainingRun, lookup: pd.DataFrame) -> pd.DataFrame | str:
        """The ETL on one entity's lookup rows as serving runs it (training input dtypes, stored state, the
        training run's as-of time): its features in training column order, or its error."""
        # (the lookup's types are compared with the training rows' by the caller: no schema check here)
        return self._served_features(training, lambda: self.service._run_etl(
            training.etl_id, training.code, training.code_sha256, with_training_dtypes(lookup, training.input_dtypes),
            training.state, training.as_of))

    @staticmethod
    def _served_features(training: TrainingRun, run: Callable[[], pd.DataFrame]) -> pd.DataFrame | str:
        """`run()`'s features in training column order, or its error as text."""
        try:
            features = run()
        except FeatureStoreError as error:  # serving would fail for this training entity
            return f"{error.code}: {error.message}"
        names = [str(c) for c in training.features.columns]
        if set(features.columns) == set(names) and list(features.columns) != names:
            features = features[names]  # serving answers in training column order
        return features

    def _serve(self, training: TrainingRun, key: str, entity: Any
               ) -> str | tuple[pd.DataFrame, pd.DataFrame | str]:
        """The entity through the serving path: (its lookup rows, its features or the ETL's error on
        them), or why it could not be looked up."""
        lookup = self._lookup(training, key, entity)
        return lookup if isinstance(lookup, str) else (lookup, self._features(training, lookup))

    def _repeat(self, training: TrainingRun, key: str, served: dict[Any, tuple[pd.DataFrame, pd.DataFrame]],
                report: ReplayReport) -> float:
        """Serve some consistent entities again, at least the gap after training, and compare; the seconds
        it waited for the gap."""
        entities = list(served)[: self.options.repeat_entities]
        if not entities:
            return 0.0
        wait = max(training.started + self.options.repeat_gap_seconds - time.monotonic(), 0.0)
        if wait > 0:
            time.sleep(wait)
        again = {}
        for entity in entities:
            outcome = self._serve(training, key, entity)
            first_lookup, first_features = served[entity]
            if isinstance(outcome, str) or isinstance(outcome[1], str) or not same_rows(first_lookup, outcome[0]):
                continue  # its data moved meanwhile (or it failed): nothing to say about determinism
            again[entity] = (first_features, outcome[1])
        _compared(again, "repeat", report)
        return wait


def _compared(pairs: dict[Any, tuple[pd.DataFrame, pd.DataFrame]], stage: str, report: ReplayReport) -> list[Any]:
    """Count each entity's (earlier, served) rows at `stage` in `report`: the entities found equal."""
    equal = []
    for (entity, (earlier, served)), same in zip(pairs.items(), equal_pairs(list(pairs.values()))):
        if same:
            report.count_equal(stage)
        elif not report.add(entity, earlier, served, stage=stage):
            continue
        equal.append(entity)
    return equal


def choose_entities(features: pd.DataFrame, entity_keys: pd.Series, k: int, seed: str) -> list[Any]:
    """Up to `k` distinct entities: coverage first (a null of each column with nulls, each numeric
    column's minimum and maximum, the entity with most rows), then a random sample seeded by `seed`. Over
    more than `SAMPLED_ROWS` rows, "most rows" and the sample come from that many random rows. (Column
    operations throughout: on a million rows, converting the keys to Python objects and back, or drawing
    positions with `random`, cost more than the replay's lookups.)"""
    keys = pd.Series(entity_keys.array, index=features.index, copy=False).dropna()
    if keys.empty or k <= 0:
        return []
    chosen: dict[Any, None] = {}
    for column in features.columns:
        values = features[column]
        nulls = values.index[values.isna()]
        if len(nulls):
            _take(chosen, keys, nulls[0])
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.notna().any():
            _take(chosen, keys, values.idxmin())
            _take(chosen, keys, values.idxmax())
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    if len(keys) > SAMPLED_ROWS:
        keys = keys.iloc[np.sort(rng.choice(len(keys), SAMPLED_ROWS, replace=False))]
    counts = keys.value_counts()
    if len(counts):
        chosen.setdefault(_plain(counts.index[0]), None)
    picked = list(chosen)[:k]
    rest = counts.index[~counts.index.isin(list(chosen))]
    draws = rng.choice(len(rest), min(k - len(picked), len(rest)), replace=False)
    return [_plain(v) for v in picked + rest[draws].tolist()]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _take(chosen: dict[Any, None], keys: pd.Series, label: Any) -> None:
    if label in keys.index:
        value = keys.loc[label]
        if isinstance(value, pd.Series):
            value = value.iloc[0]
        chosen.setdefault(_plain(value), None)


def _rows_by(frame: pd.DataFrame, keys: pd.Series, chosen: list[Any]) -> dict[Any, pd.DataFrame]:
    """The rows of each chosen entity (one pass over the frame, not one per entity)."""
    positions = np.flatnonzero(pd.Series(keys.array, copy=False).isin(chosen).to_numpy(dtype=bool))
    subset = frame.iloc[positions]
    return {_plain(value): rows for value, rows in subset.groupby(keys.array[positions], sort=False)}


def shadow_sample(key: str, unchanged: dict[Any, tuple[pd.DataFrame, pd.DataFrame]]) -> dict[str, Any]:
    """What serving needs to compare a training entity's served features with its training rows: the
    key, and per entity (one whose realtime rows equalled its warehouse rows) the digest of its lookup
    rows and its training features (JSON rows)."""
    entities = []
    for entity, (lookup, features) in list(unchanged.items())[:SHADOW_ENTITIES]:
        entities.append({"value": entity, "input_sha256": rows_digest(lookup),
                         "features": {"columns": [str(c) for c in features.columns],
                                      "rows": [[plain_value(v) for v in row] for row in frame_rows(features)]}})
    return {"index_key": key, "entities": entities}
