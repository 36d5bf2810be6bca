"""Tables of the demo domain and a vectorized, seedable generator of flows.

A flow starts with a quote. About 8 in 10 quotes are bound to a new user; about
8 in 10 bound quotes are paid, which writes a successful transaction and a
policy; about half of the bound, unpaid quotes have a failed payment attempt.
Columns are those of the original service, so its example queries run
unchanged. Dates are epoch seconds; booleans are real booleans.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

# table -> [(column, logical type)]; the one definition every store builds from.
TABLES: dict[str, list[tuple[str, str]]] = {
    "users": [("user_id", "string"), ("name", "string"), ("address", "string"), ("creation_date", "integer")],
    "quotes": [
        ("quote_id", "string"), ("user_id", "string"), ("creation_date", "integer"), ("binding_date", "integer"),
        ("quote_type", "string"), ("quote_device", "string"), ("is_binded", "boolean"), ("is_paid", "boolean"),
    ],
    "transactions": [
        ("transaction_id", "string"), ("user_id", "string"), ("ref_id", "string"), ("ref_type", "string"),
        ("transaction_time", "integer"), ("successful", "boolean"), ("card_number", "string"),
        ("card_expiration_date", "string"), ("card_type", "string"),
    ],
    "policies": [
        ("policy_id", "string"), ("user_id", "string"), ("quote_id", "string"), ("purchase_time", "integer"),
        ("policy_type", "string"), ("policy_device", "string"),
    ],
}

# The column each table's realtime window is cut on, and the columns worth indexing.
TIME_COLUMNS = {"users": "creation_date", "quotes": "creation_date",
                "transactions": "transaction_time", "policies": "purchase_time"}
INDEX_COLUMNS = {"users": ["user_id"], "quotes": ["user_id", "quote_id"],
                 "transactions": ["user_id", "ref_id"], "policies": ["user_id", "quote_id"]}

MAX_FLOW_SECONDS = 2700  # a quote's binding (≤ 30 min) and payment (≤ 15 min) follow within this
QUOTE_TYPES = np.array(["car", "home", "pet", "travel"])
DEVICES = np.array(["ios", "android", "web"])
CARD_TYPES = np.array(["visa", "mastercard", "amex"])
FIRST_NAMES = np.array(["Ada", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo"])
LAST_NAMES = np.array(["Levi", "Cohen", "Smith", "Garcia", "Kim", "Okafor", "Rossi", "Novak"])
STREETS = np.array(["Herzl St", "Main St", "Oak Ave", "Rothschild Blvd", "High St", "Elm Rd"])


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 128-bit ids as 32-character hex strings, drawn from `rng` (a seed makes them reproducible)."""
    hex_text = rng.bytes(16 * n).hex().encode("ascii")
    return np.frombuffer(hex_text, dtype="S32").astype(str).astype(object)


def generate_flows(n_flows: int, seed: int | None = None, now: int | None = None,
                   span_seconds: int = 7 * 86400) -> dict[str, pd.DataFrame]:
    """`n_flows` quote flows as one DataFrame per table, quotes created within `span_seconds` before `now`.

    Binding and payment follow a quote by at most 45 minutes, so quotes are created at
    least that long before `now` (a span shorter than that is widened to it).
    """
    if n_flows < 1:
        raise ValueError("n_flows must be at least 1")
    rng = np.random.default_rng(seed)
    now = int(time.time()) if now is None else now
    n = n_flows
    quote_id = _ids(rng, n)
    latest = now - MAX_FLOW_SECONDS
    created = latest - rng.integers(0, max(span_seconds - MAX_FLOW_SECONDS, 0) + 1, size=n)
    bound = rng.random(n) < 0.8
    paid = bound & (rng.random(n) < 0.8)
    failed_attempt = bound & ~paid & (rng.random(n) < 0.5)
    binding = created + rng.integers(60, 1800, size=n)
    quote_type = QUOTE_TYPES[rng.integers(0, len(QUOTE_TYPES), size=n)]
    device = DEVICES[rng.integers(0, len(DEVICES), size=n)]

    user_ids = np.where(bound, _ids(rng, n), None)
    users = pd.DataFrame({
        "user_id": user_ids[bound],
        "name": (FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), size=n)] + " "
                 + LAST_NAMES[rng.integers(0, len(LAST_NAMES), size=n)])[bound],
        "address": (rng.integers(1, 200, size=n).astype(str) + " "
                    + STREETS[rng.integers(0, len(STREETS), size=n)])[bound],
        "creation_date": binding[bound],
    })
    quotes = pd.DataFrame({
        "quote_id": quote_id, "user_id": user_ids, "creation_date": created,
        "binding_date": pd.Series(binding, dtype="Int64").where(bound),
        "quote_type": quote_type, "quote_device": device, "is_binded": bound, "is_paid": paid,
    })
    charged = paid | failed_attempt
    pay_time = binding + rng.integers(30, 900, size=n)
    transactions = pd.DataFrame({
        "transaction_id": _ids(rng, n)[charged], "user_id": user_ids[charged], "ref_id": quote_id[charged],
        "ref_type": "quote", "transaction_time": pay_time[charged], "successful": paid[charged],
        "card_number": np.char.add("**** **** **** ", rng.integers(1000, 9999, size=n).astype(str))[charged],
        "card_expiration_date": np.char.add(np.char.zfill(rng.integers(1, 13, size=n).astype(str), 2),
                                            np.char.add("/", rng.integers(27, 33, size=n).astype(str)))[charged],
        "card_type": CARD_TYPES[rng.integers(0, len(CARD_TYPES), size=n)][charged],
    })
    policies = pd.DataFrame({
        "policy_id": _ids(rng, n)[paid], "user_id": user_ids[paid], "quote_id": quote_id[paid],
        "purchase_time": pay_time[paid], "policy_type": quote_type[paid], "policy_device": device[paid],
    })
    return {"users": users, "quotes": quotes, "transactions": transactions, "policies": policies}
