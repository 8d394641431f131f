"""An in-memory `Publisher`: keeps what it was handed, or times out when told to."""

from __future__ import annotations

from collections.abc import Sequence

from quotaflow.events.envelope import Envelope
from quotaflow.ports import PublishTimeout


class MemoryPublisher:
    """Envelopes in `published`, in order; `unavailable = True` makes `publish` time out."""

    def __init__(self) -> None:
        self.published: list[Envelope] = []
        self.unavailable = False

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Keep the envelopes, or raise `PublishTimeout` (keeping none) while unavailable."""
        if self.unavailable and envelopes:
            raise PublishTimeout(f"{len(envelopes)} envelopes not confirmed: bus unavailable")
        self.published.extend(envelopes)
