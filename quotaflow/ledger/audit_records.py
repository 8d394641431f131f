"""The audit's comparison of every request record, whatever its status, with its ledger events:
a client is told what it was billed, and billed only for what it was told.

- `completed`: its reservation was settled, and the record's charge is the settlement's;
- `rejected`: nothing charged, no reservation left open (a RequestRejected, or nothing
  reserved, or a reservation released or expired);
- `failed` and `expired`: nothing charged, the reservation (if any) released or expired;
- `queued` and `reserved`: in flight, unless still open past the request deadline;
- a settlement with no request record is a charge nobody was told about.

That a reservation ends exactly once is the replay's check (`audit.replay`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from quotaflow.events.status import OPEN_STATUSES, TERMINAL_STATUSES, RequestStatus
from quotaflow.ledger.audit import Audit

_FACTS = """
SELECT r.request_id, r.tenant_id, r.status, r.charged_tokens,
       r.status IN ('queued', 'reserved')
           AND r.created_at < now() - make_interval(secs => %(deadline)s),
       coalesce(e.reserved, 0), coalesce(e.settled, 0), coalesce(e.charged, 0),
       coalesce(e.released, 0), coalesce(e.expired, 0), coalesce(e.rejected, 0)
  FROM requests r
  LEFT JOIN (SELECT request_id,
                    count(*) FILTER (WHERE kind = 'TokensReserved') AS reserved,
                    count(*) FILTER (WHERE kind = 'ReservationSettled') AS settled,
                    sum(amount) FILTER (WHERE kind = 'ReservationSettled') AS charged,
                    count(*) FILTER (WHERE kind = 'ReservationReleased') AS released,
                    count(*) FILTER (WHERE kind = 'ReservationExpired') AS expired,
                    count(*) FILTER (WHERE kind = 'RequestRejected') AS rejected
               FROM ledger_events
              WHERE request_id IS NOT NULL {tenant_events}
              GROUP BY request_id) e USING (request_id)
 {tenant_requests}
 ORDER BY r.request_id"""

_UNRECORDED = """
SELECT e.tenant_id, e.request_id, e.amount FROM ledger_events e
 WHERE e.kind = 'ReservationSettled' {tenant_events}
   AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.request_id = e.request_id)
 ORDER BY e.request_id"""


@dataclass(frozen=True)
class RequestFacts:
    """A request record beside the ledger events of its request id."""

    request_id: str
    tenant: str
    status: str  # as stored: the audit reports one that no RequestStatus has
    charged: int | None  # the record's charge (None while open)
    overdue: bool  # still open past the request deadline
    reserved: int = 0  # TokensReserved events
    settled: int = 0  # ReservationSettled events
    ledger_charged: int = 0  # what they charged
    released: int = 0
    expired: int = 0
    rejected: int = 0  # RequestRejected events

    @property
    def still_reserved(self) -> bool:
        return self.reserved > self.settled + self.released + self.expired


def findings(f: RequestFacts, deadline_s: int) -> list[str]:
    """What is wrong with one request record against its ledger events."""
    who = f"{f.tenant}: request {f.request_id}"
    charged = f.charged or 0
    if f.status in OPEN_STATUSES:
        return [f"{who} still {f.status} past the deadline of {deadline_s} s"] \
            if f.overdue else []
    if f.status == RequestStatus.COMPLETED:
        if not f.settled:
            return [f"{who} recorded completed with no ReservationSettled in the ledger "
                    "(missing settlement)"]
        if charged != f.ledger_charged:
            return [f"{who} recorded charged {charged}, the ledger charged {f.ledger_charged}"]
        return []
    if f.status not in TERMINAL_STATUSES:  # completed was handled above
        return [f"{who} has an unknown status {f.status!r}"]
    if f.settled:
        return [f"{who} recorded {f.status} but the ledger charged {f.ledger_charged} "
                "(ReservationSettled)"]
    found = []
    if f.still_reserved:
        found.append(f"{who} recorded {f.status} but its reservation is still open")
    if charged:
        found.append(f"{who} recorded {f.status} with a charge of {charged}")
    return found


def request_facts(conn: psycopg.Connection[Any], tenant: str | None,
                  deadline_s: int) -> Iterator[RequestFacts]:
    """Every request record (of `tenant`, if given) with its ledger events, by request id."""
    sql = _FACTS.format(tenant_events="AND tenant_id = %(tenant)s" if tenant else "",
                        tenant_requests="WHERE r.tenant_id = %(tenant)s" if tenant else "")
    with conn.transaction(), conn.cursor(name="quotaflow_audit_requests") as cur:
        cur.itersize = 10_000
        cur.execute(sql, {"deadline": deadline_s, "tenant": tenant})
        for rid, t, status, charged, overdue, reserved, settled, spent, released, expired, \
                rejected in cur:
            yield RequestFacts(rid, t, status, charged, bool(overdue), int(reserved),
                               int(settled), int(spent), int(released), int(expired),
                               int(rejected))


def compare_requests(audit: Audit, conn: psycopg.Connection[Any], tenant: str | None,
                     deadline_s: int) -> None:
    """Compare every request record with the ledger; add what differs to the findings."""
    for facts in request_facts(conn, tenant, deadline_s):
        audit.findings.extend(findings(facts, deadline_s))
    rows = conn.execute(
        _UNRECORDED.format(tenant_events="AND e.tenant_id = %(tenant)s" if tenant else ""),
        {"tenant": tenant}).fetchall()
    for t, request_id, amount in rows:
        audit.findings.append(f"{t}: request {request_id} charged {amount} by the ledger has "
                              "no request record")
