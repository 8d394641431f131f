"""The chaos harness's checks on synthetic runs: a clean run passes, and each kind of damage
(a lost request, a double charge, an overshoot, a leaked reservation, a replaced terminal
status, a stale projection, a dirty audit, a door misanswer) is found. No services needed."""

from __future__ import annotations

from dataclasses import replace

from quotaflow.chaos.checks import judge
from quotaflow.chaos.facts import LedgerRow, OpenReservation, Outcome, RequestRow, Snapshot


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
