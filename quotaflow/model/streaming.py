"""Streaming while decoding, shared by every generator: each request's text as it grows (stop
sequences cut, held-back text that might begin one), numbered deltas, and cancellation.

Why the choices:
- Text is only ever appended. A generator feeds each step's newly decoded piece; `RowText`
  releases it unless its end could be the start of a stop sequence, so a stop sequence is never
  streamed and never has to be taken back. The result's text is what was released, so the
  streamed deltas concatenated are the final text by construction.
- One sink round trip per step carries every delta and end of the batch and the cancellation
  check of every live request (`TokenSink.publish`). A step with nothing to publish checks only
  every `CHECK_EVERY` steps, so a batch that streams nothing pays one round trip per
  `CHECK_EVERY` forward passes, and a cancelled request stops within `CHECK_EVERY` tokens.
- Every request is watched for cancellation, streaming or not: a client that hangs up on a
  long non-streaming call should not pay for tokens nobody will read, and the check rides on
  the same round trip.
- Streaming is best effort: a sink that fails is logged and dropped for the rest of the batch.
  Billing never depends on it (the counts travel in the `completed` event), so a Redis outage
  must not fail inference; a reader that sees no end falls back to the request's record."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from quotaflow.events.status import FinishReason
from quotaflow.model.base import GenerationRequest, StreamEnd, TokenDelta, TokenSink

log = logging.getLogger(__name__)

CHECK_EVERY = 4  # decode steps between cancellation checks when nothing else is published
MAX_STOP = 4  # stop sequences honoured per request (the OpenAI API's limit)


class RowText:
    """One request's generated text: what has been released, and what is held back."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.stops = tuple(s for s in stop[:MAX_STOP] if s)
        self.text = ""  # released so far: the result's text when generation ends
        self.held = ""
        self.stopped = False  # a stop sequence appeared: generation must end

    def feed(self, piece: str) -> str:
        """Append newly decoded text; answers the part that can be released now."""
        if self.stopped:
            return ""
        pending = self.held + piece
        # Released text never ends with the start of a stop sequence, so one can only begin
        # inside `pending`. The one that completes first wins (then the longest), as it would
        # have token by token: the cut does not depend on how the text arrived in pieces.
        hits = [(i + len(s), i) for s, i in ((s, pending.find(s)) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            return self._release(pending[:min(hits)[1]], "")
        keep = max((k for s in self.stops for k in range(1, len(s))
                    if pending.endswith(s[:k])), default=0)
        return self._release(pending[:len(pending) - keep], pending[len(pending) - keep:])

    def flush(self) -> str:
        """Generation ended without completing a stop sequence: release what was held."""
        return self._release(self.held, "")

    def _release(self, out: str, held: str) -> str:
        self.text += out
        self.held = held
        return out


class BatchStream:
    """The streaming side of one `generate` call over `batch`."""

    def __init__(self, batch: Sequence[GenerationRequest], sink: TokenSink | None,
                 check_every: int = CHECK_EVERY) -> None:
        self.batch = batch
        self.sink = sink
        self.check_every = max(1, check_every)
        self.rows = [RowText(r.stop) for r in batch]
        self.finish: list[FinishReason | None] = [None] * len(batch)
        self._seq = [0] * len(batch)
        self._deltas: list[TokenDelta] = []
        self._ends: list[StreamEnd] = []
        self._steps = 0

    def add(self, i: int, piece: str) -> bool:
        """Row `i` decoded `piece`; True when that completed a stop sequence (row must end)."""
        self._queue(i, self.rows[i].feed(piece))
        return self.rows[i].stopped

    def end(self, i: int, finish_reason: FinishReason, prompt_tokens: int, completion_tokens: int
            ) -> None:
        """Row `i` has ended: release its held text and queue its end entry."""
        if self.rows[i].stopped:
            finish_reason = FinishReason.STOP
        self._queue(i, self.rows[i].flush())
        self.finish[i] = finish_reason
        r = self.batch[i]
        if r.stream and self.sink is not None:
            self._ends.append(StreamEnd(r.request_id, finish_reason, prompt_tokens,
                                        completion_tokens))

    def sync(self, live: Sequence[int]) -> list[int]:
        """Once per decode step: publish what is queued; answers the live rows cancelled."""
        return sync_streams([(self, live)])[0]

    def _take(self, live: Sequence[int]) -> tuple[list[TokenDelta], list[StreamEnd], set[str]] \
            | None:
        """What this step publishes and watches, or None when it has no round trip to make."""
        step, self._steps = self._steps, self._steps + 1
        if self.sink is None or not (self._deltas or self._ends
                                     or (live and step % self.check_every == 0)):
            return None
        deltas, ends = self._deltas, self._ends
        self._deltas, self._ends = [], []
        return deltas, ends, {self.batch[i].request_id for i in live if self.batch[i].request_id}

    def close(self) -> None:
        """Generation is over: publish whatever is still queued."""
        if self._deltas or self._ends:
            self.sync([])

    def _queue(self, i: int, text: str) -> None:
        r = self.batch[i]
        if text and r.stream and self.sink is not None:
            self._seq[i] += 1
            self._deltas.append(TokenDelta(r.request_id, self._seq[i], text))


def sync_streams(pairs: Sequence[tuple[BatchStream, Sequence[int]]]) -> list[list[int]]:
    """`BatchStream.sync` for several streams (concurrent calls decoding together) in one
    round trip per sink; answers each stream's live rows reported cancelled."""
    cancelled: list[list[int]] = [[] for _ in pairs]
    groups: dict[int, list[tuple[int, TokenSink, tuple[list[TokenDelta], list[StreamEnd],
                                                         set[str]]]]] = {}
    for k, (stream, live) in enumerate(pairs):
        taken = stream._take(live)
        if taken is not None and stream.sink is not None:
            groups.setdefault(id(stream.sink), []).append((k, stream.sink, taken))
    for members in groups.values():
        sink = members[0][1]
        try:
            gone = sink.publish([d for _, _, (ds, _, _) in members for d in ds],
                                [e for _, _, (_, es, _) in members for e in es],
                                set().union(*(ids for _, _, (_, _, ids) in members)))
        except Exception:
            log.warning("token stream failed; streaming stops for these requests", exc_info=True)
            for k, _, _ in members:
                pairs[k][0].sink = None
            continue
        for k, _, _ in members:
            stream, live = pairs[k]
            cancelled[k] = [i for i in live if stream.batch[i].request_id in gone]
    return cancelled
