"""The `AdmissionGate` contract, run against the in-memory gate and Redis (plain, db index 13;
over TLS with a password; a 3-master Redis Cluster: `tests.redis_servers`): each
screen of a new request counts it in its key's minute window and reads the balance the
projection holds for the tenant's period; a request let through is recognised by its hash.
`-k memory` runs the fake alone, with no services."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from quotaflow.adapters.memory.gate import MemoryAdmissionGate
from quotaflow.adapters.redis_gate import GroupScreenGate, RedisAdmissionGate
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance, Kind
from quotaflow.ports import AdmissionGate, Screening, ScreenQuery
from tests.redis_servers import REDIS_VARIANTS, client

REDIS_DB = 13
MINUTE = 29_932_560  # 2026-11-29 12:00 UTC, in minutes since the epoch


@dataclass
class Gate:
    """A gate and how to apply ledger events to the projection it reads."""

    gate: AdmissionGate
    apply: Callable[[Sequence[StoredEvent]], int]


def _memory() -> Gate:
    gate = MemoryAdmissionGate()
    return Gate(gate, gate.projection.apply)


def _redis(variant: str = "redis", grouped: bool = False) -> Gate:
    from quotaflow.ledger.projection import RedisProjection

    c = client(variant, REDIS_DB)
    gate = RedisAdmissionGate(c)
    return Gate(GroupScreenGate(gate) if grouped else gate, RedisProjection(c).apply)


@pytest.fixture(params=["memory", *REDIS_VARIANTS, *(f"{v}-grouped" for v in REDIS_VARIANTS)])
def gate(request: pytest.FixtureRequest) -> Gate:
    if request.param == "memory":
        return _memory()
    return _redis(request.param.removesuffix("-grouped"), request.param.endswith("-grouped"))


@pytest.fixture(params=REDIS_VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which Redis a Redis-only test runs on."""
    return str(request.param)


def event(seq: int, kind: Kind, amount: int, tenant: str = "acme", period: str = "2026-11",
          released: int = 0) -> StoredEvent:
    return StoredEvent(seq, tenant, seq, kind, None if kind is Kind.QUOTA_GRANTED else f"r{seq}",
                       period, amount, released, None, datetime(2026, 11, 29, tzinfo=UTC))


def query(request_id: str, digest: str = "h1", limit: int = 100, needs: int = 10,
          tenant: str = "acme", key_id: str = "k1", minute: int = MINUTE,
          period: str = "2026-11") -> ScreenQuery:
    return ScreenQuery(request_id, digest, key_id, minute, tenant, period, limit, needs)


def test_screens_count_the_keys_requests_in_their_minute(gate: Gate) -> None:
    counts = [gate.gate.screen(query(f"r{i}")).count for i in range(3)]
    assert counts == [1, 2, 3]


def test_another_minute_or_another_key_counts_apart(gate: Gate) -> None:
    gate.gate.screen(query("r1"))
    assert gate.gate.screen(query("r2", minute=MINUTE + 1)).count == 1
    assert gate.gate.screen(query("r3", key_id="k2")).count == 1
    assert gate.gate.screen(query("r4")).count == 2


def test_a_period_with_nothing_projected_reads_zero(gate: Gate) -> None:
    assert gate.gate.screen(query("r1", tenant="nobody")).balance == Balance()


def test_the_balance_is_the_projections_for_the_tenant_and_period(gate: Gate) -> None:
    gate.apply([event(1, Kind.QUOTA_GRANTED, 100), event(2, Kind.TOKENS_RESERVED, 30),
                event(3, Kind.TOKENS_RESERVED, 20),
                event(4, Kind.RESERVATION_SETTLED, 12, released=18),
                event(5, Kind.QUOTA_GRANTED, 7, period="2026-12"),
                event(6, Kind.QUOTA_GRANTED, 5, tenant="other")])
    balance = gate.gate.screen(query("r1")).balance
    assert balance == Balance(granted=100, reserved=20, spent=12)
    assert balance.remaining == 68
    assert gate.gate.screen(query("r2", period="2026-12")).balance == Balance(granted=7)


def test_a_redis_window_expires_after_its_minute_is_over(variant: str) -> None:
    from quotaflow.adapters.redis_gate import WINDOW_TTL_S, window_key

    c = client(variant, REDIS_DB)
    RedisAdmissionGate(c).screen(query("r1"))
    assert 60 < c.ttl(window_key("acme", "k1", MINUTE)) <= WINDOW_TTL_S


def test_a_new_request_is_counted_and_read_with_its_balance(gate: Gate) -> None:
    gate.apply([event(1, Kind.QUOTA_GRANTED, 100)])
    assert gate.gate.screen(query("r1")) == Screening(None, 1, Balance(granted=100))
    assert gate.gate.screen(query("r2")).count == 2


def test_a_request_let_through_is_recognised_by_its_hash_and_not_counted_again(
        gate: Gate) -> None:
    gate.gate.screen(query("r1", digest="h1"))
    assert gate.gate.screen(query("r1", digest="h1")).known_hash == "h1"
    assert gate.gate.screen(query("r1", digest="h2")).known_hash == "h1"
    assert gate.gate.screen(query("r2")).count == 2  # the two resends counted nothing


def test_a_request_over_the_rate_limit_or_the_quota_leaves_no_record(gate: Gate) -> None:
    gate.apply([event(1, Kind.QUOTA_GRANTED, 100)])
    gate.gate.screen(query("r1", limit=1))
    over_rate = gate.gate.screen(query("r2", limit=1))
    assert (over_rate.known_hash, over_rate.count) == (None, 2)
    assert gate.gate.screen(query("r2", limit=1)).known_hash is None
    over_quota = gate.gate.screen(query("r3", needs=101))
    assert over_quota.known_hash is None and over_quota.balance.remaining == 100
    assert gate.gate.screen(query("r3", needs=101)).known_hash is None
    assert gate.gate.screen(query("r4", needs=100)).known_hash is None  # within: recorded
    assert gate.gate.screen(query("r4", needs=100)).known_hash == "h1"


def test_a_tenant_with_nothing_granted_is_not_pre_checked(gate: Gate) -> None:
    gate.gate.screen(query("r1", tenant="nobody", needs=10**9))
    assert gate.gate.screen(query("r1", tenant="nobody")).known_hash == "h1"


def test_a_redis_record_expires_and_a_flush_forgets_it(variant: str) -> None:
    from quotaflow.adapters.redis_gate import SEEN_TTL_S, seen_key

    c = client(variant, REDIS_DB)
    gate = RedisAdmissionGate(c)
    gate.screen(query("r1"))
    assert 0 < c.ttl(seen_key("acme", "r1")) <= SEEN_TTL_S
    c.flushdb()
    assert gate.screen(query("r1")) == Screening(None, 1, Balance())


def test_concurrent_screens_each_get_their_own_answer_and_the_limit_holds(gate: Gate) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [f"r{i}" for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        first = list(pool.map(lambda rid: gate.gate.screen(query(rid, digest=rid, limit=40)),
                              ids))
    assert sorted(s.count for s in first) == list(range(1, 65))  # each counted once
    with ThreadPoolExecutor(16) as pool:
        again = list(pool.map(lambda rid: gate.gate.screen(query(rid, digest=rid, limit=40)),
                              ids))
    # Exactly the 40 within the rate limit were recorded, each with its own hash.
    recorded = {rid: s.known_hash for rid, s in zip(ids, again, strict=True) if s.known_hash}
    assert len(recorded) == 40 and all(rid == digest for rid, digest in recorded.items())


@pytest.mark.parametrize("grouped", [False, True], ids=["single", "grouped"])
def test_the_redis_gate_screens_after_redis_forgot_its_script(variant: str,
                                                              grouped: bool) -> None:
    gate = _redis(variant, grouped).gate
    assert isinstance(gate, RedisAdmissionGate | GroupScreenGate)
    redis_client = gate.gate.redis if isinstance(gate, GroupScreenGate) else gate.redis
    redis_client.script_flush()  # as a restarted Redis: the script's sha is unknown
    assert gate.screen(query("r1")).count == 1
    assert gate.screen(query("r1")).known_hash == "h1"
