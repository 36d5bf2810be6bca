"""Shop features for a churn model: one small function per feature, over examples/shop/customer_activity.sql."""
import pandas as pd

from extraction.etl_contract import BaseEtl


def average_order_value(spent: pd.Series, orders: pd.Series) -> pd.Series:
    """Money per order in the window (0 without orders)."""
    return (spent / orders.where(orders > 0)).fillna(0.0).astype("float64")


def coupon_share(coupon_orders: pd.Series, orders: pd.Series) -> pd.Series:
    """Share of orders that used a coupon (0 without orders)."""
    return (coupon_orders / orders.where(orders > 0)).fillna(0.0).astype("float64")


def is_browser_not_buyer(views: pd.Series, orders: pd.Series) -> pd.Series:
    """Many views and no order in the window."""
    return ((views >= 20) & (orders == 0)).astype(bool)


class Etl(BaseEtl):
    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({
            "customer_id": df["customer_id"],
            "views": df["views"].astype("int64"),
            "categories_viewed": df["categories_viewed"].astype("int64"),
            "average_order_value": average_order_value(df["spent"], df["orders"]),
            "coupon_share": coupon_share(df["coupon_orders"], df["orders"]),
            "browser_not_buyer": is_browser_not_buyer(df["views"], df["orders"]),
        })
