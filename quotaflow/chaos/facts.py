"""What a chaos run observed: the door's answers and the stack's end state, as plain data for
`checks` (the checks' tests build these by hand)."""

from __future__ import annotations

from dataclasses import dataclass, field

from quotaflow.events.status import TERMINAL_STATUSES

TERMINAL = TERMINAL_STATUSES


@dataclass(frozen=True)
class Outcome:
    """What the door finally answered one send (`status` None: no answer within the budget)."""

    index: int
    kind: str  # new, resend, bad, hostile (`chaos.hostile`), probe
    status: int | None
    request_id: str | None = None
    detail: str = ""
    original: int | None = None
    bad: str = ""
    retried: int = 0  # answers before the last that were none or 5xx (the client sent again)
    attempts: tuple[str, ...] = ()  # a hostile client's request ids, for the billing checks


@dataclass(frozen=True)
class RequestRow:
    """A request record at the end."""

    request_id: str
    tenant: str
    status: str
    charged: int


@dataclass(frozen=True)
class LedgerRow:
    """One ledger event (amount and released as stored)."""

    seq: int
    tenant: str
    period: str
    kind: str
    request_id: str | None
    amount: int
    released: int = 0


@dataclass(frozen=True)
class TopicRecord:
    """One record as read back: where it is, its key (the tenant) and what it is about."""

    topic: str  # logical name (no prefix)
    partition: int
    offset: int
    tenant: str
    request_id: str | None
    seq: int | None = None  # a ledger event's sequence (the ledger topic)


@dataclass(frozen=True)
class OpenReservation:
    """A reservation not ended at the end, and how old it is by the ledger's clock."""

    request_id: str
    tenant: str
    age_s: float


Balances = dict[tuple[str, str], tuple[int, int, int]]  # (tenant, period): granted, open, spent


@dataclass
class Snapshot:
    """Everything the checks read. `history` is each request's statuses in the order they
    were observed during the run."""

    accepted: set[str]
    requests: dict[str, RequestRow]
    ledger: list[LedgerRow]
    open_reservations: list[OpenReservation]
    grants: dict[str, int]
    projection: Balances | None = None
    history: dict[str, list[str]] = field(default_factory=dict)
    audit_ok: bool = True
    audit_findings: list[str] = field(default_factory=list)
    ttl_s: float = 300
    sweep_s: float = 30
    records: list[TopicRecord] | None = None  # read back from the topics (None: not read)
