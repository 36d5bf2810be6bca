"""The web UI over a real catalog (the demo and the shop example): what each page shows, that it equals the
API's answers, that roles apply (a serving key is refused and sees no ETL code), CSRF, no key in URLs."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import close_app, create_app
from app.auth import create_key
from checks.consistency import ReplayReport
from tests.conftest import app_config
from tests.server_process import free_port
from tests.ui_demo import client_call, populate_demo, populate_shop
from ui.plots import MAX_BARS, buckets, distribution_svg

ADMIN_KEY = "ui-test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _login(client: FlaskClient, key: str):
    return client.post("/ui/login", data={"key": key, "csrf": _csrf(client.get("/ui/login").get_data(as_text=True))})


def _text(client: FlaskClient, path: str, status: int = 200) -> str:
    answer = client.get(path)
    assert answer.status_code == status, (path, answer.status_code)
    return answer.get_data(as_text=True)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, dict, dict]]:
    """One app with the demo and the shop registered through the API (authentication on)."""
    root = tmp_path_factory.mktemp("ui")
    app = create_app(app_config(root / "data", AUTH="on", ADMIN_KEY=ADMIN_KEY, MAX_BODY_BYTES=8 * 1024 * 1024))
    call = client_call(app.test_client(), ADMIN)
    try:
        yield app, populate_demo(call, root / "demo-repo"), populate_shop(call, root / "shop-repo")
    finally:
        close_app(app)


@pytest.fixture
def admin(catalog) -> FlaskClient:
    client = catalog[0].test_client()
    _login(client, ADMIN_KEY)
    return client


def _key_of_role(app: Flask, role: str) -> str:
    return create_key(app.extensions["feature_service"].catalog, f"ui-{role}", role)[1]


def test_every_page_renders_for_an_admin_and_no_page_carries_the_key(catalog, admin):
    app, demo, shop = catalog
    assert app.test_client().get("/ui/").status_code == 302  # not logged in: to the login page
    pages = ["/ui/", "/ui/sources", "/ui/sources/users", "/ui/sources/page_views", "/ui/queries", "/ui/etls",
             "/ui/feature-sets", "/ui/feature-sets/conversion", "/ui/feature-sets/shop_activity", "/ui/lineage",
             "/ui/keys", f"/ui/queries/{demo['query_id']}", f"/ui/queries/{shop['query_id']}",
             f"/ui/etls/{shop['etl_id']}", *[f"/ui/etls/{etl_id}" for etl_id in demo["etl_ids"].values()]]
    for path in pages:
        assert ADMIN_KEY not in _text(admin, path), path
    assert _text(admin, "/ui/static/ui.css").count("@media") >= 1


def test_source_page_shows_columns_keys_hot_window_rows_and_its_queries(catalog, admin):
    _, _, shop = catalog
    described = client_call(catalog[0].test_client(), ADMIN)("GET", "/v1.0/sources/page_views")
    page = _text(admin, "/ui/sources/page_views")
    assert re.search(r"<code>customer_id</code></td><td>string</td><td>no</td>\s*<td><span class=\"badge\">entity key",
                     page)
    assert re.search(r"viewed_at</code></td><td>timestamp</td><td>no</td>\s*<td><span class=\"badge\">event time", page)
    assert "604800 s (7.0 days)" in page
    assert f"<th scope=\"row\">warehouse</th><td>{described['warehouse']['rows']}</td>" in page
    assert f"<th scope=\"row\">realtime</th><td>{described['realtime']['rows']}</td>" in page
    assert described["realtime"]["rows"] < described["warehouse"]["rows"]  # the hot window keeps a week
    assert f'href="/ui/queries/{shop["query_id"]}">activity</a>' in page


def test_query_page_highlights_sql_lists_its_etls_and_tries_one_entity(catalog, admin):
    app, demo, _ = catalog
    page = _text(admin, f"/ui/queries/{demo['query_id']}")
    assert '<span class="k">SELECT</span>' in page and '<span class="c1">-- One row per bound quote' in page
    for etl_id in demo["etl_ids"].values():
        assert f'href="/ui/etls/{etl_id}"' in page
    tried = admin.post(f"/ui/queries/{demo['query_id']}", data={
        "csrf": _csrf(page), "index_key": "user_id", "index_value": demo["user_id"]}).get_data(as_text=True)
    served = client_call(app.test_client(), ADMIN)("POST", "/v1.0/query/realtime", {
        "query_id": demo["query_id"], "index_key": "user_id", "index_value": demo["user_id"]})["data"]
    assert len(served) == 1 and f"Realtime answer (1 rows)" in tried
    cells = re.findall(r"<td>([^<]*)</td>", tried.split("Realtime answer")[1])
    assert cells == [str(value) for value in served[0].values()]
    unknown = admin.post(f"/ui/queries/{demo['query_id']}", data={
        "csrf": _csrf(page), "index_key": "user_id", "index_value": "nobody"}).get_data(as_text=True)
    assert "The API refused: 404 entity_not_found" in unknown
    wrong_column = admin.post(f"/ui/queries/{demo['query_id']}", data={
        "csrf": _csrf(page), "index_key": "no_such_column", "index_value": "x"})
    assert wrong_column.status_code == 400 and wrong_column.get_json()["code"] == "bad_request"


def test_etl_page_shows_code_at_its_commit_state_expectations_and_skew_plots(catalog, admin):
    app, demo, _ = catalog
    call = client_call(app.test_client(), ADMIN)
    record = call("GET", f"/v1.0/etls/{demo['etl_ids']['quote_features']}")
    page = _text(admin, f"/ui/etls/{record['etl_id']}")
    source = record["source"]
    for shown in (source["commit"], record["code_sha256"], source["repo"], "etls/quote_features.py"):
        assert shown in page
    assert '<span class="k">def</span><span class="w"> </span><span class="nf">is_mobile</span>' in page
    skew = call("GET", f"/v1.0/etls/{record['etl_id']}/skew")
    assert skew["flagged"] == ["is_mobile"]  # served only to iOS users
    scored = [name for name, feature in skew["features"].items() if not feature.get("key")]
    assert page.count('<svg class="plot"') == len(scored) == 5
    flagged = re.search(r'<figure class="card feature flagged" id="feature-is_mobile">(.*?)</figure>', page, re.S)
    assert flagged and "flagged: psi" in flagged.group(1)
    assert "<title>True: serving 100.0%</title>" in flagged.group(1)  # every served user quoted on a phone
    assert "<title>True: training 69.1%</title>" in flagged.group(1)
    assert 'id="feature-user_id"' in page and "key column: identifies entities, not scored" in page
    fitted = _text(admin, f"/ui/etls/{demo['etl_ids']['fitted_features']}")
    assert "minutes_mean" in fitted and "quote_types" in fitted  # fitted state
    assert '<code>minutes_to_bind_z</code></td><td><code>{"type":"float","min":-10,"max":10}</code>' in fitted


def test_etl_page_shows_the_consistency_report_its_record_carries(make_app, tmp_path):
    app = make_app(AUTH="on", ADMIN_KEY=ADMIN_KEY)  # its own catalog: the record added here stays out of the others
    demo = populate_demo(client_call(app.test_client(), ADMIN), tmp_path / "repo")
    admin = app.test_client()
    _login(admin, ADMIN_KEY)
    store = app.extensions["feature_service"].catalog
    report = ReplayReport(columns=["user_id", "is_mobile"])
    report.add("u1", pd.DataFrame({"user_id": ["u1"], "is_mobile": [True]}),
               pd.DataFrame({"user_id": ["u1"], "is_mobile": [False]}))
    report.add("u2", pd.DataFrame({"user_id": ["u2"], "is_mobile": [True]}),
               pd.DataFrame({"user_id": ["u2"], "is_mobile": [True]}))
    replayed = dataclasses.replace(store.get_etl(demo["etl_ids"]["quote_features"]), etl_id="e_00000000000000c0",
                                   extra={"consistency": report.to_dict()})  # as a registration replay records it
    store.save_etl(replayed)
    page = _text(admin, f"/ui/etls/{replayed.etl_id}")
    assert "2 entities replayed: served rows differ from training rows." in page
    assert "<td><code>is_mobile</code></td><td>50.0%</td>" in page
    assert "<td><code>user_id</code></td><td>0.0%</td>" in page
    registered = _text(admin, f"/ui/etls/{demo['etl_ids']['quote_features']}")  # its own registration's report
    assert "entities replayed by <code>user_id</code>: training rows equal served rows." in registered
    assert "nondeterministic (clock, randomness): none." in registered


def test_serving_key_is_refused_and_sees_no_etl_code_but_a_scientist_does(catalog):
    app, demo, _ = catalog
    etl_id = demo["etl_ids"]["quote_features"]
    serving = app.test_client()
    assert _login(serving, _key_of_role(app, "serving")).status_code == 302
    page = _text(serving, f"/ui/etls/{etl_id}", 403)
    assert "The API refused: 403 forbidden" in page and "MOBILE_DEVICES" not in page and "sha256" not in page
    for path in ("/ui/queries", "/ui/etls", "/ui/sources", "/ui/feature-sets", "/ui/keys"):
        assert "The API refused: 403" in _text(serving, path, 403), path
    assert "not readable with this key" in _text(serving, "/ui/")
    scientist = app.test_client()
    _login(scientist, _key_of_role(app, "scientist"))
    assert "MOBILE_DEVICES" in _text(scientist, f"/ui/etls/{etl_id}")
    assert "The API refused: 403" in _text(scientist, "/ui/keys", 403)
    assert "The API refused: 404 source_not_found" in _text(scientist, "/ui/sources/no_such_source", 404)
    assert "The API refused: 400" in _text(scientist, "/ui/etls/not-an-id", 400)


def test_feature_set_page_marks_production_and_diffs_two_versions(catalog, admin):
    _, demo, _ = catalog
    page = _text(admin, "/ui/feature-sets/conversion")
    assert "In production: <strong>version 1</strong>" in page
    assert re.search(r'<tr class="production"><td>1</td>', page)
    assert '<code class="added">+minutes_to_bind_z</code>' in page
    assert '<code class="removed">−minutes_to_bind</code>' in page
    old, new = demo["etl_ids"]["quote_features"], demo["etl_ids"]["fitted_features"]
    assert (f'etl_id changed: <a href="/ui/etls/{old}">quote_features</a> → '
            f'<a href="/ui/etls/{new}">fitted_features</a>') in page
    assert "query_id changed" not in page
    assert page.count('<span class="ok">yes (') == 2  # both versions' ETLs replayed as consistent at registration
    reverse = _text(admin, "/ui/feature-sets/conversion?a=2&b=1")
    assert '<code class="added">+minutes_to_bind</code>' in reverse
    assert "Compare two versions" not in _text(admin, "/ui/feature-sets/shop_activity")  # one version only


def test_lineage_draws_every_dependency_and_every_node_links_to_its_page(catalog, admin):
    page = _text(admin, "/ui/lineage")
    svg = re.search(r'<svg class="lineage".*?</svg>', page, re.S).group(0)
    links = re.findall(r'<a href="([^"]+)" class="node', svg)
    assert len(links) == 6 + 2 + 3 + 2  # sources, queries, ETLs, feature sets
    for link in links:
        assert admin.get(link).status_code == 200, link
    # 4 demo sources -> quote_join, 2 shop sources -> activity; 3 ETLs on their queries; 3 ETLs in feature sets
    assert svg.count('class="edge"') == 6 + 3 + 3


def test_lineage_from_a_page_lights_what_the_node_is_built_from_and_what_is_built_on_it(catalog, admin):
    _, _, shop = catalog
    page = _text(admin, f"/ui/queries/{shop['query_id']}")
    link = re.search(r'<a href="([^"]+)">Lineage of this query</a>', page).group(1).replace("&amp;", "&")
    svg = _text(admin, link)
    lit = set(re.findall(r'class="node [a-z-]+(?: focus)?" aria-label="([^"]+)"', svg))
    assert lit == {"source page_views", "source orders", "query activity", "ETL customer_features",
                   "feature set shop_activity"}
    assert 'class="node queries focus" aria-label="query activity"' in svg
    assert svg.count('class="edge"') == 2 + 1 + 1 and svg.count('class="edge dim"') == 4 + 2 + 2
    assert 'class="node' in _text(admin, "/ui/lineage?focus=etls/no_such_etl") and "Lit:" not in \
        _text(admin, "/ui/lineage?focus=etls/no_such_etl")  # an unknown focus: the whole graph, nothing dimmed


def test_home_shows_health_counts_recent_registrations_and_searches_columns_and_tags(catalog, admin):
    page = _text(admin, "/ui/")
    assert "All backends answer." in page and page.count('<span class="dot ok"') == 4
    newest = catalog[0].extensions["feature_service"].sources.feed.last_position()
    assert f"feed: ok — serving position {newest}, 0 behind" in page
    assert re.search(r'Sources</a>: 6</li>', page) and re.search(r'Feature sets</a>: 2</li>', page)
    recent = page.split("Recent registrations")[1]
    assert recent.index("shop_activity") < recent.index("quote_join")  # newest first
    by_column = _text(admin, "/ui/?q=seconds_on_page").split("Results for")[1].split("</section>")[0]
    assert 'href="/ui/sources/page_views"' in by_column and "quote_join" not in by_column
    by_tag = _text(admin, "/ui/?q=shop").split("Results for")[1].split("</section>")[0]
    assert 'href="/ui/sources/orders"' in by_tag and 'href="/ui/feature-sets/shop_activity"' in by_tag
    assert "Nothing found." in _text(admin, "/ui/?q=no+such+thing+anywhere")


def test_home_names_a_backend_that_is_down(make_app):
    app = make_app(AUTH="on", ADMIN_KEY=ADMIN_KEY, WAREHOUSE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/fs")
    client = app.test_client()
    _login(client, ADMIN_KEY)
    page = _text(client, "/ui/")
    assert "A backend is down." in page and "warehouse: down" in page and "catalog: ok" in page


def test_with_authentication_off_any_text_logs_in_as_admin(make_app):
    """As `scripts/serve.sh` runs by default: the API is open, so the UI is too (the README says so)."""
    client = make_app(AUTH="off").test_client()
    assert _login(client, "anything").status_code == 302
    assert "Log out <span class=\"role\">admin</span>" in _text(client, "/ui/") and _text(client, "/ui/keys")


def test_form_without_csrf_is_refused(catalog):
    client = catalog[0].test_client()
    assert client.post("/ui/login", data={"key": ADMIN_KEY}).status_code == 400


def test_admin_creates_a_key_shown_once_and_revokes_it(catalog, admin):
    app = catalog[0]
    token = _csrf(_text(admin, "/ui/keys"))
    created = admin.post("/ui/keys", data={"csrf": token, "name": "model-a", "role": "serving"}).get_data(as_text=True)
    new_key = re.search(r"shown once\): <code>([^<]+)</code>", created).group(1)
    assert _text(admin, "/ui/keys").count(new_key) == 0  # shown only in the answer that made it
    key_id = next(k.key_id for k in app.extensions["feature_service"].catalog.list_api_keys() if k.name == "model-a")
    admin.post("/ui/keys", data={"csrf": token, "revoke": key_id})
    assert "unknown or revoked" in _login(app.test_client(), new_key).get_data(as_text=True)


def test_plot_folds_long_category_lists_and_escapes_labels():
    training = {"kind": "categorical", "top": [{"value": f"<b>{i}</b>", "share": 0.05} for i in range(20)],
                "other_share": 0.0}
    labels, trained, served = buckets(training, {"serving_shares": [0.05] * 20 + [0.0]})
    assert len(labels) == MAX_BARS and labels[-1] == "(other)"
    assert trained[-1] == pytest.approx(0.05 * 9) and served[-1] == pytest.approx(0.05 * 9)
    svg = str(distribution_svg("x", training, None))
    assert "<b>" not in svg and "&lt;b&gt;0&lt;/b&gt;" in svg and 'class="serve"' not in svg
    boolean = {"kind": "categorical", "top": [{"value": "True", "share": 0.7}, {"value": "False", "share": 0.3}],
               "other_share": 0.0}
    assert buckets(boolean, {"serving_shares": [1.0, 0.0, 0.0]}) == (["True", "False"], [0.7, 0.3], [1.0, 0.0])


def test_a_replay_that_compared_no_entity_is_shown_as_not_verified(make_app, tmp_path):
    app = make_app(AUTH="on", ADMIN_KEY=ADMIN_KEY)
    demo = populate_demo(client_call(app.test_client(), ADMIN), tmp_path / "repo")
    admin = app.test_client()
    _login(admin, ADMIN_KEY)
    store = app.extensions["feature_service"].catalog
    report = {**ReplayReport(columns=["user_id"]).to_dict(), "replayed": True, "skipped": {"not_in_realtime": 7}}
    store.save_etl(dataclasses.replace(store.get_etl(demo["etl_ids"]["quote_features"]), etl_id="e_00000000000000c1",
                                       extra={"consistency": report}))
    page = _text(admin, "/ui/etls/e_00000000000000c1")
    assert "Not verified: no training entity could be compared" in page and "7 not in realtime" in page
