"""The service calls a plan needs, over the Python client.

`RepoClient` is the client's `FeatureStore` plus whole-catalog listings and the
newest version of a feature set with the stages of all its versions.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from client import FeatureStore, NotFound
from client.errors import ServiceUnreachable, UnexpectedResponse
from common.errors import BackendUnavailable, FeatureStoreError

PAGE = 500  # the largest page the service gives


class RepoClient(FeatureStore):
    """A `FeatureStore` with the whole-catalog reads a plan needs."""

    def all_queries(self) -> Iterator[dict[str, Any]]:
        """Every saved query, newest first."""
        return self._every(self.queries)

    def all_etls(self) -> Iterator[dict[str, Any]]:
        """Every registered ETL (without code), newest first."""
        return self._every(self.etls)

    def newest_feature_set(self, name: str) -> dict[str, Any] | None:
        """The newest version of feature set `name`, with `stages` (stage → version) of all its versions;
        None if there is no such set."""
        try:
            versions = self.feature_set_versions(name)
        except NotFound:
            return None
        if not versions:
            return None
        return {**versions[-1], "stages": {v["stage"]: v["version"] for v in versions if v.get("stage")}}

    @staticmethod
    def _every(list_page: Any) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = list_page(offset=offset, limit=PAGE)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return


def is_fatal(error: FeatureStoreError) -> bool:
    """An error about the service as a whole (unreachable, not the service, refused credentials, a backend
    down), not about one object of the repo: the run stops there."""
    return (isinstance(error, (ServiceUnreachable, UnexpectedResponse, BackendUnavailable))
            or getattr(error, "status", None) in (401, 403))


def describe(error: FeatureStoreError) -> str:
    """``code: message`` as the service sent it, then what its details say (e.g. which column broke which
    expectation), so a failed step is explained without a second look at the service."""
    details = details_text(error.details)
    return f"{error.code}: {error.message}" + (f" [{details}]" if details else "")


MAX_DETAILS_CHARS = 600


def details_text(details: Any) -> str:
    """An error's `details` on one line: each broken expectation as ``column rule expected: N row(s), e.g. …``,
    anything else as compact JSON (cut at MAX_DETAILS_CHARS)."""
    if not details:
        return ""
    if isinstance(details, dict) and isinstance(details.get("violations"), list):
        text = "; ".join(_violation_text(v) for v in details["violations"] if isinstance(v, dict))
    else:
        text = json.dumps(details, separators=(",", ":"), default=str, ensure_ascii=False)
    return text if len(text) <= MAX_DETAILS_CHARS else text[:MAX_DETAILS_CHARS - 1] + "…"


def _violation_text(violation: dict[str, Any]) -> str:
    examples = violation.get("examples") or []
    shown = f", e.g. {', '.join(map(str, examples))}" if examples else ""
    return (f"column {violation.get('column')!r} {violation.get('rule')} {violation.get('expected')!r}: "
            f"{violation.get('failed_rows')} row(s){shown}")
