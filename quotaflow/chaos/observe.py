"""Reading a chaos run's stack: each request's statuses as they change, the wait until every
request has ended, and the end state the checks judge (records, ledger, reservations, Redis
projection, `quotaflow audit`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
import redis

from quotaflow import compose
from quotaflow.chaos.facts import (
    TERMINAL,
    Balances,
    LedgerRow,
    OpenReservation,
    RequestRow,
    Snapshot,
)
from quotaflow.chaos.faults import OBSERVER
from quotaflow.chaos.order import read_records
from quotaflow.settings import Settings


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, application_name=OBSERVER, connect_timeout=5)


class Watcher(threading.Thread):
    """Polls every request's status, keeping the sequence of distinct statuses seen for each;
    survives the database's outages (it reconnects)."""

    def __init__(self, url: str, stop: threading.Event, every_s: float = 0.5) -> None:
        super().__init__(name="chaos-watcher", daemon=True)
        self.url = url
        self.stop = stop
        self.every_s = every_s
        self.history: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def poll(self, conn: psycopg.Connection[Any]) -> None:
        """Read every status once."""
        rows = conn.execute("SELECT request_id, status FROM requests").fetchall()
        with self._lock:
            for request_id, status in rows:
                seen = self.history.setdefault(request_id, [])
                if not seen or seen[-1] != status:
                    seen.append(status)

    def snapshot(self) -> dict[str, list[str]]:
        """A copy of the histories."""
        with self._lock:
            return {k: list(v) for k, v in self.history.items()}

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.wait(self.every_s):
            try:
                conn = conn or _connect(self.url)
                self.poll(conn)
            except psycopg.Error:
                conn = None
        if conn is not None:
            conn.close()


def open_work(url: str, accepted: set[str]) -> tuple[int, int]:
    """(requests accepted or recorded and not yet ended, reservations still open)."""
    with _connect(url) as conn:
        rows = dict(conn.execute("SELECT request_id, status FROM requests").fetchall())
        (reservations,) = conn.execute(
            "SELECT count(*) FROM reservations WHERE NOT expired").fetchone() or (0,)
    unfinished = sum(1 for r in accepted if rows.get(r) not in TERMINAL)
    unfinished += sum(1 for r, s in rows.items() if r not in accepted and s not in TERMINAL)
    return unfinished, int(reservations)


def wait_until_quiet(url: str, accepted: Callable[[], set[str]], timeout_s: float,
                     progress: Callable[[str], None]) -> bool:
    """Wait until every request has ended and no reservation is open; False after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    said = 0.0
    while True:
        try:
            unfinished, reservations = open_work(url, accepted())
            state = f"{unfinished} requests open, {reservations} reservations open"
        except psycopg.Error as exc:
            unfinished, reservations = -1, -1
            state = f"the database does not answer ({type(exc).__name__})"
        if unfinished == 0 and reservations == 0:
            return True
        if time.monotonic() > deadline:
            return False
        if time.monotonic() - said > 5:
            said = time.monotonic()
            progress(f"waiting: {state} ({deadline - said:.0f} s left)")
        time.sleep(0.5)


def projection(settings: Settings) -> Balances | None:
    """The Redis projection's balances, or None when Redis cannot be read."""
    try:
        return {k: (b.granted, b.reserved, b.spent)
                for k, b in compose.projection(settings).balances().items()}
    except redis.RedisError:
        return None


def audit(settings: Settings) -> tuple[bool, list[str]]:
    """Run `quotaflow audit` against the stack; (clean, its differences)."""
    done = subprocess.run([sys.executable, "-m", "quotaflow", "audit", "--format", "json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **settings.as_env()})
    try:
        findings = [str(f) for f in json.loads(done.stdout).get("findings", [])]
    except ValueError:
        findings = [line for line in (done.stdout + done.stderr).splitlines()[-5:] if line]
    if done.returncode != 0 and not findings:
        findings = [f"quotaflow audit exited {done.returncode}"]
    return done.returncode == 0 and not findings, findings


def snapshot(settings: Settings, accepted: set[str], history: dict[str, list[str]]) -> Snapshot:
    """The end state of the stack, for `checks.judge`."""
    with _connect(settings.postgres_url) as conn:
        requests = {r: RequestRow(r, t, s, int(c or 0)) for r, t, s, c in conn.execute(
            "SELECT request_id, tenant_id, status, charged_tokens FROM requests")}
        ledger = [replace(LedgerRow(*row[:-2]), at=float(row[-2]), reason=row[-1])
                  for row in conn.execute(
            "SELECT seq, tenant_id, period, kind, request_id, amount, released, key_id, "
            "team_id, usd, usd_released, model, price_version, input_tokens, "
            "extract(epoch FROM recorded_at), reason FROM ledger_events ORDER BY seq")]
        open_ = [OpenReservation(r, t, float(age)) for r, t, age in conn.execute(
            "SELECT request_id, tenant_id, extract(epoch FROM now() - reserved_at) "
            "FROM reservations WHERE NOT expired")]
        grants = dict(conn.execute("SELECT tenant_id, grant_tokens FROM tenants").fetchall())
    clean, findings = audit(settings)
    return Snapshot(accepted, requests, ledger, open_, grants, projection(settings),
                    history, clean, findings, settings.reservation_ttl_s,
                    settings.sweep_interval_s, read_records(settings))
