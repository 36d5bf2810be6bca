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
import pyarrow as pa
import pyarrow.compute as pc

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


_STRING = pd.StringDtype(na_value=np.nan)  # pandas' default `str` dtype, Arrow-backed
_SPACE, _SLASH, _CARD_PREFIX = (pa.scalar(text, pa.large_string()) for text in (" ", "/", "**** **** **** "))


def _ids(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 128-bit ids as 32-character hex strings, drawn from `rng` (a seed makes them reproducible).

    Built as an Arrow string array straight from the hex text (fixed offsets): no Python strings.
    """
    hex_text = rng.bytes(16 * n).hex().encode("ascii")
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(hex_text))


def _choice(words: np.ndarray, rng: np.random.Generator, n: int) -> pa.Array:
    """n words drawn uniformly from `words`, as Arrow strings."""
    return pa.array(words, pa.large_string()).take(rng.integers(0, len(words), size=n))


def _digits(numbers: np.ndarray) -> pa.Array:
    return pc.cast(numbers, pa.large_string())


def _text(values: pa.Array) -> pd.api.extensions.ExtensionArray:
    """An Arrow string array as the pandas column `str` dtype would give (missing values NaN)."""
    return pd.array(values, dtype=_STRING)


def generate_flows(n_flows: int, seed: int | None = None, now: int | None = None,
                   span_seconds: int = 7 * 86400) -> dict[str, pd.DataFrame]:
    """`n_flows` quote flows as one DataFrame per table, quotes created within `span_seconds` before `now`.

    Binding and payment follow a quote by at most 45 minutes, so quotes are created at
    least that long before `now` (a span shorter than that is widened to it). Text columns
    are built in Arrow (pandas' `str` dtype), numbers and booleans in numpy.
    """
    if n_flows < 1:
        raise ValueError("n_flows must be at least 1")
    rng = np.random.default_rng(seed)  # the draws below keep their order: a seed gives the same flows
    now = int(time.time()) if now is None else now
    n = n_flows
    quote_id = _ids(rng, n)
    latest = now - MAX_FLOW_SECONDS
    created = latest - rng.integers(0, max(span_seconds - MAX_FLOW_SECONDS, 0) + 1, size=n)
    bound = rng.random(n) < 0.8
    paid = bound & (rng.random(n) < 0.8)
    failed_attempt = bound & ~paid & (rng.random(n) < 0.5)
    binding = created + rng.integers(60, 1800, size=n)
    quote_type = _choice(QUOTE_TYPES, rng, n)
    device = _choice(DEVICES, rng, n)

    user_ids = pc.if_else(bound, _ids(rng, n), pa.scalar(None, pa.large_string()))
    names = pc.binary_join_element_wise(_choice(FIRST_NAMES, rng, n), _choice(LAST_NAMES, rng, n), _SPACE)
    addresses = pc.binary_join_element_wise(_digits(rng.integers(1, 200, size=n)), _choice(STREETS, rng, n),
                                            _SPACE)
    users = pd.DataFrame({
        "user_id": _text(user_ids.filter(bound)), "name": _text(names.filter(bound)),
        "address": _text(addresses.filter(bound)), "creation_date": binding[bound],
    })
    quotes = pd.DataFrame({
        "quote_id": _text(quote_id), "user_id": _text(user_ids), "creation_date": created,
        "binding_date": pd.Series(binding, dtype="Int64").where(bound),
        "quote_type": _text(quote_type), "quote_device": _text(device), "is_binded": bound, "is_paid": paid,
    })
    charged = paid | failed_attempt
    pay_time = binding + rng.integers(30, 900, size=n)
    transaction_ids = _ids(rng, n)
    card_numbers = pc.binary_join_element_wise(_CARD_PREFIX, _digits(rng.integers(1000, 9999, size=n)),
                                               pa.scalar("", pa.large_string()))
    months = pc.utf8_lpad(_digits(rng.integers(1, 13, size=n)), 2, "0")
    expirations = pc.binary_join_element_wise(months, _digits(rng.integers(27, 33, size=n)), _SLASH)
    transactions = pd.DataFrame({
        "transaction_id": _text(transaction_ids.filter(charged)), "user_id": _text(user_ids.filter(charged)),
        "ref_id": _text(quote_id.filter(charged)), "ref_type": "quote", "transaction_time": pay_time[charged],
        "successful": paid[charged], "card_number": _text(card_numbers.filter(charged)),
        "card_expiration_date": _text(expirations.filter(charged)),
        "card_type": _text(_choice(CARD_TYPES, rng, n).filter(charged)),
    })
    policies = pd.DataFrame({
        "policy_id": _text(_ids(rng, n).filter(paid)), "user_id": _text(user_ids.filter(paid)),
        "quote_id": _text(quote_id.filter(paid)), "purchase_time": pay_time[paid],
        "policy_type": _text(quote_type.filter(paid)), "policy_device": _text(device.filter(paid)),
    })
    return {"users": users, "quotes": quotes, "transactions": transactions, "policies": policies}
