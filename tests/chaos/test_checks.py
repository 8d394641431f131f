"""The chaos harness's checks on synthetic runs: a clean run passes, and each kind of damage
(a lost request, a double charge, an overshoot, a leaked reservation, a replaced terminal
status, a stale projection, a dirty audit, a door misanswer, a level over its limit, money not
at the price version in force, an alert not delivered exactly once) is found. No services
needed."""

from __future__ import annotations

import json
from dataclasses import replace

from quotaflow.chaos.checks import judge
from quotaflow.chaos.facts import (
    AlertRule,
    LedgerRow,
    OpenReservation,
    Outcome,
    PriceRow,
    Receipt,
    RequestRow,
    Snapshot,
)
from quotaflow.chaos.level_checks import (
    expected_crossings,
    find_alert_errors,
    find_level_overshoot,
    find_price_errors,
)


def clean() -> tuple[Snapshot, list[Outcome]]:
    """Tenant t, grant 100: request a reserved 30 and was charged 20; request b was rejected."""
    ledger = [LedgerRow(1, "t", "2026-11", "QuotaGranted", None, 100),
              LedgerRow(2, "t", "2026-11", "TokensReserved", "a", 30),
              LedgerRow(3, "t", "2026-11", "RequestRejected", "b", 90),
              LedgerRow(4, "t", "2026-11", "ReservationSettled", "a", 20, 10)]
    snap = Snapshot(accepted={"a", "b"},
                    requests={"a": RequestRow("a", "t", "completed", 20),
                              "b": RequestRow("b", "t", "rejected", 0)},
                    ledger=ledger, open_reservations=[], grants={"t": 100},
                    projection={("t", "2026-11"): (100, 0, 20)},
                    history={"a": ["queued", "reserved", "completed"],
                             "b": ["queued", "rejected"]},
                    ttl_s=15, sweep_s=1)
    outcomes = [Outcome(0, "new", 202, "a"), Outcome(1, "new", 202, "b"),
                Outcome(2, "resend", 202, "a", original=0),
                Outcome(3, "bad", 400, bad="deep-json"), Outcome(4, "new", 429)]
    return snap, outcomes


def test_a_clean_run_has_no_findings() -> None:
    snap, outcomes = clean()
    verdict = judge(snap, outcomes)
    assert verdict.ok, verdict
    assert set(verdict.counts().values()) == {0}


def test_an_accepted_request_still_open_or_never_recorded_is_lost() -> None:
    snap, outcomes = clean()
    snap.requests["a"] = RequestRow("a", "t", "reserved", 0)
    snap.accepted.add("c")
    verdict = judge(snap, outcomes)
    assert len(verdict.lost) == 2
    assert any("a" in f and "still reserved" in f for f in verdict.lost)
    assert any("c accepted (202) but has no record" in f for f in verdict.lost)
    assert not verdict.ok


def test_a_request_settled_twice_is_a_double_charge() -> None:
    snap, outcomes = clean()
    snap.ledger.append(LedgerRow(5, "t", "2026-11", "ReservationSettled", "a", 20))
    found = judge(snap, outcomes).double_charges
    assert any("charged 2 times (20+20)" in f for f in found)


def test_a_record_whose_charge_is_not_the_ledgers_is_a_double_charge() -> None:
    # The resend defect: the ledger charged the request, its record says rejected, 0.
    snap, outcomes = clean()
    snap.requests["a"] = RequestRow("a", "t", "rejected", 0)
    found = judge(snap, outcomes).double_charges
    assert found == ["request a (t) recorded rejected charged 0, the ledger charged 20"]


def test_a_ledger_charge_without_a_record_and_a_double_reservation_are_found() -> None:
    snap, outcomes = clean()
    snap.ledger += [LedgerRow(5, "t", "2026-11", "TokensReserved", "x", 10),
                    LedgerRow(6, "t", "2026-11", "TokensReserved", "x", 10),
                    LedgerRow(7, "t", "2026-11", "ReservationSettled", "x", 5, 5)]
    found = judge(snap, outcomes).double_charges
    assert "request x reserved 2 times" in found
    assert "request x: the ledger charged 5, no record" in found


def test_reservations_beyond_the_grant_are_an_overshoot() -> None:
    snap, outcomes = clean()
    snap.ledger.append(LedgerRow(5, "t", "2026-11", "TokensReserved", "c", 90))
    found = judge(snap, outcomes).overshoot
    assert found == ["t 2026-11: 10 tokens over its grant of 100"]  # 20 spent + 90 open


def test_a_doubled_grant_does_not_hide_an_overshoot() -> None:
    snap, outcomes = clean()
    snap.ledger += [LedgerRow(5, "t", "2026-11", "QuotaGranted", None, 100),
                    LedgerRow(6, "t", "2026-11", "TokensReserved", "c", 150)]
    assert judge(snap, outcomes).overshoot == ["t 2026-11: 70 tokens over its grant of 100"]


def test_a_reservation_open_past_its_ttl_or_after_its_request_ended_is_leaked() -> None:
    snap, outcomes = clean()
    snap.open_reservations = [OpenReservation("old", "t", 40.0),
                              OpenReservation("a", "t", 2.0),
                              OpenReservation("young", "t", 3.0)]
    found = judge(snap, outcomes).leaked
    assert len(found) == 2
    assert any(f.startswith("reservation old") and "TTL 15 s" in f for f in found)
    assert any(f.startswith("reservation a") and "completed" in f for f in found)


def test_a_terminal_status_replaced_or_a_status_going_back_is_found() -> None:
    snap, outcomes = clean()
    snap.history["a"] = ["queued", "completed", "rejected"]
    snap.history["b"] = ["reserved", "queued", "rejected"]
    found = judge(snap, outcomes).status_changes
    assert found == ["request a ended completed then rejected",
                     "request b went back: reserved -> queued -> rejected"]


def test_a_projection_that_differs_from_the_replay_or_cannot_be_read_is_found() -> None:
    snap, outcomes = clean()
    snap.projection = {("t", "2026-11"): (100, 30, 0)}
    assert len(judge(snap, outcomes).projection) == 1
    assert judge(replace(snap, projection=None), outcomes).projection == [
        "the projection could not be read"]


def test_an_audit_with_differences_fails_the_run() -> None:
    snap, outcomes = clean()
    snap.audit_ok, snap.audit_findings = False, ["t: request a recorded rejected ..."]
    assert judge(snap, outcomes).audit == ["t: request a recorded rejected ..."]
    snap.audit_findings = []
    assert judge(snap, outcomes).audit == ["quotaflow audit failed"]


def test_door_misanswers_are_found() -> None:
    snap, outcomes = clean()
    outcomes += [Outcome(5, "bad", 503, bad="lone-surrogate", detail="retry"),
                 Outcome(6, "bad", 202, "z", bad="nul-in-prompt"),
                 Outcome(7, "resend", 202, "other", original=0),
                 Outcome(8, "resend", 429, original=1),
                 Outcome(9, "new", 409, detail="conflict"),
                 Outcome(10, "new", None, detail="ConnectionRefusedError"),
                 Outcome(11, "resend", 429, original=4)]  # its first send was refused too
    found = judge(snap, outcomes).door
    assert found == [
        "bad input lone-surrogate answered 503 retry",
        "bad input nul-in-prompt answered 202 ",
        "resend 7 of accepted send 0 answered 202 other",
        "resend 8 of accepted send 1 answered 429 ",
        "valid new send 9 refused 409 conflict",
        "new send 10 unanswered (no answer ConnectionRefusedError)"]


# Levels: tenant u, its team ml, its key k in ml. Prices in micro-dollars per million tokens:
# v1 1 and 2 a token in and out, v2 (committed by t=100) 2 and 4.
PRICES = [PriceRow("m", 1, 1_000_000, 2_000_000, 10.0), PriceRow("m", 2, 2_000_000, 4_000_000,
                                                                 100.0)]
LIMITS = {("key", "k"): (80, 200), ("team", "u/ml"): (100, 150), ("tenant", "u"): (None, 1000)}
RULES = [AlertRule("u", "team", "ml", 50), AlertRule("u", "key", "k", 50)]


def _ev(seq: int, kind: str, rid: str, amount: int, usd: int, at: float, released: int = 0,
        usd_released: int = 0, version: int = 1) -> LedgerRow:
    return LedgerRow(seq, "u", "2026-11", kind, rid, amount, released, "k", "ml", usd,
                     usd_released, "m", version, 10, at)


def levels_ledger() -> list[LedgerRow]:
    """a holds 40 tokens (10 in) at v1, $0.000070; b 30 at v1, $0.000050; a settles 25
    ($0.000040); c holds 20 at v2 ($0.000060; the team's money is then exactly at its limit);
    b is released; c settles 20."""
    return [_ev(1, "TokensReserved", "a", 40, 70, 50),
            _ev(2, "TokensReserved", "b", 30, 50, 60),
            _ev(3, "ReservationSettled", "a", 25, 40, 70, released=15, usd_released=30),
            _ev(4, "TokensReserved", "c", 20, 60, 150, version=2),
            _ev(5, "ReservationReleased", "b", 30, 50, 160),
            _ev(6, "ReservationSettled", "c", 20, 60, 170, version=2)]


def _receipts(crossings: set[tuple[str, str, str, int, str]]) -> list[Receipt]:
    out = []
    for n, (scope, level, unit, pct, period) in enumerate(sorted(crossings)):
        body = json.dumps({"type": "dev.quotaflow.budget.threshold", "data": {
            "scope": scope, "id": level, "unit": unit, "threshold_percent": pct,
            "period": period}})
        # The receiver refuses each first attempt: the retry keeps its webhook-id and body.
        out += [Receipt(f"msg_{n}", body, True, 503), Receipt(f"msg_{n}", body, True, 204)]
    return out


def test_levels_within_their_limits_at_the_prices_in_force_have_no_findings() -> None:
    ledger = levels_ledger()
    assert find_level_overshoot(ledger, LIMITS) == []
    assert find_price_errors(ledger, PRICES) == []
    crossings = expected_crossings(ledger, LIMITS, RULES)
    # team: 100 of $0.000150 spent (66 %), 45 of 100 tokens (not 50 %); key: 45 of 80 tokens,
    # $0.000100 of $0.000200
    assert crossings == {("team", "ml", "usd", 50, "2026-11"),
                         ("key", "k", "tokens", 50, "2026-11"),
                         ("key", "k", "usd", 50, "2026-11")}
    assert find_alert_errors(_receipts(crossings), crossings) == []


def test_a_level_over_its_limit_for_a_moment_is_found_though_the_end_is_within() -> None:
    ledger = levels_ledger()
    # b holds 50: k is at 90, then 95 tokens of 80 until b's release brings it to 45.
    ledger[1] = _ev(2, "TokensReserved", "b", 50, 50, 60)
    ledger[4] = _ev(5, "ReservationReleased", "b", 50, 50, 160)
    assert find_level_overshoot(ledger, LIMITS) == [
        "key k 2026-11: 15 tokens over its limit of 80 tokens"]


def test_a_team_over_its_money_is_found_at_the_team() -> None:
    limits = {**LIMITS, ("team", "u/ml"): (100, 149)}
    assert find_level_overshoot(levels_ledger(), limits) == [
        "team u/ml 2026-11: $0.000001 over its limit of $0.000149"]


def test_a_reservation_at_a_price_no_longer_in_force_is_found() -> None:
    ledger = levels_ledger()
    ledger[3] = _ev(4, "TokensReserved", "c", 20, 30, 150, version=1)  # after v2's commit
    ledger[5] = _ev(6, "ReservationSettled", "c", 20, 30, 170, version=1)
    assert find_price_errors(ledger, PRICES) == [
        "seq 4: c reserved at m v1; v2 was in force before it"]


def test_a_reservation_older_than_one_before_it_is_found() -> None:
    ledger = levels_ledger()
    # b decided at v2 before v2's commit was seen (possible), then a later c at v1 is not.
    ledger[1] = _ev(2, "TokensReserved", "b", 30, 100, 60, version=2)
    ledger[4] = _ev(5, "ReservationReleased", "b", 30, 100, 160, version=2)
    ledger[3] = _ev(4, "TokensReserved", "c", 20, 30, 90, version=1)
    ledger[5] = _ev(6, "ReservationSettled", "c", 20, 30, 170, version=1)
    assert find_price_errors(ledger, PRICES) == [
        "seq 4: c reserved at m v1 after u reserved at v2"]


def test_a_settlement_charged_at_another_price_version_is_found() -> None:
    ledger = levels_ledger()
    # a reserved at v1 (10 in + 15 out = $0.000040) but charged as at v2 ($0.000080 > held)
    ledger[2] = _ev(3, "ReservationSettled", "a", 25, 70, 70, released=15, usd_released=0)
    found = find_price_errors(ledger, PRICES)
    assert found == ["seq 3: a charged $0.000070 (returned $0.000000) for 25 tokens; at v1 it "
                     "owes $0.000040 of $0.000070"]
    ledger = levels_ledger()
    ledger[0] = _ev(1, "TokensReserved", "a", 40, 69, 50)  # rounded down, or another price
    assert find_price_errors(ledger, PRICES)[0] == (
        "seq 1: a reserved $0.000069, its worst case at v1 is $0.000070")


def test_an_alert_crossing_delivered_twice_unsigned_or_never_is_found() -> None:
    crossings = expected_crossings(levels_ledger(), LIMITS, RULES)
    receipts = _receipts(crossings)
    team = next(r for r in receipts if '"team"' in r.body and r.answered == 204)
    twice = [*receipts, Receipt("msg_other", team.body, True, 204)]
    assert find_alert_errors(twice, crossings) == [
        "alert team ml usd at 50% in 2026-11: delivered 2 times (distinct webhook-ids)"]
    forged = [Receipt(r.webhook_id, r.body, r.answered == 503, r.answered) for r in receipts]
    found = find_alert_errors(forged, crossings)
    assert sum("signature does not verify" in f for f in found) == 3  # the 2xx attempts
    assert sum("crossed, never delivered" in f for f in found) == 3
    missing = [r for r in receipts if r.webhook_id != team.webhook_id]
    assert find_alert_errors(missing, crossings) == [
        "alert team ml usd at 50% in 2026-11: crossed, never delivered"]
    only_key = {c for c in crossings if c[0] == "key"}
    assert find_alert_errors(receipts, only_key) == [
        "alert team ml usd at 50% in 2026-11: delivered, but the ledger never crossed it"]
    changed = [*receipts, Receipt(team.webhook_id, team.body + " ", True, 204)]
    assert find_alert_errors(changed, crossings) == [
        f"webhook {team.webhook_id}: sent with 2 different bodies"]


def test_level_price_and_alert_findings_fail_the_verdict() -> None:
    snap, outcomes = clean()
    snap.limits = {**LIMITS, ("key", "k"): (10, None)}
    snap.prices = PRICES
    snap.alert_rules = RULES
    snap.receipts = []
    snap.ledger += [_ev(10 + e.seq, e.kind, e.request_id or "", e.amount, e.usd, e.at,
                        e.released, e.usd_released, e.price_version or 1)
                    for e in levels_ledger()]
    verdict = judge(snap, outcomes)
    assert verdict.levels and verdict.alerts and not verdict.prices
    assert not verdict.ok
