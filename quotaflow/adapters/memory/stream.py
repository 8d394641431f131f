"""An in-memory `TokenStream`: one ordered list of entries per request and a set of cancelled
ids, with blocking reads, for the unit tests and a door run without Redis. Nothing expires:
a test's streams live as long as the fake."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

from quotaflow.model.base import StreamEnd, TokenDelta
from quotaflow.model.token_stream import END_ID, START, StreamEntry, delta_id, id_key


class MemoryTokenStream:
    """Per-request streams in a dict, guarded by one condition (readers wait on it)."""

    def __init__(self) -> None:
        self._streams: dict[str, list[StreamEntry]] = {}
        self._cancelled: set[str] = set()
        self._changed = threading.Condition()

    def publish(self, deltas: Sequence[TokenDelta] = (), ends: Sequence[StreamEnd] = (),
                watch: Collection[str] = ()) -> set[str]:
        """Append what is new, in order; answer the cancelled ids of `watch`."""
        with self._changed:
            for d in deltas:
                self._append(d.request_id, StreamEntry(delta_id(d.seq), delta=d))
            for e in ends:
                self._append(e.request_id, StreamEntry(END_ID, end=e))
            self._changed.notify_all()
            return self._cancelled.intersection(watch)

    def cancel(self, request_id: str) -> None:
        with self._changed:
            self._cancelled.add(request_id)

    def cancelled(self, request_ids: Collection[str]) -> set[str]:
        with self._changed:
            return self._cancelled.intersection(request_ids)

    def read(self, request_id: str, after_id: str = START, block_ms: int = 0,
             count: int = 256) -> list[StreamEntry]:
        """Entries after `after_id`, waiting up to `block_ms` for the first."""
        after = id_key(after_id)
        with self._changed:
            found = self._after(request_id, after, count)
            if not found and block_ms > 0:
                self._changed.wait_for(lambda: bool(self._after(request_id, after, 1)),
                                       block_ms / 1000)
                found = self._after(request_id, after, count)
            return found

    def _after(self, request_id: str, after: tuple[int, int], count: int) -> list[StreamEntry]:
        entries = self._streams.get(request_id, [])
        return [e for e in entries if id_key(e.entry_id) > after][:count]

    def _append(self, request_id: str, entry: StreamEntry) -> None:
        # As a Redis stream refuses an id not above its last one: a redelivered entry, or one
        # after the end, is not added.
        entries = self._streams.setdefault(request_id, [])
        if not entries or id_key(entry.entry_id) > id_key(entries[-1].entry_id):
            entries.append(entry)
