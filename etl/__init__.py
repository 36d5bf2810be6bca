"""ETL code: where it comes from (git, HTTP), the contract scripts implement, and how it runs (in process or
in isolated workers)."""
