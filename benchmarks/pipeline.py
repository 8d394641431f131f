"""The whole pipeline, measured from the client to the read model.

End times are read from PostgreSQL, not polled: `requests.updated_at` is set by the statement
that writes a request's terminal status (record's `finish`), on this same host's clock that
the client's send times are taken from. It is the transaction's start, so an end time is early
by at most record's commit (a millisecond or two); polling the status would instead add up to
a whole poll interval, and the polls would compete with the pipeline for the same cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import cpu, wrk
from benchmarks.stats import summarize
from quotaflow.adapters import postgres as db
from quotaflow.client import TERMINAL

Conn = psycopg.Connection[Any]
# How often a run's progress is read. Each read costs PostgreSQL about 1 ms per thousand of the
# run's requests (6,000: 7 ms), on the cores under test; the figures come from the stored
# times, not from when a poll saw them, so a slower poll only ends the wait a little later.
POLL_S = 0.5


def body(model: str) -> str:
    """A small request for `model`: the stand-in answers it at once."""
    return json.dumps({"model": model, "prompt": "hello", "max_tokens": 4})


@dataclass(frozen=True)
class Run:
    """One run's requests: the bench tenant's, from `source`, sent after `since` (epoch s).
    Found through the tenant's `(tenant_id, created_at)` index: a poll reads this run's rows
    only, not every request the bench stored before (a scan of those, ten times a second,
    took CPU from the stack under test)."""

    pg_url: str
    tenant: str
    source: str
    since: float

    WHERE = "tenant_id = %s AND created_at >= to_timestamp(%s) AND source = %s"

    @property
    def params(self) -> tuple[str, float, str]:
        """The parameters of `WHERE`."""
        return self.tenant, self.since, self.source

    @classmethod
    def new(cls, pg_url: str, tenant: str, kind: str) -> Run:
        return cls(pg_url, tenant, f"/bench/{kind}/{uuid.uuid4().hex[:8]}", time.time() - 1)

    def progress(self, conn: Conn | None = None) -> tuple[int, int, float, float]:
        """How many are stored, how many ended, and the latest created_at and updated_at
        (epoch seconds; 0 if none); on `conn`, or a connection of its own."""
        if conn is None:
            with db.connect(self.pg_url, autocommit=True) as own:
                return self.progress(own)
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = ANY(%s)), "
            "coalesce(extract(epoch FROM max(created_at)), 0), "
            f"coalesce(extract(epoch FROM max(updated_at)), 0) FROM requests WHERE {self.WHERE}",
            (list(TERMINAL), *self.params)).fetchone()
        stored, ended, admitted, last = row if row is not None else (0, 0, 0, 0)
        return int(str(stored)), int(str(ended)), float(str(admitted)), float(str(last))

    def wait_ended(self, expected: int, timeout_s: float) -> tuple[int, int]:
        """Wait until `expected` requests are stored and all ended (or time is up);
        (stored, ended)."""
        deadline = time.monotonic() + timeout_s
        with db.connect(self.pg_url, autocommit=True) as conn:
            while True:
                stored, ended, _, _ = self.progress(conn)
                if (stored >= expected and ended == stored) or time.monotonic() > deadline:
                    return stored, ended
                time.sleep(POLL_S)


def stored_requests(pg_url: str) -> int:
    """How many requests the database holds (every one went through the broker)."""
    with db.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM requests").fetchone()
    return int(str(row[0])) if row is not None else 0


def wait_all_ended(pg_url: str, timeout_s: float) -> int:
    """Wait until no request is open (or time is up); how many are still open."""
    deadline = time.monotonic() + timeout_s
    while True:
        with db.connect(pg_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM requests WHERE NOT status = ANY(%s)",
                               (list(TERMINAL),)).fetchone()
        still_open = int(str(row[0])) if row is not None else 0
        if still_open == 0 or time.monotonic() > deadline:
            return still_open
        time.sleep(0.5)


def sustained(admit_url: str, pg_url: str, tenant: str, key: str, model: str, n: int,
              connections: int, workdir: Path, pids: dict[str, int],
              timeout_s: float = 120) -> dict[str, Any]:
    """Send `n` requests over `connections` as fast as admit takes them (wrk); requests/s from
    the first send until the last request ended, and the CPU each of `pids` spent a request."""
    run = Run.new(pg_url, tenant, f"sustained/{connections}")
    argv, env = wrk.command(admit_url + "/", timeout_s, connections, key, workdir, run.source,
                            limit=n, run_id=run.source.rsplit("/", 1)[1], body=body(model))
    cpu_before = cpu.cpu_seconds(pids)
    started = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + timeout_s
    # wrk keeps its full duration after every thread has its share: stop it (SIGINT makes
    # it print its result) as soon as the requests are stored.
    with db.connect(pg_url, autocommit=True) as conn:
        while proc.poll() is None and time.monotonic() < deadline:
            if run.progress(conn)[0] >= n:
                break
            time.sleep(POLL_S)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    sent = wrk.parse(out)
    stored, ended = run.wait_ended(min(n, sent.requests - sent.non2xx),
                                   max(10.0, deadline - time.monotonic()))
    _, _, last_admitted, last_ended = run.progress()
    cpu_ms = cpu.per_request_ms(cpu_before, cpu.cpu_seconds(pids), ended)
    return {"connections": connections, "requests": stored, "ended": ended,
            "non2xx": sent.non2xx + sent.socket_errors,
            "admitted_per_s": round(stored / max(1e-6, last_admitted - started), 1),
            "seconds_to_all_ended": round(last_ended - started, 3),
            "ended_per_s": round(ended / max(1e-6, last_ended - started), 1),
            "admit_p99_ms": round(sent.p99_ms, 2),
            # how long the steps took to drain after admit took the last request
            "drain_after_last_admitted_s": round(last_ended - last_admitted, 3),
            "cpu_ms_per_request": cpu_ms}


def open_loop(admit_url: str, pg_url: str, tenant: str, key: str, model: str, rate: float,
              seconds: float, workdir: Path, connections: int = 64,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Requests due at a fixed `rate` whatever the answers (an open loop, paced by wrk's
    `OPEN_LUA`) for `seconds`; latency from each request's due time, named in its ce-id (so a
    late send counts against the system, not for it), to its end in PostgreSQL and to its
    storing by admit; and wrk's own latency from each actual send to its 202."""
    run = Run.new(pg_url, tenant, "open")
    total = int(rate * seconds)
    start = time.time() + 0.5
    argv, env = wrk.open_command(admit_url + "/", rate, total, connections, key, workdir,
                                 run.source, start, body(model))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                          timeout=seconds + 90, check=False)
    if proc.returncode != 0:
        raise wrk.WrkError(f"wrk exited {proc.returncode}: {proc.stderr[-1000:]}")
    sent = wrk.parse(proc.stdout)
    say(f"  wrk sent {sent.requests} of {total}; waiting for the ends")
    run.wait_ended(sent.requests - sent.non2xx, 120)
    with db.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT ce_id, status, extract(epoch FROM created_at), "
                            f"extract(epoch FROM updated_at) FROM requests WHERE {run.WHERE}",
                            run.params).fetchall()
    # (due, status, stored at, ended at), epoch seconds
    got = [(wrk.due_at(str(c))[1], str(s), float(str(a)), float(str(t))) for c, s, a, t in rows]
    e2e = [ended - due for due, status, _, ended in got if status in TERMINAL]
    stored = [at - due for due, _, at, _ in got]
    last_stored = max((at for _, _, at, _ in got), default=start)
    return {"rate": rate, "seconds": seconds, "sent": total, "connections": connections,
            "achieved_rate": round(len(rows) / max(1e-6, last_stored - start), 1),
            "non2xx": sent.non2xx + sent.socket_errors, "ended": len(e2e),
            "end_to_end": summarize(e2e), "stored": summarize(stored),
            "admit": {"p50_ms": sent.p50_ms, "p90_ms": sent.p90_ms, "p99_ms": sent.p99_ms,
                      "max_ms": sent.max_ms},
            "end_to_end_s": sorted(round(x, 4) for x in e2e)}


def drain(admit_url: str, pg_url: str, tenant: str, key: str, model: str, first_step_pid: int,
          fill_s: float, connections: int, workdir: Path) -> dict[str, Any]:
    """How fast the steps drain a backlog, with admit idle: the first step is paused (SIGSTOP)
    while admit takes requests for `fill_s` (under the consumer session timeout, so it keeps
    its partitions), then resumed; requests/s from the resume until the last one ended."""
    run = Run.new(pg_url, tenant, "drain")
    os.kill(first_step_pid, signal.SIGSTOP)
    try:
        sent = wrk.run(admit_url + "/", fill_s, connections, key, workdir, run.source,
                       run_id=run.source.rsplit("/", 1)[1], body=body(model))
    finally:
        resumed = time.time()
        os.kill(first_step_pid, signal.SIGCONT)
    stored, ended = run.wait_ended(sent.requests - sent.non2xx, 120)
    last_ended = run.progress()[3]
    return {"backlog": stored, "ended": ended, "non2xx": sent.non2xx + sent.socket_errors,
            "seconds": round(last_ended - resumed, 3),
            "drained_per_s": round(ended / max(1e-6, last_ended - resumed), 1)}
