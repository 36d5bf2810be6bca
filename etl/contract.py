"""The ETL contract: what a feature-extraction script must define.

A script defines a class named ``Etl``. The service builds it with the query
result as a pandas DataFrame and calls ``extract()``, which must return the
feature DataFrame. New scripts subclass `BaseEtl` and write ``transform(df)``;
scripts written for the original service (``from etl_abc import AbstractEtl``,
``class Etl(AbstractEtl)`` overriding ``extract()`` and returning ``self.df``)
run unchanged, because ``etl_abc.AbstractEtl`` is this same class.

Fitted state. Statistics that need the whole training set (a mean and standard
deviation, a category vocabulary, bucket edges) come from ``fit(df)``, which
runs once on the training data during ``extract/train`` and returns a
JSON-serializable mapping. The service stores it with the ETL and sets
``self.state`` to it before every ``transform`` — in training right after
``fit``, in serving from the catalog — so the same code computes the same
columns online and offline, and never asks whether it is online.

As-of time. ``self.as_of`` (a UTC ``pandas.Timestamp``) is the time the features are computed as
of: the request's time when serving, the training run's time in ``extract/train`` (and when the
registration replays training entities through serving, the same training time). A feature that
depends on time must use it, never the wall clock: ``now()`` gives training and serving different
values for the same entity, and the registration replay refuses the ETL for it::

    def transform(self, df):
        age = (self.as_of - pd.to_datetime(df["signup_time"], utc=True)).dt.days
        return pd.DataFrame({"user_id": df["user_id"], "account_age_days": age})

Expectations. ``expectations`` maps output columns to rules checked by the
service on both paths: ``type`` (a logical type), ``nullable`` (False forbids
nulls), ``min``/``max``, ``allowed`` (a list of values), ``unique`` (True: no
repeated non-null values). ``serving_violations`` says what serving does when
one is broken: ``"reject"`` (422) or ``"warn"`` (200 with ``warnings``)::

    class Etl(BaseEtl):
        expectations = {"user_id": {"type": "string", "nullable": False, "unique": True}}
        serving_violations = "warn"

        def fit(self, df):
            return {"mean": df["age"].mean(), "std": df["age"].std()}

        def transform(self, df):
            return pd.DataFrame({"user_id": df["user_id"],
                                 "age_z": (df["age"] - self.state["mean"]) / self.state["std"]})

Batches. ``batchable = True`` declares that ``transform`` is row-wise: given ``self.state``, the
features of a part of the rows are those rows' features of the whole (the transform of a concatenation
is the concatenation of the transforms). Only then may a training set streamed as Arrow (or exported)
run ``transform`` once per record batch of the query's result instead of once on the whole frame;
``fit`` still sees the whole training set. Anything frame-wide in ``transform`` itself (a rank, a
mean of the frame, a de-duplication) must leave ``batchable`` False, the default: such an ETL always
runs on the whole frame. A batch is a DataFrame with the whole frame's column dtypes and its rows'
positions in the whole frame as its index (app/training_stream.py).
"""
from __future__ import annotations

import sys
import types
from typing import Any

import pandas as pd


class BaseEtl:
    """Base class of every ETL; holds the query result in ``self.df`` and the fitted ``self.state``."""

    expectations: dict[str, dict[str, Any]] = {}
    serving_violations: str = "reject"
    batchable: bool = False  # True: transform is row-wise, so training may run it batch by batch

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.state: dict[str, Any] = {}
        self.as_of: pd.Timestamp | None = None

    def fit(self, df: pd.DataFrame) -> dict[str, Any]:
        """Learn what needs the whole training set; return it as a JSON-serializable mapping."""
        return {}

    def extract(self) -> pd.DataFrame:
        """Return the features; the default hands ``self.df`` to `transform`."""
        return self.transform(self.df)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Turn the query result into features, using ``self.state``. Override this (or `extract`)."""
        raise TypeError("an Etl must override transform(df) or extract()")


AbstractEtl = BaseEtl


def install_compat_module() -> None:
    """Make ``from etl_abc import AbstractEtl`` work for scripts of the original service."""
    if "etl_abc" not in sys.modules:
        module = types.ModuleType("etl_abc", "Compatibility alias of extraction.etl_contract.")
        module.AbstractEtl = BaseEtl  # type: ignore[attr-defined]
        module.BaseEtl = BaseEtl  # type: ignore[attr-defined]
        sys.modules["etl_abc"] = module
