"""`quotaflow analytics run|check|reset`: the usage roll-ups' consumer and its upkeep."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from typing import Any

from quotaflow import compose
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow")


def register(sub: Any) -> None:
    """Add `analytics` to the CLI's subparsers."""
    a = sub.add_parser("analytics", help="usage roll-ups from the ledger, completed and failed "
                       "topics")
    asub = a.add_subparsers(dest="analytics_command", metavar="ACTION", required=True)
    r = asub.add_parser("run", help="keep the roll-ups (a Kafka consumer group) until stopped",
                        description="Rolls the ledger, completed and failed topics up per "
                        "tenant, model, API key and minute into PostgreSQL, exactly once: "
                        "offsets are stored in the same transaction as the roll-ups.")
    r.add_argument("--group", default=None,
                   help="consumer group (default: QF_CONSUMER_GROUP_PREFIX + 'analytics')")
    r.add_argument("--batch", type=int, default=1000, help="most records per transaction")
    r.set_defaults(func=_run)
    c = asub.add_parser("check", help="compare the roll-ups with the ledger; exit 1 on a "
                        "difference")
    c.add_argument("--tenant", default=None, help="only this tenant")
    c.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(func=_check)
    z = asub.add_parser("reset", help="forget every roll-up and stored offset; the next run "
                        "rebuilds from the start of the topics")
    z.set_defaults(func=_reset)


def _run(args: argparse.Namespace) -> int:
    from quotaflow.adapters import kafka
    from quotaflow.analytics.consumer import AnalyticsConsumer
    from quotaflow.runtime import metrics

    if args.batch < 1:
        raise SystemExit("--batch must be at least 1")
    settings = Settings.from_env()
    logging.getLogger().setLevel(settings.log_level)
    kafka.check_brokers(settings)  # a wrong password or CA ends start-up with one line
    metrics.serve(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    store = compose.usage_store(settings, statement_timeout=True)
    consumer = AnalyticsConsumer(settings, store, args.group, args.batch)
    log.info("analytics consuming %s as group %s", ", ".join(consumer.topics), consumer.group)
    consumer.run(stop)
    store.close()
    return 0


def _check(args: argparse.Namespace) -> int:
    from quotaflow.analytics.check import check_rollups

    with compose.postgres(Settings.from_env(), autocommit=False) as conn:
        result = check_rollups(conn, args.tenant)
    if args.format == "json":
        print(json.dumps({"ok": result.ok, "compared_events": result.compared,
                          "pending_events": result.pending, "findings": result.findings},
                         indent=2))
    else:
        print(f"{result.compared} ledger events compared, {result.pending} not rolled up yet, "
              f"{len(result.findings)} differences")
        for f in result.findings:
            print(f"DIFFERENCE: {f}")
    return 0 if result.ok else 1


def _reset(args: argparse.Namespace) -> int:
    store = compose.usage_store(Settings.from_env())
    store.reset()
    store.close()
    print("roll-ups and stored offsets cleared; stop running consumers first, then "
          "`quotaflow analytics run` rebuilds from the start of the topics")
    return 0
