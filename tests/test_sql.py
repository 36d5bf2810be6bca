"""`prepare_query`: one read-only SELECT/WITH in, a tree, a canonical hash and safe rewrites out."""
from __future__ import annotations

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from common.errors import InvalidQuery
from sql.prepared import LOOKUP_ALIAS, PreparedQuery, prepare_query

DIALECTS = ["duckdb", "postgres"]

# Kept here, not imported from the module, so a node dropped from its deny-list makes these tests fail.
FORBIDDEN_NODES = tuple(
    getattr(exp, name) for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "TruncateTable", "Command",
        "Pragma", "Set", "Attach", "Detach", "Copy", "Install", "Use", "Into", "Transaction", "Commit",
        "Rollback", "Placeholder", "Parameter",
    ) if hasattr(exp, name)
)

ACCEPTED = [
    "SELECT 1",
    "select a, b from t where c = 'x'",
    "SELECT * FROM t;",
    "SELECT * FROM t -- trailing comment",
    "/* leading */ SELECT a /* inner */ FROM t",
    "WITH x AS (SELECT a FROM t) SELECT * FROM x",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
    "SELECT a FROM t UNION SELECT a FROM u",
    "SELECT a FROM t UNION ALL SELECT a FROM u EXCEPT SELECT a FROM v",
    "SELECT t.a, u.b FROM t JOIN u ON t.id = u.id LEFT JOIN v USING (id)",
    "SELECT a FROM t WHERE a IN (SELECT a FROM u) AND EXISTS (SELECT 1 FROM v WHERE v.a = t.a)",
    "SELECT (SELECT max(a) FROM u) AS m, count(*) FROM t GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 LIMIT 5",
    "SELECT 'DELETE FROM t; DROP TABLE t' AS harmless_text",
    'SELECT "select" FROM "insert"',
]

REFUSED = {
    "create table": "CREATE TABLE t (a INT)",
    "create view": "CREATE VIEW v AS SELECT 1",
    "drop": "DROP TABLE t",
    "alter": "ALTER TABLE t ADD COLUMN b INT",
    "truncate": "TRUNCATE t",
    "insert": "INSERT INTO t VALUES (1)",
    "insert select": "INSERT INTO t SELECT * FROM u",
    "update": "UPDATE t SET a = 1",
    "delete": "DELETE FROM t",
    "merge": "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN UPDATE SET a = s.a",
    "attach": "ATTACH 'other.db' AS other",
    "detach": "DETACH other",
    "copy to": "COPY t TO '/tmp/out.csv'",
    "copy from": "COPY t FROM '/etc/passwd'",
    "pragma": "PRAGMA database_list",
    "set": "SET enable_external_access = true",
    "reset": "RESET enable_external_access",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "call": "CALL pragma_version()",
    "begin": "BEGIN",
    "use": "USE other",
    "values": "VALUES (1)",
    "two statements": "SELECT 1; SELECT 2",
    "select then drop": "SELECT 1; DROP TABLE t",
    "qmark placeholder": "select ?",
    "dollar parameter": "select $1",
    "placeholder in where": "SELECT * FROM t WHERE a = ?",
    "select into": "SELECT * INTO t2 FROM t",
    "locking read": "SELECT * FROM t FOR UPDATE",
    "empty": "",
    "whitespace": " \n\t  ",
    "line comment only": "-- just a comment",
    "block comment only": "/* just a comment */",
    "comment and semicolon": "-- c\n;",
    "nul byte": "SELECT 1\x00",
    "nul byte in literal": "SELECT 'a\x00b'",
    "not sql": "hello world",
}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", ACCEPTED)
def test_accepts_read_only_queries(sql: str, dialect: str) -> None:
    prepared = prepare_query(sql, dialect)
    assert isinstance(prepared, PreparedQuery)
    assert isinstance(prepared.tree, (exp.Select, exp.SetOperation))
    assert prepared.dialect == dialect
    assert len(prepared.sql_hash) == 64 and int(prepared.sql_hash, 16) >= 0
    assert not any(isinstance(node, FORBIDDEN_NODES) for node in prepared.tree.walk())


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", list(REFUSED.values()), ids=list(REFUSED))
def test_refuses_everything_but_one_read_only_select(sql: str, dialect: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        prepare_query(sql, dialect)
    assert caught.value.status == 400 and caught.value.code == "invalid_query"


def test_refuses_data_modifying_cte_in_postgres() -> None:
    with pytest.raises(InvalidQuery, match="DELETE"):
        prepare_query("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "postgres")


@pytest.mark.parametrize("sql", [
    "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
    "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x",
    "SELECT * FROM t WHERE a = $1",
    "SELECT * FROM t WHERE a = %(a)s",
])
def test_refuses_other_postgres_writes_and_parameters(sql: str) -> None:
    with pytest.raises(InvalidQuery):
        prepare_query(sql, "postgres")


@pytest.mark.parametrize("value", [None, 1, 1.5, b"SELECT 1", True])
def test_refuses_hashable_non_strings(value: object) -> None:
    with pytest.raises(InvalidQuery):
        prepare_query(value)  # type: ignore[arg-type]


# Unhashable arguments once reached the lru_cache before the type check and raised TypeError.
@pytest.mark.parametrize("value", [["SELECT 1"], {"sql": "SELECT 1"}, {"SELECT 1"}, bytearray(b"SELECT 1")],
                         ids=["list", "dict", "set", "bytearray"])
def test_refuses_unhashable_non_strings(value: object) -> None:
    with pytest.raises(InvalidQuery, match="non-empty SQL string") as caught:
        prepare_query(value)  # type: ignore[arg-type]
    assert caught.value.status == 400 and caught.value.code == "invalid_query"


# sqlglot crashes on some odd input with exceptions that are not SqlglotError (AttributeError on '{:}').
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", ["{:}", "SELECT {:}"])
def test_parser_crash_is_an_invalid_query(sql: str, dialect: str) -> None:
    with pytest.raises(InvalidQuery, match="does not parse") as caught:
        prepare_query(sql, dialect)
    assert caught.value.status == 400 and caught.value.details == {"dialect": dialect}


# -- canonical hash ------------------------------------------------------------------------------

BASE = "SELECT a, b FROM t WHERE c = 'x' ORDER BY a"
SAME_AS_BASE = [
    "select a,b from t where c='x' order by a",
    "  SELECT\n\ta ,\n b\nFROM t\nWHERE c = 'x'\nORDER BY a  ;",
    "SeLeCt a, b FrOm t WhErE c = 'x' OrDeR bY a",
    "SELECT A, B FROM T WHERE C = 'x' ORDER BY A",
    "SELECT a, /* the b */ b FROM t -- line comment\nWHERE c = 'x' ORDER BY a",
    "/* header */ SELECT a, b FROM t WHERE c = 'x' ORDER BY a -- trailer",
]
DIFFERENT_FROM_BASE = [
    "SELECT a, b FROM t WHERE c = 'X' ORDER BY a",
    "SELECT a, b FROM t WHERE c = 'y' ORDER BY a",
    "SELECT a, d FROM t WHERE c = 'x' ORDER BY a",
    "SELECT b, a FROM t WHERE c = 'x' ORDER BY a",
    "SELECT a, b FROM u WHERE c = 'x' ORDER BY a",
    "SELECT a, b FROM t WHERE c = 'x' ORDER BY a DESC",
    "SELECT a, b FROM t WHERE c = 'x ' ORDER BY a",
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", SAME_AS_BASE)
def test_hash_ignores_whitespace_keyword_case_comments_and_identifier_case(sql: str, dialect: str) -> None:
    assert prepare_query(sql, dialect).sql_hash == prepare_query(BASE, dialect).sql_hash


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", DIFFERENT_FROM_BASE)
def test_hash_changes_with_literals_columns_and_meaning(sql: str, dialect: str) -> None:
    assert prepare_query(sql, dialect).sql_hash != prepare_query(BASE, dialect).sql_hash


def test_sql_for_drops_comments_and_runs() -> None:
    prepared = prepare_query("SELECT 41 + 1 AS answer -- the answer\n;")
    text = prepared.sql_for("duckdb")
    assert "--" not in text and "the answer" not in text
    assert duckdb.connect().execute(text).fetchall() == [(42,)]


# -- point lookup ---------------------------------------------------------------------------------

@pytest.fixture
def tiny_db() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute('CREATE TABLE t (k VARCHAR, v INTEGER, "we""ird" VARCHAR)')
    connection.execute("INSERT INTO t VALUES ('a', 1, 'x'), ('b', 2, 'y'), ('a', 3, 'z')")
    yield connection
    connection.close()


@pytest.mark.parametrize("saved", [
    "SELECT k, v FROM t -- trailing comment",
    "SELECT k, v FROM t;",
    "SELECT k, v FROM t /* block */ ;",
    "SELECT k, v FROM t ORDER BY v LIMIT 10",
    "WITH x AS (SELECT k, v FROM t) SELECT * FROM x -- c",
    "SELECT k, v FROM t WHERE v < 3 UNION ALL SELECT k, v FROM t WHERE v >= 3 --",
])
def test_point_lookup_wraps_saved_sql_and_binds_the_key(tiny_db: duckdb.DuckDBPyConnection, saved: str) -> None:
    lookup = prepare_query(saved).point_lookup_sql("k")
    assert LOOKUP_ALIAS in lookup
    assert sorted(tiny_db.execute(lookup, ["a"]).fetchall()) == [("a", 1), ("a", 3)]
    assert tiny_db.execute(lookup, ["b"]).fetchall() == [("b", 2)]
    assert tiny_db.execute(lookup, ["' OR 1=1 --"]).fetchall() == []


COMMENT_AFTER_SEMICOLON = ["SELECT k, v FROM t; -- comment after the semicolon", "SELECT k, v FROM t;\n/* note */\n",
                           "SELECT k, v FROM t ; /* a */ -- b"]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("saved", COMMENT_AFTER_SEMICOLON)
def test_comment_after_trailing_semicolon_is_accepted(tiny_db: duckdb.DuckDBPyConnection, saved: str,
                                                      dialect: str) -> None:
    prepared = prepare_query(saved, dialect)
    assert prepared.sql_hash == prepare_query("SELECT k, v FROM t", dialect).sql_hash
    assert sorted(tiny_db.execute(prepared.point_lookup_sql("k"), ["a"]).fetchall()) == [("a", 1), ("a", 3)]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", ["SELECT 1; -- c\nSELECT 2", "SELECT 1; /* c */ DELETE FROM t",
                                 "SELECT 1; -- c\n; SELECT 2"])
def test_a_comment_after_the_semicolon_does_not_hide_a_second_statement(sql: str, dialect: str) -> None:
    with pytest.raises(InvalidQuery):
        prepare_query(sql, dialect)


def test_point_lookup_quotes_a_key_with_a_double_quote(tiny_db: duckdb.DuckDBPyConnection) -> None:
    lookup = prepare_query('SELECT k, "we""ird" FROM t').point_lookup_sql('we"ird')
    assert tiny_db.execute(lookup, ["y"]).fetchall() == [("b", "y")]


@pytest.mark.parametrize("index_key", [
    'k"; DROP TABLE t; --',
    'k" = k OR "k',
    'k") OR 1=1 OR ("k',
    'k"\n; DELETE FROM t; --',
])
def test_point_lookup_key_cannot_inject_sql(tiny_db: duckdb.DuckDBPyConnection, index_key: str) -> None:
    lookup = prepare_query("SELECT k, v FROM t").point_lookup_sql(index_key)
    with pytest.raises(duckdb.BinderException):
        tiny_db.execute(lookup, ["a"]).fetchall()
    assert tiny_db.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_point_lookup_for_postgres_uses_a_driver_placeholder() -> None:
    lookup = prepare_query("SELECT k FROM t;", "postgres").point_lookup_sql("k", "postgres")
    assert lookup.endswith('"k" = %s') and ";" not in lookup


# -- properties -------------------------------------------------------------------------------------

TOKENS = ["SELECT", "FROM", "WITH", "AS", "(", ")", ";", ",", "*", "1", "'x'", "t", "a", "INSERT", "INTO",
          "DELETE", "UPDATE", "SET", "RETURNING", "UNION", "WHERE", "=", "?", "$1", "--", "/*", "*/", "\n",
          "COPY", "ATTACH", "PRAGMA", "CALL", "VALUES", "LIMIT", "JOIN", "ON", '"', "::", "[", "]", "DROP",
          "CREATE", "TABLE", "INSTALL", "LOAD"]
SQLISH = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(TOKENS), max_size=20).map(" ".join),
    st.lists(st.sampled_from(TOKENS), max_size=20).map("".join),
)
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(sql=SQLISH, dialect=st.sampled_from(DIALECTS))
@example(sql="SELECT 1; DELETE FROM t", dialect="duckdb")
@example(sql="WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", dialect="postgres")
@example(sql="SELECT * INTO u FROM t", dialect="duckdb")
def test_any_text_is_refused_or_a_read_only_tree(sql: str, dialect: str) -> None:
    try:
        prepared = prepare_query(sql, dialect)
    except InvalidQuery:
        return
    assert isinstance(prepared.tree, (exp.Select, exp.SetOperation))
    forbidden = [type(n).__name__ for n in prepared.tree.walk() if isinstance(n, FORBIDDEN_NODES)]
    assert forbidden == []


_IDENT = st.from_regex(r"c_[a-z0-9_]{0,6}", fullmatch=True)
_GAP = st.sampled_from([" ", "  ", "\n", "\t", " \n  ", " /* note */ ", "/*x*/", " -- note\n", "\n-- c\n\t"])


def _random_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(ch.upper() if flip else ch for ch, flip in zip(word, flips))


@st.composite
def _select_variants(draw: st.DrawFn) -> tuple[str, str]:
    columns = draw(st.lists(_IDENT, min_size=1, max_size=5, unique=True))
    canonical = f"SELECT {', '.join(columns)} FROM t"
    parts = [_random_case(draw, "select"), draw(_GAP)]
    for i, column in enumerate(columns):
        if i:
            parts += [draw(st.sampled_from(["", " ", "\n"])), ",", draw(_GAP)]
        parts.append(_random_case(draw, column))
    parts += [draw(_GAP), _random_case(draw, "from"), draw(_GAP), _random_case(draw, "t")]
    parts.append(draw(st.sampled_from(["", ";", " ; ", "\n", " -- end", " -- end\n;", " /* end */", "/* end */;",
                                       "; -- end", ";\n/* end */\n", " ; /* end */ -- end"])))
    return canonical, "".join(parts)


@PROPERTY_SETTINGS
@given(variant=_select_variants(), dialect=st.sampled_from(DIALECTS))
def test_hash_is_stable_under_formatting(variant: tuple[str, str], dialect: str) -> None:
    canonical, formatted = variant
    assert prepare_query(formatted, dialect).sql_hash == prepare_query(canonical, dialect).sql_hash


# ---------------------------------------------------------------------- functions that reveal or change the server

SERVER_REVEALING = {
    "duckdb_databases": "SELECT * FROM duckdb_databases()",
    "current_setting": "SELECT current_setting('temp_directory') AS t",
    "current_setting quoted": 'SELECT "CURRENT_SETTING"(\'temp_directory\') AS t',
    "duckdb_settings": "SELECT name, value FROM duckdb_settings() WHERE name LIKE '%dir%'",
    "duckdb_extensions": "SELECT * FROM duckdb_extensions()",
    "duckdb_secrets in a subquery": "SELECT 1 AS a WHERE EXISTS (SELECT * FROM duckdb_secrets())",
    "qualified": "SELECT * FROM system.main.duckdb_settings()",
    "pragma view": "SELECT * FROM pragma_database_list",
    "pragma function": "SELECT * FROM pragma_table_info('users')",
    "which_secret": "SELECT * FROM which_secret('s3://bucket/x', 's3')",
    "force_checkpoint": "SELECT * FROM force_checkpoint()",
    "checkpoint": "SELECT * FROM checkpoint()",
    "query()": "SELECT * FROM query('SELECT * FROM duckdb_settings()')",
    "json_execute_serialized_sql": "SELECT * FROM json_execute_serialized_sql('{}')",
    "in a CTE": "WITH s AS (SELECT current_setting('home_directory') AS h) SELECT * FROM s",
    "pg_read_file": "SELECT pg_read_file('/etc/passwd') AS f",
    "pg_settings": "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", list(SERVER_REVEALING.values()), ids=list(SERVER_REVEALING))
def test_refuses_functions_that_reveal_or_change_the_server(sql: str, dialect: str) -> None:
    """Security 8: metadata and settings functions answer server paths; they are refused before running."""
    with pytest.raises(InvalidQuery, match="is not allowed in a query") as caught:
        prepare_query(sql, dialect)
    assert caught.value.status == 400 and caught.value.details["function"]


@pytest.mark.parametrize("sql", ["SELECT * FROM range(3) r", "SELECT * FROM generate_series(1, 3)",
                                 "SELECT unnest([1, 2]) AS u", "SELECT * FROM query", "SELECT version() AS v"])
def test_ordinary_table_functions_and_a_table_named_query_are_accepted(sql: str) -> None:
    prepare_query(sql)


def test_parse_errors_have_no_ansi_escapes() -> None:
    """Newcomer 5: sqlglot underlines the failing token with ANSI codes; clients get plain text."""
    with pytest.raises(InvalidQuery) as caught:
        prepare_query("SELECT * FROM (SELECT 1")
    assert "\x1b" not in caught.value.message and "\x1b" not in str(caught.value)
    assert "SELECT * FROM (SELECT 1" in caught.value.message
