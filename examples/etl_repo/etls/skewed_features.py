"""Skewed on purpose (the README walkthrough's step 5): `pd.get_dummies` makes one column per category it sees,
so the training set gets one per quote type and a single served row only its own. The service refuses to serve
it (409 schema_mismatch with the missing columns); fitted_features.py shows the fix (a vocabulary fitted once)."""
import pandas as pd

from extraction.etl_contract import BaseEtl


class Etl(BaseEtl):
    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([df[["user_id"]], pd.get_dummies(df["quote_type"], prefix="type")], axis=1)
