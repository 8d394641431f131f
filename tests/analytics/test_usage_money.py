"""Money and teams in the usage roll-ups on the real PostgreSQL: a tenant's settlements, priced
by the ledger at the price in force, are rolled up by `PostgresUsageStore` with the money they
charged; `usage` sums it as a decimal string of dollars, per team (a key's team, from
`api_keys`; a key in no team is the row of none) or per key."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from quotaflow.adapters import budget_store, tenant_store
from quotaflow.analytics.query import UsageQuery
from quotaflow.analytics.rollup import Batch
from quotaflow.analytics.store import LEDGER_ENTRY_COLUMNS, PostgresUsageStore
from quotaflow.events.payloads import LedgerEntry
from quotaflow.events.status import LedgerKind
from quotaflow.ledger.budgets import parse_usd
from quotaflow.ledger.commands import ReserveTokens, SettleReservation
from quotaflow.ledger.store import PostgresLedger

pytestmark = pytest.mark.slow
MODEL = "smollm2"


def request(conn: psycopg.Connection[Any], key: str, rid: str, tokens: int) -> None:
    """A recorded request of `key`, held and settled at `tokens` (a fifth of them input)."""
    conn.execute("INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                 "payload_hash, status, model) VALUES (%s, 'acme', %s, 'test', %s, 'h', "
                 "'completed', %s)", (rid, key, rid, MODEL))
    ledger = PostgresLedger(conn)
    ledger.reserve([ReserveTokens("acme", rid, tokens, f"r-{rid}", key, MODEL, tokens // 5)])
    ledger.end([SettleReservation("acme", rid, tokens, f"s-{rid}")])


def roll_up(conn: psycopg.Connection[Any]) -> PostgresUsageStore:
    store = PostgresUsageStore(conn)
    rows = conn.execute(f"SELECT {LEDGER_ENTRY_COLUMNS} FROM ledger_events e "
                        "ORDER BY e.seq").fetchall()
    store.apply(Batch("test", ledger=[LedgerEntry(r[0], r[1], r[2], LedgerKind(r[3]), *r[4:])
                                      for r in rows]))
    return store


def test_usage_sums_the_money_charged_per_team_and_per_key(
        conn: psycopg.Connection[Any]) -> None:
    tenant_store.create_tenant(conn, "acme", 1_000_000)
    for team in ("ml", "web"):
        budget_store.create_team(conn, "acme", team)
    ml = tenant_store.create_key(conn, "acme", team="ml").split("_")[1]
    web = tenant_store.create_key(conn, "acme", team="web").split("_")[1]
    lone = tenant_store.create_key(conn, "acme").split("_")[1]
    budget_store.set_price(conn, MODEL, parse_usd("10"), parse_usd("30"))
    # 100 tokens: 20 in at $10/M and 80 out at $30/M = $0.0026; 1000 tokens: $0.026
    for i, (key, tokens) in enumerate([(ml, 100), (ml, 100), (web, 1000), (lone, 100)]):
        request(conn, key, f"r{i}", tokens)
    store = roll_up(conn)

    by_team = store.usage(UsageQuery("acme", "day", "team"))
    assert [(r["team"], r["charged_tokens"], r["charged_usd"]) for r in by_team] == [
        (None, 100, "0.002600"), ("ml", 200, "0.005200"), ("web", 1000, "0.026000")]
    by_key = {r["key"]: r["charged_usd"] for r in store.usage(UsageQuery("acme", "day", "key"))}
    assert by_key == {ml: "0.005200", web: "0.026000", lone: "0.002600", None: "0.000000"}
    (total,) = store.usage(UsageQuery("acme", "day"))
    assert total["charged_usd"] == "0.033800"
