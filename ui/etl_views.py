"""ETLs (code, state, expectations, statistics, consistency, skew plots) and feature sets (versions, diff)."""
from __future__ import annotations

from typing import Any

from flask import request

from ui import Page, api, api_items, bp, may_read_code, page, segment
from ui.plots import distribution_svg
from ui.views import highlighted, query_names

DIFFED_FIELDS = ("query_id", "etl_id", "index_key", "description", "tags")


@bp.get("/etls")
def etls() -> Page:
    status, items, answer = api_items("/etls")
    return page("etls.html", title="ETLs", status=status, answer=answer, items=items, query_names=query_names())


@bp.get("/etls/<etl_id>")
def etl(etl_id: str) -> Page:
    """An ETL: code at its commit (scientist/admin), fitted state, expectations, statistics, skew plots."""
    status, answer = api("GET", "/etls/" + segment(etl_id))
    if status != 200:
        return page("etl.html", title=f"ETL {etl_id}", status=status, answer=answer)
    skew_status, skew = api("GET", f"/etls/{segment(etl_id)}/skew")
    skew = skew if skew_status == 200 else None
    return page("etl.html", title=f"ETL {answer['name']}", status=status, answer=answer, skew=skew,
                code=highlighted(answer["code"], "python") if may_read_code() and answer.get("code") else None,
                plots=_plots(answer.get("training_stats", {}), skew),
                consistency=(answer.get("extra") or {}).get("consistency"), query_name=query_names().get(
                    answer["query_id"], answer["query_id"]))


def _plots(training_stats: dict[str, Any], skew: dict[str, Any] | None) -> dict[str, Any]:
    """Feature -> its distribution plot (key columns, which are not scored, get none)."""
    features = (skew or {}).get("features", {})
    return {name: distribution_svg(name, stats, features.get(name))
            for name, stats in training_stats.items() if not features.get(name, {}).get("key")}


@bp.get("/feature-sets")
def feature_sets() -> Page:
    status, items, answer = api_items("/feature-sets")
    return page("feature_sets.html", title="Feature sets", status=status, answer=answer, items=items)


@bp.get("/feature-sets/<name>")
def feature_set(name: str) -> Page:
    """Every version with its stage, the production one marked, and a diff of two chosen versions."""
    status, answer = api("GET", "/feature-sets/" + segment(name))
    versions = answer.get("versions", []) if status == 200 else []
    by_number = {str(v["version"]): v for v in versions}
    older = by_number.get(request.args.get("a", ""), versions[-2] if len(versions) > 1 else None)
    newer = by_number.get(request.args.get("b", ""), versions[-1] if versions else None)
    return page("feature_set.html", title=f"Feature set {name}", status=status, answer=answer, versions=versions,
                older=older, newer=newer, diff=version_diff(older, newer) if older and newer else None,
                production=next((v["version"] for v in versions if v.get("stage") == "production"), None),
                names={**query_names(), **etl_names()} if versions else {})


def etl_names() -> dict[str, str]:
    """ETL id -> name, for links."""
    return {e["etl_id"]: e["name"] for e in api_items("/etls")[1]}


def version_diff(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """Features added and removed from `older` to `newer`, and which other fields changed (old, new)."""
    before, after = older.get("features", []), newer.get("features", [])
    return {"added": [f for f in after if f not in before], "removed": [f for f in before if f not in after],
            "changed": {field: (older.get(field), newer.get(field)) for field in DIFFED_FIELDS
                        if older.get(field) != newer.get(field)}}
