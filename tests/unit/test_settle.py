"""settle: each reservation ends exactly once. A completion is charged its prompt and
completion tokens and the rest returned; a failure releases it all; any second ending gets the
first one's outcome; a poison record releases; the sweep expires stale reservations and
publishes the committed ledger events (the reconciler in the sweep: test_reconcile)."""

from __future__ import annotations

from quotaflow.events.payloads import Completed, Failed
from quotaflow.functions.settle.handler import SettlePorts, handle, on_poison, sweep
from quotaflow.ledger.commands import ReserveTokens
from quotaflow.ledger.domain import Balance
from tests.unit.fakes import World

TTL_S = 300


def ports(world: World) -> SettlePorts:
    return SettlePorts(world.ledger, world.projection, world.outbox, TTL_S)


def world_with(*reservations: tuple[str, int]) -> World:
    w = World()
    w.ledger.add_tenant("acme", 1000)
    w.ledger.reserve([ReserveTokens("acme", rid, amount, f"h-{rid}")
                      for rid, amount in reservations])
    return w


def completed(request_id: str, prompt: int, completion: int, reserved: int = 50) -> Completed:
    return Completed(request_id, "acme", reserved, "the answer", prompt, completion, "standin",
                     "standin-1", 12.5)


def failed(request_id: str, reserved: int = 50) -> Failed:
    return Failed(request_id, "acme", reserved, "handler_error: boom")


def test_a_completion_is_charged_prompt_plus_completion_and_the_rest_released() -> None:
    w = world_with(("r1", 50))
    (s,) = handle([completed("r1", prompt=10, completion=5)], ports(w))
    assert (s.status, s.reserved_tokens, s.charged_tokens, s.released_tokens) == (
        "completed", 50, 15, 35)
    assert (s.prompt_tokens, s.completion_tokens, s.text, s.model_version) == (
        10, 5, "the answer", "standin-1")
    assert s.reason is None
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000, reserved=0, spent=15)
    assert w.projection.balance("acme", "2026-11") == w.ledger.balance("acme", "2026-11")


def test_a_failure_releases_the_whole_reservation_and_charges_nothing() -> None:
    w = world_with(("r1", 50))
    (s,) = handle([failed("r1")], ports(w))
    assert (s.status, s.charged_tokens, s.released_tokens, s.reason) == (
        "failed", 0, 50, "handler_error: boom")
    assert (s.prompt_tokens, s.completion_tokens, s.text) == (0, 0, None)
    assert w.projection.balance("acme", "2026-11") == Balance(granted=1000)


def test_a_redelivered_completion_is_not_charged_twice() -> None:
    w = world_with(("r1", 50), ("r2", 50))
    batch: list[Completed | Failed] = [completed("r1", 10, 5), failed("r2")]
    first = handle(batch, ports(w))
    assert handle(batch, ports(w)) == first
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000, spent=15)


def test_a_completion_after_its_reservation_expired_is_refused_and_charges_nothing() -> None:
    w = world_with(("late", 50))
    w.clock.advance(TTL_S + 1)
    sweep(ports(w))
    (s,) = handle([completed("late", 10, 5)], ports(w))
    assert (s.status, s.charged_tokens, s.reason) == ("expired", 0, "reservation_expired")
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000)


def test_the_sweep_expires_only_stale_reservations_and_publishes_the_ledger() -> None:
    w = world_with(("old", 40))
    w.clock.advance(TTL_S + 1)
    w.ledger.reserve([ReserveTokens("acme", "new", 30, "h-new")])
    (s,) = sweep(ports(w))
    assert (s.request_id, s.status, s.reserved_tokens, s.charged_tokens, s.released_tokens) == (
        "old", "expired", 40, 0, 40)
    assert w.projection.balance("acme", "2026-11") == Balance(granted=1000, reserved=30)
    # Every committed event, the expiry included, is published, once and in order.
    assert [e.seq for e in w.outbox.published] == [e.seq for e in w.ledger.events_after(0)]
    assert w.outbox.published[-1].kind == "ReservationExpired"
    assert sweep(ports(w)) == []
    assert len(w.outbox.published) == len(w.ledger.events_after(0))


def test_a_second_ending_of_a_reservation_gets_the_first_ones_outcome() -> None:
    w = world_with(("r1", 50))
    (first,) = handle([completed("r1", prompt=10, completion=5)], ports(w))
    # A second inference (its first `settled` was lost) counting differently, a failure, the
    # reconciler's deadline: none is a conflict recorded as a failure; all get the charge.
    again = handle([completed("r1", prompt=10, completion=9), failed("r1")], ports(w))
    assert [(s.status, s.charged_tokens, s.released_tokens) for s in again] == [
        ("completed", 15, 35), ("completed", 15, 35)]
    assert (first.status, first.charged_tokens) == ("completed", 15)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000, spent=15)


def test_an_output_travels_only_with_the_charge_it_was_billed_for() -> None:
    w = world_with(("late", 50), ("r2", 50))
    handle([failed("r2")], ports(w))
    w.clock.advance(TTL_S + 1)
    sweep(ports(w))
    expired, after_failure = handle([completed("late", 10, 5), completed("r2", 10, 5)], ports(w))
    assert (expired.status, expired.text, expired.completion_tokens) == ("expired", None, 0)
    assert (after_failure.status, after_failure.text, after_failure.charged_tokens) == (
        "failed", None, 0)


def test_a_poison_record_releases_the_reservation_and_ends_the_request_failed() -> None:
    w = world_with(("r1", 50), ("done", 50))
    (s,) = on_poison(completed("r1", 10, 5), "handler_error: boom", ports(w))
    assert (s.request_id, s.status, s.charged_tokens, s.released_tokens) == (
        "r1", "failed", 0, 50)
    assert s.reason == "unprocessable: handler_error: boom"
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000, reserved=50)
    # One already settled keeps its settlement.
    handle([completed("done", 10, 5)], ports(w))
    (d,) = on_poison(completed("done", 10, 5), "handler_error: boom", ports(w))
    assert (d.status, d.charged_tokens) == ("completed", 15)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000, spent=15)
