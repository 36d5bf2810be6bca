"""Which functions and system tables user SQL may not name, whatever the engine.

User SQL is a read-only SELECT, but a SELECT can still call functions that reveal
the server's files and settings (``duckdb_databases()`` lists the warehouse's path,
``current_setting('temp_directory')`` its temporary folder, ``pg_read_file`` reads a
PostgreSQL server file), change database state (``checkpoint()``), run SQL text the
checks never saw (``query('…')``, ``json_execute_serialized_sql``), or break the
connection's state (a second ``which_secret()``). None of these has a use in a feature
query, so they are refused by name, case-insensitively, wherever they appear: as a
scalar function, a table function or a system view (``pragma_database_list``).

`sql.prepared` applies this to sqlglot's tree at save and run; `sql.duckdb_engine`
applies it again to DuckDB's own parse of the text it is about to run.
"""
from __future__ import annotations

REFUSED_PREFIXES = ("duckdb_", "pragma_", "sqlite_")
SYSTEM_VIEWS = frozenset({"pg_settings", "pg_file_settings", "pg_hba_file_rules", "pg_ident_file_mappings",
                          "pg_config", "pg_stat_activity"})
REFUSED_FUNCTIONS = SYSTEM_VIEWS | frozenset({
    # settings, secrets and server files
    "current_setting", "which_secret", "set_config", "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_dir",
    "pg_ls_logdir", "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_current_logfile",
    "lo_import", "lo_export", "inet_server_addr", "inet_server_port",
    # state changes and engine internals
    "checkpoint", "force_checkpoint", "enable_logging", "disable_logging", "truncate_duckdb_logs",
    "enable_profiling", "disable_profiling", "create_external_resource", "register_external_resource",
    "register_external_resource_type", "deregister_external_resource", "destroy_external_resource",
    # SQL text or scans the checks never see
    "query", "query_table", "json_execute_serialized_sql", "python_map_function", "pandas_scan", "arrow_scan",
    "arrow_scan_dumb", "python_arrow_scan", "seq_scan", "read_duckdb",
})


def is_refused(name: str, table: bool = False) -> bool:
    """Whether user SQL may not call function `name`, or read table `name` (any case).

    A plain table name is refused only for the system prefixes and views: a source may be called `query`."""
    lowered = name.lower()
    return lowered.startswith(REFUSED_PREFIXES) or lowered in (SYSTEM_VIEWS if table else REFUSED_FUNCTIONS)


def refused_message(name: str) -> str:
    return (f"{name} is not allowed in a query: it reveals server settings or files, changes database state "
            "or runs SQL text of its own")
