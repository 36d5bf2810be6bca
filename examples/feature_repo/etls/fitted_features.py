"""Features that need the whole training set: fitted once offline, applied to every row online.

`fit` learns the mean and standard deviation of minutes-to-bind and the quote-type
vocabulary from the training data; `transform` uses them (`self.state`) whether it
runs on the training set or on one serving row, so both give the same columns,
in the same order, with the same values for the same user.
"""
import pandas as pd

from extraction.etl_contract import BaseEtl


def minutes_to_bind(seconds_to_bind: pd.Series) -> pd.Series:
    """How long the user took to bind the quote, in minutes."""
    return seconds_to_bind.astype("float64") / 60.0


def standardized(values: pd.Series, mean: float, std: float) -> pd.Series:
    """(value - training mean) / training standard deviation."""
    return (values - mean) / std


def one_hot(values: pd.Series, vocabulary: list[str], prefix: str) -> pd.DataFrame:
    """One 0/1 column per training category; a category unseen in training is all zeros."""
    return pd.DataFrame({f"{prefix}_{category}": values.eq(category).fillna(False).astype("int64")
                         for category in vocabulary}, index=values.index)


class Etl(BaseEtl):
    expectations = {
        "user_id": {"type": "string", "nullable": False, "unique": True},
        "minutes_to_bind_z": {"type": "float", "min": -10, "max": 10},
        "is_mobile": {"type": "boolean", "nullable": False},
    }
    serving_violations = "warn"

    def fit(self, df: pd.DataFrame) -> dict:
        minutes = minutes_to_bind(df["seconds_to_bind"])
        return {"minutes_mean": minutes.mean(), "minutes_std": minutes.std(),
                "quote_types": sorted(df["quote_type"].dropna().unique().tolist())}

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        features = pd.DataFrame({
            "user_id": df["user_id"],
            "minutes_to_bind_z": standardized(minutes_to_bind(df["seconds_to_bind"]),
                                              self.state["minutes_mean"], self.state["minutes_std"]),
            "is_mobile": df["quote_device"].isin(["ios", "android"]),
        })
        return features.join(one_hot(df["quote_type"], self.state["quote_types"], "quote_type"))
