"""The `AdmissionGate` contract for a key's own limits, on the same gates as test_gate_port (the
in-memory gate; Redis plain, over TLS, a 3-master Cluster; each alone and grouped): the tokens a
key reserves in a rolling minute and its requests in flight are held exactly under concurrency,
the minute refills as its entries age, reserve's trim lowers what a request holds, and a slot
is freed by its release or past its deadline. `-k memory` runs the fake alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from quotaflow.adapters.memory.gate import MemoryAdmissionGate
from quotaflow.adapters.redis_gate import RedisAdmissionGate
from quotaflow.events.status import KeyLimit
from quotaflow.ports import AdmissionGate, ReservedTokens, Screening, ScreenQuery
from tests.contract import test_gate_port as base
from tests.redis_servers import REDIS_VARIANTS, client

NOW_MS = 1_795_953_600_000  # 2026-11-29 12:00 UTC


def limited(request_id: str, tokens: int = 100, tpm: int = 0, max_inflight: int = 0,
            now_ms: int = NOW_MS, key_id: str = "k1", rate: int = 10_000) -> ScreenQuery:
    return ScreenQuery(request_id, request_id, key_id, now_ms // 60_000, "acme", "2026-11",
                       rate, 10, tpm, max_inflight, now_ms, tokens)


@pytest.fixture(params=["memory", *REDIS_VARIANTS, *(f"{v}-grouped" for v in REDIS_VARIANTS)])
def gate(request: pytest.FixtureRequest) -> AdmissionGate:
    if request.param == "memory":
        return base._memory().gate
    return base._redis(request.param.removesuffix("-grouped"),
                       request.param.endswith("-grouped")).gate


def let_through(s: Screening) -> bool:
    return s.known_hash is None and s.over is None


def screen_all(g: AdmissionGate, queries: list[ScreenQuery]) -> list[Screening]:
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(g.screen, queries))


def test_concurrent_requests_reserve_exactly_the_keys_tokens_per_minute(
        gate: AdmissionGate) -> None:
    found = screen_all(gate, [limited(f"r{i}", 100, tpm=1000) for i in range(40)])
    assert sum(map(let_through, found)) == 10
    refused = [s for s in found if not let_through(s)]
    assert {s.over for s in refused} == {KeyLimit.TOKENS_PER_MINUTE}
    assert all(0 < s.retry_after_ms <= 60_000 for s in refused)


def test_the_rolling_minute_refills_as_its_entries_age(gate: AdmissionGate) -> None:
    g = gate
    assert all(let_through(g.screen(limited(f"a{i}", 100, 1000))) for i in range(6))
    later = NOW_MS + 30_000
    assert all(let_through(g.screen(limited(f"b{i}", 100, 1000, now_ms=later)))
               for i in range(4))
    over = g.screen(limited("c", 100, 1000, now_ms=later))
    # the six oldest free their tokens 60 s after they were held: 30 s from `later`
    assert (over.over, over.retry_after_ms) == (KeyLimit.TOKENS_PER_MINUTE, 30_000)
    assert let_through(g.screen(limited("c", 100, 1000, now_ms=NOW_MS + 60_001)))
    assert not let_through(g.screen(limited("d", 600, 1000, now_ms=NOW_MS + 60_002)))


def test_a_request_over_the_tokens_per_minute_alone_is_told_waiting_will_not_help(
        gate: AdmissionGate) -> None:
    found = gate.screen(limited("r1", 1001, tpm=1000))
    assert (found.over, found.retry_after_ms) == (KeyLimit.TOKENS_PER_MINUTE, -1)


def test_keys_have_rolling_minutes_of_their_own(gate: AdmissionGate) -> None:
    assert let_through(gate.screen(limited("r1", 1000, 1000)))
    assert not let_through(gate.screen(limited("r2", 1, 1000)))
    assert let_through(gate.screen(limited("r3", 1000, 1000, key_id="k2")))


def test_a_request_over_the_rate_limit_holds_no_tokens_and_no_slot(gate: AdmissionGate) -> None:
    # the caller refuses it from its count (1 > 0); the gate held nothing for it
    assert gate.screen(limited("r1", 600, 1000, 1, rate=0)).count == 1
    assert let_through(gate.screen(limited("r2", 1000, 1000, 1)))


def test_trimming_to_the_reservation_frees_the_rest_and_a_refusal_frees_all(
        gate: AdmissionGate) -> None:
    g = gate
    assert let_through(g.screen(limited("r1", 600, 1000)))
    assert not let_through(g.screen(limited("r2", 600, 1000)))
    g.trim([ReservedTokens("acme", "k1", "r1", 400)])
    g.trim([ReservedTokens("acme", "k1", "r1", 500)])  # never raised again
    assert let_through(g.screen(limited("r2", 600, 1000)))
    g.trim([ReservedTokens("acme", "k1", "r2", 0)])  # the ledger refused r2
    assert let_through(g.screen(limited("r3", 600, 1000)))
    assert not let_through(g.screen(limited("r4", 1, 1000)))


def test_concurrent_requests_take_exactly_the_keys_in_flight_slots(gate: AdmissionGate) -> None:
    found = screen_all(gate, [limited(f"r{i}", max_inflight=5) for i in range(32)])
    held = [f"r{i}" for i, s in enumerate(found) if let_through(s)]
    assert len(held) == 5
    assert {s.over for s in found if not let_through(s)} == {KeyLimit.IN_FLIGHT}
    assert not let_through(gate.screen(limited("x1", max_inflight=5)))
    gate.release("acme", [*held[:2], "never-held"])
    assert let_through(gate.screen(limited("x2", max_inflight=5)))
    assert let_through(gate.screen(limited("x3", max_inflight=5)))
    assert not let_through(gate.screen(limited("x4", max_inflight=5)))


def test_a_released_slot_is_freed_once(gate: AdmissionGate) -> None:
    assert let_through(gate.screen(limited("r1", max_inflight=1)))
    gate.release("acme", ["r1"])
    gate.release("acme", ["r1"])  # a redelivered end frees nothing more
    assert let_through(gate.screen(limited("r2", max_inflight=1)))
    assert not let_through(gate.screen(limited("r3", max_inflight=1)))


def _gates_with_slot_ttl(ttl_s: int) -> list[AdmissionGate]:
    return [MemoryAdmissionGate(slot_ttl_s=ttl_s),
            *(RedisAdmissionGate(client(v, base.REDIS_DB), ttl_s) for v in REDIS_VARIANTS)]


def test_a_slot_no_release_freed_is_freed_past_its_deadline() -> None:
    for g in _gates_with_slot_ttl(10):
        assert let_through(g.screen(limited("r1", max_inflight=1)))
        assert not let_through(g.screen(limited("r2", max_inflight=1, now_ms=NOW_MS + 9_999)))
        assert let_through(g.screen(limited("r2", max_inflight=1, now_ms=NOW_MS + 10_000)))


@pytest.mark.parametrize("v", REDIS_VARIANTS)
def test_a_redis_slot_hash_expires_with_its_last_slot(v: str) -> None:
    from quotaflow.adapters.redis_gate import slot_counts_key, slots_key

    c = client(v, base.REDIS_DB)
    RedisAdmissionGate(c, 120).screen(limited("r1", max_inflight=1))
    assert 0 < c.pttl(slots_key("acme")) <= 120_000
    assert 0 < c.pttl(slot_counts_key("acme")) <= 120_000
