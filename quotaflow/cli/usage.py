"""`quotaflow usage`: token usage over time from the analytics roll-ups."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from quotaflow import compose
from quotaflow.analytics.query import FORMATS, GRAINS, GROUPS, BadQuery, UsageQuery, render
from quotaflow.settings import Settings


def register(sub: Any) -> None:
    """Add `usage` to the CLI's subparsers."""
    u = sub.add_parser(
        "usage", help="token usage per tenant over time (the analytics roll-ups)",
        description="Sums the usage roll-ups (kept by `quotaflow analytics run`) per minute, "
        "hour or day (UTC), optionally per model, API key or team, money charged in dollars. "
        "Times are ISO 8601, UTC unless they name an offset; --from is inclusive, --to "
        "exclusive.")
    u.add_argument("--tenant", default=None, help="only this tenant")
    u.add_argument("--by", choices=GRAINS, default="hour")
    u.add_argument("--group-by", "--group", dest="group", choices=GROUPS, default=None,
                   help="a row per model, API key or team")
    u.add_argument("--from", dest="start", default=None, metavar="TS", help="from this time")
    u.add_argument("--to", dest="end", default=None, metavar="TS", help="until this time")
    u.add_argument("--format", choices=FORMATS, default="table")
    u.set_defaults(func=_usage)


def _usage(args: argparse.Namespace) -> int:
    try:
        query = UsageQuery.parse({"tenant": args.tenant, "by": args.by, "group": args.group,
                                  "from": args.start, "to": args.end})
    except BadQuery as exc:
        print(f"quotaflow usage: --{exc.param.replace('_', '-')}: {exc}", file=sys.stderr)
        return 2
    store = compose.usage_store(Settings.from_env())
    try:
        found = store.usage(query)
    finally:
        store.close()
    sys.stdout.write(render(query, found, args.format))
    return 0
