"""SQL handling, warehouse access, ETL loading and running, schema comparison."""
