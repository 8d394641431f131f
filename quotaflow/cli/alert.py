"""`quotaflow alert add|list|remove` (a tenant's threshold alerts) and `quotaflow alerts run`
(the process that evaluates and delivers them: `quotaflow.alerts`)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from quotaflow import compose
from quotaflow.alerts import webhooks
from quotaflow.alerts.store import PostgresAlertStore
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow")


def register(sub: Any) -> None:
    """Add `alert` and `alerts` to the command line."""
    p = sub.add_parser("alert", help="a tenant's budget threshold alerts (signed webhooks)")
    asub = p.add_subparsers(dest="alert_command", metavar="ACTION", required=True)
    a = asub.add_parser("add", help="POST a signed CloudEvent to URL when a level's spent "
                        "first reaches PERCENT of its limit in a period",
                        description="quotaflow alert add acme --at 80 --url https://hooks."
                        "example/qf --secret whsec_$(head -c 24 /dev/urandom | base64)")
    a.add_argument("tenant")
    level = a.add_mutually_exclusive_group()
    level.add_argument("--team", help="the team's level (default: the tenant's)")
    level.add_argument("--key", dest="key_id", metavar="KEY_ID", help="the key's level")
    a.add_argument("--at", type=int, required=True, metavar="PERCENT",
                   help="the threshold, 1-100 percent of the level's limit")
    a.add_argument("--url", required=True, help="where to POST (http or https)")
    a.add_argument("--secret", required=True,
                   help="whsec_<base64>: signs each delivery as Standard Webhooks says")
    a.set_defaults(func=_add)
    ls = asub.add_parser("list", help="a tenant's alerts (never their secrets)")
    ls.add_argument("tenant")
    ls.set_defaults(func=_list)
    rm = asub.add_parser("remove", help="remove an alert and its deliveries not yet made")
    rm.add_argument("tenant")
    rm.add_argument("alert_id", type=int, metavar="ALERT_ID")
    rm.set_defaults(func=_remove)
    r = sub.add_parser("alerts", help="the alerts' process")
    rsub = r.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    run = rsub.add_parser("run", help="evaluate the ledger topic (a consumer group of its own) "
                          "and deliver the alerts until stopped")
    run.add_argument("--group", default=None,
                     help="consumer group (default: QF_CONSUMER_GROUP_PREFIX + 'alerts')")
    run.add_argument("--backoff", type=float, default=2.0, metavar="SECONDS",
                     help="the first retry's wait, doubling up to an hour (default: 2)")
    run.set_defaults(func=_run)


def _add(args: argparse.Namespace) -> int:
    scope, scope_id = (("team", args.team) if args.team else ("key", args.key_id)
                       if args.key_id else ("tenant", args.tenant))
    try:
        webhooks.secret_key(args.secret)
        if not 1 <= args.at <= 100:
            raise ValueError("--at must be 1 to 100")
        if not args.url.startswith(("http://", "https://")):
            raise ValueError("--url must be an http or https URL")
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    settings = Settings.from_env()
    compose.migrate(settings)
    with compose.postgres(settings) as conn:
        if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s",
                        (args.tenant,)).fetchone() is None:
            print(f"error: no tenant {args.tenant!r}")
            return 2
        alert_id = PostgresAlertStore(conn).add(args.tenant, scope, scope_id, args.at,
                                                args.url, args.secret)
    print(f"alert {alert_id}: {scope} {scope_id} at {args.at}% -> {args.url}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with compose.postgres(Settings.from_env()) as conn:
        alerts = PostgresAlertStore(conn).of_tenant(args.tenant)
    print(f"{'id':<6} {'scope':<7} {'level':<20} {'at':>4}  url")
    for a in alerts:
        print(f"{a.alert_id:<6} {a.scope:<7} {a.scope_id:<20} {a.threshold_percent:>3}%  {a.url}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with compose.postgres(Settings.from_env()) as conn:
        if not PostgresAlertStore(conn).remove(args.tenant, args.alert_id):
            print(f"error: tenant {args.tenant!r} has no alert {args.alert_id}")
            return 2
    print(f"removed alert {args.alert_id}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from quotaflow.adapters import kafka
    from quotaflow.adapters.postgres import Reconnecting
    from quotaflow.alerts.consumer import AlertConsumer, run
    from quotaflow.runtime import metrics

    settings = Settings.from_env()
    logging.getLogger().setLevel(settings.log_level)
    kafka.check_brokers(settings)
    metrics.serve(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # Connections reopened when lost (a restarted or failed-over database): `run` goes back
    # to the stored offsets after an error and carries on.
    conn, sender = Reconnecting.from_settings(settings), Reconnecting.from_settings(settings)
    try:
        consumer = AlertConsumer(settings, PostgresAlertStore(conn), args.group)
        log.info("alerts consuming the ledger topic as group %s", consumer.group)
        run(consumer, PostgresAlertStore(sender), stop, args.backoff)
    finally:
        conn.close()
        sender.close()
    return 0
