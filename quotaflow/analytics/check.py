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
    # One statement, so one snapshot: the consumer commits roll-ups and its stream versions
    # together, and a check reading them in separate statements could see a batch's roll-ups
    # without its versions (a difference that is not one).
    only = " AND e.tenant_id = %(tenant)s" if tenant else ""
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in LEDGER_COLUMNS)
    expected_rows, pending, rolled_rows = conn.execute(
        "WITH expected AS (SELECT e.tenant_id, date_trunc('minute', e.recorded_at, 'UTC') AS m,"
        " e.kind, count(*) AS n, sum(e.amount)::bigint AS amount,"
        " sum(e.released)::bigint AS released FROM ledger_events e JOIN usage_streams s"
        " ON s.tenant_id = e.tenant_id AND e.stream_version <= s.version"
        f" WHERE true{only} GROUP BY 1, 2, 3),"
        f" rolled AS (SELECT tenant_id, minute AS m, {sums} FROM usage_rollups"
        + (" WHERE tenant_id = %(tenant)s" if tenant else "") + " GROUP BY 1, 2)"
        " SELECT (SELECT coalesce(json_agg(json_build_array(tenant_id, extract(epoch FROM m),"
        " kind, n, amount, released)), '[]') FROM expected),"
        " (SELECT count(*) FROM ledger_events e LEFT JOIN usage_streams s"
        " ON s.tenant_id = e.tenant_id WHERE e.stream_version > coalesce(s.version, 0)"
        f"{only}),"
        " (SELECT coalesce(json_agg(to_json(r)), '[]') FROM rolled r)",
        {"tenant": tenant}).fetchone() or ([], 0, [])
    expected: dict[tuple[str, datetime], Counts] = {}
    result = RollupCheck(pending=int(pending))
    for t, epoch, kind, n, amount, released in expected_rows:
        minute = datetime.fromtimestamp(epoch, UTC)
        expected.setdefault((t, minute), Counts()).add_ledger(kind, int(amount), int(released),
                                                               int(n))
        result.compared += int(n)
    rolled = {(r["tenant_id"], datetime.fromisoformat(r["m"]).astimezone(UTC)):
              tuple(int(r[c]) for c in LEDGER_COLUMNS)
              for r in rolled_rows}
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
