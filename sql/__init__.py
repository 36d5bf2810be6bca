"""User SQL as a tree (checks, rewrites, output types), the one logical-type map, and the DuckDB engine."""
