"""Demo data at scale without waiting: users with several quotes and about 10 transactions each.

`demo.flows.generate_flows` makes one quote (and at most one transaction) per flow; a
benchmark wants the shape of a real book: every user has 1 + Poisson(1.5) quotes, bound
ones may fail a payment or two before paying, and every policy pays a monthly premium
(``ref_type = 'policy'``, ``ref_id`` the policy) for each month since it was bought, up to
twelve. Per user that gives about 9.5 transactions, 2.5 quotes (plus 0.2 anonymous ones: never
bound, no user, as in the demo), 1.8 policies and 3 rows of the walkthrough's four-table join.

Columns and semantics are those of `demo.flows.TABLES`: epoch seconds, real booleans,
nullable `binding_date`. Everything is drawn with numpy from one seed, chunk by chunk
(`numpy.random.default_rng([seed, chunk])`), so a seed gives the same data whatever
the chunk timing; strings are built in Arrow without Python objects.

    .venv/bin/python -m bench.datagen --users 100000 --out bench/results/data/users-100000

writes ``warehouse.duckdb`` (appended in chunks through `warehouse.open_warehouse`,
one transaction per chunk), ``users.txt`` (the user ids, for load generators) and
``manifest.json`` (rows per table, timings). A server started with ``DATA_DIR`` there and
``DEMO_SOURCES=on`` declares the demo's sources over it and hydrates them (no hot window: every row).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from demo.flows import CARD_TYPES, DEVICES, FIRST_NAMES, LAST_NAMES, QUOTE_TYPES, STREETS, TABLES

GENERATOR_VERSION = 1  # bump when the data's shape changes: cached warehouses are rebuilt
DAY = 86_400
MONTH = 30 * DAY
SPAN_SECONDS = 400 * DAY  # first quotes fall in this window before `now`
MAX_FLOW_SECONDS = 2_700  # binding (≤ 30 min) and payment (≤ 15 min) follow a quote within this
ANONYMOUS_QUOTES_PER_USER = 0.2

_STRING = pd.StringDtype(na_value=np.nan)  # pandas' default `str` dtype, as generate_flows gives
_NULL_STRING = pa.scalar(None, pa.large_string())


def _ids(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 128-bit ids as 32-character hex strings (Arrow, fixed offsets, no Python strings)."""
    text = rng.bytes(16 * n).hex().encode("ascii")
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


def _words(words: np.ndarray, picks: np.ndarray) -> pa.Array:
    return pa.array(words, pa.large_string()).take(pa.array(picks))


def _joined(*parts: pa.Array | str) -> pa.Array:
    arrays = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*arrays, pa.scalar("", pa.large_string()))


def _text(values: pa.Array) -> Any:
    return pd.array(values, dtype=_STRING)


def _nullable_int(values: np.ndarray, valid: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype(np.int64), ~valid)


def generate_chunk(n_users: int, seed: int, chunk: int, now: int) -> dict[str, pd.DataFrame]:
    """One chunk of `n_users` users and everything they did, as one DataFrame per demo table."""
    rng = np.random.default_rng([seed, chunk])
    latest = now - MAX_FLOW_SECONDS

    # Users: a card each (all their payments use it), created when their first quote was bound.
    user_ids = _ids(rng, n_users)
    names = _joined(_words(FIRST_NAMES, rng.integers(0, len(FIRST_NAMES), n_users)), " ",
                    _words(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n_users)))
    addresses = _joined(pc.cast(rng.integers(1, 200, n_users), pa.large_string()), " ",
                        _words(STREETS, rng.integers(0, len(STREETS), n_users)))
    card_type = rng.integers(0, len(CARD_TYPES), n_users)
    card_number = _joined("**** **** **** ", pc.cast(rng.integers(1000, 10000, n_users), pa.large_string()))
    card_expiration = _joined(pc.utf8_lpad(pc.cast(rng.integers(1, 13, n_users), pa.large_string()), 2, "0"),
                              "/", pc.cast(rng.integers(27, 33, n_users), pa.large_string()))
    first_quote_at = latest - rng.integers(0, SPAN_SECONDS, n_users)

    # Quotes of known users: the first is bound (it created the user), later ones follow within a year.
    per_user = 1 + rng.poisson(1.5, n_users)
    owner = np.repeat(np.arange(n_users), per_user)
    n_quotes = len(owner)
    first = np.zeros(n_quotes, dtype=bool)
    first[np.concatenate(([0], np.cumsum(per_user)[:-1]))] = True
    created = np.where(first, first_quote_at[owner],
                       np.minimum(first_quote_at[owner] + rng.integers(DAY, 365 * DAY, n_quotes), latest))
    bound = first | (rng.random(n_quotes) < 0.8)
    paid = bound & (rng.random(n_quotes) < 0.8)
    binding = created + rng.integers(60, 1800, n_quotes)
    quote_ids = _ids(rng, n_quotes)
    quote_type = rng.integers(0, len(QUOTE_TYPES), n_quotes)
    device = rng.integers(0, len(DEVICES), n_quotes)
    user_created = binding[first]

    # Anonymous quotes: never bound, no user.
    n_anonymous = int(rng.binomial(n_users, ANONYMOUS_QUOTES_PER_USER))
    anonymous_created = latest - rng.integers(0, SPAN_SECONDS, n_anonymous)

    # Payments of quotes: failed attempts (paid quotes: Poisson(0.3); bound unpaid: one, half of the
    # time), then the successful one of a paid quote; all within 15 minutes of binding.
    failed = np.where(paid, rng.poisson(0.3, n_quotes), (bound & ~paid & (rng.random(n_quotes) < 0.5)).astype(int))
    attempts = failed + paid
    attempt_quote = np.repeat(np.arange(n_quotes), attempts)
    attempt_rank = np.arange(len(attempt_quote)) - np.repeat(np.cumsum(attempts) - attempts, attempts)
    attempt_ok = paid[attempt_quote] & (attempt_rank == attempts[attempt_quote] - 1)  # the last one pays
    attempt_time = binding[attempt_quote] + 30 + attempt_rank * 120 + rng.integers(0, 120, len(attempt_quote))
    paid_at = np.zeros(n_quotes, dtype=np.int64)
    paid_at[attempt_quote[attempt_ok]] = attempt_time[attempt_ok]

    # Policies of paid quotes; a monthly premium for each month since purchase (at most 12).
    policy_quote = np.flatnonzero(paid)
    n_policies = len(policy_quote)
    policy_ids = _ids(rng, n_policies)
    purchase = paid_at[policy_quote]
    months = np.minimum((now - purchase) // MONTH, 12)
    premium_policy = np.repeat(np.arange(n_policies), months)
    premium_number = np.arange(len(premium_policy)) - np.repeat(np.cumsum(months) - months, months) + 1
    premium_time = purchase[premium_policy] + premium_number * MONTH + rng.integers(0, 3600, len(premium_policy))
    premium_ok = rng.random(len(premium_policy)) < 0.97

    users = pd.DataFrame({
        "user_id": _text(user_ids), "name": _text(names), "address": _text(addresses),
        "creation_date": user_created,
    })
    quote_user = pa.concat_arrays([user_ids.take(pa.array(owner)),
                                   pa.nulls(n_anonymous, pa.large_string())])
    quotes = pd.DataFrame({
        "quote_id": _text(pa.concat_arrays([quote_ids, _ids(rng, n_anonymous)])),
        "user_id": _text(quote_user),
        "creation_date": np.concatenate([created, anonymous_created]),
        "binding_date": _nullable_int(np.concatenate([binding, np.zeros(n_anonymous, np.int64)]),
                                      np.concatenate([bound, np.zeros(n_anonymous, bool)])),
        "quote_type": _text(_words(QUOTE_TYPES, np.concatenate(
            [quote_type, rng.integers(0, len(QUOTE_TYPES), n_anonymous)]))),
        "quote_device": _text(_words(DEVICES, np.concatenate(
            [device, rng.integers(0, len(DEVICES), n_anonymous)]))),
        "is_binded": np.concatenate([bound, np.zeros(n_anonymous, bool)]),
        "is_paid": np.concatenate([paid, np.zeros(n_anonymous, bool)]),
    })
    payer = np.concatenate([owner[attempt_quote], owner[policy_quote][premium_policy]])
    n_transactions = len(payer)
    transactions = pd.DataFrame({
        "transaction_id": _text(_ids(rng, n_transactions)),
        "user_id": _text(user_ids.take(pa.array(payer))),
        "ref_id": _text(pa.concat_arrays([quote_ids.take(pa.array(attempt_quote)),
                                          policy_ids.take(pa.array(premium_policy))])),
        "ref_type": _text(_words(np.array(["quote", "policy"]), np.repeat(
            [0, 1], [len(attempt_quote), len(premium_policy)]))),
        "transaction_time": np.concatenate([attempt_time, premium_time]),
        "successful": np.concatenate([attempt_ok, premium_ok]),
        "card_number": _text(card_number.take(pa.array(payer))),
        "card_expiration_date": _text(card_expiration.take(pa.array(payer))),
        "card_type": _text(_words(CARD_TYPES, card_type[payer])),
    })
    policies = pd.DataFrame({
        "policy_id": _text(policy_ids),
        "user_id": _text(user_ids.take(pa.array(owner[policy_quote]))),
        "quote_id": _text(quote_ids.take(pa.array(policy_quote))),
        "purchase_time": purchase,
        "policy_type": _text(_words(QUOTE_TYPES, quote_type[policy_quote])),
        "policy_device": _text(_words(DEVICES, device[policy_quote])),
    })
    frames = {"users": users, "quotes": quotes, "transactions": transactions, "policies": policies}
    for table, frame in frames.items():  # the demo's column order, checked once per chunk
        assert list(frame.columns) == [c for c, _ in TABLES[table]], table
    return frames


def build_warehouse(out: Path, n_users: int, seed: int = 1, chunk_users: int = 100_000,
                    now: int | None = None, log: Any = print) -> dict[str, Any]:
    """Write `n_users` users (and their rows) into ``out/warehouse.duckdb`` in chunks; return the manifest."""
    from warehouse import open_warehouse

    out.mkdir(parents=True, exist_ok=True)
    path = out / "warehouse.duckdb"
    for stale in (path, out / "warehouse.duckdb.wal", out / "manifest.json"):
        stale.unlink(missing_ok=True)
    now = int(time.time()) // 3600 * 3600 if now is None else now
    warehouse = open_warehouse(f"duckdb:///{path}")
    from demo.sources import demo_source_declarations
    from sources.definition import parse_source

    for declaration in demo_source_declarations():  # the tables the server's DEMO_SOURCES=on declares
        warehouse.create_table(parse_source(declaration, created_by="bench", created_at=""))
    rows = {table: 0 for table in TABLES}
    generate_s = append_s = 0.0
    try:
        with open(out / "users.txt", "w") as user_file:
            done, chunk = 0, 0
            while done < n_users:
                size = min(chunk_users, n_users - done)
                started = time.perf_counter()
                frames = generate_chunk(size, seed, chunk, now)
                generated = time.perf_counter()
                warehouse.append(frames)  # one transaction; every row of every frame is written
                append_s += time.perf_counter() - generated
                generate_s += generated - started
                user_file.write("\n".join(frames["users"]["user_id"].tolist()) + "\n")
                for table, frame in frames.items():
                    rows[table] += len(frame)
                done += size
                chunk += 1
                log(f"  generated {done:,}/{n_users:,} users ({sum(rows.values()):,} rows)")
    finally:
        warehouse.close()
    total = sum(rows.values())
    manifest = {
        "generator_version": GENERATOR_VERSION, "users": n_users, "seed": seed, "now": now, "rows": rows,
        "transactions_per_user": rows["transactions"] / n_users, "generate_seconds": round(generate_s, 3),
        "append_seconds": round(append_s, 3), "generate_rows_per_second": round(total / generate_s),
        "append_rows_per_second": round(total / append_s), "warehouse_bytes": path.stat().st_size,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def cached_warehouse(out: Path, n_users: int, seed: int, log: Any = print) -> tuple[dict[str, Any], bool]:
    """The manifest of a warehouse already built with these parameters, else build it. (manifest, reused)"""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if (manifest["generator_version"], manifest["users"], manifest["seed"]) == (GENERATOR_VERSION, n_users, seed) \
                and (out / "warehouse.duckdb").exists() and (out / "users.txt").exists():
            return manifest, True
    except (OSError, ValueError, KeyError):
        pass
    return build_warehouse(out, n_users, seed, log=log), False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-users", type=int, default=100_000, help="users per warehouse transaction")
    parser.add_argument("--out", type=Path, required=True, help="folder for warehouse.duckdb, users.txt, manifest")
    args = parser.parse_args()
    manifest = build_warehouse(args.out, args.users, args.seed, args.chunk_users)
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
