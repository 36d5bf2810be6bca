# Written for the original service: it runs here unchanged.
from etl_abc import AbstractEtl


class Etl(AbstractEtl):
    def __init__(self, df):
        super().__init__(df)

    def extract(self):
        self.df["is_mobile"] = self.df["quote_device"].apply(lambda d: d in ["ios", "android"])
        self.df = self.df[["user_id", "quote_type", "is_mobile", "is_binded", "is_paid"]]
        return self.df
