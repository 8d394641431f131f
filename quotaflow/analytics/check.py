"""The audit's check of the roll-ups against the ledger: per tenant and minute, the columns
that come from the ledger (`LEDGER_COLUMNS`) must equal the ledger's own events, counted with
the same arithmetic, up to the stream version each tenant was rolled up to. Events the
consumer has not reached yet are lag, not a difference; they are counted apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from quotaflow.analytics.rollup import LEDGER_COLUMNS, Counts
from quotaflow.ledger.audit import Audit

MAX_FINDINGS = 50


@dataclass
class RollupCheck:
    """What the comparison found."""

    compared: int = 0  # ledger events the roll-ups should hold
    pending: int = 0  # ledger events not rolled up yet
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def check_rollups(conn: psycopg.Connection[Any], tenant: str | None = None) -> RollupCheck:
    """Compare the roll-ups with the ledger, per tenant and UTC minute."""
    only = " AND e.tenant_id = %s" if tenant else ""
    params = [tenant] if tenant else []
    expected: dict[tuple[str, datetime], Counts] = {}
    result = RollupCheck()
    for t, minute, kind, n, amount, released in conn.execute(
            "SELECT e.tenant_id, date_trunc('minute', e.recorded_at, 'UTC'), e.kind, count(*),"
            " sum(e.amount), sum(e.released) FROM ledger_events e JOIN usage_streams s"
            " ON s.tenant_id = e.tenant_id AND e.stream_version <= s.version"
            f" WHERE true{only} GROUP BY 1, 2, 3", params):
        expected.setdefault((t, minute), Counts()).add_ledger(kind, int(amount), int(released),
                                                               int(n))
        result.compared += int(n)
    pending = conn.execute(
        "SELECT count(*) FROM ledger_events e LEFT JOIN usage_streams s"
        " ON s.tenant_id = e.tenant_id WHERE e.stream_version > coalesce(s.version, 0)"
        f"{only}", params).fetchone()
    result.pending = int(pending[0]) if pending else 0
    sums = ", ".join(f"sum({c})" for c in LEDGER_COLUMNS)
    rolled = {(t, minute): tuple(int(v) for v in values) for t, minute, *values in conn.execute(
        f"SELECT tenant_id, minute, {sums} FROM usage_rollups"
        + (" WHERE tenant_id = %s" if tenant else "") + " GROUP BY 1, 2", params)}
    zero = Counts().ledger_values()
    differences = []
    for key in sorted(set(expected) | set(rolled)):
        want = expected[key].ledger_values() if key in expected else zero
        got = rolled.get(key, zero)
        for name, w, g in zip(LEDGER_COLUMNS, want, got, strict=True):
            if w != g:
                at = key[1].astimezone(UTC)
                differences.append(f"{key[0]} {at:%Y-%m-%dT%H:%MZ}: roll-up {name} {g} != "
                                   f"ledger {w}")
    result.findings = differences[:MAX_FINDINGS]
    if len(differences) > MAX_FINDINGS:
        result.findings.append(f"... and {len(differences) - MAX_FINDINGS} more roll-up "
                               "differences")
    return result


def compare_rollups(audit: Audit, conn: psycopg.Connection[Any], tenant: str | None) -> None:
    """Add the roll-up differences to an audit's findings."""
    audit.findings.extend(f"usage roll-ups: {f}" for f in check_rollups(conn, tenant).findings)
