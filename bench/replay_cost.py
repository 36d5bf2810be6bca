"""What the registration replay adds to registering an ETL (issue 11).

`python -m bench.replay_cost --flows 10000 100000 --rounds 3` publishes the demo's flows into an
in-process service (embedded DuckDB warehouse, SQLite realtime store), saves the walkthrough's
four-table join, and registers the walkthrough's ETL (examples/etl_repo/etls/quote_features.py)
with the replay off (CONSISTENCY_REPLAY_ENTITIES=0) and on (200), alternating. Each registration is a
new ETL (a counter comment changes its sha256), so every one trains and, when on, replays. The repeat
pass waits for CONSISTENCY_REPEAT_GAP_SECONDS after the training began; `--gap` sets it (default 1.0,
the setting's default). Reported: the registration's wall time, the replay's own work (its time less
that wait) and its share of the registration (own work / registration with the replay on).

`--baseline REV` also registers with the replay code of git revision REV (app/replay.py and
checks/consistency.py as they were there, loaded beside the current ones), in the same rotation
(off, current, baseline), so old and new are compared on the same data under the same load.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from app import close_app, create_app
from app.replay import RegistrationReplay, ReplayOptions
from bench.live import make_etl_repo
from tests.walkthrough import FOUR_TABLE_QUERY

ROOT = Path(__file__).resolve().parents[1]


def baseline_replay(revision: str) -> type:
    """`RegistrationReplay` as of git `revision`, with that revision's checks/consistency.py."""
    def load(name: str, path: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"], check=True,
                                capture_output=True, text=True).stdout
        if replace:
            source = source.replace(*replace)
        module = types.ModuleType(name)
        module.__file__ = f"<{revision}:{path}>"
        sys.modules[name] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own repository's code
        return module

    load("baseline_consistency", "checks/consistency.py")
    replay = load("baseline_replay", "app/replay.py", ("from checks.consistency import", "from baseline_consistency import"))
    return replay.RegistrationReplay


def measure(flows: int, rounds: int, gap: float, baseline: type | None) -> dict[str, dict[str, list[float]]]:
    """Per mode (off, on, and baseline when given): registration wall seconds, replay seconds, its wait."""
    modes = ["off", "on"] + (["baseline"] if baseline else [])
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
            replays = {"off": RegistrationReplay, "on": RegistrationReplay, "baseline": baseline}
            times = {mode: {"registration": [], "replay": [], "wait": [], "entities": []} for mode in modes}
            for number in range(rounds * len(modes)):
                mode = modes[number % len(modes)]
                options = ReplayOptions(entities=0 if mode == "off" else 200, repeat_gap_seconds=gap)
                service.replay = replays[mode](service, options)
                etl.write_text(f"{code}\n# registration {number}\n")
                subprocess.run(["git", "-C", str(etl.parent), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                                "-c", "commit.gpgsign=false", "commit", "-qam", f"registration {number}"], check=True)
                started = time.perf_counter()
                answer = client.post("/v1.0/extract/train?save=true&include_data=false",
                                     json={"query_id": query_id, "etl_path": str(etl)})
                times[mode]["registration"].append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
                report = service.get_etl(answer.get_json()["etl_id"]).extra["consistency"]
                if mode != "off":
                    assert report["consistent"] and report["entities_checked"] == 200, report
                    times[mode]["replay"].append(report["seconds"])
                    times[mode]["wait"].append(report.get("repeat_wait_seconds", _baseline_wait(report, gap)))
                    times[mode]["entities"].append(report["entities_checked"])
            return times
        finally:
            close_app(app)


def _baseline_wait(report: dict[str, Any], gap: float) -> float:
    """The baseline's report has no wait: none when the gap is 0, else unknown (NaN)."""
    return 0.0 if gap == 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--baseline", help="a git revision whose replay code runs in the same rotation")
    args = parser.parse_args()
    baseline = baseline_replay(args.baseline) if args.baseline else None
    print(f"medians of {args.rounds} registrations per variant, alternating; gap {args.gap:g} s")
    print("| flows | variant | registration (s) | replay (s) | of it, waiting for the gap (s) | replay's own work (s) "
          "| own work / registration | registration / replay off |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for flows in args.flows:
        t = measure(flows, args.rounds, args.gap, baseline)
        off = statistics.median(t["off"]["registration"])
        print(f"| {flows:,} | replay off | {off:.2f} | | | | | 1.00 |")
        for mode, label in (("on", "replay on"), ("baseline", f"replay on, {args.baseline}")):
            if mode not in t:
                continue
            on, replay = (statistics.median(t[mode][k]) for k in ("registration", "replay"))
            own = statistics.median(r - w for r, w in zip(t[mode]["replay"], t[mode]["wait"]))
            wait = statistics.median(t[mode]["wait"])
            print(f"| {flows:,} | {label} | {on:.2f} | {replay:.2f} | {wait:.2f} | {own:.2f} | {own / on:.0%} | "
                  f"{on / off:.2f} |", flush=True)


if __name__ == "__main__":
    main()
