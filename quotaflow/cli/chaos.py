"""`quotaflow chaos`: the fault-injection harness (quotaflow/chaos)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from quotaflow.chaos import plan
from quotaflow.chaos.harness import ChaosConfig, run
from quotaflow.chaos.report import as_json, table
from quotaflow.devstack.process import DevStackError
from quotaflow.settings import Settings

_DESCRIPTION = """\
Starts a local stack of its own (its own state dir, PostgreSQL database, Redis index and free
ports on 127.0.0.1; short re-drive, deadline, reservation TTL and sweep timers), creates
tenants (every third with a grant small enough that requests get rejected) and sends N
requests through admit from C threads: about 10% exact resends of an earlier event (some sent
twice at once) and a few bad inputs that must be answered 4xx. One more tenant has two teams
whose limits (tokens, usd) are smaller than the sum of their keys', a price for the model that
changes halfway through the load, and alerts at 50% on a team and a key, POSTed to a receiver
the run starts (it verifies each Standard Webhooks signature); --no-levels leaves it out.
Meanwhile it injects, at seeded random times, K faults of each kind asked:

  kill    SIGKILL of a random function process (admit, estimate, reserve, infer, settle,
          record)
  broker  SIGKILL of a Kafka broker (on a cluster the node leading the busiest partition)
  broker-pause
          SIGSTOP of that broker for a few seconds, then SIGCONT (a cluster's fault: on one
          broker every send waits it out)
  pg      pg_terminate_backend of every connection of the stack to its database
  redis   FLUSHDB of the stack's Redis index

After each fault it times how long until a fresh request completes. Then it waits (at most
--timeout-s) until every accepted request has ended, and checks: each accepted request ended
with exactly one terminal status (lost: still open); each record's charge equals the ledger's
(double charges); no tenant over its grant (overshoot); no reservation open past its TTL
(leaked); the Redis projection equals the ledger's replay; `quotaflow audit` is clean; no key,
team or tenant ever over its tokens or usd limit, replayed event by event; every reservation at
the price version in force and settled at it; each alert crossing delivered exactly once (one
webhook-id, retries included) with a valid signature. It prints a table (Markdown) and exits
1 on any loss or finding, 2 if the stack cannot start.
Progress goes to stderr."""


def register(sub: Any) -> None:
    """Add `chaos` to the CLI's subparsers."""
    p = sub.add_parser("chaos", help="drive requests through a local stack while injecting "
                       "faults, then check that nothing was lost or billed twice",
                       description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ChaosConfig()
    p.add_argument("--requests", type=_positive, default=d.requests, metavar="N",
                   help=f"requests to send, resends and bad inputs included (default "
                   f"{d.requests})")
    p.add_argument("--tenants", type=_positive, default=d.tenants, metavar="T",
                   help=f"tenants to spread them over (default {d.tenants})")
    p.add_argument("--concurrency", type=_positive, default=d.concurrency, metavar="C",
                   help=f"client threads (default {d.concurrency})")
    p.add_argument("--faults", type=_kinds, default=",".join(d.faults), metavar="KINDS",
                   help="comma-separated fault kinds among kill,broker,broker-pause,pg,"
                   "redis,join,leave, or none (default: kill,broker,pg,redis); join starts "
                   "one more member of a step's group, leave stops one gracefully (never "
                   "the last; with --replicas)")
    p.add_argument("--faults-per-kind", type=int, default=d.faults_per_kind, metavar="K",
                   help=f"faults of each kind (default {d.faults_per_kind}); the load is "
                   "spread over the time they take")
    p.add_argument("--every-s", type=float, default=d.every_s, metavar="S",
                   help=f"mean seconds between faults (default {d.every_s:g})")
    p.add_argument("--seed", type=int, default=d.seed, metavar="X",
                   help=f"seed of the plan: sends, fault kinds, times and victims (default "
                   f"{d.seed})")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s, metavar="S",
                   help=f"how long to wait for every request to end, and for recovery after "
                   f"the last fault (default {d.timeout_s:g})")
    p.add_argument("--model", type=_model, default=d.model,
                   help="standin (default: deterministic, no weights) or dir:PATH")
    p.add_argument("--database", default=d.database,
                   help=f"PostgreSQL database to (re)create for the run (default {d.database})")
    p.add_argument("--redis-db", type=int, default=d.redis_db,
                   help=f"Redis index the run flushes and uses (default {d.redis_db})")
    p.add_argument("--replicas", type=_positive, default=d.replicas, metavar="N",
                   help="members of each consumer step's group (default 1; more needs Apache "
                   "Kafka); a kill fault kills one member of the step it picks")
    p.add_argument("--no-levels", dest="levels", action="store_false",
                   help="leave out the tenant with teams, prices and alerts")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="the stack's logs and state (default: a new temporary folder)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the result, every finding included, as JSON")
    p.set_defaults(func=_chaos)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return tuple(plan.parse_kinds(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _model(text: str) -> str:
    if text != "standin" and not text.startswith("dir:"):
        raise argparse.ArgumentTypeError(f"standin or dir:PATH, got {text!r}")
    return text


def _say(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _chaos(args: argparse.Namespace) -> int:
    # SIGTERM (a supervisor, `timeout`) stops the run and its stack like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.every_s <= 0 or args.timeout_s <= 0 or args.faults_per_kind < 0:
        _say("--every-s and --timeout-s must be positive, --faults-per-kind not negative")
        return 2
    cfg = ChaosConfig(args.requests, args.tenants, args.concurrency, args.faults,
                      args.faults_per_kind, args.every_s, args.seed, args.timeout_s,
                      args.model, args.database, args.redis_db, args.state_dir,
                      args.replicas, args.levels)
    _say(cfg.summary())
    try:
        result = run(cfg, Settings.from_env(), _say)
    except DevStackError as exc:
        _say(f"the stack did not start: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted; the stack is stopped")
        return 130
    sys.stdout.write(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(result), indent=2, sort_keys=True) + "\n")
        _say(f"wrote {args.json}")
    return 0 if result.ok else 1
