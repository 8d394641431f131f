"""The `RequestStore` contract, run against `MemoryRequestStore` and `PostgresRequestStore`
(database `qf_test_contract_ledger`): a status only moves forward (`queued` -> `reserved` ->
terminal), a terminal status is never overwritten, and a tenant sees only its own requests.
`-k memory` runs the in-memory store alone, with no services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.ports import FinalRecord, Inserted, NewRequest, RequestStore
from tests.contract.ledger_backends import postgres


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[RequestStore]:
    if request.param == "memory":
        yield MemoryRequestStore()
        return
    from quotaflow.adapters.request_store import PostgresRequestStore

    with postgres() as conn:
        yield PostgresRequestStore(conn)


def new(request_id: str, tenant: str = "acme", digest: str = "h1") -> NewRequest:
    return NewRequest(request_id, tenant, "key1", "/app", f"ce-{request_id}", digest, "m1")


def completed(request_id: str, charged: int = 40) -> FinalRecord:
    return FinalRecord(request_id, "completed", None, charged, output="Paris.",
                       prompt_tokens=37, completion_tokens=3, reserved_tokens=69,
                       model_version="v1")


def test_a_new_request_is_stored_queued(store: RequestStore) -> None:
    assert store.insert(new("r1")) == Inserted(True, "h1", "queued")
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.request_id, view.status, view.model, view.output, view.charged_tokens,
            view.reason, view.model_version) == ("r1", "queued", "m1", None, None, None, None)
    assert view.created_at.tzinfo is not None and view.updated_at >= view.created_at


def test_a_known_request_id_keeps_what_was_stored_first(store: RequestStore) -> None:
    store.insert(new("r1", digest="h1"))
    assert store.insert(new("r1", digest="h2")) == Inserted(False, "h1", "queued")
    store.mark_reserved("r1", 69, 37)
    assert store.insert(new("r1", digest="h1")) == Inserted(False, "h1", "reserved")


def test_marking_reserved_moves_only_a_queued_request(store: RequestStore) -> None:
    store.insert(new("r1"))
    store.mark_reserved("r1", 69, 37)
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reserved_tokens, view.prompt_tokens) == ("reserved", 69, 37)
    store.finish([completed("r1")])
    store.mark_reserved("r1", 1, 1)
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reserved_tokens, view.prompt_tokens) == ("completed", 69, 37)
    store.mark_reserved("unknown", 1, 1)  # nothing to move, and no error
    assert store.fetch("acme", "unknown") is None


def test_finishing_writes_the_final_state_from_queued_or_reserved(store: RequestStore) -> None:
    store.insert(new("done"))
    store.mark_reserved("done", 69, 37)
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


def test_a_rejection_keeps_the_usage_already_stored(store: RequestStore) -> None:
    store.insert(new("r1"))
    store.mark_reserved("r1", 69, 37)
    store.finish([FinalRecord("r1", "rejected", "unprocessable", 0)])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reserved_tokens, view.prompt_tokens, view.charged_tokens) == \
        ("rejected", 69, 37, 0)


def test_finishing_never_overwrites_a_terminal_status(store: RequestStore) -> None:
    store.insert(new("r1"))
    store.finish([completed("r1", charged=40)])
    store.finish([FinalRecord("r1", "expired", "ttl", 0),
                  completed("r1", charged=99)])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.charged_tokens, view.reason) == ("completed", 40, None)


def test_the_same_request_twice_in_one_batch_takes_the_first_record(
        store: RequestStore) -> None:
    store.insert(new("r1"))
    store.finish([FinalRecord("r1", "failed", "oom", 0), completed("r1")])
    view = store.fetch("acme", "r1")
    assert view is not None
    assert (view.status, view.reason) == ("failed", "oom")


def test_a_tenant_sees_only_its_own_requests(store: RequestStore) -> None:
    store.insert(new("r1", tenant="acme"))
    assert store.fetch("acme", "r1") is not None
    assert store.fetch("bravo", "r1") is None
    assert store.fetch("acme", "never") is None
