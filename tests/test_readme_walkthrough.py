"""The README as a newcomer follows it: the walkthrough's bash blocks in order, from the repository root, on a
machine with no git identity, against a live server; twice (every step can be run again); then the Python
client snippet and the feature repo's plan and apply.

Only the server's address and `/tmp/` (a folder of this test) are substituted. Each block must exit 0,
print one JSON document per line (curl outputs never run together), and every id and error code the README
shows must be in what the block printed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.fixtures_server import running_server

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SHOWN = re.compile(r'\b[qe]_[0-9a-f]{16}\b|"code":"\w+"|\bv\d+\b|Plan: [^.]+\.')


def section(title: str) -> str:
    """The README's text under `## title`, up to the next `## ` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def shown(block: str) -> set[str]:
    """Ids, error codes, feature-set versions and plan summaries in the block's `# ` output lines."""
    return {match for line in block.splitlines() if line.startswith("#") for match in SHOWN.findall(line)}


def fresh_machine(home: Path, base: str) -> dict[str, str]:
    """The environment of a newcomer's shell: no git identity (git may not guess one), the server at `base`."""
    home.mkdir(exist_ok=True)
    config = home / "gitconfig"
    config.write_text("[user]\n\tuseConfigOnly = true\n")
    drop = {"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL",
            "FEATURESTORE_API_KEY"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    return {**env, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(config),
            "FEATURESTORE_URL": base}


def run(block: str, base: str, tmp: Path, env: dict[str, str]) -> str:
    """Run a bash block from the repository root (errexit, pipefail); its stdout."""
    script = block.replace("http://127.0.0.1:8080", base).replace("/tmp/", f"{tmp}/")
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{block}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout


def check_json_lines(block: str, out: str) -> None:
    """Every curl's output is a JSON document on a line of its own."""
    documents = [line.split(" (HTTP ")[0] for line in out.splitlines() if line.startswith("{")]
    assert len(documents) == block.count("curl "), out
    for document in documents:
        json.loads(document)


@pytest.mark.slow
def test_the_readme_runs_as_written_on_a_fresh_machine(tmp_path):
    walkthrough = blocks(section("Walkthrough (curl)"), "bash")
    assert len(walkthrough) == 6
    with running_server(tmp_path / "data", DEMO_SOURCES="off") as base:
        env = fresh_machine(tmp_path / "home", base)
        for rerun in (False, True):
            for block in walkthrough:
                out = run(block, base, tmp_path, env)
                check_json_lines(block, out)
                assert shown(block) <= set(SHOWN.findall(out)), (block, out)
            assert not (tmp_path / "etl_repo" / "etl_repo").exists()  # copied afresh, not nested
        assert '"duplicate":true' in out or json.loads(run(walkthrough[0], base, tmp_path, env))["duplicate"]

        [snippet] = blocks(section("Python client"), "python")
        script = snippet.replace("http://127.0.0.1:8080", base).replace("/tmp/", f"{tmp_path}/")
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        counts = requests.post(f"{base}/v1.0/query/train", json={"query": "SELECT count(*) AS n FROM quotes"},
                               timeout=30).json()["data"]
        assert counts == [{"n": 100}]  # the snippet's publish of seed 42 did not double the walkthrough's

        [repo_block] = blocks(section("Feature repo: plan and apply"), "bash")
        out = run(repo_block, base, tmp_path, env)
        assert shown(repo_block) <= set(SHOWN.findall(out)), (repo_block, out)
        assert "Apply complete" in out
