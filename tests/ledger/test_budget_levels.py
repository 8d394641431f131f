"""Budget levels on the PostgreSQL ledger: a request is held at its key, its team and its
tenant in tokens and money in one transaction, settled at the price version it was reserved
at, and no level goes over its limit under a concurrent burst across a team's keys, with a
price change in the middle; the audit replays every level and price version clean."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg

from quotaflow.adapters import budget_store as budgets_db
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.events.status import LedgerKind, LevelScope
from quotaflow.ledger import audit
from quotaflow.ledger.audit_levels import compare_levels
from quotaflow.ledger.budgets import Hold, LevelBalance, apply_hold, parse_usd
from quotaflow.ledger.commands import ReleaseReservation, ReserveTokens, SettleReservation
from quotaflow.ledger.store import PostgresLedger

MODEL = "smollm2"


def _key_id(key: str) -> str:
    return key.split("_")[1]


def _audit_findings(conn: psycopg.Connection[Any]) -> list[str]:
    result = audit.replay(conn)
    audit.compare_snapshot(result, conn, None, None)
    compare_levels(result, conn, None)
    return result.findings


def test_a_refusal_names_the_team_and_what_it_has_left(conn: psycopg.Connection[Any],
                                                       ledger: PostgresLedger) -> None:
    tenants.create_tenant(conn, "acme", 1_000_000)
    budgets_db.create_team(conn, "acme", "ml", usd=parse_usd("0.01"))
    key = _key_id(tenants.create_key(conn, "acme", team="ml"))
    budgets_db.set_price(conn, MODEL, parse_usd("10"), parse_usd("30"))
    # 20 * 10 + 80 * 30 = 2600 micro-dollars each: three fit in $0.01, the fourth does not
    outcomes = ledger.reserve([ReserveTokens("acme", f"r{i}", 100, f"h{i}", key, MODEL, 20)
                               for i in range(4)])
    assert [o.kind for o in outcomes] == [LedgerKind.TOKENS_RESERVED] * 3 + [
        LedgerKind.REQUEST_REJECTED]
    assert outcomes[3].reason == ("quota_exceeded: team 'ml' of tenant 'acme' has $0.002200 "
                                  "of $0.010000 left this period")


def test_a_settlement_charges_at_the_price_its_reservation_was_made_at(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    tenants.create_tenant(conn, "acme", 1_000_000)
    key = _key_id(tenants.create_key(conn, "acme", usd=parse_usd("1")))
    budgets_db.set_price(conn, MODEL, parse_usd("1"), parse_usd("2"))
    ledger.reserve([ReserveTokens("acme", "r", 100, "h", key, MODEL, 40)])  # 40 + 120 = 160
    budgets_db.set_price(conn, MODEL, parse_usd("100"), parse_usd("200"))
    ledger.end([SettleReservation("acme", "r", 50, "s")])  # 40 input + 10 output at v1
    period = ledger.current_period("acme")
    (mine, _tenant) = budgets_db.key_levels(conn, key, period)
    assert mine.balance == LevelBalance(0, 50, 0, 60)
    assert _audit_findings(conn) == []


def test_a_burst_across_a_teams_keys_takes_no_level_over_its_limit_through_a_price_change(
        conn: psycopg.Connection[Any], ledger_url: str) -> None:
    tenants.create_tenant(conn, "acme", 40_000, usd=parse_usd("0.20"))
    budgets_db.create_team(conn, "acme", "ml", tokens=6_000, usd=parse_usd("0.05"))
    limits = {_key_id(tenants.create_key(conn, "acme", team="ml", tokens=2_500,
                                         usd=parse_usd("0.02"))): (2_500, 20_000)
              for _ in range(4)}  # the keys' sums (10,000 tokens, $0.08) exceed the team's
    outside = _key_id(tenants.create_key(conn, "acme"))
    budgets_db.set_price(conn, MODEL, parse_usd("10"), parse_usd("30"))
    keys = [*limits, outside]
    half = threading.Barrier(6, timeout=60)

    def client(n: int) -> None:
        rng = random.Random(n)
        with db.connect(ledger_url, autocommit=True) as c:
            mine = PostgresLedger(c)
            for i in range(40):
                if i == 20:
                    if half.wait() == 0:  # one thread changes the price mid-burst
                        budgets_db.set_price(c, MODEL, parse_usd("20"), parse_usd("60"))
                    half.wait()
                rid = f"c{n}-{i}"
                prompt = rng.randint(5, 40)
                (o,) = mine.reserve([ReserveTokens("acme", rid, prompt + rng.randint(10, 150),
                                                   f"h-{rid}", rng.choice(keys), MODEL,
                                                   prompt)])
                if o.accepted and rng.random() < 0.6:
                    mine.end([SettleReservation("acme", rid, rng.randint(0, o.amount), "s")])
                elif o.accepted and rng.random() < 0.5:
                    mine.end([ReleaseReservation("acme", rid, "failed", "x")])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    team = ("team", "acme/ml", 6_000, parse_usd("0.05"))
    caps = {("key", k): v for k, v in limits.items()} | {("team", "acme/ml"): team[2:],
                                                         ("tenant", "acme"): (40_000, 200_000)}
    # Replay in ledger order: no level is ever over a limit, after any event.
    book: dict[tuple[str, str], LevelBalance] = {}
    held: dict[str, Hold] = {}
    versions = set()
    refused_by = set()
    for (kind, rid, amount, released, key_id, team_id, usd, usd_released, version,
         reason) in conn.execute(
            "SELECT kind, request_id, amount, released, key_id, team_id, usd, usd_released, "
            "price_version, reason FROM ledger_events WHERE kind <> 'QuotaGranted' ORDER BY seq"):
        kind = LedgerKind(kind)
        if kind is LedgerKind.REQUEST_REJECTED:
            refused_by.add(reason.split(" of tenant")[0])
            continue
        if kind is LedgerKind.TOKENS_RESERVED:
            versions.add(version)
            hold = held[rid] = Hold(amount, usd)
        elif kind is LedgerKind.RESERVATION_SETTLED:
            hold = Hold(amount + released, usd + usd_released, amount, usd)
        else:
            hold = held[rid]
        levels = [("tenant", "acme"), ("key", key_id)]
        if team_id:
            levels.append(("team", f"acme/{team_id}"))
        for lv in levels:
            b = book[lv] = apply_hold(book.get(lv, LevelBalance()), kind, hold)
            if lv in caps:
                assert b.used_tokens() <= caps[lv][0], (lv, b)
                assert b.used_usd() <= caps[lv][1], (lv, b)
    assert versions == {1, 2}  # reservations were priced at both versions
    assert "quota_exceeded: team 'ml'" in refused_by  # the team's limit was reached
    assert _audit_findings(conn) == []
    # GET /v1/quota's levels: key, team, tenant
    levels = budgets_db.key_levels(conn, keys[0], PostgresLedger(conn).current_period("acme"))
    assert [v.level.scope for v in levels] == [LevelScope.KEY, LevelScope.TEAM,
                                               LevelScope.TENANT]


def test_the_audit_finds_a_tampered_level_balance_and_a_mispriced_reservation(
        conn: psycopg.Connection[Any], ledger: PostgresLedger) -> None:
    tenants.create_tenant(conn, "acme", 1_000_000)
    budgets_db.create_team(conn, "acme", "ml")
    key = _key_id(tenants.create_key(conn, "acme", team="ml"))
    budgets_db.set_price(conn, MODEL, parse_usd("1"), parse_usd("2"))
    ledger.reserve([ReserveTokens("acme", "r", 100, "h", key, MODEL, 40)])
    assert _audit_findings(conn) == []
    conn.execute("UPDATE level_balances SET spent_usd = spent_usd + 1 WHERE scope = 'team'")
    conn.execute("UPDATE ledger_events SET usd = 1 WHERE kind = 'TokensReserved'")
    found = _audit_findings(conn)
    assert any(f.startswith("team acme/ml ") for f in found)
    assert any("its worst case at smollm2 v1 is 160" in f for f in found)


def test_a_keys_principal_carries_its_team_and_the_token_limits_admit_screens(
        conn: psycopg.Connection[Any]) -> None:
    tenants.create_tenant(conn, "acme", 1_000)
    budgets_db.create_team(conn, "acme", "ml", tokens=500)
    in_team = tenants.PostgresTenants(conn).authenticate(
        tenants.create_key(conn, "acme", team="ml", tokens=200))
    alone = tenants.PostgresTenants(conn).authenticate(tenants.create_key(conn, "acme"))
    assert in_team is not None and alone is not None
    assert (in_team.team_id, in_team.key_limit_tokens, in_team.team_limit_tokens) == (
        "ml", 200, 500)
    assert (alone.team_id, alone.key_limit_tokens, alone.team_limit_tokens) == (
        None, None, None)
