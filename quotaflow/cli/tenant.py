"""`quotaflow tenant ...`: create tenants (their keys: `quotaflow key`)."""

from __future__ import annotations

import argparse
from typing import Any

from quotaflow import compose
from quotaflow.adapters import tenant_store as tenants
from quotaflow.cli import key as key_cli
from quotaflow.cli.budget import limits_text, usd_arg
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings


def register(sub: Any) -> None:
    """Add `tenant create|key` to the command line."""
    p = sub.add_parser("tenant", help="create tenants and API keys")
    tsub = p.add_subparsers(dest="tenant_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a tenant with a recurring token grant; prints its "
                        "API key alone on the last line",
                        description="KEY=$(quotaflow tenant create acme --tokens 1000 | tail -1)")
    c.add_argument("name", help="tenant id: a-z, 0-9 and '-'")
    c.add_argument("--tokens", type=int, required=True, help="tokens granted each period")
    c.add_argument("--usd", type=usd_arg, help="dollars per period, e.g. 100 (default: "
                   "no money limit)")
    c.add_argument("--period", choices=("day", "month"), default="month",
                   help="grant period (default: month)")
    c.add_argument("--tz", default="UTC", help="the time zone its days and months are "
                   "counted in, e.g. Europe/Paris (default: UTC)")
    c.add_argument("--rate-limit", type=int, default=600,
                   help="requests per minute per API key (default: 600)")
    c.set_defaults(func=_create)
    k = tsub.add_parser("key", help="issue another API key for a tenant (as `quotaflow key "
                        "create`)")
    k.add_argument("tenant")
    k.set_defaults(func=key_cli.create)


def _create(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    compose.migrate(settings)
    with compose.postgres(settings) as conn:
        try:
            key = tenants.create_tenant(conn, args.name, args.tokens, args.period,
                                        args.rate_limit, args.usd, args.tz)
        except ValueError as exc:  # a bad argument, or TenantExists
            print(f"error: {exc}")
            return 2
        compose.projection(settings).catch_up(PostgresLedger(conn))
    print(f"created tenant {args.name}: {limits_text(args.tokens, args.usd, args.period)} "
          f"({args.tz}), {args.rate_limit} requests/min per key")
    print(key)
    return 0
