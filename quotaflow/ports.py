"""The ports: what the handlers and the admit door need from the outside world, as Protocols.

Each port has a real adapter (PostgreSQL, Redis, Kafka, ONNX Runtime) and an in-memory fake in
`quotaflow.adapters.memory`; one contract suite per port (tests/contract) runs against both, so
the fakes the unit tests use cannot drift from what production does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from quotaflow.events.envelope import Envelope
from quotaflow.gate_ports import (
    AdmissionGate,
    InflightSlots,
    ReservedTokens,
    Screening,
    ScreenQuery,
    TokenWindow,
)
from quotaflow.ledger.budgets import LevelView
from quotaflow.ledger.commands import (
    EndCommand,
    Outcome,
    ReleaseReservation,
    ReserveTokens,
    SettleReservation,
    StoredEvent,
    payload_hash,
)
from quotaflow.ledger.domain import Balance
from quotaflow.ledger.level_projection import LevelRow
from quotaflow.model.base import (
    CONTEXT_LENGTH_EXCEEDED,
    ChatMessage,
    GenerationRequest,
    GenerationResult,
    Generator,
    StreamEnd,
    TokenDelta,
    Tokenizer,
    context_length_exceeded,
)
from quotaflow.model.token_stream import StreamEntry, TokenStream
from quotaflow.request_records import (
    FinalRecord,
    Inserted,
    NewRequest,
    OpenRequest,
    OpenRequests,
    RequestStore,
    RequestView,
    ReservedMark,
)

__all__ = [
    "CONTEXT_LENGTH_EXCEEDED",
    "AdmissionGate",
    "Balance",
    "ChatMessage",
    "Clock",
    "EndCommand",
    "FinalRecord",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "InflightSlots",
    "Inserted",
    "Ledger",
    "LedgerOutbox",
    "LevelReader",
    "LevelView",
    "NewRequest",
    "OpenRequest",
    "OpenRequests",
    "Outcome",
    "Principal",
    "Projection",
    "PublishTimeout",
    "Publisher",
    "ReleaseReservation",
    "RequestStore",
    "RequestView",
    "ReserveTokens",
    "ReservedMark",
    "ReservedTokens",
    "ScreenQuery",
    "Screening",
    "SettleReservation",
    "StoredEvent",
    "StreamEnd",
    "StreamEntry",
    "TenantDirectory",
    "TokenDelta",
    "TokenStream",
    "TokenWindow",
    "Tokenizer",
    "context_length_exceeded",
    "payload_hash",
]


class Ledger(Protocol):
    """The quota ledger: each call decides a whole batch atomically and durably; a redelivered
    command (same request id and payload hash) gets its first outcome back."""

    def reserve(self, commands: Sequence[ReserveTokens]) -> list[Outcome]:
        """Reserve each command's tokens or reject it; one outcome per command, in order."""
        ...

    def end(self, commands: Sequence[EndCommand]) -> list[Outcome]:
        """Settle or release reservations; an ended or expired one is refused, not re-ended."""
        ...

    def expire_stale(self, ttl_s: int, limit: int = 1000) -> list[Outcome]:
        """Expire reservations older than `ttl_s` by the ledger's own clock."""
        ...

    def grant(self, tenant: str, tokens: int, period: str | None = None) -> Outcome:
        """Grant `tokens` to `tenant` for `period` (default: the tenant's current period)."""
        ...

    def balance(self, tenant: str, period: str) -> Balance: ...

    def current_period(self, tenant: str) -> str:
        """The tenant's billing period now, by the ledger's clock (the one billing clock)."""
        ...

    def events_after(self, seq: int, limit: int = 10_000) -> list[StoredEvent]:
        """Committed events with a sequence number above `seq`, in sequence order."""
        ...

    def balance_snapshot(self, after: tuple[str, str],
                         limit: int) -> tuple[int, list[tuple[str, str, Balance]]]:
        """Up to `limit` balances (tenant, period, balance) after `after` in key order, and
        the last sequence number they include: what a lost projection is rebuilt from, in
        bounded pages instead of a replay of the whole history."""
        ...

    def level_snapshot(self, periods: Sequence[tuple[str, str]]) -> tuple[int, list[LevelRow]]:
        """The budget levels (tenant, teams, keys) of these (tenant, period)s, and the last
        sequence they include: what a lost projection's levels are rebuilt from, a page of
        `balance_snapshot` at a time."""
        ...


class Projection(Protocol):
    """The ledger's balances, projected for fast reads; applying an event twice is harmless."""

    def catch_up(self, ledger: Ledger) -> int:
        """Bring the projection up to the ledger (a bounded amount of work per call); returns
        how many events it applied (a projection rebuilt from the ledger's balances snapshot
        applies none)."""
        ...

    def balance(self, tenant: str, period: str) -> Balance: ...

    def last_seq(self) -> int: ...


class LedgerOutbox(Protocol):
    """Publishes committed ledger events to the ledger topic, at least once, in order."""

    def publish_pending(self) -> int: ...


@dataclass(frozen=True)
class Principal:
    """Who an API key belongs to, and the limits that apply to it."""

    tenant: str
    key_id: str
    rate_limit_per_min: int
    plan_period: str  # day or month
    tpm: int = 0  # tokens the key may reserve in a rolling minute; 0: unlimited
    max_inflight: int = 0  # the key's requests admitted and not yet ended; 0: unlimited
    time_zone: str = "UTC"  # the tenant's: its days and months are counted there
    # The key's budget levels below its tenant, for admit's pre-check (None: unlimited there;
    # reserve decides them exactly).
    team_id: str | None = None
    key_limit_tokens: int | None = None
    team_limit_tokens: int | None = None


class LevelReader(Protocol):
    """A key's budget levels (key, team, tenant) in its tenant's current period, as
    `GET /v1/quota` shows them."""

    def levels(self, key_id: str) -> list[LevelView]:
        """The levels in the order key, team, tenant; empty for an unknown key."""
        ...


class TenantDirectory(Protocol):
    def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        ...

class Publisher(Protocol):
    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Hand the envelopes to the event bus; returns once the bus holds them all, or raises
        `PublishTimeout` (then some may still be delivered later)."""
        ...


class PublishTimeout(RuntimeError):
    """The event bus did not confirm every envelope in time."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...
