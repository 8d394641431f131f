"""Injecting faults into a running local stack, and timing how long the pipeline takes to
complete a fresh request after each."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import redis

from quotaflow.adapters import kafka
from quotaflow.chaos.facts import Outcome
from quotaflow.chaos.load import Loader, event_request, send_until_answered
from quotaflow.chaos.plan import PROBE_TENANT, Fault
from quotaflow.devstack import members as scaling
from quotaflow.devstack.stack import DevStack
from quotaflow.events.status import RequestStatus

# The harness's own PostgreSQL connections: a `pg` fault spares them.
OBSERVER = "quotaflow-chaos"
# How long a `broker-pause` holds its node stopped: longer than a produce's round trip, shorter
# than the brokers' session timeout (3 s on the local cluster fences a node; 2.5 s is a GC pause
# or a frozen VM that comes back, not a node lost).
PAUSE_S = 2.5
# How long a broker fault waits for every node to serve again first: one down at a time.
ALL_UP_WITHIN_S = 60.0


@dataclass(frozen=True)
class FaultRecord:
    """A fault as injected: when (seconds after the load started), what it did, and how long
    until a request sent after it completed (None: not before the next fault or the end)."""

    kind: str
    target: str
    at_s: float
    note: str
    recovered_s: float | None


class Injector:
    """The kinds of fault (plan.FAULT_KINDS), against one stack's processes, database and
    Redis index."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        self._paused: dict[str, threading.Timer] = {}

    def inject(self, fault: Fault) -> str:
        """Inject `fault` now; returns what was done."""
        if fault.kind in ("broker", "broker-pause"):
            waited = self.await_brokers()
            target = self.broker_target()
            note = (self._kill(target) if fault.kind == "broker" else self._pause(target))
            return note + (f" (after {waited:.1f} s for every broker to serve)" if waited > 0.5
                           else "")
        if fault.kind == "kill":
            # A step run as several members of its group (`--replicas`): its first running.
            members = [n for n in self.stack.procs if n.rsplit("-", 1)[0] == fault.target
                       and n not in (self.stack.kafka.names if self.stack.kafka else [])]
            running = [n for n in members if self.stack.procs[n].poll() is None]
            return self._kill(fault.target if fault.target in self.stack.procs
                              else (running or members or [fault.target])[0])
        if fault.kind == "join":
            return f"{scaling.join(self.stack, fault.target)} joined {fault.target}'s group"
        if fault.kind == "leave":
            left = scaling.leave(self.stack, fault.target)
            return (f"{left} left {fault.target}'s group (SIGTERM)" if left else
                    f"no member of {fault.target} left: one runs")
        if fault.kind == "pg":
            with psycopg.connect(self.stack.settings.postgres_url, autocommit=True,
                                 application_name=OBSERVER, connect_timeout=5) as conn:
                done = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND pid <> pg_backend_pid() AND application_name <> %s",
                    (OBSERVER,)).fetchall()
            return f"terminated {sum(1 for (ok,) in done if ok)} PostgreSQL connections"
        if fault.kind == "redis":
            redis.Redis.from_url(self.stack.settings.redis_url, socket_timeout=5).flushdb()
            return "FLUSHDB"
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def broker_target(self) -> str:
        """The broker process a `broker` fault kills: on an Apache Kafka cluster the node that
        leads the `admitted` topic (every request's first hop; its clients must fail over),
        else a running node; on Tansu its one process."""
        names = self.stack.kafka.names if self.stack.kafka else ["kafka"]
        if len(names) == 1:
            return names[0]
        with contextlib.suppress(Exception):  # no metadata now: any running node will do
            topic = self.stack.settings.topic("admitted")
            admin = kafka.admin_client(self.stack.settings, log_level=0)
            leader = admin.list_topics(topic, timeout=5).topics[topic].partitions[0].leader
            if f"kafka-{leader}" in names:
                return f"kafka-{leader}"
        return next((n for n in names if self.stack.procs[n].poll() is None), names[0])

    def await_brokers(self) -> float:
        """Wait (at most ALL_UP_WITHIN_S) until every node of a cluster runs and serves, so a
        broker fault never finds one still down from the last; returns the seconds waited."""
        cluster = self.stack.kafka.cluster if self.stack.kafka else None
        began = time.monotonic()
        while cluster is not None and time.monotonic() - began < ALL_UP_WITHIN_S:
            if all(n.proc is not None and n.proc.poll() is None and n.name not in self._paused
                   and cluster.serving(n) for n in cluster.nodes):
                break
            time.sleep(0.2)
        return time.monotonic() - began

    def _pause(self, name: str) -> str:
        proc = self.stack.procs.get(name)
        if proc is None or proc.poll() is not None:
            return f"{name} was already down"
        os.killpg(proc.pid, signal.SIGSTOP)
        timer = threading.Timer(PAUSE_S, self._resume, args=(name,))
        timer.daemon = True
        self._paused[name] = timer
        timer.start()
        return f"SIGSTOP {name} (pid {proc.pid}) for {PAUSE_S:g} s, then SIGCONT"

    def _resume(self, name: str) -> None:
        proc = self.stack.procs.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
        self._paused.pop(name, None)

    def resume_all(self) -> None:
        """SIGCONT every node still paused (the run ends or is interrupted)."""
        for name, timer in list(self._paused.items()):
            timer.cancel()
            self._resume(name)

    def _kill(self, name: str) -> str:
        proc = self.stack.procs.get(name)
        if proc is None or proc.poll() is not None:
            return f"{name} was already down"
        pid = proc.pid
        try:
            self.stack.kill(name)
        except (ProcessLookupError, subprocess.TimeoutExpired) as exc:
            return f"SIGKILL {name} (pid {pid}): {type(exc).__name__}"
        return f"SIGKILL {name} (pid {pid})"


def request_status(base_url: str, key: str, request_id: str) -> str | None:
    """The request's status from admit, or None when admit does not answer."""
    req = urllib.request.Request(f"{base_url.rstrip('/')}/v1/requests/{request_id}",
                                 headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(json.loads(resp.read())["status"])
    except (OSError, ValueError, KeyError):
        return None


# What the loader allows the door for one answer: a probe given less and unanswered is not a
# finding.
ANSWER_WITHIN_S = 10.0


class Prober:
    """Sends fresh requests for the probe tenant until one completes: the pipeline works."""

    def __init__(self, loader: Loader, model: str) -> None:
        self.loader = loader
        self.model = model
        self.sent = 0

    def recover(self, deadline: float) -> bool:
        """True once a request sent now completes before `deadline` (monotonic)."""
        key = self.loader.keys[PROBE_TENANT]
        while time.monotonic() < deadline:
            self.sent += 1
            req = event_request(key, "/chaos/probe", f"probe-{self.sent}",
                                {"model": self.model, "prompt": "probe", "max_tokens": 4})
            budget_s = max(0.5, deadline - time.monotonic())
            status, body, _ = send_until_answered(self.loader.base_url, req, budget_s)
            if (status is None and budget_s < ANSWER_WITHIN_S) or status == 503:
                # Not recovered yet: a 503 is the door's right answer while a service is down,
                # and a probe cut short by the next fault before the door's own time to answer
                # says nothing of the door. Other answers count, as the load's do.
                continue
            request_id = body.get("request_id")
            self.loader.record(Outcome(-self.sent, "probe", status, request_id,
                                       str(body.get("detail", ""))[:160]))
            while request_id and time.monotonic() < deadline:
                state = request_status(self.loader.base_url, key, request_id)
                if state == RequestStatus.COMPLETED:
                    return True
                if state in (RequestStatus.REJECTED, RequestStatus.FAILED,
                             RequestStatus.EXPIRED):
                    break
                time.sleep(0.1)
            time.sleep(0.1)
        return False


class FaultRunner(threading.Thread):
    """Injects the planned faults at their times (from `start_at`, monotonic), probing for
    recovery after each until the next is due; after the last, for up to `final_wait_s`."""

    def __init__(self, plan: list[Fault], injector: Injector, prober: Prober,
                 stop: threading.Event, progress: Callable[[str], None],
                 final_wait_s: float) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.plan = plan
        self.injector = injector
        self.prober = prober
        self.stop = stop
        self.progress = progress
        self.final_wait_s = final_wait_s
        self.start_at = time.monotonic()
        self.records: list[FaultRecord] = []
        self.last_fault_at: float | None = None  # monotonic

    def run(self) -> None:
        for i, fault in enumerate(self.plan):
            if self.stop.wait(max(0.0, self.start_at + fault.at_s - time.monotonic())):
                return
            try:
                note = self.injector.inject(fault)
            except (OSError, psycopg.Error, redis.RedisError) as exc:
                note = f"failed to inject: {exc}"
            now = self.last_fault_at = time.monotonic()
            self.progress(f"fault {i + 1}/{len(self.plan)} at {now - self.start_at:.1f} s: "
                          f"{fault.kind} {fault.target}: {note}")
            due = (self.start_at + self.plan[i + 1].at_s if i + 1 < len(self.plan)
                   else now + self.final_wait_s)
            recovered = self.prober.recover(due)
            took = round(time.monotonic() - now, 2) if recovered else None
            self.records.append(FaultRecord(fault.kind, fault.target,
                                            round(now - self.start_at, 2), note, took))
            self.progress(f"  recovered in {took} s" if recovered
                          else "  not recovered before the next fault")
