"""`python -m app plan|apply [REPO_DIR]`: the feature repo's commands (arguments: app/cli.py).

Output: one line per object on stdout, ``<symbol> <kind> <name> <ids> <note>``, then a
summary; warnings, progress and errors on stderr. Exit status: 0 done, 1 on any error
(the repo, an object the service refuses, the service unreachable), and with
``plan --detailed-exitcode`` 2 when the plan has changes.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Callable, Sequence, TextIO, TypeVar

if TYPE_CHECKING:  # the client brings pandas: imported when a command runs, not when app/cli.py parses
    from common.errors import FeatureStoreError
    from featurerepo.config import RepoConfig
    from featurerepo.plan import Step
    from featurerepo.service_client import RepoClient

T = TypeVar("T")
EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def run_plan(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`plan`: print what apply would do; see the module docstring for the exit status."""
    from featurerepo.plan import make_plan

    out, err = out or sys.stdout, err or sys.stderr
    session = _Session(args, out, err)
    if session.repo is None:
        return EXIT_ERROR
    with session.client() as api:
        plan = session.guard(lambda: make_plan(session.repo, api))
    if plan is None:
        return EXIT_ERROR
    session.warn(plan.warnings)
    for step in plan.steps:
        session.line(step, step.note, plan.steps)
    if not plan.ok:
        print(f"Plan failed: {plan.summary()}.", file=out)
        print("error: the plan has errors (lines marked !)", file=err)
        return EXIT_ERROR
    print(f"Plan: {plan.summary()}.", file=out)
    return EXIT_CHANGES if args.detailed_exitcode and plan.changes else EXIT_OK


def run_apply(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`apply`: plan, then carry out the changes, printing each object as it is done."""
    from featurerepo.apply import ApplyFailed, apply_plan
    from featurerepo.plan import CHANGE, CREATE, SAME, make_plan
    from featurerepo.service_client import describe, is_fatal

    out, err = out or sys.stdout, err or sys.stderr
    session = _Session(args, out, err)
    if session.repo is None:
        return EXIT_ERROR
    with session.client() as api:
        session.progress(f"planning {session.repo.root} against {api.url}…")
        plan = session.guard(lambda: make_plan(session.repo, api))
        if plan is None:
            return EXIT_ERROR
        session.warn(plan.warnings)
        if not plan.ok:
            for step in plan.steps:
                session.line(step, step.note, plan.steps)
            print(f"Apply refused, nothing changed: {plan.summary()}.", file=out)
            print("error: the plan has errors (lines marked !)", file=err)
            return EXIT_ERROR
        verbs = {"source": "declared", "query": "saved", "etl": "registered", "feature_set": "version created"}

        def report(step: Step) -> None:
            done = "unchanged" if step.action == SAME else (
                "stage set" if step.kind == "feature_set" and not step.new_version else verbs[step.kind])
            session.line(step, f"{done}{'; ' + step.note if step.note else ''}", plan.steps)

        try:
            apply_plan(plan, api, report, session.progress)
        except ApplyFailed as failed:
            session.line(failed.step, f"failed: {describe(failed.error)}", plan.steps, action="!")
            print(f"Apply stopped: {len(failed.done)} of {len(plan.steps)} objects done before the error.",
                  file=out)
            if is_fatal(failed.error):
                session.service_error(failed.error)
            else:
                print(f"error: {failed}", file=err)
            return EXIT_ERROR
    print(f"Apply complete: {plan.count(CREATE)} created, {plan.count(CHANGE)} changed, "
          f"{plan.count(SAME)} unchanged.", file=out)
    return EXIT_OK


class _Session:
    """The repo, the client and the printing one command run shares."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO):
        from featurerepo.config import RepoConfigError, load_repo

        self.args, self.out, self.err = args, out, err
        self.repo: RepoConfig | None = None
        try:
            self.repo = load_repo(args.repo_dir, args.url or os.environ.get("FEATURESTORE_URL") or None,
                                  args.git_ref)
        except RepoConfigError as error:
            for problem in error.problems:
                print(f"error: {problem}", file=err)

    def client(self) -> RepoClient:
        from featurerepo.service_client import RepoClient

        api_key = self.args.api_key or os.environ.get("FEATURESTORE_API_KEY") or None
        return RepoClient(self.repo.url, api_key=api_key, timeout=self.args.timeout, retries=2, backoff=0.2)

    def guard(self, work: Callable[[], T]) -> T | None:
        """`work()`, or None after printing the service's error (plans catch the errors about one object:
        what reaches here is about the service as a whole)."""
        from common.errors import FeatureStoreError

        try:
            return work()
        except FeatureStoreError as error:
            self.service_error(error)
            return None

    def service_error(self, error: FeatureStoreError) -> None:
        from featurerepo.service_client import describe

        if error.code == "service_timeout":
            print(f"error: the feature store at {self.repo.url} did not answer within {self.args.timeout} s "
                  f"(service_timeout; see --timeout)\n  {error.message}", file=self.err)
        elif error.code == "service_unreachable":
            print(f"error: cannot reach the feature store at {self.repo.url} (service_unreachable); is it "
                  "running, and is the URL right (--url, $FEATURESTORE_URL or [service] url)?\n"
                  f"  {error.message}", file=self.err)
        else:
            hint = " (send a key with --api-key or $FEATURESTORE_API_KEY)" if error.code == "unauthorized" else ""
            print(f"error: the feature store at {self.repo.url} answered {describe(error)}{hint}", file=self.err)

    def line(self, step: Step, note: str, steps: Sequence[Step], action: str | None = None) -> None:
        """``<symbol> <kind> <name> <ids> <note>``, columns aligned over `steps`."""
        kind_width = max(len(s.kind) for s in steps)
        name_width = max(len(s.name) for s in steps)
        ids_width = max(len(s.ids) for s in steps)
        print(f"{action or step.action} {step.kind:<{kind_width}}  {step.name:<{name_width}}  "
              f"{step.ids:<{ids_width}}  {note}".rstrip(), file=self.out, flush=True)

    def warn(self, warnings: list[str]) -> None:
        for warning in warnings:
            print(f"warning: {warning}", file=self.err)

    def progress(self, message: str) -> None:
        print(message, file=self.err, flush=True)
