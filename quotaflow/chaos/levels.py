"""A chaos run's budget levels: the tenant with two teams and their keys, the model's prices,
the alerts and their receiver (plan.LevelsSpec); the price change in the middle of the load;
and what the checks read of them at the end (limits, price versions with when each was seen
in force, alert rules, the receiver's receipts)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from quotaflow.adapters import budget_store, tenant_store
from quotaflow.alerts.store import PostgresAlertStore
from quotaflow.chaos import plan
from quotaflow.chaos.facts import AlertRule, Limits, PriceRow, Snapshot
from quotaflow.chaos.faults import OBSERVER
from quotaflow.chaos.level_checks import expected_crossings, find_alert_errors
from quotaflow.chaos.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"quotaflow-chaos-alerts-secret").decode()


def _connect(url: str) -> psycopg.Connection[Any]:
    # The harness's own name: a `pg` fault spares it.
    return psycopg.connect(url, autocommit=True, application_name=OBSERVER, connect_timeout=5)


class LevelsRun:
    """The levels of one run against one stack's database and model."""

    def __init__(self, spec: plan.LevelsSpec, postgres_url: str, model: str) -> None:
        self.spec = spec
        self.url = postgres_url
        self.model = model
        self.receiver = Receiver(SECRET)
        # (model, price version) -> when the harness saw it committed (Unix seconds)
        self.in_force: dict[tuple[str, int], float] = {}
        self.notes: list[str] = []
        self._timer: threading.Timer | None = None

    def create(self, conn: psycopg.Connection[Any]) -> dict[str, str]:
        """The tenant, its teams, keys and alerts, and the first price; the loader's keys
        (the tenant's own under its name, each team key as `plan.level_key_names`)."""
        s = self.spec
        keys = {s.tenant: tenant_store.create_tenant(conn, s.tenant, plan.LARGE_GRANT,
                                                     rate_limit_per_min=1_000_000, usd=s.usd)}
        for team, tokens, usd in s.teams:
            budget_store.create_team(conn, s.tenant, team, tokens, usd)
        ids = {}
        for name, team, tokens, usd in s.keys:
            loader_name = f"{s.tenant}/{name}"
            keys[loader_name] = tenant_store.create_key(conn, s.tenant, team=team,
                                                        tokens=tokens, usd=usd)
            ids[name] = keys[loader_name].split("_")[1]
        alerts = PostgresAlertStore(conn)
        for scope, name, percent in s.alerts:
            alerts.add(s.tenant, scope, ids.get(name, name) if scope == "key" else name,
                       percent, self.receiver.url, SECRET)
        self.set_price(0)
        return keys

    def set_price(self, index: int) -> None:
        """Set `spec.prices[index]` as the model's next version, again and again through a
        database fault for up to 30 s; keep when it was seen committed."""
        input_per_mtok, output_per_mtok = self.spec.prices[index]
        deadline = time.monotonic() + 30
        while True:
            try:
                with _connect(self.url) as conn:
                    price = budget_store.set_price(conn, self.model, input_per_mtok,
                                                   output_per_mtok)
                # After the commit returned: a reservation decided later sees this version.
                self.in_force[(price.model, price.version)] = time.time()
                self.notes.append(f"price v{price.version} set")
                return
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    self.notes.append(f"price change failed: {type(exc).__name__}")
                    return
                time.sleep(0.5)

    def change_price_at(self, at_s: float, say: Callable[[str], None]) -> None:
        """Set the next price version `at_s` seconds from now (a planned event, beside the
        faults)."""
        def change() -> None:
            self.set_price(1)
            say(f"price of {self.model} changed: {', '.join(self.notes)}")

        self._timer = threading.Timer(at_s, change)
        self._timer.daemon = True
        self._timer.start()

    def fill(self, snap: Snapshot, wait_s: float, say: Callable[[str], None]) -> None:
        """Put the limits, prices, alert rules into `snap`, then wait (up to `wait_s`) until
        every crossing the ledger made has been delivered, and put the receipts in."""
        if self._timer is not None:
            self._timer.join(35)
        with _connect(self.url) as conn:
            snap.limits, snap.prices, snap.alert_rules = read(conn, self.in_force)
        expected = expected_crossings(snap.ledger, snap.limits, snap.alert_rules)
        say(f"waiting for {len(expected)} alert crossings to be delivered ...")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(
                "never delivered" in f for f in find_alert_errors(self.receiver.receipts(),
                                                                  expected)):
            time.sleep(0.5)
        snap.receipts = self.receiver.receipts()

    def close(self) -> None:
        """Stop the timer and the receiver."""
        if self._timer is not None:
            self._timer.cancel()
        self.receiver.close()


def read(conn: psycopg.Connection[Any], in_force: dict[tuple[str, int], float]
         ) -> tuple[Limits, list[PriceRow], list[AlertRule]]:
    """Every level with a limit (a tenant's tokens are its grant: `checks.find_overshoot`),
    every price version (with when the harness saw it in force) and every alert."""
    limits: Limits = {}
    for scope, level_id, tokens, usd in conn.execute(
            "SELECT 'key', key_id, limit_tokens, limit_usd FROM api_keys UNION ALL "
            "SELECT 'team', tenant_id || '/' || team_id, limit_tokens, limit_usd FROM teams "
            "UNION ALL SELECT 'tenant', tenant_id, NULL, limit_usd FROM tenants"):
        if tokens is not None or usd is not None:
            limits[(scope, level_id)] = (tokens, usd)
    prices = [PriceRow(m, v, i, o, in_force.get((m, v))) for m, v, i, o in conn.execute(
        "SELECT model, version, input_per_mtok, output_per_mtok FROM prices "
        "ORDER BY model, version")]
    rules = [AlertRule(*row) for row in conn.execute(
        "SELECT tenant_id, scope, scope_id, threshold_percent FROM budget_alerts")]
    return limits, prices, rules
