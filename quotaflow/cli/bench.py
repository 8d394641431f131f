"""`quotaflow bench`: measure admit and the pipeline on a local stack of the bench's own.

The benchmarks are not part of the installed package: they live in a checkout's
`benchmarks/`, imported when the command runs, with matplotlib and psutil from the `dev` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Measures, on a local stack it starts and stops itself (loopback only; its own PostgreSQL
database qf_test_bench_run and Redis index 15; the stand-in model):

  1. admit against a bare Flask endpoint that only parses the CloudEvent, both under admit's
     own server command, loaded by wrk in interleaved rounds: req/s, p50/p99, non-2xx, and
     ratio = admit req/s / bare req/s (median over rounds);
  2. the whole pipeline: an open loop at --rate req/s paced by wrk (each request due at its
     own time, whatever the answers), latency from each due time to its terminal status
     (read from PostgreSQL), on the stack that ran step 1; then N requests from C clients as
     fast as admit takes them, timed until the last one has ended, with the CPU each process
     spent a request, each C in --clients on a fresh stack; the steps alone draining a
     backlog (the first step paused while admit fills it); and the open loop again on a
     fresh stack. Fresh stacks, because the local broker slows as it fills (README, Kafka);
     each is warmed with 500 requests first;
  3. `quotaflow audit` on the bench's database.

With --servers, instead of 1 and 2: admit and the bare endpoint under each candidate server
setup (granian and gunicorn, workers x threads) with the pipeline's first step paused, so the
door alone is measured: req/s, latency and CPU a request (how admit's server was chosen).

With --latency, instead: the latency real Kafka allows, on each --broker in turn (a stack of
its own each): one request at a time (first streamed token, whole answer, p50/p99, against the
bare loop), where that time goes span by span, PostgreSQL's cost of a durable commit here, an
open loop at --rate with the CPU each process spends a request (the brokers' JVMs included),
and the real model through the pipeline against the bare loop at concurrency 8 (median of
--rounds, default 3; skipped with a line when the model is not built). PostgreSQL and Redis:
POSTGRES_URL / REDIS_URL, else embedded ones. Writes .quotaflow/bench/latency.json and
docs/bench/latency-brokers.png and latency-hops.png, prints its tables (BENCHMARKS.md, "The
latency real Kafka allows").

Writes the JSON result, refreshes the tables between the markers in BENCHMARKS.md and draws
docs/bench/latency-cdf.png and docs/bench/throughput.png. Progress goes to stderr, the
summary to stdout; exits 1 if the audit is not clean. Needs wrk (infra/local/setup.sh
installs it). A full run takes about two and a half minutes on an idle machine, --quick
about one.

The benchmarks live in a checkout (benchmarks/, not in the installed package) and need the
dev extra: run from the checkout's root after pip install -e '.[dev,local]'."""

# Said in one line when the benchmarks or what they need are missing (an installed wheel).
NOT_HERE = ("quotaflow bench: the benchmarks are not installed with the package; run it from a "
            "checkout of quotaflow with the dev extra (git clone, then pip install -e "
            "'.[dev,local]' in it)")


DEFAULT_OUT = Path(".quotaflow/bench/result.json")


def register(sub: Any) -> None:
    """Add `bench` to the CLI's subparsers."""
    b = sub.add_parser("bench", help="measure admit against a bare endpoint, and the pipeline",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--seconds", type=float, default=None,
                   help="length of each wrk round and of the open loop (default 8; quick 3)")
    b.add_argument("--connections", type=int, default=16,
                   help="wrk connections for admit against bare (default 16)")
    b.add_argument("--quick", action="store_true",
                   help="one short round, one concurrency, fewer requests (a smoke run)")
    b.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    b.add_argument("--clients", default=None,
                   help="comma-separated client counts for the sustained runs (default 16,32,64)")
    b.add_argument("--requests", type=int, default=None,
                   help="requests per sustained run (default 6000; quick 1500)")
    b.add_argument("--rate", type=float, default=500, help="open-loop rate, req/s (default 500)")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="where to write the JSON result")
    b.add_argument("--no-docs", action="store_true",
                   help="write only the JSON: leave BENCHMARKS.md and docs/bench/ alone")
    b.add_argument("--skip-door", action="store_true", help="measure only the pipeline")
    b.add_argument("--servers", action="store_true",
                   help="instead: admit and bare under each candidate server setup (granian, "
                        "gunicorn; workers x threads), the door alone")
    b.add_argument("--latency", action="store_true",
                   help="instead: the latency real Kafka allows (one request at a time, span "
                        "by span, an open loop at --rate with the CPU of every process, the "
                        "real model against the bare loop), on each --broker")
    b.add_argument("--broker", choices=("kafka", "tansu", "both"), default=None,
                   help="with --latency: Apache Kafka (3 nodes), Tansu, or both in one run "
                        "(default both where Java runs Kafka here, else tansu)")
    b.set_defaults(func=_bench)


def _not_here(exc: ModuleNotFoundError) -> int:
    """2, saying why, where the checkout's benchmarks/ or the dev extra is missing (a wheel
    without a checkout, or a checkout without the extra); any other missing module is a bug."""
    if (exc.name or "").split(".")[0] not in ("benchmarks", "matplotlib", "psutil"):
        raise exc
    print(NOT_HERE, file=sys.stderr)
    return 2


def _bench(args: argparse.Namespace) -> int:
    if args.latency:
        return _latency(args)
    try:
        from benchmarks.run import Options, bench
        from benchmarks.wrk import WrkError
    except ModuleNotFoundError as exc:
        return _not_here(exc)

    given: dict[str, Any] = {"connections": args.connections, "rate": args.rate,
                             "out": args.out, "skip_door": args.skip_door,
                             "servers": args.servers}
    if args.seconds is not None:
        given["seconds"] = args.seconds
    if args.rounds is not None:
        given["rounds"] = max(1, args.rounds)
    if args.clients:
        given["clients"] = tuple(int(c) for c in args.clients.split(","))
    if args.requests is not None:
        given["requests"] = args.requests
    if args.no_docs:
        given |= {"benchmarks_md": None, "plots_dir": None}
    opts = Options.quick_run(**given) if args.quick else Options(**given)
    try:
        result = bench(opts, lambda m: print(m, file=sys.stderr, flush=True))
    except WrkError as exc:
        print(f"quotaflow bench: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in result.items()
               if k in ("door", "sustained", "servers", "audit")}
    if "door" in summary:
        summary["door"] = {k: v for k, v in summary["door"].items() if k != "rounds"}
    for loop in ("open_loop", "open_loop_aged"):
        if loop in result:
            summary[loop] = {k: v for k, v in result[loop].items() if k != "end_to_end_s"}
    print(json.dumps(summary, indent=2))
    return 0 if result["audit"]["clean"] else 1


def _latency(args: argparse.Namespace) -> int:
    """`quotaflow bench --latency`: benchmarks.latency_run, its tables on stdout."""
    try:
        from benchmarks import latency_run as lr
    except ModuleNotFoundError as exc:
        return _not_here(exc)
    from quotaflow.devstack import kafka_cluster

    broker = args.broker or ("both" if kafka_cluster.available() else "tansu")
    given: dict[str, Any] = {
        "brokers": ("kafka", "tansu") if broker == "both" else (broker,), "rate": args.rate,
        "model_dir": lr.built_model(Path(".quotaflow/models")),
        "out": args.out if args.out != DEFAULT_OUT else Path(".quotaflow/bench/latency.json")}
    if args.seconds is not None:
        given["seconds"] = args.seconds
    if args.rounds is not None:
        given["model_rounds"] = max(1, args.rounds)
    if args.requests is not None:
        given["requests"] = args.requests
    if args.no_docs:
        given["plots_dir"] = None
    opts = lr.LatencyOptions.quick_run(**given) if args.quick else lr.LatencyOptions(**given)
    result = lr.run(opts, lambda m: print(m, file=sys.stderr, flush=True))
    print(lr.report(result, opts.requests))
    return 0
