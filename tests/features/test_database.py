"""Input from a database through an Ibis connection URL, against the local PostgreSQL server.

The URL comes from CHURN_TEST_POSTGRES_URL (``.ci/run`` sets it); each test works in a database of
its own, created and dropped here, so nothing clashes with other tests using the server.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import ibis
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.contract import DataContractError
from features.pointintime import build_features
from features.sources import load_database, load_mapped, load_tables

from .fixtures import hand_tables, obs

URL = os.environ.get("CHURN_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(not URL, reason="CHURN_TEST_POSTGRES_URL is not set (.ci/run sets "
                                "it to the local PostgreSQL server)")


@pytest.fixture
def database():
    """A fresh database on the server; yields its URL and an Ibis connection to it."""
    import psycopg

    name = f"churn_features_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(URL)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    con = ibis.connect(url)
    try:
        yield url, con
    finally:
        con.disconnect()
        with psycopg.connect(URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@needs_pg
def test_contract_tables_in_postgres_give_the_same_features(database) -> None:
    url, con = database
    local = hand_tables()
    for name in local.available:  # the columns the input had (not those validation added)
        con.create_table(name, local.get(name).drop(columns=list(local.absent_columns[name])))
    remote = load_tables(url)  # the same entry point as a data directory
    assert remote.available == local.available
    pairs = obs(("a", "2024-03-10"), ("b", "2024-03-10"), ("a", "2024-04-01"))
    assert_frame_equal(build_features(remote, pairs), build_features(local, pairs))


@needs_pg
def test_a_mapping_reads_its_sources_from_postgres(database, tmp_path) -> None:
    url, con = database
    con.create_table("crm", pd.DataFrame({"id": ["x", "y"], "created": ["16/10/2023", "3/1/2024"],
                                          "tier": ["gold", "silver"]}))
    con.create_table("billing", pd.DataFrame({
        "customer": ["x", "y"], "start": pd.to_datetime(["2023-10-16", "2024-01-03"]),
        "amount": [120.0, 40.0]}))
    con.create_table("clicks", pd.DataFrame({
        "customer": ["x", "x", "y"], "at": pd.to_datetime(["2024-02-01 10:00", "2024-02-03 00:00", "2024-02-05 00:00"]),
        "feature": ["export", "export", "search"]}))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "tables:\n"
        "  accounts: {from: crm, columns: {account_id: id, plan: tier,"
        " signup_date: {from: created, format: '%d/%m/%Y'}}}\n"
        "  subscriptions: {from: billing, columns: {account_id: customer, start_date: start, mrr: amount}}\n"
        "  usage_events: {from: clicks, columns: {account_id: customer, timestamp: at, event: feature}}\n"
        "features: {key_events: [export]}\n")
    tables = load_mapped(mapping, url)
    assert tables.accounts.signup_date.tolist() == [pd.Timestamp("2023-10-16"), pd.Timestamp("2024-01-03")]
    frame = build_features(tables, obs(("x", "2024-03-01"), ("y", "2024-03-01"))).set_index("account_id")
    assert frame.loc["x", "key_export_30d"] == 2 and frame.loc["y", "events_30d"] == 1
    assert frame.loc["x", "mrr"] == 120 and frame.loc["x", "plan"] == "gold"


@needs_pg
def test_bad_rows_in_the_database_are_named(database) -> None:
    url, con = database
    local = hand_tables()
    con.create_table("accounts", local.accounts)
    con.create_table("subscriptions", local.subscriptions)
    con.create_table("surveys", local.surveys.assign(score=[9, 6, None, 7]))  # csat 7 of 5
    with pytest.raises(DataContractError, match=r"surveys .*column 'score': csat score 7 out of "
                       r"range 1-5 \(rows 3\)"):
        load_database(url)


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DataContractError, match=r"postgresql://postgres:\*\*\*@127.0.0.1:1/none: "
                       "cannot connect"):
        load_tables("postgresql://postgres:secret@127.0.0.1:1/none")
