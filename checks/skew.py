"""The skew report: training statistics against the window of served values, without false alarms.

Each feature gets three measures: the null-rate change, the mean shift in training standard
deviations (numbers) and the population stability index (PSI) over the training bins or
categories. A measure is flagged only when it passes its threshold **plus a multiple of the noise
it shows on samples of this size when nothing has changed**:

- PSI over B buckets between n served and m training values is, with no drift, about
  (1/n + 1/m) times a chi-square with B−1 degrees of freedom, so its expected noise is
  (B−1)(1/n + 1/m): 0.18 at n=50 over ten bins, as large as the usual 0.2 threshold, which is why
  a fixed threshold flags stable features on small samples.
- The mean of n values drifts by sqrt(1/n + 1/m) training standard deviations by chance.
- A null rate p moves by sqrt(p(1−p)(1/n + 1/m)) by chance.

The limit is ``threshold + NOISE_MULTIPLE × noise``; with NOISE_MULTIPLE = 3 a stable PSI over
ten bins passes it with a probability of about 0.1 % (a chi-square with 9 degrees of freedom above
27), so a report over some tens of features stays quiet, while a real shift, whose PSI does not
shrink with n, is still flagged once the sample has some hundreds of rows. This is simpler than a
family of p-values with a multiple-testing correction and keeps the familiar PSI scale.

Key columns (the index key requests looked entities up by) are not scored: a sample of entities
never looks like the training population of identifiers. "Served, but no row" (the ETL returned
nothing for a found entity) is an outcome of its own, compared with training, where every entity
has its row.

Value mismatches come from the shadow comparison: when serving answers one of the training entities
the registration replay kept (app/replay.py) and its raw input rows are unchanged, its served
features are compared with its training rows; a feature that differs is flagged at once (a changed
input is data drift and counted apart, as ``input_changed``).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from checks.stats import ServingWindow, bin_shares, psi

NOISE_MULTIPLE = 3.0


def skew_report(training: dict[str, dict[str, Any]], window: ServingWindow, thresholds: dict[str, float],
                min_samples: int, keys: Iterable[str] = ()) -> dict[str, Any]:
    """Training vs serving per feature; `keys` (with the window's own) are listed but not scored."""
    served = window.series()
    key_columns = set(keys) | window.keys
    features = {}
    for column, train in training.items():
        values = served.get(column, pd.Series([], dtype=object))
        if column in key_columns:
            features[column] = _key_column(len(values))
        else:
            features[column] = _with_value_mismatches(_feature_skew(train, values, thresholds, min_samples),
                                                      window.shadow["mismatches"].get(column, 0),
                                                      window.shadow["compared"])
    flagged = sorted(c for c, f in features.items() if f["flags"])
    return {"outcomes": dict(window.outcomes), "window_size": window.size, "min_samples": min_samples,
            "thresholds": thresholds, "noise_multiple": NOISE_MULTIPLE, "key_columns": sorted(key_columns),
            "no_row": _no_row(window.outcomes, thresholds["null_rate_change"], min_samples),
            "value_mismatches": {"compared": window.shadow["compared"], "input_changed": window.shadow["input_changed"],
                                 "by_feature": dict(window.shadow["mismatches"])},
            "flagged": flagged, "features": features}


def _with_value_mismatches(report: dict[str, Any], mismatches: int, compared: int) -> dict[str, Any]:
    """Add the shadow comparison: served training entities, raw input unchanged, whose value of this
    feature differed from training. One is skew for certain (no noise to allow for), so it flags."""
    report["value_mismatches"] = mismatches
    if mismatches:
        report["flags"] = [*report["flags"], "value_mismatch"]
        check = f"value_mismatch in {mismatches} of {compared} served training entities with unchanged input"
        report["reason"] = (report["reason"] + "; " + check if report["reason"].startswith("flagged")
                            else "flagged: " + check)
    return report


def _key_column(samples: int) -> dict[str, Any]:
    return {"samples": samples, "key": True, "flags": [], "checks": [],
            "reason": "key column: identifies entities, not scored"}


def _limit(name: str, value: float | None, threshold: float, noise: float, enough: bool) -> dict[str, Any]:
    """One measure with its threshold, noise and limit, and whether (and why) it is flagged."""
    limit = threshold + NOISE_MULTIPLE * noise
    flagged = enough and value is not None and abs(value) > limit
    if value is None:
        reason = "not measured"
    elif not enough:
        reason = "too few served values"
    else:
        reason = f"|{value:.4g}| {'>' if flagged else '<='} limit {limit:.4g}"
    return {"measure": name, "value": value, "threshold": threshold, "noise": noise, "limit": limit,
            "flagged": flagged, "reason": reason}


def _feature_skew(train: dict[str, Any], values: pd.Series, thresholds: dict[str, float],
                  min_samples: int) -> dict[str, Any]:
    present = values.dropna()
    m = max(int(train.get("count") or 0), 1)
    null_rate = float(1 - len(present) / len(values)) if len(values) else None
    report: dict[str, Any] = {"samples": len(values), "training_rows": m, "training_null_rate": train["null_rate"],
                              "serving_null_rate": null_rate, "null_rate_change": None, "mean_shift_std": None,
                              "psi": None, "psi_buckets": None, "flags": [], "checks": []}
    if not len(values):
        report["reason"] = "not served yet"
        return report
    n, enough = len(values), len(values) >= min_samples
    report["null_rate_change"] = null_rate - train["null_rate"]
    checks = [_limit("null_rate_change", report["null_rate_change"], thresholds["null_rate_change"],
                     _rate_noise((null_rate * n + train["null_rate"] * m) / (n + m), n, m), enough)]
    if train.get("kind") == "numeric":
        checks += _numeric_checks(train, present, thresholds, m, enough, report)
    else:
        checks += _categorical_checks(train, present, thresholds, m, enough, report)
    report["checks"] = checks
    report["flags"] = [c["measure"] for c in checks if c["flagged"]]
    report["reason"] = ("flagged: " + ", ".join(f"{c['measure']} {c['reason']}" for c in checks if c["flagged"])
                        if report["flags"] else
                        f"too few served values ({n} < {min_samples})" if not enough else "within limits")
    return report


def _numeric_checks(train: dict[str, Any], present: pd.Series, thresholds: dict[str, float], m: int,
                    enough: bool, report: dict[str, Any]) -> list[dict[str, Any]]:
    numbers = pd.to_numeric(present, errors="coerce").dropna().to_numpy(dtype="float64")
    if not len(numbers):
        return []
    n = len(numbers)
    report["serving_mean"] = float(numbers.mean())
    checks = []
    if train["std"] > 0:
        report["mean_shift_std"] = (report["serving_mean"] - train["mean"]) / train["std"]
        checks.append(_limit("mean_shift_std", report["mean_shift_std"], thresholds["mean_shift_std"],
                             math.sqrt(1 / n + 1 / m), enough))
    shares = np.asarray(train["bin_shares"])
    served_shares = bin_shares(numbers, np.asarray(train["bin_edges"]))
    report["serving_bin_shares"] = served_shares.tolist()  # over the training bins, for plots
    report["psi"] = psi(shares, served_shares)
    report["psi_buckets"] = int(np.count_nonzero(shares))
    checks.append(_limit("psi", report["psi"], thresholds["psi"], _psi_noise(report["psi_buckets"], n, m), enough))
    return checks


def _categorical_checks(train: dict[str, Any], present: pd.Series, thresholds: dict[str, float], m: int,
                        enough: bool, report: dict[str, Any]) -> list[dict[str, Any]]:
    if not len(present):
        return []
    text = present.astype(str)
    actual = [float((text == t["value"]).mean()) for t in train["top"]]
    expected = np.array([t["share"] for t in train["top"]] + [train["other_share"]])
    report["serving_shares"] = actual + [max(0.0, 1 - sum(actual))]  # training's categories, then the rest
    report["psi"] = psi(expected, np.array(report["serving_shares"]))
    report["psi_buckets"] = int(np.count_nonzero(expected > 1e-12))
    return [_limit("psi", report["psi"], thresholds["psi"], _psi_noise(report["psi_buckets"], len(text), m),
                   enough)]


def _psi_noise(buckets: int, n: int, m: int) -> float:
    """Expected PSI between two samples of one population: (B−1)(1/n + 1/m)."""
    return max(buckets - 1, 0) * (1 / n + 1 / m)


def _rate_noise(rate: float, n: int, m: int) -> float:
    """Standard error of the difference of two rates (pooled `rate`) over n and m values."""
    return math.sqrt(max(rate * (1 - rate), 0.0) * (1 / n + 1 / m))


def _no_row(outcomes: dict[str, int], threshold: float, min_samples: int) -> dict[str, Any]:
    """Share of served requests whose ETL returned no row, against training (no entity without a row)."""
    served, none = outcomes.get("served", 0), outcomes.get("no_row", 0)
    rate = none / served if served else None
    check = _limit("no_row_rate", rate, threshold, 0.0, served >= min_samples)
    return {"count": none, "served": served, "rate": rate, "training_rate": 0.0, **check}
