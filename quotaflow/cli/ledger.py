"""`quotaflow migrate`, `quotaflow audit` and `quotaflow projection rebuild`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from quotaflow import compose
from quotaflow.settings import Settings


def register(sub: Any) -> None:
    """Add the ledger's commands to the CLI's subparsers."""
    m = sub.add_parser("migrate", help="apply PostgreSQL migrations (infra/migrations)")
    m.set_defaults(func=_migrate)
    a = sub.add_parser(
        "audit", help="replay the ledger into statements and check it",
        description="Replays the ledger (PostgreSQL) into per-tenant statements, checks its "
        "invariants, and compares the replay with the balances snapshot and the Redis "
        "projection, and every request record (of the tenant, whatever the period) with its "
        "ledger events: status, charge, requests still open past QF_REQUEST_DEADLINE_S. "
        "Prints the differences; exits 1 if there is any.")
    a.add_argument("--tenant", default=None, help="only this tenant")
    a.add_argument("--period", default=None, help="only this period (2026-11 or 2026-11-22)")
    a.add_argument("--format", choices=("table", "json", "csv"), default="table")
    a.add_argument("--no-projection", action="store_true",
                   help="do not compare with the Redis projection")
    a.set_defaults(func=_audit)
    p = sub.add_parser("projection", help="the Redis projection of balances")
    psub = p.add_subparsers(dest="projection_command", metavar="ACTION", required=True)
    r = psub.add_parser("rebuild", help="drop the projection and replay the ledger into it")
    r.set_defaults(func=_rebuild)


def _migrate(args: argparse.Namespace) -> int:
    applied = compose.migrate(Settings.from_env())
    print("applied: " + ", ".join(applied) if applied else "up to date")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from quotaflow.analytics.check import compare_rollups
    from quotaflow.ledger import audit as a
    from quotaflow.ledger.audit_levels import compare_level_projection, compare_levels
    from quotaflow.ledger.audit_records import compare_requests

    settings = Settings.from_env()
    with compose.postgres(settings, autocommit=False) as conn:
        result = a.replay(conn, args.tenant, args.period, progress=a.progress_printer())
        a.compare_snapshot(result, conn, args.tenant, args.period)
        levels = compare_levels(result, conn, args.tenant)
        if not args.no_projection:
            projection = compose.projection(settings)
            a.compare_projection(result, projection, args.tenant, args.period)
            compare_level_projection(result, projection.levels(args.tenant), levels,
                                     args.period)
        compare_requests(result, conn, args.tenant, settings.request_deadline_s)
        compare_rollups(result, conn, args.tenant)
    sys.stdout.write(a.render(result, args.format))
    if args.format != "table" and result.findings:
        for f in result.findings:
            print(f"DIFFERENCE: {f}", file=sys.stderr)
    return 0 if result.ok else 1


def _rebuild(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    ledger = compose.ledger(settings)
    projection = compose.projection(settings)
    applied = projection.rebuild(ledger)
    print(f"rebuilt the projection from {applied} ledger events "
          f"(last seq {projection.last_seq()}, {len(projection.balances())} balances)")
    return 0
