"""Kept for ETL scripts: ``extraction.etl_contract`` is the contract's stable import path (see `etl.contract`)."""
