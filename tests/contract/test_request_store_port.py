"""The `RequestStore` and `OpenRequests` contract, run against `MemoryRequestStore` and
`PostgresRequestStore` (database `qf_test_contract_ledger`): a request keeps the client's data
and admission time; a status only moves forward (`queued` -> `reserved` -> terminal,
`rejected` only from `queued`), a terminal status is never overwritten; a tenant sees only its
own requests, newest first; a known id is found with what was stored; the reconciler finds
the open requests that stopped moving, and its re-drives are counted. `-k memory` runs the
in-memory store alone, with no services."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.ports import (
    FinalRecord,
    Inserted,
    NewRequest,
    OpenRequests,
    RequestStore,
    ReservedMark,
)
from tests.contract.ledger_backends import postgres

ADMITTED = datetime.now(UTC).replace(microsecond=123000) - timedelta(minutes=5)
DATA: dict[str, Any] = {"model": "m1", "messages": [{"role": "user", "content": "hi \u00e9"}],
                        "max_tokens": 8, "temperature": 0.7, "top_p": None, "seed": 2**40}


class Store(RequestStore, OpenRequests, Protocol):
    """Both ports, as both adapters have them."""


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryRequestStore()
        return
    from quotaflow.adapters.request_store import PostgresRequestStore

    with postgres() as conn:
        yield PostgresRequestStore(conn)


def new(request_id: str, tenant: str = "acme", digest: str = "h1",
        admitted: datetime = ADMITTED) -> NewRequest:
    return NewRequest(request_id, tenant, "key1", "/app", f"ce-{request_id}", digest, "m1",
                      DATA, admitted)


def completed(request_id: str, charged: int = 40) -> FinalRecord:
    return FinalRecord(request_id, "completed", None, charged, output="Paris.",
                       prompt_tokens=37, completion_tokens=3, reserved_tokens=69,
                       model_version="v1")


def test_a_new_request_is_stored_queued_admitted_when_admit_said(store: Store) -> None:
    assert store.insert(new("r1")) == Inserted(True, "h1", "queued", ADMITTED)
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.request_id, view.status, view.model, view.output, view.charged_tokens,
            view.reason, view.model_version) == ("r1", "queued", "m1", None, None, None, None)
    assert view.created_at == ADMITTED and view.updated_at >= view.created_at


def test_a_known_request_id_keeps_what_was_stored_first(store: Store) -> None:
    store.insert(new("r1", digest="h1"))
    later = ADMITTED + timedelta(seconds=30)
    assert store.insert(new("r1", digest="h2", admitted=later)) == Inserted(
        False, "h1", "queued", ADMITTED)
    store.mark_reserved([ReservedMark("r1", 69, 37)])
    assert store.insert(new("r1", digest="h1", admitted=later)) == Inserted(
        False, "h1", "reserved", ADMITTED)


def test_marking_reserved_moves_only_a_queued_request(store: Store) -> None:
    store.insert(new("r1"))
    store.mark_reserved([ReservedMark("r1", 69, 37)])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reserved_tokens, view.prompt_tokens) == ("reserved", 69, 37)
    store.finish([completed("r1")])
    store.mark_reserved([ReservedMark("r1", 1, 1)])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reserved_tokens, view.prompt_tokens) == ("completed", 69, 37)
    store.mark_reserved([ReservedMark("unknown", 1, 1)])  # nothing to move, and no error
    assert store.fetch("acme", "unknown") is None
    store.mark_reserved([])


def test_a_batch_of_marks_moves_each_queued_request_and_leaves_the_others(
        store: Store) -> None:
    for rid in ("a", "b", "done"):
        store.insert(new(rid))
    store.finish([completed("done")])
    store.mark_reserved([ReservedMark("a", 10, 1), ReservedMark("done", 20, 2),
                         ReservedMark("unknown", 30, 3), ReservedMark("b", 40, 4)])
    got = {rid: store.fetch("acme", rid) for rid in ("a", "b", "done")}
    assert {rid: (v.status, v.reserved_tokens) for rid, v in got.items() if v} == {
        "a": ("reserved", 10), "b": ("reserved", 40), "done": ("completed", 69)}


def test_the_same_request_twice_in_one_batch_of_marks_takes_the_first(store: Store) -> None:
    store.insert(new("a"))
    store.mark_reserved([ReservedMark("a", 10, 1), ReservedMark("a", 20, 2)])
    view = store.fetch("acme", "a")
    assert view is not None and (view.status, view.reserved_tokens) == ("reserved", 10)


def test_finishing_writes_the_final_state_from_queued_or_reserved(store: Store) -> None:
    store.insert(new("done"))
    store.mark_reserved([ReservedMark("done", 69, 37)])
    store.insert(new("refused"))
    store.finish([completed("done"),
                  FinalRecord("refused", "rejected", "quota_exceeded", 0)])
    done, refused = store.fetch("acme", "done"), store.fetch("acme", "refused")
    assert done is not None and refused is not None
    assert (done.status, done.output, done.prompt_tokens, done.completion_tokens,
            done.reserved_tokens, done.charged_tokens, done.model_version, done.reason) == \
        ("completed", "Paris.", 37, 3, 69, 40, "v1", None)
    assert (refused.status, refused.reason, refused.charged_tokens, refused.output) == \
        ("rejected", "quota_exceeded", 0, None)


def test_a_reserved_request_is_never_rejected(store: Store) -> None:
    # The ledger accepted it: a rejection arriving now (a resend refused as a conflict) would
    # tell the client "rejected" for a request that goes on to be charged.
    store.insert(new("r1"))
    store.mark_reserved([ReservedMark("r1", 69, 37)])
    store.finish([FinalRecord("r1", "rejected", "idempotency_conflict", 0)])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reserved_tokens, view.charged_tokens) == ("reserved", 69, None)
    store.finish([completed("r1")])
    view = store.fetch("acme", "r1")
    assert view is not None and (view.status, view.charged_tokens) == ("completed", 40)


def test_finishing_never_overwrites_a_terminal_status(store: Store) -> None:
    store.insert(new("r1"))
    store.finish([completed("r1", charged=40)])
    store.finish([FinalRecord("r1", "expired", "ttl", 0),
                  completed("r1", charged=99)])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.charged_tokens, view.reason) == ("completed", 40, None)


def test_the_same_request_twice_in_one_batch_takes_the_first_record(
        store: Store) -> None:
    store.insert(new("r1"))
    store.finish([FinalRecord("r1", "failed", "oom", 0), completed("r1")])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reason) == ("failed", "oom")


def test_a_tenant_sees_only_its_own_requests(store: Store) -> None:
    store.insert(new("r1", tenant="acme"))
    assert store.fetch("acme", "r1") is not None
    assert store.fetch("bravo", "r1") is None
    assert store.fetch("acme", "never") is None


def test_open_requests_that_stopped_moving_are_found_with_their_data(store: Store) -> None:
    store.insert(new("idle", admitted=ADMITTED))
    store.insert(new("newer", admitted=ADMITTED + timedelta(seconds=1)))
    store.insert(new("moved", admitted=ADMITTED))
    store.mark_reserved([ReservedMark("moved", 69, 37)])  # progress now
    store.insert(new("ended", admitted=ADMITTED))
    store.finish([FinalRecord("ended", "failed", "oom", 0)])
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    found = store.open_since(cutoff, 10)
    assert [r.request_id for r in found] == ["idle", "newer"]  # stalest first
    idle = found[0]
    assert (idle.tenant, idle.key_id, idle.status, idle.admitted_at, idle.redrives,
            idle.reserved_tokens, idle.prompt_tokens) == (
        "acme", "key1", "queued", ADMITTED, 0, None, None)
    assert dict(idle.payload or {}) == DATA
    assert [r.request_id for r in store.open_since(cutoff, 1)] == ["idle"]
    later = store.open_since(datetime.now(UTC) + timedelta(minutes=1), 10)
    moved = next(r for r in later if r.request_id == "moved")
    assert (moved.status, moved.reserved_tokens, moved.prompt_tokens) == ("reserved", 69, 37)
    assert "ended" not in {r.request_id for r in later}


def test_a_re_drive_is_counted_and_hides_the_request_until_the_cutoff_passes_it(
        store: Store) -> None:
    store.insert(new("r1"))
    store.insert(new("r2"))
    store.note_redriven(["r1", "unknown"])
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    assert [r.request_id for r in store.open_since(cutoff, 10)] == ["r2"]
    store.note_redriven(["r1"])
    after = {r.request_id: r.redrives
             for r in store.open_since(datetime.now(UTC) + timedelta(minutes=1), 10)}
    assert after == {"r1": 2, "r2": 0}
    store.note_redriven([])  # nothing to count, and no error


def test_a_known_request_is_found_with_what_was_stored_and_a_new_one_is_not(
        store: Store) -> None:
    assert store.find("r1") is None
    store.insert(new("r1", digest="h7"))
    store.mark_reserved([ReservedMark("r1", 69, 37)])
    assert store.find("r1") == Inserted(False, "h7", "reserved", ADMITTED)


def test_recent_requests_are_the_tenants_own_newest_first_and_limited(store: Store) -> None:
    for i, tenant in enumerate(["acme", "other", "acme", "acme", "other"]):
        store.insert(new(f"r{i}", tenant, admitted=ADMITTED + timedelta(seconds=i)))
    store.finish([completed("r3", charged=7)])
    assert [v.request_id for v in store.recent("acme", 10)] == ["r3", "r2", "r0"]
    assert [v.request_id for v in store.recent("acme", 2)] == ["r3", "r2"]
    assert store.recent("nobody", 10) == []
    newest = store.recent("acme", 1)[0]
    assert (newest.status, newest.charged_tokens, newest.created_at) == (
        "completed", 7, ADMITTED + timedelta(seconds=3))


def test_many_requests_are_stored_in_one_call_each_answered_in_order(store: Store) -> None:
    store.insert(new("r0", digest="h0"))
    later = ADMITTED + timedelta(seconds=1)
    answers = store.insert_many([new("r1"), new("r0", digest="h9", admitted=later),
                                 new("r2", digest="h2"), new("r1", digest="h8")])
    assert answers == [Inserted(True, "h1", "queued", ADMITTED),
                       Inserted(False, "h0", "queued", ADMITTED),
                       Inserted(True, "h2", "queued", ADMITTED),
                       Inserted(False, "h1", "queued", ADMITTED)]  # the same id twice: once
    assert store.insert_many([]) == []
    stored = store.fetch("acme", "r2")
    assert stored is not None and stored.status == "queued"
    assert [o.payload for o in store.open_since(datetime.now(UTC), 10)
            if o.request_id == "r1"] == [DATA]


def test_group_committed_inserts_from_many_threads_create_each_request_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from quotaflow.adapters.request_store import GroupCommitRequestStore, PostgresRequestStore
    from quotaflow.adapters.thread_connections import ThreadConnections
    from tests.contract.ledger_backends import postgres

    with postgres() as conn:
        connections = ThreadConnections(conn.info.dsn)
        grouped = GroupCommitRequestStore(PostgresRequestStore(connections.get))
        ids = [f"g{i % 40}" for i in range(200)]  # each id sent five times, concurrently
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda rid: grouped.insert(new(rid)), ids))
        connections.close()
    assert sum(a.created for a in answers) == 40
    assert {(a.payload_hash, a.status) for a in answers} == {("h1", "queued")}
    assert grouped.committer.batches < 200  # shared statements
