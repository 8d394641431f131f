"""record: each request's final state, output and usage go to the read model in one write;
a status only moves forward and a terminal one is never overwritten; a request ends even when
its record cannot be written as it is."""

from __future__ import annotations

from dataclasses import replace

from quotaflow.events.payloads import Rejected, Settled
from quotaflow.events.status import SettlementStatus
from quotaflow.functions.record.handler import RecordPorts, handle, on_poison
from quotaflow.ports import ReservedMark
from tests.unit.fakes import World, admitted


def settled(request_id: str, status: str = "completed", charged: int = 15) -> Settled:
    return Settled(request_id, "acme", SettlementStatus(status), 50, charged, 50 - charged, 10,
                   charged - 10,
                   "the answer" if status == "completed" else None, "standin", "standin-1",
                   None if status == "completed" else "ttl", 7)


def rejected(request_id: str) -> Rejected:
    return Rejected(request_id, "acme", 50, "quota_exceeded", "2026-11", 3)


def test_a_settled_request_is_recorded_with_its_output_and_usage() -> None:
    w = World()
    w.queue(admitted("r1"))
    w.requests.mark_reserved([ReservedMark("r1", 50, 10)])
    (out,) = handle([settled("r1")], RecordPorts(w.requests))
    assert (out.request_id, out.tenant, out.status) == ("r1", "acme", "completed")
    view = w.requests.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.output, view.reason, view.model_version) == (
        "completed", "the answer", None, "standin-1")
    assert (view.prompt_tokens, view.completion_tokens, view.reserved_tokens,
            view.charged_tokens) == (10, 5, 50, 15)


def test_a_rejected_request_is_recorded_as_rejected_and_charged_nothing() -> None:
    w = World()
    w.queue(admitted("r1"))
    (out,) = handle([rejected("r1")], RecordPorts(w.requests))
    assert out.status == "rejected"
    view = w.requests.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reason, view.charged_tokens, view.output) == (
        "rejected", "quota_exceeded", 0, None)


def test_a_terminal_status_is_never_overwritten() -> None:
    w = World()
    w.queue(admitted("r1"))
    handle([settled("r1")], RecordPorts(w.requests))
    # A late expiry or a duplicate rejection of the same request changes nothing.
    handle([settled("r1", status="expired", charged=0), rejected("r1")], RecordPorts(w.requests))
    view = w.requests.fetch("acme", "r1")
    assert view is not None and (view.status, view.charged_tokens) == ("completed", 15)


def test_a_batch_is_recorded_in_order_one_recorded_per_input() -> None:
    w = World()
    w.queue(*(admitted(f"r{i}") for i in range(3)))
    out = handle([settled("r0"), rejected("r1"), settled("r2", "expired", 0)],
                 RecordPorts(w.requests))
    assert [(o.request_id, o.status) for o in out] == [
        ("r0", "completed"), ("r1", "rejected"), ("r2", "expired")]
    assert [w.status("acme", f"r{i}") for i in range(3)] == ["completed", "rejected", "expired"]


def test_a_rejection_never_overwrites_a_reserved_request() -> None:
    # A resend refused by the ledger while the first delivery reserved: the request goes on
    # to be charged, so it must not be recorded rejected with nothing charged.
    w = World()
    w.queue(admitted("r1"))
    w.requests.mark_reserved([ReservedMark("r1", 50, 10)])
    handle([rejected("r1")], RecordPorts(w.requests))
    assert w.status("acme", "r1") == "reserved"
    handle([settled("r1")], RecordPorts(w.requests))
    view = w.requests.fetch("acme", "r1")
    assert view is not None and (view.status, view.charged_tokens) == ("completed", 15)


def test_text_postgresql_cannot_store_is_kept_with_replacement_characters() -> None:
    w = World()
    w.queue(admitted("r1"))
    odd = replace(settled("r1"), text="a\x00b\ud800c", reason="x\x00")
    handle([odd], RecordPorts(w.requests))
    view = w.requests.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.output, view.reason) == ("completed", "a\ufffdb\ufffdc", "x\ufffd")


def test_a_record_that_cannot_be_written_still_ends_with_its_status_and_charge() -> None:
    w = World()
    w.queue(admitted("r1"), admitted("r2"))
    (out,) = on_poison(settled("r1"), "handler_error: DataError: out of range \x00",
                       RecordPorts(w.requests))
    on_poison(rejected("r2"), "handler_error: boom", RecordPorts(w.requests))
    assert (out.request_id, out.status) == ("r1", "completed")
    view = w.requests.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.charged_tokens, view.output, view.reason) == (
        "completed", 15, None, "unrecordable: handler_error: DataError: out of range \ufffd")
    assert w.status("acme", "r2") == "rejected"
