"""The `TokenStream` port: infer writes each streaming request's deltas and end as it decodes,
checks cancellations between decode steps, and a door reads the stream back and cancels it.

Entries of one request are ordered and addressed by an id that only grows: a reader keeps the
last id it handled and reads on after it, so a reconnecting reader resumes with no gap and no
duplicate. A delta's id is derived from its sequence number and the end has the greatest id,
so a redelivered batch that decodes the same text again adds nothing twice, and nothing is
added after the end. Adapters: `quotaflow.adapters.redis_stream` (a Redis stream per request)
and `quotaflow.adapters.memory.stream`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from quotaflow.model.base import StreamEnd, TokenDelta, TokenSink

START = "0-0"  # read from the beginning
END_ID = "1-0"  # the end entry's id: greater than every delta's


def delta_id(seq: int) -> str:
    """The entry id of delta `seq` (1, 2, ...): "0-<seq>"."""
    return f"0-{seq}"


MAX_ID_PART = 2**64 - 1  # each part of a Redis stream id is an unsigned 64-bit integer


def id_key(entry_id: str) -> tuple[int, int]:
    """An entry id as a sortable pair; raises ValueError for anything not "<int>-<int>", each
    part ASCII digits (no sign, space or underscore, which `int` would take) up to
    `MAX_ID_PART`, as Redis takes them."""
    major, dash, minor = entry_id.partition("-")
    if not (dash and _part(major) and _part(minor)):
        raise ValueError(f"not a stream entry id: {entry_id[:40]!r}")
    return int(major), int(minor)


def _part(text: str) -> bool:
    return (0 < len(text) <= 20 and text.isascii() and text.isdigit()
            and int(text) <= MAX_ID_PART)


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a request's stream: a delta, or its end (exactly one is set)."""

    entry_id: str  # pass it back as `after_id` to read on
    delta: TokenDelta | None = None
    end: StreamEnd | None = None


class TokenStream(TokenSink, Protocol):
    """Per-request token streams and cancellation flags, with a time to live."""

    def publish(self, deltas: Sequence[TokenDelta] = (), ends: Sequence[StreamEnd] = (),
                watch: Collection[str] = ()) -> set[str]:
        """Append `deltas` then `ends`, in order, skipping entries a stream already holds (a
        redelivered batch) and anything after a stream's end; answer which request ids of
        `watch` are cancelled. One round trip."""
        ...

    def cancel(self, request_id: str) -> None:
        """The reader is gone: infer stops the request within a few tokens."""
        ...

    def cancelled(self, request_ids: Collection[str]) -> set[str]:
        """Which of `request_ids` are cancelled."""
        ...

    def read(self, request_id: str, after_id: str = START, block_ms: int = 0,
             count: int = 256) -> list[StreamEntry]:
        """Up to `count` entries after `after_id`, in order. With none yet, waits up to
        `block_ms` for one (0: do not wait); answers [] if none came."""
        ...
