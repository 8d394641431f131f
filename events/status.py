"""The closed vocabularies that travel between functions and into the database: a request's
status, how a reservation ended, the ledger's event kinds and refusal reasons, the inference
outcomes analytics counts, and why generation ended.

Each is a `StrEnum`, so a member *is* its string: Avro, JSON, SQL parameters and Redis see
exactly the text they saw before these types existed, and a member compares equal to the plain
string read back from anywhere. The Avro schemas keep these fields as `string`: schema
resolution turns neither a string into an enum nor an enum into a string, so an Avro enum
would break every reader of the other version. `quotaflow.events.payloads.from_record`
turns the decoded strings into members. tests/unit/test_status_enums.py holds each enum to the
values its schema documents or its database CHECK constraint allows."""

from __future__ import annotations

from enum import StrEnum


class RequestStatus(StrEnum):
    """A request's status in the read model clients poll. It only moves forward:
    queued -> reserved -> completed | failed | rejected | expired."""

    QUEUED = "queued"
    RESERVED = "reserved"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """Whether the request has ended (a terminal status is never overwritten)."""
        return self not in OPEN_STATUSES


OPEN_STATUSES = (RequestStatus.QUEUED, RequestStatus.RESERVED)
TERMINAL_STATUSES = (RequestStatus.COMPLETED, RequestStatus.REJECTED, RequestStatus.FAILED,
                     RequestStatus.EXPIRED)


class SettlementStatus(StrEnum):
    """How a reservation ended, as `settled` carries it (schemas/settled: `status`)."""

    COMPLETED = "completed"  # settled: the real tokens charged, the rest returned
    FAILED = "failed"  # released: nothing charged
    EXPIRED = "expired"  # expired by the sweep, or a settlement refused after expiry

    @property
    def request_status(self) -> RequestStatus:
        """The request's terminal status for this ending."""
        return _REQUEST_STATUS[self]


# A lookup, not `RequestStatus(self.value)`: record maps every settlement, and the enum call
# costs ten times the lookup.
_REQUEST_STATUS = {s: RequestStatus(s.value) for s in SettlementStatus}


class LedgerKind(StrEnum):
    """The ledger's event kinds, as stored (ledger_events.kind) and published (schemas/ledger:
    `kind`)."""

    QUOTA_GRANTED = "QuotaGranted"
    TOKENS_RESERVED = "TokensReserved"
    RESERVATION_SETTLED = "ReservationSettled"
    RESERVATION_RELEASED = "ReservationReleased"
    RESERVATION_EXPIRED = "ReservationExpired"
    REQUEST_REJECTED = "RequestRejected"


class LedgerReason(StrEnum):
    """Why the ledger rejected a reservation, refused an ending or ended one itself: the
    `reason` of its outcomes and events (infra/migrations/0002_ledger_functions.sql writes the
    same words). A `Rejected` or `Settled` reason may also be free text from a step."""

    QUOTA_EXCEEDED = "quota_exceeded"
    INVALID_AMOUNT = "invalid_amount"
    UNKNOWN_TENANT = "unknown_tenant"
    UNKNOWN_RESERVATION = "unknown_reservation"
    RESERVATION_EXPIRED = "reservation_expired"
    ALREADY_ENDED = "already_ended"
    TTL = "ttl"  # a reservation expired by the sweep
    IDEMPOTENCY_CONFLICT = "idempotency_conflict: same request id, different payload"


class LevelScope(StrEnum):
    """A budget level: the tenant (the org), one of its teams, or one API key. A request is
    held at its key, its key's team (if any) and its tenant; `GET /v1/quota` lists them in
    this order."""

    KEY = "key"
    TEAM = "team"
    TENANT = "tenant"


class FinishReason(StrEnum):
    """Why generation ended: `Completed.finish_reason`, the token stream's end entry and the
    OpenAI door's `finish_reason`."""

    STOP = "stop"  # end of sequence or a stop sequence
    LENGTH = "length"  # max_tokens reached
    CANCELLED = "cancelled"  # the client hung up; the text is what was generated until then
    UNKNOWN = "unknown"  # the schema's default: a `completed` v1 record had no finish reason


class OutcomeKind(StrEnum):
    """An inference outcome as analytics rolls it up: the topic it came from
    (usage_outcomes.kind)."""

    COMPLETED = "completed"
    FAILED = "failed"


class KeyLimit(StrEnum):
    """A per-key limit the door's gate holds in Redis and refuses a request over (429)."""

    TOKENS_PER_MINUTE = "tokens_per_minute"  # tokens reserved in a rolling minute
    IN_FLIGHT = "in_flight"  # requests admitted and not yet ended
