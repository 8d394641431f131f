"""admit's fast refusals before anything is stored: the per-key rate limit (a fixed one-minute
window) and the quota pre-check on the projected balance, both through the `AdmissionGate` in
one round trip, which also recognises a recent resend before either applies. The pre-check is
advisory; reserve decides against the ledger. Periods come from the ledger's clock, so admit
and the ledger agree on which period a request falls in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from functions.admit.handler import Screened
from quotaflow.ledger.budgets import period_in_zone
from quotaflow.ledger.domain import Balance
from quotaflow.ports import AdmissionGate, Clock, Principal, ScreenQuery
from quotaflow.runtime.problem import Problem


class Balances(Protocol):
    """The projected balances `GET /v1/quota` reads."""

    def balance(self, tenant: str, period: str) -> Balance: ...


def seconds_to_next_period(plan_period: str, now: datetime) -> int:
    """Whole seconds (at least 1) until the period after `now`'s begins, in UTC."""
    if plan_period == "day":
        nxt = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + 86400
    else:
        y, m = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        nxt = datetime(y, m, 1, tzinfo=UTC).timestamp()
    return max(1, int(nxt - now.timestamp()))


class AdmissionLimits:
    """The rate limit and the quota pre-check, timed by the ledger's clock."""

    def __init__(self, gate: AdmissionGate, clock: Clock) -> None:
        self.gate = gate
        self.clock = clock

    def period(self, principal: Principal) -> str:
        """The principal's billing period now."""
        return period_in_zone(principal.plan_period, self.clock.now(), principal.time_zone)

    def screener(self, principal: Principal,
                 needs_tokens: int) -> Callable[[str, str], Screened]:
        """admit's screen for one request: the record of a recent acceptance, or the rate
        limit and the quota pre-check (the 429 Problem as its refusal), in one gate call."""
        def screen(request_id: str, digest: str) -> Screened:
            now = self.clock.now().astimezone(UTC)
            period = period_in_zone(principal.plan_period, now, principal.time_zone)
            found = self.gate.screen(ScreenQuery(
                request_id, digest, principal.key_id, int(now.timestamp() // 60),
                principal.tenant, period, principal.rate_limit_per_min, needs_tokens))
            if found.known_hash is not None:
                return Screened(known_hash=found.known_hash)
            return Screened(refusal=_refusal(principal, now, period, found.count,
                                             found.balance, needs_tokens))
        return screen


def _refusal(principal: Principal, now: datetime, period: str, count: int, balance: Balance,
             needs_tokens: int) -> Problem | None:
    """The 429 for a request over the key's rate limit or the tenant's projected balance."""
    if count > principal.rate_limit_per_min:
        retry = max(1, int(60 - now.timestamp() % 60))
        return Problem(429, "Rate limit exceeded", f"key {principal.key_id} may send "
                       f"{principal.rate_limit_per_min} requests a minute",
                       slug="rate-limited", headers={"Retry-After": str(retry)})
    if balance.granted and balance.remaining < needs_tokens:
        retry = seconds_to_next_period(principal.plan_period, now)
        return Problem(429, "Quota exhausted", f"tenant {principal.tenant} has "
                       f"{max(balance.remaining, 0)} tokens left in period {period}; this "
                       f"request may need {needs_tokens}", slug="quota-exhausted",
                       headers={"Retry-After": str(retry)})
    return None
