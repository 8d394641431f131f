"""Quota rules, pure: state and a command in, ledger events out. No I/O, no clock.

A tenant has a grant per period (day or month). A request reserves its worst case
(prompt tokens + max_tokens); it is admitted only if open reservations + spent + amount
stay within the period's grant. Every reservation ends exactly once: settled (charge the
actual tokens, return the rest), released (nothing charged) or expired.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from quotaflow.events.status import LedgerKind, LedgerReason

# The ledger's event kinds, as stored: the enum lives in `events` because the kinds also travel
# on the ledger topic (LedgerEntry.kind); the rules call it `Kind`.
Kind = LedgerKind


@dataclass(frozen=True)
class Balance:
    """A tenant's tokens in one period."""

    granted: int = 0
    reserved: int = 0  # tokens held by open reservations
    spent: int = 0

    @property
    def remaining(self) -> int:
        return self.granted - self.reserved - self.spent


@dataclass(frozen=True)
class LedgerEvent:
    """One ledger event before it is stored (seq and stream_version are the store's)."""

    kind: Kind
    tenant: str
    period: str
    amount: int  # granted, reserved, charged, released, expired or requested tokens
    request_id: str | None = None
    released: int = 0  # tokens a settlement returned
    reason: str | None = None


def period_of(plan_period: str, at: datetime) -> str:
    """The period a moment belongs to: `2026-11-22` for daily plans, `2026-11` for monthly."""
    if plan_period == "day":
        return at.strftime("%Y-%m-%d")
    if plan_period == "month":
        return at.strftime("%Y-%m")
    raise ValueError(f"plan period must be 'day' or 'month', got {plan_period!r}")


def apply(balance: Balance, event: LedgerEvent) -> Balance:
    """The balance after `event`: the only place that says how each event moves tokens."""
    k = event.kind
    if k is Kind.QUOTA_GRANTED:
        return replace(balance, granted=balance.granted + event.amount)
    if k is Kind.TOKENS_RESERVED:
        return replace(balance, reserved=balance.reserved + event.amount)
    if k is Kind.RESERVATION_SETTLED:
        return replace(balance, reserved=balance.reserved - event.amount - event.released,
                       spent=balance.spent + event.amount)
    if k in (Kind.RESERVATION_RELEASED, Kind.RESERVATION_EXPIRED):
        return replace(balance, reserved=balance.reserved - event.amount)
    return balance  # RequestRejected moves nothing


def decide_reserve(balance: Balance, tenant: str, period: str, request_id: str,
                   amount: int) -> LedgerEvent:
    """Reserve `amount` if it fits the period's grant, else reject the request."""
    if amount <= 0:
        return LedgerEvent(Kind.REQUEST_REJECTED, tenant, period, amount, request_id,
                           reason=LedgerReason.INVALID_AMOUNT)
    if balance.reserved + balance.spent + amount > balance.granted:
        return LedgerEvent(Kind.REQUEST_REJECTED, tenant, period, amount, request_id,
                           reason=LedgerReason.QUOTA_EXCEEDED)
    return LedgerEvent(Kind.TOKENS_RESERVED, tenant, period, amount, request_id)


@dataclass(frozen=True)
class Reservation:
    """An admitted request's hold on tokens, and how it ended (None while open)."""

    tenant: str
    request_id: str
    period: str
    amount: int
    ended: Kind | None = None


class EndRefused(Exception):
    """A reservation cannot end this way (unknown, or already ended)."""


def decide_settle(r: Reservation, actual_tokens: int) -> LedgerEvent:
    """Charge the actual tokens, return the rest. The charge never exceeds the reservation."""
    _check_open(r)
    charged = max(0, min(actual_tokens, r.amount))
    return LedgerEvent(Kind.RESERVATION_SETTLED, r.tenant, r.period, charged, r.request_id,
                       released=r.amount - charged)


def decide_release(r: Reservation, reason: str) -> LedgerEvent:
    """Return the whole reservation; nothing is charged."""
    _check_open(r)
    return LedgerEvent(Kind.RESERVATION_RELEASED, r.tenant, r.period, r.amount, r.request_id,
                       reason=reason)


def decide_expire(r: Reservation) -> LedgerEvent:
    """End a reservation its step never settled; nothing is charged."""
    _check_open(r)
    return LedgerEvent(Kind.RESERVATION_EXPIRED, r.tenant, r.period, r.amount, r.request_id,
                       reason=LedgerReason.TTL)


def _check_open(r: Reservation) -> None:
    if r.ended is not None:
        raise EndRefused(f"reservation {r.request_id} already ended: {r.ended.value}")
