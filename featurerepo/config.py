"""`featurestore.toml`: what a feature repo declares, read and checked before the service is asked anything.

A feature repo is a folder (inside a git repository) holding::

    featurestore.toml      the service URL, ETLs and feature sets (this module's schema)
    sources/<name>.toml    one declared source per file, named by its stem unless it sets `name`
    queries/<name>.sql     one saved query per file, named by its stem
    etls/<name>.py         ETL scripts, each registered against a query named in the config

A source file holds the ``POST /v1.0/sources`` body as TOML: table, entity_keys,
event_time, created_time, hot_window_seconds, kind, description, tags, owner, and
``[[columns]]`` tables (name, type, nullable); without columns the source adopts the
warehouse table as it is. Declarations with columns are checked as the service checks them.

Every problem found (bad TOML, unknown keys, a missing file, an ETL naming an unknown
query, an invalid source, …) is collected, so one run lists them all: `RepoConfigError.problems`.
The API key is never read from the file (it would end up in git).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InvalidInput
from sources.definition import FIELDS, check_identifier, check_table_name, parse_source

CONFIG_FILE = "featurestore.toml"
DEFAULT_URL = "http://127.0.0.1:8080"
STAGES = ("production", "staging", "none")


class RepoConfigError(Exception):
    """The feature repo cannot be read; `problems` lists every reason, one sentence each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SourceSpec:
    name: str
    file: Path  # absolute
    declaration: dict[str, Any]  # the POST /v1.0/sources body; without "columns" it adopts the warehouse table

    @property
    def adopts(self) -> bool:
        return "columns" not in self.declaration


@dataclass(frozen=True)
class QuerySpec:
    name: str
    file: Path  # absolute
    sql: str


@dataclass(frozen=True)
class EtlSpec:
    name: str
    query: str  # the QuerySpec name
    file: Path  # absolute


@dataclass(frozen=True)
class FeatureSetSpec:
    name: str
    etl: str  # the EtlSpec name (its query is the set's query)
    features: list[str] | None  # None: every output column of the ETL
    index_key: str | None  # None: the query's first column
    description: str = ""
    tags: list[str] = field(default_factory=list)
    stage: str | None = None  # "production", "staging", "none" (clear) or None (leave as it is)


@dataclass(frozen=True)
class GitRemote:
    """Register ETLs from this clonable URL at `ref` instead of from the local path."""

    url: str
    ref: str | None  # None: the remote's HEAD


@dataclass(frozen=True)
class RepoConfig:
    root: Path  # the feature repo folder, absolute
    git_root: Path | None  # the enclosing git work tree (load_repo requires one)
    url: str
    git: GitRemote | None
    queries: list[QuerySpec]
    etls: list[EtlSpec]
    feature_sets: list[FeatureSetSpec]
    warnings: list[str]
    sources: list[SourceSpec] = field(default_factory=list)

    def relpath(self, path: Path) -> str:
        """`path` relative to the feature repo folder, for messages."""
        return path.relative_to(self.root).as_posix()

    def git_path(self, path: Path) -> str:
        """`path` relative to the git work tree: the `path` of a structured `etl` location."""
        return path.relative_to(self.git_root or self.root).as_posix()


_KEYS = {
    "": {"service", "git", "queries", "etls", "feature_sets"},
    "service": {"url"},
    "git": {"url", "ref"},
    "queries": {"file"},
    "etls": {"query", "file"},
    "feature_sets": {"etl", "features", "index_key", "description", "tags", "stage"},
}


def load_repo(repo_dir: str | Path, url: str | None = None, git_ref: str | None = None) -> RepoConfig:
    """Read and check the feature repo in `repo_dir`; `url` and `git_ref` override the file's."""
    root = Path(repo_dir).expanduser().resolve()
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise RepoConfigError([f"{config_path} not found: a feature repo folder holds {CONFIG_FILE}"])
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RepoConfigError([f"{CONFIG_FILE}: {exc}"]) from None
    reader = _Reader(root)
    reader.keys(data, "", CONFIG_FILE)
    service = reader.table(data, "service")
    if "api_key" in service:
        reader.problems.append("[service] api_key: the API key is never read from the file (it would be "
                               "committed to git); use --api-key or FEATURESTORE_API_KEY")
    sources = reader.sources()
    git_table = reader.table(data, "git")
    query_table, etl_table = reader.table(data, "queries"), reader.table(data, "etls")
    queries = reader.queries(query_table)
    # References are checked against what is declared (a declared but broken object has its own problem).
    etls = reader.etls(etl_table, reader.query_names)
    feature_sets = reader.feature_sets(reader.table(data, "feature_sets"), set(etl_table))
    remote = None
    if git_table:
        remote_url = reader.string(git_table, "url", "[git]", required=True)
        ref = git_ref or reader.string(git_table, "ref", "[git]")
        remote = GitRemote(remote_url, ref) if remote_url else None
    elif git_ref:
        reader.problems.append("--git-ref needs a [git] url in featurestore.toml")
    url = url or reader.string(service, "url", "[service]") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        reader.problems.append(f"the service URL {url!r} must start with http:// or https://")
    git_root = _git_root(root)
    if git_root is None:
        reader.problems.append(f"{root} is not inside a git repository: ETLs are registered from commits, "
                               "so the feature repo must be in git")
    if reader.problems:
        raise RepoConfigError(reader.problems)
    return RepoConfig(root=root, git_root=git_root, url=url, git=remote, queries=queries, etls=etls,
                      feature_sets=feature_sets, warnings=reader.warnings, sources=sources)


class _Reader:
    """Checks tables of the parsed TOML, collecting problems instead of stopping at the first."""

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.query_names: set[str] = set()  # declared, valid or not

    def keys(self, table: dict[str, Any], kind: str, where: str) -> None:
        unknown = sorted(set(table) - _KEYS[kind] - ({"api_key"} if kind == "service" else set()))
        if unknown:
            self.problems.append(f"{where}: unknown key(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(_KEYS[kind]))})")

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problems.append(f"{key} must be a table ([{key}] or [{key}.<name>])")
            return {}
        if key in ("service", "git"):
            self.keys(value, key, f"[{key}]")
        return value

    def entries(self, table: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for name, entry in table.items():
            if not isinstance(entry, dict):
                self.problems.append(f"{kind}.{name} must be a table ([{kind}.{name}])")
                continue
            self.keys(entry, kind, f"[{kind}.{name}]")
            found.append((name, entry))
        return found

    def string(self, entry: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
        value = entry.get(key)
        if value is None:
            if required:
                self.problems.append(f"{where}: {key} is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problems.append(f"{where}: {key} must be a non-empty string")
            return None
        return value

    def strings(self, entry: dict[str, Any], key: str, where: str) -> list[str] | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.problems.append(f"{where}: {key} must be a list of non-empty strings")
            return None
        return value

    def file(self, entry: dict[str, Any], where: str, default: str) -> Path | None:
        relative = self.string(entry, "file", where) or default
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            self.problems.append(f"{where}: file {relative!r} is outside the feature repo")
            return None
        if not path.is_file():
            self.problems.append(f"{where}: {relative} does not exist")
            return None
        return path

    def sources(self) -> list[SourceSpec]:
        """Every sources/*.toml: one declaration each, named by the file's stem unless it sets `name`; those
        with columns first."""
        specs: dict[str, SourceSpec] = {}
        for path in sorted((self.root / "sources").glob("*.toml")):
            where = f"sources/{path.name}"
            try:
                declaration = {"name": path.stem, **tomllib.loads(path.read_text(encoding="utf-8"))}
                _check_source(declaration)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                self.problems.append(f"{where}: {exc}")
                continue
            except InvalidInput as error:
                self.problems.append(f"{where}: {error.message}")
                continue
            name = declaration["name"]
            if name in specs:
                self.problems.append(f"{where}: source {name!r} is also declared in sources/{specs[name].file.name}")
                continue
            specs[name] = SourceSpec(name, path, declaration)
        return sorted(specs.values(), key=lambda spec: spec.adopts)  # one may adopt the table another declares

    def queries(self, table: dict[str, Any]) -> list[QuerySpec]:
        """Every queries/*.sql, named by its stem unless a [queries.<name>] entry names its file."""
        entries = dict(self.entries(table, "queries"))
        named = {(self.root / entry["file"]).resolve() for entry in entries.values()
                 if isinstance(entry.get("file"), str)}
        found = {path.stem for path in (self.root / "queries").glob("*.sql") if path.resolve() not in named}
        names = sorted(found | set(entries))
        self.query_names = set(names)
        specs = []
        for name in names:
            path = self.file(entries.get(name, {}), f"[queries.{name}]", f"queries/{name}.sql")
            if path is None:
                continue
            sql = path.read_text(encoding="utf-8")
            if not sql.strip():
                self.problems.append(f"{path.relative_to(self.root).as_posix()} is empty")
                continue
            specs.append(QuerySpec(name, path, sql))
        return specs

    def etls(self, table: dict[str, Any], queries: set[str]) -> list[EtlSpec]:
        specs = []
        for name, entry in self.entries(table, "etls"):
            where = f"[etls.{name}]"
            query = self.string(entry, "query", where, required=True)
            if query is not None and query not in queries:
                self.problems.append(f"{where}: query {query!r} is not defined (queries/{query}.sql or "
                                     f"[queries.{query}] with a file)")
                query = None
            path = self.file(entry, where, f"etls/{name}.py")
            if path is not None and path.suffix != ".py":
                self.problems.append(f"{where}: {path.name} is not a .py file")
                path = None
            if query is not None and path is not None:
                specs.append(EtlSpec(name, query, path))
        declared = {spec.file for spec in specs}
        for path in sorted((self.root / "etls").glob("*.py")):
            if path not in declared and path.stem not in table and path.name != "__init__.py":
                self.warnings.append(f"etls/{path.name} is not declared in {CONFIG_FILE} ([etls.{path.stem}] "
                                     "query = …): not registered")
        return specs

    def feature_sets(self, table: dict[str, Any], etls: set[str]) -> list[FeatureSetSpec]:
        specs = []
        for name, entry in self.entries(table, "feature_sets"):
            where = f"[feature_sets.{name}]"
            problems = len(self.problems)
            etl = self.string(entry, "etl", where, required=True)
            if etl is not None and etl not in etls:
                self.problems.append(f"{where}: etl {etl!r} is not defined ([etls.{etl}])")
            features = self.strings(entry, "features", where)
            if features is not None and (not features or len(set(features)) != len(features)):
                self.problems.append(f"{where}: features must be distinct, and not empty (leave it out for "
                                     "every column of the ETL)")
            stage = entry.get("stage")
            if stage is not None and stage not in STAGES:
                self.problems.append(f"{where}: stage must be one of {', '.join(STAGES)}")
            description = entry.get("description", "")
            if not isinstance(description, str):
                self.problems.append(f"{where}: description must be a string")
            tags = self.strings(entry, "tags", where)
            index_key = self.string(entry, "index_key", where)
            if len(self.problems) == problems and etl in etls:
                specs.append(FeatureSetSpec(name, etl, features, index_key, description, tags or [], stage))
        return specs


def _check_source(declaration: dict[str, Any]) -> None:
    """InvalidInput for what the service would refuse, as far as it can be known here: all of it for a source
    declared with columns; the names, keys and event time of one adopting a warehouse table (whose columns are
    read there)."""
    unknown = sorted(set(declaration) - FIELDS)
    if unknown:
        raise InvalidInput(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(FIELDS))})")
    if "columns" in declaration:
        parse_source(declaration, created_by="", created_at="")
        return
    check_identifier(declaration["name"], "name")
    check_table_name(declaration.get("table") or declaration["name"])
    keys, event_time = declaration.get("entity_keys"), declaration.get("event_time")
    if not (isinstance(keys, list) and keys and all(isinstance(key, str) for key in keys)
            and isinstance(event_time, str)):
        raise InvalidInput("entity_keys (a list of column names) and event_time (a column name) are required")


def _git_root(path: Path) -> Path | None:
    """The nearest folder at or above `path` holding `.git` (a directory, or a file for worktrees)."""
    for folder in (path, *path.parents):
        if (folder / ".git").exists():
            return folder
    return None
