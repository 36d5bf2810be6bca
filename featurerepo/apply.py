"""Apply a plan: declare sources, save the new queries, register the new ETLs, create feature-set
versions, set stages.

Only steps the plan marks `+` or `~` are sent, in the plan's order (sources first: queries
read them), so applying an applied repo sends nothing. A deferred step is checked by the
service only now, once what it reads is declared. Ids are taken from what the service
answers (an ETL committed again between plan and apply gets its new id everywhere after
it). The first error stops the run: later steps may depend on the failed one, and what
was done before it is saved and idempotent, so running `apply` again continues.
"""
from __future__ import annotations

import time
from typing import Callable

from common.errors import FeatureStoreError
from featurerepo.plan import CHANGE, CREATE, SAME, Plan, Step
from featurerepo.service_client import RepoClient, describe


class ApplyFailed(Exception):
    """A step failed; `step` is the one, `error` the service's error, `done` the steps applied before it."""

    def __init__(self, step: Step, error: FeatureStoreError, done: list[Step]):
        super().__init__(f"{step.kind} {step.name}: {describe(error)}")
        self.step, self.error, self.done = step, error, done


def apply_plan(plan: Plan, api: RepoClient, report: Callable[[Step], None],
               progress: Callable[[str], None]) -> list[Step]:
    """Carry out `plan` (which must be ok); `report` each step once done (unchanged ones too), `progress`
    before slow work. Returns the steps as applied, their targets being what the service answered."""
    query_ids = {step.name: step.target for step in plan.steps if step.kind == "query"}
    etl_ids = {step.name: step.target for step in plan.steps if step.kind == "etl"}
    done: list[Step] = []
    pending = [step for step in plan.steps if step.action in (CREATE, CHANGE)]
    for step in plan.steps:
        if step.action == SAME:
            report(step)
            done.append(step)
            continue
        position = f"[{pending.index(step) + 1}/{len(pending)}]"
        started = time.monotonic()
        try:
            if step.kind == "source":
                progress(f"{position} declaring source {step.name}…")
                step.target = f"v{api.declare_source(**step.request)['version']}"
            elif step.kind == "query":
                progress(f"{position} saving query {step.name} (runs it on the warehouse)…")
                result = api.query_train(step.request["sql"], name=step.name, save=True, include_data=False)
                step.target = query_ids[step.name] = result.query_id
            elif step.kind == "etl":
                progress(f"{position} registering etl {step.name}: fetching, fitting and running it on the "
                         f"warehouse…")
                location = step.request.get("etl") or {}
                result = api.extract_train(query_ids[step.spec.query], step.request.get("etl_path"),
                                           repo=location.get("repo"), ref=location.get("ref"),
                                           path=location.get("path"), name=step.name, save=True,
                                           include_data=False)
                step.target = etl_ids[step.name] = result.etl_id
            else:
                progress(f"{position} feature set {step.name}: "
                         f"{'creating the version' if step.new_version else 'setting the stage'}…")
                _apply_feature_set(step, api, query_ids, etl_ids)
        except FeatureStoreError as error:
            raise ApplyFailed(step, error, done) from error
        progress(f"{position} done in {time.monotonic() - started:.1f} s")
        report(step)
        done.append(step)
    return done


def _apply_feature_set(step: Step, api: RepoClient, query_ids: dict[str, str], etl_ids: dict[str, str]) -> None:
    """Create the set's next version (or get its newest, when equal), then set the stage the repo asks for."""
    spec = step.spec
    version = int((step.target or "v0")[1:])
    if step.new_version:
        record = api.create_feature_set(spec.name, query_ids[step.request["query"]], etl_ids[spec.etl],
                                        features=spec.features, index_key=spec.index_key,
                                        description=spec.description, tags=spec.tags)
        version = record["version"]
        current_stage = record.get("stage")
    else:
        current_stage = next((v.get("stage") for v in api.feature_set_versions(spec.name)
                              if v["version"] == version), None)
    step.target = f"v{version}"
    wanted = None if spec.stage == "none" else spec.stage
    if spec.stage is not None and current_stage != wanted:
        api.set_stage(spec.name, version, wanted)
