"""Expectations on feature columns, checked by the service on the training and serving outputs.

Rules per column: ``type`` (logical type), ``nullable`` (False: no nulls),
``min``/``max`` (inclusive bounds on numbers), ``allowed`` (a list of values),
``unique`` (True: no repeated non-null values). A column named in the
expectations must exist. Each broken rule is reported with the column, the
rule, how many rows break it and a few example values.

Hand-written rather than pandera: five rules, which must judge a one-row serving
frame by the same logical types as the schema comparison (pandera's dtype checks
would call an int column widened to float by one missing value a violation).
"""
from __future__ import annotations

from typing import Any

import pandas as pd
from pandas.api import types as ptypes

from common.errors import InvalidEtl
from checks.schema import column_type, compatible

RULES = ("type", "nullable", "min", "max", "allowed", "unique")
EXAMPLES = 5


def validate_expectations(expectations: dict[str, Any]) -> None:
    """Raise InvalidEtl when the declared expectations are not column → {known rule: value}."""
    for column, rules in expectations.items():
        if not isinstance(rules, dict):
            raise InvalidEtl(f"expectations for {column!r} must be a mapping of rules", {"column": column})
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise InvalidEtl(f"unknown expectation rule(s) {unknown} for {column!r}; known: {list(RULES)}",
                             {"column": column, "rules": unknown})
        if "allowed" in rules and not isinstance(rules["allowed"], list):
            raise InvalidEtl(f"'allowed' for {column!r} must be a list", {"column": column})


def check_expectations(frame: pd.DataFrame, expectations: dict[str, Any]) -> list[dict[str, Any]]:
    """Every broken rule: [{column, rule, expected, failed_rows, examples}] ([] when all hold)."""
    violations = []
    for column, rules in expectations.items():
        if column not in frame.columns:
            violations.append(_violation(column, "present", True, len(frame), []))
            continue
        series = frame[column]
        for rule, expected in rules.items():
            failing = _failing(series, rule, expected)
            if failing is not None and len(failing):
                violations.append(_violation(column, rule, expected, len(failing), failing.head(EXAMPLES).tolist()))
    return violations


def _failing(series: pd.Series, rule: str, expected: Any) -> pd.Series | None:
    """The values of `series` that break `rule` (None or empty: none do)."""
    present = series.dropna()
    if rule == "type":
        actual = column_type(series)
        if compatible(expected, actual["type"], bool(actual.get("widened"))):
            return None
        return present.head(EXAMPLES).astype(str) + f" ({actual['type']})"
    if rule == "nullable":
        return None if expected else series[series.isna()]
    if rule in ("min", "max"):
        if not ptypes.is_numeric_dtype(present.dtype) or ptypes.is_bool_dtype(present.dtype):
            return present.head(EXAMPLES)
        return present[present < expected] if rule == "min" else present[present > expected]
    if rule == "allowed":
        return present[~present.isin(expected)]
    if rule == "unique":
        return present[present.duplicated(keep=False)].drop_duplicates() if expected else None
    return None


def _violation(column: str, rule: str, expected: Any, failed: int, examples: list[Any]) -> dict[str, Any]:
    return {"column": column, "rule": rule, "expected": expected, "failed_rows": int(failed),
            "examples": [_plain(v) for v in examples]}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
