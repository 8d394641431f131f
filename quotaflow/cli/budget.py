"""`quotaflow team ...` and `quotaflow price ...`: a tenant's teams and their limits, and the
models' price versions. Money is given and shown in dollars, as decimals (at most 6 places);
inside it is an exact integer of micro-dollars (quotaflow.ledger.budgets)."""

from __future__ import annotations

import argparse
from typing import Any

from quotaflow import compose
from quotaflow.adapters import budget_store
from quotaflow.adapters.tenant_store import UnknownTenant
from quotaflow.ledger.budgets import format_usd, parse_usd
from quotaflow.settings import Settings


def usd_arg(text: str) -> int:
    """An argparse type: dollars as a decimal string, to micro-dollars."""
    try:
        return parse_usd(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def limits_text(tokens: int | None, usd: int | None, per: str = "period") -> str:
    """`1000 tokens and $5.000000 per period`, or `no limit of its own`."""
    parts = ([f"{tokens} tokens"] if tokens is not None else []) + (
        [f"${format_usd(usd)}"] if usd is not None else [])
    return " and ".join(parts) + f" per {per}" if parts else "no limit of its own"


def register(sub: Any) -> None:
    """Add `team create` and `price set|list` to the command line."""
    p = sub.add_parser("team", help="a tenant's teams and their budgets")
    tsub = p.add_subparsers(dest="team_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a team; its keys share its budget, within the "
                        "tenant's", description="quotaflow team create acme ml --usd 5")
    c.add_argument("tenant")
    c.add_argument("team", help="team id: a-z, 0-9 and '-'")
    c.add_argument("--tokens", type=int, help="tokens per period (default: unlimited)")
    c.add_argument("--usd", type=usd_arg, help="dollars per period, e.g. 5.25 (default: "
                   "unlimited)")
    c.set_defaults(func=_team_create)

    p = sub.add_parser("price", help="the models' prices, in versions")
    psub = p.add_subparsers(dest="price_command", metavar="ACTION", required=True)
    s = psub.add_parser("set", help="a new price version, in force for reservations made "
                        "after it", description="quotaflow price set smollm2 "
                        "--input-per-mtok 0.15 --output-per-mtok 0.60")
    s.add_argument("model")
    s.add_argument("--input-per-mtok", type=usd_arg, required=True,
                   help="dollars per million input (prompt) tokens")
    s.add_argument("--output-per-mtok", type=usd_arg, required=True,
                   help="dollars per million output tokens")
    s.set_defaults(func=_price_set)
    ls = psub.add_parser("list", help="every price version")
    ls.add_argument("model", nargs="?")
    ls.set_defaults(func=_price_list)


def _team_create(args: argparse.Namespace) -> int:
    with compose.postgres(Settings.from_env()) as conn:
        try:
            budget_store.create_team(conn, args.tenant, args.team, args.tokens, args.usd)
        except (ValueError, UnknownTenant) as exc:  # a bad argument, TeamExists, no tenant
            print(f"error: {exc}")
            return 2
    print(f"created team {args.team} of tenant {args.tenant}: "
          f"{limits_text(args.tokens, args.usd)}")
    return 0


def _price_set(args: argparse.Namespace) -> int:
    with compose.postgres(Settings.from_env()) as conn:
        try:
            price = budget_store.set_price(conn, args.model, args.input_per_mtok,
                                           args.output_per_mtok)
        except ValueError as exc:
            print(f"error: {exc}")
            return 2
    print(f"{price.model} price v{price.version}: ${format_usd(price.input_per_mtok)} input, "
          f"${format_usd(price.output_per_mtok)} output per million tokens, for reservations "
          "made from now on")
    return 0


def _price_list(args: argparse.Namespace) -> int:
    with compose.postgres(Settings.from_env()) as conn:
        prices = budget_store.list_prices(conn, args.model)
    print(f"{'model':<24} {'version':>7} {'input $/Mtok':>14} {'output $/Mtok':>14}")
    for p in prices:
        print(f"{p.model:<24} {p.version:>7} {format_usd(p.input_per_mtok):>14} "
              f"{format_usd(p.output_per_mtok):>14}")
    return 0
