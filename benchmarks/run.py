"""One `quotaflow bench` run: a local stack of its own (database `qf_test_bench_run`, Redis
index 15), admit against the bare endpoint, the pipeline sustained and at a fixed rate, the
audit, then the JSON result, the BENCHMARKS.md tables and the plots."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from benchmarks import door, pipeline, plots, servers, tables, wrk
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings

WARM_REQUESTS = 500  # sent to each fresh stack before it is measured
DATABASE = "qf_test_bench_run"
REDIS_DB = 15


@dataclass(frozen=True)
class Options:
    """What to run and where to write."""

    seconds: float = 8
    connections: int = 16
    rounds: int = 3
    clients: tuple[int, ...] = (16, 32, 64)
    requests: int = 6000
    rate: float = 500
    quick: bool = False
    out: Path = Path(".quotaflow/bench/result.json")
    benchmarks_md: Path | None = Path("BENCHMARKS.md")
    plots_dir: Path | None = Path("docs/bench")
    skip_door: bool = False
    servers: bool = False  # only the server comparison (benchmarks.servers)
    fill_s: float = 4  # under the consumer session timeout (6 s): the paused step stays a member

    @classmethod
    def quick_run(cls, **kw: Any) -> Options:
        """About a minute after the stack is up: one short round, one concurrency."""
        return cls(**{"seconds": 3, "rounds": 1, "clients": (16,), "requests": 1500,
                      "quick": True, **kw})


def _stack(settings: Settings, workdir: Path) -> DevStack:
    base = settings.postgres_url.rsplit("/", 1)[0]
    port = free_port()
    stack = DevStack(workdir / "stack", replace(
        settings, postgres_url=f"{base}/{DATABASE}", model_source="standin",
        redis_url=settings.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}",
        public_url=f"http://127.0.0.1:{port}"), admit_port=port, kafka_port=free_port())
    db.recreate(stack.settings.postgres_url)
    redis.Redis.from_url(stack.settings.redis_url).flushdb()
    return stack


def _tenant(stack: DevStack) -> tuple[str, str]:
    """A tenant neither the quota nor the rate limit will stop, and its key."""
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
        key = tenants.create_tenant(conn, tenant, 10**15, rate_limit_per_min=10**9)
        RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
    return tenant, key


def audit(settings: Settings, attempts: int = 3) -> dict[str, Any]:
    """`quotaflow audit` on the bench's database; the usage roll-ups trail the ledger by a
    poll, so a difference is looked at again a few seconds later before it counts."""
    env = {**os.environ, **settings.as_env()}
    for attempt in range(1, attempts + 1):
        proc = subprocess.run([sys.executable, "-m", "quotaflow", "audit", "--format", "json"],
                              env=env, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode == 0 or attempt == attempts:
            break
        time.sleep(5)
    diffs = [ln for ln in proc.stderr.splitlines() if ln.startswith("DIFFERENCE")]
    return {"clean": proc.returncode == 0, "exit_code": proc.returncode, "attempts": attempt,
            "differences": diffs[:20]}


def commit() -> str | None:
    """The checkout's commit, `+changes` when its tracked files differ from it (the code a
    figure was measured on); None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "")


def bench(opts: Options, say: Callable[[str], None]) -> dict[str, Any]:
    """Run everything; the result (also written to `opts.out`)."""
    wrk.binary()  # fail before starting anything
    workdir = Path(tempfile.mkdtemp(prefix="qf-bench-"))
    stack = _stack(Settings.from_env(), workdir)
    result: dict[str, Any] = {"date": datetime.now(UTC).date().isoformat(),
                              "commit": commit(),
                              "mode": "quick" if opts.quick else "full",
                              "database": DATABASE, "redis_db": REDIS_DB,
                              "warm_requests": WARM_REQUESTS}
    say("starting a local stack of the bench's own ...")
    stack.up(explicit_pg=True, explicit_redis=True, progress=say)
    up = [stack]  # the stacks started, in order: only the last one is up
    try:
        tenant, key = _tenant(stack)
        admit_argv = [str(a) for a in stack.procs["admit"].args]  # type: ignore[union-attr]
        shown = ["ADDR" if prev in ("--bind", "-b") else "PORT" if prev == "--port" else a
                 for prev, a in zip(["", *admit_argv], admit_argv, strict=False)]
        result["server"] = " ".join(shlex.quote(a) for a in shown[1:])
        pg, model = stack.settings.postgres_url, stack.settings.model_name
        if opts.servers:
            say(f"admit and bare under {len(servers.CANDIDATES)} server setups, the door alone "
                f"(the first step paused): {opts.rounds} rounds x {opts.seconds:g} s ...")
            result["servers"] = servers.compare(stack, key, pipeline.body(model), opts.seconds,
                                                opts.connections, opts.rounds, workdir, say)
            say("waiting for the pipeline to end what the door accepted ...")
            pipeline.wait_all_ended(pg, 300)
        else:
            _pipeline(up, tenant, key, opts, result, workdir, say)
            stack = _fresh(up, workdir, say, "the open loop")
            result["open_loop"] = _open_loop(stack, tenant, key, opts, workdir, say,
                                             "a fresh stack", WARM_REQUESTS)
        say("auditing the bench's ledger and requests ...")
        result["audit"] = audit(stack.settings)
        say(f"  audit {'clean' if result['audit']['clean'] else 'NOT clean'}")
    finally:
        up[-1].down()
    write(result, opts, say)
    return result


def _pipeline(up: list[DevStack], tenant: str, key: str, opts: Options, result: dict[str, Any],
              workdir: Path, say: Callable[[str], None]) -> None:
    """admit against bare and the open loop on the stack that ran it (unless the door is
    skipped), then each sustained run on a fresh stack, and the drain on the last. Fresh
    stacks, because the local broker's cost grows with what it holds
    (`_open_loop`): a run after the door's rounds would measure the broker's age, which a
    Kafka cluster does not have, more than the pipeline."""
    stack = up[-1]
    pg, model = stack.settings.postgres_url, stack.settings.model_name
    if not opts.skip_door:
        say(f"admit against the bare endpoint: {opts.rounds} rounds x {opts.seconds:g} s, "
            f"{opts.connections} connections ...")
        bare, bare_url = door.start_bare(stack, workdir)
        try:
            result["door"] = door.compare(stack.admit_url, bare_url, key,
                                          pipeline.body(model), opts.seconds,
                                          opts.connections, opts.rounds, workdir, say)
        finally:
            bare.terminate()
            bare.wait(10)
        result["open_loop_aged"] = _open_loop(stack, tenant, key, opts, workdir, say,
                                              "the door's stack", pipeline.stored_requests(pg))
    result["sustained"] = []
    for clients in opts.clients:
        stack = _fresh(up, workdir, say, f"{clients} clients")
        say(f"pipeline: {opts.requests} requests from {clients} clients ...")
        pids = {name: proc.pid for name, proc in stack.procs.items()}
        s = pipeline.sustained(stack.admit_url, pg, tenant, key, model, opts.requests,
                               clients, workdir, pids)
        say(f"  all {s['ended']}/{s['requests']} ended after {s['seconds_to_all_ended']} s:"
            f" {s['ended_per_s']:,.0f} req/s (admitted {s['admitted_per_s']:,.0f}/s; "
            f"drained {s['drain_after_last_admitted_s']:.2f} s after the last admission)")
        say("  CPU ms a request: " + ", ".join(
            f"{k} {v:.2f}" for k, v in s["cpu_ms_per_request"].items()))
        result["sustained"].append(s)
    say("pipeline: the steps draining a backlog (the first step paused while admit fills "
        "it) ...")
    d = pipeline.drain(stack.admit_url, pg, tenant, key, model, stack.procs["estimate"].pid,
                       opts.fill_s, opts.connections, workdir)
    say(f"  {d['ended']}/{d['backlog']} drained in {d['seconds']} s: "
        f"{d['drained_per_s']:,.0f} req/s")
    result["drain"] = d


def _open_loop(stack: DevStack, tenant: str, key: str, opts: Options, workdir: Path,
               say: Callable[[str], None], which: str, held: int) -> dict[str, Any]:
    """The open loop on `stack`, whose broker holds the records of `held` requests: Tansu's
    memory engine lists every stored batch of a partition on each fetch, so the broker's cost
    grows with what it holds (BENCHMARKS.md)."""
    pg = stack.settings.postgres_url
    say(f"pipeline: open loop at {opts.rate:g} req/s for {opts.seconds:g} s on {which} (its "
        f"broker holds the records of {held:,} requests) ...")
    o = pipeline.open_loop(stack.admit_url, pg, tenant, key, stack.settings.model_name,
                           opts.rate, opts.seconds, workdir, say=say)
    o["broker_held_requests"], o["stack"] = held, which
    say(f"  end to end p50 {o['end_to_end']['p50_ms']:.0f} ms, "
        f"p99 {o['end_to_end']['p99_ms']:.0f} ms")
    return o


def _fresh(up: list[DevStack], workdir: Path, say: Callable[[str], None], purpose: str
           ) -> DevStack:
    """The stack up (`up[-1]`) stopped and a new one started on the same database and Redis
    (a broker that holds nothing), appended to `up` once it is up, and warmed with
    `WARM_REQUESTS`, so that a run's first do not pay for connections and consumer joins."""
    say(f"a fresh stack for {purpose} (same database), its broker empty ...")
    stack = up[-1]
    stack.down()
    port = free_port()
    fresh = DevStack(workdir / f"stack-{port}", replace(
        stack.settings, public_url=f"http://127.0.0.1:{port}"), admit_port=port,
        kafka_port=free_port())
    try:
        fresh.up(explicit_pg=True, explicit_redis=True, progress=say)
    except BaseException:
        fresh.down()
        raise
    up.append(fresh)
    say(f"  warming it: {WARM_REQUESTS} requests ...")
    tenant, key = _tenant(fresh)
    pipeline.sustained(fresh.admit_url, fresh.settings.postgres_url, tenant, key,
                       fresh.settings.model_name, WARM_REQUESTS, 16, workdir, {})
    return fresh


def write(result: dict[str, Any], opts: Options, say: Callable[[str], None]) -> None:
    """The JSON result; the tables and plots when the run has what they show."""
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2))
    say(f"wrote {opts.out}")
    if opts.benchmarks_md is not None and ("door" in result or "servers" in result):
        tables.refresh_file(opts.benchmarks_md, result)
        say(f"refreshed the tables in {opts.benchmarks_md}")
    if opts.plots_dir is not None and "open_loop" in result:
        opts.plots_dir.mkdir(parents=True, exist_ok=True)
        for drawn in (plots.latency_cdf(result, opts.plots_dir / "latency-cdf.png"),
                      plots.throughput(result, opts.plots_dir / "throughput.png")):
            say(f"drew {drawn}")
