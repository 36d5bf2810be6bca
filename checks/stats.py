"""Feature statistics: of the training output, of a bounded window of served rows, and their skew.

Training statistics per column: rows, null rate, and for numbers min/max/mean/std
with ten quantile bins (their edges and shares); for strings and booleans the top
categories with their shares. Serving keeps the last `size` values of each column
in ring buffers (memory is bounded whatever the traffic) plus counts of schema and
expectation outcomes. The skew report compares the two per feature: null-rate
change, mean shift in training standard deviations, and the population stability
index (PSI) over the training bins or categories.
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
                     bin_edges=edges.tolist(), bin_shares=_bin_shares(values, edges).tolist())
    else:
        shares = present.astype(str).value_counts(normalize=True)
        top = shares.head(TOP_CATEGORIES)
        stats.update(kind="categorical", top=[{"value": v, "share": float(s)} for v, s in top.items()],
                     other_share=float(max(0.0, 1 - top.sum())))
    return stats


def frame_stats(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Statistics of every column of a training output."""
    return {str(column): column_stats(frame[column]) for column in frame.columns}


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
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
    """The last `size` served values of each feature, and outcome counters; thread-safe, bounded."""

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.Lock()
        self._values: dict[str, deque] = {}
        self.outcomes: dict[str, int] = {"served": 0, "schema_mismatch": 0, "expectation_violations": 0}
        self.dirty = False

    def record(self, frame: pd.DataFrame | None, outcome: str = "served") -> None:
        """Count an outcome and, for served rows, remember their values."""
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.dirty = True
            if frame is None:
                return
            for column in frame.columns:
                buffer = self._values.setdefault(str(column), deque(maxlen=self.size))
                buffer.extend(None if pd.isna(v) else v for v in frame[column].tolist())

    def series(self) -> dict[str, pd.Series]:
        with self._lock:
            return {column: pd.Series(list(values), dtype=object) for column, values in self._values.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot, for the catalog."""
        with self._lock:
            return {"size": self.size, "outcomes": dict(self.outcomes),
                    "values": {c: json_safe(list(values)) for c, values in self._values.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], size: int) -> "ServingWindow":
        window = cls(size)
        window.outcomes.update(data.get("outcomes", {}))
        for column, values in data.get("values", {}).items():
            window._values[column] = deque(values, maxlen=size)
        return window


def skew_report(training: dict[str, dict[str, Any]], window: ServingWindow, thresholds: dict[str, float],
                min_samples: int) -> dict[str, Any]:
    """Training vs serving per feature, each measure flagged when past its threshold."""
    served = window.series()
    features = {}
    for column, train in training.items():
        values = served.get(column, pd.Series([], dtype=object))
        features[column] = _feature_skew(train, values, thresholds, len(values) >= min_samples)
    flagged = sorted(c for c, f in features.items() if f["flags"])
    return {"outcomes": dict(window.outcomes), "window_size": window.size, "min_samples": min_samples,
            "thresholds": thresholds, "flagged": flagged, "features": features}


def _feature_skew(train: dict[str, Any], values: pd.Series, thresholds: dict[str, float],
                  enough: bool) -> dict[str, Any]:
    present = values.dropna()
    null_rate = float(1 - len(present) / len(values)) if len(values) else None
    report: dict[str, Any] = {"samples": len(values), "training_null_rate": train["null_rate"],
                              "serving_null_rate": null_rate, "null_rate_change": None, "mean_shift_std": None,
                              "psi": None, "flags": []}
    if not len(values):
        return report
    report["null_rate_change"] = null_rate - train["null_rate"]
    if train.get("kind") == "numeric":
        numbers = pd.to_numeric(present, errors="coerce").dropna().to_numpy(dtype="float64")
        if len(numbers):
            report["serving_mean"] = float(numbers.mean())
            if train["std"] > 0:
                report["mean_shift_std"] = (report["serving_mean"] - train["mean"]) / train["std"]
            edges = np.asarray(train["bin_edges"])
            report["psi"] = psi(np.asarray(train["bin_shares"]), _bin_shares(numbers, edges))
    else:
        categories = [t["value"] for t in train["top"]]
        text = present.astype(str)
        actual = [float((text == c).mean()) if len(text) else 0.0 for c in categories]
        expected = [t["share"] for t in train["top"]]
        report["psi"] = psi(np.array(expected + [train["other_share"]]), np.array(actual + [1 - sum(actual)]))
    if enough:
        report["flags"] = [name for name, value, limit in (
            ("null_rate_change", report["null_rate_change"], thresholds["null_rate_change"]),
            ("mean_shift_std", report["mean_shift_std"], thresholds["mean_shift_std"]),
            ("psi", report["psi"], thresholds["psi"]),
        ) if value is not None and abs(value) >= limit]
    return report
