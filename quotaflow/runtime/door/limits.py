"""admit's fast refusals before anything is stored: the per-key rate limit (a fixed one-minute
window), the quota pre-check on the projected balances of the tenant, the key and its team
(in tokens; money waits for reserve: `quotaflow.adapters.redis_gate` says why), and the key's
tokens per minute and requests in flight, all through the `AdmissionGate` in one round trip,
which also recognises a recent resend before any applies. The pre-check is advisory (the
projection may lag); reserve decides against the ledger. Periods come from the ledger's clock,
so admit and the ledger agree on which period a request falls in.

The key's tokens per minute and in-flight cap are decided here, at the door, not in reserve:
a client over them must get its 429 with Retry-After on the request it sent (OpenAI's
`rate_limit_exceeded`), and reserve answers after the 202, asynchronously. They are exact all
the same: the gate decides them in one atomic Redis script for every door process and replica.
The door cannot count prompt tokens (the model's tokenizer runs in estimate), so it holds an
upper bound of what reserve will reserve (`tokens_bound`), and reserve lowers it to what the
ledger reserved (nothing for a refusal): the rolling minute never holds less than the key's
requests reserve, and soon holds exactly that."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from quotaflow.events.status import KeyLimit, LevelScope
from quotaflow.functions.admit.handler import Screened
from quotaflow.ledger.budgets import Level, Refusal, period_in_zone
from quotaflow.ledger.domain import Balance
from quotaflow.ports import AdmissionGate, Clock, Principal, Screening, ScreenQuery
from quotaflow.runtime.problem import Problem


class Balances(Protocol):
    """The projected balances `GET /v1/quota` reads."""

    def balance(self, tenant: str, period: str) -> Balance: ...


# Bounds on the prompt tokens of any chat template the models here use: a template adds at most
# this many tokens around each message, and this many besides (a default system prompt and the
# assistant's turn). SmolLM2's adds 5 around each and about 25 besides.
_TEMPLATE_TOKENS_PER_MESSAGE = 16
_TEMPLATE_TOKENS = 64


def tokens_bound(data: Mapping[str, Any]) -> int:
    """At least the prompt tokens + max_tokens reserve will reserve for the normalized request
    `data`: a byte-level tokenizer never makes more tokens of a text than it has UTF-8 bytes
    (the stand-in counts words, fewer still), and the chat template adds a bounded few."""
    prompt = sum(len(str(m["content"]).encode()) + _TEMPLATE_TOKENS_PER_MESSAGE
                 for m in data["messages"])
    return prompt + _TEMPLATE_TOKENS + int(data["max_tokens"])


def seconds_to_next_period(plan_period: str, now: datetime, tz: str = "UTC") -> int:
    """Whole seconds, rounded up (at least 1), until the period after `now`'s begins: the
    next calendar day or month at midnight in the tenant's zone `tz`, as `period_in_zone`
    counts periods (a day across a DST change is 23 or 25 hours long)."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    if plan_period == "day":
        nxt = local.date() + timedelta(days=1)
    else:
        nxt = date(local.year + 1, 1, 1) if local.month == 12 else \
            date(local.year, local.month + 1, 1)
    # A midnight the clocks skip (a zone that springs forward at 00:00) is read with the offset
    # before the change (fold=0): the very instant the new local day begins.
    start = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return max(1, math.ceil(start.timestamp() - now.timestamp()))


class AdmissionLimits:
    """The rate limit and the quota pre-check, timed by the ledger's clock."""

    def __init__(self, gate: AdmissionGate, clock: Clock) -> None:
        self.gate = gate
        self.clock = clock

    def period(self, principal: Principal) -> str:
        """The principal's billing period now."""
        return period_in_zone(principal.plan_period, self.clock.now(), principal.time_zone)

    def screener(self, principal: Principal, needs_tokens: int,
                 bound_tokens: int = 0) -> Callable[[str, str], Screened]:
        """admit's screen for one request: the record of a recent acceptance, or the rate
        limit, the quota pre-check for `needs_tokens` and the key's limits, with
        `bound_tokens` held in its rolling minute (the 429 Problem as its refusal), in one
        gate call."""
        def screen(request_id: str, digest: str) -> Screened:
            now = self.clock.now().astimezone(UTC)
            period = period_in_zone(principal.plan_period, now, principal.time_zone)
            found = self.gate.screen(ScreenQuery(
                request_id, digest, principal.key_id, int(now.timestamp() // 60),
                principal.tenant, period, principal.rate_limit_per_min, needs_tokens,
                principal.tpm, principal.max_inflight, int(now.timestamp() * 1000),
                bound_tokens, principal.key_limit_tokens, principal.team_id,
                principal.team_limit_tokens))
            if found.known_hash is not None:
                return Screened(known_hash=found.known_hash)
            return Screened(refusal=_refusal(principal, now, period, found, needs_tokens,
                                             bound_tokens))
        return screen


def _refusal(principal: Principal, now: datetime, period: str, found: Screening,
             needs_tokens: int, bound_tokens: int) -> Problem | None:
    """The 429 for a request over the key's rate limit, the tenant's projected balance, or the
    key's tokens per minute or requests in flight."""
    count, balance = found.count, found.balance
    if count > principal.rate_limit_per_min:
        retry = max(1, int(60 - now.timestamp() % 60))
        return Problem(429, "Rate limit exceeded", f"key {principal.key_id} may send "
                       f"{principal.rate_limit_per_min} requests a minute",
                       slug="rate-limited", headers={"Retry-After": str(retry)})
    if balance.granted and balance.remaining < needs_tokens:
        retry = seconds_to_next_period(principal.plan_period, now, principal.time_zone)
        return Problem(429, "Quota exhausted", f"tenant {principal.tenant} has "
                       f"{max(balance.remaining, 0)} tokens left in period {period}; this "
                       f"request may need {needs_tokens}", slug="quota-exhausted",
                       headers={"Retry-After": str(retry)})
    if found.over_level is not None:
        return _level_refusal(principal, now, found.over_level, found.level_remaining,
                              needs_tokens)
    if found.over is not None:
        return _key_limit_refusal(principal, found.over, found.retry_after_ms, bound_tokens)
    return None


def _level_refusal(principal: Principal, now: datetime, scope: LevelScope, remaining: int,
                   needs_tokens: int) -> Problem:
    """The 429 naming the key or team whose projected tokens cannot cover the request, in
    the words of reserve's refusal (`budgets.Refusal`)."""
    key = scope is LevelScope.KEY
    level = Level(scope, principal.key_id if key else str(principal.team_id), principal.tenant)
    limit = principal.key_limit_tokens if key else principal.team_limit_tokens
    refusal = Refusal(level, "tokens", max(0, remaining), limit or 0)
    return Problem(429, "Quota exhausted", f"{refusal.message}; this request may need "
                   f"{needs_tokens}", slug="quota-exhausted",
                   headers={"Retry-After": str(seconds_to_next_period(
                       principal.plan_period, now, principal.time_zone))})


def _key_limit_refusal(principal: Principal, over: KeyLimit, retry_ms: int,
                       bound_tokens: int) -> Problem:
    key = principal.key_id
    needs = (f"key {key} may reserve {principal.tpm} tokens a minute; this request may "
             f"need up to {bound_tokens}")
    if over is KeyLimit.IN_FLIGHT:
        detail = f"key {key} may have {principal.max_inflight} requests in flight"
    elif retry_ms < 0:  # never within: no Retry-After, waiting would not help
        return Problem(429, "Rate limit exceeded", needs, slug="rate-limited")
    else:
        detail = needs
    retry = max(1, -(-retry_ms // 1000))
    return Problem(429, "Rate limit exceeded", detail, slug="rate-limited",
                   headers={"Retry-After": str(retry)})
