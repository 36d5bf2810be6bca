"""The ETL contract: what a feature-extraction script must define.

A script defines a class named ``Etl``. The service builds it with the query
result as a pandas DataFrame and calls ``extract()``, which must return the
feature DataFrame. New scripts subclass `BaseEtl` and write ``transform(df)``;
scripts written for the original service (``from etl_abc import AbstractEtl``,
``class Etl(AbstractEtl)`` overriding ``extract()`` and returning ``self.df``)
run unchanged, because ``etl_abc.AbstractEtl`` is this same class::

    from extraction.etl_contract import BaseEtl

    class Etl(BaseEtl):
        def transform(self, df):
            df["is_mobile"] = df["quote_device"].isin(["ios", "android"])
            return df[["user_id", "is_mobile"]]
"""
from __future__ import annotations

import sys
import types

import pandas as pd


class BaseEtl:
    """Base class of every ETL; holds the query result in ``self.df``."""

    def __init__(self, df: pd.DataFrame):
        self.df = df

    def extract(self) -> pd.DataFrame:
        """Return the features; the default hands ``self.df`` to `transform`."""
        return self.transform(self.df)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Turn the query result into features. Override this (or `extract`)."""
        raise TypeError("an Etl must override transform(df) or extract()")


AbstractEtl = BaseEtl


def install_compat_module() -> None:
    """Make ``from etl_abc import AbstractEtl`` work for scripts of the original service."""
    if "etl_abc" not in sys.modules:
        module = types.ModuleType("etl_abc", "Compatibility alias of extraction.etl_contract.")
        module.AbstractEtl = BaseEtl  # type: ignore[attr-defined]
        module.BaseEtl = BaseEtl  # type: ignore[attr-defined]
        sys.modules["etl_abc"] = module
