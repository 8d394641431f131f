"""`quotaflow key ...`: issue, list and revoke a tenant's API keys. A key reads
`qf_<key_id>_<secret>`; its id (never its secret) is what `list` shows and `revoke` takes. A
revoked key is refused by every admit process within `Settings.auth_cache_ms`."""

from __future__ import annotations

import argparse
from typing import Any

from quotaflow import compose
from quotaflow.adapters import tenant_store as tenants
from quotaflow.cli.budget import usd_arg
from quotaflow.settings import Settings


def register(sub: Any) -> None:
    """Add `key create|list|revoke` to the command line."""
    p = sub.add_parser("key", help="issue, list and revoke API keys")
    ksub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    c = ksub.add_parser("create", help="issue another API key for a tenant; prints the key "
                        "alone on the last line",
                        description="KEY=$(quotaflow key create acme | tail -1)")
    c.add_argument("tenant")
    c.add_argument("--team", help="the tenant's team the key belongs to (its budget is shared)")
    c.add_argument("--tokens", type=int, help="the key's own tokens per period (default: "
                   "unlimited at the key)")
    c.add_argument("--usd", type=usd_arg, help="the key's own dollars per period")
    c.add_argument("--tpm", type=int, default=0, metavar="T",
                   help="tokens the key may reserve in a rolling minute (default: unlimited)")
    c.add_argument("--max-inflight", type=int, default=0, metavar="K",
                   help="the key's requests in flight at once (default: unlimited)")
    c.add_argument("--rate-limit", type=int, metavar="R",
                   help="the key's own requests per minute, in place of its tenant's")
    c.set_defaults(func=create)
    ls = ksub.add_parser("list", help="a tenant's keys: id, created, revoked, requests a "
                         "minute (never a secret)")
    ls.add_argument("tenant")
    ls.set_defaults(func=_list)
    r = ksub.add_parser("revoke", help="revoke a key; admit refuses it within "
                        "QF_AUTH_CACHE_MS (1 s by default)")
    r.add_argument("key_id", metavar="KEY_ID",
                   help="the part of the key between 'qf_' and the second '_'")
    r.set_defaults(func=_revoke)


def create(args: argparse.Namespace) -> int:
    """Issue a key for `args.tenant`; the key is printed alone on the last line."""
    with compose.postgres(Settings.from_env()) as conn:
        try:
            key = tenants.create_key(conn, args.tenant, getattr(args, "tpm", 0),
                                     getattr(args, "max_inflight", 0),
                                     team=getattr(args, "team", None),
                                     tokens=getattr(args, "tokens", None),
                                     usd=getattr(args, "usd", None),
                                     rate_limit_per_min=getattr(args, "rate_limit", None))
        except (tenants.UnknownTenant, tenants.UnknownTeam, ValueError) as exc:
            print(f"error: {exc}")
            return 2
    print(f"created key {key.split('_')[1]} for tenant {args.tenant}; it is shown only once:")
    print(key)
    return 0


def _list(args: argparse.Namespace) -> int:
    with compose.postgres(Settings.from_env()) as conn:
        try:
            keys = tenants.PostgresTenants(conn).list_keys(args.tenant)
        except tenants.UnknownTenant as exc:
            print(f"error: {exc}")
            return 2
    print(f"{'key id':<14} {'created':<25} {'revoked':<25} requests/min")
    for k in keys:
        revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
        rate = k.rate_limit_per_min or "tenant's"
        print(f"{k.key_id:<14} {k.created_at.isoformat(timespec='seconds'):<25} "
              f"{revoked:<25} {rate}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    with compose.postgres(settings) as conn:
        if not tenants.revoke_key(conn, args.key_id):
            print(f"error: no key {args.key_id!r}")
            return 2
    print(f"revoked key {args.key_id}; admit refuses it within "
          f"{settings.auth_cache_ms} ms")
    return 0
