"""Quote features for a conversion model: one small function per feature."""
import pandas as pd

from extraction.etl_contract import BaseEtl

MOBILE_DEVICES = ["ios", "android"]


def is_mobile(quote_device: pd.Series) -> pd.Series:
    """The quote was made on a phone."""
    return quote_device.isin(MOBILE_DEVICES)


def minutes_to_bind(seconds_to_bind: pd.Series) -> pd.Series:
    """How long the user took to bind the quote, in minutes."""
    return seconds_to_bind.astype("float64") / 60.0


def paid_by_amex(card_type: pd.Series) -> pd.Series:
    """Paid with an American Express card (no payment: False)."""
    return card_type.eq("amex").fillna(False).astype(bool)


class Etl(BaseEtl):
    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({
            "user_id": df["user_id"],
            "quote_type": df["quote_type"],
            "is_mobile": is_mobile(df["quote_device"]),
            "minutes_to_bind": minutes_to_bind(df["seconds_to_bind"]),
            "paid_by_amex": paid_by_amex(df["card_type"]),
            "is_paid": df["is_paid"],
        })
