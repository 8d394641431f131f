"""The budget levels of the in-memory ledger (`MemoryLedger`), built only on
`quotaflow.ledger.budgets`: teams, key limits, a tenant's money limit, price versions, and each
level's balance per period. It decides what `ledger_reserve` decides
(infra/migrations/0006_budget_levels.sql) in the same order: key, team, then the tenant's
tokens (its grant; refused as plain `quota_exceeded`, as before levels), then its money."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from quotaflow.events.status import LedgerKind, LevelScope
from quotaflow.ledger import budgets
from quotaflow.ledger.budgets import (
    FREE,
    Hold,
    Level,
    LevelBalance,
    LevelView,
    Price,
    Refusal,
)
from quotaflow.ledger.level_projection import LevelRow


@dataclass(frozen=True)
class Priced:
    """What a reservation holds in money and what it was priced from (its events carry it)."""

    key_id: str | None = None
    team_id: str | None = None
    usd: int = 0
    model: str | None = None
    price_version: int | None = None
    input_tokens: int | None = None
    price: Price = FREE


@dataclass
class MemoryBudgets:
    """Teams, keys, prices and level balances in dictionaries."""

    tenant_usd: dict[str, int | None] = field(default_factory=dict)
    teams: dict[tuple[str, str], Level] = field(default_factory=dict)
    keys: dict[str, tuple[Level, str | None]] = field(default_factory=dict)  # level, team
    prices: dict[str, list[Price]] = field(default_factory=dict)
    book: dict[tuple[LevelScope, str, str], LevelBalance] = field(default_factory=dict)
    key_tenants: dict[str, str] = field(default_factory=dict)  # every key a book holds

    def add_team(self, tenant: str, team: str, tokens: int | None, usd: int | None) -> None:
        if (tenant, team) in self.teams:
            raise ValueError(f"tenant {tenant!r} already has a team {team!r}")
        self.teams[(tenant, team)] = Level(LevelScope.TEAM, team, tenant, tokens, usd)

    def add_key(self, tenant: str, key_id: str, team: str | None, tokens: int | None,
                usd: int | None) -> None:
        if team is not None and (tenant, team) not in self.teams:
            raise LookupError(f"tenant {tenant!r} has no team {team!r}")
        self.keys[key_id] = (Level(LevelScope.KEY, key_id, tenant, tokens, usd), team)

    def set_price(self, model: str, input_per_mtok: int, output_per_mtok: int) -> Price:
        versions = self.prices.setdefault(model, [])
        versions.append(Price(model, len(versions) + 1, input_per_mtok, output_per_mtok))
        return versions[-1]

    def price(self, model: str) -> Price | None:
        versions = self.prices.get(model)
        return versions[-1] if versions else None

    def levels(self, tenant: str, key_id: str | None) -> tuple[list[Level], Level, str | None]:
        """The key's and team's levels (in that order), the tenant's money level, the team."""
        out: list[Level] = []
        team = None
        if key_id is not None:
            key, team = self.keys.get(key_id, (Level(LevelScope.KEY, key_id, tenant), None))
            if key.tenant != tenant:
                key, team = Level(LevelScope.KEY, key_id, tenant), None
            out.append(key)
            if team is not None:
                out.append(self.teams[(tenant, team)])
        return out, Level(LevelScope.TENANT, tenant, tenant, None,
                          self.tenant_usd.get(tenant)), team

    def price_of(self, tenant: str, key_id: str | None, model: str, input_tokens: int,
                 amount: int) -> Priced:
        price = self.price(model)
        team = self.levels(tenant, key_id)[2]
        usd = budgets.worst_case_usd(price or FREE, max(0, input_tokens),
                                     max(0, amount - input_tokens))
        return Priced(key_id, team, usd, model or None, price.version if price else None,
                      input_tokens, price or FREE)

    def refuse_at(self, levels: list[Level], period: str, tokens: int,
                  usd: int) -> Refusal | None:
        return budgets.decide_levels([(lv, self.balance(lv, period)) for lv in levels],
                                     tokens, usd)

    def balance(self, lv: Level, period: str) -> LevelBalance:
        return self.book.get((*lv.key, period), LevelBalance())

    def views(self, key_id: str, period: Callable[[str], str],
              granted: Callable[[str, str], int]) -> list[LevelView]:
        """Key `key_id`'s levels in its tenant's `period`, the tenant's tokens limited by its
        `granted` tokens (`LevelReader`)."""
        found = self.keys.get(key_id)
        if found is None:
            return []
        key, team = found
        p = period(key.tenant)
        levels = [key] + ([self.teams[(key.tenant, team)]] if team is not None else [])
        levels.append(Level(LevelScope.TENANT, key.tenant, key.tenant, granted(key.tenant, p),
                            self.tenant_usd.get(key.tenant)))
        return [LevelView(lv, self.balance(lv, p), p) for lv in levels]

    def apply(self, tenant: str, period: str, kind: LedgerKind, hold: Hold,
              p: Priced) -> None:
        """Move every level a reservation's event touches (budgets.apply_hold)."""
        ids = [(LevelScope.TENANT, tenant)]
        if p.key_id is not None:
            ids.append((LevelScope.KEY, p.key_id))
            self.key_tenants[p.key_id] = tenant
        if p.team_id is not None:
            ids.append((LevelScope.TEAM, f"{tenant}/{p.team_id}"))
        for scope, level_id in ids:
            k = (scope, level_id, period)
            self.book[k] = budgets.apply_hold(self.book.get(k, LevelBalance()), kind, hold)

    def rows(self, periods: Sequence[tuple[str, str]]) -> list[LevelRow]:
        """The book's levels of these (tenant, period)s (`Ledger.level_snapshot`)."""
        wanted = set(periods)
        out = []
        for (scope, level_id, period), b in sorted(self.book.items()):
            tenant = (self.key_tenants[level_id] if scope is LevelScope.KEY
                      else level_id.partition("/")[0])
            if (tenant, period) in wanted:
                out.append(LevelRow(tenant, scope, level_id, period, b))
        return out
