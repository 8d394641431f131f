"""An in-memory `Ledger` built only on `quotaflow.ledger.domain`, by a `Clock`.

It promises what the PostgreSQL store promises (infra/migrations/0002_ledger_functions.sql):
idempotency by (request id, command) with the payload hash, the same command twice in a batch
answered once, a period's first decision granting the plan, reservations that end exactly
once, and the same refusal reasons. tests/ledger/test_sql_rules.py checks the SQL against it on
random batches; the unit tests run the handlers on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from quotaflow.adapters.memory.budgets import MemoryBudgets, Priced
from quotaflow.events.status import LedgerReason
from quotaflow.ledger import budgets, domain
from quotaflow.ledger.budgets import Hold, LevelView, Price
from quotaflow.ledger.commands import (
    EndCommand,
    Outcome,
    ReserveTokens,
    SettleReservation,
    StoredEvent,
)
from quotaflow.ledger.domain import Balance, Kind, LedgerEvent, Reservation
from quotaflow.ledger.level_projection import LevelRow
from quotaflow.ports import Clock

CONFLICT = LedgerReason.IDEMPOTENCY_CONFLICT
C = TypeVar("C", ReserveTokens, EndCommand)


@dataclass(frozen=True)
class _Plan:
    plan_period: str  # day or month
    grant_tokens: int
    time_zone: str = "UTC"


class MemoryLedger:
    """The whole ledger in dictionaries; each call decides its batch at one moment of `clock`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._plans: dict[str, _Plan] = {}
        self._balances: dict[tuple[str, str], Balance] = {}
        self._reservations: dict[str, Reservation] = {}
        self._reserved_at: dict[str, datetime] = {}
        self._records: dict[tuple[str, str], tuple[str, Outcome]] = {}
        self._events: list[StoredEvent] = []
        self._versions: dict[str, int] = {}
        self.budgets = MemoryBudgets()
        self._priced: dict[str, Priced] = {}  # by request id: what its reservation holds

    def add_tenant(self, tenant: str, grant_tokens: int, plan_period: str = "month",
                   usd: int | None = None, time_zone: str = "UTC") -> None:
        """A tenant with a recurring grant per period (and at most `usd` micro-dollars a
        period), granted now for the current period in its `time_zone`."""
        if tenant in self._plans:
            raise ValueError(f"tenant {tenant!r} exists")
        if grant_tokens < 0:
            raise ValueError("tokens must not be negative")
        budgets.period_in_zone(plan_period, self.clock.now(), time_zone)  # day or month
        self._plans[tenant] = _Plan(plan_period, grant_tokens, time_zone)
        self.budgets.tenant_usd[tenant] = usd
        self.grant(tenant, grant_tokens)

    def add_team(self, tenant: str, team: str, tokens: int | None = None,
                 usd: int | None = None) -> None:
        """A team of `tenant` with its own limits per period (None: unlimited there)."""
        self.budgets.add_team(tenant, team, tokens, usd)

    def add_key(self, tenant: str, key_id: str, team: str | None = None,
                tokens: int | None = None, usd: int | None = None) -> None:
        """Key `key_id` of `tenant`, in its `team`, with its own limits per period."""
        self.budgets.add_key(tenant, key_id, team, tokens, usd)

    def set_price(self, model: str, input_per_mtok: int, output_per_mtok: int) -> Price:
        """A new price version of `model`, in force for reservations decided after it."""
        return self.budgets.set_price(model, input_per_mtok, output_per_mtok)

    # -- commands ---------------------------------------------------------------------

    def reserve(self, commands: Sequence[ReserveTokens]) -> list[Outcome]:
        """Reserve each command's tokens or reject it; one outcome per command, in order."""
        now = self.clock.now()
        return self._decide("reserve", commands, lambda c: self._reserve_one(c, now))

    def end(self, commands: Sequence[EndCommand]) -> list[Outcome]:
        """Settle or release reservations; an ended or expired one is refused."""
        return self._decide("end", commands, self._end_one)

    def expire_stale(self, ttl_s: int, limit: int = 1000) -> list[Outcome]:
        """Expire open reservations older than `ttl_s` by the clock, oldest first."""
        cutoff = self.clock.now() - timedelta(seconds=ttl_s)
        stale = sorted((at, rid) for rid, at in self._reserved_at.items()
                       if at < cutoff and self._reservations[rid].ended is None)[:limit]
        out = []
        for _, rid in stale:
            ev = domain.decide_expire(self._reservations[rid])
            p = self._priced.get(rid, Priced())
            seq = self._append(ev, p, p.usd)
            out.append(Outcome(rid, ev.tenant, ev.kind, ev.period, ev.amount, 0, seq,
                               ev.reason, ev.amount))
        return out

    def grant(self, tenant: str, tokens: int, period: str | None = None) -> Outcome:
        """Grant `tokens` to `tenant` for `period` (default: its current period)."""
        if tenant not in self._plans:
            raise LookupError(f"unknown tenant {tenant!r}")
        period = self.current_period(tenant) if period is None else period
        seq = self._append(LedgerEvent(Kind.QUOTA_GRANTED, tenant, period, tokens))
        return Outcome("", tenant, Kind.QUOTA_GRANTED, period, tokens, 0, seq)

    # -- reads ------------------------------------------------------------------------

    def balance(self, tenant: str, period: str) -> Balance:
        return self._balances.get((tenant, period), Balance())

    def current_period(self, tenant: str) -> str:
        """The tenant's billing period now, by the clock."""
        plan = self._plans.get(tenant)
        if plan is None:
            raise LookupError(f"unknown tenant {tenant!r}")
        return budgets.period_in_zone(plan.plan_period, self.clock.now(), plan.time_zone)

    def levels(self, key_id: str) -> list[LevelView]:
        """Key `key_id`'s budget levels now (`LevelReader`)."""
        return self.budgets.views(key_id, self.current_period,
                                  lambda t, p: self.balance(t, p).granted)

    def events_after(self, seq: int, limit: int = 10_000) -> list[StoredEvent]:
        """Events above `seq`, in sequence order (sequence numbers are 1, 2, ...)."""
        start = max(seq, 0)
        return self._events[start:start + limit]

    def level_snapshot(self, periods: Sequence[tuple[str, str]]) -> tuple[int, list[LevelRow]]:
        """The budget levels of these (tenant, period)s, and the last sequence they include."""
        return self._events[-1].seq if self._events else 0, self.budgets.rows(periods)

    # -- internals --------------------------------------------------------------------

    def balance_snapshot(self, after: tuple[str, str],
                         limit: int) -> tuple[int, list[tuple[str, str, Balance]]]:
        """Up to `limit` balances after (tenant, period) in key order, and the last sequence
        they include."""
        keys = sorted(k for k in self._balances if k > after)[:limit]
        last = self._events[-1].seq if self._events else 0
        return last, [(t, p, self._balances[(t, p)]) for t, p in keys]

    def _decide(self, command: str, batch: Sequence[C],
                decide: Callable[[C], Outcome]) -> list[Outcome]:
        out: list[Outcome] = []
        decided: dict[str, tuple[str, Outcome]] = {}
        for c in batch:
            first = self._records.get((c.request_id, command)) or decided.get(c.request_id)
            if first is not None:
                same = first[0] == c.payload_hash
                out.append(first[1] if same else
                           Outcome(c.request_id, c.tenant, None, "", 0, reason=CONFLICT))
                continue
            outcome = decide(c)
            decided[c.request_id] = (c.payload_hash, outcome)
            out.append(outcome)
        self._records.update(((rid, command), v) for rid, v in decided.items())
        return out

    def _reserve_one(self, c: ReserveTokens, now: datetime) -> Outcome:
        plan = self._plans.get(c.tenant)
        if plan is None:
            return Outcome(c.request_id, c.tenant, None, "", c.amount,
                           reason=LedgerReason.UNKNOWN_TENANT)
        period = budgets.period_in_zone(plan.plan_period, now, plan.time_zone)
        if (c.tenant, period) not in self._balances:  # the period's first decision
            self._append(LedgerEvent(Kind.QUOTA_GRANTED, c.tenant, period, plan.grant_tokens))
        p = self.budgets.price_of(c.tenant, c.key_id, c.model, c.input_tokens, c.amount)
        reason = self._refusal(c, period, p)
        kind = Kind.TOKENS_RESERVED if reason is None else Kind.REQUEST_REJECTED
        ev = LedgerEvent(kind, c.tenant, period, c.amount, c.request_id, reason=reason)
        seq = self._append(ev, p, p.usd)
        return Outcome(c.request_id, c.tenant, ev.kind, period, c.amount, 0, seq,
                       ev.reason, c.amount)

    def _refusal(self, c: ReserveTokens, period: str, p: Priced) -> str | None:
        """Why `c` is refused, in `ledger_reserve`'s order: a bad amount, the key's limits,
        the team's, the tenant's grant (plain `quota_exceeded`), the tenant's money."""
        if c.amount <= 0 or not 0 <= c.input_tokens <= c.amount:
            return LedgerReason.INVALID_AMOUNT
        lower, tenant_money, _ = self.budgets.levels(c.tenant, c.key_id)
        refusal = self.budgets.refuse_at(lower, period, c.amount, p.usd)
        if refusal is None:
            ev = domain.decide_reserve(self._balances[(c.tenant, period)], c.tenant, period,
                                       c.request_id, c.amount)
            if ev.reason is not None:
                return ev.reason
            refusal = self.budgets.refuse_at([tenant_money], period, c.amount, p.usd)
        return None if refusal is None else refusal.reason

    def _end_one(self, c: EndCommand) -> Outcome:
        r = self._reservations.get(c.request_id)
        if r is None or r.tenant != c.tenant:
            return Outcome(c.request_id, c.tenant, None, "", 0,
                           reason=LedgerReason.UNKNOWN_RESERVATION)
        if r.ended is not None:
            why = (LedgerReason.RESERVATION_EXPIRED if r.ended is Kind.RESERVATION_EXPIRED
                   else LedgerReason.ALREADY_ENDED)
            return Outcome(c.request_id, c.tenant, None, r.period, 0, reason=why,
                           reserved=r.amount)
        ev = (domain.decide_settle(r, c.actual_tokens) if isinstance(c, SettleReservation)
              else domain.decide_release(r, c.reason))
        p = self._priced.get(c.request_id, Priced())
        usd = p.usd
        if ev.kind is Kind.RESERVATION_SETTLED:
            usd = budgets.settled_usd(p.price, p.input_tokens or 0, ev.amount, p.usd)
        seq = self._append(ev, p, usd, p.usd - usd)
        return Outcome(c.request_id, c.tenant, ev.kind, r.period, ev.amount, ev.released,
                       seq, ev.reason, r.amount)

    def _append(self, ev: LedgerEvent, p: Priced | None = None, usd: int = 0,
                usd_released: int = 0) -> int:
        """Store one event and move the balance, the stream version, the reservations and
        the levels (`p`: the reservation's key, team and price; `usd`, `usd_released`: the
        event's money, as `amount` and `released` are its tokens)."""
        now = self.clock.now()
        p = p or Priced()
        key = (ev.tenant, ev.period)
        self._balances[key] = domain.apply(self._balances.get(key, Balance()), ev)
        version = self._versions[ev.tenant] = self._versions.get(ev.tenant, 0) + 1
        seq = len(self._events) + 1
        self._events.append(StoredEvent(seq, ev.tenant, version, ev.kind, ev.request_id,
                                        ev.period, ev.amount, ev.released, ev.reason, now,
                                        p.key_id, p.team_id, usd, usd_released, p.model,
                                        p.price_version, p.input_tokens))
        if ev.kind is Kind.RESERVATION_SETTLED:
            hold = Hold(ev.amount + ev.released, usd + usd_released, ev.amount, usd)
        else:
            hold = Hold(ev.amount, usd)
        if ev.kind is not Kind.QUOTA_GRANTED:
            self.budgets.apply(ev.tenant, ev.period, ev.kind, hold, p)
        if ev.request_id is not None and ev.kind is Kind.TOKENS_RESERVED:
            self._reservations[ev.request_id] = Reservation(ev.tenant, ev.request_id, ev.period,
                                                            ev.amount)
            self._reserved_at[ev.request_id] = now
            self._priced[ev.request_id] = p
        elif ev.request_id is not None and ev.kind is not Kind.REQUEST_REJECTED:
            r = self._reservations[ev.request_id]
            self._reservations[ev.request_id] = replace(r, ended=ev.kind)
        return seq
