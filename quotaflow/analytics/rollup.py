"""The roll-up arithmetic, with no I/O: what one ledger entry or request outcome adds to its
(tenant, model, API key, minute) bucket, and how a batch folds into bucket deltas while
skipping what was already applied.

Ledger entries are deduplicated by the tenant's stream version (the relay publishes at least
once, in sequence order, keyed by tenant, so a version not above the last applied one is a
re-publication); outcomes by (request id, kind)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from quotaflow.events.payloads import LedgerEntry
from quotaflow.events.status import LedgerKind, OutcomeKind

Bucket = tuple[str, str, str, datetime]  # (tenant, model, key_id, minute)
Attribution = Mapping[str, tuple[str, str]]  # request id -> (model, key_id)
Position = tuple[str, int]  # (topic, partition)

UNATTRIBUTED = ("", "")
# The kinds `add_ledger` compares every entry with, read off the enum once: on Python 3.11 a
# member read off its class costs as much as ten string comparisons.
_GRANTED, _RESERVED, _REJECTED, _SETTLED, _RELEASED, _EXPIRED = (
    LedgerKind.QUOTA_GRANTED, LedgerKind.TOKENS_RESERVED, LedgerKind.REQUEST_REJECTED,
    LedgerKind.RESERVATION_SETTLED, LedgerKind.RESERVATION_RELEASED,
    LedgerKind.RESERVATION_EXPIRED)

# The columns that come from the ledger alone: the audit compares these with it.
LEDGER_COLUMNS = ("requests", "rejected", "expired", "granted_tokens", "reserved_tokens",
                  "charged_tokens", "released_tokens", "expired_tokens")


@dataclass
class Counts:
    """What a bucket holds; every field adds up."""

    requests: int = 0
    rejected: int = 0
    completed: int = 0
    failed: int = 0
    expired: int = 0
    granted_tokens: int = 0
    reserved_tokens: int = 0
    charged_tokens: int = 0
    released_tokens: int = 0
    expired_tokens: int = 0
    charged_usd: int = 0  # micro-dollars; not in LEDGER_COLUMNS: rows before 0008 hold 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0

    @classmethod
    def of(cls, values: Sequence[Any]) -> Counts:
        """Counts from values in column order (`COLUMNS`), such as a row of sums."""
        c = cls()
        for f, v in zip(fields(cls), values, strict=True):
            setattr(c, f.name, float(v) if f.name == "latency_ms" else int(v))
        return c

    def add_ledger(self, kind: str, amount: int, released: int, n: int = 1,
                   usd: int = 0) -> None:
        """Add `n` ledger events of `kind` whose amounts and settlement remainders sum to
        `amount` and `released` (and money to `usd`). A kind this code does not know adds
        nothing."""
        if kind == _GRANTED:
            self.granted_tokens += amount
        elif kind == _RESERVED:
            self.requests += n
            self.reserved_tokens += amount
        elif kind == _REJECTED:
            self.requests += n
            self.rejected += n
        elif kind == _SETTLED:
            self.charged_tokens += amount
            self.released_tokens += released
            self.charged_usd += usd
        elif kind == _RELEASED:
            self.released_tokens += amount
        elif kind == _EXPIRED:
            self.expired += n
            self.expired_tokens += amount

    def add(self, other: Counts) -> None:
        """Add another bucket's counts to this one."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def values(self) -> tuple[int | float, ...]:
        """The counts in column order (`COLUMNS`)."""
        return tuple(getattr(self, name) for name in COLUMNS)

    def ledger_values(self) -> tuple[int, ...]:
        """The ledger's columns (`LEDGER_COLUMNS`)."""
        return tuple(int(getattr(self, name)) for name in LEDGER_COLUMNS)


COLUMNS = tuple(f.name for f in fields(Counts))


@dataclass(frozen=True)
class Outcome:
    """A request's inference outcome off the completed or failed topic."""

    kind: OutcomeKind
    request_id: str
    tenant: str
    at: datetime
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


@dataclass
class Batch:
    """One polled batch: its ledger entries and outcomes in arrival order, and per topic
    partition the offset to go on from once the batch is applied."""

    consumer: str
    ledger: list[LedgerEntry] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    next_offsets: dict[Position, int] = field(default_factory=dict)

    def request_ids(self) -> set[str]:
        """Every request id the batch names."""
        ids = {e.request_id for e in self.ledger if e.request_id}
        return ids | {o.request_id for o in self.outcomes}


@dataclass
class Applied:
    """What applying a batch did."""

    ledger: int = 0
    outcomes: int = 0
    duplicates: int = 0


def minute_of(at: datetime) -> datetime:
    """The UTC minute `at` falls in."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def fold_ledger(entries: Iterable[LedgerEntry], versions: dict[str, int],
                attribution: Attribution) -> tuple[dict[Bucket, Counts], int]:
    """Bucket deltas of the entries not yet applied; `versions` (tenant -> last stream
    version applied) is moved on in place. Returns the deltas and how many were duplicates."""
    deltas: dict[Bucket, Counts] = {}
    duplicates = 0
    for e in entries:
        if e.stream_version <= versions.get(e.tenant, 0):
            duplicates += 1
            continue
        versions[e.tenant] = e.stream_version
        model, key_id = attribution.get(e.request_id or "", UNATTRIBUTED)
        bucket = (e.tenant, model, key_id, minute_of(e.recorded_at_ms))
        deltas.setdefault(bucket, Counts()).add_ledger(e.kind, e.amount, e.released,
                                                             usd=e.usd)
    return deltas, duplicates


def fold_outcomes(outcomes: Iterable[Outcome], fresh: set[tuple[str, OutcomeKind]],
                  attribution: Attribution) -> tuple[dict[Bucket, Counts], int]:
    """Bucket deltas of the outcomes whose (request id, kind) is in `fresh` (not applied
    before), each counted once; `fresh` is consumed. Returns the deltas and the duplicates."""
    deltas: dict[Bucket, Counts] = {}
    duplicates = 0
    for o in outcomes:
        if (o.request_id, o.kind) not in fresh:
            duplicates += 1
            continue
        fresh.discard((o.request_id, o.kind))
        model, key_id = attribution.get(o.request_id, UNATTRIBUTED)
        c = deltas.setdefault((o.tenant, model, key_id, minute_of(o.at)), Counts())
        if o.kind == OutcomeKind.COMPLETED:
            c.completed += 1
            c.prompt_tokens += o.prompt_tokens
            c.completion_tokens += o.completion_tokens
            c.latency_ms += o.latency_ms
        else:
            c.failed += 1
    return deltas, duplicates


def merge(into: dict[Bucket, Counts], deltas: Mapping[Bucket, Counts]) -> dict[Bucket, Counts]:
    """Add `deltas` into `into`; returns `into`."""
    for bucket, c in deltas.items():
        into.setdefault(bucket, Counts()).add(c)
    return into
