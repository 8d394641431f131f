"""One chaos run: start a local stack of its own with short timers, create tenants, send the
plan while the faults are injected, wait for every request to end, then judge."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from quotaflow import compose
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store
from quotaflow.chaos import observe, plan
from quotaflow.chaos.checks import compare_projection, judge
from quotaflow.chaos.faults import FaultRunner, Injector, Prober
from quotaflow.chaos.levels import LevelsRun
from quotaflow.chaos.load import Loader
from quotaflow.chaos.report import Result
from quotaflow.devstack.process import DevStackError, free_port
from quotaflow.devstack.services import postgres_reachable, redis_reachable
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings


@dataclass(frozen=True)
class ChaosConfig:
    """What `quotaflow chaos` was asked to do."""

    requests: int = 300
    tenants: int = 4
    concurrency: int = 8
    faults: tuple[str, ...] = plan.DEFAULT_KINDS
    faults_per_kind: int = 2
    every_s: float = 3.0
    seed: int = 1
    timeout_s: float = 120
    model: str = "standin"
    database: str = "qf_chaos"
    redis_db: int = 15
    state_dir: Path | None = None
    replicas: int = 1  # members of each consumer step's group (Apache Kafka only)
    levels: bool = True  # a tenant with teams, keys, prices, a price change and alerts

    def summary(self) -> str:
        """One line naming the run."""
        faults = ",".join(self.faults) or "none"
        return (f"{self.requests} requests, {self.tenants} tenants, concurrency "
                f"{self.concurrency}, faults {faults} x{self.faults_per_kind} every ~"
                f"{self.every_s:g} s, seed {self.seed}, model {self.model}"
                + (f", {self.replicas} members a step" if self.replicas > 1 else "")
                + ("" if self.levels else ", no levels"))


def with_path(url: str, path: str) -> str:
    """`url` with its path (database name or Redis index) replaced."""
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


_LOOPBACK = ("127.0.0.1", "localhost", "::1", None)  # None: a Unix socket


def chaos_settings(base: Settings, cfg: ChaosConfig, admit_port: int) -> Settings:
    """The stack's settings: its own database and Redis index, and timers short enough that
    recovery takes seconds (re-drive, deadline, reservation TTL, sweep, backoff). The run
    terminates backends and flushes Redis, so it refuses any server but a loopback one."""
    for name, url in (("POSTGRES_URL", base.postgres_url), ("REDIS_URL", base.redis_url)):
        if urlsplit(url).hostname not in _LOOPBACK:
            raise DevStackError(f"{name} must be on this machine (127.0.0.1) for a chaos run, "
                                f"got host {urlsplit(url).hostname!r}")
    return replace(
        base, postgres_url=with_path(base.postgres_url, cfg.database),
        redis_url=with_path(base.redis_url, str(cfg.redis_db)), model_source=cfg.model,
        public_url=f"http://127.0.0.1:{admit_port}", redrive_after_s=3, request_deadline_s=30,
        reservation_ttl_s=15, sweep_interval_s=1, retry_backoff_max_s=2,
        kafka_session_timeout_ms=2000, db_connect_timeout_s=2,
        # The stand-in pauses 5 ms a token, so a hostile client's hang-up a second into a
        # 400-token answer lands mid-generation (`chaos.hostile`); a real model is slower.
        standin_token_delay_ms=5)


def _start(cfg: ChaosConfig, base: Settings, say: Callable[[str], None]) -> DevStack:
    port = free_port()
    settings = chaos_settings(base, cfg, port)
    explicit_pg = postgres_reachable(settings.postgres_url)
    if explicit_pg:
        db.recreate(settings.postgres_url)
    explicit_redis = redis_reachable(settings.redis_url)
    if explicit_redis:
        redis.Redis.from_url(settings.redis_url).flushdb()
    state = cfg.state_dir or Path(tempfile.mkdtemp(prefix="quotaflow-chaos-"))
    stack = DevStack(state, settings, admit_port=port, kafka_port=free_port(),
                     replicas=cfg.replicas)
    say(f"starting a local stack in {state} (database {cfg.database}, Redis index "
        f"{cfg.redis_db}) ...")
    try:
        stack.up(explicit_pg, explicit_redis, say)
    except BaseException:
        stack.down()
        raise
    return stack


def _tenants(stack: DevStack, specs: list[plan.TenantSpec],
             levels: LevelsRun | None) -> dict[str, str]:
    keys = {}
    with compose.postgres(stack.settings) as conn:
        for t in specs:
            # A rate limit out of the way: the run is about faults, not throttling.
            keys[t.name] = tenant_store.create_tenant(conn, t.name, t.tokens,
                                                      rate_limit_per_min=1_000_000)
        if levels is not None:
            keys.update(levels.create(conn))
        compose.projection(stack.settings).catch_up(PostgresLedger(conn))
    return keys


def run(cfg: ChaosConfig, base: Settings, say: Callable[[str], None]) -> Result:
    """Run the chaos experiment `cfg` describes; the stack is stopped whatever happens."""
    began = time.monotonic()
    stack = _start(cfg, base, say)
    seconds = {"stack start": round(time.monotonic() - began, 1)}
    stop = threading.Event()
    injector: Injector | None = None
    levels: LevelsRun | None = None
    try:
        settings = stack.settings
        specs = plan.tenants(cfg.tenants)
        names = [t.name for t in specs] + ([plan.LEVELS_TENANT] if cfg.levels else [])
        sends = plan.sends(cfg.requests, names, settings.model_name, cfg.seed,
                           plan.level_key_names() if cfg.levels else None)
        spec = plan.levels(sends) if cfg.levels else None
        if spec is not None:
            levels = LevelsRun(spec, settings.postgres_url, settings.model_name)
        keys = _tenants(stack, [*specs, plan.TenantSpec(plan.PROBE_TENANT, plan.LARGE_GRANT),
                                plan.TenantSpec(plan.HOSTILE_TENANT, plan.LARGE_GRANT)], levels)
        small = [t.name for t in specs if t.tokens == plan.SMALL_GRANT]
        say(f"tenants: {', '.join(t.name for t in specs)} (small grants: "
            f"{', '.join(small) or 'none'}) and {plan.PROBE_TENANT}"
            + (f"; {spec.tenant} with teams {', '.join(t[0] for t in spec.teams)} and keys "
               f"{', '.join(k[0] for k in spec.keys)}, alerts to {levels.receiver.url}"
               if spec and levels else ""))
        faults = plan.faults(list(cfg.faults), cfg.faults_per_kind, cfg.every_s, cfg.seed)
        # The load outlasts the last fault a little, so every fault lands on traffic.
        duration = faults[-1].at_s + cfg.every_s / 2 if faults else 0.0
        loader = Loader(stack.admit_url, keys, settings.model_name,
                        caps=(settings.waits_per_key * stack.admit_workers,
                              settings.reads_per_s_per_key * stack.admit_workers))
        watcher = observe.Watcher(settings.postgres_url, stop)
        watcher.start()
        injector = Injector(stack)
        runner = FaultRunner(faults, injector, Prober(loader, settings.model_name), stop,
                             say, final_wait_s=cfg.timeout_s)
        say(f"sending {len(sends)} requests from {cfg.concurrency} threads over "
            f"{duration:.0f} s, {len(faults)} faults ...")
        loaded = time.monotonic()
        runner.start_at = loaded
        loader.deadline = loaded + duration + cfg.timeout_s
        runner.start()
        if levels is not None:  # a planned event beside the faults, halfway through the load
            levels.change_price_at(duration / 2, say)
        loader.run(sends, cfg.concurrency, duration, say)
        runner.join(max(0.0, loader.deadline + cfg.timeout_s - time.monotonic()))
        seconds["load"] = round(time.monotonic() - loaded, 1)
        last_recovery = (runner.records[-1].recovered_s
                         if runner.records and len(runner.records) == len(faults) else None)
        say("waiting for every accepted request to end ...")
        waited = time.monotonic()
        quiet = observe.wait_until_quiet(settings.postgres_url, loader.accepted, cfg.timeout_s,
                                         say)
        seconds["wait"] = round(time.monotonic() - waited, 1)
        stop.set()
        watcher.join(5)
        say("checking records, ledger, reservations, projection and audit ...")
        snap = observe.snapshot(settings, loader.accepted(), watcher.snapshot())
        for row in snap.requests.values():
            seen = snap.history.setdefault(row.request_id, [])
            if not seen or seen[-1] != row.status:
                seen.append(row.status)
        # The projection heals asynchronously: give it a few seconds to catch up.
        for _ in range(10):
            if snap.projection is not None and not compare_projection(snap.ledger,
                                                                      snap.projection):
                break
            time.sleep(1)
            snap.projection = observe.projection(settings)
        if levels is not None:
            levels.fill(snap, 30, say)
        verdict = judge(snap, loader.outcomes)
        seconds["total"] = round(time.monotonic() - began, 1)
        config = {"summary": cfg.summary(), "requests": cfg.requests, "tenants": cfg.tenants,
                  "concurrency": cfg.concurrency, "faults": list(cfg.faults),
                  "faults_per_kind": cfg.faults_per_kind, "every_s": cfg.every_s,
                  "seed": cfg.seed, "timeout_s": cfg.timeout_s, "model": cfg.model,
                  "replicas": cfg.replicas, "levels": cfg.levels,
                  "dead_at_end": sorted(n for n, p in stack.procs.items()
                                        if p.poll() is not None),
                  "restarts": dict(sorted(getattr(stack, "restarts", {}).items()))}
        return Result(config, runner.records, list(loader.outcomes), snap, verdict, quiet,
                      last_recovery, seconds, planned_faults=len(faults))
    finally:
        stop.set()
        if injector is not None:
            injector.resume_all()
        if levels is not None:
            levels.close()
        say("stopping the stack ...")
        stack.down()
