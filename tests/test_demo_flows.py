"""The demo generator: reproducible, shaped as TABLES says, and internally consistent flows."""
from __future__ import annotations

import pandas as pd
import pytest

from demo.flows import MAX_FLOW_SECONDS, TABLES, TIME_COLUMNS, generate_flows

NOW = 1_700_000_000
DAY = 86400
DATE_COLUMNS = {"users": ["creation_date"], "quotes": ["creation_date", "binding_date"],
                "transactions": ["transaction_time"], "policies": ["purchase_time"]}
ID_COLUMNS = {"users": "user_id", "quotes": "quote_id", "transactions": "transaction_id", "policies": "policy_id"}


@pytest.fixture(scope="module")
def flows() -> dict[str, pd.DataFrame]:
    return generate_flows(20_000, seed=42, now=NOW)


def test_same_seed_gives_equal_frames() -> None:
    first, second = generate_flows(500, seed=7, now=NOW), generate_flows(500, seed=7, now=NOW)
    assert set(first) == set(second) == set(TABLES)
    for table in TABLES:
        pd.testing.assert_frame_equal(first[table], second[table])


def test_different_seeds_give_different_frames() -> None:
    first, second = generate_flows(500, seed=7, now=NOW), generate_flows(500, seed=8, now=NOW)
    assert set(first["quotes"]["quote_id"]).isdisjoint(second["quotes"]["quote_id"])
    assert not first["quotes"]["creation_date"].equals(second["quotes"]["creation_date"])


def test_columns_are_exactly_those_of_tables(flows: dict[str, pd.DataFrame]) -> None:
    assert list(flows) == list(TABLES)
    for table, columns in TABLES.items():
        assert list(flows[table].columns) == [name for name, _ in columns], table
    assert set(TIME_COLUMNS) == set(TABLES)


def test_booleans_are_real_bool_dtype(flows: dict[str, pd.DataFrame]) -> None:
    for table, columns in TABLES.items():
        for name, kind in columns:
            if kind == "boolean":
                assert flows[table][name].dtype == bool, (table, name, flows[table][name].dtype)


def test_declared_types_match_the_values(flows: dict[str, pd.DataFrame]) -> None:
    for table, columns in TABLES.items():
        for name, kind in columns:
            series = flows[table][name]
            if kind == "integer":
                assert pd.api.types.is_integer_dtype(series.dtype), (table, name, series.dtype)
            elif kind == "string":
                assert series.dropna().map(type).eq(str).all(), (table, name)


def test_ratios(flows: dict[str, pd.DataFrame]) -> None:
    quotes = flows["quotes"]
    bound = quotes["is_binded"]
    assert len(quotes) == 20_000
    assert bound.mean() == pytest.approx(0.8, abs=0.02)
    assert quotes.loc[bound, "is_paid"].mean() == pytest.approx(0.8, abs=0.02)
    assert not (quotes["is_paid"] & ~bound).any()


def test_every_policy_has_its_quote_and_a_successful_transaction(flows: dict[str, pd.DataFrame]) -> None:
    quotes = flows["quotes"].set_index("quote_id")
    policies, transactions = flows["policies"], flows["transactions"]
    assert policies["quote_id"].isin(quotes.index).all()
    assert quotes.loc[policies["quote_id"], "is_paid"].all()
    assert (quotes.loc[policies["quote_id"], "user_id"].to_numpy() == policies["user_id"].to_numpy()).all()
    assert len(policies) == int(quotes["is_paid"].sum())
    ok = transactions[transactions["successful"]]
    assert (ok["ref_type"] == "quote").all()
    paid_refs = ok.set_index("ref_id")
    assert policies["quote_id"].isin(paid_refs.index).all()
    assert (paid_refs.loc[policies["quote_id"], "user_id"].to_numpy() == policies["user_id"].to_numpy()).all()
    assert len(ok) == len(policies)


def test_every_user_has_exactly_one_bound_quote(flows: dict[str, pd.DataFrame]) -> None:
    quotes, users = flows["quotes"], flows["users"]
    bound = quotes[quotes["is_binded"]]
    assert bound["user_id"].notna().all()
    assert sorted(bound["user_id"]) == sorted(users["user_id"])
    per_user = bound.groupby("user_id").size()
    assert (per_user == 1).all() and len(per_user) == len(users)
    joined = users.merge(bound, on="user_id", suffixes=("_user", "_quote"))
    assert (joined["creation_date_user"] == joined["binding_date"]).all()


def test_unbound_quotes_have_no_user_and_no_binding_date(flows: dict[str, pd.DataFrame]) -> None:
    quotes = flows["quotes"]
    unbound = quotes[~quotes["is_binded"]]
    assert len(unbound) > 0
    assert unbound["user_id"].isna().all() and unbound["binding_date"].isna().all()
    bound = quotes[quotes["is_binded"]]
    assert bound["binding_date"].notna().all()
    assert (bound["binding_date"] > bound["creation_date"]).all()


def test_failed_transactions_exist_and_have_no_policy(flows: dict[str, pd.DataFrame]) -> None:
    transactions, quotes = flows["transactions"], flows["quotes"].set_index("quote_id")
    failed = transactions[~transactions["successful"]]
    assert len(failed) > 0
    assert not failed["ref_id"].isin(flows["policies"]["quote_id"]).any()
    refs = quotes.loc[failed["ref_id"]]
    assert refs["is_binded"].all() and not refs["is_paid"].any()
    assert transactions["ref_id"].is_unique  # at most one payment attempt per quote


def _all_dates(flows: dict[str, pd.DataFrame]) -> dict[tuple[str, str], pd.Series]:
    return {(table, name): flows[table][name].dropna() for table, names in DATE_COLUMNS.items() for name in names}


@pytest.mark.parametrize("span", [7 * DAY, DAY, 2 * 3600, MAX_FLOW_SECONDS + 1])
def test_dates_are_epoch_seconds_within_the_span_and_never_after_now(span: int) -> None:
    flows = generate_flows(2_000, seed=3, now=NOW, span_seconds=span)
    created = flows["quotes"]["creation_date"]
    assert created.between(NOW - span, NOW - MAX_FLOW_SECONDS).all(), (created.min(), created.max())
    # The window is used, not just respected: both ends are approached (2,000 draws over the range).
    slack = max((span - MAX_FLOW_SECONDS) // 50, 0)
    assert created.min() <= NOW - span + slack and created.max() >= NOW - MAX_FLOW_SECONDS - slack
    for (table, name), values in _all_dates(flows).items():
        assert pd.api.types.is_integer_dtype(flows[table][name].dtype), (table, name)
        assert len(values) and values.between(NOW - span, NOW).all(), (table, name, values.min(), values.max())


@pytest.mark.parametrize("span", [0, 1, 600, MAX_FLOW_SECONDS - 1, MAX_FLOW_SECONDS])
def test_a_span_shorter_than_a_flow_is_widened_to_it(span: int) -> None:
    """Quotes fall in [now - max(span, 2700), now - 2700]: a short span puts them all at now - 2700."""
    flows = generate_flows(500, seed=3, now=NOW, span_seconds=span)
    assert (flows["quotes"]["creation_date"] == NOW - MAX_FLOW_SECONDS).all()
    for (table, name), values in _all_dates(flows).items():
        assert len(values) and values.between(NOW - MAX_FLOW_SECONDS, NOW).all(), (table, name, values.max())


@pytest.mark.parametrize("seed", range(5))
def test_binding_and_payment_follow_the_quote_and_never_pass_now(seed: int) -> None:
    """The latest possible quote (now - 2700) still binds (<= 30 min) and pays (<= 15 min) by now."""
    flows = generate_flows(3_000, seed=seed, now=NOW, span_seconds=0)
    quotes = flows["quotes"].set_index("quote_id")
    bound = quotes[quotes["is_binded"]]
    assert len(bound) > 0
    assert ((bound["binding_date"] - bound["creation_date"]).between(1, 1800)).all()
    transactions = flows["transactions"]
    binding = quotes.loc[transactions["ref_id"], "binding_date"].to_numpy()
    delay = transactions["transaction_time"].to_numpy() - binding
    assert len(delay) > 0 and (delay > 0).all() and (delay <= 900).all()
    policies = flows["policies"]
    paid_at = transactions.set_index("ref_id").loc[policies["quote_id"], "transaction_time"].to_numpy()
    assert (policies["purchase_time"].to_numpy() == paid_at).all()
    latest = max(int(values.max()) for values in _all_dates(flows).values())
    assert latest <= NOW


def test_ids_are_unique(flows: dict[str, pd.DataFrame]) -> None:
    for table, column in ID_COLUMNS.items():
        ids = flows[table][column]
        assert ids.notna().all() and ids.is_unique, table
        assert ids.str.fullmatch(r"[0-9a-f]{32}").all(), table


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_batches_keep_the_columns(n: int) -> None:
    flows = generate_flows(n, seed=1, now=NOW)
    assert len(flows["quotes"]) == n
    for table, columns in TABLES.items():
        assert list(flows[table].columns) == [name for name, _ in columns]


@pytest.mark.parametrize("n", [0, -1])
def test_fewer_than_one_flow_is_refused(n: int) -> None:
    """The API never asks for 0 (publish requires n_flows >= 1), so the generator refuses it."""
    with pytest.raises(ValueError, match="at least 1"):
        generate_flows(n, seed=1, now=NOW)
