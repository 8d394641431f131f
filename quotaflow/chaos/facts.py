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
    """One ledger event (amount and released as stored; usd and usd_released the same in
    micro-dollars; a reservation's model, price version and input tokens; `at` the ledger's
    own time of it, Unix seconds)."""

    seq: int
    tenant: str
    period: str
    kind: str
    request_id: str | None
    amount: int
    released: int = 0
    key_id: str | None = None
    team_id: str | None = None
    usd: int = 0
    usd_released: int = 0
    model: str | None = None
    price_version: int | None = None
    input_tokens: int | None = None
    at: float = 0.0
    reason: str | None = None  # a rejection's, naming the level that refused


# A level's limits per period, (tokens, usd micro-dollars), None for unlimited; keyed by
# (scope, id): ("key", key_id), ("team", "tenant/team"), ("tenant", tenant).
Limits = dict[tuple[str, str], tuple[int | None, int | None]]


@dataclass(frozen=True)
class PriceRow:
    """A price version, and the Unix time by which the harness saw it committed (None: not
    known): a reservation the ledger decided later must be at this version or a newer one."""

    model: str
    version: int
    input_per_mtok: int
    output_per_mtok: int
    in_force_at: float | None = None


@dataclass(frozen=True)
class AlertRule:
    """A threshold alert as configured (`quotaflow alert add`)."""

    tenant: str
    scope: str
    scope_id: str
    threshold_percent: int


@dataclass(frozen=True)
class Receipt:
    """One webhook POST the harness's receiver took: its webhook-id, the body, whether the
    Standard Webhooks signature verified with the secret, and the status it answered."""

    webhook_id: str
    body: str
    signature_ok: bool
    answered: int


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
    limits: Limits = field(default_factory=dict)  # every level with a limit
    prices: list[PriceRow] = field(default_factory=list)
    alert_rules: list[AlertRule] = field(default_factory=list)
    receipts: list[Receipt] | None = None  # the alert receiver's (None: no receiver ran)
