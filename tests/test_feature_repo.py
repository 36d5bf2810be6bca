"""`python -m app plan|apply`: a feature repo (examples/feature_repo, committed to a fresh git repository)
against a live service, run as CI would run it: a subprocess, its output and its exit status."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.cli import main
from demo.sources import demo_source_declarations
from featurerepo.config import RepoConfigError, load_repo
from tests.fixtures_git import make_etl_repo
from tests.fixtures_server import free_port, live_server, running_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "feature_repo"

def example_files() -> dict[str, str]:
    return {path.relative_to(EXAMPLE).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(EXAMPLE.rglob("*")) if path.is_file() and "__pycache__" not in path.parts}


@pytest.fixture
def feature_repo(tmp_path: Path):
    """The example feature repo, committed on `main` of a new git repository (the project's own checkout
    may hold uncommitted changes, which the service would refuse)."""
    repo = make_etl_repo(tmp_path / "feature-repo", example_files())
    yield repo
    repo.repo.close()


def cli(*args: str, url: str | None = None, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m app <args>`` from the project root, as a CI job would (service and key from the
    environment)."""
    env = {key: value for key, value in os.environ.items() if key not in ("FEATURESTORE_URL", "FEATURESTORE_API_KEY")}
    env.update({"FEATURESTORE_URL": url} if url else {})
    env.update({"FEATURESTORE_API_KEY": api_key} if api_key else {})
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def lines(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    """(kind, name) → the line's symbol, for every object line of the output."""
    found = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^([+~=!?]) (source|query|etl|feature_set) +(\S+)", line)
        if match:
            found[(match[2], match[3])] = match[1]
    return found


def get(base: str, path: str, api_key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = requests.get(f"{base}/v1.0/{path}", headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


def catalog_counts(base: str, api_key: str | None = None) -> tuple[int, int, int]:
    return tuple(get(base, path, api_key)["total"] for path in ("queries", "etls", "feature-sets"))


def versions(base: str, name: str, api_key: str | None = None) -> list[dict]:
    return get(base, f"feature-sets/{name}", api_key)["versions"]


def publish(base: str, api_key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    requests.put(f"{base}/v1.0/publish", params={"n_flows": 80, "seed": 7}, headers=headers,
                 timeout=60).raise_for_status()


KEY = "feature-repo-ci-key-0123456789"
EVERYTHING = {("query", "quote_join"), ("etl", "quote_features"), ("etl", "fitted_features"),
              ("feature_set", "conversion"), ("feature_set", "conversion_fitted")}
SOURCES = {("source", name) for name in ("users", "quotes", "transactions", "policies")}
DECLARED = {key: "=" for key in SOURCES}  # the demo's sources, declared by publish as the repo declares them


@pytest.mark.slow
def test_plan_apply_lifecycle(tmp_path, feature_repo):
    with running_server(tmp_path / "data", AUTH="on", ADMIN_KEY=KEY) as base:  # the one test with keys on
        publish(base, KEY)
        repo_dir = str(feature_repo.path)
        keyless = cli("plan", repo_dir, url=base)
        assert keyless.returncode == 1 and "unauthorized" in keyless.stderr and "--api-key" in keyless.stderr

        planned = cli("plan", repo_dir, "--api-key", KEY, url=base)
        assert planned.returncode == 0, planned.stderr  # changes are not an error without --detailed-exitcode
        assert lines(planned) == {**DECLARED, **{key: "+" for key in EVERYTHING}}, planned.stdout
        assert "Plan: 5 to create, 0 to change, 4 unchanged." in planned.stdout
        assert catalog_counts(base, KEY) == (0, 0, 0)  # a plan changes nothing

        applied = cli("apply", repo_dir, url=base, api_key=KEY)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert lines(applied) == {**DECLARED, **{key: "+" for key in EVERYTHING}}, applied.stdout
        assert "registering etl quote_features" in applied.stderr  # progress, on stderr
        assert catalog_counts(base, KEY) == (1, 2, 2)
        first = versions(base, "conversion", KEY)
        assert [(v["version"], v["stage"]) for v in first] == [(1, "production")]
        assert first[0]["features"] == ["is_mobile", "minutes_to_bind", "paid_by_amex"]
        old_etl = first[0]["etl_id"]
        assert get(base, f"queries/{first[0]['query_id']}", KEY)["name"] == "quote_join"

        again = cli("apply", repo_dir, url=base, api_key=KEY)
        assert again.returncode == 0, again.stdout + again.stderr
        assert lines(again) == {key: "=" for key in EVERYTHING | SOURCES}, again.stdout
        assert "registering" not in again.stderr
        assert catalog_counts(base, KEY) == (1, 2, 2) and len(versions(base, "conversion", KEY)) == 1

        # An edit not yet committed: the service refuses it, so the plan fails with its message.
        etl_file = feature_repo.file("etls/quote_features.py")
        changed_code = etl_file.read_text().replace('["ios", "android"]', '["ios", "android", "ipados"]')
        etl_file.write_text(changed_code)
        dirty = cli("plan", repo_dir, url=base, api_key=KEY)
        assert dirty.returncode == 1
        assert lines(dirty)[("etl", "quote_features")] == "!"
        assert "invalid_etl" in dirty.stdout and "uncommitted changes" in dirty.stdout
        assert lines(dirty)[("feature_set", "conversion")] == "?"  # depends on the failed ETL

        # Committed: a new ETL version, a new version of the set using it, and a stage-only change.
        feature_repo.commit("etls/quote_features.py", changed_code, "Count iPadOS as mobile")
        config = feature_repo.file("featurestore.toml").read_text()
        feature_repo.commit("featurestore.toml", config.replace('tags = ["conversion", "fitted"]',
                                                                'tags = ["conversion", "fitted"]\nstage = "staging"'),
                            "Stage the fitted set")
        changed = cli("plan", repo_dir, "--detailed-exitcode", url=base, api_key=KEY)
        assert changed.returncode == 2, changed.stdout + changed.stderr
        assert lines(changed) == {**DECLARED, ("query", "quote_join"): "=", ("etl", "quote_features"): "~",
                                  ("etl", "fitted_features"): "=", ("feature_set", "conversion"): "~",
                                  ("feature_set", "conversion_fitted"): "~"}, changed.stdout
        assert re.search(rf"~ etl +quote_features +{old_etl} → e_[0-9a-f]{{16}} +new version", changed.stdout)
        assert re.search(r"~ feature_set +conversion +v1 → v2", changed.stdout)
        assert "Plan: 0 to create, 3 to change, 6 unchanged." in changed.stdout
        assert catalog_counts(base, KEY) == (1, 2, 2)

        applied = cli("apply", repo_dir, url=base, api_key=KEY)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        after = versions(base, "conversion", KEY)
        assert [(v["version"], v["stage"]) for v in after] == [(1, None), (2, "production")]
        assert after[1]["etl_id"] != old_etl and after[1]["query_id"] == after[0]["query_id"]
        assert [v["stage"] for v in versions(base, "conversion_fitted", KEY)] == ["staging"]
        assert catalog_counts(base, KEY) == (1, 3, 2)
        final = cli("plan", repo_dir, "--detailed-exitcode", url=base, api_key=KEY)
        assert final.returncode == 0 and set(lines(final).values()) == {"="}, final.stdout


# Adopts a table already in the warehouse (no columns: read from the warehouse; the test creates it first).
QUOTE_EVENTS = 'table = "quote_log"\nentity_keys = ["quote_id"]\nevent_time = "creation_date"\nowner = "ci"\n'
QUOTE_LOG_COLUMNS = ["quote_id", "user_id", "creation_date", "note"]


def _warehouse_with_quote_log(data_dir) -> None:
    """The embedded warehouse file, made before the server opens it, holding a table of the user's own."""
    import duckdb

    data_dir.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as connection:
        connection.execute("CREATE TABLE quote_log (quote_id VARCHAR, user_id VARCHAR, creation_date BIGINT, note VARCHAR)")
        connection.execute("INSERT INTO quote_log VALUES ('q1', 'u1', 1700000000, 'first')")


@pytest.mark.slow
def test_sources_plan_and_apply(tmp_path, feature_repo):
    """On a service with nothing declared, apply declares the sources before the query reading them; then a
    compatible edit is the next version and an incompatible one fails the plan before anything changes."""
    feature_repo.commit("sources/quote_events.toml", QUOTE_EVENTS, "Adopt the quote log")
    created = {key: "+" for key in EVERYTHING | SOURCES | {("source", "quote_events")}}
    unchanged = {key: "=" for key in created}
    _warehouse_with_quote_log(tmp_path / "data")
    with running_server(tmp_path / "data", DEMO_SOURCES="off") as base:
        repo_dir = str(feature_repo.path)
        planned = cli("plan", repo_dir, url=base)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert lines(planned) == created, planned.stdout
        assert re.search(r"\+ source +users +v1 +4 columns, from sources/users.toml", planned.stdout)
        assert re.search(r"\+ source +quote_events +v1 +adopts warehouse table quote_log", planned.stdout)
        assert "checked once policies, quotes, transactions, users are declared" in planned.stdout
        assert get(base, "sources")["total"] == 0  # a plan changes nothing

        applied = cli("apply", repo_dir, url=base)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert lines(applied) == created, applied.stdout
        assert get(base, "sources")["total"] == 5 and catalog_counts(base) == (1, 2, 2)
        adopted = get(base, "sources/quote_events")
        assert adopted["table"] == "quote_log" and [c["name"] for c in adopted["columns"]] == QUOTE_LOG_COLUMNS
        assert adopted["warehouse"]["rows"] == adopted["realtime"]["rows"] == 1
        again = cli("apply", repo_dir, url=base)
        assert again.returncode == 0 and lines(again) == unchanged, again.stdout + again.stderr

        users = feature_repo.file("sources/users.toml").read_text()
        feature_repo.commit("sources/users.toml", users + '\n[[columns]]\nname = "email"\ntype = "string"\n',
                            "Users have an email")
        compatible = cli("plan", repo_dir, "--detailed-exitcode", url=base)
        assert compatible.returncode == 2, compatible.stdout + compatible.stderr
        assert lines(compatible) == {**unchanged, ("source", "users"): "~"}, compatible.stdout
        assert re.search(r"~ source +users +v1 → v2 +new version: \+email", compatible.stdout)
        applied = cli("apply", repo_dir, url=base)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert get(base, "sources/users")["versions"] == [1, 2]
        assert lines(cli("apply", repo_dir, url=base)) == unchanged

        retyped = users.replace('name = "address"\ntype = "string"', 'name = "address"\ntype = "integer"')
        feature_repo.commit("sources/users.toml", retyped, "Addresses are numbers now")
        incompatible = cli("plan", repo_dir, url=base)
        assert incompatible.returncode == 1 and "error" in incompatible.stderr
        assert lines(incompatible)[("source", "users")] == "!", incompatible.stdout
        assert "source_incompatible" in incompatible.stdout and "address string → integer" in incompatible.stdout
        assert "removed email" in incompatible.stdout  # the file dropped it too: both are in the diff
        refused = cli("apply", repo_dir, url=base)
        assert refused.returncode == 1 and "nothing changed" in refused.stdout
        assert get(base, "sources/users")["versions"] == [1, 2]


def test_example_sources_equal_the_demo_declarations(feature_repo):
    declared = {spec.name: spec.declaration for spec in load_repo(feature_repo.path).sources}
    assert declared == {body["name"]: body for body in demo_source_declarations()}, \
        "update examples/feature_repo/sources from demo/sources.py"


def test_source_files_are_checked_with_the_repo(feature_repo):
    users = feature_repo.file("sources/users.toml")
    users.write_text(users.read_text().replace('event_time = "creation_date"', 'event_time = "created"'))
    feature_repo.file("sources/broken.toml").write_text("entity_keys = [\n")
    feature_repo.file("sources/Clicks.toml").write_text('entity_keys = ["id"]\nevent_time = "at"\ncolour = 1\n')
    feature_repo.file("sources/again.toml").write_text(QUOTE_EVENTS + 'name = "quotes"\n')
    with pytest.raises(RepoConfigError) as caught:
        load_repo(feature_repo.path)
    problems = caught.value.problems
    assert any(p.startswith("sources/users.toml: event_time names 'created', which is not a declared column")
               for p in problems), problems
    assert any(p.startswith("sources/broken.toml: ") for p in problems)
    assert any(p.startswith("sources/Clicks.toml: unknown key(s) colour") for p in problems)
    assert "sources/quotes.toml: source 'quotes' is also declared in sources/again.toml" in problems


@pytest.mark.slow
def test_invalid_sql_fails_the_plan_with_the_services_message(live_server, feature_repo):  # noqa: F811
    feature_repo.commit("queries/quote_join.sql", "SELECT user_id FROM no_such_table", "Broken query")
    planned = cli("plan", str(feature_repo.path), url=live_server)
    assert planned.returncode == 1
    assert lines(planned)[("query", "quote_join")] == "!"
    assert "invalid_query" in planned.stdout and "no_such_table" in planned.stdout
    assert lines(planned)[("etl", "quote_features")] == "?"
    assert "error" in planned.stderr

    applied = cli("apply", str(feature_repo.path), url=live_server)
    assert applied.returncode == 1 and "nothing changed" in applied.stdout
    names = [q["name"] for q in requests.get(f"{live_server}/v1.0/queries", timeout=10).json()["items"]]
    assert "quote_join" not in names


@pytest.mark.slow
def test_a_failed_apply_says_which_column_broke_which_expectation(tmp_path, feature_repo):
    """`apply` prints the details of the service's error, not only its code: the column, the rule, the rows."""
    code = feature_repo.file("etls/fitted_features.py").read_text()
    strict = code.replace('"minutes_to_bind_z": {"type": "float", "min": -10, "max": 10}',
                          '"minutes_to_bind_z": {"type": "float", "min": -0.01, "max": 0.01}')
    assert strict != code
    feature_repo.commit("etls/fitted_features.py", strict, "Too strict an expectation")
    with running_server(tmp_path / "data") as base:
        publish(base)
        applied = cli("apply", str(feature_repo.path), url=base)
    assert applied.returncode == 1
    assert lines(applied)[("etl", "fitted_features")] == "!"
    failed = next(line for line in applied.stdout.splitlines() if line.startswith("! etl"))
    assert "failed: expectations_failed" in failed
    assert "column 'minutes_to_bind_z' min -0.01" in failed and "row(s), e.g." in failed
    assert "column 'minutes_to_bind_z'" in applied.stderr  # the closing error line too


@pytest.mark.slow
def test_etls_from_a_git_remote(live_server, feature_repo):  # noqa: F811
    """With [git] url, ETLs are registered as {repo, ref, path}: a remote service clones them."""
    publish(live_server)
    config = feature_repo.file("featurestore.toml").read_text()
    feature_repo.commit("featurestore.toml", config + f'\n[git]\nurl = "{feature_repo.path.as_uri()}"\n'
                        'ref = "main"\n', "Register ETLs from the remote")
    applied = cli("apply", str(feature_repo.path), url=live_server)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    etl_id = re.search(r"etl +quote_features +(e_[0-9a-f]{16})", applied.stdout)[1]
    source = requests.get(f"{live_server}/v1.0/etls/{etl_id}", timeout=10).json()["source"]
    assert (source["repo"], source["ref"], source["path"]) == (feature_repo.path.as_uri(), "main",
                                                               "etls/quote_features.py")
    # A local edit is not what the remote holds: the plan says so, and plans the remote's code, here at
    # --git-ref v1 (the first commit: the same ETL code).
    feature_repo.file("etls/quote_features.py").write_text("# not pushed\n")
    planned = cli("plan", str(feature_repo.path), "--git-ref", "v1", url=live_server)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert lines(planned)[("etl", "quote_features")] == "="
    assert f"etls/quote_features.py differs from {feature_repo.path.as_uri()}@v1" in planned.stderr


def test_unreachable_service_is_a_clear_error(feature_repo):
    url = f"http://127.0.0.1:{free_port()}"  # closed: nobody listens
    result = cli("apply", str(feature_repo.path), "--url", url, url="http://overridden-by-the-flag.invalid")
    assert result.returncode == 1
    assert f"cannot reach the feature store at {url}" in result.stderr and result.stdout == ""


def test_config_problems_are_listed_together(feature_repo, capsys):
    config = feature_repo.file("featurestore.toml")
    config.write_text(config.read_text().replace('query = "quote_join"', 'query = "quote_joins"', 1)
                      .replace('etl = "fitted_features"', 'etl = "fitted"')
                      .replace('[service]', '[service]\napi_key = "secret"'))
    # In process (main is what `python -m app` exits with): the repo is checked before the service is asked.
    assert main(["plan", str(feature_repo.path), "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert "[etls.quote_features]: query 'quote_joins' is not defined" in err
    assert "[feature_sets.conversion_fitted]: etl 'fitted' is not defined" in err
    assert "the API key is never read from the file" in err
    assert "cannot reach" not in err


def test_config_is_read_without_a_service(feature_repo):
    repo = load_repo(feature_repo.path, url="http://example.invalid:1")
    assert [q.name for q in repo.queries] == ["quote_join"]
    assert [(e.name, e.query) for e in repo.etls] == [("quote_features", "quote_join"),
                                                      ("fitted_features", "quote_join")]
    assert {f.name: f.stage for f in repo.feature_sets} == {"conversion": "production", "conversion_fitted": None}
    assert repo.url == "http://example.invalid:1" and repo.git is None
    feature_repo.file("featurestore.toml").write_text("[feature_sets.x]\nfeatures = 'a'\ntypo = 1\n")
    with pytest.raises(RepoConfigError) as caught:
        load_repo(feature_repo.path)
    assert any("unknown key(s) typo" in p for p in caught.value.problems)
    assert any("etl is required" in p for p in caught.value.problems)
    assert any("features must be a list of non-empty strings" in p for p in caught.value.problems)


def test_help_lists_every_subcommand(capsys):
    out = cli("--help").stdout
    for command in ("serve", "keys", "publish", "plan", "apply"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.MULTILINE), command
    for command in ("plan", "apply"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert "featurestore.toml" in text and "FEATURESTORE_API_KEY" in text and "exit status" in text
        assert ("--detailed-exitcode" in text) == (command == "plan")
