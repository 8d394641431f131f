"""The roll-up arithmetic on the in-memory store: what each ledger kind and outcome adds to its
(tenant, model, key, minute) bucket, and that re-published entries, redelivered outcomes and
replayed batches are never counted twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quotaflow.analytics.memory import MemoryUsageStore
from quotaflow.analytics.query import UsageQuery
from quotaflow.analytics.rollup import Batch, Counts, Outcome, fold_ledger, minute_of
from quotaflow.events.payloads import LedgerEntry

T0 = datetime(2026, 11, 29, 12, 0, 5, tzinfo=UTC)


class Ledger:
    """Ledger entries as the relay publishes them: per tenant stream versions 1, 2, ..."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.seq = 0

    def entry(self, tenant: str, kind: str, amount: int, request_id: str | None = None,
              released: int = 0, at: datetime = T0) -> LedgerEntry:
        self.seq += 1
        self.versions[tenant] = self.versions.get(tenant, 0) + 1
        return LedgerEntry(self.seq, tenant, self.versions[tenant], kind, request_id, "2026-11",
                           amount, released, at)


def history() -> tuple[list[LedgerEntry], list[Outcome]]:
    led = Ledger()
    entries = [
        led.entry("acme", "QuotaGranted", 1000),
        led.entry("acme", "TokensReserved", 100, "r1"),
        led.entry("acme", "TokensReserved", 50, "r2"),
        led.entry("acme", "RequestRejected", 5000, "r3"),
        led.entry("acme", "ReservationSettled", 40, "r1", released=60,
                  at=T0 + timedelta(minutes=1)),
        led.entry("acme", "ReservationReleased", 50, "r2", at=T0 + timedelta(minutes=1)),
        led.entry("beta", "TokensReserved", 30, "b1"),
        led.entry("beta", "ReservationExpired", 30, "b1", at=T0 + timedelta(minutes=2)),
    ]
    outcomes = [Outcome("completed", "r1", "acme", T0 + timedelta(seconds=50), 25, 15, 80.0),
                Outcome("failed", "r2", "acme", T0 + timedelta(seconds=51))]
    return entries, outcomes


ATTRIBUTION = {"r1": ("m1", "k1"), "r2": ("m1", "k2"), "r3": ("m2", "k1"), "b1": ("m1", "kb")}


def rolled(batches: list[Batch]) -> MemoryUsageStore:
    store = MemoryUsageStore(dict(ATTRIBUTION))
    for b in batches:
        store.apply(b)
    return store


def total(store: MemoryUsageStore, tenant: str) -> Counts:
    out = Counts()
    for bucket, c in store.buckets.items():
        if bucket[0] == tenant:
            out.add(c)
    return out


def test_each_ledger_kind_and_outcome_adds_to_its_own_columns() -> None:
    entries, outcomes = history()
    acme = total(rolled([Batch("g", entries, outcomes)]), "acme")
    assert (acme.granted_tokens, acme.requests, acme.rejected, acme.reserved_tokens) == \
        (1000, 3, 1, 150)
    assert (acme.charged_tokens, acme.released_tokens, acme.expired, acme.expired_tokens) == \
        (40, 110, 0, 0)
    assert (acme.completed, acme.failed, acme.prompt_tokens, acme.completion_tokens,
            acme.latency_ms) == (1, 1, 25, 15, 80.0)
    beta = total(rolled([Batch("g", entries, outcomes)]), "beta")
    assert (beta.requests, beta.expired, beta.expired_tokens) == (1, 1, 30)


def test_entries_land_in_the_bucket_of_their_model_key_and_minute() -> None:
    entries, outcomes = history()
    store = rolled([Batch("g", entries, outcomes)])
    minute = minute_of(T0)
    assert store.buckets[("acme", "", "", minute)].granted_tokens == 1000  # a grant: no request
    assert store.buckets[("acme", "m1", "k1", minute)].reserved_tokens == 100
    assert store.buckets[("acme", "m2", "k1", minute)].rejected == 1
    later = store.buckets[("acme", "m1", "k1", minute + timedelta(minutes=1))]
    assert (later.charged_tokens, later.released_tokens) == (40, 60)


def test_a_republished_ledger_entry_is_skipped_by_its_stream_version() -> None:
    entries, _ = history()
    once = rolled([Batch("g", entries)])
    # the relay crashed after publishing and published the same entries again
    twice = rolled([Batch("g", entries), Batch("g", entries[2:] + entries)])
    assert twice.buckets == once.buckets
    assert twice.apply(Batch("g", entries)).duplicates == len(entries)


def test_a_replay_of_everything_in_new_batches_changes_nothing() -> None:
    entries, outcomes = history()
    store = rolled([Batch("g", entries[:3], outcomes[:1]), Batch("g", entries[3:], outcomes[1:])])
    before = {k: Counts.of(c.values()) for k, c in store.buckets.items()}
    applied = store.apply(Batch("other-group", entries, outcomes + outcomes))
    assert (applied.ledger, applied.outcomes, applied.duplicates) == (0, 0, 12)
    assert store.buckets == before


def test_an_outcome_delivered_twice_in_one_batch_counts_once() -> None:
    _, outcomes = history()
    store = rolled([Batch("g", [], [outcomes[0], outcomes[0]])])
    assert total(store, "acme").completed == 1
    assert total(store, "acme").prompt_tokens == 25


def test_fold_moves_each_tenants_version_to_the_last_entry_applied() -> None:
    entries, _ = history()
    versions: dict[str, int] = {"acme": 2}
    deltas, duplicates = fold_ledger(entries, versions, ATTRIBUTION)
    assert duplicates == 2
    assert versions == {"acme": 6, "beta": 2}
    assert sum(c.granted_tokens for c in deltas.values()) == 0


def test_offsets_are_stored_per_consumer_and_never_move_back() -> None:
    store = MemoryUsageStore()
    store.apply(Batch("g", next_offsets={("quotaflow.ledger", 0): 10}))
    store.apply(Batch("g", next_offsets={("quotaflow.ledger", 0): 7}))
    assert store.offsets("g", [("quotaflow.ledger", 0), ("quotaflow.ledger", 1)]) == \
        {("quotaflow.ledger", 0): 10}
    assert store.offsets("other", [("quotaflow.ledger", 0)]) == {}


def test_usage_rows_sum_minutes_into_hours_per_model() -> None:
    entries, outcomes = history()
    store = rolled([Batch("g", entries, outcomes)])
    rows = store.usage(UsageQuery("acme", "hour", "model"))
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {None, "m1", "m2"}
    assert by_model["m1"]["start"] == "2026-11-29T12:00:00Z"
    assert (by_model["m1"]["requests"], by_model["m1"]["charged_tokens"],
            by_model["m1"]["prompt_tokens"], by_model["m1"]["avg_latency_ms"]) == (2, 40, 25, 80.0)
    assert by_model[None]["granted_tokens"] == 1000
    assert sum(r["requests"] for r in rows) == 3
