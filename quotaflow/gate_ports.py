"""admit's gate as a port: one round trip screens a request (the idempotency record, the
per-key rate limit, the quota pre-check at the tenant, the key and its team, the key's tokens
per minute and requests in flight); reserve trims what a request holds in its key's rolling
minute, and the steps that end requests free their in-flight slots. `quotaflow.ports`
re-exports these names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from quotaflow.events.status import KeyLimit, LevelScope
from quotaflow.ledger.domain import Balance


@dataclass(frozen=True)
class ScreenQuery:
    """One request as the gate screens it: its id and payload hash, the key's window, the
    tenant's period, and the limits that let it through."""

    request_id: str
    payload_hash: str
    key_id: str
    minute: int  # Unix seconds // 60, by the ledger's clock
    tenant: str
    period: str
    rate_limit_per_min: int
    needs_tokens: int
    tpm: int = 0  # the key's limits held in Redis (0: unlimited), timed by `now_ms`
    max_inflight: int = 0
    now_ms: int = 0  # Unix milliseconds, by the ledger's clock
    tpm_tokens: int = 0  # the most the request may reserve: what its rolling minute holds
    # The key's and its team's token limits (None: unlimited there), screened against their
    # projected balances like the tenant's grant; a team's name (no team: None).
    key_limit_tokens: int | None = None
    team_id: str | None = None
    team_limit_tokens: int | None = None


@dataclass(frozen=True)
class Screening:
    """What the gate found: the payload hash a recent acceptance of the id recorded (a
    resend: nothing counted), or the key's count in its window including this request and
    the tenant's projected balance."""

    known_hash: str | None
    count: int
    balance: Balance
    # Within the rate limit and the quota, the key limit that refused the request, if any,
    # and in how many milliseconds enough of it frees (-1: never, the request alone is over).
    over: KeyLimit | None = None
    retry_after_ms: int = 0
    # Within the rate limit and the tenant's grant, the level (key, then team) whose projected
    # remaining tokens cannot cover the request, and what it has left.
    over_level: LevelScope | None = None
    level_remaining: int = 0


class InflightSlots(Protocol):
    """The key's requests in flight, as the gate holds them."""

    def release(self, tenant: str, request_ids: Sequence[str]) -> None:
        """The requests have ended (any terminal status): free their in-flight slots. An id
        holding none (released before, or never limited) is ignored."""
        ...


@dataclass(frozen=True)
class ReservedTokens:
    """What the ledger reserved for a request of `key_id`'s (0: it refused the request)."""

    tenant: str
    key_id: str
    request_id: str
    tokens: int


class TokenWindow(Protocol):
    """The keys' rolling minutes of reserved tokens, as the gate holds them."""

    def trim(self, reserved: Sequence[ReservedTokens]) -> None:
        """Lower what each request holds in its key's rolling minute to what the ledger
        reserved for it (the door held an upper bound); never raise it."""
        ...


class AdmissionGate(InflightSlots, TokenWindow, Protocol):
    """admit's fast checks in one round trip: count this request in its key's one-minute
    window and read the tenant's projected balance for the period; within those, hold the
    key's tokens in its rolling minute and its in-flight slot."""

    def screen(self, query: ScreenQuery) -> Screening:
        """The idempotency check, the rate limit and the quota pre-check together: a request
        id recently let through answers its recorded hash and counts nothing; any other is
        counted, and recorded with its hash only when within both limits (a record may be
        lost: PostgreSQL stays the authority). Within both, the key's and its team's projected
        token balances are screened (`over_level` names the first that cannot cover
        `needs_tokens`: nothing is recorded or held); within those, the key's tokens per
        minute and in-flight cap are checked and, when within them too, its tokens and a slot
        are held atomically with the record (`over` names the key limit that refused)."""
        ...
