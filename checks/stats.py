"""Feature statistics: of the training output, of a bounded window of served rows, and their skew.

Training statistics per column: rows, null rate, and for numbers min/max/mean/std
with ten quantile bins (their edges and shares); for strings and booleans the top
categories with their shares. Serving keeps the last `size` values of each column
in ring buffers (memory is bounded whatever the traffic) plus counts of schema and
expectation outcomes. The skew report (checks.skew) compares the two per feature.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from common.jsonsafe import json_safe
from checks.schema import logical_type

TOP_CATEGORIES = 20
BINS = 10
OTHER = "(other)"
MISSING = "(null)"
EPSILON = 1e-4  # floor for shares in PSI, so an empty bucket does not make it infinite


def _is_numeric(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_bool_dtype(series.dtype)


def column_stats(series: pd.Series) -> dict[str, Any]:
    """Statistics of one training column."""
    rows = len(series)
    present = series.dropna()
    stats: dict[str, Any] = {"type": logical_type(series), "count": rows,
                             "null_rate": float(1 - len(present) / rows) if rows else 0.0}
    if _is_numeric(series) and len(present):
        values = present.to_numpy(dtype="float64")
        edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)))
        stats.update(kind="numeric", min=float(values.min()), max=float(values.max()),
                     mean=float(values.mean()), std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     bin_edges=edges.tolist(), bin_shares=bin_shares(values, edges).tolist())
    else:
        shares = present.astype(str).value_counts(normalize=True)
        top = shares.head(TOP_CATEGORIES)
        stats.update(kind="categorical", top=[{"value": v, "share": float(s)} for v, s in top.items()],
                     other_share=float(max(0.0, 1 - top.sum())))
    return stats


def frame_stats(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Statistics of every column of a training output."""
    return {str(column): column_stats(frame[column]) for column in frame.columns}


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of `values` in the training bins; values outside fall into the end bins."""
    if len(edges) < 2:
        return np.array([1.0]) if len(values) else np.array([0.0])
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)
    return counts / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two share vectors over the same buckets."""
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=float), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


class ServingWindow:
    """The last `size` served values of each feature, and outcome counters; thread-safe, bounded.

    `keys` holds the column names requests looked entities up by (their index key): the skew
    report does not score them, a key is an identity, not a feature.
    """

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.Lock()
        self._fold_lock = threading.Lock()
        self._values: dict[str, deque] = {}
        self._pending: deque[tuple[tuple[str, ...], pd.DataFrame]] = deque()  # (column names, frame), oldest first
        self._pending_rows: dict[str, int] = {}  # per column: the rows the waiting frames hold of it
        self.outcomes: dict[str, int] = {"served": 0, "no_row": 0, "schema_mismatch": 0,
                                         "expectation_violations": 0}
        self.keys: set[str] = set()
        self.shadow: dict[str, Any] = {"compared": 0, "input_changed": 0, "mismatches": {}}
        self.dirty = False

    def record(self, frame: pd.DataFrame | None, outcome: str = "served", key: str | None = None) -> None:
        """Count an outcome and, for served rows, remember their values (a served empty frame also
        counts as ``no_row``). The request pays for a shallow copy of the frame (with pandas'
        copy-on-write no later change to `frame` reaches it); the frames wait and go into the
        per-column buffers when the window is read, many at once."""
        rows = None if frame is None else frame.copy(deep=False)
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.dirty = True
            if key is not None:
                self.keys.add(str(key))
            if rows is None:
                return
            if not len(rows):
                self.outcomes["no_row"] = self.outcomes.get("no_row", 0) + 1
            names = tuple(str(column) for column in rows.columns)
            self._pending.append((names, rows))
            for name in names:
                self._pending_rows[name] = self._pending_rows.get(name, 0) + len(rows)
            while len(self._pending) > self.size:
                self._retire_oldest()

    def _retire_oldest(self) -> None:
        """Forget the oldest waiting frame when later ones push all its values out of every buffer it
        feeds, else fold it alone (the buffers then hold what they would had it been folded at once)."""
        names, frame = self._pending.popleft()
        for name in names:
            self._pending_rows[name] -= len(frame)
        if any(self._pending_rows[name] < self.size for name in names):
            self._extend(names, frame.to_numpy(dtype=object))

    def _fold(self) -> None:
        """Move the waiting rows into the per-column buffers in order, nulls as None. A run of frames with
        the same columns is converted as one array, outside the lock that `record` takes, so requests
        never wait for a conversion; one fold at a time keeps the order."""
        with self._fold_lock:
            with self._lock:
                waiting = deque(self._pending)
                self._pending.clear()
                self._pending_rows.clear()
            converted = []
            while waiting:
                names, first = waiting.popleft()
                run = [first]
                while waiting and waiting[0][0] == names:
                    run.append(waiting.popleft()[1])
                frame = first if len(run) == 1 else pd.concat(run, ignore_index=True)
                converted.append((names, frame.to_numpy(dtype=object)))
            with self._lock:
                for names, values in converted:
                    self._extend(names, values)

    def _extend(self, names: tuple[str, ...], values: np.ndarray) -> None:
        for position, name in enumerate(names):
            buffer = self._values.setdefault(name, deque(maxlen=self.size))
            buffer.extend(None if pd.isna(v) else v for v in values[:, position].tolist())

    def record_shadow(self, mismatched: list[str] | None) -> None:
        """Count a served training entity of the shadow sample: None when its raw input changed since
        registration (data drift, not skew), else the features whose values differed from training."""
        with self._lock:
            self.dirty = True
            if mismatched is None:
                self.shadow["input_changed"] += 1
                return
            self.shadow["compared"] += 1
            for name in mismatched:
                self.shadow["mismatches"][name] = self.shadow["mismatches"].get(name, 0) + 1

    def series(self) -> dict[str, pd.Series]:
        self._fold()
        with self._lock:
            return {column: pd.Series(list(values), dtype=object) for column, values in self._values.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot, for the catalog."""
        self._fold()
        with self._lock:
            return {"size": self.size, "outcomes": dict(self.outcomes), "keys": sorted(self.keys),
                    "shadow": {**self.shadow, "mismatches": dict(self.shadow["mismatches"])},
                    "values": {c: json_safe(list(values)) for c, values in self._values.items()}}

    @classmethod
    def merged(cls, windows: list["ServingWindow"]) -> "ServingWindow":
        """One window holding all of theirs: outcomes, keys and shadow counts added, values one after
        another (its size is their sizes' sum, so nothing is dropped)."""
        merged = cls(sum(window.size for window in windows))
        for window in windows:
            data = window.to_dict()
            for outcome, count in data["outcomes"].items():
                merged.outcomes[outcome] = merged.outcomes.get(outcome, 0) + count
            merged.keys.update(data["keys"])
            shadow = data["shadow"]
            merged.shadow["compared"] += shadow["compared"]
            merged.shadow["input_changed"] += shadow["input_changed"]
            for name, count in shadow["mismatches"].items():
                merged.shadow["mismatches"][name] = merged.shadow["mismatches"].get(name, 0) + count
            for column, values in data["values"].items():
                merged._values.setdefault(column, deque(maxlen=merged.size)).extend(values)
        return merged

    @classmethod
    def from_dict(cls, data: dict[str, Any], size: int) -> "ServingWindow":
        window = cls(size)
        window.outcomes.update(data.get("outcomes", {}))
        window.keys.update(data.get("keys", []))
        shadow = data.get("shadow") or {}
        window.shadow.update(compared=int(shadow.get("compared", 0)), input_changed=int(shadow.get("input_changed", 0)),
                             mismatches=dict(shadow.get("mismatches", {})))
        for column, values in data.get("values", {}).items():
            window._values[column] = deque(values, maxlen=size)
        return window
