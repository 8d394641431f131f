"""Budget levels and prices in PostgreSQL (infra/migrations/0006_budget_levels.sql): teams,
the limits of keys and teams, price versions, and each level's balance as the ledger leaves
it. The decisions themselves are the ledger's (`ledger_reserve`); this module writes the
configuration they read and reads the balances back for `GET /v1/quota` and the CLI."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors

from quotaflow.adapters.postgres import OnConnection
from quotaflow.adapters.tenant_store import _NAME, UnknownTenant
from quotaflow.events.status import LevelScope
from quotaflow.ledger.budgets import Level, LevelBalance, LevelView, Price


class TeamExists(ValueError):
    """The tenant already has a team of that name."""


def _limit(value: int | None, what: str) -> int | None:
    if value is not None and value < 0:
        raise ValueError(f"{what} must not be negative")
    return value


def create_team(conn: psycopg.Connection[Any], tenant: str, team: str,
                tokens: int | None = None, usd: int | None = None) -> None:
    """A team of `tenant`, limited to `tokens` and `usd` micro-dollars per period (None:
    unlimited at the team; the tenant's limits still apply)."""
    if not _NAME.match(team):
        raise ValueError("team name must be 1-63 of a-z, 0-9 and '-', starting alphanumeric")
    try:
        row = conn.execute(
            "INSERT INTO teams (tenant_id, team_id, limit_tokens, limit_usd) "
            "SELECT tenant_id, %s, %s, %s FROM tenants WHERE tenant_id = %s RETURNING team_id",
            (team, _limit(tokens, "tokens"), _limit(usd, "usd"), tenant)).fetchone()
    except errors.UniqueViolation:
        raise TeamExists(f"tenant {tenant!r} already has a team {team!r}") from None
    if row is None:
        raise UnknownTenant(f"no tenant {tenant!r}")


def set_price(conn: psycopg.Connection[Any], model: str, input_per_mtok: int,
              output_per_mtok: int) -> Price:
    """A new price version of `model` (micro-dollars per million tokens), in force for every
    reservation decided after it commits; reservations made before keep theirs."""
    if not model or input_per_mtok < 0 or output_per_mtok < 0:
        raise ValueError("a price needs a model and prices >= 0")
    for _ in range(5):  # two setters racing for the same version: the loser takes the next
        try:
            row = conn.execute(
                "INSERT INTO prices (model, version, input_per_mtok, output_per_mtok) "
                "SELECT %s, coalesce(max(version), 0) + 1, %s, %s FROM prices WHERE model = %s "
                "RETURNING version", (model, input_per_mtok, output_per_mtok, model)).fetchone()
        except errors.UniqueViolation:
            continue
        assert row is not None
        return Price(model, int(row[0]), input_per_mtok, output_per_mtok)
    raise RuntimeError("could not take a price version: too many concurrent setters")


def list_prices(conn: psycopg.Connection[Any], model: str | None = None) -> list[Price]:
    """Every price version, by model then version."""
    rows = conn.execute("SELECT model, version, input_per_mtok, output_per_mtok FROM prices "
                        "WHERE %s::text IS NULL OR model = %s ORDER BY model, version",
                        (model, model)).fetchall()
    return [Price(*r) for r in rows]


def key_levels(conn: psycopg.Connection[Any], key_id: str,
               period: str | None = None) -> list[LevelView]:
    """The levels of key `key_id` in `period` (default: its tenant's current one, in the
    tenant's zone, by the ledger's clock), in the order key, team, tenant. The tenant's token
    limit is its grant for the period (the ledger's `balances`)."""
    row = conn.execute(
        "SELECT k.tenant_id, k.team_id, k.limit_tokens, k.limit_usd, tm.limit_tokens, "
        "tm.limit_usd, t.limit_usd, coalesce(b.granted, t.grant_tokens), p.period "
        "FROM api_keys k JOIN tenants t USING (tenant_id) "
        "CROSS JOIN LATERAL (SELECT coalesce(%s, ledger_period(t.plan_period, t.time_zone, "
        "now())) AS period) p "
        "LEFT JOIN teams tm ON tm.tenant_id = k.tenant_id AND tm.team_id = k.team_id "
        "LEFT JOIN balances b ON b.tenant_id = k.tenant_id AND b.period = p.period "
        "WHERE k.key_id = %s", (period, key_id)).fetchone()
    if row is None:
        return []
    tenant, team, period = row[0], row[1], row[8]
    levels = [Level(LevelScope.KEY, key_id, tenant, row[2], row[3])]
    if team is not None:
        levels.append(Level(LevelScope.TEAM, team, tenant, row[4], row[5]))
    levels.append(Level(LevelScope.TENANT, tenant, tenant, int(row[7]), row[6]))
    ids = [f"{tenant}/{lv.id}" if lv.scope is LevelScope.TEAM else lv.id for lv in levels]
    found = {(r[0], r[1]): LevelBalance(*r[2:]) for r in conn.execute(
        "SELECT scope, level_id, reserved_tokens, spent_tokens, reserved_usd, spent_usd "
        "FROM level_balances WHERE period = %s AND (scope, level_id) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        (period, [lv.scope.value for lv in levels], ids)).fetchall()}
    return [LevelView(lv, found.get((lv.scope.value, i), LevelBalance()), period)
            for lv, i in zip(levels, ids, strict=True)]


class PostgresLevels(OnConnection):
    """The `LevelReader` `GET /v1/quota` reads: a key's levels from the ledger's snapshot."""

    def levels(self, key_id: str) -> list[LevelView]:
        return key_levels(self.conn, key_id)
