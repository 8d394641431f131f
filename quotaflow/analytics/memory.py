"""The `UsageStore` in memory, for unit tests: the same arithmetic and the same exactly-once
rules as PostgreSQL, one lock standing in for the transaction."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from quotaflow.analytics.query import UsageQuery, rows, summarize
from quotaflow.analytics.rollup import (
    Applied,
    Batch,
    Bucket,
    Counts,
    Position,
    fold_ledger,
    fold_outcomes,
    merge,
)
from quotaflow.events.status import OutcomeKind


class MemoryUsageStore:
    """Roll-ups in dictionaries. `attribution` stands in for the request records: request id
    -> (model, key_id); `teams` for the keys' teams: key id -> team."""

    def __init__(self, attribution: dict[str, tuple[str, str]] | None = None,
                 teams: dict[str, str] | None = None) -> None:
        self.attribution = attribution if attribution is not None else {}
        self.teams = teams if teams is not None else {}
        self.buckets: dict[Bucket, Counts] = {}
        self.versions: dict[str, int] = {}
        self.outcomes: set[tuple[str, OutcomeKind]] = set()
        self.stored: dict[tuple[str, str, int], int] = {}
        self._lock = threading.Lock()

    def offsets(self, consumer: str, positions: Sequence[Position]) -> dict[Position, int]:
        """The stored next offsets of `consumer` for those topic partitions it has any for."""
        with self._lock:
            return {(t, p): self.stored[(consumer, t, p)] for t, p in positions
                    if (consumer, t, p) in self.stored}

    def apply(self, batch: Batch) -> Applied:
        """Roll up what the batch has not applied before and store its next offsets."""
        with self._lock:
            versions = dict(self.versions)
            deltas, dup_ledger = fold_ledger(batch.ledger, versions, self.attribution)
            fresh = {(o.request_id, o.kind) for o in batch.outcomes} - self.outcomes
            self.outcomes |= fresh
            outcome_deltas, dup_outcomes = fold_outcomes(batch.outcomes, fresh, self.attribution)
            merge(self.buckets, merge(deltas, outcome_deltas))
            self.versions = versions
            for (topic, partition), offset in batch.next_offsets.items():
                key = (batch.consumer, topic, partition)
                self.stored[key] = max(offset, self.stored.get(key, 0))
        return Applied(ledger=len(batch.ledger) - dup_ledger,
                       outcomes=len(batch.outcomes) - dup_outcomes,
                       duplicates=dup_ledger + dup_outcomes)

    def usage(self, query: UsageQuery) -> list[dict[str, Any]]:
        """The query's rows."""
        with self._lock:
            return rows(query, summarize(query, list(self.buckets.items()), self.teams))

    def reset(self) -> None:
        """Forget every roll-up, version, outcome and offset."""
        with self._lock:
            self.buckets.clear()
            self.versions.clear()
            self.outcomes.clear()
            self.stored.clear()
