"""An in-memory `LedgerOutbox`: what the relay would publish, kept in a list."""

from __future__ import annotations

from quotaflow.ledger.commands import StoredEvent
from quotaflow.ports import Ledger


class MemoryOutbox:
    """Publishes each committed event of `ledger` once, in order, into `published`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.published: list[StoredEvent] = []

    def publish_pending(self, batch: int = 5000) -> int:
        """Publish every event after the last one published; returns how many."""
        count = 0
        while True:
            after = self.published[-1].seq if self.published else 0
            events = self.ledger.events_after(after, batch)
            self.published.extend(events)
            count += len(events)
            if len(events) < batch:
                return count
