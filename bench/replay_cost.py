"""What the registration replay adds to registering an ETL (issue 11).

`python -m bench.replay_cost --flows 10000 100000 --rounds 3` publishes the demo's flows into an
in-process service (embedded DuckDB warehouse, SQLite realtime store), saves the walkthrough's
four-table join, and registers the walkthrough's ETL (examples/etl_repo/etls/quote_features.py)
with the replay on (CONSISTENCY_REPLAY_ENTITIES=200) and off (0), alternating. Each registration is a
new ETL (a counter comment changes its sha256), so every one trains and, when on, replays. The repeat
pass waits for CONSISTENCY_REPEAT_GAP_SECONDS after the training began; `--gap` sets it (default 1.0,
the setting's default), and the replay's own work is reported apart from that wait.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from app import close_app, create_app
from app.replay import ReplayOptions
from bench.live import make_etl_repo
from tests.walkthrough import FOUR_TABLE_QUERY


def measure(flows: int, rounds: int, gap: float) -> dict[str, list[float]]:
    """Registration wall seconds with the replay on and off, and the replay's own seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"DATA_DIR": tmp, "AUTH": "off", "DEMO_SOURCES": True, "MAX_PUBLISH_FLOWS": flows,
                          "STATS_FLUSH_SECONDS": 0.0, "ETL_ALLOWED_REMOTES": ()})
        try:
            client, service = app.test_client(), app.extensions["feature_service"]
            assert client.put(f"/v1.0/publish?n_flows={flows}&seed=7").status_code == 200
            query_id = client.post("/v1.0/query/train?save=true&include_data=false",
                                   json={"query": FOUR_TABLE_QUERY}).get_json()["query_id"]
            etl = make_etl_repo(Path(tmp) / "etl_repo")
            code = etl.read_text()
            times: dict[str, list[float]] = {"on": [], "off": [], "replay": [], "entities": []}
            for number in range(rounds * 2):
                mode = ("on", "off")[number % 2]
                service.replay.options = ReplayOptions(entities=200 if mode == "on" else 0, repeat_gap_seconds=gap)
                etl.write_text(f"{code}\n# registration {number}\n")
                subprocess.run(["git", "-C", str(etl.parent), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                                "-c", "commit.gpgsign=false", "commit", "-qam", f"registration {number}"], check=True)
                started = time.perf_counter()
                answer = client.post("/v1.0/extract/train?save=true&include_data=false",
                                     json={"query_id": query_id, "etl_path": str(etl)})
                times[mode].append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
                report = service.get_etl(answer.get_json()["etl_id"]).extra["consistency"]
                if mode == "on":
                    assert report["consistent"], report
                    times["replay"].append(report["seconds"])
                    times["entities"].append(report["entities_checked"])
            return times
        finally:
            close_app(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=1.0)
    args = parser.parse_args()
    print("| flows | registration, replay off (s) | replay on (s) | replay's own work (s) | entities | share |")
    print("|---:|---:|---:|---:|---:|---:|")
    for flows in args.flows:
        t = measure(flows, args.rounds, args.gap)
        off, on, own = (statistics.median(t[k]) for k in ("off", "on", "replay"))
        print(f"| {flows:,} | {off:.2f} | {on:.2f} | {own:.2f} | {int(statistics.median(t['entities']))} | "
              f"{(on - off) / on:.0%} |", flush=True)


if __name__ == "__main__":
    main()
