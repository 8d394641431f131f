"""reserve: a batch is decided at once by the ledger; a request over the quota is rejected
while the others reserve, a redelivery is never charged twice, and the read model moves to
`reserved` only for what was reserved."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from quotaflow.events.payloads import Rejected, Reserved
from quotaflow.functions.reserve.handler import ReservePorts, handle, on_poison
from quotaflow.ledger.domain import Balance
from tests.unit.fakes import World, admitted, estimated


def ports(world: World) -> ReservePorts:
    return ReservePorts(world.ledger, world.projection, world.requests)


def test_the_request_over_quota_is_rejected_while_the_rest_of_the_batch_reserves() -> None:
    w = World()
    w.ledger.add_tenant("acme", 100)
    w.queue(*(admitted(f"r{i}") for i in range(3)))
    out = handle([estimated("r0", 40), estimated("r1", 40), estimated("r2", 40)], ports(w))

    r0, r1, r2 = out
    assert isinstance(r0, Reserved) and isinstance(r1, Reserved)
    assert (r0.reserved_tokens, r0.period) == (40, "2026-11")
    assert r0.ledger_seq < r1.ledger_seq
    assert isinstance(r2, Rejected)
    assert (r2.reason, r2.requested_tokens, r2.period) == ("quota_exceeded", 40, "2026-11")
    assert r2.ledger_seq is not None and r2.ledger_seq > r1.ledger_seq
    # The projection has caught up with the ledger before the outputs leave.
    assert w.projection.balance("acme", "2026-11") == Balance(granted=100, reserved=80)
    assert [w.status("acme", f"r{i}") for i in range(3)] == ["reserved", "reserved", "queued"]
    view = w.requests.fetch("acme", "r0")
    assert view is not None and (view.reserved_tokens, view.prompt_tokens) == (40, 4)


def test_a_redelivered_batch_gets_the_same_outcome_and_is_not_charged_twice() -> None:
    w = World()
    w.ledger.add_tenant("acme", 100)
    batch = [estimated("r0", 60), estimated("r1", 60)]
    first = handle(batch, ports(w))
    again = handle(batch, ports(w))
    assert again == first
    assert [type(o) for o in first] == [Reserved, Rejected]
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=100, reserved=60)
    assert w.projection.balance("acme", "2026-11") == Balance(granted=100, reserved=60)


def test_the_same_request_id_with_another_payload_is_refused_not_reserved_again() -> None:
    w = World()
    w.ledger.add_tenant("acme", 100)
    handle([estimated("r0", 30)], ports(w))
    (out,) = handle([replace(estimated("r0", 30), max_tokens=99)], ports(w))
    assert isinstance(out, Rejected)
    assert out.reason.startswith("idempotency_conflict")
    assert w.ledger.balance("acme", "2026-11").reserved == 30


def test_an_unknown_tenant_is_rejected_and_its_request_stays_queued() -> None:
    w = World()
    w.queue(admitted("r0", tenant="ghost"))
    (out,) = handle([estimated("r0", 10, tenant="ghost")], ports(w))
    assert isinstance(out, Rejected) and out.reason == "unknown_tenant"
    assert w.status("ghost", "r0") == "queued"


def test_an_unprocessable_request_is_rejected_for_its_estimate_without_a_ledger_event() -> None:
    w = World()
    (r,) = on_poison(estimated("r0", 25), "handler_error: boom", ports(w))
    assert (r.request_id, r.requested_tokens, r.reason) == (
        "r0", 25, "unprocessable: handler_error: boom")
    assert r.period is None and r.ledger_seq is None
    assert w.ledger.events_after(0) == []


def test_a_resend_admitted_later_with_another_key_gets_the_first_outcome() -> None:
    w = World()
    w.ledger.add_tenant("acme", 100)
    first = handle([estimated("r0", 60), estimated("r1", 60)], ports(w))
    # The same client requests again, stamped at another time and sent with another key of
    # the tenant: neither is what the client asked for, so neither makes a conflict.
    later = [replace(estimated(rid, 60), key_id="key-2",
                     admitted_at_ms=estimated(rid, 60).admitted_at_ms + timedelta(seconds=30))
             for rid in ("r0", "r1")]
    again = handle(later, ports(w))
    assert [type(o) for o in again] == [Reserved, Rejected]
    r0, r1 = first
    a0, a1 = again
    assert isinstance(r0, Reserved) and isinstance(a0, Reserved)
    assert (a0.reserved_tokens, a0.period, a0.ledger_seq) == (
        r0.reserved_tokens, r0.period, r0.ledger_seq)
    assert isinstance(r1, Rejected) and isinstance(a1, Rejected)
    assert (a1.reason, a1.ledger_seq) == ("quota_exceeded", r1.ledger_seq)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=100, reserved=60)


def test_reserve_holds_the_request_at_its_key_and_team_in_money_and_names_the_refusing_level(
        ) -> None:
    w = World()
    w.ledger.add_tenant("acme", 10_000)
    w.ledger.add_team("acme", "ml", usd=2 * 44)
    w.ledger.add_key("acme", "key-1", "ml")  # the key `admitted` requests carry
    w.ledger.set_price("standin", 1_000_000, 10_000_000)  # 1 and 10 micro-dollars a token
    w.queue(*(admitted(f"r{i}") for i in range(3)))
    out = handle([estimated(f"r{i}", 8) for i in range(3)], ports(w))  # 4 prompt + 4: 44 each
    assert [type(o) for o in out] == [Reserved, Reserved, Rejected]
    assert out[2].reason == ("quota_exceeded: team 'ml' of tenant 'acme' has $0.000000 of "
                             "$0.000088 left this period")
    assert [e.usd for e in w.ledger.events_after(0) if e.request_id == "r0"] == [44]
