"""The import path ETL scripts use: ``from extraction.etl_contract import BaseEtl``.

Scripts registered in a catalog keep this line in their stored source, so it stays; the contract
itself lives in `etl.contract` (the same class objects).
"""
from etl.contract import BaseEtl, install_compat_module

__all__ = ["BaseEtl", "install_compat_module"]
