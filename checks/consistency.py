"""Value-level train/serve consistency: compare an entity's served feature rows with its training rows.

`compare_entity` is the pure core of the registration replay (issue 11): columns, their order, logical
types and values, floats within a relative/absolute tolerance and nulls equal to nulls. `ReplayReport`
folds many entities into the report stored with an ETL: entities checked, per-column mismatch rate and
a few examples with both values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from checks.schema import logical_type

MAX_EXAMPLES = 5


def _is_null(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars are never "null"
        return False


def values_equal(trained: Any, served: Any, rel_tol: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    """Equal as features: null equals null, floats within a tolerance, anything else by ``==``."""
    if _is_null(trained) or _is_null(served):
        return _is_null(trained) and _is_null(served)
    if isinstance(trained, float) or isinstance(served, float):
        try:
            return math.isclose(float(trained), float(served), rel_tol=rel_tol, abs_tol=abs_tol)
        except (TypeError, ValueError):
            return False
    try:
        return bool(trained == served)
    except (TypeError, ValueError):
        return False


def compare_entity(trained: pd.DataFrame, served: pd.DataFrame) -> dict[str, Any]:
    """How one entity's served rows differ from its training rows: ``{"columns": ..., "values": {col: [...]}}``.

    ``columns`` is None when names and order match; ``values`` maps each column whose logical type,
    row count or any value differs to up to `MAX_EXAMPLES` ``{"row", "trained", "served"}`` examples.
    """
    trained_names, served_names = [str(c) for c in trained.columns], [str(c) for c in served.columns]
    columns = None if trained_names == served_names else {"trained": trained_names, "served": served_names}
    values: dict[str, list[dict[str, Any]]] = {}
    for name in trained_names:
        if name not in served_names:
            values[name] = [{"row": None, "trained": "<column>", "served": "<missing>"}]
            continue
        left, right = trained[name].reset_index(drop=True), served[name].reset_index(drop=True)
        examples: list[dict[str, Any]] = []
        if len(left) != len(right):
            examples.append({"row": None, "trained": f"{len(left)} rows", "served": f"{len(right)} rows"})
        elif logical_type(left) != logical_type(right) and not (left.isna().all() or right.isna().all()):
            examples.append({"row": None, "trained": logical_type(left), "served": logical_type(right)})
        for row, (a, b) in enumerate(zip(left.tolist(), right.tolist())):
            if len(examples) >= MAX_EXAMPLES:
                break
            if not values_equal(a, b):
                examples.append({"row": row, "trained": a, "served": b})
        if examples:
            values[name] = examples
    return {"columns": columns, "values": values}


@dataclass
class ReplayReport:
    """The consistency report of a replay: mismatch counts per column over the entities checked."""

    columns: list[str]
    entities_checked: int = 0
    column_order_mismatches: int = 0
    mismatched: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entity: Any, trained: pd.DataFrame, served: pd.DataFrame) -> None:
        """Compare one entity and count what differs."""
        diff = compare_entity(trained, served)
        self.entities_checked += 1
        if diff["columns"] is not None:
            self.column_order_mismatches += 1
        for name, examples in diff["values"].items():
            self.mismatched[name] = self.mismatched.get(name, 0) + 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append({"entity": entity, "column": name, **examples[0]})

    @property
    def consistent(self) -> bool:
        """True when no entity differed in any column or in the column order."""
        return not self.mismatched and not self.column_order_mismatches

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report (per-column mismatch rate over the entities checked)."""
        checked = max(self.entities_checked, 1)
        return {"entities_checked": self.entities_checked, "consistent": self.consistent,
                "column_order_mismatches": self.column_order_mismatches,
                "mismatch_rate": {name: self.mismatched.get(name, 0) / checked for name in self.columns},
                "mismatched_columns": sorted(self.mismatched), "examples": self.examples}
