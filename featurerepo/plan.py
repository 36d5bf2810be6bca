"""The plan: for each object the repo declares, what the catalog holds and what `apply` would do.

Nothing is saved: queries go to ``query/plan`` (the save's checks, the id, whether
it exists), ETLs to ``extract/plan`` (fetched and loaded from the commit, the id,
whether it exists), feature sets are compared with their newest version. Objects
are planned in dependency order (queries, ETLs, feature sets); an object whose
dependency failed is not checked. Errors about the service as a whole
(`service_client.is_fatal`) stop the plan by raising.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from common.errors import FeatureStoreError
from featurerepo.config import EtlSpec, FeatureSetSpec, QuerySpec, RepoConfig
from featurerepo.service_client import RepoClient, describe, is_fatal

CREATE, CHANGE, SAME, ERROR, BLOCKED = "+", "~", "=", "!", "?"
FIELDS = ("query_id", "etl_id", "features", "index_key", "description", "tags")


@dataclass
class Step:
    """One object of the repo: what `apply` would do to it (`action`) and why."""

    kind: str  # "query", "etl" or "feature_set"
    name: str
    action: str  # CREATE, CHANGE, SAME, ERROR or BLOCKED
    target: str | None = None  # the id (q_…, e_…) or feature-set version ("v2") the catalog will hold
    previous: str | None = None  # the id or version it follows, for a change
    note: str = ""
    spec: Any = None  # the QuerySpec, EtlSpec or FeatureSetSpec
    request: dict[str, Any] = field(default_factory=dict)  # what apply sends (ids resolved at apply time)
    new_version: bool = False  # feature sets: a new version is needed (else only the stage changes)

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
    steps = [*queries.values(), *etls.values(), *feature_sets]
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

    def query(self, spec: QuerySpec) -> Step:
        step = Step("query", spec.name, ERROR, spec=spec, request={"sql": spec.sql})
        try:
            planned = self.api.plan_query(spec.sql)
        except FeatureStoreError as error:
            return _failed(step, error)
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
        try:
            planned = self.api.plan_etl(query.target, step.request)
        except FeatureStoreError as error:
            return _failed(step, error)
        step.target = planned["etl_id"]
        source = planned.get("source") or {}
        at = f"{self.repo.relpath(spec.file)} at {(source.get('commit') or '?')[:12]}"
        if planned["exists"]:
            step.action = SAME
        elif spec.name in self.etl_names:
            why = "query changed" if query.action != SAME else "code changed"
            step.action, step.previous = CHANGE, self.etl_names[spec.name]
            step.note = f"new version ({why}): {at}, on query {query.name}"
        else:
            step.action, step.note = CREATE, f"{at}, on query {query.name}"
        if self.repo.git is not None:
            self._check_pushed(spec, planned)
        return step

    def feature_set(self, spec: FeatureSetSpec, etl: Step) -> Step:
        step = Step("feature_set", spec.name, ERROR, spec=spec)
        if etl.failed:
            return _blocked(step, f"etl {etl.name}")
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
        step.request = {"query": etl.spec.query}  # the rest of the request is the spec
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


def _blocked(step: Step, dependency: str) -> Step:
    step.action, step.note = BLOCKED, f"not checked: {dependency} has errors"
    return step


def _set_note(spec: FeatureSetSpec, etl: Step, features: list[str] | None) -> str:
    chosen = f"{len(features)} features" if features else "every column of the etl"
    stage = f", stage {spec.stage}" if spec.stage not in (None, "none") else ""
    return f"etl {etl.name} ({etl.target}), {chosen}, index {spec.index_key or 'the first query column'}{stage}"


def _field_change(name: str, old: Any, new: Any) -> str:
    if name in ("query_id", "etl_id", "index_key"):
        return f"{name} {old} → {new}"
    if name in ("features", "tags"):
        added = [item for item in new or [] if item not in (old or [])]
        removed = [item for item in old or [] if item not in (new or [])]
        parts = [f"+{item}" for item in added] + [f"-{item}" for item in removed]
        return f"{name} {' '.join(parts) if parts else 'reordered'}"
    return f"{name} changed"
