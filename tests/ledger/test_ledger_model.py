"""Stateful property test: the PostgreSQL ledger against a small reference model of the rules,
through random sequences of grants, reservations, settlements, releases, expiries and
redeliveries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from quotaflow.adapters import postgres as db
from quotaflow.ledger.commands import Outcome, ReleaseReservation, ReserveTokens, SettleReservation
from quotaflow.ledger.store import PostgresLedger
from tests.ledger.conftest import make_tenant

TENANT = "model"


@dataclass
class Ref:
    amount: int
    ended: str | None = None


class LedgerMachine(RuleBasedStateMachine):
    url: str = ""

    @initialize(grant=st.integers(0, 400))
    def setup(self, grant: int) -> None:
        self.conn: Any = db.connect(self.url, autocommit=True)
        self.conn.execute("TRUNCATE tenants, api_keys, ledger_streams, ledger_events, "
                          "reservations, balances, ledger_commands, requests, level_balances, "
                          "prices CASCADE")
        make_tenant(self.conn, TENANT, grant)
        self.ledger = PostgresLedger(self.conn)
        self.period = self.ledger.current_period(TENANT)
        self.granted, self.spent = grant, 0
        self.refs: dict[str, Ref] = {}
        self.first: dict[str, Outcome] = {}
        self.n = 0

    def teardown(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()

    def open_tokens(self) -> int:
        return sum(r.amount for r in self.refs.values() if r.ended is None)

    @rule(amount=st.integers(1, 150))
    def reserve(self, amount: int) -> None:
        self.n += 1
        rid = f"r{self.n}"
        (o,) = self.ledger.reserve([ReserveTokens(TENANT, rid, amount, str(amount))])
        fits = self.open_tokens() + self.spent + amount <= self.granted
        assert o.accepted == fits, (o, self.open_tokens(), self.spent, self.granted)
        if fits:
            self.refs[rid] = Ref(amount)
        self.first[rid] = o

    @precondition(lambda self: bool(self.first))
    @rule(data=st.data())
    def redeliver_reservation(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.first)))
        amount = self.first[rid].amount
        (o,) = self.ledger.reserve([ReserveTokens(TENANT, rid, amount, str(amount))])
        assert o == self.first[rid]

    def _open_ids(self) -> list[str]:
        return sorted(r for r, ref in self.refs.items() if ref.ended is None)

    @precondition(lambda self: bool(self._open_ids()))
    @rule(data=st.data(), actual=st.integers(0, 200))
    def settle(self, data: st.DataObject, actual: int) -> None:
        rid = data.draw(st.sampled_from(self._open_ids()))
        (o,) = self.ledger.end([SettleReservation(TENANT, rid, actual, f"s{actual}")])
        ref = self.refs[rid]
        charged = min(actual, ref.amount)
        assert (o.kind, o.amount, o.released) == ("ReservationSettled", charged,
                                                  ref.amount - charged)
        ref.ended, self.spent = "settled", self.spent + charged
        assert self.ledger.end([SettleReservation(TENANT, rid, actual, f"s{actual}")]) == [o]

    @precondition(lambda self: bool(self._open_ids()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(self._open_ids()))
        (o,) = self.ledger.end([ReleaseReservation(TENANT, rid, "failed", "rel")])
        assert o.kind == "ReservationReleased"
        self.refs[rid].ended = "released"

    @precondition(lambda self: bool(self._open_ids()))
    @rule(data=st.data())
    def expire_one(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(self._open_ids()))
        self.conn.execute("UPDATE reservations SET reserved_at = now() - interval '1 hour' "
                          "WHERE request_id = %s", (rid,))
        expired = self.ledger.expire_stale(ttl_s=600)
        assert [o.request_id for o in expired] == [rid]
        self.refs[rid].ended = "expired"
        (late,) = self.ledger.end([SettleReservation(TENANT, rid, 1, "late")])
        assert late.kind is None and late.reason == "reservation_expired"

    @invariant()
    def balances_match_the_reference(self) -> None:
        if not hasattr(self, "ledger"):
            return
        b = self.ledger.balance(TENANT, self.period)
        assert (b.granted, b.reserved, b.spent) == (self.granted, self.open_tokens(), self.spent)
        assert b.reserved + b.spent <= b.granted


def test_ledger_matches_the_reference_model_of_the_rules(ledger_url: str) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    LedgerMachine.url = ledger_url
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=20, stateful_step_count=25, deadline=None,
        suppress_health_check=list(HealthCheck)))
