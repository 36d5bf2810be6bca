"""The plan: for each object the repo declares, what the catalog holds and what `apply` would do.

Nothing is saved: sources are compared with their newest version (``GET sources/<name>``)
as the service compares a declaration (`sources.definition`: the same definition, a
compatible next version, or the 409 an incompatible one gets), queries go to
``query/plan`` (the save's checks, the id, whether it exists), ETLs to ``extract/plan``
(fetched and loaded from the commit, the id, whether it exists), feature sets are
compared with their newest version. Objects are planned in dependency order (sources,
queries, ETLs, feature sets); an object whose dependency failed is not checked. A query
reading only sources the plan creates cannot be checked before they are declared: it
is planned `deferred` (checked when apply saves it), and so are the ETLs and feature
sets on it. Errors about the service as a whole (`service_client.is_fatal`) stop the
plan by raising.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from catalog.base import SourceRecord
from common.errors import FeatureStoreError, InvalidInput, NotFound, SourceIncompatible
from featurerepo.config import EtlSpec, FeatureSetSpec, QuerySpec, RepoConfig, SourceSpec
from featurerepo.service_client import RepoClient, describe, is_fatal
from sources.definition import parse_source, source_diff

CREATE, CHANGE, SAME, ERROR, BLOCKED = "+", "~", "=", "!", "?"
FIELDS = ("query_id", "etl_id", "features", "index_key", "description", "tags")
SOURCE_FIELDS = ("hot_window_seconds", "description", "tags", "owner")  # compatible changes besides columns
UNSAVED_QUERY = "q_" + "0" * 16  # an ETL on a query not saved yet is planned on this id: its code is checked


@dataclass
class Step:
    """One object of the repo: what `apply` would do to it (`action`) and why."""

    kind: str  # "source", "query", "etl" or "feature_set"
    name: str
    action: str  # CREATE, CHANGE, SAME, ERROR or BLOCKED
    target: str | None = None  # the id (q_…, e_…) or source or feature-set version ("v2") the catalog will hold
    previous: str | None = None  # the id or version it follows, for a change
    note: str = ""
    spec: Any = None  # the SourceSpec, QuerySpec, EtlSpec or FeatureSetSpec
    request: dict[str, Any] = field(default_factory=dict)  # what apply sends (ids resolved at apply time)
    new_version: bool = False  # feature sets: a new version is needed (else only the stage changes)
    deferred: bool = False  # reads sources the plan creates: checked (and its id known) only at apply

    @property
    def failed(self) -> bool:
        return self.action in (ERROR, BLOCKED)

    @property
    def ids(self) -> str:
        if self.previous and self.target and self.previous != self.target:
            return f"{self.previous} → {self.target}"
        return self.target or ""


@dataclass
class Plan:
    steps: list[Step]
    warnings: list[str]

    def count(self, action: str) -> int:
        return sum(step.action == action for step in self.steps)

    @property
    def ok(self) -> bool:
        return not any(step.failed for step in self.steps)

    @property
    def changes(self) -> bool:
        return any(step.action in (CREATE, CHANGE) for step in self.steps)

    def summary(self) -> str:
        text = f"{self.count(CREATE)} to create, {self.count(CHANGE)} to change, {self.count(SAME)} unchanged"
        if not self.ok:
            text += f"; {self.count(ERROR)} error(s)"
            if self.count(BLOCKED):
                text += f", {self.count(BLOCKED)} not checked"
        return text


def make_plan(repo: RepoConfig, api: RepoClient) -> Plan:
    """Ask the service about every object of `repo`; raises only on errors about the service itself."""
    planner = _Planner(repo, api)
    sources = [planner.source(spec) for spec in repo.sources]
    planner.new_sources = {step.name for step in sources if step.action == CREATE}
    queries = {spec.name: planner.query(spec) for spec in repo.queries}
    seen: dict[str, str] = {}
    for step in queries.values():
        if step.target in seen:
            planner.warnings.append(f"queries {seen[step.target]} and {step.name} are the same query "
                                    f"({step.target}): the catalog keeps the name it was saved under first")
        elif step.target:
            seen[step.target] = step.name
    etls = {spec.name: planner.etl(spec, queries[spec.query]) for spec in repo.etls}
    feature_sets = [planner.feature_set(spec, etls[spec.etl]) for spec in repo.feature_sets]
    steps = [*sources, *queries.values(), *etls.values(), *feature_sets]
    return Plan(steps, list(repo.warnings) + planner.warnings)


def etl_location(repo: RepoConfig, spec: EtlSpec) -> dict[str, Any]:
    """The ``etl_path`` (a local file, read at its commit) or ``etl`` {repo, ref, path} body of an ETL."""
    if repo.git is None:
        return {"etl_path": str(spec.file)}
    location = {"repo": repo.git.url, "path": repo.git_path(spec.file)}
    return {"etl": {**location, "ref": repo.git.ref} if repo.git.ref else location}


class _Planner:
    def __init__(self, repo: RepoConfig, api: RepoClient):
        self.repo, self.api = repo, api
        self.warnings: list[str] = []
        # The newest saved id of each name: a declared object whose id is new but whose name is known is a
        # change (a new query or ETL version), not a creation.
        self.query_names: dict[str, str] = {}
        for record in api.all_queries():
            self.query_names.setdefault(record["name"], record["query_id"])
        self.etl_names: dict[str, str] = {}
        for record in api.all_etls():
            self.etl_names.setdefault(record["name"], record["etl_id"])
        self.query_ids: dict[str, str] = {}  # query name → planned id
        self.query_schemas: dict[str, list[dict[str, str]]] = {}  # query id → its output columns
        self.etl_columns: dict[str, list[str]] = {}  # registered ETL id → its output columns
        self.new_sources: set[str] = set()  # sources the plan creates

    def source(self, spec: SourceSpec) -> Step:
        step = Step("source", spec.name, ERROR, spec=spec, request=spec.declaration)
        try:
            described = self.api.source(spec.name)
        except NotFound:
            table = spec.declaration.get("table") or spec.name
            step.action, step.target = CREATE, "v1"
            step.note = (f"adopts warehouse table {table} (its columns are read at apply)" if spec.adopts
                         else f"{len(spec.declaration['columns'])} columns, from {self.repo.relpath(spec.file)}")
            return step
        except FeatureStoreError as error:
            return _failed(step, error)
        current = SourceRecord.from_dict(described)
        # Adopting reads the warehouse table, which holds the current version's columns (types only).
        columns = [{"name": c["name"], "type": c["type"]} for c in current.columns]
        try:
            declared = parse_source({"columns": columns, **spec.declaration}, created_by="", created_at="")
        except InvalidInput as error:
            return _failed(step, error)
        step.target = f"v{current.version}"
        if declared.definition() == current.definition():
            step.action = SAME
            return step
        diff = source_diff(current, declared)
        if not diff["compatible"]:  # what the service would answer (409), with what makes it so
            readers = described.get("dependent_queries") or []
            return _failed(step, SourceIncompatible(
                f"source {spec.name!r} exists ({step.target}) and {self.repo.relpath(spec.file)} is not a "
                f"compatible change ({_incompatible(diff)}); declare it under a new name"
                + (f"; saved queries reading it: {', '.join(readers)}" if readers else ""),
                {"name": spec.name, "version": current.version, "diff": diff, "dependent_queries": readers}))
        step.action, step.previous, step.target = CHANGE, step.target, f"v{current.version + 1}"
        step.note = "new version: " + _source_changes(current, declared, diff)
        return step

    def query(self, spec: QuerySpec) -> Step:
        step = Step("query", spec.name, ERROR, spec=spec, request={"sql": spec.sql})
        try:
            planned = self.api.plan_query(spec.sql)
        except FeatureStoreError as error:
            undeclared = set(error.details.get("undeclared_tables") or ())
            if not undeclared or not undeclared <= self.new_sources:
                return _failed(step, error)
            return _deferred(step, self.query_names.get(spec.name), f"from {self.repo.relpath(spec.file)}, checked "
                             f"once {', '.join(sorted(undeclared))} are declared")
        step.target = self.query_ids[spec.name] = planned["query_id"]
        self.query_schemas[step.target] = planned["schema"]
        where = self.repo.relpath(spec.file)
        if planned["exists"]:
            step.action = SAME
        elif spec.name in self.query_names:
            step.action, step.previous, step.note = CHANGE, self.query_names[spec.name], f"new SQL in {where}"
        else:
            step.action, step.note = CREATE, f"from {where}"
        return step

    def etl(self, spec: EtlSpec, query: Step) -> Step:
        step = Step("etl", spec.name, ERROR, spec=spec, request=etl_location(self.repo, spec))
        if query.failed:
            return _blocked(step, f"query {query.name}")
        try:  # on a deferred query: its code is checked, its id is known once the query is saved
            planned = self.api.plan_etl(UNSAVED_QUERY if query.deferred else query.target, step.request)
        except FeatureStoreError as error:
            return _failed(step, error)
        if self.repo.git is not None:
            self._check_pushed(spec, planned)
        source = planned.get("source") or {}
        at = f"{self.repo.relpath(spec.file)} at {(source.get('commit') or '?')[:12]}"
        if query.deferred:
            return _deferred(step, self.etl_names.get(spec.name), f"{at}, on query {query.name} once it is saved")
        step.target = planned["etl_id"]
        if planned["exists"]:
            step.action = SAME
        elif spec.name in self.etl_names:
            why = "query changed" if query.action != SAME else "code changed"
            step.action, step.previous = CHANGE, self.etl_names[spec.name]
            step.note = f"new version ({why}): {at}, on query {query.name}"
        else:
            step.action, step.note = CREATE, f"{at}, on query {query.name}"
        return step

    def feature_set(self, spec: FeatureSetSpec, etl: Step) -> Step:
        step = Step("feature_set", spec.name, ERROR, spec=spec)
        if etl.failed:
            return _blocked(step, f"etl {etl.name}")
        step.request = {"query": etl.spec.query}  # the rest of the request is the spec
        if etl.deferred:
            try:
                newest = self.api.newest_feature_set(spec.name)
            except FeatureStoreError as error:
                return _failed(step, error)
            step.new_version = True  # or the newest version, when the service finds it equal
            return _deferred(step, newest and f"v{newest['version']}", f"on etl {etl.name}, checked when created")
        query_id = self.query_ids[etl.spec.query]
        schema = self.query_schemas[query_id]
        try:
            features = spec.features or (self._etl_columns(etl.target) if etl.action == SAME else None)
            newest = self.api.newest_feature_set(spec.name)
        except FeatureStoreError as error:
            return _failed(step, error)
        index_key = spec.index_key or schema[0]["name"]
        problem = self._problem(spec, etl, index_key, [c["name"] for c in schema], features)
        if problem:
            step.note = f"invalid_input: {problem}"
            return step
        wanted = {"query_id": query_id, "etl_id": etl.target, "features": features, "index_key": index_key,
                  "description": spec.description, "tags": spec.tags}
        if newest is None:
            step.action, step.target, step.new_version = CREATE, "v1", True
            step.note = _set_note(spec, etl, features)
            return step
        current = f"v{newest['version']}"
        changed = [name for name in FIELDS if wanted[name] != newest.get(name)]
        if changed:
            step.action, step.previous, step.target, step.new_version = (
                CHANGE, current, f"v{newest['version'] + 1}", True)
            step.note = "new version: " + ", ".join(_field_change(name, newest.get(name), wanted[name])
                                                    for name in changed)
            if spec.stage not in (None, "none"):
                step.note += f"; stage {spec.stage}"
            return step
        step.target = current
        stage = None if spec.stage == "none" else spec.stage
        if spec.stage is not None and newest.get("stage") != stage:
            step.action = CHANGE
            step.note = f"stage {newest.get('stage') or 'none'} → {spec.stage}"
        else:
            step.action = SAME
        return step

    def _etl_columns(self, etl_id: str) -> list[str]:
        if etl_id not in self.etl_columns:
            self.etl_columns[etl_id] = [column["name"] for column in self.api.etl(etl_id).get("schema") or []]
        return self.etl_columns[etl_id]

    def _problem(self, spec: FeatureSetSpec, etl: Step, index_key: str, query_columns: list[str],
                 features: list[str] | None) -> str:
        """What the service would refuse, when it can be known before the ETL is registered."""
        if index_key not in query_columns:
            return f"index_key {index_key!r} is not an output column of query {etl.spec.query}: " \
                   f"{', '.join(query_columns)}"
        if spec.features and etl.action == SAME:
            columns = self._etl_columns(etl.target)
            unknown = [name for name in spec.features if name not in columns]
            if unknown:
                return f"features {', '.join(unknown)} are not output columns of etl {etl.name}: " \
                       f"{', '.join(columns)}"
        return ""

    def _check_pushed(self, spec: EtlSpec, planned: dict[str, Any]) -> None:
        try:  # the service's code_sha256: of the UTF-8 text, a leading BOM dropped
            local = hashlib.sha256(spec.file.read_bytes().decode("utf-8-sig").encode("utf-8")).hexdigest()
        except UnicodeDecodeError:
            return
        if local != planned.get("code_sha256"):
            where = f"{self.repo.git.url}@{self.repo.git.ref or 'HEAD'}"
            self.warnings.append(f"{self.repo.relpath(spec.file)} differs from {where}: the plan shows the "
                                 "remote's version (push your commits, or pass --git-ref)")


def _failed(step: Step, error: FeatureStoreError) -> Step:
    if is_fatal(error):
        raise error
    step.action, step.note = ERROR, describe(error)
    return step


def _deferred(step: Step, previous: str | None, note: str) -> Step:
    """`step` planned without the service's checks, which wait for the sources it reads (see the module)."""
    step.action, step.previous, step.note, step.deferred = CHANGE if previous else CREATE, previous, note, True
    return step


def _blocked(step: Step, dependency: str) -> Step:
    step.action, step.note = BLOCKED, f"not checked: {dependency} has errors"
    return step


def _set_note(spec: FeatureSetSpec, etl: Step, features: list[str] | None) -> str:
    chosen = f"{len(features)} features" if features else "every column of the etl"
    stage = f", stage {spec.stage}" if spec.stage not in (None, "none") else ""
    return f"etl {etl.name} ({etl.target}), {chosen}, index {spec.index_key or 'the first query column'}{stage}"


def _source_changes(old: SourceRecord, new: SourceRecord, diff: dict[str, Any]) -> str:
    """A compatible source change in a few words: ``+column, column nullable, hot_window_seconds 60 → 120``."""
    required = {c["name"] for c in old.columns if not c.get("nullable", True)}
    changes = [f"+{name}" for name in diff["added"]]
    changes += [f"{c['name']} nullable" for c in new.columns if c["name"] in required and c["nullable"]]
    for name in SOURCE_FIELDS:
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            changes.append(f"{name} {before} → {after or 'everything'}" if name == "hot_window_seconds"
                           else _field_change(name, before, after))
    return ", ".join(changes)


def _incompatible(diff: dict[str, Any]) -> str:
    """What makes a source change incompatible, from `source_diff`."""
    parts = [f"{key} {', '.join(map(str, diff[key]))}" for key in ("removed", "required_added", "made_required")
             if diff[key]]
    parts += [f"{c['column']} {c['from']} → {c['to']}" for c in diff["type_changed"]]
    parts += [f"{name} {change['from']} → {change['to']}" for name, change in diff["changed"].items()]
    return "; ".join(parts)


def _field_change(name: str, old: Any, new: Any) -> str:
    if name in ("query_id", "etl_id", "index_key"):
        return f"{name} {old} → {new}"
    if name in ("features", "tags"):
        added = [item for item in new or [] if item not in (old or [])]
        removed = [item for item in old or [] if item not in (new or [])]
        parts = [f"+{item}" for item in added] + [f"-{item}" for item in removed]
        return f"{name} {' '.join(parts) if parts else 'reordered'}"
    return f"{name} changed"
