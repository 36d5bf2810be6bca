"""WORKERS=3: one primary and two serving processes on one port, fresh data on each, a killed one replaced.

The real server (`python -m app`) on a free loopback port; each request on a fresh connection, which the
kernel (SO_REUSEPORT) hands to any of the processes; X-Served-By names the one that answered."""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable

import pyarrow as pa
import requests

from tests.server_process import live_process
from tests.walkthrough import FOUR_TABLE_QUERY, example_repo

PROCESSES = 3
WAIT_SECONDS = 90.0


def _call(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One request on a new connection (closed after it). A connection reset is tried again, a few times:
    around a worker's death the kernel may reset a connection it had queued for it (only idempotent
    calls here: reads, and ingests with a batch_id)."""
    for attempt in range(3):
        try:
            return requests.request(method, url, headers={"Connection": "close", **kwargs.get("headers", {})},
                                    timeout=30, **{k: v for k, v in kwargs.items() if k != "headers"})
        except requests.ConnectionError:
            if attempt == 2:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _until_every_process(check: Callable[[], requests.Response], wanted: int = PROCESSES) -> dict[str, Any]:
    """Run `check` on fresh connections until `wanted` different processes answered it; PID -> last answer."""
    answers: dict[str, Any] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    while len(answers) < wanted:
        assert time.monotonic() < deadline, f"only {sorted(answers)} answered"
        response = check()
        answers[response.headers["X-Served-By"]] = response
    return answers


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, its sockets closed, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)


def _user(base: str, user_id: str, name: str) -> int:
    """Ingest one user (through whichever process gets it); the answer's feed position."""
    answer = _call("POST", f"{base}/v1.0/sources/users/rows", json={"batch_id": f"user-{user_id}", "rows": [
        {"user_id": user_id, "name": name, "address": "here", "creation_date": 1_700_000_000}]})
    assert answer.status_code == 200, answer.text
    return answer.json()["position"]


def _lookup(base: str, query_id: str, user_id: str, position: int) -> Callable[[], requests.Response]:
    def check() -> requests.Response:
        return _call("POST", f"{base}/v1.0/query/realtime?min_position={position}",
                     json={"query_id": query_id, "index_key": "user_id", "index_value": user_id})
    return check


def test_every_process_serves_each_write_and_a_killed_one_is_replaced(tmp_path):
    with live_process(tmp_path / "data", startup_seconds=60, WORKERS=str(PROCESSES)) as live:
        base, primary = live.base, str(live.process.pid)
        pids = set(_until_every_process(lambda: _call("GET", f"{base}/v1.0/health")))
        assert primary in pids
        saved = _call("POST", f"{base}/v1.0/query/train?save=true",
                      json={"query": "SELECT user_id, name FROM users"})
        assert saved.status_code == 200, saved.text
        query_id = saved.json()["query_id"]

        for round_ in range(3):
            position = _user(base, f"u-{round_}", f"name {round_}")
            answers = _until_every_process(_lookup(base, query_id, f"u-{round_}", position))
            assert set(answers) == pids
            for response in answers.values():  # no process misses a write it was asked to have
                assert response.status_code == 200, response.text
                assert response.json()["data"] == [{"user_id": f"u-{round_}", "name": f"name {round_}"}]

        writes = {_call("PUT", f"{base}/v1.0/publish?n_flows=5&seed={seed}").headers["X-Served-By"]
                  for seed in range(6)}
        assert writes == {primary}  # a serving process forwards every write to the primary

        victim = int(next(pid for pid in pids if pid != primary))
        os.kill(victim, signal.SIGKILL)
        _wait_gone([victim])  # until then the kernel may still hand it connections, which it resets
        position = _user(base, "u-late", "after the kill")
        answers = _until_every_process(_lookup(base, query_id, "u-late", position))
        replacement = set(answers) - pids
        assert str(victim) not in answers and len(replacement) == 1
        for response in answers.values():
            assert response.json()["data"] == [{"user_id": "u-late", "name": "after the kill"}]
        new = replacement.pop()
        older = _until_every_process(_lookup(base, query_id, "u-0", 0))[new]  # from its snapshot
        assert older.json()["data"] == [{"user_id": "u-0", "name": "name 0"}]
        children = [int(pid) for pid in set(answers) if pid != primary]
    _wait_gone(children)  # stopping the primary stops every serving process


def test_a_position_past_the_feed_or_malformed_is_400(tmp_path):
    with live_process(tmp_path / "data", startup_seconds=60, WORKERS="2") as live:
        base = live.base
        saved = _call("POST", f"{base}/v1.0/query/train?save=true", json={"query": "SELECT user_id FROM users"})
        query_id = saved.json()["query_id"]
        position = _user(base, "u-1", "one")
        body = {"query_id": query_id, "index_key": "user_id", "index_value": "u-1"}
        far = _until_every_process(lambda: _call("POST", f"{base}/v1.0/query/realtime", json=body,
                                                 headers={"X-Min-Position": str(position + 1000)}), 2)
        for response in far.values():
            assert response.status_code == 400, response.text
            assert response.json()["details"] == {"min_position": position + 1000, "newest": position}
        for bad in ("-1", "1.5", "x"):
            refused = _call("POST", f"{base}/v1.0/query/realtime?min_position={bad}", json=body)
            assert refused.status_code == 400 and set(refused.json()) == {"code", "message", "details"}


def test_every_process_checks_keys_and_a_key_made_through_one_works_on_all(tmp_path):
    admin = "admin-key-for-the-workers-test"
    with live_process(tmp_path / "data", startup_seconds=60, WORKERS="2", AUTH="on", ADMIN_KEY=admin) as live:
        base, as_admin = live.base, {"Authorization": f"Bearer {admin}"}
        anonymous = _until_every_process(lambda: _call("GET", f"{base}/v1.0/queries"), 2)
        assert {response.status_code for response in anonymous.values()} == {401}
        made = _call("POST", f"{base}/v1.0/keys", json={"name": "reader", "role": "scientist"}, headers=as_admin)
        assert made.status_code == 201, made.text
        reader = {"Authorization": f"Bearer {made.json()['key']}"}
        lists = _until_every_process(lambda: _call("GET", f"{base}/v1.0/queries", headers=reader), 2)
        assert {response.status_code for response in lists.values()} == {200}
        refused = _call("PUT", f"{base}/v1.0/publish?n_flows=1", headers=reader)  # forwarded, refused by role
        assert refused.status_code == 403 and refused.json()["code"]


def test_a_source_declared_and_widened_after_start_reaches_every_process(tmp_path):
    with live_process(tmp_path / "data", startup_seconds=60, WORKERS="2", DEMO_SOURCES="off") as live:
        base = live.base
        _until_every_process(lambda: _call("GET", f"{base}/v1.0/health"), 2)  # both started before the source
        columns = [{"name": "device_id", "type": "string"}, {"name": "seen", "type": "integer"}]
        source = {"name": "devices", "columns": columns, "entity_keys": ["device_id"], "event_time": "seen"}
        assert _call("POST", f"{base}/v1.0/sources", json=source).status_code in (200, 201)
        rows = _call("POST", f"{base}/v1.0/sources/devices/rows",
                     json={"rows": [{"device_id": "d1", "seen": 1_700_000_000}], "batch_id": "first"})
        widened = {**source, "columns": [*columns, {"name": "model", "type": "string"}]}
        assert _call("POST", f"{base}/v1.0/sources", json=widened).json()["version"] == 2
        more = _call("POST", f"{base}/v1.0/sources/devices/rows", json={
            "rows": [{"device_id": "d2", "seen": 1_700_000_001, "model": "x1"}], "batch_id": "second"})
        assert more.json()["position"] > rows.json()["position"]
        saved = _call("POST", f"{base}/v1.0/query/train?save=true",
                      json={"query": "SELECT device_id, model FROM devices"})
        assert saved.status_code == 200, saved.text
        for batch in range(6):  # Arrow bodies in, an Arrow stream out, whichever process the connection reaches
            table = pa.table({"device_id": [f"a{batch}-{i}" for i in range(500)], "seen": [1_700_000_100] * 500,
                              "model": ["m"] * 500})
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            loaded = _call("POST", f"{base}/v1.0/sources/devices/rows?batch_id=arrow-{batch}",
                           data=sink.getvalue().to_pybytes(),
                           headers={"Content-Type": "application/vnd.apache.arrow.stream"})
            assert loaded.status_code == 200 and loaded.json()["rows"] == 500, loaded.text
            trained = _call("POST", f"{base}/v1.0/query/train?format=arrow",
                            json={"query": "SELECT count(*) AS n FROM devices"})
            assert pa.ipc.open_stream(trained.content).read_all().column("n").to_pylist() == [2 + 500 * (batch + 1)]
        for device, model in (("d1", None), ("d2", "x1")):
            answers = _until_every_process(lambda: _call(
                "POST", f"{base}/v1.0/query/realtime?min_position={more.json()['position']}",
                json={"query_id": saved.json()["query_id"], "index_key": "device_id", "index_value": device}), 2)
            for response in answers.values():
                assert response.status_code == 200, response.text
                assert response.json()["data"] == [{"device_id": device, "model": model}]


def test_serving_processes_stop_when_the_primary_is_killed(tmp_path):
    with live_process(tmp_path / "data", startup_seconds=60, WORKERS="2") as live:
        pids = _until_every_process(lambda: _call("GET", f"{live.base}/v1.0/health"), 2)
        serving = [int(pid) for pid in pids if pid != str(live.process.pid)]
        assert len(serving) == 1 and _alive(serving[0])
        live.process.kill()
        live.process.wait()
        _wait_gone(serving)  # an orphan notices its primary is gone and stops itself


def test_the_skew_report_counts_what_every_process_served(tmp_path):
    """Each process saves its serving window under its own slot; the report (on the primary) merges them, so no
    process's requests, nor its shadow comparisons, are lost to another's save."""
    repo = example_repo(tmp_path / "repo")
    with live_process(tmp_path / "data", startup_seconds=60, WORKERS=str(PROCESSES), STATS_FLUSH_SECONDS="0.2",
                      CONSISTENCY_REPEAT_GAP_SECONDS="0") as live:
        base = live.base
        assert _call("PUT", f"{base}/v1.0/publish?n_flows=40&seed=3").status_code == 200
        query_id = _call("POST", f"{base}/v1.0/query/train?save=true&include_data=false",
                         json={"query": FOUR_TABLE_QUERY}).json()["query_id"]
        trained = _call("POST", f"{base}/v1.0/extract/train?save=true",
                        json={"query_id": query_id, "etl_path": str(repo.file("etls/quote_features.py"))})
        assert trained.status_code == 200, trained.text
        etl_id, users = trained.json()["etl_id"], sorted({row["user_id"] for row in trained.json()["data"]})
        served: dict[str, int] = {}
        deadline = time.monotonic() + WAIT_SECONDS
        while len(served) < PROCESSES or min(served.values()) < 3:
            assert time.monotonic() < deadline, served
            answer = _call("POST", f"{base}/v1.0/extract/realtime", json={
                "query_id": query_id, "etl_id": etl_id, "index_key": "user_id",
                "index_value": users[sum(served.values()) % len(users)]})
            assert answer.status_code == 200, answer.text
            served[answer.headers["X-Served-By"]] = served.get(answer.headers["X-Served-By"], 0) + 1
        total, deadline = sum(served.values()), time.monotonic() + WAIT_SECONDS
        while True:  # the serving processes' windows reach the catalog at their next flush
            report = _call("GET", f"{base}/v1.0/etls/{etl_id}/skew").json()
            if report["outcomes"]["served"] == total:
                break
            assert report["outcomes"]["served"] < total and time.monotonic() < deadline, (report["outcomes"], served)
            time.sleep(0.1)
        assert report["value_mismatches"]["compared"] > 0  # shadow entities served by any process, compared
